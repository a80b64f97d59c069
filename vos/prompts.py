"""Prompts: what the user says about an object on one frame.

An :class:`ObjectPrompt` carries its frame (``frame_index``) and may combine several kinds (mask, points, box,
scribbles, text, reference image + mask); an object may be prompted on many frames. Masks are held as bool arrays;
:func:`parse_prompts` builds prompts from JSON, where a mask is given as COCO RLE, base64 PNG or the name of an
uploaded PNG file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from vos.errors import PromptError
from vos.masks import MAX_OBJECT_ID, decode_rle, mask_from_base64_png, mask_from_png_bytes

PROMPT_KINDS = frozenset({"mask", "points", "box", "scribble", "text", "reference"})
MAX_SCRIBBLE_WIDTH = 1000.0  # pixels; wider than any frame we accept is a mistake, and rasterising it costs memory
MAX_POINTS = 1000  # clicks per object and frame; more is a runaway client, not a user
MAX_LINES = 100  # scribbles per object and frame, and polylines per scribble
MAX_LINE_POINTS = 10_000  # vertices of one polyline


class Point(BaseModel):
    """A click in pixel coordinates of the prompted frame; ``positive=False`` marks background."""

    model_config = ConfigDict(frozen=True)
    x: float
    y: float
    positive: bool = True


class Box(BaseModel):
    model_config = ConfigDict(frozen=True)
    x0: float
    y0: float
    x1: float
    y1: float

    @model_validator(mode="after")
    def _ordered(self) -> Box:
        if self.x1 <= self.x0 or self.y1 <= self.y0:
            raise ValueError(f"box must have x1 > x0 and y1 > y0, got ({self.x0}, {self.y0}, {self.x1}, {self.y1})")
        return self


class Scribble(BaseModel):
    """A stroke: polylines drawn ``width`` pixels wide, or a ready stroke mask."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)
    lines: list[list[tuple[float, float]]] = Field(default_factory=list, max_length=MAX_LINES)
    width: float = Field(default=5.0, gt=0, le=MAX_SCRIBBLE_WIDTH, allow_inf_nan=False,
                         description=f"stroke width in pixels, at most {MAX_SCRIBBLE_WIDTH:g}")
    positive: bool = True
    mask: np.ndarray | None = None

    @model_validator(mode="after")
    def _has_stroke(self) -> Scribble:
        if self.mask is None and not any(self.lines):
            raise ValueError("scribble needs at least one polyline point or a stroke mask")
        if any(len(line) > MAX_LINE_POINTS for line in self.lines):
            raise ValueError(f"a scribble polyline may have at most {MAX_LINE_POINTS} points")
        return self

    def rasterize(self, height: int, width: int) -> np.ndarray:
        """The stroke as a bool mask of the frame's size."""
        if self.mask is not None:
            return self.mask.astype(bool)
        canvas = np.zeros((height, width), np.uint8)
        thickness = max(1, int(round(self.width)))
        for line in self.lines:
            points = np.round(np.asarray(line, np.float64)).astype(np.int32).reshape(-1, 1, 2)
            cv2.polylines(canvas, [points], isClosed=False, color=1, thickness=thickness)
            for x, y in points[:, 0]:  # a one-point line is a dot
                cv2.circle(canvas, (int(x), int(y)), max(1, thickness // 2), 1, -1)
        return canvas.astype(bool)


class Reference(BaseModel):
    """A reference image (RGB ``uint8``) with the object's mask on it ("segment things like this")."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)
    image: np.ndarray
    mask: np.ndarray


class ObjectPrompt(BaseModel):
    """Everything known about one object on one frame."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)
    object_id: int = Field(ge=1, le=MAX_OBJECT_ID)
    frame_index: int = Field(default=0, ge=0)
    mask: np.ndarray | None = None
    points: list[Point] = Field(default_factory=list, max_length=MAX_POINTS)
    box: Box | None = None
    scribbles: list[Scribble] = Field(default_factory=list, max_length=MAX_LINES)
    text: str | None = None
    reference: Reference | None = None

    @field_validator("text")
    @classmethod
    def _text_not_blank(cls, text: str | None) -> str | None:
        if text is not None and not text.strip():
            raise ValueError("text prompt must not be blank")
        return text

    @model_validator(mode="after")
    def _has_prompt(self) -> ObjectPrompt:
        if not self.kinds:
            raise ValueError(f"object {self.object_id} has no prompt: give a mask, points, box, scribbles, text or "
                             "reference")
        return self

    @property
    def kinds(self) -> frozenset[str]:
        """The prompt kinds this object carries (a subset of :data:`PROMPT_KINDS`)."""
        given = {
            "mask": self.mask is not None,
            "points": bool(self.points),
            "box": self.box is not None,
            "scribble": bool(self.scribbles),
            "text": self.text is not None,
            "reference": self.reference is not None,
        }
        return frozenset(kind for kind, present in given.items() if present)


# ---------------------------------------------------------------------------------------------- validation


def validate_prompts(prompts: Sequence[ObjectPrompt], width: int, height: int, num_frames: int | None = None) -> None:
    """Check prompts against the video: one prompt per object and frame, frames that exist, coordinates inside the
    frame, masks of the frame's size."""
    if not prompts:
        raise PromptError("no prompts given: prompt at least one object")
    seen: set[tuple[int, int]] = set()
    for prompt in prompts:
        key = (prompt.object_id, prompt.frame_index)
        if key in seen:
            raise PromptError(f"object id {prompt.object_id} is prompted twice on frame {prompt.frame_index}: "
                              "combine its points, box and scribbles into one prompt")
        seen.add(key)
        if num_frames is not None and prompt.frame_index >= num_frames:
            raise PromptError(
                f"object {prompt.object_id} is prompted on frame {prompt.frame_index}, "
                f"but the video has {num_frames} frames"
            )
        _validate_geometry(prompt, width, height)


def _validate_geometry(prompt: ObjectPrompt, width: int, height: int) -> None:
    where = f"object {prompt.object_id}"
    for point in prompt.points:
        _check_inside(point.x, point.y, width, height, f"{where}: point")
    if prompt.box is not None:
        box = prompt.box
        _check_inside(box.x0, box.y0, width, height, f"{where}: box corner")
        _check_inside(box.x1, box.y1, width, height, f"{where}: box corner", inclusive_end=True)
    for scribble in prompt.scribbles:
        for line in scribble.lines:
            for x, y in line:
                _check_inside(x, y, width, height, f"{where}: scribble point")
        if scribble.mask is not None:
            _check_mask(scribble.mask, height, width, f"{where}: scribble mask")
    if prompt.mask is not None:
        _check_mask(prompt.mask, height, width, f"{where}: mask")
    if prompt.reference is not None:
        ref = prompt.reference
        if ref.image.ndim != 3 or ref.image.shape[2] != 3:
            raise PromptError(f"{where}: reference image must be RGB [H, W, 3], got shape {ref.image.shape}")
        _check_mask(ref.mask, ref.image.shape[0], ref.image.shape[1], f"{where}: reference mask")


def _check_inside(x: float, y: float, width: int, height: int, what: str, inclusive_end: bool = False) -> None:
    x_ok = 0 <= x <= width if inclusive_end else 0 <= x < width
    y_ok = 0 <= y <= height if inclusive_end else 0 <= y < height
    if not (x_ok and y_ok):
        raise PromptError(f"{what} ({x:g}, {y:g}) lies outside the {width}x{height} frame")


def _check_mask(mask: np.ndarray, height: int, width: int, what: str) -> None:
    if mask.shape != (height, width):
        size = f"{mask.shape[1] if mask.ndim > 1 else '?'}x{mask.shape[0]}"
        raise PromptError(f"{what} is {size}, expected {width}x{height}")
    if not mask.any():
        raise PromptError(f"{what} is empty")


# ---------------------------------------------------------------------------------------------- JSON


FileLoader = Callable[[str], bytes]


def parse_prompts(raw: Iterable[Mapping[str, Any]], load_file: FileLoader | None = None) -> list[ObjectPrompt]:
    """Build prompts from JSON-like dicts (the API's and the CLI's format).

    A mask (and a scribble or reference mask) is ``{"rle": {...}}``, ``{"png_base64": "..."}`` or
    ``{"file": "name"}``; a reference image is ``{"file": "name"}`` or ``{"png_base64"|"jpeg_base64": ...}``.
    Files are read with ``load_file(name)``, e.g. from uploaded multipart parts.
    """
    if isinstance(raw, Mapping) or isinstance(raw, (str, bytes)):
        raise PromptError("prompts must be a JSON list of objects, e.g. [{\"object_id\": 1, \"points\": [...]}]")
    prompts = []
    for index, item in enumerate(raw):
        if not isinstance(item, Mapping):
            raise PromptError(f"prompt #{index} must be a JSON object, got {type(item).__name__}")
        try:
            prompts.append(ObjectPrompt.model_validate(_resolve_files(dict(item), load_file)))
        except ValidationError as error:
            raise PromptError(f"prompt #{index} is invalid: {_describe(error)}") from error
    return prompts


def _resolve_files(item: dict[str, Any], load_file: FileLoader | None) -> dict[str, Any]:
    if item.get("mask") is not None:
        item["mask"] = _load_mask(item["mask"], load_file)
    if isinstance(item.get("scribbles"), list):
        item["scribbles"] = [
            {**s, "mask": _load_mask(s["mask"], load_file)}
            if isinstance(s, Mapping) and s.get("mask") is not None else s
            for s in item["scribbles"]
        ]
    if isinstance(item.get("reference"), Mapping):
        ref = item["reference"]
        item["reference"] = {"image": _load_image(ref.get("image"), load_file),
                             "mask": _load_mask(ref.get("mask"), load_file)}
    return item


def _load_mask(spec: Any, load_file: FileLoader | None) -> np.ndarray:
    if isinstance(spec, np.ndarray):
        return spec.astype(bool)
    if not isinstance(spec, Mapping) or len(spec) != 1:
        raise PromptError("a mask must be one of {\"rle\": {...}}, {\"png_base64\": \"...\"}, {\"file\": \"name\"}")
    (kind, value), = spec.items()
    if kind == "rle":
        return decode_rle(value)
    if kind == "png_base64":
        return mask_from_base64_png(value)
    if kind == "file":
        return mask_from_png_bytes(_read_named_file(value, load_file))
    raise PromptError(f"unknown mask encoding {kind!r}: use 'rle', 'png_base64' or 'file'")


def _load_image(spec: Any, load_file: FileLoader | None) -> np.ndarray:
    if isinstance(spec, np.ndarray):
        return spec
    if not isinstance(spec, Mapping) or len(spec) != 1:
        raise PromptError("a reference image must be {\"file\": \"name\"} or {\"png_base64\"|\"jpeg_base64\": \"...\"}")
    (kind, value), = spec.items()
    if kind == "file":
        data = _read_named_file(value, load_file)
    elif kind in ("png_base64", "jpeg_base64"):
        import base64
        import binascii

        try:
            data = base64.b64decode(value, validate=True)
        except (binascii.Error, TypeError) as error:
            raise PromptError(f"reference image {kind!r} is not valid base64") from error
    else:
        raise PromptError(f"unknown image encoding {kind!r}: use 'file', 'png_base64' or 'jpeg_base64'")
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise PromptError("reference image is not a readable PNG/JPEG image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _read_named_file(name: Any, load_file: FileLoader | None) -> bytes:
    if load_file is None:
        raise PromptError(f"prompt refers to file {name!r}, but no files were given with the prompts")
    if not isinstance(name, str):
        raise PromptError(f"file reference must be a name, got {name!r}")
    return load_file(name)


def _describe(error: ValidationError) -> str:
    parts = []
    for detail in error.errors():
        location = ".".join(str(p) for p in detail["loc"])
        parts.append(f"{location}: {detail['msg']}" if location else detail["msg"])
    return "; ".join(parts)
