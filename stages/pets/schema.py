"""The params blocks chapter 5 reads: ``pets`` (the data: download, stand-in, split, presize) and ``pets_model``
(the model and its training data), and the rules between them."""

from __future__ import annotations

from stages.core.schema import DOWNLOAD, SEED, Schema, choice, integer, integer_or, number
from stages.pets import ARCHS
from stages.pets.layout import BREEDS


def size_within_presize(tree: dict) -> list[str]:
    presize, size = tree["pets"]["presize"], tree["pets_model"]["size"]
    return (
        [f"pets_model.size: {size} is not allowed; expected at most pets.presize ({presize})"] if size > presize else []
    )


def standin_sides(tree: dict) -> list[str]:
    low, high = tree["pets"]["standin"]["min_side"], tree["pets"]["standin"]["max_side"]
    return [f"pets.standin.min_side: {low} is not allowed; expected at most max_side ({high})"] if low > high else []


def a_batch_of_standin(tree: dict) -> list[str]:
    """Training drops the last, smaller batch: a split smaller than one batch would make none at all."""
    if tree["source"] != "sample" or tree["pets"]["split"] != "random":
        return []  # the downloaded set's size, or the official split's, is known only to the stages
    images = tree["pets"]["standin"]["images_per_breed"] * len(BREEDS)
    # stages/core/splits.random_split's cut, less the stand-in's one undecodable file, which may fall in training
    train = images - int(tree["pets"]["valid_pct"] * images) - 1
    batch_size = tree["pets_model"]["batch_size"]
    if batch_size <= train:
        return []
    return [
        f"pets_model.batch_size: {batch_size} is not allowed; expected at most the stand-in's {train} training "
        f"images (pets.standin.images_per_breed x {len(BREEDS)} breeds, less pets.valid_pct and one undecodable)"
    ]


SCHEMA = Schema(
    {
        "pets": {
            "download": DOWNLOAD,
            "standin": {"seed": SEED, "images_per_breed": integer(2), "min_side": integer(32), "max_side": integer(32)},
            "split": choice("random", "official"),
            "valid_pct": number(above=0, below=1),
            "seed": SEED,
            "presize": integer(8),
        },
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
    },
    rules=(
        (frozenset({"pets", "pets_model"}), size_within_presize),
        (frozenset({"pets"}), standin_sides),
        (frozenset({"source", "pets", "pets_model"}), a_batch_of_standin),
    ),
)
