"""Reading and writing ``.pt`` files: every one (a cell's ``model.pt``, its resume
checkpoint ``last.pt``, pretrained weights) goes through
:func:`load_checkpoint`, which unpickles nothing but tensors and plain data
(``torch.load(weights_only=True)``) and turns a file it cannot read, or one
that lacks the expected entries, into a :class:`CheckpointError` that names
the file and says what to do. torch's own message would advise retrying
with ``weights_only=False``, which runs whatever a planted pickle holds.
Every ``.pt`` file this project writes goes through :func:`save_torch`.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import torch

from workflow.io import atomic_path


class CheckpointError(ValueError):
    """A ``.pt`` file that is not a checkpoint of the expected kind; the
    message names the file and says what to do."""


def load_error_reason(error: Exception) -> str:
    """The part of torch.load's message that says what is wrong, without its
    advice on loading untrusted files: torch puts the cause after the
    marker "<...> error:" near its end."""
    text = str(error)
    match = re.search(r"\w+ error:\s*(.+?)(\n\n|$)", text, flags=re.S)
    reason = match.group(1) if match else text.strip().split("\n", 1)[0]
    reason = " ".join(reason.split())
    return reason.split(". ", 1)[0].rstrip(".")[:300] or type(error).__name__


def load_checkpoint(
    path, kind: str, keys=(), advice: str = "Delete or replace it."
) -> object:
    """The object in ``path``, read with ``torch.load(weights_only=True)``.

    A file torch cannot read that way, or (with ``keys``) anything but a
    dict holding every one of ``keys``, is a :class:`CheckpointError`:
    "<path>: not a valid <kind> (<reason>). <advice>"."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch raises many kinds for a bad file
        reason = (
            "the file is empty"
            if path.is_file() and path.stat().st_size == 0
            else load_error_reason(error)
        )
        raise CheckpointError(
            f"{path}: not a valid {kind}: torch.load(weights_only=True) cannot read it ({reason}). {advice}"
        ) from None
    if keys:
        if not isinstance(state, dict):
            raise CheckpointError(
                f"{path}: not a valid {kind}: it holds a {type(state).__name__}, "
                f"not a dict with {', '.join(keys)}. {advice}"
            )
        missing = [key for key in keys if key not in state]
        if missing:
            found = sorted(str(key) for key in state)[:8]
            raise CheckpointError(
                f"{path}: not a valid {kind}: it lacks {', '.join(missing)} "
                f"(it holds {', '.join(found) or 'nothing'}). {advice}"
            )
    return state


def save_torch(path, obj) -> None:
    """``torch.save`` atomically and byte-reproducibly: torch names the
    archive inside the file after the file, so saving straight to a
    temporary name would make every file differ; a buffer gives the fixed
    name ``archive``."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with atomic_path(path, size=buffer.tell()) as tmp:
        tmp.write_bytes(buffer.getvalue())
