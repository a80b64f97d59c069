"""Checkpoint reading (flat / prefixed / wrapped files) and strict loading with clear errors."""

from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from torch import nn

from vos.errors import CheckpointError
from vos.seem.checkpoint import (
    compare_state_dicts,
    load_state_dict_strict,
    read_state_dict,
    strip_common_prefixes,
    sub_state_dict,
)
from vos.seem.text_encoder import LANG_ENCODER_PREFIX, LanguageEncoder, TextEncoderConfig

TINY = TextEncoderConfig(width=64, heads=4, layers=2, proj_dim=64)


@pytest.fixture(scope="module")
def tiny_state(seem_fixtures: Path) -> dict[str, torch.Tensor]:
    return read_state_dict(seem_fixtures / "tiny_weights.pt")


class _WithBuffers(nn.Module):
    """A miniature model owning the two optional top-level buffers, like the full SEEM model."""

    def __init__(self, with_criterion: bool = True) -> None:
        super().__init__()
        self.register_buffer("dilation_kernel", torch.ones(1, 1, 3, 3))
        self.lin = nn.Linear(3, 2)
        if with_criterion:
            self.criterion = nn.Module()
            self.criterion.register_buffer("empty_weight", torch.ones(4))


def _lin_state() -> dict[str, torch.Tensor]:
    return OrderedDict([("lin.weight", torch.randn(2, 3)), ("lin.bias", torch.randn(2))])


# ---- reading -----------------------------------------------------------------------------------------------------
def test_reads_official_flat_file(tiny_state: dict[str, torch.Tensor]) -> None:
    assert len(tiny_state) == 257
    assert next(iter(tiny_state)) == "dilation_kernel" and "criterion.empty_weight" in tiny_state
    assert tiny_state["sem_seg_head.predictor.lang_encoder.logit_scale"].shape == ()


@pytest.mark.parametrize("layout", ["model.", "module.model.", "module.", "wrapped_module", "wrapped_state_dict"])
def test_reads_prefixed_and_wrapped_files(tiny_state: dict, tmp_path: Path, layout: str) -> None:
    if layout.endswith("."):
        obj = OrderedDict((layout + k, v) for k, v in tiny_state.items())
    elif layout == "wrapped_module":  # the official trainer's resume file: {'module': BaseModel.state_dict(), ...}
        obj = {"module": OrderedDict(("model." + k, v) for k, v in tiny_state.items()), "step": 3}
    else:
        obj = {"state_dict": dict(tiny_state), "epoch": 1}
    path = tmp_path / "ckpt.pt"
    torch.save(obj, path)
    got = read_state_dict(path)
    assert list(got) == list(tiny_state)
    assert all(torch.equal(got[k], v) for k, v in tiny_state.items())


def test_reads_legacy_non_zip_format(tmp_path: Path) -> None:
    path = tmp_path / "legacy.pt"
    state = _lin_state()
    torch.save(state, path, _use_new_zipfile_serialization=False)  # cannot be memory-mapped
    assert torch.equal(read_state_dict(path)["lin.bias"], state["lin.bias"])


def test_prefix_stripping_only_when_every_key_has_it() -> None:
    state = {"model.a": torch.zeros(1), "b": torch.zeros(1)}
    assert list(strip_common_prefixes(state)) == ["model.a", "b"]


def test_read_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        read_state_dict(tmp_path / "absent.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        read_state_dict(garbage)
    truncated = tmp_path / "truncated.pt"
    torch.save(_lin_state(), truncated)
    truncated.write_bytes(truncated.read_bytes()[:100])
    with pytest.raises(CheckpointError):
        read_state_dict(truncated)
    no_tensors = tmp_path / "config.pt"
    torch.save({"lr": 0.1, "steps": [1, 2]}, no_tensors)
    with pytest.raises(CheckpointError, match="does not contain a state dict"):
        read_state_dict(no_tensors)


# ---- strict loading ----------------------------------------------------------------------------------------------
def test_strict_load_of_language_encoder(tiny_state: dict) -> None:
    encoder = LanguageEncoder(TINY)
    sub = sub_state_dict(tiny_state, LANG_ENCODER_PREFIX)
    load_state_dict_strict(encoder, sub)
    assert all(torch.equal(encoder.state_dict()[k], v) for k, v in sub.items())


def test_missing_key_is_an_error(tiny_state: dict) -> None:
    sub = sub_state_dict(tiny_state, LANG_ENCODER_PREFIX)
    del sub["lang_encoder.resblocks.1.ln_2.bias"]
    with pytest.raises(CheckpointError, match=r"1 missing key\(s\) \[lang_encoder\.resblocks\.1\.ln_2\.bias\]"):
        load_state_dict_strict(LanguageEncoder(TINY), sub)


def test_unexpected_key_is_an_error(tiny_state: dict) -> None:
    sub = sub_state_dict(tiny_state, LANG_ENCODER_PREFIX)
    sub["lang_encoder.resblocks.2.ln_1.weight"] = torch.ones(64)
    with pytest.raises(CheckpointError, match="unexpected key.*resblocks.2.ln_1.weight"):
        load_state_dict_strict(LanguageEncoder(TINY), sub)


def test_mis_shaped_key_is_an_error_and_nothing_is_loaded(tiny_state: dict) -> None:
    sub = sub_state_dict(tiny_state, LANG_ENCODER_PREFIX)
    sub["lang_proj"] = torch.zeros(64, 32)
    encoder = LanguageEncoder(TINY)
    before = encoder.lang_encoder.ln_final.bias.clone()
    with pytest.raises(CheckpointError, match=r"mis-shaped.*lang_proj: checkpoint \[64, 32\] vs model \[64, 64\]"):
        load_state_dict_strict(encoder, sub)
    assert torch.equal(encoder.lang_encoder.ln_final.bias, before)  # all-or-nothing


def test_full_checkpoint_into_wrong_width_lists_shapes(tiny_state: dict) -> None:
    with torch.device("meta"):
        full = LanguageEncoder()
    tiny = sub_state_dict(tiny_state, LANG_ENCODER_PREFIX)
    missing, unexpected, mis_shaped = compare_state_dicts(full.state_dict(), tiny)
    assert len(missing) == 120 and unexpected == []  # resblocks 2..11
    assert len(mis_shaped) == 29 and all("vs model" in m for m in mis_shaped)  # all but logit_scale


def test_long_key_lists_are_truncated() -> None:
    state = {f"extra.{i}": torch.zeros(1) for i in range(50)} | _lin_state()
    with pytest.raises(CheckpointError) as info:
        load_state_dict_strict(_WithBuffers(), state)
    assert "50 unexpected key(s)" in str(info.value) and "(+40 more)" in str(info.value)
    assert len(str(info.value)) < 1000


def test_optional_buffers_may_be_missing_or_extra() -> None:
    # File without the two buffers: the module keeps its constants.
    model = _WithBuffers()
    model.criterion.empty_weight[-1] = 0.1
    load_state_dict_strict(model, _lin_state())
    assert model.criterion.empty_weight[-1].item() == pytest.approx(0.1) and model.dilation_kernel.sum() == 9
    # File with both buffers but a module without a criterion: the extra key is ignored.
    state = _lin_state() | {"dilation_kernel": torch.full((1, 1, 3, 3), 2.0), "criterion.empty_weight": torch.ones(4)}
    model = _WithBuffers(with_criterion=False)
    load_state_dict_strict(model, state)
    assert torch.equal(model.dilation_kernel, state["dilation_kernel"])
    assert torch.equal(model.lin.weight.data, state["lin.weight"])


def test_fp16_file_loads_into_fp32_module() -> None:
    model = _WithBuffers()
    state = {k: v.half() for k, v in _lin_state().items()}
    load_state_dict_strict(model, state)
    assert model.lin.weight.dtype == torch.float32
    torch.testing.assert_close(model.lin.weight.data, state["lin.weight"].float())
