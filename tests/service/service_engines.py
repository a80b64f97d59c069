"""Engines used only by the service tests, registered in the test API process and the test workers.

``static`` needs no other engine: a disk around each click that never moves (plumbing tests). ``slow`` is the
classical engine plus a fixed delay per frame, so a test can cancel or kill a worker in the middle of a job.
"""

from __future__ import annotations

import time
from typing import Sequence

import cv2
import numpy as np

from pydantic import Field

from vos.engine import Engine, EngineOptions, ObjectResult, engine_class, register_engine
from vos.prompts import ObjectPrompt

TEST_ENGINES = {"static": "service_engines:StaticEngine", "slow": "service_engines:SlowEngine"}


def register_test_engines() -> None:
    for name, target in TEST_ENGINES.items():
        register_engine(name, target)


class StaticEngine(Engine):
    name = "static"
    supported_prompts = frozenset({"points", "box", "mask"})

    class Options(EngineOptions):
        delay: float = Field(0.0, ge=0, le=60, description="seconds to wait per frame")

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.masks: dict[int, np.ndarray] = {}

    def step(self, frame: np.ndarray, prompts: Sequence[ObjectPrompt] = ()) -> dict[int, ObjectResult]:
        for prompt in prompts:
            self.masks[prompt.object_id] = _mask(prompt, frame.shape[:2])
        time.sleep(self.delay)
        return {i: ObjectResult(i, m, 1.0) for i, m in self.masks.items()}

    def reset(self) -> None:
        self.masks = {}


class SlowEngine(Engine):
    """The classical engine, slowed down by ``delay`` seconds per frame."""

    name = "slow"
    supported_prompts = frozenset({"points", "box", "mask", "scribble"})

    class Options(EngineOptions):
        delay: float = Field(0.1, ge=0, le=60, description="seconds to wait per frame")

    def __init__(self, delay: float = 0.1) -> None:
        self.delay = delay
        self.inner = _classical()

    def step(self, frame: np.ndarray, prompts: Sequence[ObjectPrompt] = ()) -> dict[int, ObjectResult]:
        time.sleep(self.delay)
        return self.inner.step(frame, prompts)

    def reset(self) -> None:
        self.inner.reset()


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
