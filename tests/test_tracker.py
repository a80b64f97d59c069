"""The tracker's own contract, driven with a minimal engine that repeats each object's prompt mask."""

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

from vos.engine import Engine, ObjectResult, ObjectState, Propagation, VideoFrame, available_engines, create_engine
from vos.errors import EngineError, PromptError, UnsupportedPromptError
from vos.prompts import ObjectPrompt, Point
from vos.tracker import TrackingCancelled, track
from vos.video import open_video


class RepeatMaskEngine(Engine):
    """Returns every object's prompt mask on every frame: enough to observe what the tracker does."""

    name = "repeat-mask"
    supported_prompts = frozenset({"mask"})

    def __init__(self) -> None:
        super().__init__()
        self.frames_seen = 0

    def new_object(self, object_id: int) -> ObjectState:
        return ObjectState(object_id)

    def add_prompt(self, frame: VideoFrame, state: ObjectState, prompt: ObjectPrompt,
                   current: np.ndarray | None) -> ObjectResult:
        return ObjectResult(prompt.object_id, prompt.mask, score=prompt.object_id / 10)

    def remove_anchor(self, state: ObjectState, frame_index: int) -> None:
        pass

    def start_propagation(self) -> Propagation:
        return _Repeat(self)


class _Repeat(Propagation):
    def __init__(self, engine: RepeatMaskEngine) -> None:
        self.engine = engine
        self.masks: dict[int, np.ndarray] = {}

    def step(self, frame: VideoFrame, objects: Mapping[int, ObjectState],
             seeds: Mapping[int, np.ndarray]) -> dict[int, ObjectResult]:
        self.engine.frames_seen += 1
        self.masks.update(seeds)
        return {i: ObjectResult(i, self.masks[i], score=i / 10) for i in objects}


@pytest.fixture
def swan_video(sample_video: Path):
    with open_video(sample_video) as video:
        yield video


def _box_mask(x0: int, x1: int) -> np.ndarray:
    mask = np.zeros((480, 854), bool)
    mask[100:200, x0:x1] = True
    return mask


def test_objects_join_on_their_prompt_frame(swan_video) -> None:
    prompts = [ObjectPrompt(object_id=1, mask=_box_mask(0, 50)),
               ObjectPrompt(object_id=2, frame_index=3, mask=_box_mask(300, 350))]
    results = list(track(swan_video, RepeatMaskEngine(), prompts, backfill=False))
    assert [r.index for r in results] == list(range(50))
    assert [sorted(r.objects) for r in results[:4]] == [[1], [1], [1], [1, 2]]
    filled = list(track(swan_video, RepeatMaskEngine(), prompts))  # object 2 propagated back from frame 3 first
    assert [r.index for r in filled] == list(range(50))
    assert all(sorted(r.objects) == [1, 2] for r in filled)
    # frames 0-3 changed twice (prompt or back-fill, then the forward pass), later ones once
    assert [r.revision for r in filled[:5]] == [2, 2, 2, 2, 1]
    assert results[10].label_map()[150, 320] == 2 and results[10].image.shape == (480, 854, 3)


def test_frames_before_the_first_prompt_are_back_filled_unless_asked_not_to(swan_video) -> None:
    engine = RepeatMaskEngine()
    prompts = [ObjectPrompt(object_id=4, frame_index=5, mask=_box_mask(0, 50))]
    results = list(track(swan_video, engine, prompts, backfill=False))
    assert all(not r.objects for r in results[:5]) and results[5].objects
    assert engine.frames_seen == 45  # the engine is not run before it has anything to track
    filled = list(track(swan_video, engine, prompts))
    assert [r.index for r in filled] == list(range(50)) and all(4 in r.objects for r in filled)


def test_overlapping_claims_resolve_to_one_object_per_pixel(swan_video) -> None:
    prompts = [ObjectPrompt(object_id=1, mask=_box_mask(0, 100)), ObjectPrompt(object_id=2, mask=_box_mask(50, 150))]
    first = next(track(swan_video, RepeatMaskEngine(), prompts))
    one, two = first.objects[1].mask, first.objects[2].mask
    assert not (one & two).any()
    assert two[150, 75] and one[150, 25] and two[150, 125]  # the higher score (object 2) wins the overlap


def test_cancellation_stops_within_one_frame(swan_video) -> None:
    engine = RepeatMaskEngine()
    produced = []
    with pytest.raises(TrackingCancelled):
        for result in track(swan_video, engine, [ObjectPrompt(object_id=1, mask=_box_mask(0, 50))],
                            should_stop=lambda: len(produced) >= 7):
            produced.append(result)
    assert len(produced) == 7 and engine.frames_seen == 7


def test_bad_prompts_fail_before_any_frame_is_processed(swan_video) -> None:
    engine = RepeatMaskEngine()
    with pytest.raises(UnsupportedPromptError, match="cannot use points"):
        track(swan_video, engine, [ObjectPrompt(object_id=1, points=[Point(x=3, y=3)])])
    with pytest.raises(PromptError, match="expected 854x480"):
        track(swan_video, engine, [ObjectPrompt(object_id=1, mask=np.ones((10, 10), bool))])
    assert engine.frames_seen == 0


def test_engine_registry_errors() -> None:
    assert {"classical", "seem"} <= set(available_engines())
    with pytest.raises(EngineError, match="unknown engine 'sam9'"):
        create_engine("sam9")
    with pytest.raises(EngineError, match="has no option warp_speed"):
        create_engine("classical", warp_speed=9)
