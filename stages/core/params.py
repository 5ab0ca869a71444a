"""Read declared keys from params.yaml, the single source of truth for every parameter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from stages.core.errors import UserError
from stages.core.schema import CORE, Schema, validate

PARAMS_FILE = Path("params.yaml")


def lookup(tree: dict, dotted_key: str, source: Path) -> Any:
    node: Any = tree
    for part in dotted_key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise UserError(f"{source}: missing key '{dotted_key}'")
        node = node[part]
    return node


def load(keys: list[str], path: Path = PARAMS_FILE, *, schema: Schema = CORE, whole: bool = False) -> dict[str, Any]:
    """Validate the blocks of params.yaml that ``keys`` are in (``whole``: every block, and no unknown one) against
    ``schema``, then return ``{dotted_key: value}`` for exactly ``keys``. There are no defaults here on purpose: a
    stage sees only what params.yaml says.
    """
    try:
        tree = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: not found (run from the project root)") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    blocks = None if whole else {key.split(".")[0] for key in keys}
    validate(tree, schema, blocks=blocks, source=str(path))  # before the stage does any work
    return {key: lookup(tree, key, path) for key in keys}
