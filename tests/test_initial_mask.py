"""Prompt -> first-frame mask on real DAVIS frames; prompts are derived from the ground truth, never from outputs."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage.morphology import skeletonize

from eval.runner import interior_point
from vos.engine import VideoFrame
from vos.engines.initial_mask import _demote_surrounding_colours, initial_mask
from vos.engines.moving_region import MOTION_FRAMES, frame_motion
from vos.errors import PromptError
from vos.masks import read_label_png
from vos.prompts import Box, ObjectPrompt, Point, Scribble
from vos.video import ByteLRUCache, read_image


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


def _frames(root: Path, sequence: str, count: int) -> list[np.ndarray]:
    return [read_image(root / "JPEGImages" / "480p" / sequence / f"{index:05d}.jpg") for index in range(count)]


# GrabCut from the click alone scores 0.05, 0.05 and 0.02 IoU here (it grows into the road or the crowd); the
# motion over the next frames outlines the vehicle (0.83, 0.84, 0.76 when the test was written).
@pytest.mark.parametrize("sequence", ["car-turn", "drift-turn", "motorbike"])
def test_click_uses_the_motion_of_the_following_frames(davis16_root: Path, sequence: str) -> None:
    frames = _frames(davis16_root, sequence, 1 + MOTION_FRAMES)
    gt = read_label_png(davis16_root / "Annotations" / "480p" / sequence / "00000.png") > 0
    mask = initial_mask(frames[0], ObjectPrompt(object_id=1, points=[_gt_interior_point(gt)]), following=frames[1:])
    assert _iou(mask, gt) > 0.7


def test_click_on_an_object_still_in_the_next_frames(davis16_root: Path) -> None:
    """The floating mallard does not move over the next frames, so no motion outlines it; GrabCut then starts from a
    square around the click. With the square's half-side a quarter of the frame's short side the duck was lost
    (IoU 0.01, the square held mostly water); at 0.18 it is found (0.75 when the test was written)."""
    frames = _frames(davis16_root, "mallard-fly", 1 + MOTION_FRAMES)
    gt = read_label_png(davis16_root / "Annotations" / "480p" / "mallard-fly" / "00000.png") > 0
    mask = initial_mask(frames[0], ObjectPrompt(object_id=1, points=[_gt_interior_point(gt)]), following=frames[1:])
    assert _iou(mask, gt) > 0.5


# The region moving like the click also holds the water moving with the object, out to the frame's border: the boat's
# wake, the swan's reflection and the rippled water beside it, and GrabCut learnt the object's colours from all of it
# (IoU 0.16 and 0.37). The cut from the colours of the click's core stays on the object, and the moving water beyond
# it is dropped (0.45 and 0.93 when the test was written).
@pytest.mark.parametrize(("sequence", "least_iou"), [("boat", 0.4), ("blackswan", 0.8)])
def test_click_drops_the_water_moving_around_the_object(davis16_root: Path, sequence: str, least_iou: float) -> None:
    frames = _frames(davis16_root, sequence, 1 + MOTION_FRAMES)
    gt = read_label_png(davis16_root / "Annotations" / "480p" / sequence / "00000.png") > 0
    prompt = ObjectPrompt(object_id=1, points=[_gt_interior_point(gt)])
    mask = initial_mask(frames[0], prompt, following=frames[1:])
    assert _iou(mask, gt) > least_iou
    # the two cuts run on two threads, each drawing from its own random generator: the same mask every time
    assert np.array_equal(initial_mask(frames[0], prompt, following=frames[1:]), mask)


def test_click_too_near_the_edge_of_its_moving_region_keeps_its_mask(davis16_root: Path) -> None:
    """mallard-fly's frame 50: the duck runs out of the frame, and the click is 4 pixels from the edge of the region
    moving like it. Its core (49 pixels) is too small to learn the duck's colours from: cutting the mask down to
    that core's cut took IoU 0.59 to 0.00 (0.59 when the test was written)."""
    folder = davis16_root / "JPEGImages" / "480p" / "mallard-fly"
    frames = [read_image(folder / f"{index:05d}.jpg") for index in range(50, 51 + MOTION_FRAMES)]
    gt = read_label_png(davis16_root / "Annotations" / "480p" / "mallard-fly" / "00050.png") > 0
    click = interior_point(gt)  # as `vos eval` clicks: the frame's border counts as the duck's border
    mask = initial_mask(frames[0], ObjectPrompt(object_id=1, points=[click]), following=frames[1:])
    assert _iou(mask, gt) > 0.5


# From the tight box alone: 0.42, 0.49 and 0.52 IoU (the kite's lines, the swing's frame and the scenery around the
# toy train are taken as object); with the motion split 0.83, 0.83 and 0.79.
@pytest.mark.parametrize("sequence", ["kite-walk", "swing", "train"])
def test_box_uses_the_motion_of_the_following_frames(davis16_root: Path, sequence: str) -> None:
    frames = _frames(davis16_root, sequence, 1 + MOTION_FRAMES)
    gt = read_label_png(davis16_root / "Annotations" / "480p" / sequence / "00000.png") > 0
    mask = initial_mask(frames[0], ObjectPrompt(object_id=1, box=_gt_box(gt)), following=frames[1:])
    assert _iou(mask, gt) > 0.7


def test_box_restarts_grabcut_that_lost_the_object(davis16_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """GrabCut's k-means start decides whether the boat is found (IoU 0.62 at 480 pixels with the RNG seeded 0, 3 or
    4) or lost (0.03 with 1, 2 or 5: 1% of its box kept); the first start, at 400 pixels, loses it from every seed.
    Seeds shifted by one make the finer restarts begin with a losing one too; the box path must notice each time and
    start again (restarting at the first start's 400 pixels, it keeps 0.01)."""
    frames = _frames(davis16_root, "boat", 1 + MOTION_FRAMES)
    gt = read_label_png(davis16_root / "Annotations" / "480p" / "boat" / "00000.png") > 0
    seed_rng = cv2.setRNGSeed
    monkeypatch.setattr(cv2, "setRNGSeed", lambda seed: seed_rng(seed + 1))
    mask = initial_mask(frames[0], ObjectPrompt(object_id=1, box=_gt_box(gt)), following=frames[1:])
    assert _iou(mask, gt) > 0.5


# GrabCut's fast first start alone (400 pixels, one iteration) gives 0.58 and 0.73 IoU here (RNG seeds 0-5:
# 0.58-0.59, 0.73-0.77): the horse's legs and the duck's outline are cut coarsely; the refiner drawing the mask from
# it gives 0.66 and 0.82 (0.66, 0.82-0.84).
@pytest.mark.parametrize(("sequence", "least_iou"), [("horsejump-low", 0.62), ("mallard-water", 0.79)])
def test_box_mask_is_drawn_by_the_refiner(davis16_root: Path, sequence: str, least_iou: float) -> None:
    frames = _frames(davis16_root, sequence, 1 + MOTION_FRAMES)
    gt = read_label_png(davis16_root / "Annotations" / "480p" / sequence / "00000.png") > 0
    mask = initial_mask(frames[0], ObjectPrompt(object_id=1, box=_gt_box(gt)), following=frames[1:])
    assert _iou(mask, gt) > least_iou


def test_box_covering_the_whole_frame_gives_a_mask(davis16_root: Path) -> None:
    frames = _frames(davis16_root, "car-turn", 1 + MOTION_FRAMES)
    height, width = frames[0].shape[:2]
    prompt = ObjectPrompt(object_id=1, box=Box(x0=0, y0=0, x1=width - 1, y1=height - 1))
    for following in ([], frames[1:]):  # GrabCut has no background sample to learn from without motion
        mask = initial_mask(frames[0], prompt, following=following)
        assert mask.shape == (height, width) and mask.dtype == bool and mask.any()


@pytest.mark.parametrize("prompt", [
    ObjectPrompt(object_id=1, points=[Point(x=32, y=24)]),
    ObjectPrompt(object_id=1, box=Box(x0=0, y0=0, x1=63, y1=47)),
])
def test_uniform_frames_give_the_seeded_region(prompt: ObjectPrompt) -> None:
    frame = np.full((48, 64, 3), 90, np.uint8)
    for following in ([], [frame.copy()] * MOTION_FRAMES):
        mask = initial_mask(frame, prompt, following=following)
        assert mask.shape == (48, 64) and mask.dtype == bool
        assert mask[24, 32]  # nothing tells the clicked (or boxed) pixel from its surroundings: it stays object


def test_fortran_order_mask_prompt_comes_back_c_contiguous() -> None:
    mask = np.zeros((48, 64), bool, order="F")
    mask[10:20, 5:30] = True
    result = initial_mask(np.zeros((48, 64, 3), np.uint8), ObjectPrompt(object_id=1, mask=mask))
    assert result.flags.c_contiguous and np.array_equal(result, mask)


def test_frame_motion_is_measured_once_per_frame_for_all_its_prompts() -> None:
    """Each prompt on a frame (another object, a box after a click) reuses the frame's motion: the following frames
    are read and the flow computed once, and the cached speed gives the same mask as the frames themselves."""
    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur(rng.uniform(0, 255, (96, 160, 3)).astype(np.float32), (0, 0), 2).astype(np.uint8)
    frames = []
    for t in range(1 + MOTION_FRAMES):
        image = texture.copy()
        cv2.circle(image, (50 + 4 * t, 48), 18, (220, 60, 40), -1)
        frames.append(image)
    reads: list[int] = []

    def read(index: int) -> np.ndarray:
        reads.append(index)
        return frames[index]

    frame = VideoFrame(0, frames[0], cache=ByteLRUCache(1 << 24), read=read, num_frames=len(frames))
    speed = frame_motion(frame)
    assert speed is not None and frame_motion(frame) is speed
    assert reads == list(range(1, 1 + MOTION_FRAMES))
    prompt = ObjectPrompt(object_id=1, points=[Point(x=50, y=48)])
    assert np.array_equal(initial_mask(frames[0], prompt, speed=speed),
                          initial_mask(frames[0], prompt, following=frames[1:]))
    last = VideoFrame(len(frames) - 1, frames[-1], cache=ByteLRUCache(1 << 24), read=read, num_frames=len(frames))
    reads.clear()
    speed = frame_motion(last)  # nothing follows the last frame: the frames before it show the disc moving
    assert reads == list(range(len(frames) - 2, -1, -1))
    assert speed is not None and speed[48, 50 + 4 * MOTION_FRAMES] > 2 * speed[10, 10]
    lone = VideoFrame(0, frames[0], cache=ByteLRUCache(1 << 24), read=read, num_frames=1)
    assert frame_motion(lone) is None  # a video of one frame has no motion


def test_box_colours_more_common_around_it_start_as_background() -> None:
    """A grey wall in and around the box starts as probable background; the object's red, only inside, stays
    probable object; nothing outside the box changes."""
    frame = np.full((60, 80, 3), 128, np.uint8)
    frame[20:40, 30:45] = (200, 30, 30)
    trimap = np.full((60, 80), cv2.GC_BGD, np.uint8)
    trimap[15:45, 25:55] = cv2.GC_PR_FGD
    _demote_surrounding_colours(frame, trimap)
    box = trimap[15:45, 25:55]
    assert np.all(box[5:25, 5:20] == cv2.GC_PR_FGD)  # the red block
    assert np.count_nonzero(box == cv2.GC_PR_BGD) == box.size - 20 * 15  # the grey rest of the box
    assert np.count_nonzero(trimap == cv2.GC_BGD) == trimap.size - box.size
