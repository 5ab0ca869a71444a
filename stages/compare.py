"""Compare every model's per-image predictions between two revisions: is the change beyond chance?

    python -m stages.compare [REV_A] [REV_B] [--json]

REV_A defaults to HEAD and REV_B to the workspace. A revision is anything Git or DVC names: a commit, a branch, a
tag, or a ``dvc exp`` experiment name. For each model this prints the change in accuracy from A to B on the images
both revisions judged, a 95% interval on that change (Newcombe's method for paired proportions), and the exact
McNemar test on the images whose outcome changed, and says in words whether the change is beyond chance.

Reads (at each revision): metrics/baseline/predictions.csv, metrics/mnist/<model>/predictions.csv,
metrics/pets/interpret/predictions.csv. Writes nothing.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pandas as pd

from stages.core import stage
from stages.core.stats import paired

WORKSPACE = "workspace"
ALPHA = 0.05
# model -> (predictions file, column holding the predicted class)
MODELS = {
    "pixel similarity (l1)": ("metrics/baseline/predictions.csv", "l1"),
    "pixel similarity (l2)": ("metrics/baseline/predictions.csv", "l2"),
    "mnist linear": ("metrics/mnist/linear/predictions.csv", "predicted"),
    "mnist simple_net": ("metrics/mnist/simple_net/predictions.csv", "predicted"),
    "mnist resnet18": ("metrics/mnist/resnet18/predictions.csv", "predicted"),
    "pets": ("metrics/pets/interpret/predictions.csv", "predicted"),
}


class Revision:
    """Files as they are at a Git revision or experiment, or in the workspace."""

    def __init__(self, name: str):
        self.name = name
        self.sha = None
        if name != WORKSPACE:
            from dvc.repo import Repo
            from dvc.scm import RevError, resolve_rev

            try:
                self._repo = Repo(".")
                self.sha = resolve_rev(self._repo.scm, name)  # also resolves experiment names
            except RevError as exc:
                raise stage.UserError(f"{name}: not a Git revision or experiment here ({exc})") from None
            except Exception as exc:  # noqa: BLE001  DVC's own "not a DVC repository" and the like
                raise stage.UserError(f"cannot open the repository to read {name}: {exc}") from None

    def read_csv(self, path: str) -> pd.DataFrame | None:
        if self.sha is None:
            return pd.read_csv(path, dtype={"item": str}) if Path(path).is_file() else None
        fs = self._repo.scm.get_fs(self.sha)
        if not fs.isfile(path):
            return None
        with fs.open(path, "rb") as f:
            return pd.read_csv(io.BytesIO(f.read()), dtype={"item": str})


def compare_model(a: pd.DataFrame, b: pd.DataFrame, column: str) -> dict:
    """Pair the two revisions' predictions on the images both judged, and test the change."""
    merged = a.merge(b, on="item", suffixes=("_a", "_b"))
    if merged.empty:
        return {"status": "no images in common (the validation set changed)"}
    changed_truth = (merged["actual_a"] != merged["actual_b"]).sum()
    if changed_truth:
        return {"status": f"{changed_truth} images changed their true label between the revisions"}
    comparison = paired(merged[f"{column}_a"] == merged["actual_a"], merged[f"{column}_b"] == merged["actual_b"])
    low, high = comparison.change_interval()
    p = comparison.mcnemar_p()
    return {
        "status": "compared",
        "images": comparison.n,
        "only_in_a": len(a) - comparison.n,
        "only_in_b": len(b) - comparison.n,
        "accuracy_a": round(comparison.accuracy_a, 6),
        "accuracy_b": round(comparison.accuracy_b, 6),
        "change": round(comparison.change, 6),
        "change_low": round(low, 6),
        "change_high": round(high, 6),
        "right_only_in_a": comparison.only_a,
        "right_only_in_b": comparison.only_b,
        "mcnemar_p": p,
        "beyond_chance": bool(p < ALPHA),
    }


def verdict(result: dict) -> str:
    if result["status"] != "compared":
        return result["status"]
    change, p = 100 * result["change"], result["mcnemar_p"]
    interval = f"[{100 * result['change_low']:+.1f}, {100 * result['change_high']:+.1f}]"
    outcome = f"right only in A {result['right_only_in_a']}, only in B {result['right_only_in_b']}; McNemar p = {p:.3g}"
    if result["beyond_chance"]:
        words = f"beyond chance: B is {'better' if change > 0 else 'worse'}"
    elif result["right_only_in_a"] + result["right_only_in_b"] == 0:
        words = "no image changed outcome"
    else:
        words = "within chance: no evidence of a real change"
    note = f" (on the {result['images']} images both judged)" if result["only_in_a"] or result["only_in_b"] else ""
    return (
        f"{100 * result['accuracy_a']:.1f}% -> {100 * result['accuracy_b']:.1f}%, change {change:+.1f} points, "
        f"95% CI {interval}; {outcome}. {words}{note}"
    )


def main(rev_a: str, rev_b: str, as_json: bool) -> None:
    a, b = Revision(rev_a), Revision(rev_b)
    results = {}
    for model, (path, column) in MODELS.items():
        pred_a, pred_b = a.read_csv(path), b.read_csv(path)
        if pred_a is None or pred_b is None:
            missing = " and ".join(r.name for r, p in ((a, pred_a), (b, pred_b)) if p is None)
            results[model] = {"status": f"no {path} at {missing}"}
        elif column not in pred_a or column not in pred_b:
            results[model] = {"status": f"{column} not computed at both revisions"}
        else:
            results[model] = compare_model(pred_a, pred_b, column)
    if as_json:
        print(json.dumps({"a": rev_a, "b": rev_b, "models": results}, indent=2))
        return
    print(f"A = {rev_a}, B = {rev_b}")
    width = max(map(len, results))
    for model, result in results.items():
        print(f"{model:<{width}}  {verdict(result)}")


def cli(argv: list[str] | None = None) -> None:
    parser = stage.parser(__doc__, [], prog="python -m stages.compare")
    parser.add_argument("rev_a", nargs="?", default="HEAD", help="first revision (default: HEAD)")
    parser.add_argument("rev_b", nargs="?", default=WORKSPACE, help=f"second revision (default: the {WORKSPACE})")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    stage.guarded(lambda: main(args.rev_a, args.rev_b, args.json))


if __name__ == "__main__":
    cli(sys.argv[1:])
