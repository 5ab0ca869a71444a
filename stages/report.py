"""Stage report: every model's figures in one flat summary, and a Markdown report a person reads.

Reads:  metrics/baseline, metrics/data/mnist.json, metrics/mnist/<model>, metrics/pets/{lr_find,train,interpret}
Writes: metrics/summary.json   one level of readable keys: columns in ``dvc exp show``, rows in ``dvc metrics diff``
        metrics/report.md      each model against the pixel-similarity baseline and the book, with the confusion
                               matrices, the lr_find curve, the most-confused pairs and the top losses
"""

import json
from pathlib import Path

import pandas as pd

from stages.core import atomic, stage

PARAMS = ["source"]
METRICS = Path("metrics")
SUMMARY = METRICS / "summary.json"
REPORT = METRICS / "report.md"
MNIST_MODELS = {"linear": "linear by hand", "simple_net": "simple net", "resnet18": "resnet18"}
# The book's figures on the full data (fastbook 04_mnist_basics and 05_pet_breeds).
BOOK = {"pixel_l1": 0.9511, "linear": 0.9696, "simple_net": 0.9828, "resnet18": 0.9971, "pets_error_rate": 0.0805}


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise stage.UserError(f"{path}: cannot read ({exc}); rerun 'dvc repro'") from None


def summarize() -> dict:
    baseline = read_json(METRICS / "baseline/metrics.json")
    summary = {f"mnist_pixel_{kind}_accuracy": figures["accuracy"] for kind, figures in baseline.items()}
    for model in MNIST_MODELS:
        summary[f"mnist_{model}_accuracy"] = read_json(METRICS / "mnist" / model / "metrics.json")["accuracy"]
    pets = read_json(METRICS / "pets/train/metrics.json")
    for key in ("error_rate", "accuracy", "top5_accuracy", "valid_loss", "lr"):
        summary[f"pets_{key}"] = pets[key]
    return summary


def points(value: float, reference: float) -> str:
    return f"{100 * (value - reference):+.1f}"


def render(summary: dict, source: str) -> str:
    counts = read_json(METRICS / "data/mnist.json")
    digits = [k for k in counts["valid"] if k != "total"]
    comparable = source == "full" and digits == ["3", "7"]
    note = "" if comparable else " (the book's figures are on full MNIST 3 vs 7; this run is not, so compare loosely)"
    baseline = summary.get("mnist_pixel_l1_accuracy")
    lines = [
        "# Results", "",
        f"Data: `source: {source}`; MNIST digits {', '.join(digits)} ({counts['train']['total']} train / "
        f"{counts['valid']['total']} validation).", "",
        f"## MNIST{note}", "",
        "| model | accuracy | vs pixel similarity (L1), points | book | vs book, points |",
        "|---|---|---|---|---|",
    ]  # fmt: skip
    rows = [("pixel similarity (L1)", "pixel_l1", baseline)]
    if "mnist_pixel_l2_accuracy" in summary:
        rows.append(("pixel similarity (L2)", None, summary["mnist_pixel_l2_accuracy"]))
    rows += [(label, model, summary[f"mnist_{model}_accuracy"]) for model, label in MNIST_MODELS.items()]
    for label, key, value in rows:
        book = BOOK.get(key)
        vs_base = points(value, baseline) if baseline is not None else "—"
        lines.append(f"| {label} | {value:.4f} | {vs_base} | {book or '—'} | {points(value, book) if book else '—'} |")
    lines += ["", "![mean images](baseline/mean_images.png)", ""]
    lines += [f"![{label} confusion](mnist/{model}/confusion.png)" for model, label in MNIST_MODELS.items()]

    pets_note = "" if source == "full" else " (generated stand-in, not the real photos: the book's figure does not apply)"
    suggestions = read_json(METRICS / "pets/lr_find/suggestions.json")
    lines += [
        "", f"## Pets, 37 breeds{pets_note}", "",
        "| error rate | accuracy | top-5 accuracy | validation loss | base lr | book error rate (resnet34, fine_tune(2)) |",
        "|---|---|---|---|---|---|",
        f"| {summary['pets_error_rate']:.4f} | {summary['pets_accuracy']:.4f} | {summary['pets_top5_accuracy']:.4f} "
        f"| {summary['pets_valid_loss']:.4f} | {summary['pets_lr']:.2e} | {BOOK['pets_error_rate']} |",
        "", "lr_find suggestions: " + ", ".join(f"{n} {s['lr']:.2e}" for n, s in suggestions["suggestions"].items())
        + f" (used: {suggestions['chosen']['name']})", "",
        "![lr_find](pets/lr_find/lr_find.png)", "", "### Most confused (actual, predicted, count)", "",
    ]  # fmt: skip
    confused = pd.read_csv(METRICS / "pets/interpret/most_confused.csv")
    lines += ["| actual | predicted | count |", "|---|---|---|"]
    lines += [f"| {r.actual} | {r.predicted} | {r.count} |" for r in confused.head(10).itertuples()] or ["| — | — | — |"]
    lines += ["", "![Pets confusion](pets/interpret/confusion.png)", "", "### Top losses", "",
              "![top losses](pets/interpret/top_losses.png)", ""]  # fmt: skip
    return "\n".join(lines)


def main(p: dict) -> None:
    summary = summarize()
    atomic.write_json(SUMMARY, summary)
    with atomic.output_file(REPORT) as tmp:
        tmp.write_text(render(summary, p["source"]))
    print(f"report: {REPORT}")


if __name__ == "__main__":
    stage.run(main, __doc__, PARAMS)
