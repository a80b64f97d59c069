"""SEEM v1 pixel decoder ``transformer_encoder_fpn`` (spec §3).

A post-norm transformer encoder on the projected res5 map, then a top-down FPN with nearest upsampling.
Parameter names follow the official checkpoint (``sem_seg_head.pixel_decoder.`` prefix stripped),
including the state-dict order quirk that ``layer_4`` comes last.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "PixelDecoderConfig",
    "PixelDecoderOutput",
    "PositionEmbeddingSine",
    "TransformerEncoderPixelDecoder",
    "build_pixel_decoder",
]

IN_FEATURES: tuple[str, ...] = ("res2", "res3", "res4", "res5")


@dataclass(frozen=True)
class PixelDecoderConfig:
    """Hyper-parameters of the pixel decoder.

    ``in_channels`` are the backbone widths of res2..res5. The transformer settings are borrowed from the
    official *decoder* block (``NHEADS``, ``DIM_FEEDFORWARD``, ``DROPOUT``), as in the reference.
    """

    in_channels: tuple[int, int, int, int] = (96, 192, 384, 768)
    conv_dim: int = 512
    mask_dim: int = 512
    num_heads: int = 8
    dim_feedforward: int = 2048
    enc_layers: int = 6
    dropout: float = 0.0
    norm_groups: int = 32

    def __post_init__(self) -> None:
        if len(self.in_channels) != len(IN_FEATURES):
            raise ValueError(f"in_channels needs {len(IN_FEATURES)} entries (res2..res5), got {self.in_channels}")
        if self.conv_dim % self.norm_groups or self.conv_dim % self.num_heads:
            raise ValueError("conv_dim must be divisible by norm_groups and num_heads")

    @classmethod
    def for_backbone(cls, in_channels: Mapping[str, int] | Sequence[int]) -> PixelDecoderConfig:
        """Official v1 settings (512 channels, 6 layers) for a backbone with these res2..res5 widths."""
        return cls(in_channels=_channels(in_channels))

    @classmethod
    def from_official(
        cls, model_cfg: Mapping[str, Any], in_channels: Mapping[str, int] | Sequence[int]
    ) -> PixelDecoderConfig:
        """Build from an official ``MODEL`` mapping (uses its ``ENCODER`` and ``DECODER`` blocks)."""
        enc, dec = model_cfg["ENCODER"], model_cfg["DECODER"]
        if enc.get("NAME", "transformer_encoder_fpn") != "transformer_encoder_fpn":
            raise ValueError(f"unsupported pixel decoder {enc['NAME']!r}")
        if enc.get("NORM", "GN") != "GN" or dec.get("PRE_NORM", False):
            raise ValueError("only NORM 'GN' and PRE_NORM False (the v1 settings) are supported")
        return cls(
            in_channels=_channels(in_channels),
            conv_dim=int(enc["CONVS_DIM"]),
            mask_dim=int(enc["MASK_DIM"]),
            num_heads=int(dec["NHEADS"]),
            dim_feedforward=int(dec["DIM_FEEDFORWARD"]),
            enc_layers=int(enc["TRANSFORMER_ENC_LAYERS"]),
            dropout=float(dec.get("DROPOUT", 0.0)),
        )


def _channels(in_channels: Mapping[str, int] | Sequence[int]) -> tuple[int, int, int, int]:
    if isinstance(in_channels, Mapping):
        return tuple(int(in_channels[name]) for name in IN_FEATURES)  # type: ignore[return-value]
    return tuple(int(c) for c in in_channels)  # type: ignore[return-value]


class PixelDecoderOutput(NamedTuple):
    """Result of :meth:`TransformerEncoderPixelDecoder.forward_features`.

    ``multi_scale_features`` is coarse-to-fine: strides 32, 16, 8.
    """

    mask_features: torch.Tensor  # [B, mask_dim, H/4, W/4]
    transformer_encoder_features: torch.Tensor  # [B, conv_dim, H/32, W/32]; unused by the SEEM decoder
    multi_scale_features: list[torch.Tensor]


class PositionEmbeddingSine(nn.Module):
    """Normalised 2-D sine positional encoding of a feature map's shape (no padding mask).

    Computed in the input's dtype, as the reference does (this matters under fp16 autocast).
    Output: ``[B, 2*num_pos_feats, H, W]``, y-part first, then x-part, sin/cos interleaved.
    """

    def __init__(self, num_pos_feats: int, temperature: float = 10000.0, scale: float = 2 * math.pi) -> None:
        super().__init__()
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        eps = 1e-6
        # Cumulative sums of an all-valid mask, normalised by the last entry, exactly as the reference does.
        not_mask = torch.ones((b, h, w), dtype=torch.bool, device=x.device)
        y = not_mask.cumsum(1, dtype=x.dtype)
        xs = not_mask.cumsum(2, dtype=x.dtype)
        y = y / (y[:, -1:, :] + eps) * self.scale
        xs = xs / (xs[:, :, -1:] + eps) * self.scale
        dim_t = torch.arange(self.num_pos_feats, dtype=x.dtype, device=x.device)
        dim_t = self.temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / self.num_pos_feats)
        pos_y = self._interleave(y[..., None] / dim_t)
        pos_x = self._interleave(xs[..., None] / dim_t)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)

    @staticmethod
    def _interleave(p: torch.Tensor) -> torch.Tensor:
        # Even channels sin, odd channels cos of the same frequency.
        return torch.stack((p[..., 0::2].sin(), p[..., 1::2].cos()), dim=4).flatten(3)


class ConvNorm(nn.Conv2d):
    """detectron2-style ``Conv2d``: conv, then an optional ``norm`` submodule, then an optional ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int, norm_groups: int = 0, relu: bool = False) -> None:
        # Normalised convs carry no bias (the reference uses ``bias = norm == ""``).
        super().__init__(cin, cout, kernel, padding=kernel // 2, bias=norm_groups == 0)
        self.norm = nn.GroupNorm(norm_groups, cout) if norm_groups else None
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = super().forward(x)
        if self.norm is not None:
            x = self.norm(x)
        return F.relu(x) if self.relu else x


class EncoderLayer(nn.Module):
    """Post-norm transformer encoder layer, sequence-first ``[L, B, C]``; pos is added to q and k only."""

    def __init__(self, dim: int, heads: int, ffn: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=dropout)
        self.linear1 = nn.Linear(dim, ffn)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(ffn, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, src: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        qk = src + pos
        attn = self.self_attn(qk, qk, value=src, need_weights=False)[0]
        src = self.norm1(src + self.dropout1(attn))
        ffn = self.linear2(self.dropout(F.relu(self.linear1(src))))
        return self.norm2(src + self.dropout2(ffn))


class TransformerEncoder(nn.Module):
    """Stack of encoder layers with no final norm (post-norm configuration)."""

    def __init__(self, num_layers: int, dim: int, heads: int, ffn: int, dropout: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(dim, heads, ffn, dropout) for _ in range(num_layers))

    def forward(self, src: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            src = layer(src, pos)
        return src


class TransformerEncoderOnly(nn.Module):
    """Flattens a map to a sequence, runs the encoder, and reshapes back (key prefix ``transformer.``)."""

    def __init__(self, num_layers: int, dim: int, heads: int, ffn: int, dropout: float) -> None:
        super().__init__()
        self.encoder = TransformerEncoder(num_layers, dim, heads, ffn, dropout)

    def forward(self, src: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        b, c, h, w = src.shape
        seq = src.flatten(2).permute(2, 0, 1)
        out = self.encoder(seq, pos.flatten(2).permute(2, 0, 1))
        return out.permute(1, 2, 0).reshape(b, c, h, w)


class TransformerEncoderPixelDecoder(nn.Module):
    """``transformer_encoder_fpn`` pixel decoder; see :meth:`forward_features`."""

    def __init__(self, cfg: PixelDecoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d, g = cfg.conv_dim, cfg.norm_groups
        # Registration order reproduces the checkpoint's state_dict order:
        # adapter_1, layer_1, ..., adapter_3, layer_3, mask_features, input_proj, transformer, layer_4.
        for level, cin in enumerate(cfg.in_channels[:-1], start=1):
            self.add_module(f"adapter_{level}", ConvNorm(cin, d, 1, norm_groups=g))
            self.add_module(f"layer_{level}", ConvNorm(d, d, 3, norm_groups=g, relu=True))
        self.mask_features = ConvNorm(d, cfg.mask_dim, 3)
        self.input_proj = ConvNorm(cfg.in_channels[-1], d, 1)
        self.pe_layer = PositionEmbeddingSine(d // 2)
        self.transformer = TransformerEncoderOnly(cfg.enc_layers, d, cfg.num_heads, cfg.dim_feedforward, cfg.dropout)
        # The reference deletes and re-registers layer_4, which is why it is last in the state_dict.
        self.layer_4 = ConvNorm(d, d, 3, norm_groups=g, relu=True)

    def forward_features(self, features: Mapping[str, torch.Tensor]) -> PixelDecoderOutput:
        """Top-down pass over ``features["res2".."res5"]`` (backbone output)."""
        res5 = features["res5"]
        encoded = self.transformer(self.input_proj(res5), self.pe_layer(res5))
        y = self.layer_4(encoded)
        multi_scale = [y]
        for level in (3, 2, 1):
            lateral = getattr(self, f"adapter_{level}")(features[IN_FEATURES[level - 1]])
            y = lateral + F.interpolate(y, size=lateral.shape[-2:], mode="nearest")
            y = getattr(self, f"layer_{level}")(y)
            if level > 1:
                multi_scale.append(y)
        return PixelDecoderOutput(self.mask_features(y), encoded, multi_scale)

    def forward(self, features: Mapping[str, torch.Tensor]) -> PixelDecoderOutput:
        return self.forward_features(features)


def build_pixel_decoder(cfg: PixelDecoderConfig) -> TransformerEncoderPixelDecoder:
    """Build the pixel decoder described by ``cfg`` (weights are left at their initial values)."""
    return TransformerEncoderPixelDecoder(cfg)
