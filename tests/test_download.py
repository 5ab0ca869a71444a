"""The real download path, against archives built here and served from 127.0.0.1."""

from __future__ import annotations

import gzip
import hashlib
import io
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import copy_project, run_stage, run_stage_here, tree_snapshot

from stages.core import download


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def add_file(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def make_tar(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            add_file(tar, name, data)
    return path


def pets_archives(folder: Path) -> dict[str, str]:
    """Tiny images.tar.gz / annotations.tar.gz in the Oxford-IIIT Pets layout; returns {name: md5}."""
    from PIL import Image

    jpg = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(jpg, "JPEG")
    images = {f"images/{b}_{n}.jpg": jpg.getvalue() for b in ("Abyssinian", "beagle") for n in (1, 2)}
    make_tar(folder / "images.tar.gz", images)
    make_tar(folder / "annotations.tar.gz", {"annotations/list.txt": b"#header\n", "annotations/test.txt": b""})
    return {name: md5_of(folder / name) for name in ("images.tar.gz", "annotations.tar.gz")}


def full_source_project(tmp_path: Path, mirrors: list[str], pets_files: dict, mnist_files: dict | None = None):
    params = {"source": "full", "pets.download.mirrors": mirrors, "pets.download.files": pets_files}
    if mnist_files is not None:
        params |= {"mnist.download.mirrors": mirrors, "mnist.download.files": mnist_files}
    return copy_project(tmp_path / "project", params)


# --- the library -------------------------------------------------------------------------------------


def test_download_verified_falls_back_to_the_next_mirror(http_server, tmp_path):
    served, url = http_server
    (served / "good").mkdir()
    (served / "good" / "f.bin").write_bytes(b"payload")
    got = download.download_verified(
        [url + "missing/", url + "good/"], "f.bin", md5=md5_of(served / "good" / "f.bin"), into=tmp_path
    )
    assert got.read_bytes() == b"payload"


def test_md5_mismatch_names_url_and_how_to_go_offline(http_server, tmp_path):
    served, url = http_server
    (served / "f.bin").write_bytes(b"payload")
    with pytest.raises(download.DownloadError) as err:
        download.download_verified([url], "f.bin", md5="0" * 32, into=tmp_path)
    message = str(err.value)
    assert url + "f.bin" in message and "md5 mismatch" in message and "source: sample" in message
    assert "\n" not in message
    assert not (tmp_path / "f.bin").exists()


def test_404_names_url(http_server, tmp_path):
    _, url = http_server
    with pytest.raises(download.DownloadError, match=r"f.bin: HTTP 404.*source: sample"):
        download.download_verified([url], "f.bin", md5="0" * 32, into=tmp_path)


@pytest.mark.parametrize(
    "member", ["../escape.txt", "/tmp/absolute.txt", "images/../../escape.txt"], ids=["dotdot", "absolute", "nested"]
)
def test_members_outside_the_target_are_refused_before_writing(tmp_path, member):
    archive = make_tar(tmp_path / "evil.tar.gz", {"images/ok.jpg": b"ok", member: b"evil"})
    target = tmp_path / "target"
    target.mkdir()
    with pytest.raises(download.UnsafeArchiveError, match="outside the target"):
        download.extract_safely(archive, target)
    assert list(target.iterdir()) == []
    assert not (tmp_path / "escape.txt").exists()


def test_link_members_are_refused(tmp_path):
    archive = tmp_path / "links.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        link = tarfile.TarInfo("images/passwd.jpg")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    with pytest.raises(download.UnsafeArchiveError, match="link member"):
        download.extract_safely(archive, tmp_path)


def test_truncated_archive_is_a_clear_error(tmp_path):
    archive = make_tar(
        tmp_path / "a.tar.gz",
        {f"images/{i}.jpg": bytes(np.random.default_rng(i).integers(0, 255, 5000, dtype=np.uint8)) for i in range(5)},
    )
    archive.write_bytes(archive.read_bytes()[:3000])
    with pytest.raises(download.DownloadError, match="corrupt or truncated"):
        download.extract_safely(archive, tmp_path / "out")


# --- the stages, end to end against the server ------------------------------------------------------


def test_fetch_pets_full_downloads_verifies_and_extracts(http_server, tmp_path):
    served, url = http_server
    project = full_source_project(tmp_path, [url], pets_archives(served))
    result = run_stage(project, "stages.fetch_pets")
    assert result.returncode == 0, result.stderr
    raw = project / "data/raw/pets"
    assert sorted(p.name for p in raw.iterdir()) == ["annotations", "images"]
    assert len(list((raw / "images").iterdir())) == 4


def write_idx(path: Path, array: np.ndarray) -> None:
    """MNIST's IDX format: a magic number (type 0x08 = uint8, then the rank), each dimension, the bytes."""
    header = struct.pack(">HBB", 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_fetch_mnist_full_keeps_the_official_test_split(http_server, tmp_path):
    served, url = http_server
    rng = np.random.default_rng(0)
    sets = {
        "train": (rng.integers(0, 256, (30, 28, 28)), np.arange(30) % 10),
        "t10k": (rng.integers(0, 256, (10, 28, 28)), np.arange(10)),
    }
    for prefix, (images, labels) in sets.items():
        write_idx(served / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(served / f"{prefix}-labels-idx1-ubyte.gz", labels)
    files = {p.name: md5_of(p) for p in sorted(served.iterdir())}
    project = full_source_project(tmp_path, [url], pets_archives(served), files)
    result = run_stage_here(project, "stages.fetch_mnist")
    assert result.returncode == 0, result.stderr
    with np.load(project / "data/raw/mnist/mnist.npz") as raw:
        assert raw["images"].shape == (40, 28, 28) and raw["in_test_set"].sum() == 10
        np.testing.assert_array_equal(raw["images"][:30], sets["train"][0])
    assert sorted(p.name for p in (project / "data/raw/mnist").iterdir()) == ["mnist.npz"]


def corrupt(kind: str, served: Path, files: dict[str, str]) -> tuple[dict[str, str], str]:
    """Break the served Pets archives one way; returns the files param to use and the expected message."""
    archive = served / "images.tar.gz"
    if kind == "checksum":
        return {**files, "images.tar.gz": "0" * 32}, "md5 mismatch"
    if kind == "truncated-same-md5":  # a server that lies about the checksum: extraction must still fail
        archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
        return {**files, "images.tar.gz": md5_of(archive)}, "corrupt or truncated"
    if kind == "truncated":
        archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
        return files, "md5 mismatch"
    if kind == "404":
        archive.unlink()
        return files, "HTTP 404"
    if kind == "traversal":
        make_tar(archive, {"images/a_1.jpg": b"x", "../../outside.txt": b"evil"})
        return {**files, "images.tar.gz": md5_of(archive)}, "outside the target"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["checksum", "truncated", "truncated-same-md5", "404", "traversal"])
def test_failed_fetch_exits_nonzero_with_one_line_and_leaves_data_as_it_was(http_server, tmp_path, kind):
    served, url = http_server
    files, expected = corrupt(kind, served, pets_archives(served))
    project = full_source_project(tmp_path, [url], files)
    previous = project / "data/raw/pets/images"
    previous.mkdir(parents=True)
    (previous / "keep_1.jpg").write_bytes(b"earlier run")
    before = tree_snapshot(project / "data")

    result = run_stage_here(project, "stages.fetch_pets")  # a process's exit: test_unreachable_host_names_the_url

    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert "source: sample" in lines[0] or "refusing" in lines[0]
    assert tree_snapshot(project / "data") == before
    assert not (tmp_path / "outside.txt").exists()


def test_unreachable_host_names_the_url(tmp_path):
    project = full_source_project(tmp_path, ["http://127.0.0.1:9/pets/"], {"images.tar.gz": "0" * 32})
    result = run_stage(project, "stages.fetch_pets")  # as a process: the cases above run in this one
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "http://127.0.0.1:9/pets/images.tar.gz" in line and "source: sample" in line
    assert yaml.safe_load((project / "params.yaml").read_text())["source"] == "full"
