"""Unit tests of stages/core that pin down details the pipeline's outputs depend on: exact file contents and messages,
the boundaries of every params check, and the branches a stage process takes on its way out. Each was written
against a mutant that the rest of the unit tests let survive (tools/mutation.sh)."""

from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import os
import shutil
import tarfile
import threading
import urllib.error
from pathlib import Path
from types import SimpleNamespace

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch
import torchvision.datasets.utils as tv_utils
from PIL import Image
from scipy.stats import norm
from statsmodels.stats.proportion import confint_proportions_2indep, proportion_confint

from stages.core import (
    atomic,
    checkpoint,
    cpu,
    devices,
    download,
    evaluation,
    live,
    params,
    progress,
    schema,
    settings,
    stage,
    stats,
)
from stages.core.devices import Compute
from stages.core.errors import UserError

# --- atomic ----------------------------------------------------------------------------------------------------


def test_write_json_is_indented_in_insertion_order_with_a_final_newline(tmp_path):
    """Metric files are diffed by DVC and git: two-space indent, keys as given (not sorted), one trailing newline."""
    atomic.write_json(tmp_path / "m.json", {"b": 1, "a": [1, 2]})
    assert (tmp_path / "m.json").read_text() == '{\n  "b": 1,\n  "a": [\n    1,\n    2\n  ]\n}\n'


def test_outputs_create_every_missing_parent_folder(tmp_path):
    """A first run writes ``metrics/pets/train/metrics.json`` with none of its folders there yet."""
    atomic.write_json(tmp_path / "metrics/pets/train/metrics.json", {})
    with atomic.output_dir(tmp_path / "data/models/pets") as tmp:
        (tmp / "model.pt").write_bytes(b"")
    assert (tmp_path / "metrics/pets/train/metrics.json").is_file() and (
        tmp_path / "data/models/pets/model.pt"
    ).is_file()


def test_output_dir_replacing_a_file_leaves_no_moved_aside_copy(tmp_path):
    """A plain file where the output folder goes is replaced, and the old file moved aside is removed too."""
    target = tmp_path / "out"
    target.write_text("old")
    with atomic.output_dir(target) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and (target / "new.txt").read_text() == "new"


def test_output_file_removes_its_half_written_temporary_on_failure(tmp_path):
    """A block that wrote part of the file and then failed leaves neither the target nor the temporary."""
    with pytest.raises(RuntimeError), atomic.output_file(tmp_path / "out.csv") as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_a_stale_temporary_file_is_removed_as_well_as_a_folder(tmp_path):
    """Temporaries left by a killed run are files (output_file) as often as folders (output_dir)."""
    (tmp_path / ".m.json.tmp-99999").write_text("half")
    atomic.write_json(tmp_path / "m.json", {})
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


# --- checkpoint --------------------------------------------------------------------------------------------------


def test_checkpoint_save_writes_the_weights_and_run_info_that_load_reads_back(tmp_path):
    """``model.pt`` round-trips through the weights-only loader; ``run_info.json`` is the JSON metric format."""
    checkpoint.save(tmp_path, {"weights": torch.arange(3.0), "classes": ["a", "b"]}, {"device": "cpu"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt", "run_info.json"]
    loaded = checkpoint.load(tmp_path / "model.pt", "train_pets")
    assert loaded["classes"] == ["a", "b"] and torch.equal(loaded["weights"], torch.arange(3.0))
    assert (tmp_path / "run_info.json").read_text() == '{\n  "device": "cpu"\n}\n'


def test_a_missing_checkpoint_is_one_line_naming_the_stage_to_rerun(tmp_path):
    """The error names the file, the reason and the ``dvc repro`` that writes it."""
    path = tmp_path / "model.pt"
    with pytest.raises(UserError) as err:
        checkpoint.load(path, "train_pets")
    reason = f"[Errno 2] No such file or directory: '{path}'"
    assert str(err.value) == f"{path}: cannot load ({reason}); rerun 'dvc repro train_pets'"


class Pickled:
    """Arbitrary code a checkpoint must never unpickle."""


def test_a_checkpoint_holding_code_is_refused_with_one_line_of_at_most_200_characters_of_reason(tmp_path):
    """torch's weights-only refusal is many lines long: the reason is collapsed onto one line and cut at 200."""
    path = tmp_path / "model.pt"
    torch.save({"model": Pickled()}, path)
    with pytest.raises(UserError) as err:
        checkpoint.load(path, "train_mnist")
    message = str(err.value)
    head, tail = f"{path}: cannot load (", "); rerun 'dvc repro train_mnist'"
    assert message.startswith(head) and message.endswith(tail)
    reason = message[len(head) : -len(tail)]
    assert len(reason) == 200 and "\n" not in reason and "  " not in reason and reason.startswith("Weights only load")


def test_the_weights_only_refusal_holds_when_the_environment_turns_torchs_default_off(tmp_path, monkeypatch):
    """``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` changes torch's default only: the loader asks for weights only itself."""
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    path = tmp_path / "model.pt"
    torch.save({"model": Pickled()}, path)
    with pytest.raises(UserError, match="cannot load"):
        checkpoint.load(path, "train_mnist")


# --- cpu ---------------------------------------------------------------------------------------------------------


def test_pinning_overrides_the_instruction_set_caps_but_keeps_a_users_huge_page_setting(monkeypatch):
    """The caps decide results, so a user's value is overridden; huge pages only decide speed, so theirs stays."""
    for name in cpu.PINNED:
        monkeypatch.setenv(name, "user value")
    monkeypatch.setenv("THP_MEM_ALLOC_ENABLE", "0")
    cpu.pin_instruction_sets()
    assert {name: os.environ[name] for name in cpu.PINNED} == cpu.PINNED
    assert os.environ["THP_MEM_ALLOC_ENABLE"] == "0"
    monkeypatch.delenv("THP_MEM_ALLOC_ENABLE")
    cpu.pin_instruction_sets()
    assert os.environ["THP_MEM_ALLOC_ENABLE"] == "1"


def test_pinned_late_names_the_libraries_loaded_before_the_caps(monkeypatch):
    """numpy and torch are loaded in a test process; a process that loaded only numpy names only numpy."""
    assert cpu.pinned_late() == ["numpy", "torch"]
    monkeypatch.setattr(cpu, "sys", SimpleNamespace(modules={"numpy": None, "yaml": None}))
    assert cpu.pinned_late() == ["numpy"]


# --- devices -----------------------------------------------------------------------------------------------------


def test_run_info_on_the_cpu_records_the_threads_and_capability_not_the_interpreter():
    """What computed the weights on a CPU, in fixed keys (run_info.json is hashed into dvc.lock)."""
    assert Compute(torch.device("cpu"), mixed=False).run_info() == {
        "device": "cpu",
        "torch": torch.__version__,
        "mixed_precision": "off",
        "cpu_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
    assert Compute(torch.device("cpu"), mixed=True).run_info()["mixed_precision"] == "bf16"


def test_run_info_on_a_gpu_names_the_gpu_instead_of_cpu_threads(monkeypatch):
    """On CUDA the record names the GPU the weights were computed on (queried for the run's own device)."""
    asked = []
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: asked.append(device) or "Test GPU")
    device = torch.device("cuda", 1)
    info = Compute(device, mixed=True).run_info()
    assert info == {"device": "cuda", "torch": torch.__version__, "mixed_precision": "bf16", "gpu": "Test GPU"}
    assert asked == [device]


@pytest.mark.parametrize(
    ("mixed", "numerics", "channels_last"),
    [(False, "portable", False), (False, "native", True), (True, "portable", True)],
)
def test_convolutions_go_channels_last_with_mixed_precision_or_native_numerics_on_the_cpu(
    mixed, numerics, channels_last
):
    """portable float32 keeps torch's default layout, whose sums the committed results hold; native on the CPU and
    mixed precision anywhere lay out the model and every image batch channels-last, which oneDNN runs faster."""
    compute = Compute(torch.device("cpu"), mixed=mixed, numerics=numerics)
    model = compute.prepare(torch.nn.Conv2d(3, 4, 3))
    xb, _ = compute.to_device(torch.zeros(2, 3, 8, 8), torch.zeros(2))
    layout = torch.channels_last if channels_last else torch.contiguous_format
    assert model.weight.is_contiguous(memory_format=layout) and xb.is_contiguous(memory_format=layout)
    assert not model.weight.is_contiguous() if channels_last else xb.is_contiguous()
    # on a GPU native numerics mean nothing (no cap there): float32 keeps the default layout
    assert not Compute(torch.device("cuda"), mixed=False, numerics="native").channels_last


@pytest.fixture
def two_gpus(monkeypatch):
    """A machine with two CUDA GPUs, as far as device selection can tell."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def test_a_gpu_is_picked_by_number_only_if_the_machine_has_it(two_gpus):
    """``cuda`` and ``cuda:1`` exist on two GPUs; ``cuda:2`` is one error line naming the count."""
    assert devices.pick("cuda") == torch.device("cuda") and devices.pick("auto") == torch.device("cuda")
    assert devices.pick("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(UserError) as err:
        devices.pick("cuda:2")
    assert str(err.value) == "params.yaml: compute.device 'cuda:2': this machine has 2 GPU(s)"


def test_precision_auto_is_mixed_on_a_gpu_only_and_bf16_or_fp32_everywhere(two_gpus):
    """``auto``: bf16 mixed precision on CUDA, float32 on the CPU; ``bf16`` and ``fp32`` are what they say."""
    threads = torch.get_num_threads()
    try:
        for device, precision, mixed in [
            ("cuda", "auto", True),
            ("cpu", "auto", False),
            ("cuda", "fp32", False),
            ("cpu", "fp32", False),
            ("cpu", "bf16", True),
            ("cuda", "bf16", True),
        ]:
            compute = Compute.from_params(
                {"device": device, "precision": precision, "numerics": "portable", "cpu_threads": 1}
            )
            assert (compute.device.type, compute.mixed) == (device, mixed), (device, precision)
        assert torch.get_num_threads() == 1  # compute.cpu_threads
    finally:
        torch.set_num_threads(threads)


# --- download ----------------------------------------------------------------------------------------------------


def test_fetch_and_extract_verifies_extracts_and_deletes_the_archives(http_server, tmp_path):
    """Every archive is downloaded from the mirror, extracted into the target, and no download is left behind."""
    served, url = http_server
    with tarfile.open(served / "a.tar.gz", "w:gz") as tar:
        info = tarfile.TarInfo("a/one.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"one"))
    md5 = hashlib.md5((served / "a.tar.gz").read_bytes()).hexdigest()
    target = tmp_path / "data"
    target.mkdir()
    download.fetch_and_extract([url], {"a.tar.gz": md5}, target)
    assert (target / "a/one.txt").read_text() == "one"
    assert sorted(p.name for p in target.iterdir()) == ["a"]


@pytest.fixture
def failing_download(monkeypatch):
    """torchvision's ``download_url`` replaced by one that raises the given exception for every URL."""

    def fail_with(exc):
        def download_url(url, root, filename=None, md5=None):
            raise exc

        monkeypatch.setattr(tv_utils, "download_url", download_url)

    return fail_with


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (RuntimeError("File not found or corrupted."), "md5 mismatch (expected 0123, got nothing)"),
        (
            http.client.IncompleteRead(b"abc", 10),
            "interrupted (IncompleteRead: IncompleteRead(3 bytes read, 10 more expected))",
        ),
        (urllib.error.URLError("Name or service not known"), "Name or service not known"),
        (ValueError("unknown url type: 'x'"), "unknown url type: 'x'"),
    ],
    ids=["no-file", "interrupted", "unreachable", "bad-url"],
)
def test_each_kind_of_download_failure_is_named_per_mirror(failing_download, tmp_path, exc, reason):
    """Every mirror's failure is listed, in order, with what went wrong there, then how to run offline."""
    failing_download(exc)
    with pytest.raises(download.DownloadError) as err:
        download.download_verified(["http://a/", "http://b"], "f.gz", md5="0123", into=tmp_path)
    assert str(err.value) == (
        f"could not download f.gz: http://a/f.gz: {reason}; http://b/f.gz: {reason}; {download.OFFLINE_HINT}"
    )


def test_an_md5_mismatch_names_the_md5_that_arrived(http_server, tmp_path):
    """The message carries the expected and the received md5, and the bad file is deleted."""
    served, url = http_server
    (served / "f.bin").write_bytes(b"payload")
    got = hashlib.md5(b"payload").hexdigest()
    with pytest.raises(download.DownloadError) as err:
        download.download_verified([url], "f.bin", md5="0" * 32, into=tmp_path / "d")
    assert f"{url}f.bin: md5 mismatch (expected {'0' * 32}, got {got})" in str(err.value)
    assert list((tmp_path / "d").iterdir()) == []


def test_a_mirror_folder_keeps_its_name_when_the_trailing_slash_goes(http_server, tmp_path):
    """Only the slashes at the end of a mirror are dropped, whatever letters its folder ends with."""
    served, url = http_server
    (served / "MIRRORX").mkdir()
    (served / "MIRRORX/f.bin").write_bytes(b"payload")
    md5 = hashlib.md5(b"payload").hexdigest()
    path = download.download_verified([url + "MIRRORX/"], "f.bin", md5=md5, into=tmp_path)
    assert path == tmp_path / "f.bin" and path.read_bytes() == b"payload"


def tar_with(tmp_path: Path, info: tarfile.TarInfo, data: bytes = b"") -> Path:
    archive = tmp_path / "a.tar"
    with tarfile.open(archive, "w") as tar:
        tar.addfile(info, io.BytesIO(data) if data else None)
    return archive


@pytest.mark.parametrize(
    ("kind", "problem"),
    [
        (tarfile.SYMTYPE, "link member 'x'"),
        (tarfile.LNKTYPE, "link member 'x'"),
        (tarfile.FIFOTYPE, "special member 'x'"),
        (tarfile.CHRTYPE, "special member 'x'"),
        (tarfile.BLKTYPE, "special member 'x'"),
    ],
)
def test_links_and_special_files_are_refused_by_name(tmp_path, kind, problem):
    """Symbolic and hard links, FIFOs and devices: refused before anything is written, the member named."""
    info = tarfile.TarInfo("x")
    info.type, info.linkname = kind, "target"
    archive = tar_with(tmp_path, info)
    with pytest.raises(download.UnsafeArchiveError) as err:
        download.extract_safely(archive, tmp_path / "out")
    assert str(err.value) == f"a.tar: refusing {problem}; nothing was extracted"
    assert not (tmp_path / "out").exists()


def test_a_member_climbing_out_of_the_target_is_refused_by_name(tmp_path):
    """A path through '..' is named in the refusal."""
    info = tarfile.TarInfo("images/../../evil.txt")
    info.size = 1
    with pytest.raises(download.UnsafeArchiveError) as err:
        download.extract_safely(tar_with(tmp_path, info, b"x"), tmp_path / "out")
    assert str(err.value) == "a.tar: refusing member outside the target: 'images/../../evil.txt'; nothing was extracted"


def test_extraction_applies_the_data_filter_to_file_modes(tmp_path):
    """The standard library's 'data' filter is the second guard: no setuid bit and no write for group and others."""
    info = tarfile.TarInfo("images/a.jpg")
    info.size, info.mode = 3, 0o4777
    download.extract_safely(tar_with(tmp_path, info, b"jpg"), tmp_path / "out")
    extracted = tmp_path / "out/images/a.jpg"
    assert extracted.read_bytes() == b"jpg" and extracted.stat().st_mode & 0o7777 == 0o755


def test_a_single_gzip_file_is_decompressed_into_the_target(tmp_path):
    """MNIST's files are single gzip files, not tars: decompressed beside the others in the target."""
    archive = tmp_path / "t10k-labels-idx1-ubyte.gz"
    archive.write_bytes(gzip.compress(b"labels"))
    out = tmp_path / "out"
    out.mkdir()
    download.extract_safely(archive, out)
    assert (out / "t10k-labels-idx1-ubyte").read_bytes() == b"labels"


def test_fetch_and_extract_downloads_into_a_hidden_folder_of_the_target_and_checks_each_md5(tmp_path, monkeypatch):
    """Archives land in ``<target>/.downloads-*`` (the same file system, gone afterwards); each md5 is checked."""
    seen = []

    def fake_download(mirrors, filename, *, md5, into):
        seen.append((filename, md5, into))
        raise download.DownloadError(f"could not download {filename}")

    monkeypatch.setattr(download, "download_verified", fake_download)
    target = tmp_path / "data"
    target.mkdir()
    with pytest.raises(download.DownloadError):
        download.fetch_and_extract(["http://a/"], {"a.tar.gz": "0" * 32}, target)
    ((filename, md5, into),) = seen
    assert (filename, md5) == ("a.tar.gz", "0" * 32)
    assert into.parent == target and into.name.startswith(".downloads-")
    assert list(target.iterdir()) == []


# --- evaluation --------------------------------------------------------------------------------------------------


def test_accuracy_report_keeps_a_class_absent_from_the_split_in_its_place():
    """Per-class figures follow ``classes`` even when a class has no image; the mean is rounded to 6 digits."""
    report = evaluation.accuracy_report(np.array([0, 0, 2]), np.array([0, 2, 2]), ["a", "b", "c"])
    assert report["per_class"]["b"] == {"accuracy": 0.0, "accuracy_low": 0.0, "accuracy_high": 1.0, "images": 0}
    assert report["per_class"]["c"]["accuracy"] == 1.0 and report["per_class"]["a"]["accuracy"] == 0.5
    assert report["balanced_accuracy"] == 0.5  # (0.5 + 0 + 1) / 3: an empty class counts as 0 out of 1
    thirds = evaluation.accuracy_report(np.array([0, 0, 0, 1]), np.array([0, 1, 1, 0]), ["a", "b"])
    assert thirds["balanced_accuracy"] == 0.166667


def test_save_figure_writes_a_cropped_100_dpi_png_without_a_software_stamp_and_closes_the_figure(tmp_path):
    """The same figure is the same bytes on every machine: no matplotlib version inside, tight bounds, fixed dpi."""
    fig = plt.figure(figsize=(4, 3))
    fig.text(0.5, 0.5, "x")
    evaluation.save_figure(fig, tmp_path / "f.png")
    data = (tmp_path / "f.png").read_bytes()
    assert data.startswith(b"\x89PNG") and b"Software" not in data and b"matplotlib" not in data
    with Image.open(tmp_path / "f.png") as image:
        assert image.size[0] < 100 and image.size[1] < 100  # cropped to the text, not 400 x 300
        assert image.info["dpi"] == pytest.approx((100, 100), abs=0.01)
    assert not plt.fignum_exists(fig.number)


def test_save_figure_ignores_the_users_matplotlib_dpi_and_closes_only_its_figure(tmp_path):
    """A matplotlibrc's dpi does not change the bytes; the figure saved is closed, not whichever is current."""
    with plt.rc_context({"savefig.dpi": 50, "figure.dpi": 50}):
        saved, current = plt.figure(figsize=(2, 2)), plt.figure(figsize=(2, 2))
        saved.text(0.5, 0.5, "x")
        evaluation.save_figure(saved, tmp_path / "f.png")
    with Image.open(tmp_path / "f.png") as image:
        assert image.info["dpi"] == pytest.approx((100, 100), abs=0.01)
    assert not plt.fignum_exists(saved.number) and plt.fignum_exists(current.number)
    plt.close(current)


@pytest.fixture
def figures(monkeypatch):
    """The figures ``save_figure`` is given, by path, instead of PNG files."""
    saved = {}

    def keep(fig, path):
        saved[Path(path).name] = fig

    monkeypatch.setattr(evaluation, "save_figure", keep)
    yield saved
    plt.close("all")


def test_plot_confusion_labels_the_classes_and_writes_counts_only_while_readable(figures, tmp_path):
    """Up to 20 classes show the counts in the cells; 37 breeds get a bigger square figure and no counts."""
    few = [f"c{i}" for i in range(3)]
    evaluation.plot_confusion(
        tmp_path / "few.png", np.array([0, 1, 2, 2]), np.array([0, 1, 1, 2]), classes=few, title="Few"
    )
    fig = figures["few.png"]
    ax = fig.axes[0]
    assert len(fig.axes) == 1 and ax.get_title() == "Few"  # no colour bar
    assert tuple(fig.get_size_inches()) == (4.0, 4.0)
    assert [t.get_text() for t in ax.get_xticklabels()] == few and [t.get_text() for t in ax.get_yticklabels()] == few
    assert all(t.get_rotation() == 90 for t in ax.get_xticklabels())
    assert sorted(t.get_text() for t in ax.texts) == ["0"] * 5 + ["1"] * 4
    many = [f"c{i}" for i in range(37)]
    actual = np.arange(37)
    evaluation.plot_confusion(tmp_path / "many.png", actual, actual, classes=many, title="Many")
    fig = figures["many.png"]
    assert tuple(fig.get_size_inches()) == pytest.approx((11.1, 11.1)) and len(fig.axes[0].texts) == 0
    twenty_one = [f"c{i}" for i in range(21)]
    evaluation.plot_confusion(tmp_path / "21.png", np.arange(21), np.arange(21), classes=twenty_one, title="T")
    assert len(figures["21.png"].axes[0].texts) == 0
    twenty = [f"c{i}" for i in range(20)]
    evaluation.plot_confusion(tmp_path / "twenty.png", np.arange(20), np.arange(20), classes=twenty, title="T")
    assert len(figures["twenty.png"].axes[0].texts) == 400


def test_plot_confusion_counts_classes_that_never_occur(figures, tmp_path):
    """A class with no image still has its row and column."""
    evaluation.plot_confusion(tmp_path / "c.png", np.array([0, 0]), np.array([0, 2]), classes=["a", "b", "c"], title="")
    ax = figures["c.png"].axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"] and len(ax.texts) == 9


def test_write_predictions_writes_one_row_per_item_and_one_confusion_picture_per_column(figures, tmp_path):
    """One prediction column: ``confusion.png`` titled as given; extra columns rounded to 6 digits."""
    predicted, extra = {"predicted": np.array([1, 1])}, {"loss": np.array([0.12345678, 2.0])}
    evaluation.write_predictions(
        tmp_path,
        ["x.png", "y.png"],
        np.array([0, 1]),
        predicted=predicted,
        classes=["cat", "dog"],
        title="Pets",
        extra=extra,
    )
    assert (tmp_path / "predictions.csv").read_text() == (
        "item,actual,predicted,loss\nx.png,cat,dog,0.123457\ny.png,dog,dog,2.0\n"
    )
    assert list(figures) == ["confusion.png"] and figures["confusion.png"].axes[0].get_title() == "Pets"


def test_write_predictions_with_several_columns_names_each_picture_and_title_after_its_column(figures, tmp_path):
    """Two prediction columns (baseline's l1 and l2): ``confusion_<column>.png``, each title suffixed by its column."""
    predicted = {"l1": np.array([0, 1]), "l2": np.array([1, 1])}
    evaluation.write_predictions(
        tmp_path, ["x", "y"], np.array([0, 1]), predicted=predicted, classes=["3", "7"], title="Baseline"
    )
    table = pd.read_csv(tmp_path / "predictions.csv", dtype=str)
    assert table.columns.tolist() == ["item", "actual", "l1", "l2"] and table["l2"].tolist() == ["7", "7"]
    assert sorted(figures) == ["confusion_l1.png", "confusion_l2.png"]
    assert figures["confusion_l2.png"].axes[0].get_title() == "Baseline, l2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predictions.csv"]


# --- progress and settings ---------------------------------------------------------------------------------------


def test_log_lines_come_at_most_every_interval_and_count_seconds_from_the_start(monkeypatch, capsys):
    """A line when ``PIPELINE_PROGRESS_SECONDS`` have passed since the last one, the time since the first item."""
    monkeypatch.setenv("PIPELINE_PROGRESS", "lines")
    monkeypatch.setenv("PIPELINE_PROGRESS_SECONDS", "1")
    clock = iter(100 + 0.4 * i for i in range(100))  # 0.4 s per item, starting at 100 s
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    assert list(progress.progress(range(7), "train", unit="batches")) == list(range(7))
    assert capsys.readouterr().err.splitlines() == ["train: 3/7 batches (1s)", "train: 6/7 batches (2s)"]


def test_log_lines_without_a_known_total_show_the_count_alone(monkeypatch, capsys):
    """An iterable of unknown length prints "done", not "done/None"."""
    monkeypatch.setenv("PIPELINE_PROGRESS", "lines")
    monkeypatch.setenv("PIPELINE_PROGRESS_SECONDS", "1")
    clock = iter(range(100))
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    assert list(progress.progress(iter("ab"), "presize")) == ["a", "b"]
    assert capsys.readouterr().err.splitlines() == ["presize: 1 it (1s)", "presize: 2 it (2s)"]


def test_progress_seconds_default_to_30_and_refuse_zero(monkeypatch):
    """``PIPELINE_PROGRESS_SECONDS``: 30 when unset or blank, any whole number from 1."""
    monkeypatch.delenv("PIPELINE_PROGRESS_SECONDS", raising=False)
    assert settings.progress_seconds() == 30
    monkeypatch.setenv("PIPELINE_PROGRESS_SECONDS", " ")
    assert settings.progress_seconds() == 30
    monkeypatch.setenv("PIPELINE_PROGRESS_SECONDS", "1")
    assert settings.progress_seconds() == 1
    monkeypatch.setenv("PIPELINE_PROGRESS_SECONDS", "0")
    with pytest.raises(UserError) as err:
        settings.progress_seconds()
    assert str(err.value) == "environment: PIPELINE_PROGRESS_SECONDS='0' is not allowed; expected an integer >= 1"


def test_worker_count_defaults_to_the_cpus_at_most_8_and_allows_0(monkeypatch):
    """``PIPELINE_WORKERS``: unset, the number of CPUs (1 when unknown) capped at 8; 0 loads in the main process."""
    monkeypatch.delenv("PIPELINE_WORKERS", raising=False)
    for cpus, expected in ((None, 1), (1, 1), (4, 4), (8, 8), (64, 8)):
        monkeypatch.setattr(settings.os, "cpu_count", lambda cpus=cpus: cpus)
        assert settings.workers() == expected
    monkeypatch.setenv("PIPELINE_WORKERS", "0")
    assert settings.workers() == 0


# --- schema ------------------------------------------------------------------------------------------------------


def test_integer_checks_its_bounds_inclusively_and_refuses_booleans_and_floats():
    """``integer(low[, high])``: whole numbers from low to high, both included; True is not 1."""
    at_least_two, percent = schema.integer(2), schema.integer(0, 100)
    assert at_least_two(2) is None and at_least_two(10**6) is None
    assert at_least_two(1) == "an integer >= 2"
    assert at_least_two(True) == at_least_two(2.0) == at_least_two("2") == "an integer >= 2"
    assert schema.integer(1)(True) == "an integer >= 1" and schema.integer(0)(False) == "an integer >= 0"
    assert percent(0) is None and percent(100) is None
    assert percent(101) == percent(-1) == "an integer >= 0 and <= 100"


def test_number_checks_each_bound_it_is_given_and_refuses_booleans():
    """``number(above, below, at_least)``: strict and inclusive bounds, named in the message in that order."""
    fraction = schema.number(above=0, below=1)
    assert fraction(0.5) is None and fraction(1e-9) is None
    assert fraction(0) == fraction(1) == fraction(True) == fraction("0.5") == "a number > 0 and < 1"
    assert schema.number(above=0)(1e9) is None and schema.number(above=0)(0) == "a number > 0"
    assert schema.number(below=1)(-5) is None and schema.number(below=1)(1) == "a number < 1"
    min_scale = schema.number(above=0, at_least=0.01, below=1.0000001)
    assert min_scale(0.01) is None and min_scale(1) is None
    assert min_scale(0.0099) == min_scale(1.0000001) == "a number > 0 and < 1.0000001 and >= 0.01"
    assert schema.number(at_least=1)(1) is None and schema.number(at_least=1)(0.5) == "a number >= 1"
    assert schema.number()(-1e9) is None and schema.number()(None) == "a number "


def test_choice_names_its_options():
    """``choice``: one of the listed values, and the message lists them."""
    check = schema.choice("random", "official")
    assert check("random") is None and check("official") is None
    assert check("Random") == "one of ['random', 'official']"


def test_a_word_or_a_bounded_value_names_both_alternatives():
    """``integer_or`` / ``number_or``: the word, or a value within the bounds; the message offers both."""
    batches = schema.integer_or("all", 1)
    assert batches("all") is None and batches(1) is None
    assert batches(0) == "'all' or an integer >= 1" and batches("some") == "'all' or an integer >= 1"
    base_lr = schema.number_or("auto", above=0)
    assert base_lr("auto") is None and base_lr(3e-3) is None
    assert base_lr(0) == "'auto' or a number > 0" and base_lr("base") == "'auto' or a number > 0"


def test_text_must_be_a_non_empty_string():
    """``text``: a name such as a breed or a file."""
    assert schema.text("x") is None
    assert schema.text("") == schema.text(3) == "a non-empty string"


# --- stage -------------------------------------------------------------------------------------------------------


def test_a_bad_command_line_is_one_error_line_and_exit_2(capsys):
    """argparse's usage block becomes one ``error:`` line naming the program, and the usage exit status."""
    p = stage.parser("doc", ["a.b"], prog="python -m stages.x", choices={"model": ["linear"]})
    with pytest.raises(SystemExit) as exit_info:
        p.parse_args(["svm"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (
        "error: python -m stages.x: argument model: invalid choice: 'svm' (choose from 'linear') (see --help)\n"
    )


class Exited(Exception):
    """What the stand-in for ``os._exit`` raises: the test process itself never exits."""


@pytest.fixture
def exit_calls(monkeypatch):
    """The steps of a fast exit, recorded: the exit handlers and ``os._exit`` (which raises Exited)."""
    events = []

    def fake_exit(code):
        events.append(("exit", code))
        raise Exited

    monkeypatch.setattr(stage.atexit, "_run_exitfuncs", lambda: events.append("handlers"))
    monkeypatch.setattr(stage.os, "_exit", fake_exit)
    return events


def test_exit_now_waits_for_a_live_non_daemon_thread(exit_calls):
    """A stage that left a non-daemon thread running gets the interpreter's usual exit, which waits for it."""
    release = threading.Event()
    thread = threading.Thread(target=release.wait)
    thread.start()
    try:
        stage._exit_now()  # returns: the interpreter's own exit follows
    finally:
        release.set()
        thread.join()
    assert exit_calls == []


def test_exit_now_runs_the_exit_handlers_flushes_and_exits_0(exit_calls, monkeypatch):
    """With only daemon threads left: the exit handlers, both streams flushed, then exit status 0."""
    monkeypatch.setattr(stage.sys, "stdout", SimpleNamespace(flush=lambda: exit_calls.append("stdout")))
    monkeypatch.setattr(stage.sys, "stderr", SimpleNamespace(flush=lambda: exit_calls.append("stderr")))
    daemon = threading.Thread(target=threading.Event().wait, daemon=True)
    daemon.start()
    with pytest.raises(Exited):
        stage._exit_now()
    assert exit_calls == ["handlers", "stdout", "stderr", ("exit", 0)]


# --- stats -------------------------------------------------------------------------------------------------------


def test_a_proportion_of_nothing_is_0_with_the_whole_interval():
    """No images: value 0, interval [0, 1] (not a division by zero)."""
    assert stats.with_interval(0, 0) == {"value": 0.0, "low": 0.0, "high": 1.0, "successes": 0, "n": 0}


def test_wilson_of_one_image_and_the_upper_bound_never_above_1():
    """n = 1 is an ordinary sample; at 16 of 16 the formula's rounding gives 1 + 2e-16, published as 1."""
    assert stats.wilson(1, 1) == pytest.approx(proportion_confint(1, 1, alpha=0.05, method="wilson"), abs=1e-12)
    assert stats.wilson(0, 1) == pytest.approx(proportion_confint(0, 1, alpha=0.05, method="wilson"), abs=1e-12)
    assert stats.wilson(16, 16)[1] == 1.0 and stats.wilson(40, 40)[1] == 1.0


def test_paired_counts_the_four_outcomes_and_refuses_unaligned_sequences():
    """Each image is counted in exactly one of the four cells; sequences of different lengths are an error."""
    a, b = [True, True, False, False, False, True], [True, False, True, False, False, False]
    assert stats.paired(a, b) == stats.PairedComparison(n=6, both=1, only_a=2, only_b=1, neither=2)
    with pytest.raises(ValueError):
        stats.paired([True, False], [True])


def newcombe_method_10(a: list[bool], b: list[bool], alpha: float) -> tuple[float, float]:
    """Newcombe (1998), method 10, from its parts computed elsewhere: statsmodels' Wilson intervals and numpy's
    correlation of the two outcome sequences (phi)."""
    n, pa, pb = len(a), sum(a) / len(a), sum(b) / len(b)
    la, ua = proportion_confint(sum(a), n, alpha=alpha, method="wilson")
    lb, ub = proportion_confint(sum(b), n, alpha=alpha, method="wilson")
    phi = np.corrcoef(np.array(a, float), np.array(b, float))[0, 1]
    delta = np.sqrt((pb - lb) ** 2 - 2 * phi * (pb - lb) * (ua - pa) + (ua - pa) ** 2)
    epsilon = np.sqrt((ub - pb) ** 2 - 2 * phi * (ub - pb) * (pa - la) + (pa - la) ** 2)
    return pb - pa - delta, pb - pa + epsilon


@pytest.mark.parametrize(("both", "only_a", "only_b", "neither"), [(30, 5, 12, 3), (10, 8, 2, 20), (4, 1, 9, 6)])
@pytest.mark.parametrize("z", [stats.Z95, 1.0])
def test_the_paired_interval_is_newcombes_method_10_for_correlated_models(both, only_a, only_b, neither, z):
    """Correlated outcomes (phi != 0) at the 95% and at a one-sigma level."""
    a = [True] * both + [True] * only_a + [False] * only_b + [False] * neither
    b = [True] * both + [False] * only_a + [True] * only_b + [False] * neither
    alpha = 2 * (1 - norm.cdf(z))
    comparison = stats.paired(a, b)
    assert comparison.change_interval(z) == pytest.approx(newcombe_method_10(a, b, alpha), abs=1e-9)


def test_the_paired_interval_takes_phi_as_0_when_a_model_is_right_on_every_image():
    """No correlation can be computed when one model is always right: the interval is then the independent one."""
    comparison = stats.PairedComparison(20, both=15, only_a=0, only_b=5, neither=0)
    expected = confint_proportions_2indep(20, 20, 15, 20, method="newcomb", compare="diff")
    assert comparison.change_interval() == pytest.approx(expected, abs=1e-12)


# --- live ----------------------------------------------------------------------------------------------------------


def epoch(n: int) -> dict:
    return {"epoch": n, "train_loss": 1.0 / n, "valid_loss": 2.0 / n, "accuracy": 0.5}


def test_a_training_log_writes_no_dvc_yaml_and_saves_no_experiment(tmp_path, monkeypatch, caplog):
    """dvc.yaml already declares every output: dvclive must neither write one nor try to save an experiment."""
    monkeypatch.chdir(tmp_path)
    with caplog.at_level("WARNING"), live.TrainingLog("train_x") as log:
        log(epoch(1))
        assert sorted(p.name for p in log.folder.iterdir()) == ["metrics.json", "plots"]
    assert list(tmp_path.rglob("dvc.yaml")) == [] and caplog.records == []


def test_a_training_log_records_the_three_curves_and_an_error_rate_only_when_asked(tmp_path, monkeypatch):
    """By default train_loss, valid_loss and accuracy; ``error_rate=True`` adds 1 - accuracy."""
    monkeypatch.chdir(tmp_path)
    for error_rate, extra in ((False, []), (True, ["error_rate.tsv"])):
        options = {"error_rate": True} if error_rate else {}
        with live.TrainingLog("train_x", **options) as log:
            log(epoch(1))
            log.save(tmp_path / f"out{error_rate}")
        written = sorted(p.name for p in (tmp_path / f"out{error_rate}/plots/metrics").iterdir())
        assert written == sorted(["accuracy.tsv", "train_loss.tsv", "valid_loss.tsv", *extra])


def test_a_finished_log_removes_only_its_own_live_folder(tmp_path, monkeypatch):
    """Another stage's live curves (it may be running, or have failed) stay, and so does dvclive/ holding them."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dvclive/train_other").mkdir(parents=True)
    with live.TrainingLog("train_x") as log:
        log(epoch(1))
    assert [p.name for p in (tmp_path / "dvclive").iterdir()] == ["train_other"]


def test_a_finished_log_tolerates_its_live_folder_already_gone(tmp_path, monkeypatch):
    """A user who deleted dvclive/ while the stage ran does not make a successful stage fail."""
    monkeypatch.chdir(tmp_path)
    with live.TrainingLog("train_x") as log:
        log(epoch(1))
        shutil.rmtree(tmp_path / "dvclive")
    assert not (tmp_path / "dvclive").exists()


# --- params --------------------------------------------------------------------------------------------------------


def test_lookup_of_a_key_below_a_value_or_absent_from_a_section_names_the_key():
    """``a.b`` where ``a`` is a number, or a section without ``b``: one line naming the file and the dotted key."""
    for tree in ({"a": 5}, {"a": {"c": 1}}, {"a": "text"}):
        with pytest.raises(UserError) as err:
            params.lookup(tree, "a.b", Path("params.yaml"))
        assert str(err.value) == "params.yaml: missing key 'a.b'"
    assert params.lookup({"a": {"b": [1]}}, "a.b", Path("params.yaml")) == [1]


# --- schema checkers and validation ------------------------------------------------------------------------------


def test_mirrors_must_be_a_non_empty_list_of_http_https_or_file_urls():
    """Download mirrors: each a URL a download can fetch; anything else names what is allowed."""
    allowed = "a non-empty list of http(s):// or file:// URLs"
    assert schema.urls(["https://a/", "http://b/", "file:///c/"]) is None
    for bad in ([], "https://a/", ["ftp://a/"], ["https://a/", 3], [" https://a/"], None):
        assert schema.urls(bad) == allowed, bad


def test_download_files_map_names_to_lowercase_32_digit_md5s():
    """``files``: a non-empty mapping of file name to md5, hex digits in lower case as md5sum prints them."""
    allowed = "a mapping of file name to 32-hex-digit md5"
    assert schema.md5_files({"a.tgz": "0123456789abcdef" * 2}) is None
    for bad in (
        {},
        ["a.tgz"],
        {"a.tgz": "0123456789ABCDEF" * 2},
        {"a.tgz": "0" * 31},
        {"a.tgz": "0" * 33},
        {1: "0" * 32},
    ):
        assert schema.md5_files(bad) == allowed, bad


def test_device_names_are_auto_cpu_mps_cuda_or_a_numbered_gpu():
    """``compute.device``: the whole value must be one of the forms."""
    for good in ("auto", "cpu", "mps", "cuda", "cuda:0", "cuda:12"):
        assert schema.device(good) is None
    for bad in ("gpu", "cuda:", "cuda:x", "cpu ", "xcpu", "CUDA", 0, None):
        assert schema.device(bad) == "one of 'auto', 'cpu', 'mps', 'cuda' or 'cuda:N' (GPU number N)", bad


def test_the_schema_walk_names_unknown_missing_and_misplaced_keys():
    """Unknown keys are named with where they are and what is known; a missing key and a scalar for a section too."""
    spec = {"a": {"b": schema.integer(0)}, "c": schema.text}
    errors = []
    schema._walk({"a": {"b": 1, "x": 2}, "y": 3}, spec, prefix="", errors=errors)
    assert errors == [
        "y: unknown key at the top level; known: ['a', 'c']",
        "a.x: unknown key under 'a'; known: ['b']",
        "c: missing",
    ]
    errors = []
    schema._walk({"a": 5, "c": ""}, spec, prefix="", errors=errors)
    assert errors == [
        "a: 5 is not allowed; expected a mapping of ['b']",
        "c: '' is not allowed; expected a non-empty string",
    ]
    errors = []
    schema._walk(["a"], spec, prefix="", errors=errors)
    assert errors == ["params.yaml: ['a'] is not allowed; expected a mapping of ['a', 'c']"]


SPEC = schema.Schema(
    {"a": {"b": schema.integer(0)}, "c": schema.text},
    rules=((frozenset({"a", "c"}), lambda tree: ["a.b: rule broken"] if tree["a"]["b"] > 5 else []),),
)


def test_validate_reports_the_first_problem_and_counts_the_rest_in_one_line():
    """One problem: just it. Several: the first, then "(and N more: ...)"; the file name as given."""
    with pytest.raises(UserError) as err:
        schema.validate({"a": {"b": -1}, "c": "x"}, SPEC)
    assert str(err.value) == "params.yaml: a.b: -1 is not allowed; expected an integer >= 0"
    with pytest.raises(UserError) as err:
        schema.validate({"a": {"b": -1}, "x": 1}, SPEC, source="p.yaml")
    assert str(err.value) == (
        "p.yaml: x: unknown key at the top level; known: ['a', 'c'] (and 2 more: a.b: -1 is not allowed; expected an "
        "integer >= 0; c: missing)"
    )


def test_validate_checks_only_the_blocks_a_stage_reads_and_the_rules_among_them():
    """``blocks``: those blocks, and the other blocks of every rule on one of them (others may be anything)."""
    with pytest.raises(UserError) as err:  # the rule reads a and c: c is checked with a, and the rule applied
        schema.validate({"a": {"b": 9}, "c": "x", "other": 1}, SPEC, blocks={"a"})
    assert str(err.value) == "params.yaml: a.b: rule broken"
    with pytest.raises(UserError) as err:
        schema.validate({"a": {"b": 9}, "c": 5, "other": 1}, SPEC, blocks={"a"})
    assert str(err.value).startswith("params.yaml: c: 5 is not allowed")
    with pytest.raises(UserError) as err:
        schema.validate({"a": {"b": 9}, "c": "x", "other": 1}, SPEC, blocks={"a", "c"})
    assert str(err.value) == "params.yaml: a.b: rule broken"
    with pytest.raises(KeyError, match="no schema for params blocks"):
        schema.validate({"a": {"b": 1}, "c": "x"}, SPEC, blocks={"zz"})
    with pytest.raises(UserError) as err:
        schema.validate({"c": "x"}, SPEC, blocks={"a", "c"})
    assert str(err.value) == "params.yaml: a: missing"
    with pytest.raises(UserError) as err:
        schema.validate(["a"], SPEC, blocks={"a"}, source="p.yaml")
    assert str(err.value) == "p.yaml: ['a'] is not allowed; expected a mapping of ['a', 'c']"
    with pytest.raises(UserError) as err:  # the whole file: rules too, once the shapes are right
        schema.validate({"a": {"b": 9}, "c": "x"}, SPEC)
    assert str(err.value) == "params.yaml: a.b: rule broken"


def test_schemas_combine_their_blocks_and_rules():
    """``|``: the union of two rooms' blocks and rules, as check_params validates the whole file."""
    extra = schema.Schema({"d": schema.text}, rules=((frozenset({"d"}), lambda tree: []),))
    both = SPEC | extra
    assert list(both.blocks) == ["a", "c", "d"] and both.rules == SPEC.rules + extra.rules


# --- compute.numerics -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("threads", "numerics", "problems"),
    [("auto", "portable", 1), ("auto", "native", 0), (2, "portable", 0), (2, "native", 0)],
)
def test_auto_threads_only_with_native_numerics(threads, numerics, problems):
    found = schema.auto_threads_are_native({"compute": {"cpu_threads": threads, "numerics": numerics}})
    assert len(found) == problems
    if problems:
        assert (
            found[0]
            == "compute.cpu_threads: 'auto' needs compute.numerics: native (portable results need a fixed count)"
        )


def test_auto_threads_leave_torchs_count_and_a_number_sets_it():
    before = torch.get_num_threads()
    try:
        cpu.use_threads(1)
        assert torch.get_num_threads() == 1
        cpu.use_threads("auto")
        assert torch.get_num_threads() == 1  # untouched: torch's own (here what was set last)
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def fresh_environment(monkeypatch):
    """The caps' variables as a user left them (MKL_CBWR their own, the rest unset), numpy and torch not yet loaded."""
    for name in cpu.PINNED:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MKL_CBWR", "AVX512")
    monkeypatch.delenv("THP_MEM_ALLOC_ENABLE", raising=False)
    monkeypatch.delenv(cpu.USERS_OWN, raising=False)
    monkeypatch.setattr(cpu, "pinned_late", lambda: [])


def test_pinning_records_the_users_own_settings_and_native_gives_them_back(fresh_environment):
    cpu.pin_instruction_sets()
    assert {name: os.environ.get(name) for name in cpu.PINNED} == cpu.PINNED
    assert os.environ["THP_MEM_ALLOC_ENABLE"] == "1"
    assert cpu.users_own() == {name: ("AVX512" if name == "MKL_CBWR" else None) for name in cpu.PINNED}
    # again, in a stage started by this process (it inherits the caps): the user's own settings are still found
    cpu.pin_instruction_sets()
    assert cpu.users_own()["MKL_CBWR"] == "AVX512"
    cpu.use_numerics("native")
    assert {name: os.environ.get(name) for name in cpu.PINNED} == cpu.users_own()
    cpu.use_numerics("portable")
    assert {name: os.environ.get(name) for name in cpu.PINNED} == cpu.PINNED


def test_a_users_huge_pages_setting_is_kept(fresh_environment, monkeypatch):
    monkeypatch.setenv("THP_MEM_ALLOC_ENABLE", "0")
    cpu.pin_instruction_sets()
    assert os.environ["THP_MEM_ALLOC_ENABLE"] == "0"


def test_numerics_that_would_change_a_loaded_library_are_refused_and_change_nothing(fresh_environment, monkeypatch):
    cpu.pin_instruction_sets()
    monkeypatch.setattr(cpu, "pinned_late", lambda: ["numpy", "torch"])
    cpu.use_numerics("portable")  # already so: nothing to change, no refusal
    with pytest.raises(UserError) as err:
        cpu.use_numerics("native")
    assert str(err.value) == (
        "compute.numerics: native cannot apply in this process, which loaded numpy and torch first; "
        "run the stage as its own process (python -m stages.<name>)"
    )
    assert {name: os.environ.get(name) for name in cpu.PINNED} == cpu.PINNED


@pytest.mark.parametrize(
    ("keys", "applied"),
    [(["compute"], ["portable"]), (["compute.numerics", "source"], ["portable"]), (["source"], [])],
)
def test_a_stage_applies_the_numerics_it_reads_before_its_main(keys, applied, monkeypatch, tmp_path):
    (tmp_path / "params.yaml").write_text((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    calls = []
    monkeypatch.setattr(cpu, "use_numerics", lambda mode: calls.append(("numerics", mode)))
    stage.run(lambda p: calls.append(("main", sorted(p))), "doc", keys, schema.CORE, argv=[])
    assert calls == [("numerics", mode) for mode in applied] + [("main", sorted(keys))]
