"""dvc.yaml declares, for every stage, exactly the params keys and code files the stage reads."""

import importlib
from pathlib import Path

import pytest
import yaml

from stages.core.schema import CORE
from tools import code_deps

ROOT = Path(__file__).resolve().parents[1]
DVC_YAML = yaml.safe_load((ROOT / "dvc.yaml").read_text())
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())


def expand(stages: dict) -> dict:
    """Stages as DVC sees them: a ``foreach`` definition becomes ``name@item`` with ``${item}`` filled in."""
    expanded = {}
    for name, stage in stages.items():
        if "foreach" not in stage:
            expanded[name] = stage
            continue
        for item in stage["foreach"]:
            text = yaml.safe_dump(stage["do"]).replace("${item}", str(item))
            expanded[f"{name}@{item}"] = {**yaml.safe_load(text), "item": item}
    return expanded


STAGES = expand(DVC_YAML["stages"])
USER_COMMANDS = {"predict", "compare", "review"}  # modules in stages/ that are not stages


def stage_module(stage: dict) -> str:
    cmd = stage["cmd"].split()
    assert cmd[:2] == ["python", "-m"], stage["cmd"]
    return cmd[2]


def declared_params(stage: dict, module) -> list[str]:
    """The module's PARAMS, with ``{model}`` filled in for stages generated per model."""
    return [key.format(model=stage.get("item")) for key in module.PARAMS]


def flat_keys(tree: dict, prefix: str = "") -> set[str]:
    return {prefix + key for key in tree}


def covered(key: str, declared: list[str]) -> bool:
    return any(key == d or key.startswith(d + ".") for d in declared)


WHOLE_FILE = "check_params"  # the one stage that reads every key of params.yaml


@pytest.mark.parametrize("name", sorted(STAGES))
def test_params_are_exactly_what_the_stage_reads(name):
    module = importlib.import_module(stage_module(STAGES[name]))
    expected = [{"params.yaml": None}] if name == WHOLE_FILE else declared_params(STAGES[name], module)
    assert STAGES[name].get("params", []) == expected


def out_settings(stage: dict) -> dict[str, dict]:
    entries = stage.get("outs", []) + stage.get("metrics", []) + stage.get("plots", [])
    return {
        next(iter(e)) if isinstance(e, dict) else e: (next(iter(e.values())) if isinstance(e, dict) else {}) or {}
        for e in entries
    }


@pytest.mark.parametrize("name", sorted(STAGES))
def test_every_output_persists_and_every_stage_waits_for_the_params_check(name):
    # persist: DVC never deletes an output before its stage runs, so a rejected edit or a failure loses nothing.
    assert all(settings.get("persist") is True for settings in out_settings(STAGES[name]).values())
    if name != WHOLE_FILE:
        assert STAGES[name]["deps"][0] == "data/params.checked"


@pytest.mark.parametrize("name", sorted(STAGES))
def test_code_deps_are_exactly_the_modules_the_stage_imports(name):
    declared = [d for d in STAGES[name]["deps"] if d.startswith("stages/")]
    assert declared == code_deps.code_deps(stage_module(STAGES[name])), "run: python tools/code_deps.py"


def test_the_code_deps_tool_finds_dvc_yaml_as_the_imports_say_and_says_what_differs(tmp_path, monkeypatch, capsys):
    assert code_deps.main(["--check"]) == 0
    edited = tmp_path / "dvc.yaml"
    edited.write_text((ROOT / "dvc.yaml").read_text().replace("      - stages/core/cpu.py\n", "", 1))
    monkeypatch.setattr(code_deps, "DVC_YAML", edited)
    assert code_deps.main(["--check"]) == 1
    assert "check_params: code deps differ from the imports: add ['stages/core/cpu.py']" in capsys.readouterr().err
    assert code_deps.main([]) == 0 and edited.read_text() == (ROOT / "dvc.yaml").read_text()


@pytest.mark.parametrize("name", sorted(STAGES))
def test_each_stage_knows_the_schema_of_every_block_it_reads(name):
    module = importlib.import_module(stage_module(STAGES[name]))
    blocks = {key.split(".")[0] for key in declared_params(STAGES[name], module)}
    assert blocks <= set((CORE | module.SCHEMA).blocks)


def module_graph() -> dict[str, set[str]]:
    """Every module under stages/ and the stages modules it imports itself."""
    names = [
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for p in sorted((ROOT / "stages").rglob("*.py"))
    ]
    return {name: code_deps.direct_imports(name) for name in names}


def test_the_house_has_no_upward_import_and_no_circle():
    """core imports only core; the chapters and the learner never import the stage modules above them; and no
    module reaches itself through its imports."""
    graph = module_graph()
    for name, imports in graph.items():
        if name.startswith("stages.core"):
            assert all(m.startswith("stages.core") for m in imports), (name, imports)
        if name.count(".") >= 2:  # inside a room: nothing from the top level (stage modules)
            assert all(
                m.count(".") >= 1 and m.split(".")[1] in ("core", "mnist", "pets", "learner") for m in imports
            ), (name, imports)
    for start in graph:
        stack, seen = list(graph[start]), set()
        while stack:
            module = stack.pop()
            assert module != start, f"{start} imports itself through {sorted(seen)}"
            if module not in seen:
                seen.add(module)
                stack += graph.get(module, ())


def test_stages_top_level_is_one_module_per_stage_plus_user_commands():
    stage_modules = {stage_module(stage).split(".", 1)[1] for stage in STAGES.values()}
    top_level = {p.stem for p in (ROOT / "stages").glob("*.py")} - {"__init__"}
    assert top_level - stage_modules <= USER_COMMANDS
    assert stage_modules <= top_level
    assert {name.split("@")[0] for name in STAGES} == stage_modules  # named as the stage


def lookup(dotted: str):
    node = PARAMS
    for part in dotted.split("."):
        node = node[part]
    return node


def test_every_declared_key_exists_and_every_param_is_read_by_a_stage():
    declared = [key for stage in STAGES.values() for key in stage.get("params", []) if isinstance(key, str)]
    for key in declared:
        lookup(key)
    leaves = []

    def walk(node, prefix):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        else:
            leaves.append(prefix[:-1])

    walk(PARAMS, "")
    unread = [leaf for leaf in leaves if not covered(leaf, declared)]
    assert unread == [], f"params.yaml keys no stage declares: {unread}"


def test_every_plot_labels_its_axes_and_each_confusion_matrix_is_declared_once():
    """A reviewer reads `dvc plots diff`: no axis reads "y", and no model has its confusion matrix twice."""
    defined = [next(iter(entry.items())) if isinstance(entry, dict) else (entry, None) for entry in DVC_YAML["plots"]]
    for name, spec in defined:
        if spec is not None:  # an image is its own picture; a data plot names what each axis shows
            assert spec.get("x_label") and spec.get("y_label"), f"plot {name!r} has an unlabelled axis"
    images = [name for name, spec in defined if spec is None]
    assert not [name for name in images if "confusion" in name], "a confusion matrix is declared as a Vega plot"
    confusion_sources = [
        next(iter(spec["y"])) + ":" + next(iter(spec["y"].values()))
        for _, spec in defined
        if spec and spec.get("template") == "confusion"
    ]
    assert len(confusion_sources) == len(set(confusion_sources)) == 6  # pixel L1, L2, three MNIST models, Pets


def test_the_only_declared_metrics_are_the_summary():
    declared = [path for stage in STAGES.values() for entry in stage.get("metrics", []) for path in entry]
    assert declared == ["metrics/summary.json"] and "metrics" not in DVC_YAML
