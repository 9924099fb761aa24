"""Whether an array a job is about to allocate fits in memory, checked
before the allocation so that a size that cannot fit stops with the config
key that makes it and what to do, not with NumPy's or torch's allocator
error (or the kernel's out-of-memory kill) partway through.

The threshold is the memory available when the check runs: on the host
``MemAvailable`` of ``/proc/meminfo`` (what Linux can hand out without
swapping), on a CUDA device its free memory (``torch.cuda.mem_get_info``).
Where neither can be read (another system), nothing is checked. The
estimates count only the named arrays (bytes = images x channels x height
x width x bytes per value), never the model's activations, so a size that
passes may still run short; one that fails can never fit.
"""

from __future__ import annotations

from pathlib import Path

from workflow.config import ConfigError

GIB = 2**30


def available_bytes(device=None) -> int | None:
    """Memory available now on ``device`` (a torch device; None or a CPU
    device: the host), or None where it cannot be read."""
    if device is not None and getattr(device, "type", str(device)) == "cuda":
        import torch

        return int(torch.cuda.mem_get_info(device)[0])
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_fits(needed: int, what: str, advice: str, device=None) -> None:
    """Raise :class:`ConfigError` when ``needed`` bytes (``what``: the
    arrays and the config key that sizes them) exceed the memory available
    on ``device`` (the host by default); ``advice`` says what to do."""
    available = available_bytes(device)
    if available is None or needed <= available:
        return
    place = (
        "the host"
        if device is None or getattr(device, "type", str(device)) != "cuda"
        else f"device {device}"
    )
    raise ConfigError(
        f"{what} take {needed / GIB:.3g} GiB, more than the {available / GIB:.3g} GiB of memory available on "
        f"{place}; {advice}"
    )
