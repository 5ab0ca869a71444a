"""Stage report: every model's figures in one flat summary, and a Markdown report a person reads.

Reads:  metrics/baseline, metrics/data/mnist.json, metrics/mnist/<model>, metrics/pets/{lr_find,train,interpret}
Writes: metrics/summary.json   the decision figures, once each, under one level of readable keys: the only declared
                               metrics file, so these are the metric columns of ``dvc exp show`` (the Pets headline
                               leftmost) and the rows of ``dvc metrics diff``
        metrics/report.md      each model against the pixel-similarity baseline and the book, with the confusion
                               matrices, the lr_find curve, the most-confused pairs and the top losses
"""

import json
from pathlib import Path

from stages.core import atomic, stage
from stages.core.schema import CORE

PARAMS = ["source"]
SCHEMA = CORE  # source and compute only
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


def with_bounds(prefix: str, figures: dict, key: str) -> dict:
    """``{prefix_key: value, prefix_key_low: .., prefix_key_high: ..}`` from a metrics file's figures."""
    return {f"{prefix}_{key}{end}": figures[f"{key}{end}"] for end in ("", "_low", "_high")}


def summarize(pets: dict) -> dict:
    """Each model's decision figure under one flat key, with its 95% interval: Pets first (its error rate, then its
    top-5 accuracy), then chapter 4's models. Nothing else: per-class figures, counts, losses, the base lr, Pets'
    accuracy (one minus its error rate) and the top-5 interval stay in the per-model files and the report, out of
    the reviewer's tables, which must fit a screen (160 columns for a few Pets experiments, as a test checks)."""
    summary = with_bounds("pets", pets, "error_rate") | {"pets_top5_accuracy": pets["top5_accuracy"]}
    for model in MNIST_MODELS:
        summary |= with_bounds(f"mnist_{model}", read_json(METRICS / "mnist" / model / "metrics.json"), "accuracy")
    for kind, figures in read_json(METRICS / "baseline/metrics.json").items():
        summary |= with_bounds(f"mnist_pixel_{kind}", figures, "accuracy")
    return summary


def points(value: float, reference: float) -> str:
    return f"{100 * (value - reference):+.1f}"


def interval(summary: dict, key: str) -> str:
    return f"{summary[key]:.4f} [{summary[key + '_low']:.3f}, {summary[key + '_high']:.3f}]"


def render(summary: dict, pets: dict, source: str) -> str:
    counts = read_json(METRICS / "data/mnist.json")
    digits = [k for k in counts["valid"] if k != "total"]
    comparable = source == "full" and digits == ["3", "7"]
    note = "" if comparable else " (the book's figures are on full MNIST 3 vs 7; this run is not, so compare loosely)"
    baseline = summary.get("mnist_pixel_l1_accuracy")
    lines = [
        "# Results",
        "",
        f"Data: `source: {source}`; MNIST digits {', '.join(digits)} ({counts['train']['total']} train / "
        f"{counts['valid']['total']} validation).",
        "",
        f"## MNIST{note}",
        "",
        "Each figure comes with its 95% interval (Wilson, from the counts): with a small validation set, a change",
        "inside the interval may be chance. `python -m stages.compare` tests a change image by image.",
        "",
        "| model | accuracy [95% interval] | vs pixel similarity (L1), points | book | vs book, points |",
        "|---|---|---|---|---|",
    ]
    rows = [("pixel similarity (L1)", "pixel_l1")] if baseline is not None else []
    if "mnist_pixel_l2_accuracy" in summary:
        rows.append(("pixel similarity (L2)", "pixel_l2"))
    rows += [(label, model) for model, label in MNIST_MODELS.items()]
    for label, key in rows:
        value, book = summary[f"mnist_{key}_accuracy"], BOOK.get(key)
        vs_base = points(value, baseline) if baseline is not None else "—"
        vs_book = points(value, book) if book else "—"
        lines.append(
            f"| {label} | {interval(summary, f'mnist_{key}_accuracy')} | {vs_base} | {book or '—'} | {vs_book} |"
        )
    lines += ["", "![mean images](baseline/mean_images.png)", ""]
    lines += [f"![{label} confusion](mnist/{model}/confusion.png)" for model, label in MNIST_MODELS.items()]

    pets_note = (
        "" if source == "full" else " (generated stand-in, not the real photos: the book's figure does not apply)"
    )
    suggestions = read_json(METRICS / "pets/lr_find/suggestions.json")
    lines += [
        "",
        f"## Pets, 37 breeds{pets_note}",
        "",
        "| error rate [95% interval] | accuracy | top-5 accuracy | validation loss | base lr | book error rate "
        "(resnet34, fine_tune(2)) |",
        "|---|---|---|---|---|---|",
        f"| {interval(summary, 'pets_error_rate')} | {interval(pets, 'accuracy')} | "
        f"{interval(pets, 'top5_accuracy')} | {pets['valid_loss']:.4f} | {pets['lr']:.2e} "
        f"| {BOOK['pets_error_rate']} |",
        "",
        "lr_find suggestions: "
        + ", ".join(f"{n} {s['lr']:.2e}" for n, s in suggestions["suggestions"].items())
        + f" (used: {suggestions['chosen']['name']})",
        "",
        "![lr_find](pets/lr_find/lr_find.png)",
        "",
        "### Most confused (actual, predicted, count)",
        "",
    ]
    import pandas as pd

    confused = pd.read_csv(METRICS / "pets/interpret/most_confused.csv")
    lines += ["| actual | predicted | count |", "|---|---|---|"]
    lines += [f"| {r.actual} | {r.predicted} | {r.count} |" for r in confused.head(10).itertuples()] or [
        "| — | — | — |"
    ]
    lines += [
        "",
        "![Pets confusion](pets/interpret/confusion.png)",
        "",
        "### Top losses",
        "",
        "![top losses](pets/interpret/top_losses.png)",
        "",
    ]
    return "\n".join(lines)


def main(p: dict) -> None:
    pets = read_json(METRICS / "pets/train/metrics.json")
    summary = summarize(pets)
    atomic.write_json(SUMMARY, summary)
    with atomic.output_file(REPORT) as tmp:
        tmp.write_text(render(summary, pets, p["source"]))
    print(f"report: {REPORT}")


if __name__ == "__main__":
    stage.run(main, __doc__, PARAMS, SCHEMA)
