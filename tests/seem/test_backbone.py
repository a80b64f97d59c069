"""FocalNet backbone: checkpoint key layout (Focal-T / Focal-L) and parity with the official tiny fixtures."""

import json
from pathlib import Path

import pytest
import torch
import yaml

from vos.seem.backbone import FocalNet, FocalNetConfig, build_backbone
from vos.seem.preprocess import normalize_image

PREFIX = "backbone."
TOL = {"atol": 1e-4, "rtol": 1e-4}


def _expected_keys(key_file: Path, prefix: str) -> list[tuple[str, tuple[int, ...], str]]:
    return [(k[len(prefix) :], tuple(s), d) for k, s, d in json.loads(key_file.read_text()) if k.startswith(prefix)]


def _actual_keys(module: torch.nn.Module) -> list[tuple[str, tuple[int, ...], str]]:
    return [(k, tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in module.state_dict().items()]


def _strip(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def _load_backbone(config_file: Path, weights_file: Path) -> FocalNet:
    cfg = FocalNetConfig.from_official(yaml.safe_load(config_file.read_text())["MODEL"]["BACKBONE"])
    model = build_backbone(cfg).eval()
    model.load_state_dict(_strip(torch.load(weights_file, map_location="cpu"), PREFIX), strict=True)
    return model



@pytest.fixture(scope="module")
def tiny_io(seem_fixtures: Path) -> dict[str, torch.Tensor]:
    return torch.load(seem_fixtures / "tiny_io.pt", map_location="cpu")


@pytest.fixture(scope="module")
def tiny_image(tiny_io: dict[str, torch.Tensor]) -> torch.Tensor:
    # 256x320 is already a multiple of 32: no padding, as in the fixture run.
    return normalize_image(tiny_io["inputs/image"])[None]


@pytest.mark.parametrize(
    ("key_file", "cfg"),
    [("keys_focalt_v1.json", FocalNetConfig.focal_t()), ("keys_focall_v1.json", FocalNetConfig.focal_l())],
)
def test_full_backbone_keys_shapes_dtypes(seem_fixtures: Path, key_file: str, cfg: FocalNetConfig) -> None:
    with torch.device("meta"):
        model = build_backbone(cfg)
    # Ordered comparison: same keys, shapes, dtypes and state_dict order as the official model.
    assert _actual_keys(model) == _expected_keys(seem_fixtures / key_file, PREFIX)


def test_full_configs_match_spec() -> None:
    tiny, large = FocalNetConfig.focal_t(), FocalNetConfig.focal_l()
    assert (tiny.variant, tiny.stage_dims, tiny.depths) == ("focal_dw", (96, 192, 384, 768), (2, 2, 6, 2))
    assert (large.variant, large.stage_dims, large.depths) == ("focal", (192, 384, 768, 1536), (2, 2, 18, 2))
    assert (tiny.focal_levels, large.focal_levels) == ((3,) * 4, (4,) * 4)
    assert tiny.focal_windows == large.focal_windows == (3,) * 4
    assert tiny.out_strides == {"res2": 4, "res3": 8, "res4": 16, "res5": 32}


def test_tiny_focalt_backbone_matches_official(seem_fixtures: Path, tiny_io, tiny_image) -> None:
    model = _load_backbone(seem_fixtures / "tiny_config.yaml", seem_fixtures / "tiny_weights.pt")
    assert model.cfg.variant == "focal_dw"
    with torch.no_grad():
        out = model(tiny_image)
    assert list(out) == ["res2", "res3", "res4", "res5"]
    for name, value in out.items():
        torch.testing.assert_close(value, tiny_io[f"features/backbone/{name}"], **TOL)


def test_tiny_focall_backbone_matches_official(seem_fixtures: Path, tiny_image) -> None:
    model = _load_backbone(
        seem_fixtures / "tiny_focall_backbone_config.yaml", seem_fixtures / "tiny_focall_backbone_weights.pt"
    )
    assert model.cfg.variant == "focal"
    expected = torch.load(seem_fixtures / "tiny_focall_backbone_io.pt", map_location="cpu")
    with torch.no_grad():
        out = model(tiny_image)
    for name, value in out.items():
        torch.testing.assert_close(value, expected[f"features/backbone/{name}"], **TOL)


def test_variant_weights_do_not_cross_load(seem_fixtures: Path) -> None:
    # focal_dw weights have dw1/dw2 keys the focal layout lacks.
    cfg = FocalNetConfig(variant="focal", embed_dim=32, depths=(1, 1, 1, 1))
    with pytest.raises(RuntimeError):
        build_backbone(cfg).load_state_dict(_strip(torch.load(seem_fixtures / "tiny_weights.pt"), PREFIX))


def test_backbone_runs_under_bf16_autocast(seem_fixtures: Path, tiny_image) -> None:
    model = _load_backbone(seem_fixtures / "tiny_config.yaml", seem_fixtures / "tiny_weights.pt")
    crop = tiny_image[..., 64:128, 96:192]  # small: bf16 depth-wise convs are slow on CPU
    with torch.no_grad():
        ref = model(crop)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(crop)
    for name, value in out.items():
        assert torch.isfinite(value).all()
        assert (value.float() - ref[name]).abs().max() < 0.05 * ref[name].abs().max()


def test_backbone_output_shapes_for_davis_frame() -> None:
    # 854x480 -> 910x512 -> padded 928x512: grids 128x232, 64x116, 32x58, 16x29 (spec §1).
    cfg = FocalNetConfig(variant="focal_dw", embed_dim=8, depths=(1, 1, 1, 1))
    with torch.no_grad():
        out = build_backbone(cfg).eval()(torch.zeros(1, 3, 512, 928))
    shapes = {k: tuple(v.shape) for k, v in out.items()}
    assert shapes == {
        "res2": (1, 8, 128, 232),
        "res3": (1, 16, 64, 116),
        "res4": (1, 32, 32, 58),
        "res5": (1, 64, 16, 29),
    }


def test_stem_pads_odd_sizes_like_reference() -> None:
    # Inputs that are not multiples of 4 are zero-padded right/bottom first: grid = ceil(H/4) x ceil(W/4).
    for variant in ("focal_dw", "focal"):
        cfg = FocalNetConfig(variant=variant, embed_dim=8, depths=(1, 1, 1, 1))
        with torch.no_grad():
            out = build_backbone(cfg).eval()(torch.zeros(1, 3, 61, 90))
        assert tuple(out["res2"].shape[-2:]) == (16, 23) and tuple(out["res5"].shape[-2:]) == (2, 3)


def test_rejects_bad_input() -> None:
    model = build_backbone(FocalNetConfig(embed_dim=8, depths=(1, 1, 1, 1)))
    with pytest.raises(ValueError):
        model(torch.zeros(1, 1, 32, 32))
