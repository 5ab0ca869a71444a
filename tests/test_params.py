import pytest

from stages import params
from stages.cli import UserError


def test_load_returns_exactly_the_declared_keys(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("source: sample\nmnist:\n  digits: [3, 7]\n  seed: 1\n")
    assert params.load(["source", "mnist.digits"], path) == {"source": "sample", "mnist.digits": [3, 7]}


def test_missing_key_is_one_error_naming_file_and_key(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("mnist:\n  seed: 1\n")
    with pytest.raises(UserError, match=r"params.yaml: missing key 'mnist.digits'"):
        params.load(["mnist.digits"], path)


def test_key_below_a_scalar_is_missing(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("mnist: 3\n")
    with pytest.raises(UserError, match="mnist.digits"):
        params.load(["mnist.digits"], path)


def test_invalid_yaml_is_a_user_error(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("mnist: [1, 2\n")
    with pytest.raises(UserError, match="not valid YAML"):
        params.load(["mnist"], path)
