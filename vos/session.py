"""Interactive sessions: one video's state, worked on with prompts, corrections and propagation in any order.

A :class:`Session` is SAM 2's ``inference_state`` / Cutie's ``InferenceCore`` for seem-vos: the :class:`Engine`
holds the model, the session holds what is known about one video, in typed records:

* for each object (:class:`SessionObject`), its *anchors*: the frames where it was prompted, with the prompts and the
  resulting mask, and the engine's :class:`ObjectState` built from them;
* for each frame, the latest result of every object with a revision number, in a :class:`ResultStore` (on disk by
  default, so memory stays flat with the video's length);
* decoded frames and the engine's per-frame data (features) in byte-bounded LRU caches.

Operations: :meth:`Session.add_prompt` on any frame (a correction where the object has a mask already),
:meth:`Session.remove_object`, :meth:`Session.clear_prompts`, :meth:`Session.propagate` forward, backward or both
as a generator of changed frames, and :meth:`Session.write` of the latest revision of every frame.

**Revisions.** A frame's first result is revision 1; each change of its masks makes a new revision. A propagation
yields only the frames it changed, each once, with their new revision, so a re-propagation after a correction never
repeats a frame it leaves as it was.

**One object per pixel.** The masks an engine returns for a frame win their pixels over the stored masks of the
objects it was not asked about; those only lose pixels, never gain any.
"""

from __future__ import annotations

import abc
import ctypes
import functools
import shutil
import tempfile
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

import cv2
import numpy as np

from vos.engine import Engine, FrameResult, ObjectResult, ObjectState, VideoFrame
from vos.errors import EngineError, PromptError, VideoError
from vos.masks import exclusive_masks, labels_from_masks
from vos.outputs import ResultWriter
from vos.prompts import ObjectPrompt, validate_prompts
from vos.video import ByteLRUCache, VideoSource

Direction = Literal["forward", "backward", "both"]
T = TypeVar("T")
FRAME_CACHE_BYTES = 128 * 2**20  # decoded frames: about 100 frames of 854x480
FEATURE_CACHE_BYTES = 256 * 2**20  # the engine's per-frame data (SEEM features, working-resolution images)
SWEEP_CACHE_BYTES = 32 * 2**20  # per-frame data a propagation computes itself, kept only while it runs
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)


class TrackingCancelled(Exception):
    """Raised inside a propagation when ``should_stop`` asks it to stop; the generator ends after it."""


# ---------------------------------------------------------------------------------------------------- records


@dataclass
class Anchor:
    """An object's prompts on one frame and the mask they gave (before other objects took any of its pixels)."""

    frame_index: int
    prompts: list[ObjectPrompt]
    mask: np.ndarray  # bool [H, W]


@dataclass
class SessionObject:
    """One object of a session: its anchors and the engine's state built from them."""

    object_id: int
    state: ObjectState
    anchors: dict[int, Anchor] = field(default_factory=dict)

    def first_anchor(self) -> int:
        return min(self.anchors)


@dataclass(frozen=True)
class StoredFrame:
    """The latest result of one frame: a label map and the score of every object in it (absent ones too)."""

    revision: int
    labels: np.ndarray  # uint8 [H, W], 0 = background, else the object id
    scores: dict[int, float]


class ResultStore(abc.ABC):
    """Where a session keeps each frame's latest result. Pluggable: memory, disk, or anything else."""

    @abc.abstractmethod
    def get(self, index: int) -> StoredFrame | None:
        """The stored result of frame ``index``, or None if it has none."""

    @abc.abstractmethod
    def put(self, index: int, frame: StoredFrame) -> None: ...

    @abc.abstractmethod
    def objects(self, index: int) -> dict[int, float]:
        """The object ids and scores of frame ``index`` without reading its masks (empty if it has no result)."""

    def close(self) -> None:
        """Release what the store holds (files). The session calls it when it is closed."""


class MemoryResultStore(ResultStore):
    """Every frame's labels in RAM: fast, for short videos and tests."""

    def __init__(self) -> None:
        self._frames: dict[int, StoredFrame] = {}

    def get(self, index: int) -> StoredFrame | None:
        return self._frames.get(index)

    def put(self, index: int, frame: StoredFrame) -> None:
        self._frames[index] = frame

    def objects(self, index: int) -> dict[int, float]:
        frame = self._frames.get(index)
        return dict(frame.scores) if frame is not None else {}


class DiskResultStore(ResultStore):
    """Labels as PNG files in ``folder`` (a temporary one, removed on close, by default); only revisions and scores
    stay in RAM, so a session's memory does not grow with the video's length."""

    def __init__(self, folder: str | Path | None = None) -> None:
        self._owned = folder is None
        self.folder = Path(tempfile.mkdtemp(prefix="vos-session-") if folder is None else folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._index: dict[int, tuple[int, dict[int, float]]] = {}

    def get(self, index: int) -> StoredFrame | None:
        if index not in self._index:
            return None
        revision, scores = self._index[index]
        labels = cv2.imread(str(self._path(index)), cv2.IMREAD_UNCHANGED)
        assert labels is not None, f"the session's result file {self._path(index)} disappeared"
        return StoredFrame(revision, labels, dict(scores))

    def put(self, index: int, frame: StoredFrame) -> None:
        if not cv2.imwrite(str(self._path(index)), frame.labels):
            raise OSError(f"cannot write {self._path(index)}")
        self._index[index] = (frame.revision, dict(frame.scores))

    def objects(self, index: int) -> dict[int, float]:
        return dict(self._index[index][1]) if index in self._index else {}

    def close(self) -> None:
        if self._owned:
            shutil.rmtree(self.folder, ignore_errors=True)

    def _path(self, index: int) -> Path:
        return self.folder / f"{index:06d}.png"


# ---------------------------------------------------------------------------------------------------- session


class Session:
    """One video's interactive segmentation state over a shared :class:`Engine` (see the module docstring).

    Use as a context manager, or call :meth:`close`, to release the result store. The video stays open and is
    the caller's to close.
    """

    def __init__(self, engine: Engine, video: VideoSource, store: ResultStore | None = None, *,
                 frame_cache_bytes: int = FRAME_CACHE_BYTES, feature_cache_bytes: int = FEATURE_CACHE_BYTES) -> None:
        _fix_mmap_threshold()
        self.engine = engine
        self.video = video
        self.info = video.info
        self.objects: dict[int, SessionObject] = {}
        self.store = store if store is not None else DiskResultStore()
        self._images = ByteLRUCache(frame_cache_bytes)
        self._features = ByteLRUCache(feature_cache_bytes)

    def close(self) -> None:
        self.store.close()
        self._images.clear()
        self._features.clear()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------------ frames

    def image(self, index: int) -> np.ndarray:
        """Frame ``index`` (RGB uint8), decoded through the frame cache."""
        return self._images.get_or_compute(index, lambda: self._decode(index))

    def frame(self, index: int) -> VideoFrame:
        return VideoFrame(index, self.image(index), self._features, self.image, self.info.num_frames)

    def prepare(self, index: int) -> None:
        """Decode frame ``index`` and let the engine cache its per-frame data (see :meth:`Engine.prepare_frame`):
        a later prompt there then costs only the engine's decision."""
        self._check_frame(index, "prepare")
        self.engine.prepare_frame(self.frame(index))

    def _check_frame(self, index: int, action: str) -> None:
        if not 0 <= index < self.info.num_frames:
            raise PromptError(f"cannot {action} frame {index}: the video has {self.info.num_frames} frames")

    def _decode(self, index: int) -> np.ndarray:
        image = self.video.frame(index)
        expected = (self.info.height, self.info.width)
        if image.shape[:2] != expected:
            raise VideoError(f"frame {index} of {self.video.path} is {image.shape[1]}x{image.shape[0]}, expected "
                             f"{expected[1]}x{expected[0]}: videos whose size changes are not supported")
        return image

    # ------------------------------------------------------------------------------------------------ prompts

    def add_prompt(self, prompt: ObjectPrompt) -> FrameResult:
        """Add ``prompt`` on its frame and return that frame's masks for every object.

        Where the object already has a mask on the frame (an anchor or a propagated mask) the prompt corrects it:
        positive clicks and strokes add, negative ones remove, a mask replaces. Its other anchors stay.
        """
        validate_prompts([prompt], self.info.width, self.info.height, self.info.num_frames)
        self.engine.check_prompts([prompt])
        index, object_id = prompt.frame_index, prompt.object_id
        obj = self.objects.get(object_id) or SessionObject(object_id, self.engine.new_object(object_id))
        anchor = obj.anchors.get(index)
        current = anchor.mask if anchor is not None else self._stored_mask(index, object_id)
        frame = self.frame(index)
        begin = time.perf_counter()
        result = self.engine.add_prompt(frame, obj.state, prompt, current)
        seconds = time.perf_counter() - begin
        self.objects[object_id] = obj
        if anchor is None:
            anchor = obj.anchors[index] = Anchor(index, [], result.mask)
        anchor.prompts.append(prompt)
        anchor.mask = result.mask
        return self._update(index, {object_id: result}, seconds, frame.image)[0]

    def clear_prompts(self, object_id: int, frame_index: int) -> FrameResult:
        """Forget the object's prompts on one frame, and its mask there (a propagation fills it in again). An
        object left without prompts is removed."""
        obj = self._object(object_id)
        if frame_index not in obj.anchors:
            raise PromptError(f"object {object_id} has no prompt on frame {frame_index} "
                              f"(its prompted frames: {', '.join(map(str, sorted(obj.anchors)))})")
        del obj.anchors[frame_index]
        self.engine.remove_anchor(obj.state, frame_index)
        if not obj.anchors:
            self.remove_object(object_id)
        else:
            self._drop(frame_index, {object_id})
        return self.result(frame_index)

    def remove_object(self, object_id: int) -> list[int]:
        """Remove an object and its masks from every frame; the other objects' masks stay exactly as they were.
        Returns the frames that changed (each has a new revision)."""
        self._object(object_id)
        del self.objects[object_id]
        changed = []
        for index in range(self.info.num_frames):
            if object_id in self.store.objects(index):
                self._drop(index, {object_id})
                changed.append(index)
        return changed

    def _object(self, object_id: int) -> SessionObject:
        if object_id not in self.objects:
            raise PromptError(f"object {object_id} is not in this session "
                              f"(its objects: {', '.join(map(str, sorted(self.objects))) or 'none'})")
        return self.objects[object_id]

    # ------------------------------------------------------------------------------------------------ propagation

    def propagate(self, start: int, direction: Direction = "both", objects: Iterable[int] | None = None, *,
                  through_anchors: bool = False, midway: bool = False,
                  should_stop: Callable[[], bool] | None = None) -> Iterator[FrameResult]:
        """Propagate from frame ``start`` and yield every frame whose masks change, with its new revision.

        Each object (all, or those in ``objects``) starts from its anchor or stored mask on ``start``; objects
        without a mask there take no part, an empty anchor included: a correction that removed all of an object's
        mask says it is not on that frame, not that it is gone from the frames around it (``vos eval interactive``,
        DAVIS 2016 train, J&F after rounds 1/3/5: 0.632/0.656/0.664 when emptiness was propagated, 0.653/0.660/0.662
        now; val check 0.535/0.551/0.538 -> 0.535/0.551/0.556). By default an object stops at its next prompted
        frame in the sweep's direction, whose masks came from that prompt; with ``midway`` it stops halfway there, so
        every frame keeps the masks propagated from its nearest prompted frame. With ``through_anchors`` it restarts
        from each anchor it meets and goes on to the end of the video, and objects without a mask on ``start`` join
        at their first anchor. ``"both"`` sweeps forward, then backward. ``should_stop`` is polled before every frame.
        """
        self._check_frame(start, "propagate from")
        if direction not in ("forward", "backward", "both"):
            raise EngineError(f"direction must be forward, backward or both, got {direction!r}")
        ids = sorted(self.objects) if objects is None else [self._object(i).object_id for i in objects]
        steps = {"forward": (1,), "backward": (-1,), "both": (1, -1)}[direction]
        for step in steps:
            for result, changed in self._sweep(start, step, ids, through_anchors, should_stop, midway):
                if changed:
                    yield result

    def _sweep(self, start: int, step: int, ids: list[int], through_anchors: bool,
               should_stop: Callable[[], bool] | None, midway: bool = False) -> Iterator[tuple[FrameResult, bool]]:
        """One sweep from ``start`` in direction ``step`` (+1 or -1): every frame it computes, with whether it
        changed."""
        objects = [self.objects[i] for i in ids]
        halfway = {o.object_id: _halfway(o, start, step) for o in objects} if midway else {}
        propagation = self.engine.start_propagation()
        window = _SweepCache(self._features, min(SWEEP_CACHE_BYTES, self._features.max_bytes))
        active: set[int] = set()
        end = self.info.num_frames if step > 0 else -1
        for index in range(start, end, step):
            if should_stop is not None and should_stop():
                raise TrackingCancelled(f"tracking stopped at frame {index}")
            active -= {i for i, last in halfway.items() if last is not None and (index - last) * step > 0}
            seeds = self._seeds(objects, index, index == start, active, through_anchors)
            active |= seeds.keys()
            if not active:
                if through_anchors and any(_ahead(o, index, step) for o in objects):
                    yield self.result(index), False  # nobody has started yet: the frame stays as it is
                    continue
                return
            frame = VideoFrame(index, self.image(index), window, self.image, self.info.num_frames)
            begin = time.perf_counter()
            results = propagation.step(frame, {i: self.objects[i].state for i in sorted(active)}, seeds)
            yield self._update(index, results, time.perf_counter() - begin, frame.image)

    def _seeds(self, objects: list[SessionObject], index: int, first: bool, active: set[int],
               through_anchors: bool) -> dict[int, np.ndarray]:
        """The objects that (re)start on frame ``index``, with their masks; removes stopping ones from ``active``."""
        seeds: dict[int, np.ndarray] = {}
        for obj in objects:
            anchor = obj.anchors.get(index)
            if anchor is not None and (first or through_anchors) and anchor.mask.any():
                seeds[obj.object_id] = anchor.mask
            elif anchor is not None:
                active.discard(obj.object_id)  # its next prompted frame: its masks beyond came from there
            elif first:
                stored = self._stored_mask(index, obj.object_id)
                if stored is not None and stored.any():
                    seeds[obj.object_id] = stored
        return seeds

    # ------------------------------------------------------------------------------------------------ results

    def result(self, index: int, with_image: bool = True) -> FrameResult:
        """The latest revision of frame ``index`` (revision 0 and no objects if it was never computed)."""
        stored = self.store.get(index)
        image = self.image(index) if with_image else None
        if stored is None:
            return FrameResult(index, {}, self.info.height, self.info.width, image=image)
        return self._frame_result(index, stored, 0.0, image)

    def results(self, with_images: bool = True) -> Iterator[FrameResult]:
        """The latest revision of every frame, in order."""
        for index in range(self.info.num_frames):
            yield self.result(index, with_images)

    def write(self, out_dir: str | Path, *, pngs: bool = True, rle: bool = True, overlay: bool = True) -> None:
        """Write the latest revision of every frame as palette PNGs, RLE JSON lines and the overlay MP4."""
        with ResultWriter(out_dir, self.info, pngs=pngs, rle=rle, overlay=overlay) as writer:
            for result in self.results(with_images=overlay):
                writer.write(result)

    def _stored_mask(self, index: int, object_id: int) -> np.ndarray | None:
        if object_id not in self.store.objects(index):
            return None
        stored = self.store.get(index)
        assert stored is not None
        return stored.labels == object_id

    def _update(self, index: int, results: Mapping[int, ObjectResult], seconds: float,
                image: np.ndarray | None) -> tuple[FrameResult, bool]:
        """Store ``results`` over frame ``index``'s stored masks (they win their pixels); a new revision if that
        changes the frame."""
        results = _exclusive(results)
        stored = self.store.get(index)
        claimed = np.zeros((self.info.height, self.info.width), bool)
        for result in results.values():
            claimed |= result.mask
        masks: dict[int, np.ndarray] = {}
        scores: dict[int, float] = {}
        if stored is not None:
            for object_id, score in stored.scores.items():
                if object_id not in results and object_id in self.objects:
                    masks[object_id] = (stored.labels == object_id) & ~claimed
                    scores[object_id] = score
        for object_id, result in results.items():
            masks[object_id], scores[object_id] = result.mask, result.score
        labels = labels_from_masks(masks, self.info.height, self.info.width)
        return self._replace(index, stored, labels, scores, seconds, image)

    def _drop(self, index: int, object_ids: set[int]) -> None:
        """Remove objects from frame ``index``'s stored result (a new revision)."""
        stored = self.store.get(index)
        assert stored is not None
        labels = np.where(np.isin(stored.labels, list(object_ids)), 0, stored.labels).astype(np.uint8)
        scores = {i: s for i, s in stored.scores.items() if i not in object_ids}
        self._replace(index, stored, labels, scores, 0.0, None)

    def _replace(self, index: int, stored: StoredFrame | None, labels: np.ndarray, scores: dict[int, float],
                 seconds: float, image: np.ndarray | None) -> tuple[FrameResult, bool]:
        changed = stored is None or stored.scores.keys() != scores.keys() or not np.array_equal(stored.labels, labels)
        if changed:
            stored = StoredFrame((stored.revision if stored is not None else 0) + 1, labels, scores)
            self.store.put(index, stored)
        assert stored is not None
        return self._frame_result(index, stored, seconds, image), changed

    def _frame_result(self, index: int, stored: StoredFrame, seconds: float, image: np.ndarray | None) -> FrameResult:
        objects = {i: ObjectResult(i, stored.labels == i, score) for i, score in sorted(stored.scores.items())}
        return FrameResult(index, objects, self.info.height, self.info.width, seconds, image, stored.revision)


@functools.cache
def _fix_mmap_threshold() -> None:
    """Fix glibc's mmap threshold at 1 MB, so that decoded frames and other blocks that large are mapped and
    unmapped (returned to the OS) on their own. Left dynamic, glibc raises the threshold each time such a block is
    freed (up to 32 MB); the blocks are then carved from the heap, whose fragmentation made a session's peak RSS
    creep up with the video's length (bench/bench_session.py: +45 MB from 300 to 3000 frames). At 1 MB a sweep's
    CPU time is unchanged (at the initial 128 kB it rose by a quarter: every mask was mapped afresh).
    Process-wide, once; a no-op where the C library is not glibc."""
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return
    mallopt(_M_MMAP_THRESHOLD, 1 << 20)


class _SweepCache:
    """The per-frame data cache of one propagation sweep. It reads the session's cache (frames the user prepared or
    prompted) but keeps what it computes in a small window of its own, dropped with the sweep: a sweep uses each
    frame's data about once, so keeping it would only make the session's memory grow with the video's length (up
    to the cache's bound) and evict the frames the user prepared."""

    def __init__(self, session_cache: ByteLRUCache, window_bytes: int) -> None:
        self._session_cache = session_cache
        self._window = ByteLRUCache(window_bytes)

    def get_or_compute(self, key: Hashable, compute: Callable[[], T]) -> T:
        if key in self._session_cache:
            return self._session_cache.get_or_compute(key, compute)
        return self._window.get_or_compute(key, compute)


def _halfway(obj: SessionObject, start: int, step: int) -> int | None:
    """The last frame before the object's next anchor after ``start`` in direction ``step`` that is at least as
    near ``start`` as that anchor; None without a next anchor."""
    ahead = [frame for frame in obj.anchors if (frame - start) * step > 0]
    if not ahead:
        return None
    following = min(ahead, key=lambda frame: abs(frame - start))
    return start + step * (abs(following - start) // 2)


def _ahead(obj: SessionObject, index: int, step: int) -> bool:
    """Whether the object has an anchor after frame ``index`` in direction ``step``."""
    return any((frame - index) * step > 0 for frame in obj.anchors)


def _exclusive(objects: Mapping[int, ObjectResult]) -> dict[int, ObjectResult]:
    """Guarantee one object per pixel even if an engine returned overlapping masks (higher score wins)."""
    if len(objects) < 2:
        return dict(objects)
    total = np.zeros(next(iter(objects.values())).mask.shape, np.uint16)
    for result in objects.values():
        total += result.mask
    if total.max() <= 1:
        return dict(objects)
    claims = {i: r.mask * (r.score + 1e-3) for i, r in objects.items()}  # +1e-3: a zero score still claims
    masks = exclusive_masks(claims, threshold=0.0)
    return {i: ObjectResult(i, masks[i], r.score) for i, r in objects.items()}
