"""Which pixels of a frame move unlike the camera over the next few frames: the video's own cue for a prompt.

A click says *where* an object is but not how far it extends; its colours alone often grow into the wrong region.
Most objects people track move differently from their background, so the motion over the following frames outlines
them: DIS optical flow from the prompt frame to each following frame, minus the camera's motion (a homography fitted
with RANSAC to the whole frame's flow, which the background dominates), leaves the object's own motion. Flow that
fails its forward-backward check (occlusions, the smear at a moving object's leading edge, textureless areas) counts
as no motion: the object's region is then a little too small, never smeared into the background. The last frame of
a video, with nothing after it, is measured against the frames before it (the interactive protocol often corrects
the last frame: on 7 DAVIS 2016 train sequences with 5 click rounds, together with the correction fallback of
:mod:`vos.engines.correction`, J&F after round 5 0.374 -> 0.378, after round 1 0.300 -> 0.325).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from vos.engine import VideoFrame

# Width the motion is measured at: the cue outlines the object, the colour model then finds its boundary.
MOTION_WIDTH = 480
# How many following frames the motion cue uses; more see slow objects move, fewer lose fewer to occlusion.
MOTION_FRAMES = 4
# Forward-backward flow disagreement (pixels, plus this share of the flow's length) above which flow is not trusted.
_CONSISTENCY_PIXELS = 1.0
_CONSISTENCY_SHARE = 0.1
# Pixels/frame of camera-relative motion below which nothing counts as moving (flow noise on still scenes).
_MIN_SPEED = 0.3
# A pixel is part of the clicked object's moving region when it moves at least this share of the click's speed.
_SPEED_SHARE = 0.35
# Within a box, the object is taken to be what moves like the box's fastest pixels (this percentile of its speeds),
# when they move at least this fast (on DAVIS train a box whose fastest part is slower holds flow noise) ...
_FASTEST_PERCENTILE = 80
_MIN_PART_SPEED = 0.6
# ... and when the moving part is more than this share of the box and less than all but this share.
_MIN_PART_SHARE = 0.05
# Step (working pixels) of the grid of flow vectors the camera's homography is fitted to.
_CAMERA_SAMPLE_STEP = 6
# DIS preset of the motion cue: on DAVIS 2016 train the FAST preset costs the click's first-frame IoU 0.673 -> 0.614.
_DIS_PRESET = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM


def relative_motion(frame: np.ndarray, following: Sequence[np.ndarray]) -> np.ndarray:
    """Speed (pixels/frame at ``MOTION_WIDTH``) of each pixel of ``frame`` relative to the camera, measured over
    ``following`` (RGB frames of the same size after it); float32 ``[h, w]`` at the motion width."""
    assert following, "the motion cue needs at least one following frame"
    first = _gray(frame)
    flow = cv2.DISOpticalFlow_create(_DIS_PRESET)
    height, width = first.shape
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    points = np.stack([xs, ys], axis=-1)
    speeds = []
    for step, later in enumerate(following, start=1):
        gray = _gray(later)
        forward = flow.calc(first, gray, None)
        backward = flow.calc(gray, first, None)
        target = points + forward
        returned = cv2.remap(backward, target[..., 0], target[..., 1], cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REPLICATE)
        inconsistent = _length(forward + returned) > _CONSISTENCY_PIXELS + _CONSISTENCY_SHARE * _length(forward)
        residual = _length(target - _camera_motion(points, forward, step))
        residual[inconsistent] = 0.0
        speeds.append(residual / step)
    return cv2.GaussianBlur(np.median(np.stack(speeds), axis=0), (0, 0), 2)


def frame_motion(frame: VideoFrame) -> np.ndarray | None:
    """:func:`relative_motion` of a session's frame over its next ``MOTION_FRAMES`` frames, kept in the session's
    frame cache so that every prompt on the frame (each object, each click) measures it once. The last frame has
    none after it and measures over the frames before it (motion against the camera outlines the object either
    way); None for a video of one frame."""

    def measure() -> np.ndarray | None:
        others = frame.following(MOTION_FRAMES) or _preceding(frame, MOTION_FRAMES)
        return relative_motion(frame.image, others) if others else None

    return frame.cached("moving_region/speed", measure)


def _preceding(frame: VideoFrame, count: int) -> list[np.ndarray]:
    """Up to ``count`` frames before ``frame``, nearest first (so each is one more frame apart, as following are)."""
    if frame.read is None:
        return []
    return [frame.read(i) for i in range(frame.index - 1, max(-1, frame.index - 1 - count), -1)]


def moving_region(speed: np.ndarray, seeds: np.ndarray) -> np.ndarray | None:
    """The connected region around ``seeds`` (bool, same size as ``speed``) that moves like them, with its holes
    filled; None when the seeds do not move against the camera."""
    if not seeds.any():
        return None
    seed_speed = float(np.median(speed[cv2.dilate(seeds.astype(np.uint8), np.ones((11, 11), np.uint8)) > 0]))
    threshold = max(_MIN_SPEED, _SPEED_SHARE * seed_speed)
    if seed_speed <= threshold:
        return None
    count, components = cv2.connectedComponents((speed > threshold).astype(np.uint8))
    labels = np.unique(components[seeds])
    labels = labels[labels > 0]
    if not labels.size:
        return None
    return _fill_holes(np.isin(components, labels))


def moving_part(speed: np.ndarray, region: np.ndarray) -> np.ndarray | None:
    """The pixels of ``region`` (bool, non-empty) that move like its fastest part; None when that part is too slow
    to tell from flow noise, or when nearly none or nearly all of the region moves (no split to trust)."""
    fastest = float(np.percentile(speed[region], _FASTEST_PERCENTILE))
    if fastest < _MIN_PART_SPEED:
        return None
    moving = region & (speed > _SPEED_SHARE * fastest)
    share = np.count_nonzero(moving) / np.count_nonzero(region)
    return moving if _MIN_PART_SHARE < share < 1.0 - _MIN_PART_SHARE else None


def _gray(frame: np.ndarray) -> np.ndarray:
    image = _downscale(frame)
    return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


def _downscale(frame: np.ndarray) -> np.ndarray:
    height, width = frame.shape[:2]
    if width <= MOTION_WIDTH:
        return frame
    size = (MOTION_WIDTH, max(1, round(height * MOTION_WIDTH / width)))
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA)


def _length(vectors: np.ndarray) -> np.ndarray:
    """Each vector's length (float32 ``[..., 2]``): what ``np.linalg.norm(vectors, axis=-1)`` computes, bit for bit,
    ten times faster on these interleaved arrays (0.17 against 1.8 ms at 480x270; a cold frame's motion takes 12)."""
    x, y = vectors[..., 0], vectors[..., 1]
    return np.sqrt(x * x + y * y)


def _camera_motion(points: np.ndarray, forward: np.ndarray, frames_apart: int) -> np.ndarray:
    """Where the camera's motion (a homography fitted to the whole flow) sends each pixel; no motion if unfittable.
    The RANSAC tolerance grows with the frames between the two images, as flow errors do."""
    step = _CAMERA_SAMPLE_STEP
    source = points[::step, ::step].reshape(-1, 2)
    target = source + forward[::step, ::step].reshape(-1, 2)
    homography = None
    if len(source) >= 8:
        cv2.setRNGSeed(0)  # RANSAC samples from the global RNG; reseed so results are reproducible
        homography, _ = cv2.findHomography(source, target, cv2.RANSAC, 1.0 * frames_apart, maxIters=500)
    if homography is None:
        return points
    return cv2.perspectiveTransform(points.reshape(-1, 1, 2), homography).reshape(points.shape)


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """``mask`` with every background region that does not reach the frame's border filled."""
    padded = np.pad(~mask, 1, constant_values=True).astype(np.uint8)
    cv2.floodFill(padded, None, (0, 0), 0)
    return mask | padded[1:-1, 1:-1].astype(bool)
