"""Mask decoding refuses hostile sizes before allocating anything, and returns C-ordered arrays."""

from __future__ import annotations

import io
import tracemalloc

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from vos.errors import PromptError
from vos.masks import MAX_MASK_PIXELS, decode_rle, encode_rle, image_size, mask_from_png_bytes, rle_size


def test_decoded_rle_is_c_ordered_and_matches_pycocotools():
    rng = np.random.default_rng(0)
    mask = rng.random((180, 320)) > 0.6
    rle = encode_rle(mask)
    decoded = decode_rle(rle)
    assert decoded.flags.c_contiguous and decoded.dtype == bool
    reference = coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)
    np.testing.assert_array_equal(decoded, reference)
    np.testing.assert_array_equal(decoded, mask)


@pytest.mark.parametrize("rle, fragment", [
    ({"size": [-1, 5], "counts": "0"}, "must be positive"),
    ({"size": [0, 5], "counts": []}, "must be positive"),
    ({"size": [10**6, 10**6], "counts": "0"}, "larger than the limit"),
    ({"size": [20000, 20000], "counts": "0"}, "larger than the limit"),
    ({"size": [2.5, 4], "counts": "0"}, "two integers"),
    ({"size": [True, 4], "counts": "0"}, "two integers"),
    ({"size": [2, 2], "counts": [1, 1]}, "cover 2 pixels"),
    ({"size": [2, 2], "counts": [5, -1]}, "non-negative"),
    ({"size": [2, 2], "counts": "~"}, "unexpected character"),
    ({"size": [2, 2], "counts": "1" * 3 + "P"}, "ends inside a number"),
    ({"size": [2, 2], "counts": 7}, "string or a list"),
])
def test_hostile_rle_is_refused_before_allocating(rle, fragment):
    tracemalloc.start()
    try:
        with pytest.raises(PromptError, match=fragment):
            decode_rle(rle)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20  # the 20000x20000 size once cost 419 MB before being refused


def test_rle_size_is_read_without_decoding():
    assert rle_size({"size": [480, 854], "counts": "whatever"}) == (480, 854)


def png(width: int, height: int, mode: str = "1") -> bytes:
    out = io.BytesIO()
    Image.new(mode, (width, height)).save(out, format="PNG")
    return out.getvalue()


def test_png_bomb_is_refused_from_its_header():
    bomb = png(14000, 14000)  # 24 kB on disk, 196 M pixels decoded
    assert len(bomb) < 100_000
    with pytest.raises(PromptError, match=f"larger than the limit of {MAX_MASK_PIXELS} pixels"):
        mask_from_png_bytes(bomb)
    with pytest.raises(PromptError, match="larger than the limit"):
        image_size(png(20000, 20000), "reference")


def test_unreadable_png_message_names_no_python_object():
    with pytest.raises(PromptError) as error:
        mask_from_png_bytes(b"not an image at all")
    assert "<_io" not in str(error.value) and "not a readable PNG" in str(error.value)


def test_png_mask_is_decoded_c_ordered():
    data = io.BytesIO()
    Image.fromarray(np.eye(6, 8, dtype=np.uint8) * 255).save(data, format="PNG")
    mask = mask_from_png_bytes(data.getvalue())
    assert mask.shape == (6, 8) and mask.flags.c_contiguous and mask.sum() == 6
    assert image_size(data.getvalue()) == (8, 6)
