"""Prompt -> first-frame mask on real DAVIS frames; prompts are derived from the ground truth, never from outputs."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage.morphology import skeletonize

from vos.engines.initial_mask import initial_mask
from vos.errors import PromptError
from vos.masks import read_label_png
from vos.prompts import Box, ObjectPrompt, Point, Scribble
from vos.video import read_image


def _frame_and_gt(root: Path, sequence: str) -> tuple[np.ndarray, np.ndarray]:
    image = read_image(root / "JPEGImages" / "480p" / sequence / "00000.jpg")
    gt = read_label_png(root / "Annotations" / "480p" / sequence / "00000.png") > 0
    return image, gt


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.count_nonzero(a & b) / np.count_nonzero(a | b))


def _gt_box(gt: np.ndarray) -> Box:
    ys, xs = np.nonzero(gt)
    return Box(x0=float(xs.min()), y0=float(ys.min()), x1=float(xs.max()), y1=float(ys.max()))


def _gt_interior_point(gt: np.ndarray) -> Point:
    """The GT pixel farthest from the background: the most unambiguous click."""
    distance = cv2.distanceTransform(gt.astype(np.uint8), cv2.DIST_L2, 5)
    y, x = np.unravel_index(int(distance.argmax()), distance.shape)
    return Point(x=float(x), y=float(y))


@pytest.mark.parametrize("sequence", ["car-roundabout", "cows", "soapbox"])
def test_box_prompt_segments_the_object(davis16_root: Path, sequence: str) -> None:
    image, gt = _frame_and_gt(davis16_root, sequence)
    mask = initial_mask(image, ObjectPrompt(object_id=1, box=_gt_box(gt)))
    assert _iou(mask, gt) > 0.7


def test_box_prompt_segments_the_black_swan(davis16_root: Path) -> None:
    image, gt = _frame_and_gt(davis16_root, "blackswan")
    mask = initial_mask(image, ObjectPrompt(object_id=1, box=_gt_box(gt)))
    assert _iou(mask, gt) > 0.7


@pytest.mark.parametrize("sequence", ["car-roundabout", "libby"])
def test_point_prompt_segments_the_object(davis16_root: Path, sequence: str) -> None:
    image, gt = _frame_and_gt(davis16_root, sequence)
    mask = initial_mask(image, ObjectPrompt(object_id=1, points=[_gt_interior_point(gt)]))
    assert _iou(mask, gt) > 0.5


def test_negative_point_removes_what_it_marks(davis16_root: Path) -> None:
    image, gt = _frame_and_gt(davis16_root, "car-roundabout")
    positive = _gt_interior_point(gt)
    plain = initial_mask(image, ObjectPrompt(object_id=1, points=[positive]))
    wrong = plain & ~gt
    assert wrong.any()
    distance = cv2.distanceTransform(wrong.astype(np.uint8), cv2.DIST_L2, 5)
    y, x = np.unravel_index(int(distance.argmax()), distance.shape)
    negative = Point(x=float(x), y=float(y), positive=False)
    corrected = initial_mask(image, ObjectPrompt(object_id=1, points=[positive, negative]))
    assert not corrected[y, x]


@pytest.mark.parametrize("sequence", ["blackswan", "cows", "libby"])
def test_skeleton_scribble_segments_the_object(davis16_root: Path, sequence: str) -> None:
    image, gt = _frame_and_gt(davis16_root, sequence)
    stroke = Scribble(mask=skeletonize(gt))
    mask = initial_mask(image, ObjectPrompt(object_id=1, scribbles=[stroke]))
    assert _iou(mask, gt) > 0.75


def test_mask_prompt_is_taken_as_given(davis16_root: Path) -> None:
    image, gt = _frame_and_gt(davis16_root, "dog")
    assert np.array_equal(initial_mask(image, ObjectPrompt(object_id=1, mask=gt, box=_gt_box(gt))), gt)


def test_only_negative_seeds_are_rejected() -> None:
    image = np.zeros((48, 64, 3), np.uint8)
    prompt = ObjectPrompt(object_id=1, points=[Point(x=10, y=10, positive=False)])
    with pytest.raises(PromptError, match="no foreground"):
        initial_mask(image, prompt)
