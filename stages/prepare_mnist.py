"""Stage prepare_mnist: keep the chosen digits and split them.

Reads:  data/raw/mnist/mnist.npz
Writes: data/mnist/train.npz, data/mnist/valid.npz   uint8 images, digit labels, ids (rows of the raw file)
        metrics/data/mnist.json                       images per split and per digit
The full download keeps MNIST's own train/test split (for 3 and 7: the book's 12396 / 2038); the sample has
no official split, so it is split stratified by ``mnist.valid_pct`` and ``mnist.seed``.
"""

from pathlib import Path

from stages.core import atomic, stage
from stages.mnist import schema as mnist_schema

PARAMS = ["mnist.digits", "mnist.valid_pct", "mnist.seed"]
SCHEMA = mnist_schema.SCHEMA  # the blocks PARAMS are in
RAW = Path("data/raw/mnist")
OUT = Path("data/mnist")
COUNTS = Path("metrics/data/mnist.json")


def main(p: dict) -> None:
    import numpy as np

    from stages.mnist import data

    split_data = data.select_and_split(
        data.load_raw(RAW), list(p["mnist.digits"]), valid_pct=p["mnist.valid_pct"], seed=p["mnist.seed"], source=RAW
    )
    with atomic.output_dir(OUT) as tmp:
        for name, (images, labels, ids) in split_data.items():
            np.savez(tmp / f"{name}.npz", images=images, labels=labels, ids=ids)
    atomic.write_json(COUNTS, data.counts(split_data))


if __name__ == "__main__":
    stage.run(main, __doc__, PARAMS, SCHEMA)
