"""Write outputs so that a stage killed part-way never leaves a half-written file in place.

Everything is written to a temporary sibling first and renamed into place: a rename within one
directory is atomic on POSIX, so readers see the old output or the new one, never a mix.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TMP_MARK = ".tmp-"


def _tmp_sibling(target: Path) -> Path:
    return target.with_name(f".{target.name}{TMP_MARK}{os.getpid()}")


def remove_stale_tmp(target: Path) -> None:
    """Remove temporaries an earlier, killed run left beside ``target``."""
    for stale in target.parent.glob(f".{target.name}{TMP_MARK}*"):
        shutil.rmtree(stale) if stale.is_dir() else stale.unlink()


def _start(target: Path) -> tuple[Path, Path]:
    """The target as a Path, its folder created, stale temporaries gone, and the temporary sibling to write."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_tmp(target)
    return target, _tmp_sibling(target)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextmanager
def output_dir(target: Path) -> Iterator[Path]:
    """Yield an empty temporary directory that replaces ``target`` only if the block succeeds."""
    target, tmp = _start(target)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    # Move the old output aside first so the swap itself is two renames.
    old = target.with_name(f".{target.name}{TMP_MARK}old-{os.getpid()}")
    if target.exists() or target.is_symlink():
        os.replace(target, old)
    os.replace(tmp, target)
    _remove(old)


@contextmanager
def output_file(target: Path) -> Iterator[Path]:
    """Yield a temporary path that is renamed to ``target`` only if the block succeeds."""
    target, tmp = _start(target)
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        _remove(tmp)
        raise


def write_json(target: Path, obj: Any) -> None:
    with output_file(target) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")
