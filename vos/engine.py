"""The engine interface every tracking engine implements, and the registry that creates engines by name.

The model is kept apart from a video's state, as in SAM 2's predictor (``inference_state``) and Cutie's
``InferenceCore``: an :class:`Engine` holds weights and configuration only, so one engine serves many videos at
once; a :class:`vos.session.Session` holds one video's state and calls the engine with it:

* :meth:`Engine.new_object` makes the engine's per-object state (:class:`ObjectState`: colour models, reference
  tokens), which every prompted frame of the object (its *anchors*) contributes to;
* :meth:`Engine.add_prompt` segments an object on one frame from a prompt, correcting the mask it already has there;
* :meth:`Engine.start_propagation` begins one sweep over frames in one direction; its :class:`Propagation` keeps
  what passes from one frame to the next (the previous frame, each object's memory) and nothing else.

Frames reach the engine as :class:`VideoFrame`, which caches per-frame data (features) in the session's LRU cache.
"""

from __future__ import annotations

import abc
import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, TypeVar

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
    revision: int = 0  # 1 for a frame's first result in a session, +1 for each change; 0: never computed

    def label_map(self) -> np.ndarray:
        return labels_from_masks({i: r.mask for i, r in self.objects.items()}, self.height, self.width)


T = TypeVar("T")


class FrameCache(Protocol):
    """Where a session keeps data derived from its frames (see :class:`vos.video.ByteLRUCache`)."""

    def get_or_compute(self, key: Any, compute: Callable[[], T]) -> T: ...


@dataclass(frozen=True)
class VideoFrame:
    """One decoded frame of a session's video, as engines see it, with access to the other frames."""

    index: int
    image: np.ndarray = field(repr=False)  # RGB uint8 [H, W, 3]
    cache: FrameCache | None = field(default=None, repr=False, compare=False)
    read: Callable[[int], np.ndarray] | None = field(default=None, repr=False, compare=False)  # frame i of the video
    num_frames: int = 1

    def cached(self, name: str, compute: Callable[[], T]) -> T:
        """``compute()`` for this frame, kept in the session's byte-bounded cache under ``name`` (e.g. features)."""
        if self.cache is None:
            return compute()
        return self.cache.get_or_compute((name, self.index), compute)

    def following(self, count: int) -> list[np.ndarray]:
        """Up to ``count`` frames after this one, in order (e.g. to see how a clicked object moves)."""
        if self.read is None:
            return []
        return [self.read(i) for i in range(self.index + 1, min(self.num_frames, self.index + 1 + count))]


@dataclass
class ObjectState:
    """What an engine keeps about one object of one session, built from the object's anchors (its prompted frames).

    Engines subclass it; the session stores it and hands it back, and never reads the engine's fields.
    """

    object_id: int


class Propagation(abc.ABC):
    """One sweep of an engine over frames in one direction (forward or backward), one frame per :meth:`step`.

    It keeps what passes from one frame to the next in the sweep's order (the previous frame, each object's mask
    or memory), so backward propagation computes exactly what forward propagation computes on the reversed video.
    """

    @abc.abstractmethod
    def step(self, frame: VideoFrame, objects: Mapping[int, ObjectState],
             seeds: Mapping[int, np.ndarray]) -> dict[int, ObjectResult]:
        """Results on ``frame`` for every object in ``objects``, masks not overlapping.

        Objects in ``seeds`` (a subset of ``objects``) start or restart on this frame from the given bool mask (an
        anchor, or the stored result where a sweep starts); their result is that mask. The others follow from their
        masks on the previous frame of this sweep. An object left out of ``objects`` has left the sweep.
        """


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
    def new_object(self, object_id: int) -> ObjectState:
        """The state of an object that has no anchor yet."""

    @abc.abstractmethod
    def add_prompt(self, frame: VideoFrame, state: ObjectState, prompt: ObjectPrompt,
                   current: np.ndarray | None) -> ObjectResult:
        """The object's mask on ``frame`` from ``prompt``, making the frame one of its anchors in ``state``.

        ``current`` is the object's mask on the frame before this prompt (its anchor or propagated mask), or None.
        With it the prompt is a correction: positive clicks and strokes add to it, negative ones remove from it,
        a mask replaces it.
        """

    def prepare_frame(self, frame: VideoFrame) -> None:
        """Compute and cache what a prompt on ``frame`` needs before any prompt comes (image features, the motion
        cue), so that a prompt costs only the decision itself. Front ends call it while the user looks at a frame."""

    @abc.abstractmethod
    def remove_anchor(self, state: ObjectState, frame_index: int) -> None:
        """Forget what frame ``frame_index`` contributed to the object (its prompts there were cleared)."""

    @abc.abstractmethod
    def start_propagation(self) -> Propagation:
        """A new sweep; see :class:`Propagation`."""


# ---------------------------------------------------------------------------------------------- registry

DEFAULT_ENGINE = "classical"  # the weight-free engine: it runs anywhere, with nothing to download

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
