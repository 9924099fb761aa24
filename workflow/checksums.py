"""Checksums of files: computing and comparing md5/sha256, parsing the
forms a config writes, and copying a file only if its bytes match (used by
the downloads, the datasets' own checks and the pretrained weights)."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

# Bytes read at a time from a file or a download.
CHUNK = 1 << 20


class Hashes:
    """md5 (and sha256 when asked) of a byte stream, fed chunk by chunk."""

    def __init__(self, sha256: bool):
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.sha = hashlib.sha256() if sha256 else None

    def update(self, chunk: bytes) -> None:
        self.md5.update(chunk)
        if self.sha is not None:
            self.sha.update(chunk)

    def mismatch(self, md5: str | None, sha256: str | None) -> str | None:
        """None if the stream matches, else a description of the difference.
        ``md5`` None: not checked (weights whose publisher gives a sha256
        only). A ``sha256`` shorter than 64 digits is the prefix a publisher
        gives (torchvision: 8 hex digits in the file name)."""
        if md5 and self.md5.hexdigest() != md5:
            return f"md5 is {self.md5.hexdigest()}, expected {md5}"
        if sha256 and not self.sha.hexdigest().startswith(sha256):
            prefix = " (its first digits)" if len(sha256) < 64 else ""
            return f"sha256 is {self.sha.hexdigest()}, expected {sha256}{prefix}"
        return None


CHECKSUM = re.compile(
    r"^(?:(md5):)?([0-9a-fA-F]{32})$|^(?:(sha256):)?([0-9a-fA-F]{64})$"
)
CHECKSUM_FORM = (
    "'sha256:<64 hex digits>' or 'md5:<32 hex digits>' (either case, the prefix may be left out; "
    "sha256sum FILE or md5sum FILE prints it)"
)


def parse_checksum(value) -> tuple[str, str] | None:
    """("md5" or "sha256", lower-case hex digits) of a checksum written in
    the config (config.schema.yaml ``$defs/checksum``: either case, bare or
    prefixed); None if ``value`` has neither form."""
    match = CHECKSUM.match(value) if isinstance(value, str) else None
    if match is None:
        return None
    return (
        ("md5", match.group(2).lower())
        if match.group(2)
        else ("sha256", match.group(4).lower())
    )


def describe_checksums(md5: str | None, sha256: str | None) -> str:
    """'md5 X, sha256 Y' for the checksums given."""
    parts = [f"md5 {md5}"] if md5 else []
    parts += [f"sha256 {sha256}"] if sha256 else []
    return ", ".join(parts) or "no checksum"


def file_mismatch(path, md5: str | None, sha256: str | None = None) -> str | None:
    """None if ``path`` has these checksums, else what differs."""
    hashes = Hashes(sha256 is not None)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            hashes.update(chunk)
    return hashes.mismatch(md5, sha256)


def copy_verified(src, dst, md5: str | None, sha256: str | None = None) -> str | None:
    """Copy ``src`` to ``dst`` through a temporary file, checking the bytes
    written; ``dst`` appears only if they match. Returns None when done, else
    what differs (and ``dst`` is not written)."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    hashes = Hashes(sha256 is not None)
    tmp = dst.with_name(f".{dst.name}.part")
    try:
        with open(src, "rb") as fin, open(tmp, "wb") as fout:
            while chunk := fin.read(CHUNK):
                hashes.update(chunk)
                fout.write(chunk)
        problem = hashes.mismatch(md5, sha256)
        if problem is None:
            os.replace(tmp, dst)
        return problem
    finally:
        tmp.unlink(missing_ok=True)
