"""Stage fetch_mnist: raw MNIST into data/raw/mnist, from the bundled sample or the full download."""

import tempfile
from pathlib import Path

from stages import atomic, cli, download, mnist_data, params

PARAMS = ["source", "mnist.download"]
OUT = Path("data/raw/mnist")


def main() -> None:
    p = params.load(PARAMS)
    with atomic.output_dir(OUT) as tmp:
        if p["source"] == "sample":
            images, labels = mnist_data.read_sample()
            mnist_data.save_raw(tmp, {"images": images, "labels": labels})
        else:  # full (params_schema allows nothing else)
            spec = p["mnist.download"]
            with tempfile.TemporaryDirectory(dir=tmp) as scratch:
                download.fetch_and_extract(spec["mirrors"], spec["files"], Path(scratch))
                arrays = mnist_data.read_idx(Path(scratch))
            mnist_data.save_raw(tmp, arrays)


if __name__ == "__main__":
    cli.run(main)
