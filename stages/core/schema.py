"""The shape of params.yaml, checked before any stage does any work: the checkers, a ``Schema`` of blocks and the
rules across them, and the walk that collects every problem.

Each package owns the schema of the blocks it reads (``stages/mnist/schema.py``, ``stages/pets/schema.py``,
``stages/learner/schema.py``); ``CORE`` holds the two every chapter shares, ``source`` and ``compute``. An unknown
key (a typo), a wrong type or an out-of-range value is one error line naming the key, the value and what is allowed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from stages.core.errors import UserError

Check = Callable[[Any], str | None]  # returns what is allowed when the value is not
Rule = Callable[[dict], list[str]]  # a rule across keys: the problems it finds in the tree


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def integer(low: int, high: int | None = None) -> Check:
    allowed = f"an integer >= {low}" + (f" and <= {high}" if high is not None else "")
    ok = lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low and (high is None or v <= high)  # noqa: E731
    return lambda v: None if ok(v) else allowed


def number(above: float | None = None, below: float | None = None, at_least: float | None = None) -> Check:
    parts = [
        f"> {above}" if above is not None else "",
        f"< {below}" if below is not None else "",
        f">= {at_least}" if at_least is not None else "",
    ]
    allowed = "a number " + " and ".join(p for p in parts if p)

    def check(v: Any) -> str | None:
        ok = _is_number(v) and (above is None or v > above) and (below is None or v < below)
        return None if ok and (at_least is None or v >= at_least) else allowed

    return check


def choice(*options: Any) -> Check:
    return lambda v: None if v in options else f"one of {list(options)}"


def integer_or(word: str, low: int, high: int | None = None) -> Check:
    as_integer = integer(low, high)
    return lambda v: None if v == word else (as_integer(v) and f"'{word}' or {as_integer(v)}")


def number_or(word: str, **bounds: float) -> Check:
    as_number = number(**bounds)
    return lambda v: None if v == word else (as_number(v) and f"'{word}' or {as_number(v)}")


def text(v: Any) -> str | None:
    return None if isinstance(v, str) and v else "a non-empty string"


def urls(v: Any) -> str | None:
    ok = isinstance(v, list) and v and all(isinstance(u, str) and re.match(r"^(https?|file)://", u) for u in v)
    return None if ok else "a non-empty list of http(s):// or file:// URLs"


def md5_files(v: Any) -> str | None:
    ok = (
        isinstance(v, dict)
        and v
        and all(isinstance(k, str) and isinstance(m, str) and re.fullmatch(r"[0-9a-f]{32}", m) for k, m in v.items())
    )
    return None if ok else "a mapping of file name to 32-hex-digit md5"


def device(v: Any) -> str | None:
    ok = isinstance(v, str) and re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", v)
    return None if ok else "one of 'auto', 'cpu', 'mps', 'cuda' or 'cuda:N' (GPU number N)"


@dataclass(frozen=True)
class Schema:
    """Blocks of params.yaml (top-level key -> the shape of its value) and the rules across them, each rule with the
    blocks it reads: a stage that validates some blocks applies the rules whose blocks are all among them."""

    blocks: dict[str, Any]
    rules: tuple[tuple[frozenset[str], Rule], ...] = field(default=())

    def __or__(self, other: Schema) -> Schema:
        return Schema({**self.blocks, **other.blocks}, self.rules + other.rules)


PRECISIONS = ("auto", "fp32", "bf16")  # stages/core/devices.py: how each computes
NUMERICS = ("portable", "native")  # stages/core/cpu.py: the same bits on every x86-64 machine, or its fastest kernels
SEED = integer(0)
DOWNLOAD = {"mirrors": urls, "files": md5_files}


def auto_threads_are_native(tree: dict) -> list[str]:
    """``cpu_threads: auto`` (as many as torch finds cores) makes the sums follow the machine, which only ``native``
    allows: ``portable`` promises the same bits everywhere, and the thread count is part of the order of sums."""
    compute = tree["compute"]
    if compute["cpu_threads"] == "auto" and compute["numerics"] != "native":
        return ["compute.cpu_threads: 'auto' needs compute.numerics: native (portable results need a fixed count)"]
    return []


CORE = Schema(
    {
        "source": choice("sample", "full"),
        "compute": {
            "device": device,
            "precision": choice(*PRECISIONS),
            "numerics": choice(*NUMERICS),
            "cpu_threads": integer_or("auto", 1, 256),
        },
    },
    rules=((frozenset({"compute"}), auto_threads_are_native),),
)


def _walk(tree: Any, schema: Any, *, prefix: str, errors: list[str]) -> None:
    if callable(schema):
        allowed = schema(tree)
        if allowed:
            errors.append(f"{prefix}: {tree!r} is not allowed; expected {allowed}")
        return
    if not isinstance(tree, dict):
        errors.append(f"{prefix or 'params.yaml'}: {tree!r} is not allowed; expected a mapping of {sorted(schema)}")
        return
    for key in tree:
        if key not in schema:
            where = f"under '{prefix}'" if prefix else "at the top level"
            errors.append(f"{prefix + '.' if prefix else ''}{key}: unknown key {where}; known: {sorted(schema)}")
    for key, sub in schema.items():
        path = f"{prefix}.{key}" if prefix else key
        if key not in tree:
            errors.append(f"{path}: missing")
        else:
            _walk(tree[key], sub, prefix=path, errors=errors)


def validate(tree: Any, schema: Schema, *, blocks: set[str] | None = None, source: str = "params.yaml") -> None:
    """Raise one UserError naming the first problem (and counting the rest), or return. ``blocks`` None checks the
    whole file against ``schema``, unknown top-level keys included; otherwise those blocks, and the other blocks of
    every rule on one of them (``pets_model.size`` is checked against ``pets.presize`` wherever either is read)."""
    errors: list[str] = []
    if blocks is not None:
        for needs, _ in schema.rules:
            blocks = blocks | needs if needs & blocks else blocks
        unknown = blocks - set(schema.blocks)
        if unknown:  # a stage's SCHEMA must cover its PARAMS: a programming error, not the user's
            raise KeyError(f"no schema for params blocks {sorted(unknown)}: add their room's SCHEMA to the stage's")
    if blocks is None:
        _walk(tree, schema.blocks, prefix="", errors=errors)
        blocks = set(schema.blocks)
    elif not isinstance(tree, dict):
        errors.append(f"{tree!r} is not allowed; expected a mapping of {sorted(schema.blocks)}")
    else:
        for block in sorted(blocks):
            if block not in tree:
                errors.append(f"{block}: missing")
            else:
                _walk(tree[block], schema.blocks[block], prefix=block, errors=errors)
    if not errors:
        errors = [error for needs, rule in schema.rules if needs <= blocks for error in rule(tree)]
    if errors:
        more = f" (and {len(errors) - 1} more: {'; '.join(errors[1:])})" if len(errors) > 1 else ""
        raise UserError(f"{source}: {errors[0]}{more}")
