"""Stage lr_find_pets: fastai's learning-rate finder on the Pets learner, in the state fine_tune starts from.

Reads:  data/pets (presized images and labels)
Writes: metrics/pets/lr_find/curve.csv         lr, log10 lr and smoothed loss of every batch of the sweep
        metrics/pets/lr_find/suggestions.json  valley, minimum and steep, and the one ``lr_find.suggestion``
                                               chose (train_pets uses it when ``fine_tune.base_lr: auto``)
        metrics/pets/lr_find/lr_find.png
"""

from pathlib import Path

from stages.core import stage
from stages.learner import schema as learner_schema
from stages.pets import schema as pets_schema

PARAMS = ["source", "compute", "pets_model", "lr_find"]
SCHEMA = pets_schema.SCHEMA | learner_schema.SCHEMA  # the blocks PARAMS are in
OUT = Path("metrics/pets/lr_find")


def plot(path: Path, lrs: list[float], losses: list[float], *, suggestions: dict) -> None:
    import matplotlib.pyplot as plt

    from stages.core import evaluation

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(lrs[:-5] or lrs, losses[:-5] or losses)  # fastai leaves out the last 5 points
    for name, s in suggestions.items():
        ax.plot(s["point_lr"], s["point_loss"], "o", label=f"{name}: {s['lr']:.2e}")
    ax.set(xscale="log", xlabel="Learning Rate", ylabel="Loss (smoothed)", title="lr_find")
    ax.legend(loc="best")
    evaluation.save_figure(fig, path)


def sweep(p: dict) -> tuple[list[float], list[float]]:
    """The learner lives only while it sweeps, so its loader workers stop before the outputs are written: matplotlib
    leaves a reference cycle through the frames that save a figure, which would keep a learner in ``main`` (and its
    workers) alive until exit (docs/design-notes.md)."""
    from stages.core.devices import Compute
    from stages.pets.data import read_index
    from stages.pets.learner import pets_learner, wants_pretrained

    cfg, finder = p["pets_model"], p["lr_find"]
    pretrained = wants_pretrained(cfg["weights"], p["source"])
    learn = pets_learner(cfg, pretrained, Compute.from_params(p["compute"]), classes=read_index()["classes"])
    if pretrained:
        learn.freeze()  # a pretrained learner starts frozen, as fine_tune's first phase
    return learn.lr_find(finder["start_lr"], finder["end_lr"], finder["num_it"])


def main(p: dict) -> None:
    import numpy as np
    import pandas as pd

    from stages.core import atomic
    from stages.learner import lr_find

    finder = p["lr_find"]
    lrs, losses = sweep(p)
    suggestions = lr_find.suggest(lrs, losses, finder["num_it"])
    chosen = finder["suggestion"]
    with atomic.output_dir(OUT) as out:
        pd.DataFrame({"lr": lrs, "log10_lr": np.log10(lrs), "loss": losses}).to_csv(out / "curve.csv", index=False)
        summary = {
            "iterations": len(lrs),
            "suggestions": suggestions,
            "chosen": {"name": chosen, "lr": suggestions[chosen]["lr"]},
        }
        atomic.write_json(out / "suggestions.json", summary)
        plot(out / "lr_find.png", lrs, losses, suggestions=suggestions)
    found = ", ".join(f"{name} {s['lr']:.2e}" for name, s in suggestions.items())
    print(f"lr_find: {len(lrs)} iterations; {found}; using {chosen}")


if __name__ == "__main__":
    stage.run(main, __doc__, PARAMS, SCHEMA)
