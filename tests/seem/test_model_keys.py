"""The full SEEM v1 models have exactly the official state-dict keys, shapes, dtypes and order."""

import json
from pathlib import Path

import pytest
import torch

from vos.errors import CheckpointError
from vos.seem.config import SeemConfig
from vos.seem.model import SeemModel, load_seem


def _entries(model: torch.nn.Module) -> list[list]:
    return [[k, list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in model.state_dict().items()]


@pytest.mark.parametrize(("key_file", "variant"),
                         [("keys_focalt_v1.json", "focalt"), ("keys_focall_v1.json", "focall")])
def test_full_model_keys_shapes_dtypes(seem_fixtures: Path, key_file: str, variant: str) -> None:
    with torch.device("meta"):  # structure only: no memory, fast
        model = SeemModel(SeemConfig.from_variant(variant))
    expected = json.loads((seem_fixtures / key_file).read_text())
    got = _entries(model)
    assert [e[0] for e in got] == [e[0] for e in expected]  # same keys in the same order
    assert got == expected  # and the same shapes and dtypes
    # the persistent buffers are part of the layout; the normalisation constants are not
    assert "dilation_kernel" in model.state_dict() and "criterion.empty_weight" in model.state_dict()
    assert "pixel_mean" not in model.state_dict()


def test_tiny_config_matches_tiny_weights(seem_fixtures: Path) -> None:
    config = SeemConfig.from_official_yaml(seem_fixtures / "tiny_config.yaml")
    assert config.decoder.num_layers == 3 and config.decoder.num_queries == 21
    with torch.device("meta"):
        model = SeemModel(config)
    weights = torch.load(seem_fixtures / "tiny_weights.pt", map_location="cpu")
    expected = [(k, tuple(v.shape)) for k, v in weights.items()]
    assert [(k, tuple(v.shape)) for k, v in model.state_dict().items()] == expected


def test_buffers_have_official_values(seem_tiny_model: SeemModel) -> None:
    state = seem_tiny_model.state_dict()
    assert torch.equal(state["dilation_kernel"], torch.ones(1, 1, 3, 3))
    expected = torch.ones(134)
    expected[-1] = 0.1
    assert torch.equal(state["criterion.empty_weight"], expected)


def test_load_rejects_wrong_variant(seem_fixtures: Path) -> None:
    with pytest.raises(CheckpointError):
        load_seem(seem_fixtures / "tiny_weights.pt", "focalt", vocabulary=False)


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError):
        load_seem(tmp_path / "nope.pt", "focalt", vocabulary=False)
