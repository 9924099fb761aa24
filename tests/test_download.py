"""The download step: network downloads (a local HTTP server on 127.0.0.1
and file:// URLs), retries, checksums, the data_mirror folder (the real
CIFAR-100 and Tiny ImageNet copies in ../shared/datasets and broken copies
of them), and that nothing half-written is ever left behind."""

from __future__ import annotations

import contextlib
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from conftest import make_workspace, read_test_config, snakemake
from official_formats import SHARED_DATASETS, make_food101, make_svhn, md5, tar_gz

from workflow.config import ConfigError
from workflow.datasets import load_dataset
from workflow.download import (
    DownloadError,
    OfficialFile,
    download_url,
    fetch_files,
    official_files,
    plan_downloads,
)

CIFAR_MD5 = {
    "train": "16019d7e3df5f24257cddd939b257f8d",
    "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
    "meta": "7973b15100ade9c7d40fb424638fde48",
}
TINY_OFFICIAL_MD5 = "90528d7ca1a48142e341f4ef8d21d0de"
TINY_SUBSET_MD5 = "3720c701c700f824f268e9d6974d016b"


def leftovers(folder: Path) -> list[str]:
    """Temporary or partial files anywhere under ``folder``."""
    return [str(p) for p in folder.rglob("*") if ".part" in p.name or ".tmp" in p.name]


@contextlib.contextmanager
def http_server(files: dict[str, bytes], fail_first: int = 0, truncate: bool = False):
    """Serve ``files`` on 127.0.0.1 at a free port. The first ``fail_first``
    requests get a 503; ``truncate`` promises more bytes than it sends. The
    server stops when the block ends, and by itself after 60 s at most."""
    state = {"requests": 0}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            state["requests"] += 1
            body = files.get(self.path.lstrip("/"))
            if state["requests"] <= fail_first:
                self.send_error(503, "try again")
                return
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header(
                "Content-Length", str(len(body) + (100 if truncate else 0))
            )
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    watchdog = threading.Timer(60, server.shutdown)
    thread.start()
    watchdog.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        watchdog.cancel()
        server.shutdown()
        server.server_close()
        thread.join(5)


# ---------------------------------------------------------------- network


def test_download_over_http_checks_the_md5_and_leaves_only_the_file(tmp_path):
    payload = os.urandom(300_000)
    with http_server({"data.bin": payload}) as (url, state):
        dest = download_url(
            f"{url}/data.bin",
            tmp_path / "cache" / "data.bin",
            md5=md5_of(payload),
            pause=0,
        )
    assert dest.read_bytes() == payload
    assert state["requests"] == 1
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["data.bin"]


def md5_of(data: bytes) -> str:
    import hashlib

    return hashlib.md5(data).hexdigest()


def test_download_is_retried_after_server_errors(tmp_path):
    payload = b"x" * 5000
    with http_server({"f": payload}, fail_first=2) as (url, state):
        download_url(
            f"{url}/f", tmp_path / "f", md5=md5_of(payload), retries=3, pause=0.01
        )
    assert state["requests"] == 3
    assert (tmp_path / "f").read_bytes() == payload


@pytest.mark.parametrize("problem", ["truncated", "wrong_bytes", "not_found"])
def test_a_failed_download_names_url_and_checksum_and_leaves_nothing(tmp_path, problem):
    payload = b"official bytes" * 1000
    served = {"f": payload if problem != "wrong_bytes" else payload[:-1] + b"?"}
    if problem == "not_found":
        served = {}
    with http_server(served, truncate=problem == "truncated") as (url, state):
        with pytest.raises(DownloadError) as error:
            download_url(
                f"{url}/f", tmp_path / "f", md5=md5_of(payload), retries=3, pause=0.01
            )
    assert state["requests"] == 3
    message = str(error.value)
    assert (
        f"{url}/f" in message
        and md5_of(payload) in message
        and "data_mirror" in message
    )
    assert not (tmp_path / "f").exists()
    assert list(tmp_path.iterdir()) == []


def test_file_urls_work(tmp_path):
    source = tmp_path / "source.bin"
    source.write_bytes(b"abc" * 100)
    dest = download_url(
        source.as_uri(), tmp_path / "out" / "copy.bin", md5=md5(source), pause=0
    )
    assert dest.read_bytes() == source.read_bytes()


def test_fetch_over_http_builds_the_dataset_folder_from_plain_files_and_archives(
    tmp_path,
):
    """Generated SVHN .mat files and a Food-101 .tar.gz served over HTTP, with
    their own checksums in place of the official ones."""
    svhn = make_svhn(tmp_path / "gen" / "svhn")
    make_food101(tmp_path / "gen" / "food")
    archive = tar_gz(
        tmp_path / "gen" / "food" / "food-101",
        tmp_path / "gen" / "food-101.tar.gz",
        "food-101",
    )
    served = {
        name: (tmp_path / "gen" / "svhn" / name).read_bytes()
        for name in ["train_32x32.mat", "test_32x32.mat"]
    }
    served["food-101.tar.gz"] = archive.read_bytes()
    with http_server(served) as (url, state):
        files = [
            OfficialFile(
                name, f"{url}/{name}", md5_of(data), extract=name.endswith(".tar.gz")
            )
            for name, data in served.items()
        ]
        record = fetch_files(
            files, tmp_path / "raw" / "mixed", cache=tmp_path / "downloads", pause=0
        )
        assert state["requests"] == 3
        # A second fetch takes the verified cache and downloads nothing.
        fetch_files(
            files, tmp_path / "raw" / "again", cache=tmp_path / "downloads", pause=0
        )
        assert state["requests"] == 3
    raw = tmp_path / "raw" / "mixed"
    assert [f["name"] for f in record["files"]] == list(served)
    assert json.loads((raw / "download.json").read_text()) == record
    data = load_dataset("svhn", root=raw)
    x, y = svhn["train"]
    assert np.array_equal(data.images[: len(y)], x.transpose(3, 0, 1, 2))
    expected = y.reshape(-1).astype(np.int64) % 10  # 10 is the digit 0
    assert np.array_equal(data.labels[: len(y)], expected)
    food = load_dataset("food101", root=raw)
    assert food.class_names == ["apple_pie", "baby_back_ribs", "waffles"]
    assert all(p.is_file() for p in food.paths)
    assert leftovers(tmp_path / "raw") == [] and leftovers(tmp_path / "downloads") == []
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["again", "mixed"]


def test_a_corrupt_download_leaves_no_dataset_folder(tmp_path):
    with http_server({"a.mat": b"not the official bytes"}) as (url, _):
        files = [OfficialFile("a.mat", f"{url}/a.mat", "0" * 32)]
        with pytest.raises(DownloadError, match="0{32}"):
            fetch_files(
                files,
                tmp_path / "raw" / "svhn",
                cache=tmp_path / "downloads",
                retries=2,
                pause=0,
            )
    assert list((tmp_path / "raw").iterdir()) == []
    assert list((tmp_path / "downloads").iterdir()) == []


# ---------------------------------------------------------------- mirror


def cifar_mirror(
    tmp_path: Path, corrupt: str | None = None, drop: str | None = None
) -> Path:
    """A mirror folder of the real CIFAR-100 files (links to the shared
    copy), with one file corrupted by one byte or left out."""
    mirror = tmp_path / "mirror"
    folder = mirror / "cifar-100-python"
    folder.mkdir(parents=True)
    for name in CIFAR_MD5:
        if name == drop:
            continue
        if name == corrupt:
            data = bytearray((SHARED_DATASETS / "cifar-100-python" / name).read_bytes())
            data[len(data) // 2] ^= 0x01
            (folder / name).write_bytes(bytes(data))
        else:
            (folder / name).symlink_to(SHARED_DATASETS / "cifar-100-python" / name)
    return mirror


def test_the_shared_mirror_is_where_the_tests_expect_it():
    assert (SHARED_DATASETS / "cifar-100-python" / "train").is_file(), (
        f"{SHARED_DATASETS}: the offline datasets must lie in ../shared/datasets beside the repository"
    )


def test_real_cifar100_from_the_mirror_is_verified_and_copied(tmp_path):
    record = fetch_files(
        official_files("cifar100", {}),
        tmp_path / "raw" / "cifar100",
        mirror=SHARED_DATASETS,
    )
    folder = tmp_path / "raw" / "cifar100" / "cifar-100-python"
    assert {p.name: md5(p) for p in folder.iterdir()} == CIFAR_MD5
    assert not any(p.is_symlink() for p in folder.iterdir())
    assert record["files"][0]["name"] == "cifar-100-python.tar.gz"
    assert "extracted files" in record["files"][0]["from"]


def test_a_corrupted_byte_in_the_mirror_names_the_file_and_its_checksum(tmp_path):
    mirror = cifar_mirror(tmp_path, corrupt="meta")
    with pytest.raises(DownloadError) as error:
        fetch_files(
            official_files("cifar100", {}), tmp_path / "raw" / "cifar100", mirror=mirror
        )
    message = str(error.value)
    assert str(mirror / "cifar-100-python" / "meta") in message
    assert CIFAR_MD5["meta"] in message and "expected" in message
    assert "eb9058c3a382ffc7106e4002c42a8d85" in message  # or the official archive
    assert list((tmp_path / "raw").iterdir()) == []  # no dataset folder, no partial one


def test_a_missing_mirror_file_names_it_and_where_to_put_it(tmp_path):
    mirror = cifar_mirror(tmp_path, drop="test")
    with pytest.raises(DownloadError) as error:
        fetch_files(
            official_files("cifar100", {}), tmp_path / "raw" / "cifar100", mirror=mirror
        )
    message = str(error.value)
    assert "cifar-100-python.tar.gz is missing" in message
    assert "eb9058c3a382ffc7106e4002c42a8d85" in message and f"into {mirror}" in message
    assert "missing: cifar-100-python/test" in message
    assert list((tmp_path / "raw").iterdir()) == []


def test_an_archive_in_the_mirror_is_checked_against_the_official_archive_checksum(
    tmp_path,
):
    """A repacked archive has the right content but not the official bytes:
    refused, exactly like a download with a wrong checksum."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    tar_gz(
        SHARED_DATASETS / "cifar-100-python" / "meta",
        mirror / "cifar-100-python.tar.gz",
        "cifar-100-python/meta",
    )
    with pytest.raises(
        DownloadError, match="expected eb9058c3a382ffc7106e4002c42a8d85"
    ) as error:
        fetch_files(
            official_files("cifar100", {}), tmp_path / "raw" / "c", mirror=mirror
        )
    assert "not the official cifar-100-python.tar.gz" in str(error.value)
    assert list((tmp_path / "raw").iterdir()) == []


def test_an_archive_in_the_mirror_is_extracted(tmp_path):
    make_food101(tmp_path / "gen")
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    archive = tar_gz(
        tmp_path / "gen" / "food-101", mirror / "food-101.tar.gz", "food-101"
    )
    files = [OfficialFile("food-101.tar.gz", None, md5(archive), extract=True)]
    fetch_files(files, tmp_path / "raw" / "food", mirror=mirror)
    assert (tmp_path / "raw" / "food" / "food-101" / "meta" / "train.txt").is_file()


def test_mirror_that_is_not_a_folder_names_the_config_key(tmp_path):
    with pytest.raises(ConfigError, match="config key data_mirror"):
        fetch_files(
            official_files("cifar100", {}),
            tmp_path / "raw" / "c",
            mirror=tmp_path / "nowhere",
        )


def test_tiny_imagenet_subset_is_refused_without_the_explicit_setting(tmp_path):
    with pytest.raises(DownloadError) as error:
        fetch_files(
            official_files("tiny_imagenet", {}),
            tmp_path / "raw" / "tiny",
            mirror=SHARED_DATASETS,
        )
    message = str(error.value)
    assert (
        "tiny-imagenet-200.zip is missing" in message and TINY_OFFICIAL_MD5 in message
    )
    assert "subset: true" in message
    assert list((tmp_path / "raw").iterdir()) == []


def test_tiny_imagenet_subset_under_the_official_name_fails_the_official_checksum(
    tmp_path,
):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "tiny-imagenet-200.zip").symlink_to(
        SHARED_DATASETS / "tiny-imagenet-200-subset.zip"
    )
    with pytest.raises(DownloadError) as error:
        fetch_files(
            official_files("tiny_imagenet", {}),
            tmp_path / "raw" / "tiny",
            mirror=mirror,
        )
    message = str(error.value)
    assert f"md5 is {TINY_SUBSET_MD5}, expected {TINY_OFFICIAL_MD5}" in message
    assert list((tmp_path / "raw").iterdir()) == []


def test_a_corrupted_tiny_imagenet_subset_is_refused(tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    data = bytearray((SHARED_DATASETS / "tiny-imagenet-200-subset.zip").read_bytes())
    data[1000] ^= 0xFF
    (mirror / "tiny-imagenet-200-subset.zip").write_bytes(bytes(data))
    with pytest.raises(DownloadError, match=f"expected {TINY_SUBSET_MD5}"):
        fetch_files(
            official_files("tiny_imagenet", {"subset": True}),
            tmp_path / "raw" / "tiny",
            mirror=mirror,
        )
    assert list((tmp_path / "raw").iterdir()) == []


# ---------------------------------------------------------------- planning


def test_datasets_sharing_files_share_one_download_and_the_subset_gets_its_own():
    keys, files = plan_downloads(
        {
            "c100": {"source": "cifar100", "params": {}},
            "c100_coarse": {"source": "cifar100", "params": {"coarse": True}},
            "tiny": {"source": "tiny_imagenet", "params": {}},
            "tiny_sub": {"source": "tiny_imagenet", "params": {"subset": True}},
            "digits": {"source": "sklearn_digits", "params": {}},
        }
    )
    assert keys["c100"] == keys["c100_coarse"] == "cifar100"
    assert keys["tiny"] == "tiny_imagenet"
    assert (
        keys["tiny_sub"].startswith("tiny_imagenet-")
        and keys["tiny_sub"] != keys["tiny"]
    )
    assert keys["digits"] is None
    assert files[keys["tiny_sub"]][0]["md5"] == TINY_SUBSET_MD5
    assert set(files) == {"cifar100", "tiny_imagenet", keys["tiny_sub"]}


def test_an_unknown_or_missing_loader_parameter_names_the_key():
    with pytest.raises(
        ConfigError,
        match=r"datasets\.tiny\.params: .*'subsett' \(did you mean 'subset'\?\)",
    ):
        plan_downloads(
            {"tiny": {"source": "tiny_imagenet", "params": {"subsett": True}}}
        )
    with pytest.raises(
        ConfigError,
        match=r"datasets\.mine\.params: dataset 'imagefolder' needs the parameter 'path'",
    ):
        plan_downloads({"mine": {"source": "imagefolder", "params": {}}})


TINY_RUN = read_test_config("tiny_imagenet")


def test_snakemake_stops_on_a_missing_mirror_file_and_writes_nothing(tmp_path):
    workdir = make_workspace(
        tmp_path / "ws", {**TINY_RUN, "data_mirror": str(SHARED_DATASETS)}
    )
    result = snakemake(
        workdir,
        "--cores",
        "1",
        "results/splits/tiny/full/seed0.train.parquet",
        check=False,
    )
    assert result.returncode != 0
    log = (workdir / "results/logs/download/tiny_imagenet.log").read_text()
    assert "tiny-imagenet-200.zip is missing" in log and TINY_OFFICIAL_MD5 in log
    assert not (workdir / "results" / "raw" / "tiny_imagenet").exists()
    assert not (workdir / "results" / "data").exists()
    raw = workdir / "results" / "raw"
    assert not raw.exists() or list(raw.iterdir()) == []  # no partial folder either


def test_snakemake_names_a_wrong_loader_parameter_before_running(tmp_path):
    config = {
        **TINY_RUN,
        "datasets": {
            "tiny": {"source": "tiny_imagenet", "params": {"subset": True, "size": 3}}
        },
    }
    result = snakemake(make_workspace(tmp_path / "ws", config), "-n", check=False)
    assert result.returncode != 0
    assert (
        "datasets.tiny.params" in result.stderr + result.stdout
        and "'size'" in result.stderr + result.stdout
    )
