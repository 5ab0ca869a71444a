"""Stage prepare_mnist: keep the chosen digits and split them into data/mnist/{train,valid}.npz.

The full download keeps MNIST's own train/test split (for 3 and 7: the book's 12396 / 2038); the sample has
no official split, so it is split stratified by ``valid_pct`` and ``seed``.
"""

from pathlib import Path

import numpy as np

from stages import atomic, cli, mnist_data, params, splits

PARAMS = ["mnist.digits", "mnist.valid_pct", "mnist.seed"]
RAW = Path("data/raw/mnist")
OUT = Path("data/mnist")
COUNTS = Path("metrics/data/mnist.json")


def select_and_split(raw: dict[str, np.ndarray], digits: list[int], valid_pct: float, seed: int) -> dict:
    keep = np.isin(raw["labels"], digits)
    missing = sorted(set(digits) - set(np.unique(raw["labels"][keep]).tolist()))
    if missing:
        raise cli.UserError(f"params.yaml: mnist.digits {digits}: no images of digit(s) {missing} in {RAW}")
    images, labels = raw["images"][keep], raw["labels"][keep]
    if "in_test_set" in raw:
        valid_mask = raw["in_test_set"][keep]
        train_idx, valid_idx = np.flatnonzero(~valid_mask), np.flatnonzero(valid_mask)
    else:
        train_idx, valid_idx = splits.stratified_split(labels, valid_pct, seed)
    return {name: (images[idx], labels[idx]) for name, idx in (("train", train_idx), ("valid", valid_idx))}


def counts(split_data: dict) -> dict:
    return {
        name: {"total": int(len(labels)), **{str(d): int((labels == d).sum()) for d in np.unique(labels)}}
        for name, (_, labels) in split_data.items()
    }


def main() -> None:
    p = params.load(PARAMS)
    split_data = select_and_split(
        mnist_data.load_raw(RAW), list(p["mnist.digits"]), p["mnist.valid_pct"], p["mnist.seed"]
    )
    with atomic.output_dir(OUT) as tmp:
        for name, (images, labels) in split_data.items():
            np.savez(tmp / f"{name}.npz", images=images, labels=labels)
    atomic.write_json(COUNTS, counts(split_data))


if __name__ == "__main__":
    cli.run(main)
