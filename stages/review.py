"""A review report for a change: what it did to each figure, whether that is beyond chance, and what changed.

    python -m stages.review [BASE] [HEAD] [--out DIR]

BASE defaults to main and HEAD to the workspace; either may be a commit, a branch, a tag or a ``dvc exp``
experiment name. Writes DIR/report.md (default review/report.md, git-ignored), Markdown for a pull-request comment:

- the headline figures of metrics/summary.json at both revisions, each with its 95% interval, and the change;
- per model, the paired test on the same validation images (``python -m stages.compare BASE HEAD``), in a sentence;
- the params that changed (params.yaml at both revisions);
- the plots whose data changed, drawn by ``dvc plots diff`` into DIR/plots/index.html (a workflow attaches DIR).

.github/workflows/review.yml runs it on every pull request, after ``dvc pull`` and ``dvc repro``, and posts
report.md as a comment, as DVC's CML does. Reads (at each revision): params.yaml, dvc.yaml, metrics/. Writes DIR only.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from stages import compare
from stages.core import atomic, stage

PARAMS_FILE = "params.yaml"
DEFAULT_OUT = Path("review")


def flat(tree: dict, prefix: str = "") -> dict:
    """params.yaml as ``{dotted.key: value}``; a list is one value."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out |= flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def changed_params(a: compare.Revision, b: compare.Revision) -> list[tuple[str, object, object]]:
    import yaml

    old, new = (
        {} if r is None else flat(yaml.safe_load(r) or {})
        for r in (a.read_bytes(PARAMS_FILE), b.read_bytes(PARAMS_FILE))
    )
    return [
        (key, old.get(key, "—"), new.get(key, "—"))
        for key in sorted(old.keys() | new.keys())
        if old.get(key) != new.get(key)
    ]


def plot_sources(b: compare.Revision) -> dict[str, list[str]]:
    """Each plot dvc.yaml declares (at ``b``) and the files it draws from."""
    import yaml

    declared = yaml.safe_load(b.read_bytes("dvc.yaml") or b"{}").get("plots", [])
    sources = {}
    for entry in declared:
        if isinstance(entry, str):
            sources[entry] = [entry]
            continue
        ((name, spec),) = entry.items()
        y = (spec or {}).get("y", name)
        sources[name] = sorted(y) if isinstance(y, dict) else [name]
    return sources


def changed_plots(a: compare.Revision, b: compare.Revision) -> list[str]:
    return [name for name, files in plot_sources(b).items() if any(a.read_bytes(f) != b.read_bytes(f) for f in files)]


def figure(summary: dict | None, key: str) -> str:
    if summary is None or key not in summary:
        return "—"
    if f"{key}_low" in summary:
        return f"{summary[key]:.4f} [{summary[key + '_low']:.3f}, {summary[key + '_high']:.3f}]"
    return f"{summary[key]:.4f}"


def headline_table(a: compare.Revision, b: compare.Revision) -> list[str]:
    old, new = a.read_json(compare.SUMMARY), b.read_json(compare.SUMMARY)
    keys = [k for k in {**(old or {}), **(new or {})} if not k.endswith(("_low", "_high"))]
    lines = [f"| figure | {a.name} [95% interval] | {b.name} [95% interval] | change |", "|---|---|---|---|"]
    for key in keys:
        change = "—"
        if old and new and key in old and key in new:
            difference = new[key] - old[key]
            proportion = key.endswith(("accuracy", "error_rate"))  # in points of a percentage, as compare says
            change = f"{100 * difference:+.1f} points" if proportion else f"{difference:+.4f}"
        lines.append(f"| `{key}` | {figure(old, key)} | {figure(new, key)} | {change} |")
    return lines


def draw_plots(a: compare.Revision, b: compare.Revision, out: Path) -> str:
    """``dvc plots diff`` of the two revisions into ``out``; what it says if it cannot."""
    revisions = [a.sha or compare.WORKSPACE] + ([b.sha] if b.sha else [])
    result = subprocess.run(["dvc", "plots", "diff", *revisions, "-o", str(out)], capture_output=True, text=True)
    last = (result.stderr.strip().splitlines() or ["no message"])[-1]
    return "" if result.returncode == 0 else f" (`dvc plots diff` failed: {last})"


def render(a: compare.Revision, b: compare.Revision, plots_note: str, plots_dir: Path) -> str:
    lines = [f"# Review: {a.name} → {b.name}", "", "## Headline figures", ""]
    lines += headline_table(a, b)
    lines += [
        "",
        "Each interval is Wilson's 95% interval on the validation set; a change inside both may be chance.",
        "",
        "## Image by image: is the change beyond chance?",
        "",
        "Each model's two revisions on the same validation images: Newcombe's 95% interval on the change in accuracy",
        "and the exact McNemar test (`python -m stages.compare`). One seed each: for recipe against recipe over seeds,",
        "`python -m stages.compare --a ... --b ...` (docs/reviewing.md).",
        "",
    ]
    for model, result in compare.compare_all(a, b).items():
        lines.append(f"- **{model}**: {compare.verdict(result)}")
    params = changed_params(a, b)
    lines += ["", "## Params changed", ""]
    if params:
        lines += [f"| param | {a.name} | {b.name} |", "|---|---|---|"]
        lines += [f"| `{key}` | {old} | {new} |" for key, old, new in params]
    else:
        lines.append("None.")
    plots = changed_plots(a, b)
    lines += ["", "## Plots changed", ""]
    if plots:
        lines.append(f"Drawn side by side in `{plots_dir}/index.html`{plots_note}:")
        lines += ["", *(f"- {name}" for name in plots)]
    else:
        lines.append("None.")
    return "\n".join(lines) + "\n"


def main(base: str, head: str, out: Path) -> None:
    a, b = compare.Revision(base), compare.Revision(head)
    with atomic.output_dir(out) as tmp:
        note = draw_plots(a, b, tmp / "plots")
        (tmp / "report.md").write_text(render(a, b, note, out / "plots"))
    print(f"review: {out / 'report.md'}")


def cli(argv: list[str] | None = None) -> None:
    parser = stage.parser(__doc__, [], prog="python -m stages.review")
    parser.add_argument("base", nargs="?", default="main", help="the revision under review is compared with (main)")
    parser.add_argument(
        "head", nargs="?", default=compare.WORKSPACE, help=f"the revision under review ({compare.WORKSPACE})"
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"folder for report.md and plots/ ({DEFAULT_OUT})"
    )
    args = parser.parse_args(argv)
    stage.guarded(lambda: main(args.base, args.head, args.out))


if __name__ == "__main__":
    cli(sys.argv[1:])
