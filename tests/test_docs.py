"""What README.md and docs/ show, checked against its source of truth: the committed metrics, dvc.yaml, params.yaml,
with-env, pyproject.toml and the code. Fast, and needs no built project: a figure, a table or a printed line that
goes stale fails here instead of misleading a reader."""

from __future__ import annotations

import ast
import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_dvc_yaml import lookup

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]
DVC_YAML = yaml.safe_load((ROOT / "dvc.yaml").read_text())
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
SUMMARY = json.loads((ROOT / "metrics/summary.json").read_text())
PETS = json.loads((ROOT / "metrics/pets/train/metrics.json").read_text())
MAX_README_LINES = 250


def text(page: Path) -> str:
    return page.read_text()


def rel(page: Path) -> str:
    return str(page.relative_to(ROOT))


def section(page_text: str, heading: str) -> str:
    """The body of the ``## heading...`` section (up to the next heading of the same or a higher level)."""
    match = re.search(rf"^(#+) {re.escape(heading)}.*$", page_text, re.M)
    assert match, f"no heading starting {heading!r}"
    level = len(match.group(1))
    end = re.search(rf"^#{{1,{level}}} ", page_text[match.end() :], re.M)
    return page_text[match.end() : match.end() + end.start() if end else len(page_text)]


def cells(line: str) -> list[str]:
    """A Markdown table row's cells; a ``|`` inside backticks stays in its cell."""
    out, cell, quoted = [], "", False
    for char in line.strip().strip("|"):
        if char == "`":
            quoted = not quoted
        if char == "|" and not quoted:
            out.append(cell.strip())
            cell = ""
        else:
            cell += char
    return [*out, cell.strip()]


def first_table(body: str) -> list[dict[str, str]]:
    lines = [line for line in body.splitlines() if line.startswith("|")]
    assert len(lines) >= 3, "no table"
    header, rows = cells(lines[0]), []
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(header, cells(line), strict=True)))
    return rows


def code_blocks(page_text: str) -> list[str]:
    """Fenced blocks' contents, the fence's indentation (a block inside a list item) taken off each line."""
    blocks = re.findall(r"^( *)```[a-z]*\n(.*?)^\1```", page_text, re.M | re.S)
    return [re.sub(rf"^{indent}", "", body, flags=re.M) for indent, body in blocks]


def decimals(shown: str) -> int:
    return len(shown.split(".")[1]) if "." in shown else 0


def same_figure(shown: str, value: float) -> bool:
    """``shown`` is ``value`` rounded to the decimals it shows."""
    return f"{value:.{decimals(shown)}f}" == shown


# --- README's shape ---------------------------------------------------------------------------------------------------


def test_readme_is_a_front_page_of_at_most_250_lines():
    assert len(text(README).splitlines()) <= MAX_README_LINES


@pytest.mark.parametrize("page", DOCS, ids=rel)
def test_readme_links_every_docs_page_and_it_links_back(page):
    assert f"](docs/{page.name})" in section(text(README), "Documentation"), f"README's index does not link {rel(page)}"
    assert "](../README.md)" in text(page), f"{rel(page)} does not link back to the README"


def test_readme_states_no_test_count_that_could_go_stale():
    assert not re.search(r"\b\d[\d,]* (tests|passed|failed)\b", text(README))


# --- links and paths --------------------------------------------------------------------------------------------------


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    prose = re.sub(r"^```.*?^```", "", text(page), flags=re.M | re.S)
    return {slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", prose, re.M)}


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_every_relative_link_reaches_a_file_and_heading_that_exist(page):
    for target in re.findall(r"\]\(([^)\s]+)\)", text(page)):
        if re.match(r"[a-z]+://", target):
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        assert file.exists(), f"{rel(page)} links {target}: no such file"
        if anchor:
            assert anchor in anchors(file), f"{rel(page)} links {target}: no such heading in {file.name}"


REPO_PATH = re.compile(r"(?<![\w/.-])((?:stages|tests|tools|benchmarks|docs|metrics|\.dvc|\.ci|\.github)/[\w./-]*)")


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_every_repository_path_named_exists(page):
    page_text = text(page)
    for match in REPO_PATH.finditer(page_text):
        path = match.group(1).rstrip(".")
        if page_text[match.end() : match.end() + 1] in ("<", "{", "*", "$"):
            continue  # a pattern such as stages/<name>.py or metrics/mnist/<model>/
        assert (ROOT / path).exists(), f"{rel(page)} names {path}, which does not exist"


def test_the_comments_in_the_ignore_files_name_paths_that_exist():
    for name in (".gitignore", ".dvcignore"):
        for path in re.findall(r"\bsee (stages/\S+\.py)", (ROOT / name).read_text()):
            assert (ROOT / path).is_file(), f"{name} names {path}"


def test_the_rooms_table_lists_every_module_of_each_room():
    rows = first_table(section(text(ROOT / "docs/pipeline.md"), "Code layout"))
    rooms = {p.parent for p in (ROOT / "stages").glob("*/__init__.py")}
    assert {ROOT / backticked(row["room"])[0] for row in rows} == rooms
    for row in rows:
        room = ROOT / backticked(row["room"])[0]
        modules = {p.stem for p in room.glob("*.py") if p.name != "__init__.py"}
        assert set(backticked(row["modules"])) == modules, f"{row['room']}: the table's modules differ from the files"


# --- the two commands and what with-env accepts -----------------------------------------------------------------------


def test_readme_names_the_pythons_with_env_accepts_and_the_two_commands():
    supported = re.search(r'supported="([\d. ]+)"', (ROOT / "with-env").read_text()).group(1).split()
    words = ", ".join(supported[:-1]) + " or " + supported[-1]
    quick = section(text(README), "Quick start")
    assert f"Python {words}" in quick
    assert "or newer" not in text(README)
    assert "./with-env dvc repro" in code_blocks(quick)[0] and "./with-env pytest" in code_blocks(quick)[0]
    assert "./with-env pytest" in (ROOT / ".ci/run").read_text()  # what CI runs is what the README says


def test_readme_data_switch_is_params_source_with_sample_the_default():
    assert PARAMS["source"] == "sample"
    assert "`source: sample|full`" in section(text(README), "Data")


# --- the stages table -------------------------------------------------------------------------------------------------


def stage_rooms(stage: dict) -> set[str]:
    """The rooms (packages under stages/) whose modules a stage runs, read from its code deps. Every stage imports
    each room's ``__init__`` (lists of allowed values) and may import a room's ``schema`` to check params; those are
    not using the room."""
    rooms = set()
    for dep in stage["deps"]:
        parts = Path(dep).parts
        if parts[0] == "stages" and len(parts) == 3 and parts[2] not in ("__init__.py", "schema.py"):
            rooms.add(parts[1])
    return rooms


def backticked(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def as_dvc(token: str) -> str:
    return re.sub(r"<\w+>", "${item}", token)  # the README's <model> is dvc.yaml's ${item}


def test_the_stages_table_is_dvc_yaml_stage_for_stage():
    rows = first_table(section(text(README), "Stages"))
    assert [backticked(row["stage"])[0] for row in rows] == list(DVC_YAML["stages"]), "stages or their order differ"
    for row in rows:
        name, *items = backticked(row["stage"])
        stage = DVC_YAML["stages"][name]
        if "foreach" in stage:
            assert [item.lstrip("@") for item in items] == stage["foreach"], name
            stage = stage["do"]
        params = stage.get("params", [])
        if params == [{"params.yaml": None}]:
            assert row["params it reads"] == "all of `params.yaml`", name
        elif not params:
            assert row["params it reads"] == "—", name
        else:
            assert [as_dvc(token) for token in backticked(row["params it reads"])] == params, name
        writes = as_dvc(row["what it writes"])
        for out in stage.get("outs", []) + stage.get("metrics", []):
            path = next(iter(out)) if isinstance(out, dict) else out
            assert path in writes, f"{name}: the table does not name its output {path}"
        shown_rooms = {room.strip() for room in row["rooms"].split(",")}
        assert shown_rooms == stage_rooms(stage), f"{name}: rooms {shown_rooms}, dvc.yaml deps {stage_rooms(stage)}"


def test_every_stage_module_exists_and_the_commands_named_are_not_stages():
    for name in DVC_YAML["stages"]:
        assert (ROOT / f"stages/{name}.py").is_file()
    for command in ("predict", "compare", "review"):
        assert (ROOT / f"stages/{command}.py").is_file() and command not in DVC_YAML["stages"]


# --- the results table ------------------------------------------------------------------------------------------------


def metrics_of(key: str) -> dict:
    """The per-model metrics file behind a summary key, for the per-digit figures."""
    if key.startswith("mnist_pixel_"):
        distance = key.split("_")[2]
        return json.loads((ROOT / "metrics/baseline/metrics.json").read_text())[distance]
    model = re.match(r"mnist_(\w+?)_accuracy$", key).group(1)
    return json.loads((ROOT / f"metrics/mnist/{model}/metrics.json").read_text())


def book_figures() -> dict[str, float]:
    """``BOOK`` in stages/report.py, read without importing the stage."""
    source = (ROOT / "stages/report.py").read_text()
    return ast.literal_eval(re.search(r"^BOOK = (\{.*?\})$", source, re.M).group(1))


RESULT_MODELS = {  # the words a row's model cell starts with -> the params key its epochs come from
    "linear by hand": ("mnist_models.linear.epochs", r"(\d+) epochs?"),
    "simple net": ("mnist_models.simple_net.epochs", r"(\d+) epochs?"),
    "resnet18,": ("mnist_models.resnet18.epochs", r"(\d+) epochs?"),
    "resnet18 from scratch": ("fine_tune.epochs", r"fine_tune\((\d+)\)"),
}


def test_every_figure_in_the_results_table_is_the_committed_one():
    rows = first_table(section(text(README), "Results"))
    shown_keys = set()
    for row in rows:
        (key,) = backticked(row["`metrics/summary.json` key"])
        shown_keys.add(key)
        figure = re.search(r"(\d\.\d+) \[(\d\.\d+), (\d\.\d+)\]", row["validation figure [95% interval]"])
        assert figure, row
        for shown, suffix in zip(figure.groups(), ("", "_low", "_high")):
            # an interval the summary leaves out (top-5's) is in the model's own file
            value = SUMMARY[key + suffix] if key + suffix in SUMMARY else PETS[key.removeprefix("pets_") + suffix]
            assert same_figure(shown, value), f"{key}{suffix}: README {shown}, committed {value}"
        for digit, shown in re.findall(r"(\d)s (\d\.\d+)", row["validation figure [95% interval]"]):
            value = metrics_of(key)["per_class"][digit]["accuracy"]
            assert same_figure(shown, value), f"{key} on {digit}s: README {shown}, committed {value}"
        data = "metrics/data/pets.json" if key.startswith("pets_") else "metrics/data/mnist.json"
        counts = json.loads((ROOT / data).read_text())
        if key.startswith("pets_"):
            train, valid = counts["splits"]["train"]["images"], counts["splits"]["valid"]["images"]
            assert f"{counts['classes']} breeds" in row["data (train / valid)"]
        else:
            train, valid = counts["train"]["total"], counts["valid"]["total"]
        assert f"({train:,} / {valid:,})" in row["data (train / valid)"], row
        for start, (dotted, pattern) in RESULT_MODELS.items():
            if row["model"].startswith(start):
                assert int(re.search(pattern, row["model"]).group(1)) == lookup(dotted), row["model"]
        book = {"mnist_pixel_l1_accuracy": "pixel_l1", "pets_error_rate": "pets_error_rate"}.get(
            key, key.removeprefix("mnist_").removesuffix("_accuracy")
        )
        if book in book_figures():
            assert str(book_figures()[book]) in row["book (full data)"], f"{key}: the book's figure"
    headline = {key for key in SUMMARY if re.fullmatch(r"mnist_\w+_accuracy", key)} | {"pets_error_rate"}
    assert headline <= shown_keys, f"models missing from the results table: {sorted(headline - shown_keys)}"


def test_the_lr_find_suggestions_quoted_are_the_committed_ones():
    suggestions = json.loads((ROOT / "metrics/pets/lr_find/suggestions.json").read_text())["suggestions"]
    quoted = 0
    for page in PAGES:
        for valley, minimum in re.findall(r"\((\d\.\de-\d+) here,? against `?minimum`?'s (\d\.\de-\d+)", text(page)):
            assert float(valley) == float(f"{suggestions['valley']['lr']:.1e}"), rel(page)
            assert float(minimum) == float(f"{suggestions['minimum']['lr']:.1e}"), rel(page)
            quoted += 1
    assert quoted >= 1
    assert PARAMS["lr_find"]["suggestion"] == "minimum"


# --- printed lines ----------------------------------------------------------------------------------------------------


def params_error_examples() -> list[tuple[Path, str, str, str]]:
    """(page, key, value, the error line shown) for each 'after setting KEY: VALUE in params.yaml' example."""
    found = []
    for page in PAGES:
        for block in code_blocks(text(page)):
            setting = re.search(r"after setting ([\w.]+): (\S+) in params\.yaml", block)
            if setting:
                shown = re.search(r"^error: params\.yaml: .*$", block, re.M).group(0)
                found.append((page, setting.group(1), setting.group(2), shown))
    return found


def test_the_params_error_shown_is_what_check_params_prints(tmp_path):
    examples = params_error_examples()
    assert examples, "no params error example found"
    for page, key, value, shown in examples:
        tree = yaml.safe_load((ROOT / "params.yaml").read_text())
        *parents, leaf = key.split(".")
        node = tree
        for part in parents:
            node = node[part]
        node[leaf] = yaml.safe_load(value)
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(tree, sort_keys=False))
        result = subprocess.run(
            [sys.executable, "-m", "stages.check_params"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert result.returncode == 1, result.stderr
        assert result.stderr.strip() == shown, f"{rel(page)} shows {shown!r}"
        assert not (tmp_path / "data").exists()  # rejected before anything is written


def predict_examples() -> list[tuple[list[str], list[str]]]:
    """(the command's arguments, the lines it printed) for each ``stages.predict`` run a README console block shows."""
    found = []
    for block in code_blocks(text(README)):
        for command, output in re.findall(r"^\$ .*?-m stages\.predict (.*)\n((?:[^$].*\n)*)", block, re.M):
            found.append((command.split(), output.splitlines()))
    return found


def test_the_predictions_shown_are_those_the_pipeline_recorded():
    examples = predict_examples()
    assert len(examples) >= 2, "the Pets and the MNIST example"
    readme = text(README)
    for args, lines in examples:
        model = args[args.index("--model") + 1] if "--model" in args else "pets"
        top_k = int(args[args.index("--top-k") + 1]) if "--top-k" in args else 3
        images = [
            arg
            for i, arg in enumerate(args)
            if not arg.startswith("--") and args[i - 1] not in ("--model", "--top-k", "--device")
        ]
        assert [line.split(": ")[0] for line in lines] == images
        for line in lines:
            image, ranked = line.split(": ", 1)
            pairs = [pair.rsplit(" ", 1) for pair in ranked.split(", ")]
            probabilities = [float(p) for _, p in pairs]
            assert len(pairs) == top_k and probabilities == sorted(probabilities, reverse=True), line
            assert sum(probabilities) <= 1 + 0.0005 * top_k, line
            if model == "pets":
                with open(ROOT / "metrics/pets/interpret/predictions.csv") as f:
                    recorded = {row["item"]: row for row in csv.DictReader(f)}[Path(image).name]
                assert pairs[0][0] == recorded["predicted"], line
                assert same_figure(pairs[0][1], float(recorded["probability"])), line
            else:
                item, digit = re.search(rf"`{re.escape(image)}` is validation item (\d+)\s+\(a (\d)\)", readme).groups()
                with open(ROOT / f"metrics/{model}/predictions.csv") as f:
                    recorded = {row["item"]: row for row in csv.DictReader(f)}[item]
                assert recorded["actual"] == digit and pairs[0][0] == recorded["predicted"], line


# --- tests ------------------------------------------------------------------------------------------------------------


def test_the_markers_the_readme_names_are_pyprojects_and_left_out_by_default():
    pyproject = (ROOT / "pyproject.toml").read_text()
    markers = re.findall(r'^\s+"(\w+): ', pyproject, re.M)
    addopts = re.search(r"^addopts = (.*)$", pyproject, re.M).group(1)
    tests = section(text(README), "Tests")
    assert markers
    for marker in markers:
        assert f"pytest -m {marker}" in tests, marker
        assert f"not {marker}" in addopts, marker


def test_every_test_that_mutation_testing_deselects_exists():
    """pytest ignores a --deselect that matches nothing, so a renamed end-to-end test would silently join mutmut's
    selection and fail there (its stage subprocesses cannot find mutmut's configuration)."""
    import tomllib

    args = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]["pytest_add_cli_args_test_selection"]
    deselected = [args[i + 1] for i, arg in enumerate(args) if arg == "--deselect"]
    assert deselected
    for node in deselected:
        path, name = node.split("::")
        name = name.split("[")[0]  # a parametrized case: its function
        assert re.search(rf"^def {re.escape(name)}\(", (ROOT / path).read_text(), re.M), node


# --- docs/reviewing.md: the committed side of each real transcript ----------------------------------------------------


def console_commands(page: Path) -> dict[str, list[str]]:
    """Each ``$ command`` in the page's console blocks, with the lines it printed."""
    found: dict[str, list[str]] = {}
    for block in code_blocks(text(page)):
        command = None
        for line in block.splitlines():
            if line.startswith("$ "):
                command = line[2:].split("  #")[0].strip()
                found[command] = []
            elif command:
                found[command].append(line)
    return found


def json_value(path: str, dotted: str):
    node = json.loads((ROOT / path).read_text())
    for part in dotted.split("."):
        node = node[part]
    return node


REVIEWING = ROOT / "docs/reviewing.md"


def test_the_head_column_of_the_metrics_diff_shown_is_the_committed_metrics():
    lines = console_commands(REVIEWING)["dvc metrics diff"]
    assert lines[0].split() == ["Path", "Metric", "HEAD", "workspace", "Change"]
    for line in lines[1:]:
        path, metric, head, *_ = line.split()
        assert float(head) == pytest.approx(round(json_value(path, metric), 5), abs=1e-9), line


def exp_show_tables(page_text: str) -> list[list[list[str]]]:
    """Each ``dvc exp show`` table shown, as rows of cells: Markdown ones (``--md``) and the terminal's own."""
    tables = []
    for block in [*code_blocks(page_text), *re.findall(r"^(\| Experiment .*?)\n\n", page_text, re.M | re.S)]:
        lines = block.splitlines()
        if any(line.startswith("| Experiment ") for line in lines):
            tables.append([cells(line) for line in lines if line.startswith("|") and not line.startswith("|--")])
        else:  # the terminal's table: a header row under a rule of box-drawing lines
            heads = [i for i, line in enumerate(lines) if line.strip().startswith("Experiment ") and i > 0]
            heads = [i for i in heads if lines[i - 1].strip().startswith("─")]
            if not heads:
                continue
            start = heads[0]
            rows = [line for line in lines[start:] if line.strip() and not line.strip().startswith(("─", "$"))]
            tables.append([re.split(r"\s{2,}", line.strip()) for line in rows])
    return tables


def test_the_main_rows_of_the_exp_show_tables_are_the_committed_figures_and_params():
    tables = exp_show_tables(text(REVIEWING))
    assert len(tables) >= 2
    for table in tables:
        header, rows = table[0], table[1:]
        main = dict(zip(header, next(row for row in rows if row[0] == "main"), strict=True))
        for column, shown in main.items():
            if column in SUMMARY:
                assert float(shown) == pytest.approx(round(SUMMARY[column], 5), abs=1e-9), column
            elif column.startswith("mnist_models.") or column in PARAMS:
                assert float(shown) == float(lookup(column)), column


COMPARE_KEYS = {
    "pixel similarity (l1)": "mnist_pixel_l1_accuracy",
    "pixel similarity (l2)": "mnist_pixel_l2_accuracy",
    "mnist linear": "mnist_linear_accuracy",
    "mnist simple_net": "mnist_simple_net_accuracy",
    "mnist resnet18": "mnist_resnet18_accuracy",
    "pets": "pets_error_rate",  # compare prints the accuracy: one minus it
}


def test_the_committed_side_of_each_compare_shown_is_the_committed_accuracy():
    checked = 0
    for command, lines in console_commands(REVIEWING).items():
        if not command.startswith("python -m stages.compare") or "--a" in command:
            continue  # the groups' means are checked below
        committed_side = {"A = HEAD,": 0, "A = main,": 0}
        assert any(lines[0].startswith(start) for start in committed_side), lines[0]
        for line in lines[1:]:
            name, rest = re.match(r"(.+?)  +(\d.*)", line).groups()
            shown = re.match(r"([\d.]+)% ->", rest).group(1)
            key = COMPARE_KEYS[name]
            accuracy = 1 - SUMMARY[key] if key.endswith("error_rate") else SUMMARY[key]
            assert same_figure(shown, 100 * accuracy), line
            checked += 1
    assert checked >= len(COMPARE_KEYS)


def test_the_readme_review_commands_are_those_the_reviewing_transcript_ran():
    ran = console_commands(REVIEWING)
    block = code_blocks(section(text(README), "Reviewing a change"))[0]
    commands = [line.split("  #")[0].removeprefix("./with-env ").strip() for line in block.splitlines()]
    assert len(commands) == 5
    for command in commands:
        assert command in ran, f"README's {command!r} is not in docs/reviewing.md's transcript"


def test_the_dag_drawn_in_the_docs_is_dvcs_less_the_params_check():
    drawn = next(block for block in code_blocks(text(ROOT / "docs/pipeline.md")) if block.startswith("flowchart"))
    dag = subprocess.run(["dvc", "dag", "--mermaid"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    lines = [line.strip() for line in dag.splitlines() if line.strip()]
    check = next(m[1] for line in lines if (m := re.match(r'(node\d+)\["check_params"\]', line)))
    expected = [line for line in lines if not re.search(rf"\b{check}\b", line)]
    assert [line.strip() for line in drawn.splitlines() if line.strip()] == expected
    assert len(expected) > 20  # 13 stages and their edges
