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

Boxes must answer at once too (issue 11), and 480/2 took 218-257 ms in a session. Most of GrabCut's time is its first
graph cut, whose colour models, learnt on the trimap, tell little apart (blackswan: k-means start 35 ms, first
iteration 93 ms, second 34 ms). So a box's first start runs at ``BOX_SIDE`` (400) pixels and one iteration, from a
k-means start on every third pixel of each side, and the engine's learned refiner (:mod:`vos.engines.refiner`) then
draws the mask, with GrabCut's as its prior and the log-ratio of Lab colour histograms of that mask and of the rest of
the crop as its colour cue. DAVIS 2016 train box IoU over seed sequences 0-11: 0.753-0.776, mean 0.768 (480/2: 0.766;
over seeds 0-5 0.771 against 0.768); ``vos eval davis`` (seed 0): train 0.768 against 0.769, val check 0.717 against
0.689. A session's box prompt (bench/bench_session.py, blackswan) takes 135-150 ms (140 the median of five runs)
against 240-252 ms for 480/2, runs interleaved on the same machine at load 3.4-3.9 on its 2 cores.
With the refiner, over seeds 0-11: k-means on every second pixel 0.767, on every fourth 0.764, at 380 pixels 0.764.
Over seeds 0-5 (every second pixel): without the refiner 0.755 (it adds most on thin or ragged outlines:
horsejump-low 0.58 -> 0.66), at 360 pixels 0.765, OpenCV's own k-means start on every second pixel 0.758, and as
colour cue 16-level histograms 0.766 or GrabCut's colour models 0.766 (refitted to its cut 0.771). Boat is lost at 400
pixels from every seed, so restarts run at ``GRABCUT_SIDE`` (480), where it is found (0.61 against 0.03). Tried and
dropped: the first graph cut replaced by each pixel's likelier colour model, median-filtered (0.757 at 480 pixels, no
faster than 480/1 whose second cut then has harder work); the first iteration at 240 or 320 pixels before one at 480
(0.716, 0.720: at low resolution the cut's smoothness weighs more and thin parts go); GrabCut rebuilt on PyMaxflow
(its max-flow alone took 73 ms per iteration on the 480-pixel crops, more than OpenCV's whole iteration).

Given the frames that follow, the video's motion outlines the object (:mod:`vos.engines.moving_region`): clicks
extend to the region moving like the clicked pixels, and a box's moving part starts as object and the rest of the box
as background. On the 30 DAVIS 2016 train sequences this raises the first-frame IoU of a click at the object's
interior point from 0.33 to 0.69, and of the tight ground-truth box from 0.70 to 0.77. That region can also hold
surroundings moving with the object (a swan's reflection, a boat's wake); where the click's mask runs out of the
frame, a second cut learns the object's colours from the click's core alone and tells them apart
(:func:`_moving_surroundings`).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np

from vos.engines.moving_region import MOTION_FRAMES, moving_part, moving_region, relative_motion
from vos.engines.refiner import crop_around, cues, object_probability
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
# A box's first start runs at BOX_SIDE pixels and one iteration, from a k-means start on every KMEANS_STRIDE-th pixel
# of each side, and the learned refiner draws its mask (see the docstring); a start that lost the object is retried
# at GRABCUT_SIDE (at BOX_SIDE boat is lost from every seed). The box IoUs in the comments below are DAVIS 2016 train
# means over seeds 0-5 with k-means on every second pixel.
BOX_SIDE, BOX_ITERATIONS = 400, 1
KMEANS_STRIDE = 3
# The refiner's unit of distance in pixels of GrabCut's crop: the classical engine's (2% of its 480-pixel working
# width; at the crop's own resolution or at the working resolution the box IoU is the same, 0.771 against 0.772).
REFINER_REACH = 0.02 * 480
# Pixels the refiner finds at least this likely the object's are kept (the classical engine's threshold; 0.5 gave
# 0.769 against 0.771).
REFINED_PROBABILITY = 0.4
# Lab levels per channel of the object and background colour histograms whose log-ratio is the refiner's colour cue
# (box IoU 0.772 at 32, 0.766 at 16; GrabCut's own models refitted to its cut: 0.771).
REFINER_COLOUR_BINS = 32
GMM_COMPONENTS = 5  # per colour model, as in OpenCV's GrabCut
# A click's cut from its core's colours (see _moving_surroundings) has collapsed when it keeps less than this share
# of the core, and a core of fewer pixels than this is too small to learn the object's colours from (100 per colour
# component: mallard-fly's frame 50, clicked 4 pixels from the edge of the region moving like the click, lost all
# but its core, IoU 0.59 -> 0.00).
CORE_SHARE = 0.5
MIN_CORE_PIXELS = 100 * GMM_COMPONENTS
_CORE_CUTS = ThreadPoolExecutor(max_workers=1, thread_name_prefix="click-core")  # see _click_mask


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
    if prompt.box is not None:
        mask = _segment_box(frame, trimap, _box_pixels(prompt, height, width))
    elif _clicks_only(prompt):
        mask = _click_mask(frame, trimap, prompt)
    else:
        mask = _grabcut_in_crop(frame, trimap, GRABCUT_ITERATIONS, GRABCUT_SIDE)
    mask |= fg_seed
    return _keep_seeded_components(mask, fg_seed)


def _click_mask(frame: np.ndarray, trimap: np.ndarray, prompt: ObjectPrompt) -> np.ndarray:
    """GrabCut's mask for clicks, less the moving surroundings it ran into (see :func:`_moving_surroundings`).

    Only a mask that reaches the frame's border can have such surroundings, and only a region that does can give
    one. There the cut from the clicks' core runs on another thread alongside the clicks' own cut (OpenCV releases
    the GIL, and each thread draws GrabCut's random starts from its own generator), so that a click costs little
    more time where it is needed and none elsewhere (``bench/bench_session.py``'s warm click on blackswan, run in
    turn with the code before: 132-145 -> 149-155 ms; alone it would add the core cut's 85-97 ms)."""
    if not _touches_border(trimap != cv2.GC_BGD):
        return _grabcut_in_crop(frame, trimap, CLICK_ITERATIONS, CLICK_SIDE)
    core = _click_core(trimap, prompt)
    core_cut = _CORE_CUTS.submit(_grabcut_in_crop, frame, trimap, CLICK_ITERATIONS, CLICK_SIDE, object_sample=core)
    mask = _grabcut_in_crop(frame, trimap, CLICK_ITERATIONS, CLICK_SIDE)
    if not _touches_border(mask):
        return mask
    return mask & ~_moving_surroundings(mask, core_cut.result(), core)


def _click_core(trimap: np.ndarray, prompt: ObjectPrompt) -> np.ndarray:
    """Around each positive click, the largest disc inside the region the object probably covers: what the click
    surely points at."""
    probable = np.isin(trimap, (cv2.GC_FGD, cv2.GC_PR_FGD))
    depth = cv2.distanceTransform(np.pad(probable, 1).astype(np.uint8), cv2.DIST_L2, 5)[1:-1, 1:-1]
    core = np.zeros(trimap.shape, np.uint8)
    for point in prompt.points:
        x, y = int(point.x), int(point.y)
        if point.positive:
            cv2.circle(core, (x, y), max(1, round(float(depth[y, x]))), 1, -1)
    return core.astype(bool) & probable


def _moving_surroundings(mask: np.ndarray, core_cut: np.ndarray, core: np.ndarray) -> np.ndarray:
    """The parts of a click's ``mask`` that are its surroundings moving along with it, to be dropped.

    The region moving like a click can take in surroundings that move too: water rippling around a swimming swan,
    its reflection, a boat's wake. GrabCut learns the object's colours from that whole region and keeps them.
    ``core_cut`` is the cut whose object colours were learnt on the ``core`` around the clicks alone. Where it
    stays inside the frame, the parts of ``mask`` outside it that run out of the frame are the moving surroundings
    (an object the click points at rarely fills a frame's edge while its own colours stay inside). Nothing is
    dropped when ``core`` is too small to learn colours from, or when ``core_cut`` collapses (it keeps less than
    half of ``core``: the core's colours do not even explain the core).

    Chosen on DAVIS 2016 train, clicks at the ground truth's interior point: on frame 0 IoU 0.699 -> 0.709 (only
    boat changes, 0.16 -> 0.45); on every 10th frame (208 clicks) 0.670 -> 0.681, eight clicks gaining (boat's five,
    mallard-water's two 0.06-0.14 -> 0.65-0.73, bmx-bumps 0.50 -> 0.75) and three losing (objects of several colours
    that reach the border themselves: motocross-bumps 0.62 -> 0.24, stroller 0.60 -> 0.34; kite-walk 0.68 -> 0.59);
    on each sequence's frame with most object on the border none changes. The core's cut at 240 or 300 pixels
    instead of the clicks' own 360 gives the same on train (0.680, 0.682 against 0.681), so it keeps theirs. Val
    check: only blackswan changes, 0.37 -> 0.93 (0.68 at 300 pixels).
    """
    core_pixels = np.count_nonzero(core)
    collapsed = np.count_nonzero(core_cut) < CORE_SHARE * core_pixels
    if core_pixels < MIN_CORE_PIXELS or collapsed or _touches_border(core_cut):
        return np.zeros_like(mask)
    count, components = cv2.connectedComponents((mask & ~core_cut).astype(np.uint8), connectivity=8)
    on_border = np.unique(np.concatenate([components[0], components[-1], components[:, 0], components[:, -1]]))
    return np.isin(components, on_border[on_border > 0])


def _touches_border(mask: np.ndarray) -> bool:
    return bool(mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())


def _segment_box(frame: np.ndarray, trimap: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """A box's mask: GrabCut's fast start drawn by the refiner, started again (finer, from the next seed) while it
    loses the object."""
    for seed in range(BOX_STARTS):
        side = BOX_SIDE if seed == 0 else GRABCUT_SIDE
        mask = _grabcut_in_crop(frame, trimap, BOX_ITERATIONS, side, seed, refine=True)
        if not _lost_in_box(mask, box):
            break
    return mask


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
    colour = _lab_codes(frame[window], BOX_COLOUR_BINS)
    demoted = inside & (_colour_log_ratio(colour, inside, BOX_COLOUR_BINS) < 0)[colour]
    if np.count_nonzero(demoted) < inside_count:  # GrabCut needs some object samples to start from
        trimap[window][demoted] = cv2.GC_PR_BGD


def _lab_codes(image: np.ndarray, bins: int) -> np.ndarray:
    """Each RGB pixel's Lab colour quantised to ``bins`` levels per channel, as one code below ``bins**3``."""
    lab = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2LAB).astype(np.uint16) * bins >> 8
    return (lab[..., 0] * bins + lab[..., 1]) * bins + lab[..., 2]


def _colour_log_ratio(codes: np.ndarray, inside: np.ndarray, bins: int) -> np.ndarray:
    """Per colour code, the log-ratio of its frequency among the ``inside`` pixels and among the others (both
    present), with half a count added to every bin."""
    inside_counts = np.bincount(codes[inside], minlength=bins**3)
    outside_counts = np.bincount(codes.ravel(), minlength=bins**3) - inside_counts
    inside_count = np.count_nonzero(inside)
    return (np.log((inside_counts + 0.5) / inside_count)
            - np.log((outside_counts + 0.5) / (inside.size - inside_count)))


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
                     seed: int = 0, refine: bool = False, object_sample: np.ndarray | None = None) -> np.ndarray:
    """Run GrabCut on the probable region plus background context, downscaled; return the full-frame mask.
    ``seed`` seeds GrabCut's k-means start. With ``refine`` (boxes) the k-means start is fitted on a sample of the
    pixels and the learned refiner draws the mask from GrabCut's (see the module docstring). With
    ``object_sample`` (bool, frame-sized) the object's colour model is learnt on those pixels alone (see
    :func:`_grabcut_from_sample`)."""
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
    if object_sample is not None:
        sample = object_sample[cy0:cy1, cx0:cx1].astype(np.uint8)
        sample = cv2.resize(sample, crop_trimap.shape[::-1], interpolation=cv2.INTER_NEAREST).astype(bool)
        labels = _grabcut_from_sample(crop_image, crop_trimap, sample, iterations, seed)
    else:
        labels = _grabcut(crop_image, crop_trimap, iterations, seed, KMEANS_STRIDE if refine else 1)
    probability, threshold = labels.astype(np.float32), 0.5
    if refine and labels.any():
        probability, threshold = _refined(crop_image, labels), REFINED_PROBABILITY
    if scale < 1.0:
        probability = cv2.resize(probability, (cx1 - cx0, cy1 - cy0), interpolation=cv2.INTER_LINEAR)
    mask = np.zeros((height, width), bool)
    mask[cy0:cy1, cx0:cx1] = probability > threshold
    return mask


def _refined(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The learned refiner's probability (float32) that each pixel of ``image`` (RGB) is the object's, with
    ``mask`` (GrabCut's, non-empty) as its prior and the log-ratio of the colour histograms of the mask and of the
    rest of the image as its colour cue (no motion cue); zero beyond its reach and on blobs away from ``mask``."""
    crop = crop_around(mask, REFINER_REACH)
    codes = _lab_codes(image, REFINER_COLOUR_BINS)
    colour = np.zeros(codes[crop].shape, np.float32)  # no colour evidence when the mask fills the image
    if not mask.all():
        colour[:] = _colour_log_ratio(codes, mask, REFINER_COLOUR_BINS)[codes[crop]]
    gray = cv2.cvtColor(np.ascontiguousarray(image[crop]), cv2.COLOR_RGB2GRAY)
    decided = object_probability(cues(gray, mask[crop], colour, None, REFINER_REACH))
    kept = _keep_seeded_components(decided > REFINED_PROBABILITY, mask[crop])  # the blobs overlapping GrabCut's
    probability = np.zeros(mask.shape, np.float32)
    probability[crop] = decided * kept
    return probability


def _downscale_trimap(trimap: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Shrink a trimap without losing thin seeds: a sure label survives wherever any of its pixels falls."""
    small = cv2.resize(trimap, size, interpolation=cv2.INTER_NEAREST)
    for label in (cv2.GC_BGD, cv2.GC_FGD):  # foreground last: where seeds contradict, positive wins
        seeds = cv2.resize((trimap == label).astype(np.float32), size, interpolation=cv2.INTER_AREA) > 0
        if label == cv2.GC_BGD:
            seeds &= small != cv2.GC_PR_FGD  # a box's outside must not eat into its inside at the rim
        small[seeds] = label
    return small


def _grabcut(image: np.ndarray, trimap: np.ndarray, iterations: int, seed: int = 0,
             kmeans_stride: int = 1) -> np.ndarray:
    """GrabCut's foreground (bool) on an RGB image with the given trimap, its k-means started from ``seed`` on every
    ``kmeans_stride``-th pixel of each side (OpenCV's own start, on all of them, for 1)."""
    labels = trimap.copy()
    is_object = np.isin(labels, (cv2.GC_FGD, cv2.GC_PR_FGD))
    sample_size = GMM_COMPONENTS * kmeans_stride
    if min(np.count_nonzero(is_object), np.count_nonzero(~is_object)) < sample_size:
        # GrabCut needs samples of both to fit its colour models; a side this small is not worth a graph cut.
        return is_object
    bgr = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR)
    cv2.setRNGSeed(seed)  # GrabCut seeds its k-means from the global RNG; reseed so results are reproducible
    if kmeans_stride == 1:
        bgd_model, fgd_model = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        cv2.grabCut(bgr, labels, None, bgd_model, fgd_model, iterations, cv2.GC_INIT_WITH_MASK)
    else:
        fgd_model = _kmeans_colour_model(bgr[is_object][::kmeans_stride])
        bgd_model = _kmeans_colour_model(bgr[~is_object][::kmeans_stride])
        cv2.grabCut(bgr, labels, None, bgd_model, fgd_model, iterations, cv2.GC_EVAL)
    return np.isin(labels, (cv2.GC_FGD, cv2.GC_PR_FGD))


def _grabcut_from_sample(image: np.ndarray, trimap: np.ndarray, sample: np.ndarray, iterations: int,
                         seed: int = 0) -> np.ndarray:
    """GrabCut's foreground (bool) when the object's colour model is first learnt on the ``sample`` pixels alone
    (and the background's on the trimap's background): one graph cut with both models frozen, then ``iterations``
    ordinary ones from that cut."""
    labels = trimap.copy()
    is_object = np.isin(labels, (cv2.GC_FGD, cv2.GC_PR_FGD))
    if min(np.count_nonzero(sample), np.count_nonzero(~is_object)) < GMM_COMPONENTS:
        return is_object  # too few pixels to fit a colour model to: nothing to cut with
    bgr = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR)
    cv2.setRNGSeed(seed)  # the k-means starts draw from this thread's RNG; reseed so results are reproducible
    fgd_model, bgd_model = _kmeans_colour_model(bgr[sample]), _kmeans_colour_model(bgr[~is_object])
    cv2.grabCut(bgr, labels, None, bgd_model, fgd_model, 1, cv2.GC_EVAL_FREEZE_MODEL)
    cv2.grabCut(bgr, labels, None, bgd_model, fgd_model, iterations, cv2.GC_EVAL)
    return np.isin(labels, (cv2.GC_FGD, cv2.GC_PR_FGD))


def _kmeans_colour_model(pixels: np.ndarray) -> np.ndarray:
    """A GrabCut colour model (OpenCV's layout: weights, means, covariances) fitted as GrabCut starts its own: one
    Gaussian per k-means cluster of ``pixels`` (BGR uint8 [n, 3], n >= GMM_COMPONENTS)."""
    samples = pixels.astype(np.float32)
    criteria = (cv2.TERM_CRITERIA_MAX_ITER, 10, 0.0)  # GrabCut's own k-means settings
    _, clusters, _ = cv2.kmeans(samples, GMM_COMPONENTS, None, criteria, 1, cv2.KMEANS_PP_CENTERS)
    clusters = clusters.ravel()
    weights, means, covariances = np.zeros(GMM_COMPONENTS), np.zeros((GMM_COMPONENTS, 3)), np.zeros((GMM_COMPONENTS, 9))
    for component in range(GMM_COMPONENTS):
        members = samples[clusters == component].astype(np.float64)
        if len(members) == 0:
            continue
        mean = members.mean(axis=0)
        covariance = members.T @ members / len(members) - np.outer(mean, mean)
        if np.linalg.det(covariance) <= np.finfo(np.float64).eps:  # as GrabCut: a flat cluster gets some variance
            covariance += 0.01 * np.eye(3)
        weights[component], means[component] = len(members) / len(samples), mean
        covariances[component] = covariance.ravel()
    return np.concatenate([weights, means.ravel(), covariances.ravel()])[None]


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
