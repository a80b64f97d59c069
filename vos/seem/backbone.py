"""FocalNet image backbone of SEEM v1 (spec §2): the ``focal_dw`` (Focal-T) and ``focal`` (Focal-L) variants.

Module and parameter names follow the official checkpoint layout (``backbone.`` prefix stripped), so a
``state_dict`` filtered by that prefix loads with ``strict=True``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FocalNetConfig", "FocalNet", "build_backbone", "FEATURE_NAMES"]

FocalVariant = Literal["focal_dw", "focal"]

# Names of the four exported feature maps, strides 4, 8, 16, 32.
FEATURE_NAMES: tuple[str, ...] = ("res2", "res3", "res4", "res5")


@dataclass(frozen=True)
class FocalNetConfig:
    """Hyper-parameters of the FocalNet backbone (official ``MODEL.BACKBONE`` block).

    ``variant`` selects the block layout: ``"focal_dw"`` (Focal-T: depth-wise convs around both
    sub-blocks, stem padding 3, post-LN after the residual sum) or ``"focal"`` (Focal-L: no
    depth-wise convs, stem padding 2, post-LN on the branch before the residual add).
    """

    variant: FocalVariant = "focal_dw"
    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 6, 2)
    focal_levels: tuple[int, ...] = (3, 3, 3, 3)
    focal_windows: tuple[int, ...] = (3, 3, 3, 3)
    patch_size: int = 4
    mlp_ratio: float = 4.0
    patch_norm: bool = True
    use_conv_embed: bool = True
    scaling_modulator: bool = True
    use_postln: bool = True
    use_postln_in_modulation: bool = False
    use_layerscale: bool = True
    layerscale_value: float = 1e-4  # init only; real values come from the checkpoint
    out_features: tuple[str, ...] = FEATURE_NAMES

    def __post_init__(self) -> None:
        if self.variant not in ("focal_dw", "focal"):
            raise ValueError(f"unknown FocalNet variant {self.variant!r}")
        n = len(self.depths)
        if len(self.focal_levels) != n or len(self.focal_windows) != n:
            raise ValueError("depths, focal_levels and focal_windows must have the same length")
        unknown = set(self.out_features) - set(FEATURE_NAMES[:n])
        if unknown:
            raise ValueError(f"unknown output features {sorted(unknown)}")

    @property
    def num_stages(self) -> int:
        return len(self.depths)

    @property
    def stage_dims(self) -> tuple[int, ...]:
        """Channel width of each stage (doubles at every downsample)."""
        return tuple(self.embed_dim * 2**i for i in range(self.num_stages))

    @property
    def out_channels(self) -> dict[str, int]:
        """Channels of each exported feature map, e.g. ``{"res2": 96, ..., "res5": 768}``."""
        return {n: c for n, c in zip(FEATURE_NAMES, self.stage_dims) if n in self.out_features}

    @property
    def out_strides(self) -> dict[str, int]:
        names = FEATURE_NAMES[: self.num_stages]
        return {n: self.patch_size * 2**i for i, n in enumerate(names) if n in self.out_features}

    @classmethod
    def focal_t(cls) -> FocalNetConfig:
        """Focal-T of ``configs/seem/focalt_unicl_lang_v1.yaml``."""
        return cls(variant="focal_dw", embed_dim=96, depths=(2, 2, 6, 2), focal_levels=(3, 3, 3, 3))

    @classmethod
    def focal_l(cls) -> FocalNetConfig:
        """Focal-L of ``configs/seem/focall_unicl_lang_v1.yaml``."""
        return cls(variant="focal", embed_dim=192, depths=(2, 2, 18, 2), focal_levels=(4, 4, 4, 4))

    @classmethod
    def from_official(cls, backbone_cfg: Mapping[str, Any]) -> FocalNetConfig:
        """Build from an official ``MODEL.BACKBONE`` mapping (keys ``NAME`` and ``FOCAL``)."""
        focal = backbone_cfg["FOCAL"]
        return cls(
            variant=backbone_cfg["NAME"],
            embed_dim=int(focal["EMBED_DIM"]),
            depths=tuple(int(d) for d in focal["DEPTHS"]),
            focal_levels=tuple(int(d) for d in focal["FOCAL_LEVELS"]),
            focal_windows=tuple(int(d) for d in focal["FOCAL_WINDOWS"]),
            patch_size=int(focal.get("PATCH_SIZE", 4)),
            mlp_ratio=float(focal.get("MLP_RATIO", 4.0)),
            patch_norm=bool(focal.get("PATCH_NORM", True)),
            use_conv_embed=bool(focal.get("USE_CONV_EMBED", True)),
            scaling_modulator=bool(focal.get("SCALING_MODULATOR", True)),
            use_postln=bool(focal.get("USE_POSTLN", True)),
            use_postln_in_modulation=bool(focal.get("USE_POSTLN_IN_MODULATION", False)),
            use_layerscale=bool(focal.get("USE_LAYERSCALE", True)),
            out_features=tuple(focal.get("OUT_FEATURES", FEATURE_NAMES)),
        )


def _nchw(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Tokens ``[B, H*W, C]`` -> map ``[B, C, H, W]``."""
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], h, w)


def _tokens(x: torch.Tensor) -> torch.Tensor:
    """Map ``[B, C, H, W]`` -> tokens ``[B, H*W, C]``."""
    return x.flatten(2).transpose(1, 2)


class PatchEmbed(nn.Module):
    """Strided conv embedding (stem or downsample) followed by an optional LayerNorm over channels."""

    def __init__(self, in_chans: int, dim: int, patch: int, kernel: int, padding: int, norm: bool) -> None:
        super().__init__()
        self.patch = patch
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=kernel, stride=patch, padding=padding)
        self.norm = nn.LayerNorm(dim) if norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Official code zero-pads right/bottom to a multiple of the stride first (no-op for 32-padded inputs).
        pad_h, pad_w = (-x.shape[2]) % self.patch, (-x.shape[3]) % self.patch
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        x = self.proj(x)
        if self.norm is not None:
            h, w = x.shape[2:]
            x = _nchw(self.norm(_tokens(x)), h, w)
        return x


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class FocalModulation(nn.Module):
    """Focal modulation (spec §2.1): gated hierarchical depth-wise contexts modulate a query projection."""

    def __init__(self, dim: int, focal_level: int, focal_window: int, scaling: bool, postln: bool) -> None:
        super().__init__()
        self.focal_level = focal_level
        self.scaling = scaling
        self.f = nn.Linear(dim, 2 * dim + focal_level + 1)
        self.h = nn.Conv2d(dim, dim, kernel_size=1)
        self.act = nn.GELU()
        self.proj = nn.Linear(dim, dim)
        self.focal_layers = nn.ModuleList()
        for k in range(focal_level):
            size = 2 * k + focal_window  # focal factor 2: kernels 3, 5, 7(, 9)
            conv = nn.Conv2d(dim, dim, size, padding=size // 2, groups=dim, bias=False)
            self.focal_layers.append(nn.Sequential(conv, nn.GELU()))
        self.ln = nn.LayerNorm(dim) if postln else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``[B, H, W, C]`` -> ``[B, H, W, C]``."""
        c = x.shape[-1]
        q, ctx, gates = self.f(x).permute(0, 3, 1, 2).split((c, c, self.focal_level + 1), dim=1)
        ctx_all = 0
        for level, layer in enumerate(self.focal_layers):
            ctx = layer(ctx)
            ctx_all = ctx_all + ctx * gates[:, level : level + 1]
        # Two successive means, as in the reference, to keep the same rounding.
        ctx_global = self.act(ctx.mean(2, keepdim=True).mean(3, keepdim=True))
        ctx_all = ctx_all + ctx_global * gates[:, self.focal_level :]
        if self.scaling:
            ctx_all = ctx_all / (self.focal_level + 1)
        out = (q * self.h(ctx_all)).permute(0, 2, 3, 1)
        if self.ln is not None:
            out = self.ln(out)
        return self.proj(out)


class FocalBlock(nn.Module):
    """One FocalNet block: ``focal_dw`` adds depth-wise convs (``dw1``/``dw2``); ``focal`` norms the branch."""

    def __init__(self, dim: int, cfg: FocalNetConfig, stage: int) -> None:
        super().__init__()
        # Registered first so the state_dict order matches the checkpoint (own params before children).
        if cfg.use_layerscale:
            self.gamma_1 = nn.Parameter(torch.full((dim,), cfg.layerscale_value))
            self.gamma_2 = nn.Parameter(torch.full((dim,), cfg.layerscale_value))
        else:
            self.gamma_1 = self.gamma_2 = None
        self.use_dw = cfg.variant == "focal_dw"
        self.branch_norm = cfg.variant == "focal"
        self.postln = cfg.use_postln
        self.dw1 = self._dw_conv(dim) if self.use_dw else None
        self.norm1 = nn.LayerNorm(dim)
        self.modulation = FocalModulation(
            dim, cfg.focal_levels[stage], cfg.focal_windows[stage], cfg.scaling_modulator, cfg.use_postln_in_modulation
        )
        self.dw2 = self._dw_conv(dim) if self.use_dw else None
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * cfg.mlp_ratio))

    @staticmethod
    def _dw_conv(dim: int) -> nn.Conv2d:
        return nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim)

    @staticmethod
    def _scale(gamma: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
        return x if gamma is None else gamma * x

    def _add_dw(self, conv: nn.Conv2d | None, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        if conv is None:
            return x
        y = _nchw(x, h, w)
        return _tokens(y + conv(y))

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """``x``: tokens ``[B, H*W, C]``."""
        b, n, c = x.shape
        x = self._add_dw(self.dw1, x, h, w)
        shortcut = x
        if not self.postln:
            x = self.norm1(x)
        x = self.modulation(x.reshape(b, h, w, c)).reshape(b, n, c)
        if self.postln and self.branch_norm:
            x = self.norm1(x)  # focal: norm on the branch
        x = shortcut + self._scale(self.gamma_1, x)
        if self.postln and not self.branch_norm:
            x = self.norm1(x)  # focal_dw: norm after the residual sum
        x = self._add_dw(self.dw2, x, h, w)
        if not self.postln:
            return x + self._scale(self.gamma_2, self.mlp(self.norm2(x)))
        if self.branch_norm:
            return x + self._scale(self.gamma_2, self.norm2(self.mlp(x)))
        return self.norm2(x + self._scale(self.gamma_2, self.mlp(x)))


class FocalStage(nn.Module):
    """``DEPTHS[i]`` blocks followed by an optional stride-2 downsample of the un-normalised output."""

    def __init__(self, dim: int, cfg: FocalNetConfig, stage: int, downsample: bool) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(FocalBlock(dim, cfg, stage) for _ in range(cfg.depths[stage]))
        self.downsample = _embed(dim, 2 * dim, cfg, stem=False) if downsample else None

    def forward(self, x: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Returns (stage output tokens, downsampled map ``[B, 2C, H', W']`` or None)."""
        for block in self.blocks:
            x = block(x, h, w)
        down = None if self.downsample is None else self.downsample(_nchw(x, h, w))
        return x, down


def _embed(in_chans: int, dim: int, cfg: FocalNetConfig, stem: bool) -> PatchEmbed:
    patch = cfg.patch_size if stem else 2
    if not cfg.use_conv_embed:
        return PatchEmbed(in_chans, dim, patch, kernel=patch, padding=0, norm=cfg.patch_norm)
    if stem:
        # The only code difference of the stems: focal_dw pads 3, focal pads 2 (spec §2.2).
        padding = 3 if cfg.variant == "focal_dw" else 2
        return PatchEmbed(in_chans, dim, patch, kernel=7, padding=padding, norm=cfg.patch_norm)
    return PatchEmbed(in_chans, dim, patch, kernel=3, padding=1, norm=cfg.patch_norm)


class FocalNet(nn.Module):
    """FocalNet backbone; ``forward(image [B,3,Hp,Wp])`` returns ``{"res2": ..., "res5": ...}`` maps."""

    def __init__(self, cfg: FocalNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        dims = cfg.stage_dims
        self.patch_embed = _embed(3, dims[0], cfg, stem=True)
        last = cfg.num_stages - 1
        self.layers = nn.ModuleList(FocalStage(dims[i], cfg, i, downsample=i < last) for i in range(cfg.num_stages))
        # Output norms are registered after ``layers`` (checkpoint key order); only for exported stages.
        for i, name in enumerate(FEATURE_NAMES[: cfg.num_stages]):
            if name in cfg.out_features:
                self.add_module(f"norm{i}", nn.LayerNorm(dims[i]))

    @property
    def size_divisibility(self) -> int:
        return 32

    @property
    def out_channels(self) -> dict[str, int]:
        return self.cfg.out_channels

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        if image.dim() != 4 or image.shape[1] != 3:
            raise ValueError(f"expected a [B, 3, H, W] image, got shape {tuple(image.shape)}")
        x = self.patch_embed(image)
        outs: dict[str, torch.Tensor] = {}
        for i, stage in enumerate(self.layers):
            h, w = x.shape[2:]
            tokens, x = stage(_tokens(x), h, w)
            name = FEATURE_NAMES[i]
            if name in self.cfg.out_features:
                outs[name] = _nchw(getattr(self, f"norm{i}")(tokens), h, w).contiguous()
            if x is None:
                break
        return outs


def build_backbone(cfg: FocalNetConfig) -> FocalNet:
    """Build the FocalNet backbone described by ``cfg`` (weights are left at their initial values)."""
    return FocalNet(cfg)
