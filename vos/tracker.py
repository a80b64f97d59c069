"""Track prompted objects through a whole video in one call: a thin wrapper over a :class:`vos.session.Session`.

The CLI, the Celery task and the evaluation runners all consume this one generator, so they see the same
masks and can stream them out (files, Redis streams, metrics) while tracking goes on. Interactive use (corrections,
objects added and removed, backward propagation) goes through the session directly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from vos.engine import Engine, FrameResult
from vos.prompts import ObjectPrompt, validate_prompts
from vos.session import ResultStore, Session, TrackingCancelled
from vos.video import VideoSource

__all__ = ["TrackingCancelled", "track"]


def track(
    video: VideoSource,
    engine: Engine,
    prompts: Sequence[ObjectPrompt],
    should_stop: Callable[[], bool] | None = None,
    *,
    backfill: bool = True,
    store: ResultStore | None = None,
) -> Iterator[FrameResult]:
    """Track the prompted objects through ``video``, yielding one :class:`FrameResult` per frame.

    Prompts are checked against the video and the engine before any frame is decoded; an object may be prompted
    on several frames (at most one prompt per object and frame). The session gets every prompt on its frame, then:

    1. with ``backfill``, each object first prompted after frame 0 is propagated backward from its first prompted
       frame, so no frame before its prompt is left without it (nothing is yielded yet);
    2. frames before the earliest prompted frame are yielded (without objects when not back-filled);
    3. the objects are propagated forward from the earliest prompted frame to the end, each joining on its first
       prompted frame and restarting from each of its later ones.

    So every frame is yielded exactly once, in order, with its final masks (``revision`` counts the changes the
    steps above made to it). ``should_stop`` is polled before every frame, so a cancelled job stops within one frame
    (:class:`TrackingCancelled`). Results are kept in ``store`` (a temporary folder by default) while tracking runs.
    """
    info = video.info
    validate_prompts(prompts, info.width, info.height, info.num_frames)
    engine.check_prompts(prompts)
    return _run(Session(engine, video, store), prompts, should_stop, backfill)


def _run(session: Session, prompts: Sequence[ObjectPrompt], should_stop: Callable[[], bool] | None,
         backfill: bool) -> Iterator[FrameResult]:
    with session:
        for prompt in sorted(prompts, key=lambda p: p.frame_index):
            session.add_prompt(prompt)
        firsts = {i: obj.first_anchor() for i, obj in session.objects.items()}
        earliest = min(firsts.values())
        if backfill:
            for object_id, first in sorted(firsts.items()):
                if first > 0:
                    for _ in session.propagate(first, "backward", [object_id], should_stop=should_stop):
                        pass
        for index in range(earliest):
            if should_stop is not None and should_stop():
                raise TrackingCancelled(f"tracking stopped at frame {index}")
            yield session.result(index)
        for result, _ in session._sweep(earliest, 1, sorted(session.objects), True, should_stop):
            yield result
