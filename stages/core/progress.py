"""Progress that suits a terminal and a log alike: a tqdm bar on a terminal; in a log (``dvc repro`` redirected, a
queue worker's log, CI) one flushed line every ``PIPELINE_PROGRESS_SECONDS`` instead of carriage-return fragments.
``PIPELINE_PROGRESS`` (stages/core/settings.py) forces either or turns both off."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

from stages.core import settings

T = TypeVar("T")


def progress(items: Iterable[T], description: str, total: int | None = None, unit: str = "it") -> Iterator[T]:
    mode = settings.progress_mode()
    if mode == "auto":
        mode = "bar" if sys.stderr.isatty() else "lines"
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    if mode == "bar":
        yield from tqdm(items, desc=description, total=total, unit=unit, leave=False, mininterval=0.5)
    elif mode == "off":
        yield from items
    else:
        yield from _lines(items, description, total=total, unit=unit, every=settings.progress_seconds())


def _lines(items: Iterable[T], description: str, *, total: int | None, unit: str, every: float) -> Iterator[T]:
    start = last = time.monotonic()
    for done, item in enumerate(items, 1):
        yield item
        now = time.monotonic()
        if now - last >= every:
            of = f"/{total}" if total else ""
            print(f"{description}: {done}{of} {unit} ({now - start:.0f}s)", file=sys.stderr, flush=True)
            last = now
