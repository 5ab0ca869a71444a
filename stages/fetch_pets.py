"""Stage fetch_pets: Oxford-IIIT Pets into data/raw/pets (images/, annotations/), generated or downloaded."""

from pathlib import Path

from stages import atomic, cli, download, params, pets_standin

PARAMS = ["source", "pets.download", "pets.standin"]
OUT = Path("data/raw/pets")


def main() -> None:
    p = params.load(PARAMS)
    with atomic.output_dir(OUT) as tmp:
        if p["source"] == "sample":
            s = p["pets.standin"]
            pets_standin.generate(tmp, s["seed"], s["images_per_breed"], s["min_side"], s["max_side"])
        else:  # full (params_schema allows nothing else)
            spec = p["pets.download"]
            download.fetch_and_extract(spec["mirrors"], spec["files"], tmp)
            for folder in ("images", "annotations"):
                if not (tmp / folder).is_dir():
                    raise cli.UserError(f"Pets archives did not contain '{folder}/' as Oxford-IIIT Pets does")


if __name__ == "__main__":
    cli.run(main)
