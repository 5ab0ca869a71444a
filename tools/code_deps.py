"""dvc.yaml's code deps, derived from the imports: each stage depends on its module, the packages above it and every
``stages`` module it imports, transitively (a docstring-only file changes no result and is nobody's dep).

    python tools/code_deps.py           rewrite the ``stages/...`` lines of each stage's deps in dvc.yaml
    python tools/code_deps.py --check   exit 1, listing what differs, if dvc.yaml is not what the imports say

Only the ``- stages/...`` lines change; data deps, comments and layout stay as written.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DVC_YAML = ROOT / "dvc.yaml"
CODE_LINE = re.compile(r"^(\s+)- (stages/\S+)$")
STAGE_LINE = re.compile(r"^  (\w+):$")


def module_file(module: str) -> Path:
    path = ROOT / (module.replace(".", "/") + ".py")
    return path if path.is_file() else ROOT / module.replace(".", "/") / "__init__.py"


def has_code(path: Path) -> bool:
    """False for a docstring-only file, which can change no result."""
    body = ast.parse(path.read_text()).body
    return not all(isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) for node in body)


def direct_imports(module: str) -> set[str]:
    """The ``stages.*`` modules ``module`` imports itself, anywhere in its file (a function's late import too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(module_file(module).read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "stages":
            # ``from stages.pets import model`` imports a module; ``from stages.pets import ARCHS`` a name
            names |= {
                f"{node.module}.{alias.name}" if module_file(f"{node.module}.{alias.name}").is_file() else node.module
                for alias in node.names
            }
        elif isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names if alias.name.split(".")[0] == "stages"}
    return names


def imported_modules(module: str, seen: set[str] | None = None) -> set[str]:
    """``module``, the packages above it (their ``__init__`` runs first) and every ``stages.*`` module it imports,
    transitively."""
    seen = seen if seen is not None else set()
    if module in seen:
        return seen
    seen.add(module)
    parts = module.split(".")
    for i in range(1, len(parts)):
        imported_modules(".".join(parts[:i]), seen)
    for name in direct_imports(module):
        imported_modules(name, seen)
    return seen


def stage_module(cmd: str) -> str:
    words = cmd.split()
    if words[:2] != ["python", "-m"]:
        raise SystemExit(f"dvc.yaml: {cmd!r}: a stage runs as 'python -m stages.<name>'")
    return words[2]


def code_deps(module: str) -> list[str]:
    """The stage's own file first, then the rest sorted."""
    files = {module_file(m) for m in imported_modules(module)}
    paths = sorted(str(f.relative_to(ROOT)) for f in files if has_code(f))
    own = str(module_file(module).relative_to(ROOT))
    return [own] + [p for p in paths if p != own]


def expected() -> dict[str, list[str]]:
    stages = yaml.safe_load(DVC_YAML.read_text())["stages"]
    return {name: code_deps(stage_module(stage.get("do", stage)["cmd"])) for name, stage in stages.items()}


def rewrite(text: str, deps: dict[str, list[str]]) -> str:
    """``text`` with each stage's run of ``- stages/...`` lines replaced by ``deps[stage]``."""
    out, stage, done = [], None, set()
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        match = STAGE_LINE.match(lines[i])
        if match:
            stage = match.group(1)
        code = CODE_LINE.match(lines[i])
        if code and stage in deps and stage not in done:
            while i < len(lines) and CODE_LINE.match(lines[i]):
                i += 1
            out += [f"{code.group(1)}- {path}" for path in deps[stage]]
            done.add(stage)
            continue
        out.append(lines[i])
        i += 1
    missing = set(deps) - done
    if missing:
        raise SystemExit(f"dvc.yaml: stages {sorted(missing)} list no 'stages/...' dep to replace; add one line first")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only check; exit 1 if dvc.yaml differs")
    args = parser.parse_args(argv)
    text = DVC_YAML.read_text()
    new = rewrite(text, expected())
    if new == text:
        return 0
    if args.check:
        print(
            "dvc.yaml: the code deps are not as tools/code_deps.py writes them (the list or its order); run "
            "'python tools/code_deps.py'",
            file=sys.stderr,
        )
        old, now = yaml.safe_load(text)["stages"], yaml.safe_load(new)["stages"]
        for name in now:
            was = [d for d in old[name].get("do", old[name])["deps"] if d.startswith("stages/")]
            should = [d for d in now[name].get("do", now[name])["deps"] if d.startswith("stages/")]
            if was != should:
                print(
                    f"dvc.yaml: {name}: code deps differ from the imports: add {sorted(set(should) - set(was))}, "
                    f"remove {sorted(set(was) - set(should))}; run 'python tools/code_deps.py'",
                    file=sys.stderr,
                )
        return 1
    DVC_YAML.write_text(new)
    print(f"rewrote the code deps of {DVC_YAML.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
