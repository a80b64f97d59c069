"""Drive an engine over a video and yield per-frame results as they are computed.

The CLI, the Celery task and the evaluation runners all consume this one generator, so they see the same
masks and can stream them out (files, Redis streams, metrics) while tracking goes on.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from vos.engine import Engine, FrameResult, ObjectResult
from vos.errors import VideoError
from vos.masks import exclusive_masks
from vos.prompts import ObjectPrompt, validate_prompts
from vos.video import VideoSource


class TrackingCancelled(Exception):
    """Raised inside :func:`track` when ``should_stop`` asks it to stop; the generator ends after it."""


def track(
    video: VideoSource,
    engine: Engine,
    prompts: Sequence[ObjectPrompt],
    should_stop: Callable[[], bool] | None = None,
) -> Iterator[FrameResult]:
    """Track the prompted objects through ``video``, yielding one :class:`FrameResult` per frame, in order.

    Prompts are checked against the video and the engine before the first frame is decoded. Objects join on
    their prompt's ``frame_index``; frames before any prompt yield no objects. ``should_stop`` is polled
    before every frame, so a cancelled job stops within one frame.
    """
    info = video.info
    validate_prompts(prompts, info.width, info.height, info.num_frames)
    engine.check_prompts(prompts)
    engine.reset()
    return _run(video, engine, prompts, should_stop)


def _run(
    video: VideoSource, engine: Engine, prompts: Sequence[ObjectPrompt], should_stop: Callable[[], bool] | None
) -> Iterator[FrameResult]:
    info = video.info
    by_frame: dict[int, list[ObjectPrompt]] = defaultdict(list)
    for prompt in prompts:
        by_frame[prompt.frame_index].append(prompt)
    started = False
    for index, frame in enumerate(_checked_frames(video)):
        if should_stop is not None and should_stop():
            raise TrackingCancelled(f"tracking stopped at frame {index}")
        new_prompts = by_frame.get(index, [])
        started = started or bool(new_prompts)
        begin = time.perf_counter()
        objects = engine.step(frame, new_prompts) if started else {}
        seconds = time.perf_counter() - begin
        yield FrameResult(index, _exclusive(objects), info.height, info.width, seconds, frame)


def _checked_frames(video: VideoSource) -> Iterable[np.ndarray]:
    expected = (video.info.height, video.info.width)
    for index, frame in enumerate(video):
        if frame.shape[:2] != expected:
            raise VideoError(f"frame {index} of {video.path} is {frame.shape[1]}x{frame.shape[0]}, expected "
                             f"{expected[1]}x{expected[0]}: videos whose size changes are not supported")
        yield frame


def _exclusive(objects: dict[int, ObjectResult]) -> dict[int, ObjectResult]:
    """Guarantee one object per pixel even if an engine returned overlapping masks (higher score wins)."""
    if len(objects) < 2:
        return objects
    total = np.zeros(next(iter(objects.values())).mask.shape, np.uint16)
    for result in objects.values():
        total += result.mask
    if total.max() <= 1:
        return objects
    claims = {i: r.mask * (r.score + 1e-3) for i, r in objects.items()}  # +1e-3: a zero score still claims
    masks = exclusive_masks(claims, threshold=0.0)
    return {i: ObjectResult(i, masks[i], r.score) for i, r in objects.items()}
