"""The weight-free default engine: optical-flow propagation refined by a tiny learned net with first-frame colour
models.

Every frame, at a reduced working resolution:

1. **Motion prior.** DIS optical flow from the current to the previous frame pulls each object's previous mask
   forward. The flow is computed at a finer resolution (``flow_width``) than the rest: coarse flow loses thin and
   fast parts, and that loss compounds frame after frame. Flow at object boundaries often follows the background
   and drags masks off fast objects, so the object's overall affine motion is fitted with RANSAC to the flow of its
   interior and replaces the per-pixel flow wherever the two disagree.
2. **Motion segmentation.** When the camera moves, the background's motion (a homography fitted with RANSAC to the
   flow away from the object) tells object from background better than colour does: pixels of the prior that move
   exactly like the background are dropped (a mask stuck to the scenery, e.g. a leg left behind on the floor), and
   pixels near it (within 6 band widths) that move like the object and unlike the background are added when their
   colour is likelier object than background (a part coming back from behind an occluder).
3. **Learned refiner.** A tiny convolutional net (:mod:`vos.engines.refiner`, a few thousand weights trained on the
   DAVIS 2016 train sequences by ``eval/train_refiner.py``) decides the pixels within 3 ``band`` widths of the moved
   mask from object-agnostic cues: the moved mask and the distance to its boundary, the log-ratio of the object's
   and its surroundings' colour models (GMMs learnt on the prompt frames when a propagation first needs them, and
   *frozen*: re-anchoring every frame to the prompt's appearance stops the slow drift of pure propagation; looked
   up in a table of quantised colours), the
   grey image, and the motion cue of step 2. It replaced a GrabCut in the band: on the six train sequences it was
   not trained on J&F went from 0.600 to 0.614, and it is cheaper. Its pixels of probability >= 0.4 form the mask.
4. **Clean-up and competition.** Small detached blobs are dropped, because background dragged along by the flow
   would otherwise be propagated forever. Where two objects' masks overlap, the pixel stays with the object the
   refiner finds more probable, so that one object's mask does not spread over another's.
5. **Re-detection.** When too little of the mask has the object's prompt-frame colours, the mask is lost (stuck on
   an occluder or the background); the blob of the frame most like the object replaces it, looked for first among
   the pixels that move unlike the camera (:mod:`vos.engines.redetect`).

Only the previous grey frame (and the next frame's flow, computed ahead on another thread) and each object's mask
and colour models are kept. Full-size masks are the refiner's probabilities upsampled (soft edges, not blocky ones)
and made exclusive: a contested pixel goes to the most probable object. Text and reference-image prompts need the
SEEM engine.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import cv2
import numpy as np
from pydantic import Field

from vos.engine import Engine, EngineOptions, ObjectResult, ObjectState, Propagation, VideoFrame
from vos.engines.correction import corrected_mask
from vos.engines.initial_mask import initial_mask
from vos.engines.moving_region import frame_motion
from vos.engines.redetect import Reacquirer
from vos.engines.refiner import RefinerNet, crop_around, cues, object_probability
from vos.engines.regions import bounds, grown, resize, within
from vos.masks import exclusive_masks
from vos.prompts import ObjectPrompt

_DIS_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}
_MOTION_SAMPLES = 4000  # flow vectors sampled to fit a motion model (6 or 8 parameters)
_MIN_BLOB_SHARE = 0.2  # detached blobs smaller than this share of an object's largest blob are dropped
_BACKGROUND_TOLERANCE = 0.7  # pixels whose flow is this close to the camera's motion move with the background
_SPECKLE = np.ones((3, 3), np.uint8)  # pixels added by motion segmentation must survive an opening with this
# An object's motion is fitted to the part of its mask that moves unlike the camera when that part is at least this
# share of the mask (see _fit_affine). DAVIS 2016 train J&F: 0.718 without, 0.7235 / 0.7232 / 0.7224 at 0.15 / 0.3 /
# 0.5; the six train sequences the refiner never saw 0.614 -> 0.624 at 0.3; val check 0.634 -> 0.635.
_UNLIKE_CAMERA_SHARE = 0.3
# Motion segmentation adds pixels up to this many band widths from the prior: a part coming back from behind a pole
# or a trunk reappears beyond it, not next to the mask. DAVIS 2016 train J&F 0.723 at 2, 0.729 at 4, 0.730 at 6
# (swing 0.61 -> 0.76, dog-agility 0.53 -> 0.59, bmx-bumps 0.37 -> 0.34); val check 0.635 -> 0.652.
_REJOIN_REACH = 6
# Pixels the refiner finds at least this likely the object's are kept in its mask (chosen on held-out train
# sequences: at 0.5 masks shrink a little every frame where the cues are unsure, and the losses add up).
_OBJECT_PROBABILITY = 0.4
# Colour models are looked up per pixel in a table of quantised colours, far cheaper than evaluating the GMMs.
_COLOUR_BITS = 5
_COLOUR_LEVELS = np.stack(np.meshgrid(*[np.arange(2**_COLOUR_BITS)] * 3, indexing="ij"), axis=-1).reshape(-1, 3) * (
    2 ** (8 - _COLOUR_BITS)) + 2 ** (7 - _COLOUR_BITS)  # BGR centre of each table entry, in _colour_index's order


@dataclass(frozen=True)
class _ColourSample:
    """What one anchor frame contributes to an object's colour models: the pixels of the object and of its
    surroundings at working resolution, in row-major order of the crop around it."""

    pixels: np.ndarray  # uint8 [n, 3] BGR
    is_object: np.ndarray  # bool [n]


@dataclass
class ClassicalObject(ObjectState):
    """One object's colour models (GrabCut GMMs), learnt on the pixels of all its anchor frames together."""

    samples: dict[int, _ColourSample] = field(default_factory=dict)  # anchor frame -> its pixels
    bg_model: np.ndarray | None = None  # float64 [1, 65]; None while the anchors lack object or background pixels
    fg_model: np.ndarray | None = None
    _fitted: bool = field(default=False, repr=False)  # whether the models were fitted to the current samples
    _log_ratio: np.ndarray | None = field(default=None, repr=False)  # computed on first use after each fit

    def set_sample(self, frame_index: int, sample: _ColourSample | None) -> None:
        """Set (or with None, drop) an anchor frame's pixels; the models are fitted anew when next needed."""
        if sample is None:
            self.samples.pop(frame_index, None)
        else:
            self.samples[frame_index] = sample
        self._fitted, self._log_ratio = False, None

    @property
    def colour_log_ratio(self) -> np.ndarray | None:
        """The two models' log-ratio per quantised colour (see :func:`_colour_index`), None without models. The
        models are fitted, and the table built, when a propagation first needs them, not on every prompt: a prompt
        pays for neither (the fit over all anchors took a click 24 ms, and more with every prompted frame)."""
        if not self._fitted:
            _learn_colour_models(self)
        if self._log_ratio is None and self.fg_model is not None and self.bg_model is not None:
            self._log_ratio = _gmm_log_likelihood(self.fg_model, _COLOUR_LEVELS) - _gmm_log_likelihood(
                self.bg_model, _COLOUR_LEVELS)
        return self._log_ratio


@dataclass
class _Track:
    """One object in a propagation sweep, at working resolution."""

    mask: np.ndarray  # bool [h, w] on the previous frame of the sweep
    colour_log_ratio: np.ndarray | None  # the object's colour models (see ClassicalObject)
    score: float
    reacquirer: Reacquirer | None = None  # finds the object again when the mask loses it
    probability: np.ndarray | None = None  # float32 [h, w], the refiner's, where it decided the mask


class ClassicalOptions(EngineOptions):
    """Options of the weight-free ``classical`` engine."""

    working_width: int = Field(480, ge=32, le=4096, description=(
        "frames wider than this many pixels are segmented downscaled to it; masks are returned at full size"))
    flow_width: int = Field(640, ge=32, le=4096, description="the same for the optical flow")
    flow_preset: Literal["ultrafast", "fast", "medium"] = Field("medium", description="DIS optical flow preset")
    band: float = Field(0.02, gt=0.0, lt=0.5, description=(
        "the refiner's unit of distance: it decides pixels within 3 bands of the moved mask (its weights were trained "
        "at the default), as a fraction of the working width"))
    flow_tolerance: float = Field(2.0, gt=0.0, le=100.0, description=(
        "pixels a flow vector may deviate from the object's affine motion and still follow it; also how far the "
        "camera's motion must differ from the object's before motion segmentation is used"))


class ClassicalEngine(Engine):
    """Flow propagation + frozen-colour-model graph cut, without learned weights (see the module docstring and
    :class:`ClassicalOptions`)."""

    name: ClassVar[str] = "classical"
    supported_prompts: ClassVar[frozenset[str]] = frozenset({"mask", "points", "box", "scribble"})
    unsupported_hint: ClassVar[str] = "text and reference-image prompts need the 'seem' engine (--engine seem)"
    Options: ClassVar[type[EngineOptions]] = ClassicalOptions
    options: ClassicalOptions

    def __init__(self, options: ClassicalOptions | None = None, **values: Any) -> None:
        super().__init__(options, **values)
        self.refiner: RefinerNet | None = None  # the shipped refiner; eval/train_refiner.py sets the one it trains

    # ------------------------------------------------------------------------------------------------ session API

    def new_object(self, object_id: int) -> ClassicalObject:
        return ClassicalObject(object_id)

    def add_prompt(self, frame: VideoFrame, state: ObjectState, prompt: ObjectPrompt,
                   current: np.ndarray | None) -> ObjectResult:
        assert isinstance(state, ClassicalObject)
        self.check_prompts([prompt])
        if prompt.mask is not None or prompt.box is not None or current is None or not current.any():
            # The next frames' motion outlines a clicked or boxed object (a mask needs no help).
            speed = frame_motion(frame) if prompt.mask is None else None  # once per frame, for all its prompts
            mask = initial_mask(frame.image, prompt, speed=speed)
        else:
            mask = corrected_mask(frame.image, current, prompt, speed=frame_motion(frame))
        bgr, _ = self._working_images(frame)
        small = resize(mask.astype(np.float32), bgr.shape[:2]) > 0.5
        state.set_sample(frame.index, self._colour_sample(bgr, small))
        return ObjectResult(prompt.object_id, mask, 1.0 if mask.any() else 0.0)

    def prepare_frame(self, frame: VideoFrame) -> None:
        self._working_images(frame)
        frame_motion(frame)

    def remove_anchor(self, state: ObjectState, frame_index: int) -> None:
        assert isinstance(state, ClassicalObject)
        state.set_sample(frame_index, None)

    def start_propagation(self) -> _ClassicalPropagation:
        return _ClassicalPropagation(self)

    def _working_images(self, frame: VideoFrame) -> tuple[np.ndarray, np.ndarray]:
        """The frame at working resolution in BGR (GrabCut's channel order) and in grey at flow resolution."""
        options = self.options

        def compute() -> tuple[np.ndarray, np.ndarray]:
            bgr = cv2.cvtColor(_downscale(frame.image, options.working_width), cv2.COLOR_RGB2BGR)
            gray = cv2.cvtColor(_downscale(frame.image, options.flow_width), cv2.COLOR_RGB2GRAY)
            return bgr, gray

        return frame.cached(f"classical/{options.working_width}/{options.flow_width}", compute)

    # ------------------------------------------------------------------------------------------------ per object

    def _colour_sample(self, bgr: np.ndarray, mask: np.ndarray) -> _ColourSample:
        """The object's pixels and those of its surroundings (within 4 band widths) on an anchor frame."""
        if not mask.any():
            return _ColourSample(np.zeros((0, 3), np.uint8), np.zeros(0, bool))
        crop = bounds(within(mask, 4 * self._reach(mask)))
        return _ColourSample(bgr[crop].reshape(-1, 3), mask[crop].reshape(-1))

    def _propagate(self, track: _Track, motion: _FrameMotion, bgr: np.ndarray) -> None:
        prior, motion_cue = self._motion_prior(track, motion, bgr)
        if not prior.any() or track.colour_log_ratio is None:  # no colour models (e.g. the object fills its frames)
            track.mask, track.score = prior, float(prior.any())
            return
        # The crop holds the whole prior and every pixel the refiner may keep, so the rest of the frame stays empty.
        crop, inputs = self.refiner_inputs(track, prior, motion_cue, bgr)
        decided = object_probability(inputs, self.refiner)
        kept = _overlapping(decided > _OBJECT_PROBABILITY, prior[crop])
        track.score = np.count_nonzero(kept & prior[crop]) / max(1, np.count_nonzero(kept | prior[crop]))
        if not kept.any():  # nothing looks like the object any more: keep the moved mask, re-detection may find it
            track.mask, track.probability = prior, None
            return
        # Dropped blobs leave the probability map too; the kept ones keep their soft edges for upsampling.
        track.mask, track.probability = np.zeros_like(prior), np.zeros(prior.shape, np.float32)
        track.mask[crop] = kept
        track.probability[crop] = decided * cv2.dilate(kept.astype(np.uint8), _SPECKLE)

    def refiner_inputs(self, track: _Track, prior: np.ndarray, motion_cue: np.ndarray | None, bgr: np.ndarray
                       ) -> tuple[tuple[slice, slice], np.ndarray]:
        """The crop the refiner decides and its cues there (also what ``eval/train_refiner.py`` trains on)."""
        assert track.colour_log_ratio is not None
        reach = self._reach(prior)
        crop = crop_around(prior, reach)
        colours = np.ascontiguousarray(bgr[crop])
        gray = cv2.cvtColor(colours, cv2.COLOR_BGR2GRAY)
        cue = None if motion_cue is None else motion_cue[crop]
        return crop, cues(gray, prior[crop], track.colour_log_ratio[_colour_index(colours)], cue, reach)

    def _motion_prior(self, track: _Track, motion: _FrameMotion, bgr: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray | None]:
        """The previous mask moved to this frame: per-pixel flow where it follows the object's affine motion,
        corrected by motion segmentation against the camera's motion; and the motion cue (how much farther a
        pixel's flow is from the camera's motion than from the object's, None for a still or unknown camera; it is
        only computed around the prior, where the refiner looks)."""
        previous = track.mask
        if not previous.any():
            return np.zeros_like(previous), None
        # No pixel's flow lands farther than the flow's largest component, so only the mask's box grown by that can
        # pull any of the mask (remapping the whole frame took 0.18 ms per object, a small object's box 0.04 ms).
        local = np.zeros(previous.shape, np.float32)
        reached = grown(bounds(previous), motion.largest_shift + 2, previous.shape)  # + 2: bilinear's far taps
        local[reached] = _warp(previous.astype(np.float32), np.ascontiguousarray(motion.target[reached]))
        interior = np.zeros_like(previous)
        around = grown(bounds(previous), 3, previous.shape)  # the erosion's reach, and a pixel of empty border
        interior[around] = cv2.erode(previous[around].astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        tolerance = self.options.flow_tolerance
        unlike_camera = None if motion.camera_motion is None else (
            lambda rows, columns: motion.unlike_camera(tolerance, (rows, columns)))
        affine = _fit_affine(interior if interior.any() else previous, motion.samples, unlike_camera)
        if affine is None:
            return local > 0.5, None
        height, width = previous.shape
        # ``affine`` maps current to previous coordinates, which is warpAffine's inverse map.
        whole = cv2.warpAffine(previous.astype(np.float32), affine, (width, height),
                               flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
        moved = (local > 0.5) | (whole > 0.5)
        if not moved.any():
            return moved, None
        # Per-pixel motion matters only near the prior, where motion segmentation may add pixels; outside, the
        # prior is empty whichever motion is chosen, and the refiner's motion cue is 0 (measuring it as far as the
        # refiner looks, 3 band widths more, gave the same DAVIS 2016 train J&F, 0.729 against 0.730).
        region = grown(bounds(moved), _REJOIN_REACH * self._reach(previous), previous.shape)
        object_motion = cv2.transform(motion.points[region], affine.astype(np.float32))
        deviation = _distance(object_motion, motion.target[region])
        prior = np.zeros_like(moved)
        prior[region] = np.where(deviation <= self.options.flow_tolerance, local[region], whole[region]) > 0.5
        if motion.camera_motion is None or track.colour_log_ratio is None:
            return prior, None
        if motion.camera_shift(previous) < self.options.flow_tolerance:
            return prior, None  # a still camera: parts of the object at rest would look like background
        prior = self._segment_by_motion(track, prior, bgr, motion, region, object_motion, deviation)
        cue = np.zeros(prior.shape, np.float32)
        cue[region] = motion.from_camera[region] - deviation
        return prior, cue

    def _segment_by_motion(self, track: _Track, prior: np.ndarray, bgr: np.ndarray, motion: _FrameMotion,
                           region: tuple[slice, slice], object_motion: np.ndarray, deviation: np.ndarray
                           ) -> np.ndarray:
        """Drop prior pixels that move with the camera; add nearby ones that move with the object (see step 2).
        ``object_motion`` and ``deviation`` cover ``region``, which holds the prior and 6 band widths around it."""
        assert motion.camera_motion is not None
        from_camera, camera_motion = motion.from_camera[region], motion.camera_motion[region]
        distinct = _distance(object_motion, camera_motion) > self.options.flow_tolerance
        with_camera = distinct & (from_camera < _BACKGROUND_TOLERANCE)
        tolerance = self.options.flow_tolerance
        with_object = (distinct & (deviation <= tolerance) & (from_camera > tolerance)
                       & ~prior[region] & within(prior, _REJOIN_REACH * self._reach(prior))[region])
        ys, xs = np.nonzero(with_object)
        likely = track.colour_log_ratio[_colour_index(bgr[region][ys, xs])] > 0
        added = np.zeros_like(with_object)
        added[ys[likely], xs[likely]] = True
        # Speckle (dark ripples around a dark swan) fits both tests by chance; parts coming back are solid.
        added = cv2.morphologyEx(added.astype(np.uint8), cv2.MORPH_OPEN, _SPECKLE).astype(bool)
        segmented = prior.copy()
        segmented[region] = (prior[region] & ~with_camera) | added
        return segmented

    def _reach(self, mask: np.ndarray) -> float:
        return max(2.0, self.options.band * mask.shape[1])

    # ------------------------------------------------------------------------------------------------ output

    def _results(self, shape: tuple[int, int], tracks: Mapping[int, _Track],
                 seeds: Mapping[int, np.ndarray]) -> dict[int, ObjectResult]:
        """Full-size masks, one object per pixel: seeds are kept as given and win their pixels; the others are
        made exclusive on their probabilities."""
        labels = _exclusive_labels({i: _soft(t) for i, t in tracks.items() if i not in seeds}, shape)
        seeded = exclusive_masks({i: m.astype(np.float32) for i, m in seeds.items()})
        claimed = np.logical_or.reduce(list(seeded.values())) if seeded else None
        results = {i: ObjectResult(i, seeded[i], 1.0 if seeded[i].any() else 0.0) for i in seeds}
        for i, label in labels.items():
            mask = label if claimed is None else label & ~claimed
            results[i] = ObjectResult(i, mask, tracks[i].score if mask.any() else 0.0)
        return results


def _exclusive_labels(probabilities: Mapping[int, np.ndarray], shape: tuple[int, int]) -> dict[int, np.ndarray]:
    """Each object's full-size mask (``shape``) from its working-resolution probability: each pixel goes to the most
    probable object, if above 0.5. Each object is upsampled only around itself, so that many objects cost little."""
    best = np.zeros(shape, np.float32)
    owner = np.zeros(shape, np.int32)  # index into ``probabilities`` + 1; 0 = background
    regions: dict[int, tuple[slice, slice]] = {}  # where each object may own pixels
    for number, probability in enumerate(probabilities.values(), start=1):
        present = probability > 0.5
        if not present.any():
            continue
        rows, columns = grown(bounds(present), 1, present.shape)  # the box of its 3x3 dilation (soft edges)
        upsampled, regions[number] = _upsampled(probability, (rows, columns), shape)
        wins = (upsampled > 0.5) & (upsampled > best[regions[number]])
        np.copyto(best[regions[number]], upsampled, where=wins)  # in place: cheaper than gathering the winners
        np.copyto(owner[regions[number]], number, where=wins)
    masks = {object_id: np.zeros(shape, bool) for object_id in probabilities}
    for number, object_id in enumerate(probabilities, start=1):
        if number in regions:
            masks[object_id][regions[number]] = owner[regions[number]] == number
    return masks


def _upsampled(image: np.ndarray, crop: tuple[slice, slice], shape: tuple[int, int]
               ) -> tuple[np.ndarray, tuple[slice, slice]]:
    """The part of ``image`` resampled (bilinear) to ``shape`` that covers ``crop``, and where that part lies: the
    same values as resampling all of it, for the cost of the crop."""
    height, width = image.shape[:2]
    scale_y, scale_x = height / shape[0], width / shape[1]
    top, bottom = max(0, int(crop[0].start / scale_y) - 1), min(shape[0], int(crop[0].stop / scale_y) + 2)
    left, right = max(0, int(crop[1].start / scale_x) - 1), min(shape[1], int(crop[1].stop / scale_x) + 2)
    # Output pixel (x, y) samples input ((x + 0.5) * scale - 0.5), as cv2.resize does.
    to_input = np.float32([[scale_x, 0, (left + 0.5) * scale_x - 0.5], [0, scale_y, (top + 0.5) * scale_y - 0.5]])
    part = cv2.warpAffine(image, to_input, (right - left, bottom - top), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)
    return part, (slice(top, bottom), slice(left, right))


class _ClassicalPropagation(Propagation):
    """One sweep: the previous frame's grey image (flow is computed from each frame to the previous one in the
    sweep's order, so a backward sweep is a forward sweep over the reversed video) and each object's mask.

    Once the sweep's direction is known, the next frame's flow is computed on another thread while this frame's
    objects are (the flow needs no mask): decoding, the working images and DIS are about half of a one-object
    frame's time. The step waits for it before returning, so nothing runs between steps."""

    def __init__(self, engine: ClassicalEngine) -> None:
        self._engine = engine
        self._flow = cv2.DISOpticalFlow_create(_DIS_PRESETS[engine.options.flow_preset])
        self._previous_gray: np.ndarray | None = None
        self._previous_index: int | None = None
        self._ahead: tuple[int, np.ndarray] | None = None  # the next frame's index and flow, computed in advance
        self._tracks: dict[int, _Track] = {}

    def step(self, frame: VideoFrame, objects: Mapping[int, ObjectState],
             seeds: Mapping[int, np.ndarray]) -> dict[int, ObjectResult]:
        bgr, gray = self._engine._working_images(frame)
        self._tracks = {i: t for i, t in self._tracks.items() if i in objects and i not in seeds}
        flow = self._flow_to_previous(frame.index, gray, bgr.shape[:2]) if self._tracks else None
        ahead = self._compute_ahead(frame, gray)
        try:
            results = self._follow(frame, objects, seeds, bgr, flow)
        finally:
            self._ahead = None if ahead is None else _finished(ahead)
        self._previous_gray, self._previous_index = gray, frame.index
        return results

    def _follow(self, frame: VideoFrame, objects: Mapping[int, ObjectState], seeds: Mapping[int, np.ndarray],
                bgr: np.ndarray, flow: np.ndarray | None) -> dict[int, ObjectResult]:
        """Move the tracked objects to this frame along ``flow`` (None: nothing to move), start the seeded ones."""
        engine = self._engine
        if flow is not None:
            tracks = list(self._tracks.values())
            motion = _FrameMotion(flow, [track.mask for track in tracks], engine._reach(tracks[0].mask))
            # One object after another on this thread: the next frame's flow keeps the other core busy, and objects
            # propagated two at a time on a pool cost a third more CPU each, for no gain in time (bear with five
            # objects, bench/bench_tracking.py: 50.5-52.0 ms/frame in turn, 51.8-54.3 on two threads).
            for track in tracks:
                engine._propagate(track, motion, bgr)
            _compete(tracks)
            _reacquire(self._tracks, bgr, lambda: motion.unlike_camera(engine.options.flow_tolerance))
        for object_id, mask in seeds.items():
            state = objects[object_id]
            assert isinstance(state, ClassicalObject)
            small = resize(mask.astype(np.float32), bgr.shape[:2]) > 0.5
            self._tracks[object_id] = _Track(small, state.colour_log_ratio, 1.0, Reacquirer.start(bgr, small))
        return engine._results(frame.image.shape[:2], self._tracks, seeds)

    def _flow_to_previous(self, index: int, gray: np.ndarray, shape: tuple[int, int]) -> np.ndarray | None:
        """The flow from this frame (``gray``) to the previous one at working resolution ``shape``; None on the
        sweep's first frame."""
        if self._ahead is not None and self._ahead[0] == index:
            return self._ahead[1]
        if self._previous_gray is None:
            return None
        return _resize_flow(self._flow.calc(gray, self._previous_gray, None), shape)

    def _compute_ahead(self, frame: VideoFrame, gray: np.ndarray) -> Future[tuple[int, np.ndarray]] | None:
        """Start computing the flow of the sweep's next frame to this one (``gray``), or None when the sweep's
        direction is not known yet or it ends here."""
        if self._previous_index is None or frame.read is None or abs(frame.index - self._previous_index) != 1:
            return None
        index = 2 * frame.index - self._previous_index
        if not 0 <= index < frame.num_frames:
            return None

        def compute() -> tuple[int, np.ndarray]:
            assert frame.read is not None
            upcoming = VideoFrame(index, frame.read(index), frame.cache, frame.read, frame.num_frames)
            upcoming_bgr, upcoming_gray = self._engine._working_images(upcoming)
            return index, _resize_flow(self._flow.calc(upcoming_gray, gray, None), upcoming_bgr.shape[:2])

        return _AHEAD.submit(compute)


# Computes the next frames' flows. Two workers, so that two sessions propagating at once do not wait for each other.
_AHEAD = ThreadPoolExecutor(max_workers=2, thread_name_prefix="classical-flow")


def _finished(ahead: Future[tuple[int, np.ndarray]]) -> tuple[int, np.ndarray] | None:
    """The flow computed in advance, or None when it failed (the next step then reads its frame itself, and any
    error is reported there, on the frame it belongs to)."""
    try:
        return ahead.result()
    except Exception:
        return None


def _soft(track: _Track) -> np.ndarray:
    """The track's mask as a probability, for upsampling: the refiner's where it decided the mask, else the mask
    smoothed (upsampling the binary mask would make its boundary blocky)."""
    if track.probability is not None:
        return track.probability
    return cv2.GaussianBlur(track.mask.astype(np.float32), (0, 0), 0.7)


def _compete(tracks: Collection[_Track]) -> None:
    """Objects compete for pixels before the next frame: a pixel two masks claim stays only in the more probable
    one's, so one object's mask does not spread over another's and take its identity."""
    region = _shared_box([track.mask for track in tracks])
    if region is None:
        return
    claims = np.stack([track.mask[region] for track in tracks])
    contested = np.count_nonzero(claims, axis=0) > 1
    if not contested.any():
        return
    winner = np.stack([_soft(track)[region][contested] for track in tracks]).argmax(axis=0)
    for k, track in enumerate(tracks):
        track.mask[region][contested] = winner == k
        if track.probability is not None:
            track.probability[region][contested] *= winner == k


def _shared_box(masks: Sequence[np.ndarray]) -> tuple[slice, slice] | None:
    """The box around every pixel two of ``masks`` may share (the union of their boxes' pairwise overlaps), or None
    when no two boxes overlap: objects apart need no competition, and nothing is stacked for them."""
    boxes = [bounds(mask) for mask in masks if mask.any()]
    overlaps = [(max(a[0].start, b[0].start), min(a[0].stop, b[0].stop), max(a[1].start, b[1].start),
                 min(a[1].stop, b[1].stop)) for k, a in enumerate(boxes) for b in boxes[k + 1:]]
    overlaps = [(top, bottom, left, right) for top, bottom, left, right in overlaps if top < bottom and left < right]
    if not overlaps:
        return None
    return (slice(min(o[0] for o in overlaps), max(o[1] for o in overlaps)),
            slice(min(o[2] for o in overlaps), max(o[3] for o in overlaps)))


def _reacquire(tracks: Mapping[int, _Track], bgr: np.ndarray, moving: Callable[[], np.ndarray | None]) -> None:
    """Replace each lost mask by the object found again, never on pixels another object holds (see step 5).
    ``moving`` gives the pixels that move unlike the camera, where a lost object is looked for first."""
    for object_id, track in tracks.items():
        if track.reacquirer is None:
            continue
        others = [other.mask for other_id, other in tracks.items() if other_id != object_id]
        # Only a lost mask asks for the pixels the others hold, so their union is made only then.
        track.mask = track.reacquirer.update(
            bgr, track.mask, lambda: np.logical_or.reduce(others) if others else None, moving)


# ---------------------------------------------------------------------------------------------------- helpers


def _downscale(frame: np.ndarray, width: int) -> np.ndarray:
    height, full_width = frame.shape[:2]
    if full_width <= width:
        return frame
    return cv2.resize(frame, (width, max(1, round(height * width / full_width))), interpolation=cv2.INTER_AREA)


def _resize_flow(flow: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A flow field resampled to another resolution, its vectors scaled with it."""
    if flow.shape[:2] == shape:
        return flow
    return cv2.resize(flow, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR) * (shape[1] / flow.shape[1])


def _warp(image: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Pull the previous frame's values to each pixel of the current frame from where the flow sends it
    (``target``, float32 [h, w, 2] as x, y: see :class:`_FrameMotion`)."""
    return cv2.remap(image, target, None, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                     borderValue=0)


def _sample_grid(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices of a regular grid of about ``_MOTION_SAMPLES`` pixels: plenty to fit a motion model."""
    height, width = shape
    step = max(1, int(np.sqrt(height * width / _MOTION_SAMPLES)))
    ys, xs = np.mgrid[0:height:step, 0:width:step]
    return ys, xs


@dataclass(frozen=True)
class _FlowSamples:
    """The flow on a regular grid of about ``_MOTION_SAMPLES`` pixels of the current frame, shared by the frame's
    objects (each fits its motion to the samples whose flow lands in its mask): the samples' rows and columns, the
    pixels of the previous frame their flow lands on for those landing inside it, and both ends as float32 (x, y)."""

    rows: np.ndarray
    columns: np.ndarray
    inside: np.ndarray  # bool, same grid: the flow lands inside the previous frame
    landing_rows: np.ndarray  # of the samples inside, rounded
    landing_columns: np.ndarray
    current: np.ndarray  # [grid..., 2]
    previous: np.ndarray

    @classmethod
    def of(cls, backward_flow: np.ndarray) -> _FlowSamples:
        height, width = backward_flow.shape[:2]
        ys, xs = _sample_grid((height, width))
        fx, fy = backward_flow[ys, xs, 0], backward_flow[ys, xs, 1]
        px, py = np.round(xs + fx).astype(int), np.round(ys + fy).astype(int)
        inside = (px >= 0) & (px < width) & (py >= 0) & (py < height)
        return cls(ys, xs, inside, py[inside], px[inside], np.stack([xs, ys], axis=-1).astype(np.float32),
                   np.stack([xs + fx, ys + fy], axis=-1).astype(np.float32))


def _fit_affine(mask: np.ndarray, samples: _FlowSamples,
                unlike_camera: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None) -> np.ndarray | None:
    """Affine map (2x3, current -> previous coordinates) fitted with RANSAC to the flow landing in ``mask``; to the
    part of it that moves unlike the camera (``unlike_camera(rows, columns)``: whether those pixels of the current
    frame do) when that part is at least ``_UNLIKE_CAMERA_SHARE`` of it.

    RANSAC follows the majority, and a mask that took in some background (a trunk the ball rolled past) can be mostly
    background moving with the camera: its object motion was then the camera's, and motion segmentation, which drops
    what moves with the camera only when the object moves otherwise, kept the background for good."""
    landed = np.zeros_like(samples.inside)
    landed[samples.inside] = mask[samples.landing_rows, samples.landing_columns]
    if landed.sum() < 12:
        return None
    if unlike_camera is not None:
        unlike = landed & unlike_camera(samples.rows, samples.columns)
        if unlike.sum() >= max(12, _UNLIKE_CAMERA_SHARE * landed.sum()):
            landed = unlike
    cv2.setRNGSeed(0)  # RANSAC samples from the global RNG; reseed so results are reproducible
    affine, _ = cv2.estimateAffine2D(samples.current[landed], samples.previous[landed], ransacReprojThreshold=2.0,
                                     maxIters=200, refineIters=5)
    return affine


class _FrameMotion:
    """The motion of one frame, shared by its objects: the flow, where it sends each pixel, and the camera's motion
    (a homography fitted to the flow away from every object, or None when it cannot be fitted)."""

    def __init__(self, flow: np.ndarray, masks: Sequence[np.ndarray], reach: float) -> None:
        self.flow = flow
        self.points = _pixel_coordinates(*flow.shape[:2])
        self.target = self.points + flow
        near_objects = within(np.logical_or.reduce(masks), 3 * reach)
        camera = _fit_homography(~near_objects, flow)
        self.camera_motion = None if camera is None else cv2.perspectiveTransform(
            self.points.reshape(-1, 1, 2), camera.astype(np.float32)).reshape(self.points.shape)

    @functools.cached_property
    def samples(self) -> _FlowSamples:
        """The flow's samples each object fits its motion to (the grid and where it lands: the same for all)."""
        return _FlowSamples.of(self.flow)

    @functools.cached_property
    def largest_shift(self) -> float:
        """The flow's largest component (pixels): no pixel's flow lands farther than this from it on either axis."""
        return float(np.abs(self.flow).max())

    def camera_shift(self, region: np.ndarray) -> float:
        """How far the camera's motion moves the pixels of ``region`` (bool, non-empty) on average."""
        assert self.camera_motion is not None
        # Within the region's box, the distance is computed for every pixel and then selected: selecting the two
        # [h, w, 2] arrays' pixels first was 4 times slower (1.0 against 0.22 ms for bear), for the same values.
        box = bounds(region)
        return float(_distance(self.camera_motion[box], self.points[box])[region[box]].mean())

    def unlike_camera(self, tolerance: float, at: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray | None:
        """Whether the pixels (all, or those at ``at``: rows and columns) have flow landing farther than ``tolerance``
        from where the camera's motion would take them; None when the camera's motion is unknown. Asking only for
        the pixels needed (an object's motion fit samples a few thousand) spares two full-frame arrays per object and
        frame, on frames whose camera is still as well."""
        if self.camera_motion is None:
            return None
        if at is None:
            return self.from_camera > tolerance
        return _distance(self.camera_motion[at], self.target[at]) > tolerance

    @functools.cached_property
    def from_camera(self) -> np.ndarray:
        """How far each pixel's flow lands from where the camera's motion would take it (only frames whose camera
        moves need it)."""
        assert self.camera_motion is not None
        return _distance(self.camera_motion, self.target)


@functools.lru_cache(maxsize=4)
def _pixel_coordinates(height: int, width: int) -> np.ndarray:
    """Each pixel's coordinates (float32 [h, w, 2] as x, y), made once per frame size (read-only, shared)."""
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    points = np.stack([xs, ys], axis=-1)
    points.flags.writeable = False
    return points


def _distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.hypot(a[..., 0] - b[..., 0], a[..., 1] - b[..., 1])


def _fit_homography(region: np.ndarray, backward_flow: np.ndarray) -> np.ndarray | None:
    """Homography (current -> previous coordinates) fitted with RANSAC to the flow of ``region``: the camera's
    motion when ``region`` is the background."""
    ys, xs = _sample_grid(region.shape)
    keep = region[ys, xs]
    if keep.sum() < 50:
        return None
    ys, xs = ys[keep], xs[keep]
    current = np.stack([xs, ys], axis=1).astype(np.float32)
    previous = current + backward_flow[ys, xs]
    cv2.setRNGSeed(0)  # RANSAC samples from the global RNG; reseed so results are reproducible
    homography, _ = cv2.findHomography(current, previous, cv2.RANSAC, 1.0, maxIters=200)
    return homography


def _gmm_log_likelihood(model: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """Log-likelihood of BGR ``colours`` [n, 3] under a GrabCut GMM (OpenCV's layout: 5 weights, 5 means,
    5 covariances), up to a constant shared by all models."""
    weights, means, covariances = model[0, :5], model[0, 5:20].reshape(5, 3), model[0, 20:65].reshape(5, 3, 3)
    density = np.zeros(len(colours))
    for weight, mean, covariance in zip(weights, means, covariances):
        if weight <= 0:
            continue
        covariance = covariance + 1e-6 * np.eye(3)
        offset = colours - mean
        mahalanobis = np.einsum("ni,ij,nj->n", offset, np.linalg.inv(covariance), offset)
        density += weight * np.exp(-0.5 * mahalanobis) / np.sqrt(np.linalg.det(covariance))
    return np.log(density + 1e-300)


def _overlapping(mask: np.ndarray, anchor: np.ndarray) -> np.ndarray:
    """Keep the blobs of ``mask`` that overlap ``anchor`` and are not tiny next to its largest blob."""
    count, components, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count <= 2:
        return mask
    areas = stats[:, cv2.CC_STAT_AREA].astype(np.float64)
    areas[0] = 0
    keep = np.zeros(count, bool)
    keep[np.unique(components[anchor & mask])] = True
    keep &= areas >= _MIN_BLOB_SHARE * areas.max()
    keep[0] = False
    return keep[components]


def _learn_colour_models(state: ClassicalObject) -> None:
    """Fit the object's GMMs to the pixels of all its anchors (GrabCut learns its models from its initial labels,
    which here are all sure, so one pass over the pixels laid out as one row is exactly that fit)."""
    pixels = np.concatenate([s.pixels for s in state.samples.values()] or [np.zeros((0, 3), np.uint8)])
    is_object = np.concatenate([s.is_object for s in state.samples.values()] or [np.zeros(0, bool)])
    state._fitted, state._log_ratio = True, None
    if is_object.all() or not is_object.any():
        state.bg_model = state.fg_model = None
        return
    labels = np.where(is_object, cv2.GC_FGD, cv2.GC_BGD).astype(np.uint8)[None]
    state.bg_model, state.fg_model = np.zeros((1, 65)), np.zeros((1, 65))
    cv2.setRNGSeed(0)  # GrabCut seeds its k-means from the global RNG; reseed so results are reproducible
    cv2.grabCut(np.ascontiguousarray(pixels[None]), labels, None, state.bg_model, state.fg_model, 1,
                cv2.GC_INIT_WITH_MASK)


def _colour_index(bgr: np.ndarray) -> np.ndarray:
    """Each BGR uint8 pixel's entry in a colour table (``_COLOUR_BITS`` bits per channel)."""
    levels = bgr >> (8 - _COLOUR_BITS)
    return ((levels[..., 0].astype(np.int32) << _COLOUR_BITS | levels[..., 1]) << _COLOUR_BITS) | levels[..., 2]
