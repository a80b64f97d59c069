"""Engines used only by the service tests, registered in the test API process and the test workers.

``static`` needs no other engine: a disk around each click that never moves (plumbing tests). ``slow`` is the
classical engine plus a fixed delay per frame, so a test can cancel or kill a worker in the middle of a job.
``seem-tiny`` is SEEM on a tiny model with random weights (:mod:`tiny_seem`), for text and reference prompts.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import cv2
import numpy as np
from pydantic import Field

from vos.engine import (
    Engine,
    EngineOptions,
    ObjectResult,
    ObjectState,
    Propagation,
    VideoFrame,
    engine_class,
    register_engine,
)
from vos.prompts import ObjectPrompt

TEST_ENGINES = {"static": "service_engines:StaticEngine", "slow": "service_engines:SlowEngine",
                "seem-tiny": "tiny_seem:TinySeemEngine"}


def register_test_engines() -> None:
    for name, target in TEST_ENGINES.items():
        register_engine(name, target)


class StaticEngine(Engine):
    name = "static"
    supported_prompts = frozenset({"points", "box", "mask"})

    class Options(EngineOptions):
        delay: float = Field(0.0, ge=0, le=60, description="seconds to wait per frame")

    def new_object(self, object_id: int) -> ObjectState:
        return ObjectState(object_id)

    def add_prompt(self, frame: VideoFrame, state: ObjectState, prompt: ObjectPrompt,
                   current: np.ndarray | None) -> ObjectResult:
        return ObjectResult(prompt.object_id, _mask(prompt, frame.image.shape[:2]), 1.0)

    def remove_anchor(self, state: ObjectState, frame_index: int) -> None:
        pass

    def start_propagation(self) -> Propagation:
        return _Static(self.options.delay)


class _Static(Propagation):
    """Each object keeps the mask it started from."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.masks: dict[int, np.ndarray] = {}

    def step(self, frame: VideoFrame, objects: Mapping[int, ObjectState],
             seeds: Mapping[int, np.ndarray]) -> dict[int, ObjectResult]:
        self.masks.update(seeds)
        time.sleep(self.delay)
        return {i: ObjectResult(i, self.masks[i], 1.0) for i in objects}


class SlowEngine(Engine):
    """The classical engine, slowed down by ``delay`` seconds per propagated frame."""

    name = "slow"
    supported_prompts = frozenset({"points", "box", "mask", "scribble"})

    class Options(EngineOptions):
        delay: float = Field(0.1, ge=0, le=60, description="seconds to wait per frame")

    def __init__(self, options: EngineOptions | None = None, **values: object) -> None:
        super().__init__(options, **values)
        self.inner = _classical()

    def new_object(self, object_id: int) -> ObjectState:
        return self.inner.new_object(object_id)

    def add_prompt(self, frame: VideoFrame, state: ObjectState, prompt: ObjectPrompt,
                   current: np.ndarray | None) -> ObjectResult:
        return self.inner.add_prompt(frame, state, prompt, current)

    def remove_anchor(self, state: ObjectState, frame_index: int) -> None:
        self.inner.remove_anchor(state, frame_index)

    def start_propagation(self) -> Propagation:
        return _Slow(self.inner.start_propagation(), self.options.delay)


class _Slow(Propagation):
    def __init__(self, inner: Propagation, delay: float) -> None:
        self.inner, self.delay = inner, delay

    def step(self, frame: VideoFrame, objects: Mapping[int, ObjectState],
             seeds: Mapping[int, np.ndarray]) -> dict[int, ObjectResult]:
        time.sleep(self.delay)
        return self.inner.step(frame, objects, seeds)


def _classical() -> Engine:
    try:
        return engine_class("classical")()
    except ImportError:  # the classical engine is not written yet: fall back to the static one
        return StaticEngine()


def _mask(prompt: ObjectPrompt, shape: tuple[int, int]) -> np.ndarray:
    if prompt.mask is not None:
        return prompt.mask.astype(bool)
    canvas = np.zeros(shape, np.uint8)
    if prompt.box is not None:
        b = prompt.box
        canvas[int(b.y0):int(b.y1), int(b.x0):int(b.x1)] = 1
    for point in prompt.points:
        if point.positive:
            cv2.circle(canvas, (int(point.x), int(point.y)), 10, 1, -1)
    return canvas.astype(bool)
