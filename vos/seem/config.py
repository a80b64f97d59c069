"""Typed configuration of the SEEM v1 model.

`SeemConfig` composes the four sub-configurations (backbone, pixel decoder, decoder, text encoder) plus the
model-level constants (normalisation, padding, vocabulary size). `SeemConfig.focal_t()` / `.focal_l()` give the
released Focal-T / Focal-L layouts; `SeemConfig.from_official_yaml(path)` reads an official-style merged YAML
config (such as the fixtures' ``tiny_config.yaml``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vos.errors import EngineError
from vos.seem.backbone import FocalNetConfig
from vos.seem.pixel_decoder import PixelDecoderConfig
from vos.seem.text_encoder import TextEncoderConfig

PIXEL_MEAN: tuple[float, float, float] = (123.675, 116.280, 103.530)
PIXEL_STD: tuple[float, float, float] = (58.395, 57.120, 57.375)


@dataclass(frozen=True)
class DecoderConfig:
    """Hyper-parameters of the SEEM v1 decoder (`sem_seg_head.predictor`).

    ``num_layers`` is the number of transformer layers actually built, i.e. the official ``DEC_LAYERS - 1``
    (the official "+1" is the prediction made on the initial queries).
    """

    hidden_dim: int = 512
    dim_proj: int = 512  # joint vision-language space (class_embed output width, MODEL.DIM_PROJ)
    mask_dim: int = 512  # width of mask_features (pixel decoder MASK_DIM)
    num_queries: int = 101
    num_heads: int = 8
    dim_feedforward: int = 2048
    num_layers: int = 9
    num_feature_levels: int = 3
    max_spatial_len: tuple[int, int, int, int] = (512, 512, 512, 512)  # per level, then the pooled vector
    spatial_memories: int = 32
    queries_per_object: int = 3

    def __post_init__(self) -> None:
        if self.hidden_dim % self.num_heads:
            raise EngineError(f"hidden_dim {self.hidden_dim} is not divisible by num_heads {self.num_heads}")
        if len(self.max_spatial_len) != self.num_feature_levels + 1:
            raise EngineError("max_spatial_len needs one budget per feature level plus one for the pooled vector")
        if self.num_layers < 1:
            raise EngineError("the decoder needs at least one layer (DEC_LAYERS >= 2)")


@dataclass(frozen=True)
class SeemConfig:
    """Everything needed to build a `SeemModel`."""

    backbone: FocalNetConfig
    pixel_decoder: PixelDecoderConfig
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    num_classes: int = 133  # COCO panoptic; class logits have num_classes + 1 columns (background)
    pixel_mean: tuple[float, float, float] = PIXEL_MEAN
    pixel_std: tuple[float, float, float] = PIXEL_STD
    size_divisibility: int = 32
    object_mask_threshold: float = 0.8
    overlap_threshold: float = 0.8

    @classmethod
    def focal_t(cls) -> SeemConfig:
        """The released ``seem_focalt_v1`` layout (``configs/seem/focalt_unicl_lang_v1.yaml``)."""
        backbone = FocalNetConfig.focal_t()
        return cls(backbone=backbone, pixel_decoder=PixelDecoderConfig.for_backbone(backbone.out_channels))

    @classmethod
    def focal_l(cls) -> SeemConfig:
        """The released ``seem_focall_v1`` layout (``configs/seem/focall_unicl_lang_v1.yaml``)."""
        backbone = FocalNetConfig.focal_l()
        return cls(backbone=backbone, pixel_decoder=PixelDecoderConfig.for_backbone(backbone.out_channels))

    @classmethod
    def from_variant(cls, variant: str) -> SeemConfig:
        """``"focalt"`` / ``"focal_t"`` / ``"focall"`` / ``"focal_l"`` (case-insensitive)."""
        key = variant.lower().replace("-", "").replace("_", "")
        if key in ("focalt", "t", "seemfocalt"):
            return cls.focal_t()
        if key in ("focall", "l", "seemfocall"):
            return cls.focal_l()
        raise EngineError(f"unknown SEEM variant {variant!r}; expected 'focalt' or 'focall'")

    @classmethod
    def from_official_yaml(cls, path: str | Path) -> SeemConfig:
        """Read the values we need from an official-style merged YAML config."""
        import yaml

        try:
            with open(path, encoding="utf-8") as handle:
                cfg = yaml.safe_load(handle)
        except (OSError, yaml.YAMLError) as exc:
            raise EngineError(f"cannot read config {path}: {exc}") from exc
        try:
            return cls.from_official_dict(cfg)
        except (KeyError, TypeError, ValueError) as exc:
            raise EngineError(f"config {path} is not a usable SEEM v1 config: {exc!r}") from exc

    @classmethod
    def from_official_dict(cls, cfg: Mapping[str, Any]) -> SeemConfig:
        model = cfg["MODEL"]
        names = (model.get("NAME", "seem_model_v1"), model["DECODER"].get("NAME", "seem_v1"))
        if names != ("seem_model_v1", "seem_v1"):
            raise ValueError(f"only seem_model_v1 with decoder seem_v1 is supported, got {names}")
        backbone = FocalNetConfig.from_official(model["BACKBONE"])
        enc, dec, text = model["ENCODER"], model["DECODER"], model["TEXT"]
        arch = cfg.get("ATTENTION_ARCH", {})
        decoder = DecoderConfig(
            hidden_dim=int(dec["HIDDEN_DIM"]), dim_proj=int(model["DIM_PROJ"]), mask_dim=int(enc["MASK_DIM"]),
            num_queries=int(dec["NUM_OBJECT_QUERIES"]), num_heads=int(dec["NHEADS"]),
            dim_feedforward=int(dec["DIM_FEEDFORWARD"]), num_layers=int(dec["DEC_LAYERS"]) - 1,
            max_spatial_len=tuple(int(v) for v in dec.get("MAX_SPATIAL_LEN", [512] * 4)),
            spatial_memories=int(arch.get("SPATIAL_MEMORIES", 32)),
            queries_per_object=int(arch.get("QUERY_NUMBER", 3)),
        )
        text_cfg = TextEncoderConfig(width=int(text["WIDTH"]), heads=int(text["HEADS"]), layers=int(text["LAYERS"]),
                                     context_length=int(text.get("CONTEXT_LENGTH", 77)),
                                     proj_dim=int(model["DIM_PROJ"]))
        test = dec.get("TEST", {})
        inp = cfg.get("INPUT", {})
        return cls(
            backbone=backbone,
            pixel_decoder=PixelDecoderConfig.from_official(model, backbone.out_channels),
            decoder=decoder,
            text=text_cfg,
            num_classes=int(enc.get("NUM_CLASSES", 133)),
            pixel_mean=tuple(float(v) for v in inp.get("PIXEL_MEAN", PIXEL_MEAN)),  # type: ignore[arg-type]
            pixel_std=tuple(float(v) for v in inp.get("PIXEL_STD", PIXEL_STD)),  # type: ignore[arg-type]
            size_divisibility=int(dec.get("SIZE_DIVISIBILITY", 32)),
            object_mask_threshold=float(test.get("OBJECT_MASK_THRESHOLD", 0.8)),
            overlap_threshold=float(test.get("OVERLAP_THRESHOLD", 0.8)),
        )
