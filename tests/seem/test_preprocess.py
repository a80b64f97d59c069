"""SEEM pre-processing: resize geometry, PIL-compatible bicubic, normalisation, padding, prompt masks."""

from pathlib import Path

import numpy as np
import pytest
import torch

from vos.seem.preprocess import (
    PIXEL_MEAN,
    PIXEL_STD,
    hwc_to_chw,
    normalize_image,
    pad_prompt_mask,
    pad_to_multiple,
    padded_shape,
    preprocess_image,
    resize_image,
    resize_prompt_mask,
    resized_shape,
)


def test_davis_frame_geometry() -> None:
    assert resized_shape(480, 854, 512) == (512, 910)  # long side truncated (910.93 -> 910)
    assert padded_shape(512, 910) == (512, 928)
    assert resized_shape(854, 480, 512) == (910, 512)  # portrait
    assert resized_shape(480, 854, 800, max_size=1333) == (749, 1333)  # torchvision max_size rule
    assert resized_shape(512, 512, 512) == (512, 512)


def test_preprocess_davis_sized_frame() -> None:
    frame = torch.randint(0, 256, (3, 480, 854), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    out = preprocess_image(frame)
    assert out.tensor.shape == (1, 3, 512, 928) and out.tensor.dtype == torch.float32
    assert out.image_size == (512, 910) and out.original_size == (480, 854) and out.padded_size == (512, 928)
    # Zero padding after normalisation, bottom/right only.
    assert out.tensor[..., 910:].abs().max() == 0
    torch.testing.assert_close(out.tensor[0, :, :, :910], normalize_image(resize_image(frame, (512, 910))))


def test_normalisation_constants() -> None:
    mean = torch.tensor(PIXEL_MEAN).view(3, 1, 1).expand(3, 2, 2)
    assert normalize_image(mean).abs().max() < 1e-6
    x = normalize_image(torch.full((3, 1, 1), 255, dtype=torch.uint8))
    expected = [(255 - m) / s for m, s in zip(PIXEL_MEAN, PIXEL_STD)]
    torch.testing.assert_close(x.flatten(), torch.tensor(expected))


def test_no_resize_and_no_padding_for_fixture_size() -> None:
    image = torch.randint(0, 256, (3, 256, 320), dtype=torch.uint8)
    out = preprocess_image(image, short_side=None)
    assert out.tensor.shape == (1, 3, 256, 320) and out.image_size == (256, 320)
    assert resize_image(image, (256, 320)) is image


def test_pad_to_multiple_generic() -> None:
    x = torch.ones(2, 3, 33, 64)
    y = pad_to_multiple(x)
    assert y.shape == (2, 3, 64, 64) and y[..., 33:, :].abs().sum() == 0 and y[..., :33, :].min() == 1


def test_resize_matches_pil_bicubic(seem_fixtures: Path) -> None:
    image_mod = pytest.importorskip("PIL.Image")
    pil = image_mod.open(seem_fixtures / "tiny_input_image.png").convert("RGB")
    chw = hwc_to_chw(np.array(pil))
    for size in [(512, 640), (101, 127)]:  # upscale and (antialiased) downscale
        ref = torch.from_numpy(np.array(pil.resize(size[::-1], image_mod.BICUBIC))).permute(2, 0, 1)
        got = resize_image(chw, size)
        diff = (got.int() - ref.int()).abs()
        assert got.dtype == torch.uint8 and got.shape == ref.shape
        assert diff.max() <= 1 and (diff > 0).float().mean() < 1e-3


def test_prompt_mask_resize_and_pad() -> None:
    mask = torch.zeros(1, 480, 854, dtype=torch.bool)
    mask[0, 200, 100:700] = True  # a 1-pixel stroke survives bilinear + (> 0)
    resized = resize_prompt_mask(mask, (512, 910))
    assert resized.shape == (1, 512, 910) and resized.dtype == torch.bool and resized.any(dim=-1).sum() >= 1
    padded = pad_prompt_mask(resized)
    assert padded.shape == (1, 512, 928) and not padded[..., 910:].any()
    assert torch.equal(padded[..., :910], resized)


def test_hwc_to_chw_rejects_grey() -> None:
    with pytest.raises(ValueError):
        hwc_to_chw(np.zeros((4, 4), dtype=np.uint8))
