"""The engine interface every tracking engine implements, and the registry that creates engines by name.

An engine is a small stateful object in the spirit of Cutie's ``step(image, mask)``: :meth:`Engine.step` takes
the next frame (and the prompts of objects that start on it) and returns one mask and score per object. It keeps
only the state it needs to go on (no cache of all past frames). :func:`vos.tracker.track` drives it over a video.
"""

from __future__ import annotations

import abc
import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

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


class EngineOptions(BaseModel):
    """An engine's options: each engine subclasses this with typed, range-checked and described fields.

    The same model validates API submissions, appears in the API's OpenAPI schema and generates the ``vos track``
    flags, so an option is declared once.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, arbitrary_types_allowed=True)


class Engine(abc.ABC):
    """A video object segmentation engine. Subclasses set :attr:`name`, :attr:`supported_prompts` and
    :attr:`Options`, and take their options as keyword arguments (or one ready :attr:`Options` instance)."""

    name: ClassVar[str]
    supported_prompts: ClassVar[frozenset[str]]
    unsupported_hint: ClassVar[str] = "use another engine or another prompt kind"  # ends UnsupportedPromptError
    Options: ClassVar[type[EngineOptions]] = EngineOptions

    def __init__(self, options: EngineOptions | None = None, **values: Any) -> None:
        if options is not None and values:
            raise EngineError(f"engine {self.name!r}: give an options model or option values, not both")
        self.options = options if options is not None else validate_options(type(self), values)

    @classmethod
    def validate_options(cls, values: Mapping[str, Any]) -> EngineOptions:
        """``values`` checked against :attr:`Options`; a bad name, type or range is an :class:`EngineError`."""
        return validate_options(cls, values)

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

# Engines are imported on first use, so choosing the weight-free engine never pays for loading another. An engine
# whose module is heavy names a light module for its options model, so listing options imports no model code.
_ENGINES: dict[str, str] = {
    "classical": "vos.engines.classical:ClassicalEngine",
    "seem": "vos.engines.seem:SeemEngine",
}
_OPTIONS: dict[str, str] = {"seem": "vos.engines.seem_options:SeemOptions"}


def register_engine(name: str, target: str, options: str | None = None) -> None:
    """Make ``create_engine(name)`` build ``target``, given as ``"module:Class"`` (imported on first use);
    ``options`` optionally names its options model the same way, when importing the engine is costly."""
    _ENGINES[name] = target
    _OPTIONS.pop(name, None)
    if options is not None:
        _OPTIONS[name] = options


def unregister_engine(name: str) -> None:
    _ENGINES.pop(name, None)
    _OPTIONS.pop(name, None)


def available_engines() -> list[str]:
    return sorted(_ENGINES)


def engine_class(name: str) -> type[Engine]:
    """The engine class registered under ``name``."""
    if name not in _ENGINES:
        raise EngineError(f"unknown engine {name!r}; available engines: {', '.join(available_engines())}")
    return _import(_ENGINES[name])


def engine_options_class(name: str) -> type[EngineOptions]:
    """The options model of engine ``name`` (without importing the engine when it names a light module)."""
    if name in _OPTIONS:
        return _import(_OPTIONS[name])
    return engine_class(name).Options


def _import(target: str) -> Any:
    module_name, class_name = target.split(":")
    return getattr(importlib.import_module(module_name), class_name)


def validate_options(cls: type[Engine], values: Mapping[str, Any]) -> EngineOptions:
    """``values`` as ``cls``'s options model; unknown names, wrong types and out-of-range values are one
    :class:`EngineError` that names every bad option and lists the valid ones."""
    return _validated(cls.name, cls.Options, values)


def _validated(name: str, model: type[EngineOptions], values: Mapping[str, Any]) -> EngineOptions:
    if not isinstance(values, Mapping):
        raise EngineError(f"options of engine {name!r} must be a mapping of names to values")
    try:
        return model.model_validate(dict(values))
    except ValidationError as error:
        raise EngineError(_describe(name, model, error)) from None


def _describe(name: str, model: type[EngineOptions], error: ValidationError) -> str:
    unknown, problems = [], []
    for detail in error.errors():
        where = ".".join(str(part) for part in detail["loc"])
        if detail["type"] == "extra_forbidden":
            unknown.append(where)
        else:
            option = f"option {where}" if where else "options"
            problems.append(f"engine {name!r} {option}: {detail['msg']} (got {repr(detail['input'])[:60]})")
    if unknown:
        accepted = ", ".join(model.model_fields) or "none"
        problems.insert(0, f"engine {name!r} has no option {', '.join(unknown)}; its options are: {accepted}")
    return "; ".join(problems)


def check_engine_options(name: str, options: Mapping[str, Any]) -> EngineOptions:
    """The validated options model of engine ``name`` (nothing is built and no model code is imported: front ends
    call this at submission)."""
    return _validated(name, engine_options_class(name), options)


def create_engine(name: str, **options: Any) -> Engine:
    """Create an engine by name; bad options are an :class:`EngineError` naming them and the valid ones."""
    cls = engine_class(name)
    checked = validate_options(cls, options)
    return cls(**{key: getattr(checked, key) for key in checked.model_fields_set})
