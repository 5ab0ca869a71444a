"""Stage interpret_pets: what the Pets model gets wrong (fastai's ``ClassificationInterpretation``).

Writes metrics/pets/interpret/: per-image actual/predicted breed records for DVC's confusion template
(plots/sklearn/confusion.json), a confusion-matrix PNG, most_confused.csv (pairs with at least
``interpret.min_val`` images) and top_losses.png (the ``interpret.top_losses`` worst validation images).
"""

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from stages import atomic, cli, devices, evaluation, interpretation, params, pets_data, pets_model, training
from stages.live_logger import live_logger

PARAMS = ["device", "interpret"]
MODEL = Path("data/models/pets/model.pt")
OUT = Path("metrics/pets/interpret")


def load_model(device: torch.device) -> tuple[torch.nn.Module, dict]:
    try:
        checkpoint = torch.load(MODEL, map_location="cpu", weights_only=True)  # never unpickle code
    except (OSError, RuntimeError, pickle.UnpicklingError) as exc:
        reason = " ".join(str(exc).split())[:200]
        raise cli.UserError(f"{MODEL}: cannot load ({reason}); rerun 'dvc repro train_pets'") from None
    model = pets_model.build(checkpoint["arch"], pretrained=False, n_classes=len(checkpoint["classes"]))
    model.load_state_dict(checkpoint["state_dict"])
    return training.prepare_model(model, device).eval(), checkpoint


def main() -> None:
    p = params.load(PARAMS)
    settings = p["interpret"]
    device = devices.pick(p["device"])
    model, checkpoint = load_model(device)
    classes = checkpoint["classes"]
    valid = pets_data.PresizedPets("valid")
    loader = training.loader(valid, 64, device, shuffle=False, seed=0)
    loss_fn = torch.nn.CrossEntropyLoss()
    outputs, targets, _ = training.predict(model, loader, device, loss_fn, pets_data.valid_batch_transform(checkpoint["size"]))
    predicted, actual = outputs.argmax(1).numpy(), targets.numpy()

    with atomic.output_dir(OUT) as out:
        with live_logger(out) as live:
            live.log_sklearn_plot("confusion_matrix", [classes[i] for i in actual], [classes[i] for i in predicted],
                                  name="confusion.json")  # fmt: skip
        evaluation.plot_confusion(out / "confusion.png", actual, predicted, classes, "Pets, validation")
        confused = interpretation.most_confused(actual, predicted, classes, settings["min_val"])
        pd.DataFrame(confused, columns=["actual", "predicted", "count"]).to_csv(out / "most_confused.csv", index=False)
        losses, index = interpretation.top_losses(outputs, targets, settings["top_losses"])
        probabilities = outputs.softmax(1)
        titles = [f"{classes[predicted[i]]} / {classes[actual[i]]} / {loss:.2f} / {probabilities[i, predicted[i]]:.2f}"
                  for loss, i in zip(losses.tolist(), index.tolist())]  # fmt: skip
        images = np.stack([valid.images[i] for i in index.tolist()]) if len(index) else np.zeros((0, 1, 1, 3), np.uint8)
        interpretation.plot_top_losses(out / "top_losses.png", images, titles)
    for row in confused[:5]:
        print(f"most confused: {row['actual']} -> {row['predicted']} ({row['count']})")


if __name__ == "__main__":
    cli.run(main)
