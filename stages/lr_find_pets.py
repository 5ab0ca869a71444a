"""Stage lr_find_pets: fastai's learning-rate finder on the Pets model, in the state fine_tune starts from.

Writes metrics/pets/lr_find/: curve.csv (lr, log10 lr, smoothed loss), suggestions.json (valley, minimum,
steep and the one ``lr_find.suggestion`` picks, which train_pets uses when ``fine_tune.lr: auto``) and lr_find.png.
"""

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from stages import atomic, cli, devices, evaluation, lr_finder, params, pets_model, pets_setup

PARAMS = ["source", "device", "pets_model", "lr_find"]
OUT = Path("metrics/pets/lr_find")


def plot(path: Path, lrs: list[float], losses: list[float], suggestions: dict) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(lrs[:-5] or lrs, losses[:-5] or losses)  # fastai leaves out the last 5 points
    for name, s in suggestions.items():
        ax.plot(s["point_lr"], s["point_loss"], "o", label=f"{name}: {s['lr']:.2e}")
    ax.set(xscale="log", xlabel="Learning Rate", ylabel="Loss (smoothed)", title="lr_find")
    ax.legend(loc="best")
    evaluation.save_figure(fig, path)


def main() -> None:
    p = params.load(PARAMS)
    cfg, finder = p["pets_model"], p["lr_find"]
    device = devices.pick(p["device"])
    setup = pets_setup.prepare(cfg, p["source"], device)
    if setup.pretrained:
        pets_model.freeze(setup.model)  # a pretrained learner starts frozen, as fine_tune's first phase
    groups = len(pets_model.layer_groups(setup.model))
    make_optimizer = lambda m: pets_model.adam(pets_model.param_groups(m, [finder["start_lr"]] * groups, pets_model.WEIGHT_DECAY))  # noqa: E731
    lrs, losses = lr_finder.sweep(setup.model, setup.train, setup.loss_fn, make_optimizer, device,
                                  finder["start_lr"], finder["end_lr"], finder["num_it"], setup.train_transform)  # fmt: skip
    suggestions = lr_finder.suggest(lrs, losses, finder["num_it"])
    chosen = finder["suggestion"]
    with atomic.output_dir(OUT) as out:
        curve = pd.DataFrame({"lr": lrs, "log10_lr": np.log10(lrs), "loss": losses})
        curve.to_csv(out / "curve.csv", index=False)
        summary = {"iterations": len(lrs), "suggestions": suggestions,
                   "chosen": {"name": chosen, "lr": suggestions[chosen]["lr"]}}  # fmt: skip
        atomic.write_json(out / "suggestions.json", summary)
        plot(out / "lr_find.png", lrs, losses, suggestions)
    found = ", ".join(f"{name} {s['lr']:.2e}" for name, s in suggestions.items())
    print(f"lr_find: {len(lrs)} iterations; {found}; using {chosen}")


if __name__ == "__main__":
    cli.run(main)
