"""download: a dataset's official files -> ``results/raw/<key>/``, verified.

Every dataset loader that needs files declares them as :class:`OfficialFile`
entries (name, URL, published checksum, whether it is an archive), taken from
torchvision's dataset classes where they exist. :func:`fetch_files` gets each
one either

- from a local **mirror** folder (the config key ``data_mirror``): the file
  under its official name, or, where the publisher gives checksums of the
  extracted files (:class:`Member`), those files at their extracted paths;
- or from its **URL**, into a cache (``results/downloads/``).

Whatever the source, a file is checked against its official checksum before
anything uses it, and every write goes to a temporary name that is renamed
only when complete and verified: a half-downloaded or corrupt file is never
left where a later run would trust it. Downloads are retried with a growing
pause. The dataset's folder is assembled in a temporary folder beside the
target and renamed onto it at the end.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from tqdm.auto import tqdm

from workflow.checksums import (
    CHECKSUM_FORM,
    CHUNK,
    Hashes,
    copy_verified,
    describe_checksums,
    file_mismatch,
    parse_checksum,
)
from workflow.config import ConfigError
from workflow.io import disk_full_named, ordinary_mode
from workflow.job_guard import temporary, writing


class DownloadError(RuntimeError):
    """A file could not be fetched or does not match its official checksum."""


@dataclass(frozen=True)
class Member:
    """A file inside an archive whose checksum the publisher gives, so a mirror
    may hold it extracted (``path`` relative to the dataset folder)."""

    path: str
    md5: str


@dataclass(frozen=True)
class OfficialFile:
    """One file as its publisher distributes it.

    ``url`` is None for files with no public address (then only a mirror can
    provide them). ``extract``: an archive, unpacked into the dataset folder.
    ``hint`` is added to the message when the file is missing or wrong.
    ``md5`` None (and no ``sha256``): no published checksum; such a file is
    fetched only with a checksum the user pins (:func:`pin_checksums`),
    which sets ``pinned`` and keeps the published ones in ``official``.
    """

    name: str
    url: str | None
    md5: str | None
    sha256: str | None = None
    extract: bool = False
    members: tuple[Member, ...] = field(default_factory=tuple)
    hint: str = ""
    pinned: bool = False
    official: str = ""

    @classmethod
    def from_dict(cls, data: dict) -> OfficialFile:
        data = dict(data)
        data["members"] = tuple(Member(**m) for m in data.get("members", ()))
        return cls(**data)

    def to_dict(self) -> dict:
        return asdict(self)

    def checksums(self) -> str:
        if not self.md5 and not self.sha256:
            return "no published checksum"
        return describe_checksums(self.md5, self.sha256) + (
            " pinned in the config" if self.pinned else ""
        )

    def wanted(self) -> str:
        """What the file must be, for messages."""
        if self.pinned:
            return f"your copy of {self.name} ({self.checksums()}, key checksums)"
        return f"the official file ({self.checksums()})"


# ---------------------------------------------------------------- network


def download_url(
    url: str,
    dest,
    md5: str | None,
    sha256: str | None = None,
    retries: int = 3,
    timeout: float = 60.0,
    pause: float = 2.0,
) -> Path:
    """Download ``url`` to ``dest`` and check it; up to ``retries`` attempts,
    ``pause`` x 2^attempt seconds apart. The bytes go to a temporary file in
    ``dest``'s folder, renamed onto ``dest`` only when complete and matching
    the checksums. ``file://`` URLs work too (used by the tests)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for attempt in range(retries):
        if attempt:
            time.sleep(pause * 2 ** (attempt - 1))
        fd, tmp = tempfile.mkstemp(
            dir=dest.parent, prefix=f".{dest.name}.", suffix=".part"
        )
        os.chmod(tmp, ordinary_mode())
        try:
            hashes = Hashes(sha256 is not None)
            request = urllib.request.Request(
                url, headers={"User-Agent": "cbir-benchmark"}
            )
            with (
                os.fdopen(fd, "wb") as out,
                urllib.request.urlopen(request, timeout=timeout) as response,
            ):
                total = response.headers.get("Content-Length")
                total = int(total) if total else None
                received = 0
                with tqdm(
                    total=total,
                    unit="B",
                    unit_scale=True,
                    desc=f"download {dest.name}",
                    file=sys.stderr,
                    mininterval=5,
                ) as bar:
                    while chunk := response.read(CHUNK):
                        out.write(chunk)
                        hashes.update(chunk)
                        received += len(chunk)
                        bar.update(len(chunk))
            if total is not None and received != total:
                raise DownloadError(f"incomplete: {received} of {total} bytes")
            problem = hashes.mismatch(md5, sha256)
            if problem:
                raise DownloadError(problem)
            os.replace(tmp, dest)
            return dest
        except (OSError, urllib.error.URLError, DownloadError) as error:
            errors.append(f"attempt {attempt + 1}: {error}")
            print(f"download {url}: {error}", file=sys.stderr)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    raise DownloadError(
        f"could not download {url} (expected {describe_checksums(md5, sha256)}) after {retries} attempts:\n  "
        + "\n  ".join(errors)
        + f"\nDownload it yourself and put it, named {dest.name}, into a folder "
        "named by the config key data_mirror."
    )


# ---------------------------------------------------------------- archives


def extract(archive, folder) -> None:
    """Unpack a .zip or .tar(.gz/.bz2/.xz) archive into ``folder``. Tar members
    pass Python's ``data`` filter (no absolute paths, no escaping links)."""
    archive = Path(archive)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            for member in tqdm(
                z.infolist(),
                desc=f"extract {archive.name}",
                file=sys.stderr,
                mininterval=5,
            ):
                z.extract(member, folder)  # zipfile drops '..' and absolute parts
        return
    with tarfile.open(archive, "r:*") as tar:
        for member in tqdm(
            tar, desc=f"extract {archive.name}", file=sys.stderr, mininterval=5
        ):
            tar.extract(member, folder, filter="data")


# ---------------------------------------------------------------- a dataset


def _mismatch_message(path, problem: str, f: OfficialFile, where: str) -> str:
    url = f" (official source: {f.url})" if f.url else ""
    what = (
        "the copy pinned in the config" if f.pinned else f"the official {f.name}{url}"
    )
    return f"{path}: {problem}. It is not {what}. Put {f.wanted()} into {where}. {f.hint}".rstrip()


def _from_mirror(f: OfficialFile, mirror: Path, folder: Path) -> tuple[str, bool]:
    """Take ``f`` from the mirror into ``folder``; return how, and whether
    its extracted files were copied (each one checked) instead of unpacked."""
    archive = mirror / f.name
    if archive.is_file():
        if f.extract:
            problem = file_mismatch(archive, f.md5, f.sha256)
            if problem is None:
                extract(archive, folder)
        else:
            problem = copy_verified(archive, folder / f.name, f.md5, f.sha256)
        if problem:
            raise DownloadError(
                _mismatch_message(
                    archive, problem, f, f"the data_mirror folder {mirror}"
                )
            )
        return f"mirror {archive}", False
    if f.members and all((mirror / m.path).is_file() for m in f.members):
        for m in f.members:
            problem = copy_verified(mirror / m.path, folder / m.path, m.md5)
            if problem:
                raise DownloadError(
                    f"{mirror / m.path}: {problem}. It is not the official {m.path} "
                    f"(from {f.name}). Put the official file (md5 {m.md5}) at {mirror / m.path}, "
                    f"or the official archive {f.name} ({f.checksums()}) into {mirror}. {f.hint}".rstrip()
                )
        return f"mirror {mirror} (extracted files of {f.name})", True
    extracted = ""
    if f.members:
        missing = [m.path for m in f.members if not (mirror / m.path).is_file()]
        extracted = (
            f", or its extracted files {', '.join(m.path for m in f.members)} "
            f"(missing: {', '.join(missing)})"
        )
    url = f" (official source: {f.url})" if f.url and not f.pinned else ""
    raise DownloadError(
        f"data_mirror {mirror}: {f.name} is missing. Put {f.wanted()}{url} "
        f"into {mirror}{extracted}. {f.hint}".rstrip()
    )


def _from_url(f: OfficialFile, cache: Path, folder: Path, **download_options) -> str:
    if f.url is None or f.pinned:
        reason = (
            "has no public download address"
            if f.url is None
            else "is your own copy (checksum pinned)"
        )
        raise DownloadError(
            f"{f.name} {reason}; put it ({f.checksums()}) into a "
            f"folder and name that folder in the config key data_mirror. {f.hint}".rstrip()
        )
    cached = cache / f.name
    if cached.is_file() and file_mismatch(cached, f.md5, f.sha256) is None:
        how = f"cache {cached}"
    else:
        download_url(f.url, cached, f.md5, f.sha256, **download_options)
        how = f"{f.url}"
    if f.extract:
        extract(cached, folder)
    else:
        try:
            os.link(cached, folder / f.name)  # same bytes, no second copy
        except OSError:
            problem = copy_verified(cached, folder / f.name, f.md5, f.sha256)
            if problem:
                raise DownloadError(f"{cached}: {problem}") from None
    return how


def fetch_files(
    files: list[OfficialFile],
    destination,
    mirror=None,
    cache="results/downloads",
    **download_options,
) -> dict:
    """Assemble the verified ``files`` into the folder ``destination``.

    The folder is built under a temporary name beside it and renamed at the
    end, so it exists only when complete; ``download.json`` inside records
    where each file came from. Returns that record."""
    destination = Path(destination)
    parent = destination.parent
    parent.mkdir(parents=True, exist_ok=True)
    if mirror is not None:
        mirror = Path(mirror)
        if not mirror.is_dir():
            raise ConfigError(f"config key data_mirror: {mirror} is not a folder")
    for stale in parent.glob(f".{destination.name}.partial-*"):
        shutil.rmtree(stale, ignore_errors=True)  # left by a killed run; never trusted
    work = Path(tempfile.mkdtemp(dir=parent, prefix=f".{destination.name}.partial-"))
    os.chmod(
        work, ordinary_mode(0o777)
    )  # mkdtemp makes it private; the result is an ordinary folder
    record = {"files": []}
    # Inside the job's watch (workflow/job_guard.py): the folder is removed
    # should the job's Snakemake end, and renamed only while it runs.
    try:
        with temporary(work), disk_full_named(parent):
            for f in files:
                if not f.md5 and not f.sha256:
                    raise DownloadError(
                        f"{f.name} has no published checksum; it is accepted only with a checksum you pin in the "
                        f"dataset's config key checksums ({{{f.name}: <md5 or sha256>}}). {f.hint}".rstrip()
                    )
                if mirror is not None:
                    how, members_copied = _from_mirror(f, mirror, work)
                else:
                    how, members_copied = (
                        _from_url(f, Path(cache), work, **download_options),
                        False,
                    )
                if f.extract and not members_copied:
                    for m in (
                        f.members
                    ):  # what the verified archive unpacked is as published
                        problem = (
                            file_mismatch(work / m.path, m.md5)
                            if (work / m.path).is_file()
                            else "missing"
                        )
                        if problem:
                            raise DownloadError(
                                f"{f.name}: extracted {m.path}: {problem}"
                            )
                print(
                    f"{f.name}: {f.checksums()} verified, from {how}", file=sys.stderr
                )
                entry = {"name": f.name, "md5": f.md5, "from": how}
                if f.sha256:
                    entry["sha256"] = f.sha256
                if f.pinned:
                    print(
                        f"WARNING: {f.name} was checked against a USER-PINNED checksum ({f.checksums()}), not "
                        f"the published one ({f.official}): it is your own copy, and results may differ from "
                        "the official dataset's",
                        file=sys.stderr,
                    )
                    entry.update(
                        checksum="USER-PINNED (config key checksums), not the published one",
                        official=f.official,
                    )
                record["files"].append(entry)
            (work / "download.json").write_text(json.dumps(record, indent=2) + "\n")
            with writing():
                if destination.exists():
                    shutil.rmtree(destination)
                os.replace(work, destination)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return record


# ---------------------------------------------------------------- planning


def official_files(source: str, params: dict) -> list[OfficialFile]:
    """The official files of a dataset source with these loader params
    (empty for sources that need none, e.g. ``sklearn_digits``)."""
    from workflow.datasets import dataset_files

    return dataset_files(source, params)


def pin_checksums(
    files: list[OfficialFile], checksums: dict, name: str
) -> list[OfficialFile]:
    """``files`` with the checksums a dataset's config pins (``checksums:
    {<official file name>: <md5 or sha256>}``, a user's own re-packed copy
    or subset) in place of the published ones. The published checksums of
    an archive's extracted files no longer apply to a pinned archive. A
    name that is not one of the files, or a file without a published
    checksum left unpinned, raises ConfigError naming the key."""
    names = [f.name for f in files]
    for file_name in checksums:
        if file_name not in names:
            raise ConfigError(
                f"config key datasets.{name}.checksums: {file_name!r} is not a file of this dataset; its "
                f"files are {', '.join(names) or 'none (it downloads nothing)'}"
            )
    pinned = []
    for f in files:
        value = checksums.get(f.name)
        if value is None:
            if not f.md5 and not f.sha256:
                raise ConfigError(
                    f"config key datasets.{name}.checksums: {f.name} has no published checksum, so it is accepted "
                    f"only with the checksum of your copy pinned: add {f.name}: <its md5 or sha256> (md5sum "
                    f"{f.name}) to datasets.{name}.checksums. {f.hint}".rstrip()
                )
            pinned.append(f)
            continue
        parsed = parse_checksum(value)
        if parsed is None:
            raise ConfigError(
                f"config key datasets.{name}.checksums.{f.name}: {value!r} is not {CHECKSUM_FORM}"
            )
        md5, sha256 = (parsed[1], None) if parsed[0] == "md5" else (None, parsed[1])
        official = f.checksums() if (f.md5 or f.sha256) else "none published"
        pinned.append(
            replace(
                f, md5=md5, sha256=sha256, members=(), pinned=True, official=official
            )
        )
    return pinned


def download_key(source: str, files: list[OfficialFile]) -> str:
    """Folder name under ``results/raw/``: the source name for its default
    files, with a short hash of the checksums when the params pick other files
    (e.g. the Tiny ImageNet subset), so config entries sharing files share one
    download."""
    from workflow.datasets import dataset_files

    if [(f.md5, f.sha256) for f in files] == [
        (f.md5, f.sha256) for f in dataset_files(source, {})
    ]:
        return source
    digest = hashlib.sha256(
        " ".join(str(f.md5 or f.sha256) for f in files).encode()
    ).hexdigest()[:8]
    return f"{source}-{digest}"


def plan_downloads(
    datasets: dict,
) -> tuple[dict[str, str | None], dict[str, list[dict]]]:
    """For the config's datasets: the download key of each (None when it
    needs no files) and, per key, the files (as plain dicts for Snakemake
    params)."""
    keys, files_of = {}, {}
    for name, spec in datasets.items():
        try:
            files = official_files(spec["source"], spec.get("params", {}))
        except TypeError as error:
            raise ConfigError(f"config key datasets.{name}.params: {error}") from None
        files = pin_checksums(files, spec.get("checksums") or {}, name)
        if not files:
            keys[name] = None
            continue
        key = download_key(spec["source"], files)
        keys[name] = key
        files_of[key] = [f.to_dict() for f in files]
    return keys, files_of
