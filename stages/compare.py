"""Is B better than A? Two revisions image by image, or two recipes over several seeds each.

    python -m stages.compare [REV_A] [REV_B] [--json]
    python -m stages.compare --a REV [REV ...] --b REV [REV ...] [--json]

REV_A defaults to HEAD and REV_B to the workspace. A revision is anything Git or DVC names: a commit, a branch, a
tag, or a ``dvc exp`` experiment name. For each model this prints the change in accuracy from A to B on the images
both revisions judged, a 95% interval on that change (Newcombe's method for paired proportions), and the exact
McNemar test on the images whose outcome changed, and says in words whether the change is beyond chance.

With ``--a`` and ``--b``, each a group of runs of one recipe (experiments that differ only in their seed, say
``pets_model.seed``: docs/reviewing.md shows how to queue them), it compares each headline figure of
metrics/summary.json: the difference of the group means with a 95% interval that counts both the seed-to-seed
variance within each group and the validation images (from the per-image predictions, where the figure has them),
and says whether the evidence is enough. Two runs a side is the least it accepts; five is a fair start.

Reads (at each revision): metrics/summary.json, metrics/baseline/predictions.csv,
metrics/mnist/<model>/predictions.csv, metrics/pets/interpret/predictions.csv. Writes nothing.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from stages.core import stage

if TYPE_CHECKING:  # pandas loads in main, after the command line is parsed: --help answers at once
    import pandas as pd

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
SUMMARY = "metrics/summary.json"
# headline figure of metrics/summary.json -> the model whose per-image predictions it counts
PER_IMAGE = {
    "pets_error_rate": "pets",
    "mnist_linear_accuracy": "mnist linear",
    "mnist_simple_net_accuracy": "mnist simple_net",
    "mnist_resnet18_accuracy": "mnist resnet18",
    "mnist_pixel_l1_accuracy": "pixel similarity (l1)",
    "mnist_pixel_l2_accuracy": "pixel similarity (l2)",
}
LOWER_IS_BETTER = {"pets_error_rate"}


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

    def read_bytes(self, path: str) -> bytes | None:
        if self.sha is None:
            return Path(path).read_bytes() if Path(path).is_file() else None
        fs = self._repo.scm.get_fs(self.sha)
        if not fs.isfile(path):
            return None
        with fs.open(path, "rb") as f:
            return f.read()

    def read_csv(self, path: str) -> pd.DataFrame | None:
        import pandas as pd

        data = self.read_bytes(path)
        return None if data is None else pd.read_csv(io.BytesIO(data), dtype={"item": str})

    def read_json(self, path: str) -> dict | None:
        data = self.read_bytes(path)
        try:
            return None if data is None else json.loads(data)
        except ValueError as exc:
            raise stage.UserError(f"{path} at {self.name}: not JSON ({exc})") from None


def compare_model(a: pd.DataFrame, b: pd.DataFrame, column: str) -> dict:
    """Pair the two revisions' predictions on the images both judged, and test the change."""
    from stages.core.stats import paired

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


def per_image_outcomes(runs: list[Revision], model: str):
    """Each run's right (1) or wrong (0) per image, (runs, images), on the images every run judged; None if a run has
    no predictions for the model or the runs judged different labels."""
    import pandas as pd

    path, column = MODELS[model]
    tables = [run.read_csv(path) for run in runs]
    if any(t is None or column not in t for t in tables):
        return None
    merged = tables[0][["item", "actual"]]
    for i, table in enumerate(tables):
        merged = merged.merge(table[["item", "actual", column]].rename(columns={column: f"p{i}", "actual": f"a{i}"}))
    if merged.empty or any((merged[f"a{i}"] != merged["actual"]).any() for i in range(len(tables))):
        return None
    return pd.concat([merged[f"p{i}"] == merged["actual"] for i in range(len(tables))], axis=1).T.to_numpy(int)


def compare_groups(group_a: list[Revision], group_b: list[Revision]) -> dict:
    """Each headline figure of metrics/summary.json, group B against group A."""
    from stages.core.stats import seed_groups

    summaries = {run: run.read_json(SUMMARY) for run in group_a + group_b}
    missing = [run.name for run, summary in summaries.items() if summary is None]
    if missing:
        raise stage.UserError(f"{SUMMARY}: none at {', '.join(missing)} (run 'dvc repro' or 'dvc exp run' there)")
    keys = dict.fromkeys(k for summary in summaries.values() for k in summary)  # every run's, in the order first seen
    results = {}
    for key in (k for k in keys if not k.endswith(("_low", "_high"))):
        lacking = [run.name for run, summary in summaries.items() if key not in summary]
        if lacking:
            results[key] = {"status": f"not computed at {', '.join(lacking)}"}
            continue
        a = [summaries[run][key] for run in group_a]
        b = [summaries[run][key] for run in group_b]
        model = PER_IMAGE.get(key)
        outcomes = per_image_outcomes(group_a + group_b, model) if model else None
        if outcomes is None:
            comparison = seed_groups(a, b)
        else:
            comparison = seed_groups(a, b, outcomes[: len(group_a)], outcomes[len(group_a) :])
        low, high = comparison.interval()
        sd_a, sd_b = comparison.seed_sd
        results[key] = {
            "status": "compared",
            "runs_a": len(a),
            "runs_b": len(b),
            "mean_a": round(sum(a) / len(a), 6),
            "mean_b": round(sum(b) / len(b), 6),
            "seed_sd_a": round(sd_a, 6),
            "seed_sd_b": round(sd_b, 6),
            # + 0.0: a difference of a few ulps rounds to -0.0, which would print as "-0.0"
            "difference": round(comparison.difference, 6) + 0.0,
            "difference_low": round(low, 6) + 0.0,
            "difference_high": round(high, 6) + 0.0,
            "images": comparison.images,
            "image_variance": comparison.image_variance,
            "lower_is_better": key in LOWER_IS_BETTER,
        }
    return results


def group_verdict(key: str, result: dict) -> str:
    if result["status"] != "compared":
        return result["status"]
    # proportions read in percent and points, anything else as it is
    scale, unit, digits = (100, " points", 1) if key.endswith(("accuracy", "error_rate")) else (1, "", 4)
    shown = {k: f"{scale * v:.{digits}f}" for k, v in result.items() if isinstance(v, float) and k != "image_variance"}
    low, high = scale * result["difference_low"], scale * result["difference_high"]
    figures = (
        f"A {shown['mean_a']} (seed sd {shown['seed_sd_a']}), B {shown['mean_b']} (seed sd {shown['seed_sd_b']}): "
        f"B - A {scale * result['difference']:+.{digits}f}{unit}, 95% CI [{low:+.{digits}f}, {high:+.{digits}f}]"
    )
    scope = (
        f"over seeds and the {result['images']} validation images"
        if result["image_variance"] is not None
        else "over seeds only: no per-image figure"
    )
    if result["difference_low"] == result["difference_high"] == 0:
        words = "no difference: every run gave the same figure"
    elif result["difference_low"] == result["difference_high"]:
        words = "cannot tell: each group's runs gave one figure, so the seed-to-seed spread is unknown (other seeds?)"
    elif result["difference_low"] > 0 or result["difference_high"] < 0:
        better = (result["difference_high"] < 0) == result["lower_is_better"]
        words = f"B is {'better' if better else 'worse'}"
    else:
        words = "not enough evidence: the interval includes zero (more seeds a side narrow it)"
    return f"{figures}; {words} ({scope})"


def main_groups(names_a: list[str], names_b: list[str], as_json: bool) -> None:
    group_a, group_b = [Revision(name) for name in names_a], [Revision(name) for name in names_b]
    if len(group_a) < 2 or len(group_b) < 2:
        raise stage.UserError(
            f"--a has {len(group_a)} and --b {len(group_b)} revisions: each group needs at least 2 runs (seeds) "
            "for its seed-to-seed variance, and 5 a side is a fair start"
        )
    results = compare_groups(group_a, group_b)
    heading = f"A = {', '.join(names_a)} ({len(names_a)} runs); B = {', '.join(names_b)} ({len(names_b)} runs)"
    show(heading, results, group_verdict, {"a": names_a, "b": names_b, "figures": results} if as_json else None)


def show(heading: str, results: dict, words, as_json: dict | None) -> None:
    """One line a result, its name padded to the longest; or ``as_json`` as JSON when given."""
    if as_json is not None:
        print(json.dumps(as_json, indent=2))
        return
    print(heading)
    width = max(map(len, results), default=0)
    for name, result in results.items():
        print(f"{name:<{width}}  {words(name, result)}")


def compare_all(a: Revision, b: Revision) -> dict:
    """Every model of ``a`` against ``b``, image by image."""
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
    return results


def main(rev_a: str, rev_b: str, as_json: bool) -> None:
    results = compare_all(Revision(rev_a), Revision(rev_b))
    payload = {"a": rev_a, "b": rev_b, "models": results} if as_json else None
    show(f"A = {rev_a}, B = {rev_b}", results, lambda _, result: verdict(result), payload)


def cli(argv: list[str] | None = None) -> None:
    parser = stage.parser(__doc__, [], prog="python -m stages.compare")
    parser.add_argument("rev_a", nargs="?", help="first revision (default: HEAD)")
    parser.add_argument("rev_b", nargs="?", help=f"second revision (default: the {WORKSPACE})")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--a", nargs="+", metavar="REV", help="group A: runs of one recipe (one per seed)")
    parser.add_argument("--b", nargs="+", metavar="REV", help="group B: runs of the other recipe")
    args = parser.parse_args(argv)
    if (args.a is None) != (args.b is None):
        parser.error("--a and --b go together")
    if args.a is not None:
        if args.rev_a is not None:
            parser.error("give either two revisions or the groups --a and --b, not both")
        stage.guarded(lambda: main_groups(args.a, args.b, args.json))
    else:
        stage.guarded(lambda: main(args.rev_a or "HEAD", args.rev_b or WORKSPACE, args.json))


if __name__ == "__main__":
    cli(sys.argv[1:])
