"""A ``seem`` engine on a tiny SEEM v1 model with random weights, for the service and studio tests.

The layout is the official tiny fixture's (``tests/seem`` load its recorded weights from ``../shared``); here the
weights are random (seeded), so the tests need nothing outside the repository and download nothing. Masks are
meaningless as segmentations: the tests check that text and reference prompts go through the service.
"""

from __future__ import annotations

from typing import Any

import torch

from vos.engines.seem import SeemEngine
from vos.engines.seem_options import SeemOptions
from vos.seem.backbone import FocalNetConfig
from vos.seem.config import DecoderConfig, SeemConfig
from vos.seem.pixel_decoder import PixelDecoderConfig
from vos.seem.text_encoder import TextEncoderConfig

WIDTH = 64  # the tiny fixture's hidden width (DIM_PROJ, HIDDEN_DIM, CONVS_DIM, MASK_DIM)


def tiny_seem_config() -> SeemConfig:
    backbone = FocalNetConfig(embed_dim=32, depths=(1, 1, 1, 1))
    return SeemConfig(
        backbone=backbone,
        pixel_decoder=PixelDecoderConfig(in_channels=tuple(backbone.out_channels.values()), conv_dim=WIDTH,
                                         mask_dim=WIDTH, num_heads=4, dim_feedforward=128, enc_layers=1),
        decoder=DecoderConfig(hidden_dim=WIDTH, dim_proj=WIDTH, mask_dim=WIDTH, num_queries=21, num_heads=4,
                              dim_feedforward=128, num_layers=3),
        text=TextEncoderConfig(width=WIDTH, heads=4, layers=2, proj_dim=WIDTH),
    )


class TinySeemOptions(SeemOptions):
    resolution: int = 128  # the tiny model's input short side: fast on a CPU


class TinySeemEngine(SeemEngine):
    """SEEM with a tiny random model; options as ``seem``, but ``weights`` is the tiny model and every object
    counts as present (``absent_threshold`` 0: random scores would hide masks)."""

    name = "seem-tiny"
    Options = TinySeemOptions

    def __init__(self, options: SeemOptions | None = None, **values: Any) -> None:
        torch.manual_seed(0)  # the same weights in every worker, so a rebuilt session gives the same masks
        super().__init__(options, **{**values, "weights": tiny_seem_config(), "absent_threshold": 0.0})
