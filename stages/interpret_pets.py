"""Stage interpret_pets: what the Pets model gets wrong (fastai's ``ClassificationInterpretation``).

Reads:  data/pets (validation split), data/models/pets/model.pt
Writes: metrics/pets/interpret/predictions.csv     item (image file), actual and predicted breed, its probability
        metrics/pets/interpret/confusion.png
        metrics/pets/interpret/most_confused.csv   pairs with at least ``interpret.min_val`` images
        metrics/pets/interpret/top_losses.png      the ``interpret.top_losses`` worst validation images
"""

from pathlib import Path

from stages.core import stage
from stages.learner import schema as learner_schema

PARAMS = ["compute", "interpret"]
SCHEMA = learner_schema.SCHEMA  # the blocks PARAMS are in
MODEL = Path("data/models/pets/model.pt")
OUT = Path("metrics/pets/interpret")


def main(p: dict) -> None:
    import numpy as np
    import pandas as pd
    import torch

    from stages.core import atomic, checkpoint, evaluation
    from stages.core.devices import Compute
    from stages.learner import interpret
    from stages.learner.learner import evaluate, loader
    from stages.pets import augment, data, model

    settings, compute = p["interpret"], Compute.from_params(p["compute"])
    saved = checkpoint.load(MODEL, rerun="train_pets")
    classes = saved["classes"]
    net = model.build(saved["arch"], pretrained=False, n_classes=len(classes))
    net.load_state_dict(saved["state_dict"])
    valid = data.PresizedPets("valid")
    resize = lambda batch: augment.resize_batch(batch, saved["size"], saved["normalized"])  # noqa: E731
    outputs, targets, _ = evaluate(
        compute.prepare(net),
        loader(valid, 64, compute, shuffle=False, seed=0),
        loss_func=torch.nn.CrossEntropyLoss(),
        compute=compute,
        tfm=resize,
    )
    predicted, actual = outputs.argmax(1).numpy(), targets.numpy()

    probabilities = outputs.softmax(1)
    with atomic.output_dir(OUT) as out:
        files = data.read_index()["files"]["valid"]
        evaluation.write_predictions(
            out,
            files,
            actual,
            predicted={"predicted": predicted},
            classes=classes,
            title="Pets, validation",
            extra={"probability": probabilities.max(1).values.numpy()},
        )
        confused = interpret.most_confused(actual, predicted, classes, min_val=settings["min_val"])
        pd.DataFrame(confused, columns=["actual", "predicted", "count"]).to_csv(out / "most_confused.csv", index=False)
        losses, index = interpret.top_losses(outputs, targets, settings["top_losses"])
        titles = [
            f"{classes[predicted[i]]} / {classes[actual[i]]} / {loss:.2f} / {probabilities[i, predicted[i]]:.2f}"
            for loss, i in zip(losses.tolist(), index.tolist())
        ]
        images = np.stack([valid.image(i) for i in index.tolist()]) if len(index) else np.zeros((0, 1, 1, 3), np.uint8)
        interpret.plot_top_losses(out / "top_losses.png", images, titles)
    for row in confused[:5]:
        print(f"most confused: {row['actual']} -> {row['predicted']} ({row['count']})")


if __name__ == "__main__":
    stage.run(main, __doc__, PARAMS, SCHEMA)
