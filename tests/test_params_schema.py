import copy
from pathlib import Path

import pytest
import yaml

from stages.check_params import SCHEMA
from stages.core import schema as params_schema
from stages.core.stage import UserError

DEFAULTS = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())


def test_the_default_params_are_valid():
    params_schema.validate(DEFAULTS, SCHEMA)


def test_every_problem_is_reported_with_the_first_on_the_line():
    tree = copy.deepcopy(DEFAULTS)
    tree["pets"]["valid_pct"] = 0
    tree["lr_find"]["num_it"] = 2
    with pytest.raises(UserError) as err:
        params_schema.validate(tree, SCHEMA)
    message = str(err.value)
    assert message.startswith("params.yaml: pets.valid_pct: 0 is not allowed") and "lr_find.num_it" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("mnist.valid_pct", True),
        ("pets.standin.images_per_breed", 1.5),
        ("interpret.min_val", 0),
        ("pets.download.files", {"a": "xyz"}),
        ("mnist.download.mirrors", ["ftp://x/"]),
    ],
)
def test_wrong_types_and_values(key, value):
    tree = copy.deepcopy(DEFAULTS)
    node = tree
    *parents, leaf = key.split(".")
    for part in parents:
        node = node[part]
    node[leaf] = value
    with pytest.raises(UserError, match=f"params.yaml: {key}: "):
        params_schema.validate(tree, SCHEMA)


def test_missing_and_unknown_top_level_keys():
    tree = copy.deepcopy(DEFAULTS)
    del tree["interpret"]
    tree["sorce"] = "full"
    with pytest.raises(UserError, match="sorce: unknown key at the top level"):
        params_schema.validate(tree, SCHEMA)
