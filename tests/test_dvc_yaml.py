"""dvc.yaml declares, for every stage, exactly the params keys and code files the stage reads."""

import ast
import importlib
from pathlib import Path

import pytest
import yaml

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
USER_COMMANDS = {"predict", "compare"}  # modules in stages/ that are not stages


def stage_module(stage: dict) -> str:
    cmd = stage["cmd"].split()
    assert cmd[:2] == ["python", "-m"], stage["cmd"]
    return cmd[2]


def declared_params(stage: dict, module) -> list[str]:
    """The module's PARAMS, with ``{model}`` filled in for stages generated per model."""
    return [key.format(model=stage.get("item")) for key in module.PARAMS]


def module_file(module: str) -> Path:
    path = ROOT / (module.replace(".", "/") + ".py")
    return path if path.is_file() else ROOT / module.replace(".", "/") / "__init__.py"


def has_code(path: Path) -> bool:
    """False for a docstring-only file, which can change no result (such package __init__s are nobody's dep)."""
    body = ast.parse(path.read_text()).body
    return not all(isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) for node in body)


def imported_stage_modules(module: str, seen: set[str] | None = None) -> set[str]:
    """``module``, the packages above it (their ``__init__`` runs first) and every ``stages.*`` module it
    imports, transitively."""
    seen = seen if seen is not None else set()
    if module in seen:
        return seen
    seen.add(module)
    parts = module.split(".")
    for i in range(1, len(parts)):
        imported_stage_modules(".".join(parts[:i]), seen)
    for node in ast.walk(ast.parse(module_file(module).read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "stages":
            # ``from stages.pets import model`` imports a module; ``from stages.pets import ARCHS`` a name
            names = [f"{node.module}.{a.name}" if module_file(f"{node.module}.{a.name}").is_file() else node.module
                     for a in node.names]  # fmt: skip
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.split(".")[0] == "stages"]
        else:
            continue
        for name in names:
            imported_stage_modules(name, seen)
    return seen


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
    return {next(iter(e)) if isinstance(e, dict) else e: (next(iter(e.values())) if isinstance(e, dict) else {}) or {}
            for e in entries}  # fmt: skip


@pytest.mark.parametrize("name", sorted(STAGES))
def test_every_output_persists_and_every_stage_waits_for_the_params_check(name):
    # persist: DVC never deletes an output before its stage runs, so a rejected edit or a failure loses nothing.
    assert all(settings.get("persist") is True for settings in out_settings(STAGES[name]).values())
    if name != WHOLE_FILE:
        assert STAGES[name]["deps"][0] == "data/params.checked"


@pytest.mark.parametrize("name", sorted(STAGES))
def test_code_deps_are_exactly_the_modules_the_stage_imports(name):
    module = stage_module(STAGES[name])
    files = {module_file(m) for m in imported_stage_modules(module)}
    code = sorted(str(f.relative_to(ROOT)) for f in files if has_code(f))
    declared = sorted(d for d in STAGES[name]["deps"] if d.startswith("stages/"))
    assert declared == code, "deps for dvc.yaml:\n" + "\n".join(f"- {c}" for c in code)


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
