"""Small pixel-region helpers shared by the weight-free engine's steps."""

from __future__ import annotations

import cv2
import numpy as np


def within(mask: np.ndarray, distance: float) -> np.ndarray:
    """Pixels within ``distance`` of ``mask`` (the mask included)."""
    return cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, 3) <= distance


def bounds(region: np.ndarray) -> tuple[slice, slice]:
    """The bounding box of a non-empty region as a pair of slices."""
    ys, xs = np.nonzero(region)
    return slice(int(ys.min()), int(ys.max()) + 1), slice(int(xs.min()), int(xs.max()) + 1)


def resize(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``image`` resampled (bilinear) to ``shape`` (rows, columns)."""
    if image.shape[:2] == shape:
        return image
    return cv2.resize(image, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
