"""Pixel decoder (transformer_encoder_fpn): checkpoint key layout and parity with the official tiny fixture."""

import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from vos.seem.backbone import FocalNetConfig, build_backbone
from vos.seem.pixel_decoder import (
    PixelDecoderConfig,
    PixelDecoderOutput,
    PositionEmbeddingSine,
    TransformerEncoderPixelDecoder,
)
from vos.seem.preprocess import normalize_image

PREFIX = "sem_seg_head.pixel_decoder."
TOL = {"atol": 1e-4, "rtol": 1e-4}
FEATURES = ("res2", "res3", "res4", "res5")


def _strip(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}



@pytest.fixture(scope="module")
def tiny(seem_fixtures: Path) -> dict:
    model_cfg = yaml.safe_load((seem_fixtures / "tiny_config.yaml").read_text())["MODEL"]
    weights = torch.load(seem_fixtures / "tiny_weights.pt", map_location="cpu")
    return {"cfg": model_cfg, "weights": weights, "io": torch.load(seem_fixtures / "tiny_io.pt", map_location="cpu")}


def _tiny_decoder(tiny: dict) -> TransformerEncoderPixelDecoder:
    backbone_cfg = FocalNetConfig.from_official(tiny["cfg"]["BACKBONE"])
    cfg = PixelDecoderConfig.from_official(tiny["cfg"], backbone_cfg.out_channels)
    model = TransformerEncoderPixelDecoder(cfg).eval()
    model.load_state_dict(_strip(tiny["weights"], PREFIX), strict=True)
    return model


def _assert_matches(out: PixelDecoderOutput, io: dict[str, torch.Tensor], **tol: float) -> None:
    torch.testing.assert_close(out.mask_features, io["features/pixel_decoder/mask_features"], **tol)
    enc = io["features/pixel_decoder/transformer_encoder_features"]
    torch.testing.assert_close(out.transformer_encoder_features, enc, **tol)
    assert len(out.multi_scale_features) == 3
    for i, feat in enumerate(out.multi_scale_features):
        torch.testing.assert_close(feat, io[f"features/pixel_decoder/multi_scale_features/{i}"], **tol)


@pytest.mark.parametrize(
    ("key_file", "backbone_cfg"),
    [("keys_focalt_v1.json", FocalNetConfig.focal_t()), ("keys_focall_v1.json", FocalNetConfig.focal_l())],
)
def test_full_pixel_decoder_keys_shapes_dtypes(
    seem_fixtures: Path, key_file: str, backbone_cfg: FocalNetConfig
) -> None:
    with torch.device("meta"):
        model = TransformerEncoderPixelDecoder(PixelDecoderConfig.for_backbone(backbone_cfg.out_channels))
    expected = [
        (k[len(PREFIX) :], tuple(s), d)
        for k, s, d in json.loads((seem_fixtures / key_file).read_text())
        if k.startswith(PREFIX)
    ]
    actual = [(k, tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in model.state_dict().items()]
    assert actual == expected  # ordered: layer_4 comes last, as in the checkpoint
    assert actual[-1][0] == "layer_4.norm.bias"


def test_tiny_pixel_decoder_matches_official_from_reference_features(tiny: dict) -> None:
    model = _tiny_decoder(tiny)
    features = {name: tiny["io"][f"features/backbone/{name}"] for name in FEATURES}
    with torch.no_grad():
        _assert_matches(model.forward_features(features), tiny["io"], **TOL)


def test_tiny_backbone_and_pixel_decoder_end_to_end(tiny: dict) -> None:
    backbone = build_backbone(FocalNetConfig.from_official(tiny["cfg"]["BACKBONE"])).eval()
    backbone.load_state_dict(_strip(tiny["weights"], "backbone."), strict=True)
    decoder = _tiny_decoder(tiny)
    with torch.no_grad():
        out = decoder.forward_features(backbone(normalize_image(tiny["io"]["inputs/image"])[None]))
    _assert_matches(out, tiny["io"], **TOL)


def test_pixel_decoder_runs_under_bf16_autocast(tiny: dict) -> None:
    model = _tiny_decoder(tiny)
    # Aligned crops of the reference features keep this fast (bf16 convs are slow on CPU).
    io = tiny["io"]
    features = {name: io[f"features/backbone/{name}"][..., : 32 >> i, : 32 >> i] for i, name in enumerate(FEATURES)}
    with torch.no_grad():
        ref = model.forward_features(features).mask_features
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model.forward_features(features)
    assert out.mask_features.shape == ref.shape and torch.isfinite(out.mask_features).all()
    assert (out.mask_features.float() - ref).abs().max() < 0.05 * ref.abs().max()


def test_position_embedding_matches_spec_formula() -> None:
    h, w, n = 3, 5, 8
    pos = PositionEmbeddingSine(n)(torch.zeros(2, 1, h, w, dtype=torch.float64))
    assert pos.shape == (2, 2 * n, h, w)
    r, c, k = 2, 4, 5  # 0-based row/col; odd channel -> cos
    t = 10000 ** (2 * (k // 2) / n)
    y_hat = (r + 1) / (h + 1e-6) * 2 * math.pi
    x_hat = (c + 1) / (w + 1e-6) * 2 * math.pi
    assert pos[1, k, r, c].item() == pytest.approx(math.cos(y_hat / t))
    assert pos[1, n + k - 1, r, c].item() == pytest.approx(math.sin(x_hat / t))


def test_pixel_decoder_output_shapes_for_davis_frame() -> None:
    cfg = FocalNetConfig(variant="focal", embed_dim=8, depths=(1, 1, 1, 1), focal_levels=(4,) * 4)
    backbone = build_backbone(cfg).eval()
    decoder_cfg = PixelDecoderConfig(
        cfg.stage_dims, conv_dim=32, mask_dim=16, num_heads=4, dim_feedforward=64, enc_layers=1
    )
    decoder = TransformerEncoderPixelDecoder(decoder_cfg).eval()
    with torch.no_grad():
        out = decoder.forward_features(backbone(torch.zeros(1, 3, 512, 928)))
    assert tuple(out.mask_features.shape) == (1, 16, 128, 232)
    assert tuple(out.transformer_encoder_features.shape) == (1, 32, 16, 29)
    assert [tuple(f.shape[-2:]) for f in out.multi_scale_features] == [(16, 29), (32, 58), (64, 116)]


def test_config_rejects_unsupported_settings(tiny: dict) -> None:
    bad = {**tiny["cfg"], "DECODER": {**tiny["cfg"]["DECODER"], "PRE_NORM": True}}
    with pytest.raises(ValueError):
        PixelDecoderConfig.from_official(bad, (32, 64, 128, 256))
