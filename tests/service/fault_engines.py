"""An engine that fails inside the worker, like an engine bug on an input it does not handle (e.g. grabCut with no
background): the job must end ``failed`` with a message that blames the service, never stay running."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from service_engines import StaticEngine

from vos.engine import ObjectResult, ObjectState, Propagation, VideoFrame, register_engine


def register_fault_engines() -> None:
    register_engine("crashing", "fault_engines:CrashingEngine")


class CrashingEngine(StaticEngine):
    name = "crashing"

    def start_propagation(self) -> Propagation:
        return _CrashOnThirdFrame()


class _CrashOnThirdFrame(Propagation):
    def __init__(self) -> None:
        self.frames = 0

    def step(self, frame: VideoFrame, objects: Mapping[int, ObjectState],
             seeds: Mapping[int, np.ndarray]) -> dict[int, ObjectResult]:
        self.frames += 1
        if self.frames == 3:
            raise RuntimeError("an engine bug on this input")
        return {i: ObjectResult(i, seeds.get(i, np.zeros(frame.image.shape[:2], bool)), 1.0) for i in objects}
