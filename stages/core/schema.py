"""The shape of params.yaml, checked whole before any stage does any work.

Every key is listed here with what it allows; an unknown key (a typo), a wrong type or an out-of-range value
is one error line naming the key, the value and what is allowed. Cross-key rules follow the table.
"""

from __future__ import annotations

import re
from typing import Any, Callable

from stages.core.stage import UserError
from stages.learner import LR_SUGGESTIONS
from stages.mnist import DISTANCES, MODELS
from stages.pets import ARCHS

Check = Callable[[Any], str | None]  # returns what is allowed when the value is not


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def integer(low: int, high: int | None = None) -> Check:
    allowed = f"an integer >= {low}" + (f" and <= {high}" if high is not None else "")
    ok = lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low and (high is None or v <= high)  # noqa: E731
    return lambda v: None if ok(v) else allowed


def number(above: float | None = None, below: float | None = None, at_least: float | None = None) -> Check:
    parts = [f"> {above}" if above is not None else "", f"< {below}" if below is not None else "",
             f">= {at_least}" if at_least is not None else ""]  # fmt: skip
    allowed = "a number " + " and ".join(p for p in parts if p)

    def check(v: Any) -> str | None:
        ok = _is_number(v) and (above is None or v > above) and (below is None or v < below)
        return None if ok and (at_least is None or v >= at_least) else allowed

    return check


def choice(*options: Any) -> Check:
    return lambda v: None if v in options else f"one of {list(options)}"


def integer_or(word: str, low: int) -> Check:
    as_integer = integer(low)
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
    ok = isinstance(v, dict) and v and all(
        isinstance(k, str) and isinstance(m, str) and re.fullmatch(r"[0-9a-f]{32}", m) for k, m in v.items()
    )
    return None if ok else "a mapping of file name to 32-hex-digit md5"


def digits(v: Any) -> str | None:
    ok = isinstance(v, list) and len(v) >= 2 and len(set(v)) == len(v)
    ok = ok and all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= 9 for d in v)
    return None if ok else "a list of two or more different digits 0-9"


def device(v: Any) -> str | None:
    ok = isinstance(v, str) and re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", v)
    return None if ok else "one of 'auto', 'cpu', 'mps', 'cuda' or 'cuda:N' (GPU number N)"


def distances(v: Any) -> str | None:
    ok = isinstance(v, list) and v and all(d in DISTANCES for d in v) and len(set(v)) == len(v)
    return None if ok else f"a non-empty list of {' and/or '.join(map(repr, DISTANCES))}"


STANDIN_BREEDS = 37  # len(stages.pets.layout.BREEDS): the stand-in has images_per_breed of each
PRECISIONS = ("auto", "fp32", "bf16")  # stages/core/devices.py: how each computes
SEED = integer(0)
DOWNLOAD = {"mirrors": urls, "files": md5_files}
SCHEMA: dict[str, Any] = {
    "source": choice("sample", "full"),
    "mnist": {"download": DOWNLOAD, "digits": digits, "valid_pct": number(above=0, below=1), "seed": SEED},
    "pets": {
        "download": DOWNLOAD,
        "standin": {"seed": SEED, "images_per_breed": integer(2), "min_side": integer(32), "max_side": integer(32)},
        "split": choice("random", "official"),
        "valid_pct": number(above=0, below=1),
        "seed": SEED,
        "presize": integer(8),
    },
    "baseline": {"distances": distances},
    "compute": {"device": device, "precision": choice(*PRECISIONS), "cpu_threads": integer(1, 256)},
    "mnist_models": {
        "linear": {"init_std": number(above=0), "batch_size": integer(1), "lr": number(above=0),
                   "epochs": integer(1), "seed": SEED},
        "simple_net": {"hidden": integer(1), "batch_size": integer(1), "lr": number(above=0), "epochs": integer(1),
                       "seed": SEED},
        "resnet18": {"batch_size": integer(1), "lr": number(above=0), "pct_start": number(above=0, below=1),
                     "epochs": integer(1), "seed": SEED},
    },  # fmt: skip
    "pets_model": {
        "arch": choice(*ARCHS),
        "weights": choice("auto", "imagenet", "none"),
        "size": integer(8),
        "min_scale": number(above=0, at_least=0.01, below=1.0000001),
        "batch_size": integer(2),  # BatchNorm needs two images a batch
        "batches_per_epoch": integer_or("all", 1),
        "label_smoothing": number(at_least=0, below=1),
        "seed": SEED,
    },
    "lr_find": {"start_lr": number(above=0), "end_lr": number(above=0), "num_it": integer(6),
                "suggestion": choice(*LR_SUGGESTIONS)},  # fmt: skip
    "fine_tune": {
        "epochs": integer(1), "freeze_epochs": integer(0), "base_lr": number_or("auto", above=0), "lr_mult": number(at_least=1),
        "pct_start": number(above=0, below=1), "div": number(above=0), "freeze_lr": number_or("base", above=0),
        "freeze_pct_start": number(above=0, below=1),
    },  # fmt: skip
    "interpret": {"min_val": integer(1), "top_losses": integer(0, 100)},
}


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


def cross_checks(tree: dict) -> list[str]:
    errors = []
    presize, size = tree["pets"]["presize"], tree["pets_model"]["size"]
    if size > presize:
        errors.append(f"pets_model.size: {size} is not allowed; expected at most pets.presize ({presize})")
    standin = tree["pets"]["standin"]
    if standin["min_side"] > standin["max_side"]:
        errors.append(f"pets.standin.min_side: {standin['min_side']} is not allowed; expected at most max_side ({standin['max_side']})")
    if tree["lr_find"]["start_lr"] >= tree["lr_find"]["end_lr"]:
        errors.append(f"lr_find.start_lr: {tree['lr_find']['start_lr']} is not allowed; expected below lr_find.end_lr")
    if tree["source"] == "sample" and tree["pets"]["split"] == "random":
        # Training drops the last, smaller batch: a split smaller than one batch would make none at all.
        images = standin["images_per_breed"] * STANDIN_BREEDS
        train = images - int(tree["pets"]["valid_pct"] * images)  # stages/core/splits.random_split's cut
        batch_size = tree["pets_model"]["batch_size"]
        if batch_size > train:
            errors.append(f"pets_model.batch_size: {batch_size} is not allowed; expected at most the stand-in's "
                          f"{train} training images (pets.standin.images_per_breed x {STANDIN_BREEDS} breeds, less "
                          "pets.valid_pct)")
    return errors


def validate(tree: Any, source: str = "params.yaml") -> None:
    """Raise one UserError listing every problem (the first line names the first one), or return."""
    errors: list[str] = []
    _walk(tree, SCHEMA, prefix="", errors=errors)
    if not errors:
        errors = cross_checks(tree)
    if errors:
        more = f" (and {len(errors) - 1} more: {'; '.join(errors[1:])})" if len(errors) > 1 else ""
        raise UserError(f"{source}: {errors[0]}{more}")
