from pathlib import Path

import pytest
import yaml

from stages.check_params import SCHEMA
from stages.core import params
from stages.core.stage import UserError

DEFAULTS = (Path(__file__).resolve().parents[1] / "params.yaml").read_text()


def write(tmp_path: Path, edit=None) -> Path:
    tree = yaml.safe_load(DEFAULTS)
    if edit:
        edit(tree)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def test_load_returns_exactly_the_declared_keys(tmp_path):
    path = write(tmp_path)
    assert params.load(["source", "mnist.digits"], path, schema=SCHEMA) == {"source": "sample", "mnist.digits": [3, 7]}


def test_missing_key_is_one_error_naming_file_and_key(tmp_path):
    path = write(tmp_path, lambda t: t["mnist"].pop("digits"))
    with pytest.raises(UserError, match=r"params.yaml: mnist.digits: missing"):
        params.load(["mnist.seed"], path, schema=SCHEMA)


def test_a_scalar_where_a_section_belongs_is_an_error(tmp_path):
    path = write(tmp_path, lambda t: t.update(mnist=3))
    with pytest.raises(UserError, match="params.yaml: mnist: 3 is not allowed; expected a mapping"):
        params.load(["mnist.seed"], path, schema=SCHEMA)


def test_a_stage_checks_the_blocks_it_reads_and_check_params_the_whole_file(tmp_path):
    """A chapter-4 stage reads no chapter-5 block, so it neither checks nor depends on chapter 5's schema; the
    pipeline's first stage, check_params, checks every block and refuses an unknown one."""
    path = write(tmp_path, lambda t: (t["pets"].update(valid_pct=1.5), t.update(extra=1)))
    assert params.load(["mnist.seed"], path, schema=SCHEMA) == {"mnist.seed": 42}
    with pytest.raises(
        UserError, match=r"params.yaml: extra: unknown key at the top level.*pets.valid_pct: 1.5 is not allowed"
    ):
        params.load([], path, schema=SCHEMA, whole=True)
    with pytest.raises(UserError, match=r"params.yaml: pets.valid_pct: 1.5 is not allowed"):
        params.load(["pets.seed"], path, schema=SCHEMA)


def test_invalid_yaml_is_a_user_error(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("mnist: [1, 2\n")
    with pytest.raises(UserError, match="not valid YAML"):
        params.load(["mnist"], path)


def test_missing_file_says_where_to_run_from(tmp_path):
    with pytest.raises(UserError, match="not found"):
        params.load(["source"], tmp_path / "params.yaml")


def test_a_stage_reading_one_block_of_a_rule_checks_the_rule_whole(tmp_path):
    """train_pets reads pets_model, not pets; run on its own it still refuses a crop larger than the presize."""
    path = write(tmp_path, lambda t: t["pets_model"].update(size=500))
    with pytest.raises(UserError, match=r"pets_model.size: 500 is not allowed; expected at most pets.presize"):
        params.load(["pets_model.size"], path, schema=SCHEMA)
