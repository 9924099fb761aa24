"""The published listings a loader reads (CUB's ``images.txt``, SOP's
``Ebay_train.txt``, the annotations of Cars196's ``cars_annos.mat``, ...),
checked as they are read: a listing says which files are the dataset, so
an image listed twice would put a query's own file into its database
(inflated metrics), and a path leading out of the dataset's folder would
read a file that is not part of it. Every listed id and file is unique,
every path resolves inside the dataset's folder (no ``..``, no absolute
path, no symbolic link leading out), every value lies in its documented
domain. A violation raises :class:`ListingError` naming the file, the line
(or record) and the value, and saying what to do.

The official archives pass (their checksums are checked on download): a
violation means the extracted folder was changed afterwards, or a
re-packed copy (its checksum pinned in the config) lists otherwise than
the official one.
"""

from __future__ import annotations

import bisect
import math
import os
import posixpath
import unicodedata
from dataclasses import dataclass
from pathlib import Path


class ListingError(ValueError):
    """A listing of a dataset's files that is not as its publisher gives it."""


def advice(source: str, root: Path) -> str:
    return (
        f"The official {source} lists no such entry: delete {root} so that the download step extracts the "
        "official files again (a re-packed copy, its checksum pinned in the config, must list as the official "
        "one does)"
    )


@dataclass
class Listing:
    """The rows of a listing, each a list of fields, with its number
    ``lines[i]`` in the file that ``parts`` names (``(first row, "<file>,
    line")`` per file; a number per row rather than a text keeps the 1.8
    million rows of Places365 small); ``source``: the official archive (or
    files) holding it; ``root``: the dataset's folder, inside which every
    listed file must lie. Listings of one dataset add up (``a + b``), so
    that an id or a file is unique across them."""

    rows: list[list[str]]
    lines: list[int]
    parts: list[tuple[int, str]]
    source: str
    root: Path

    def __add__(self, other: Listing) -> Listing:
        shifted = [(start + len(self.rows), name) for start, name in other.parts]
        return Listing(
            self.rows + other.rows,
            self.lines + other.lines,
            self.parts + shifted,
            self.source,
            self.root,
        )

    def place(self, i: int) -> str:
        """Row ``i``'s file and line, e.g. ``.../images.txt, line 12``."""
        name = self.parts[
            bisect.bisect_right([start for start, _ in self.parts], i) - 1
        ][1]
        return f"{name} {self.lines[i]}"

    def fail(self, i: int, problem: str):
        raise ListingError(
            f"{self.place(i)}: {problem}. {advice(self.source, self.root)}"
        )

    def column(self, j: int) -> list[str]:
        return [row[j] for row in self.rows]

    def unique(self, j: int, what: str) -> list[str]:
        """Column ``j``, each value listed once."""
        first = {}
        for i, row in enumerate(self.rows):
            seen = first.setdefault(row[j], i)
            if seen != i:
                self.fail(
                    i, f"{what} {row[j]!r} is listed twice (also at {self.place(seen)})"
                )
        return self.column(j)

    def integers(
        self, j: int, what: str, low: int, high: int | None = None
    ) -> list[int]:
        """Column ``j`` as whole numbers in ``low..high``."""
        values = []
        for i, row in enumerate(self.rows):
            try:
                value = int(row[j])
            except ValueError:
                self.fail(i, f"{what} {row[j]!r} is not a whole number")
            if value < low or (high is not None and value > high):
                self.fail(
                    i,
                    f"{what} {row[j]!r} lies outside {low}..{'' if high is None else high}",
                )
            values.append(value)
        return values

    def choice(self, j: int, what: str, allowed, among: str | None = None) -> list[str]:
        """Column ``j``, each value one of ``allowed`` (``among`` says
        which, where they are too many to list)."""
        for i, row in enumerate(self.rows):
            if row[j] not in allowed:
                self.fail(
                    i,
                    f"{what} {row[j]!r} is not {among or 'one of ' + ', '.join(map(str, allowed))}",
                )
        return self.column(j)

    def numbers(self, columns, what: str) -> list[list[float]]:
        """``columns`` as finite numbers >= 0 (pixel coordinates and sizes)."""
        values = []
        for i, row in enumerate(self.rows):
            try:
                numbers = [float(row[j]) for j in columns]
            except ValueError:
                numbers = [math.nan]
            if not all(math.isfinite(v) and v >= 0 for v in numbers):
                self.fail(
                    i,
                    f"{what} {' '.join(row[j] for j in columns)!r} is not numbers >= 0",
                )
            values.append(numbers)
        return values

    def files(self, j: int, folder: Path, what: str = "file") -> list[Path]:
        """Column ``j`` as files under ``folder``, each a relative path
        that stays inside ``root`` (symbolic links resolved) and names a
        file no other row names. (Strings and os.path, not Path objects:
        Places365 lists 1.8 million files.)"""
        root = os.path.realpath(self.root)
        inside = os.path.join(root, "")  # root and a separator
        base = os.fspath(folder)
        parents: dict[
            str, str
        ] = {}  # each folder resolved once: images share few folders
        first: dict[str, int] = {}
        for i, row in enumerate(self.rows):
            name = row[j]
            if (
                name.startswith("/")
                or "\\" in name
                or ".." in name.split("/")
                or posixpath.normpath(name) == "."
            ):
                self.fail(
                    i, f"{name!r} is no relative path inside the dataset's folder"
                )
            parent, file_name = os.path.split(os.path.join(base, name))
            real_parent = parents.get(parent)
            if real_parent is None:
                real_parent = parents[parent] = os.path.realpath(parent)
            resolved = os.path.join(real_parent, file_name)
            if os.path.islink(resolved):
                resolved = os.path.realpath(resolved)
            if not resolved.startswith(inside):
                self.fail(
                    i,
                    f"{name!r} leads through a symbolic link to {resolved}, outside the dataset's "
                    f"folder {root}",
                )
            seen = first.setdefault(resolved, i)
            if seen != i:
                self.fail(
                    i,
                    f"the {what} {name!r} is listed twice (also at {self.place(seen)})",
                )
        return [folder / row[j] for row in self.rows]


def read_listing(path, fields: int, source: str, root, header: int = 0) -> Listing:
    """The rows of a published text listing (whitespace-separated, after
    ``header`` lines), each of ``fields`` fields; a missing file, a row of
    another length or an empty listing raises an error naming the file
    (and line) and the archive ``source`` that holds it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: missing; it is part of the official {source}, which should have unpacked it"
        )
    rows, lines = [], []
    for number, line in enumerate(
        path.read_text().splitlines()[header:], start=header + 1
    ):
        if not line.strip():
            continue
        row = line.split()
        if len(row) != fields:
            raise ListingError(
                f"{path}, line {number}: {len(row)} fields ({line.strip()[:80]!r}), expected {fields}. "
                f"{advice(source, Path(root))}"
            )
        rows.append(row)
        lines.append(number)
    if not rows:
        raise ListingError(
            f"{path}: lists nothing (a file of the official {source} lists every image). "
            f"{advice(source, Path(root))}"
        )
    return Listing(rows, lines, [(0, f"{path}, line")], source, Path(root))


def check_header(path, expected: list[str], source: str, root, line: int = 1) -> None:
    """Line ``line`` of ``path`` is the published header ``expected``."""
    lines = Path(path).read_text().splitlines()
    found = lines[line - 1].split() if len(lines) >= line else []
    if found != expected:
        raise ListingError(
            f"{path}, line {line}: the header is {' '.join(found)!r}, expected {' '.join(expected)!r}. "
            f"{advice(source, Path(root))}"
        )


def unicode_twins(names) -> tuple[str, str] | None:
    """Two of ``names`` that differ only in Unicode normalisation (``é``
    as one character, NFC, or as ``e`` and a combining accent, NFD): they
    look the same but are different names. None if there are none."""
    first = {}
    for name in names:
        other = first.setdefault(unicodedata.normalize("NFC", name), name)
        if other != name:
            return other, name
    return None


def describe_twins(a: str, b: str) -> str:
    def form(name):
        return (
            "NFC"
            if unicodedata.is_normalized("NFC", name)
            else "NFD"
            if unicodedata.is_normalized("NFD", name)
            else "mixed"
        )

    return (
        f"{a!r} ({form(a)}: {ascii(a)}) and {b!r} ({form(b)}: {ascii(b)}) are the same name in two Unicode "
        "normalisations"
    )
