"""Small pixel-region helpers shared by the weight-free engine's steps."""

from __future__ import annotations

import cv2
import numpy as np


def within(mask: np.ndarray, distance: float) -> np.ndarray:
    """Pixels within ``distance`` of ``mask`` (the mask included)."""
    near = np.zeros(mask.shape, bool)
    if not mask.any():
        return near
    # Only the mask's box grown by ``distance`` can be near it, and the distance transform's shortest paths stay in
    # that box, so transforming just the box gives the same pixels for far less work.
    box = grown(bounds(mask), distance + 2, mask.shape)
    near[box] = cv2.distanceTransform((~mask[box]).astype(np.uint8), cv2.DIST_L2, 3) <= distance
    return near


def bounds(region: np.ndarray) -> tuple[slice, slice]:
    """The bounding box of a non-empty region as a pair of slices."""
    # Reducing rows and columns first is far cheaper than listing every pixel (0.03 vs 0.5 ms at 480x270).
    ys, xs = np.flatnonzero(region.any(axis=1)), np.flatnonzero(region.any(axis=0))
    return slice(int(ys[0]), int(ys[-1]) + 1), slice(int(xs[0]), int(xs[-1]) + 1)


def resize(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``image`` resampled (bilinear) to ``shape`` (rows, columns)."""
    if image.shape[:2] == shape:
        return image
    return cv2.resize(image, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


def grown(box: tuple[slice, slice], margin: float, shape: tuple[int, int]) -> tuple[slice, slice]:
    """``box`` grown by ``margin`` pixels (rounded up) on every side, within a frame of ``shape``."""
    pad = int(np.ceil(margin))
    return (slice(max(0, box[0].start - pad), min(shape[0], box[0].stop + pad)),
            slice(max(0, box[1].start - pad), min(shape[1], box[1].stop + pad)))
