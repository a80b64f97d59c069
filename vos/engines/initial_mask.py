"""Prompt -> first-frame mask without learned weights: GrabCut seeded by the prompt.

A mask prompt is taken as given. Boxes, points and scribbles become GrabCut's trimap: a box bounds the object
(everything outside is background, and inside it the colours more common around the box than within it start as
probable background), positive clicks and strokes are sure foreground, negative ones sure background, and the
region the object probably covers is guessed from the positive seeds when no box is given. GrabCut runs on a crop
around that region, downscaled, because its cost (its graph cut above all) grows with the pixel count and the
iterations. Boxes and strokes run at 480 pixels and 2 iterations: on DAVIS 2016 train 5 iterations gave the same IoU
(click 0.679 vs 0.685, box 0.771 vs 0.770) at twice the cost. Clicks must answer at once (issue 11: <= 150 ms per
prompt in a session), so they run at 360 pixels and 1 iteration: DAVIS 2016 train click IoU 0.673 against 0.674 at
480/2, with GrabCut's median CPU time 78 ms against 208 ms (320/1: 0.650; 240/2: 0.618; GrabCut at 240 with a
frozen-model graph cut redrawing the boundary at 480: 0.621, so the loss at low resolution is in the regions it
chooses, not at their boundary). Box at 360/1 would lose 0.03 (0.737).

A box's IoU hangs on GrabCut's k-means start: on DAVIS 2016 train, with the RNG seeded 0 to 5, it is 0.769, 0.745,
0.751, 0.769, 0.769, 0.747 (boat comes out as the boat or as almost nothing), so box settings are compared on their
mean over seeds 0-5: 480/2 0.758, 480/1 0.748, 400/2 0.740, 360/2 0.734, 400/1 0.732. A start that loses the object
(keeps less than ``MIN_BOX_SHARE`` of the box) is now retried from the next seed: 480/2 gives 0.765-0.771 over six
seed sequences (mean 0.768; 0.769 from seed 0 as before), and only such a start costs another GrabCut.
GrabCut is about 80% of a box prompt's time in a session (bench/bench_session.py), mostly its graph cuts over the
box's own pixels: cutting only the box plus 8 pixels (a third of the crop), with colour models learnt on the whole
crop, saves 15% of its iterations' time and gives 0.743 (seeds 0-3, against 0.758); a first pass at half resolution
before the one at 480 gives 0.706 (seeds 0-5); a k-means start on a quarter of the crop's pixels 0.755 (seeds 0-3) for
18% less GrabCut time.

Given the frames that follow, the video's motion outlines the object (:mod:`vos.engines.moving_region`): clicks
extend to the region moving like the clicked pixels, and a box's moving part starts as object and the rest of the box
as background. On the 30 DAVIS 2016 train sequences this raises the first-frame IoU of a click at the object's
interior point from 0.33 to 0.69, and of the tight ground-truth box from 0.70 to 0.77.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from vos.engines.moving_region import MOTION_FRAMES, moving_part, moving_region, relative_motion
from vos.errors import PromptError
from vos.prompts import ObjectPrompt

GEOMETRIC_KINDS = frozenset({"mask", "points", "box", "scribble"})

# Without a box (and without a motion outline), the object is assumed to extend this fraction of the frame's shorter
# side around a lone click (DAVIS 2016 train click IoU 0.673 at 0.25, 0.699 at 0.18, 0.695 at 0.15: the three
# sequences whose clicked object does not move in the next frames; GrabCut from a lone click is erratic there) ...
POINT_EXTENT = 0.18
# ... and this fraction of the seeds' own extent beyond the bounding box of several seeds or strokes.
SEED_MARGIN = 0.35
# Background context kept around the probable-object region: GrabCut learns the background colours from it. For a
# box at a fixed resolution (240 pixels) DAVIS 2016 train box IoU is 0.758 at 0.5, 0.742 at 0.3, 0.730 at 0.2,
# 0.714 at 0.1 (seed 0), and 0.740 at 0.5 against 0.735 at 0.75 and 0.727 at 1.0 (seeds 0-1).
CONTEXT_MARGIN = 0.5
# Lab quantisation levels per channel of the colour histograms that compare a box's inside with its surroundings.
BOX_COLOUR_BINS = 16
# A clicked object's moving region (see _outline_by_motion) is trusted unless it covers more than this share of the
# frame (the camera's motion was not fitted) ...
MAX_MOTION_SHARE = 0.6
# ... and its bounding box grown by this share of its size on each side holds the background GrabCut learns from.
MOTION_BOX_MARGIN = 0.1
# GrabCut's cost grows with the pixels of its crop and its iterations (its graph cut dominates). Clicks must answer
# at once (issue 11: <= 150 ms per prompt); boxes and strokes keep the finer, slower setting (see the docstring).
CLICK_SIDE, CLICK_ITERATIONS = 360, 1
GRABCUT_SIDE, GRABCUT_ITERATIONS = 480, 2
# A tight box is mostly object (on DAVIS 2016 train at least 16% of it: kite-walk). GrabCut keeping less than this
# share of a box lost the object in a bad k-means start (boat keeps 1% of its box with the RNG seeded 1, 2 or 5, and
# 25% with 0, 3 or 4), so it starts again from the next seed, up to BOX_STARTS starts in all.
MIN_BOX_SHARE = 0.05
BOX_STARTS = 4


def initial_mask(
    frame: np.ndarray,
    prompt: ObjectPrompt,
    following: Sequence[np.ndarray] = (),
    speed: np.ndarray | None = None,
) -> np.ndarray:
    """The object's mask (bool ``[H, W]``) on ``frame`` (RGB uint8) from its mask, points, box and scribbles.

    ``following`` are the frames after ``frame`` in the video (RGB, same size; the first ``MOTION_FRAMES`` are used):
    given them, the object's motion against the camera outlines it (see the module docstring). ``speed``, that
    motion already measured (:func:`relative_motion` of ``frame`` over them, e.g. kept by :func:`frame_motion` for
    every prompt on the frame), replaces them.
    """
    if prompt.mask is not None:
        return np.ascontiguousarray(prompt.mask, dtype=bool)
    if not prompt.kinds & GEOMETRIC_KINDS:
        raise PromptError(
            f"object {prompt.object_id}: a mask, points, box or scribble is needed to find it on the frame")
    assert all(later.shape == frame.shape for later in following), "following frames must match the frame's size"
    height, width = frame.shape[:2]
    trimap = _trimap(prompt, height, width)
    if speed is None and following and (_clicks_only(prompt) or prompt.box is not None):
        speed = relative_motion(frame, following[:MOTION_FRAMES])
    if _clicks_only(prompt) and speed is not None:
        _outline_by_motion(speed, trimap)
    if prompt.box is not None:
        _demote_surrounding_colours(frame, trimap)
        if speed is not None:
            _split_box_by_motion(speed, trimap)
    fg_seed = trimap == cv2.GC_FGD
    iterations, side = (CLICK_ITERATIONS, CLICK_SIDE) if _clicks_only(prompt) else (GRABCUT_ITERATIONS, GRABCUT_SIDE)
    for seed in range(BOX_STARTS if prompt.box is not None else 1):
        mask = _grabcut_in_crop(frame, trimap, iterations, side, seed)
        if prompt.box is None or not _lost_in_box(mask, _box_pixels(prompt, height, width)):
            break
    mask |= fg_seed
    return _keep_seeded_components(mask, fg_seed)


def _trimap(prompt: ObjectPrompt, height: int, width: int) -> np.ndarray:
    """GrabCut's label map: sure/probable background/foreground from the prompt's geometry."""
    positive, negative = seed_masks(prompt, height, width)
    if prompt.box is None and not positive.any():
        raise PromptError(f"object {prompt.object_id}: the prompt marks no foreground (only negative points/strokes)")
    if prompt.box is not None:
        trimap = np.full((height, width), cv2.GC_BGD, np.uint8)
        x0, y0, x1, y1 = _box_pixels(prompt, height, width)
        trimap[y0:y1, x0:x1] = cv2.GC_PR_FGD
    elif any(scribble.positive for scribble in prompt.scribbles):
        # Strokes sample the object's colours well: the region around them starts as probable background, so
        # GrabCut learns the object model from the strokes alone and grows it to what matches them.
        trimap = np.full((height, width), cv2.GC_BGD, np.uint8)
        x0, y0, x1, y1 = _probable_region(positive, height, width)
        trimap[y0:y1, x0:x1] = cv2.GC_PR_BGD
    else:
        # A few clicks sample too few colours for that: the region around them starts as probable object.
        trimap = np.full((height, width), cv2.GC_PR_BGD, np.uint8)
        x0, y0, x1, y1 = _probable_region(positive, height, width)
        trimap[y0:y1, x0:x1] = cv2.GC_PR_FGD
    trimap[positive] = cv2.GC_FGD
    trimap[negative] = cv2.GC_BGD
    return trimap


def _clicks_only(prompt: ObjectPrompt) -> bool:
    return prompt.box is None and not prompt.scribbles and any(point.positive for point in prompt.points)


def _outline_by_motion(speed: np.ndarray, trimap: np.ndarray) -> None:
    """Replace the guessed extent around clicks by the region moving like them: probable object inside it, probable
    background in the rest of its box grown by ``MOTION_BOX_MARGIN``, sure background beyond. Seeds stay as they are.
    Left unchanged when the clicked pixels do not move against the camera or their region spans most of the frame."""
    height, width = trimap.shape
    size = (speed.shape[1], speed.shape[0])
    seeds = cv2.resize((trimap == cv2.GC_FGD).astype(np.uint8), size, interpolation=cv2.INTER_AREA) > 0
    region = moving_region(speed, seeds)
    if region is None or region.mean() > MAX_MOTION_SHARE:
        return
    region = cv2.resize(region.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST).astype(bool)
    ys, xs = np.nonzero(region)
    grow_x, grow_y = MOTION_BOX_MARGIN * (xs.max() - xs.min()), MOTION_BOX_MARGIN * (ys.max() - ys.min())
    x0, y0 = max(0, int(xs.min() - grow_x)), max(0, int(ys.min() - grow_y))
    x1, y1 = min(width, int(xs.max() + grow_x) + 1), min(height, int(ys.max() + grow_y) + 1)
    free = (trimap == cv2.GC_PR_FGD) | (trimap == cv2.GC_PR_BGD)
    outline = np.full_like(trimap, cv2.GC_BGD)
    outline[y0:y1, x0:x1] = cv2.GC_PR_BGD
    outline[region] = cv2.GC_PR_FGD
    trimap[free] = outline[free]


def _split_box_by_motion(speed: np.ndarray, trimap: np.ndarray) -> None:
    """Inside the box, start what moves like its fastest part as probable object and the rest as probable background.

    Motion overrides the colour guess of :func:`_demote_surrounding_colours` where the box's object moves against
    the camera: a boat's wake or a swing's frame has colours of its own, but only the object moves like the object.
    """
    height, width = trimap.shape
    inside = (trimap == cv2.GC_PR_FGD) | (trimap == cv2.GC_PR_BGD)
    if not inside.any():
        return
    speed = cv2.resize(speed, (width, height), interpolation=cv2.INTER_LINEAR)
    moving = moving_part(speed, inside)
    if moving is not None:
        trimap[moving] = cv2.GC_PR_FGD
        trimap[inside & ~moving] = cv2.GC_PR_BGD


def _demote_surrounding_colours(frame: np.ndarray, trimap: np.ndarray) -> None:
    """Start the box's pixels whose colour is rarer inside the box than around it as probable background.

    A box around a thin or concave object is mostly background; starting all of it as object lets GrabCut's object
    model absorb a background colour that covers much of the box (blackswan's grey wall). A colour more frequent in
    the ring around the box (the crop's context) than inside is background evidence the box prompt itself gives.
    """
    inside = trimap == cv2.GC_PR_FGD
    if not inside.any():
        return
    x0, y0, box_width, box_height = cv2.boundingRect(inside.astype(np.uint8))
    mx, my = int(CONTEXT_MARGIN * box_width) + 8, int(CONTEXT_MARGIN * box_height) + 8
    # Only the box and its ring are looked at: colours, counts and labels are computed on their rectangle alone.
    window = np.s_[max(0, y0 - my):y0 + box_height + my, max(0, x0 - mx):x0 + box_width + mx]
    inside = inside[window]
    inside_count = np.count_nonzero(inside)
    if inside_count == inside.size:  # the box covers the frame: no ring to compare with
        return
    lab = cv2.cvtColor(np.ascontiguousarray(frame[window]), cv2.COLOR_RGB2LAB).astype(np.uint16) * BOX_COLOUR_BINS >> 8
    colour = (lab[..., 0] * BOX_COLOUR_BINS + lab[..., 1]) * BOX_COLOUR_BINS + lab[..., 2]
    bins = BOX_COLOUR_BINS**3
    inside_counts = np.bincount(colour[inside], minlength=bins)
    ring_counts = np.bincount(colour.ravel(), minlength=bins) - inside_counts  # the ring: the rectangle less the box
    inside_hist = (inside_counts + 0.5) / inside_count
    ring_hist = (ring_counts + 0.5) / (inside.size - inside_count)
    demoted = inside & (inside_hist < ring_hist)[colour]
    if np.count_nonzero(demoted) < inside_count:  # GrabCut needs some object samples to start from
        trimap[window][demoted] = cv2.GC_PR_BGD


def _box_pixels(prompt: ObjectPrompt, height: int, width: int) -> tuple[int, int, int, int]:
    box = prompt.box
    assert box is not None
    x0, y0 = max(0, int(np.floor(box.x0))), max(0, int(np.floor(box.y0)))
    x1, y1 = min(width, int(np.ceil(box.x1)) + 1), min(height, int(np.ceil(box.y1)) + 1)
    return x0, y0, x1, y1


def seed_masks(prompt: ObjectPrompt, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Sure-foreground and sure-background pixels: clicks as small discs, strokes as drawn."""
    positive = np.zeros((height, width), np.uint8)
    negative = np.zeros((height, width), np.uint8)
    radius = max(2, round(0.008 * min(height, width)))  # a click is imprecise by a few pixels
    for point in prompt.points:
        target = positive if point.positive else negative
        cv2.circle(target, (int(round(point.x)), int(round(point.y))), radius, 1, -1)
    for scribble in prompt.scribbles:
        target = positive if scribble.positive else negative
        target |= scribble.rasterize(height, width).astype(np.uint8)
    negative &= 1 - positive  # where seeds contradict, the positive one wins
    return positive.astype(bool), negative.astype(bool)


def _probable_region(positive: np.ndarray, height: int, width: int) -> tuple[int, int, int, int]:
    """Where the object probably lies when no box bounds it: around the positive seeds."""
    ys, xs = np.nonzero(positive)
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    reach = POINT_EXTENT * min(height, width)
    grow_x = max(reach, SEED_MARGIN * (x1 - x0))
    grow_y = max(reach, SEED_MARGIN * (y1 - y0))
    return (max(0, int(x0 - grow_x)), max(0, int(y0 - grow_y)),
            min(width, int(x1 + grow_x)), min(height, int(y1 + grow_y)))


def _lost_in_box(mask: np.ndarray, box: tuple[int, int, int, int]) -> bool:
    """Whether ``mask`` keeps less than ``MIN_BOX_SHARE`` of the box ``(x0, y0, x1, y1)`` (GrabCut lost the object)."""
    x0, y0, x1, y1 = box
    return np.count_nonzero(mask[y0:y1, x0:x1]) < MIN_BOX_SHARE * (x1 - x0) * (y1 - y0)


def _grabcut_in_crop(frame: np.ndarray, trimap: np.ndarray, iterations: int, max_side: int,
                     seed: int = 0) -> np.ndarray:
    """Run GrabCut on the probable region plus background context, downscaled; return the full-frame mask.
    ``seed`` seeds GrabCut's k-means start."""
    height, width = trimap.shape
    x0, y0, region_width, region_height = cv2.boundingRect((trimap != cv2.GC_BGD).astype(np.uint8))
    x1, y1 = x0 + region_width, y0 + region_height
    mx, my = int(CONTEXT_MARGIN * region_width) + 8, int(CONTEXT_MARGIN * region_height) + 8
    cx0, cy0, cx1, cy1 = max(0, x0 - mx), max(0, y0 - my), min(width, x1 + mx), min(height, y1 + my)
    crop_image, crop_trimap = frame[cy0:cy1, cx0:cx1], trimap[cy0:cy1, cx0:cx1]
    scale = min(1.0, max_side / max(crop_image.shape[:2]))
    if scale < 1.0:
        size = (max(1, round(crop_image.shape[1] * scale)), max(1, round(crop_image.shape[0] * scale)))
        crop_image = cv2.resize(crop_image, size, interpolation=cv2.INTER_AREA)
        crop_trimap = _downscale_trimap(crop_trimap, size)
    labels = _grabcut(crop_image, crop_trimap, iterations, seed)
    probability = labels.astype(np.float32)
    if scale < 1.0:
        probability = cv2.resize(probability, (cx1 - cx0, cy1 - cy0), interpolation=cv2.INTER_LINEAR)
    mask = np.zeros((height, width), bool)
    mask[cy0:cy1, cx0:cx1] = probability > 0.5
    return mask


def _downscale_trimap(trimap: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Shrink a trimap without losing thin seeds: a sure label survives wherever any of its pixels falls."""
    small = cv2.resize(trimap, size, interpolation=cv2.INTER_NEAREST)
    for label in (cv2.GC_BGD, cv2.GC_FGD):  # foreground last: where seeds contradict, positive wins
        seeds = cv2.resize((trimap == label).astype(np.float32), size, interpolation=cv2.INTER_AREA) > 0
        if label == cv2.GC_BGD:
            seeds &= small != cv2.GC_PR_FGD  # a box's outside must not eat into its inside at the rim
        small[seeds] = label
    return small


def _grabcut(image: np.ndarray, trimap: np.ndarray, iterations: int, seed: int = 0) -> np.ndarray:
    """GrabCut's foreground (bool) on an RGB image with the given trimap, its k-means started from ``seed``."""
    labels = trimap.copy()
    has_bg = np.isin(labels, (cv2.GC_BGD, cv2.GC_PR_BGD)).any()
    has_fg = np.isin(labels, (cv2.GC_FGD, cv2.GC_PR_FGD)).any()
    if not (has_bg and has_fg):  # GrabCut needs samples of both to fit its colour models
        return np.isin(labels, (cv2.GC_FGD, cv2.GC_PR_FGD))
    bgd_model, fgd_model = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    bgr = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR)
    cv2.setRNGSeed(seed)  # GrabCut seeds its k-means from the global RNG; reseed so results are reproducible
    cv2.grabCut(bgr, labels, None, bgd_model, fgd_model, iterations, cv2.GC_INIT_WITH_MASK)
    return np.isin(labels, (cv2.GC_FGD, cv2.GC_PR_FGD))


def _keep_seeded_components(mask: np.ndarray, fg_seed: np.ndarray) -> np.ndarray:
    """Drop blobs that touch no positive seed (with no seeds, keep blobs of at least a tenth of the largest)."""
    count, components, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count <= 2:
        return mask
    if fg_seed.any():
        keep = np.unique(components[fg_seed & mask])
    else:
        areas = stats[1:, cv2.CC_STAT_AREA]
        keep = 1 + np.flatnonzero(areas >= 0.1 * areas.max())
    return np.isin(components, keep[keep > 0])
