"""Image and prompt-mask pre-processing for SEEM v1 (spec §1), without torchvision.

Pipeline of the official demo: RGB uint8 frame -> bicubic resize of the short side to 512 (long side
truncated) -> ``(x - mean) / std`` -> zero padding bottom/right to a multiple of 32 (after normalising,
so the padding is the mean colour).

Resize fidelity: the reference resizes a PIL image (``torchvision.transforms.Resize``, BICUBIC). Here
``F.interpolate(mode="bicubic", antialias=True)`` is used, which implements the same PIL filter (Keys
cubic, a = -0.5, support widened when downscaling). Like PIL, uint8 images are resized horizontally first,
rounded/clipped to 8 bits, then resized vertically. The remaining difference is PIL's fixed-point
arithmetic: on DAVIS frames (854x480 -> 910x512) at most 1 grey level on < 0.03 % of the values.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "PIXEL_MEAN",
    "PIXEL_STD",
    "SIZE_DIVISIBILITY",
    "PreprocessedImage",
    "hwc_to_chw",
    "resized_shape",
    "resize_image",
    "normalize_image",
    "padded_shape",
    "pad_to_multiple",
    "preprocess_image",
    "resize_prompt_mask",
    "pad_prompt_mask",
]

PIXEL_MEAN: tuple[float, float, float] = (123.675, 116.280, 103.530)  # RGB, 0..255 scale
PIXEL_STD: tuple[float, float, float] = (58.395, 57.120, 57.375)
SIZE_DIVISIBILITY = 32
DEMO_SHORT_SIDE = 512


@dataclass(frozen=True)
class PreprocessedImage:
    """A model-ready image batch.

    ``tensor``: normalised, padded ``[B, 3, Hp, Wp]`` float32; ``image_size``: resized unpadded ``(H, W)``;
    ``original_size``: ``(H0, W0)`` of the input frame.
    """

    tensor: torch.Tensor
    image_size: tuple[int, int]
    original_size: tuple[int, int]

    @property
    def padded_size(self) -> tuple[int, int]:
        return int(self.tensor.shape[-2]), int(self.tensor.shape[-1])


def hwc_to_chw(image: np.ndarray) -> torch.Tensor:
    """An ``H x W x 3`` RGB uint8 array (PIL/cv2 after BGR->RGB) -> ``[3, H, W]`` uint8 tensor."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 array, got shape {image.shape}")
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).contiguous()


def resized_shape(height: int, width: int, short_side: int, max_size: int | None = None) -> tuple[int, int]:
    """Output ``(h, w)`` of torchvision's ``Resize(short_side, max_size=max_size)``.

    The long side is truncated (``int``), not rounded: 854x480 -> 910x512.
    """
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = short_side, int(short_side * long / short)
    if max_size is not None and new_long > max_size:
        new_short, new_long = int(max_size * new_short / new_long), max_size
    return (new_long, new_short) if width <= height else (new_short, new_long)


def resize_image(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """PIL-style bicubic resize of ``[3, H, W]`` or ``[B, 3, H, W]`` to ``size = (h, w)``.

    uint8 input gives uint8 output (rounded half up and clamped, like PIL); float input stays float.
    """
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    batched = image.dim() == 4
    x = (image if batched else image[None]).float()
    if image.dtype == torch.uint8:
        # Like PIL: horizontal pass, round/clip to 8 bits, then vertical pass.
        x = _to_uint8_levels(_bicubic(x, (x.shape[-2], size[1])))
        out = _to_uint8_levels(_bicubic(x, size)).to(torch.uint8)
    else:
        out = _bicubic(x, size).to(image.dtype)
    return out if batched else out[0]


def _bicubic(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True)


def _to_uint8_levels(x: torch.Tensor) -> torch.Tensor:
    """Round half up and clip to 0..255 (PIL's 8-bit rounding), staying in float."""
    return torch.floor(x + 0.5).clamp_(0, 255)


def normalize_image(
    image: torch.Tensor,
    mean: tuple[float, float, float] = PIXEL_MEAN,
    std: tuple[float, float, float] = PIXEL_STD,
) -> torch.Tensor:
    """``(image - mean) / std`` per RGB channel on the 0..255 scale; returns float32 ``[..., 3, H, W]``."""
    x = image.float()
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return (x - m) / s


def padded_shape(height: int, width: int, divisor: int = SIZE_DIVISIBILITY) -> tuple[int, int]:
    """``(h, w)`` rounded up to multiples of ``divisor``."""
    return -(-height // divisor) * divisor, -(-width // divisor) * divisor


def pad_to_multiple(x: torch.Tensor, divisor: int = SIZE_DIVISIBILITY, value: float | bool = 0) -> torch.Tensor:
    """Pad the last two dims of ``x`` at the bottom/right with ``value`` up to multiples of ``divisor``."""
    h, w = x.shape[-2:]
    hp, wp = padded_shape(h, w, divisor)
    if (hp, wp) == (h, w):
        return x
    out = x.new_full((*x.shape[:-2], hp, wp), value)
    out[..., :h, :w] = x
    return out


def preprocess_image(
    image: torch.Tensor,
    short_side: int | None = DEMO_SHORT_SIDE,
    max_size: int | None = None,
    divisor: int = SIZE_DIVISIBILITY,
) -> PreprocessedImage:
    """RGB uint8 ``[3, H0, W0]`` (or ``[B, 3, H0, W0]``) -> resized, normalised, padded batch.

    ``short_side=None`` skips the resize (the image is used at its own size, as in the fixtures).
    """
    if image.dim() not in (3, 4) or image.shape[-3] != 3:
        raise ValueError(f"expected a [3, H, W] or [B, 3, H, W] RGB image, got shape {tuple(image.shape)}")
    h0, w0 = int(image.shape[-2]), int(image.shape[-1])
    if short_side is not None:
        image = resize_image(image, resized_shape(h0, w0, short_side, max_size))
    x = normalize_image(image)
    size = (int(x.shape[-2]), int(x.shape[-1]))
    x = pad_to_multiple(x if x.dim() == 4 else x[None], divisor)
    return PreprocessedImage(tensor=x, image_size=size, original_size=(h0, w0))


def resize_prompt_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize a binary prompt mask ``[..., h, w]`` to ``size`` as the demo does: bilinear, then ``> 0``.

    Note ``> 0`` keeps every pixel touched by the mask, so thin strokes survive downscaling.
    """
    lead = mask.shape[:-2]
    x = mask.reshape(-1, 1, *mask.shape[-2:]).float()
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    return (x > 0).reshape(*lead, *size)


def pad_prompt_mask(mask: torch.Tensor, divisor: int = SIZE_DIVISIBILITY) -> torch.Tensor:
    """Pad a prompt mask ``[..., H, W]`` with False at the bottom/right to the padded image size."""
    return pad_to_multiple(mask.bool(), divisor, value=False)
