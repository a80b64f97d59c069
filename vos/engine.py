"""The engine interface every tracking engine implements, and the registry that creates engines by name.

An engine is a small stateful object in the spirit of Cutie's ``step(image, mask)``: :meth:`Engine.step` takes
the next frame (and the prompts of objects that start on it) and returns one mask and score per object. It keeps
only the state it needs to go on (no cache of all past frames). :func:`vos.tracker.track` drives it over a video.
"""

from __future__ import annotations

import abc
import importlib
import inspect
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np

from vos.errors import EngineError, UnsupportedPromptError
from vos.masks import labels_from_masks
from vos.prompts import ObjectPrompt


@dataclass(frozen=True)
class ObjectResult:
    """One object on one frame. An empty mask means the object is absent (occluded or out of view)."""

    object_id: int
    mask: np.ndarray  # bool [H, W]
    score: float  # the engine's confidence that ``mask`` is the object, in [0, 1]

    @property
    def present(self) -> bool:
        return bool(self.mask.any())


@dataclass
class FrameResult:
    """Every tracked object on one frame; masks never overlap."""

    index: int
    objects: dict[int, ObjectResult]
    height: int
    width: int
    seconds: float = 0.0  # engine compute time for this frame (decode excluded)
    image: np.ndarray | None = field(default=None, repr=False)  # the RGB frame, for overlays; not serialised

    def label_map(self) -> np.ndarray:
        return labels_from_masks({i: r.mask for i, r in self.objects.items()}, self.height, self.width)


class Engine(abc.ABC):
    """A video object segmentation engine. Subclasses set :attr:`name` and :attr:`supported_prompts`."""

    name: ClassVar[str]
    supported_prompts: ClassVar[frozenset[str]]
    unsupported_hint: ClassVar[str] = "use another engine or another prompt kind"  # ends UnsupportedPromptError

    @classmethod
    def check_prompts(cls, prompts: Sequence[ObjectPrompt]) -> None:
        """Raise :class:`UnsupportedPromptError` if a prompt kind cannot be used.

        A class method, so front ends can reject a job before creating an engine (which may load weights).
        """
        for prompt in prompts:
            unsupported = prompt.kinds - cls.supported_prompts
            if unsupported:
                raise UnsupportedPromptError(
                    f"the {cls.name!r} engine cannot use {', '.join(sorted(unsupported))} prompts "
                    f"(object {prompt.object_id}); {cls.unsupported_hint}"
                )

    @abc.abstractmethod
    def step(self, frame: np.ndarray, prompts: Sequence[ObjectPrompt] = ()) -> dict[int, ObjectResult]:
        """Segment every known object on ``frame`` (RGB uint8), first adding the objects prompted on it.

        Returns one result per object tracked so far, with non-overlapping masks of the frame's size.
        """

    @abc.abstractmethod
    def reset(self) -> None:
        """Forget every object so the engine can start on another video."""


# ---------------------------------------------------------------------------------------------- registry

# Engines are imported on first use, so choosing the weight-free engine never pays for loading another.
_ENGINES: dict[str, str] = {
    "classical": "vos.engines.classical:ClassicalEngine",
    "seem": "vos.engines.seem:SeemEngine",
}


def register_engine(name: str, target: str) -> None:
    """Make ``create_engine(name)`` build ``target``, given as ``"module:Class"`` (imported on first use)."""
    _ENGINES[name] = target


def unregister_engine(name: str) -> None:
    _ENGINES.pop(name, None)


def available_engines() -> list[str]:
    return sorted(_ENGINES)


def engine_class(name: str) -> type[Engine]:
    """The engine class registered under ``name``."""
    if name not in _ENGINES:
        raise EngineError(f"unknown engine {name!r}; available engines: {', '.join(available_engines())}")
    module_name, class_name = _ENGINES[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def check_engine_options(name: str, options: Mapping[str, Any]) -> type[Engine]:
    """The engine class for ``name``, after checking that it takes every option given (nothing is built)."""
    cls = engine_class(name)
    accepted = sorted(set(inspect.signature(cls.__init__).parameters) - {"self"})
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise EngineError(f"engine {name!r} has no option {', '.join(unknown)}; its options are: {', '.join(accepted) or 'none'}")
    return cls


def create_engine(name: str, **options: Any) -> Engine:
    """Create an engine by name; unknown options are an :class:`EngineError` naming the valid ones."""
    return check_engine_options(name, options)(**options)
