"""Mask formats: COCO RLE, DAVIS palette PNGs, label maps and coloured overlays."""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image
from pycocotools import mask as coco_mask

from vos.errors import PromptError

MAX_OBJECT_ID = 254  # palette index 255 is "void" in DAVIS 2017 / YouTube-VOS annotations
MAX_MASK_PIXELS = 8192 * 8192  # a prompt mask or image larger than this is refused before it is decoded


def davis_palette() -> np.ndarray:
    """The PASCAL VOC / DAVIS colour palette: ``[256, 3]`` uint8, index = object id."""
    palette = np.zeros((256, 3), np.uint8)
    for index in range(256):
        value, red, green, blue = index, 0, 0, 0
        for shift in range(7, -1, -1):  # spread the index bits over the high bits of the three channels
            red |= ((value >> 0) & 1) << shift
            green |= ((value >> 1) & 1) << shift
            blue |= ((value >> 2) & 1) << shift
            value >>= 3
        palette[index] = (red, green, blue)
    return palette


PALETTE = davis_palette()


# ---------------------------------------------------------------------------------------------- COCO RLE


def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """Encode a binary ``[H, W]`` mask as compressed COCO RLE (``counts`` as a str, JSON-ready)."""
    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def decode_rle(rle: Mapping[str, Any]) -> np.ndarray:
    """Decode compressed (str/bytes counts) or uncompressed (list counts) COCO RLE into a C-ordered bool mask.

    The size is checked before anything is allocated, and the counts must cover exactly ``H x W`` pixels.
    """
    height, width = rle_size(rle)
    counts = _run_lengths(rle["counts"])
    if int(counts.sum()) != height * width:
        raise PromptError(f"invalid COCO RLE: its counts cover {int(counts.sum())} pixels, but its size "
                          f"{height}x{width} has {height * width}")
    runs = np.arange(len(counts)) % 2 == 1  # runs alternate background, object, background...
    column_major = np.repeat(runs, counts)
    return np.ascontiguousarray(column_major.reshape(width, height).T)


def rle_size(rle: Any) -> tuple[int, int]:
    """The ``(height, width)`` of a COCO RLE, checked (positive, at most :data:`MAX_MASK_PIXELS`) without decoding."""
    if not isinstance(rle, Mapping) or "size" not in rle or "counts" not in rle:
        raise PromptError("invalid COCO RLE: expected {'size': [H, W], 'counts': ...}")
    size = rle["size"]
    if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(_is_int(v) for v in size)):
        raise PromptError(f"invalid COCO RLE: 'size' must be [height, width] as two integers, got {size!r}")
    height, width = int(size[0]), int(size[1])
    _check_mask_size(height, width, "COCO RLE")
    return height, width


def _check_mask_size(height: int, width: int, what: str) -> None:
    if height < 1 or width < 1:
        raise PromptError(f"invalid {what}: its size {height}x{width} must be positive")
    if height * width > MAX_MASK_PIXELS:
        raise PromptError(f"{what} of {width}x{height} pixels is larger than the limit of {MAX_MASK_PIXELS} pixels")


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _run_lengths(counts: Any) -> np.ndarray:
    """Run lengths of uncompressed (a list) or compressed (COCO's string code) RLE counts, all checked >= 0."""
    if isinstance(counts, list):
        if not all(_is_int(c) and c >= 0 for c in counts):
            raise PromptError("invalid COCO RLE: list 'counts' must hold non-negative integers")
        return np.asarray(counts, dtype=np.int64)
    if isinstance(counts, bytes):
        counts = counts.decode("ascii", errors="replace")
    if not isinstance(counts, str):
        raise PromptError(f"invalid COCO RLE: 'counts' must be a string or a list, got {type(counts).__name__}")
    return _decode_counts_string(counts)


def _decode_counts_string(text: str) -> np.ndarray:
    """COCO's compressed counts (maskApi.c rleFrString): 5-bit groups with a continuation bit, deltas from the
    count two back for every count after the third."""
    values: list[int] = []
    position = 0
    while position < len(text):
        value, shift, more = 0, 0, True
        while more:
            if position >= len(text):
                raise PromptError("invalid COCO RLE: compressed 'counts' ends inside a number")
            code = ord(text[position]) - 48
            if not 0 <= code < 64:
                raise PromptError(f"invalid COCO RLE: unexpected character {text[position]!r} in compressed 'counts'")
            value |= (code & 0x1F) << shift
            more = bool(code & 0x20)
            position += 1
            shift += 5
            if not more and code & 0x10:
                value -= 1 << shift  # sign extension
        if len(values) > 2:
            value += values[-2]
        if value < 0:
            raise PromptError("invalid COCO RLE: compressed 'counts' decode to a negative run length")
        values.append(value)
    return np.asarray(values, dtype=np.int64)


def rle_area(rle: Mapping[str, Any]) -> int:
    return int(coco_mask.area(_compressed(rle)))


def rle_bbox(rle: Mapping[str, Any]) -> list[float]:
    """The mask's bounding box as COCO ``[x, y, width, height]``."""
    return [float(v) for v in coco_mask.toBbox(_compressed(rle))]


def _compressed(rle: Mapping[str, Any]) -> dict[str, Any]:
    counts = rle["counts"]
    return {"size": list(rle["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


def object_record(object_id: int, mask: np.ndarray, score: float) -> dict[str, Any]:
    """One object's result as JSON: id, score, area, bbox and RLE (the format of streams and RLE files)."""
    rle = encode_rle(mask)
    return {"object_id": object_id, "score": round(float(score), 6), "area": rle_area(rle), "bbox": rle_bbox(rle),
            "rle": rle}


# ---------------------------------------------------------------------------------------------- PNG


def labels_from_masks(masks: Mapping[int, np.ndarray], height: int, width: int) -> np.ndarray:
    """Paint binary masks into one ``uint8`` label map (0 = background, value = object id)."""
    labels = np.zeros((height, width), np.uint8)
    for object_id, mask in masks.items():
        labels[mask] = object_id
    return labels


def write_palette_png(path: str | Path | io.BytesIO, labels: np.ndarray) -> None:
    """Write a label map as an indexed PNG with the DAVIS palette (the official result format)."""
    image = Image.fromarray(labels.astype(np.uint8), mode="P")
    image.putpalette(PALETTE.tobytes())
    image.save(path, format="PNG")


def read_label_png(path: str | Path) -> np.ndarray:
    """Read an annotation PNG as a ``uint8`` label map.

    Indexed (palette) PNGs keep their indices (DAVIS 2017, YouTube-VOS); grayscale PNGs are DAVIS 2016's
    0/255 binary masks and become 0/1.
    """
    with Image.open(path) as image:
        if image.mode == "P":
            return np.array(image, dtype=np.uint8)
        return (np.array(image.convert("L")) > 0).astype(np.uint8)


def image_size(data: bytes, what: str = "mask") -> tuple[int, int]:
    """The ``(width, height)`` of an encoded image, read from its header only (nothing is decoded)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except Image.DecompressionBombError:
        raise PromptError(f"{what} image is larger than the limit of {MAX_MASK_PIXELS} pixels") from None
    except (OSError, ValueError, SyntaxError):  # PIL names a BytesIO object in these messages: say it plainly
        raise PromptError(f"{what} is not a readable PNG image") from None
    _check_mask_size(height, width, f"{what} image")
    return width, height


def mask_from_png_bytes(data: bytes) -> np.ndarray:
    """Decode a mask given as PNG bytes: any non-zero pixel (or any opaque pixel, with alpha) is the object.

    The image size is checked from the header before the pixels are decoded."""
    image_size(data)
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.mode in ("RGBA", "LA"):
                return np.array(image.getchannel("A")) > 0
            if image.mode == "P":
                return np.array(image) > 0
            return np.array(image.convert("L")) > 0
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise PromptError(f"mask is not a readable PNG image ({type(error).__name__})") from None


def mask_from_base64_png(text: str) -> np.ndarray:
    try:
        return mask_from_png_bytes(base64.b64decode(text, validate=True))
    except ValueError as error:
        raise PromptError(f"mask 'png_base64' is not valid base64: {error}") from error


# ---------------------------------------------------------------------------------------------- overlap, overlay


def exclusive_masks(probabilities: Mapping[int, np.ndarray], threshold: float = 0.5) -> dict[int, np.ndarray]:
    """Resolve overlapping objects: each pixel goes to the most probable object, if above ``threshold``."""
    if not probabilities:
        return {}
    ids = list(probabilities)
    stack = np.stack([probabilities[i] for i in ids])
    winner = stack.argmax(axis=0)
    claimed = stack.max(axis=0) > threshold
    return {object_id: claimed & (winner == k) for k, object_id in enumerate(ids)}


def draw_overlay(frame: np.ndarray, labels: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend each object's palette colour over an RGB frame and outline it."""
    out = frame.copy()
    for object_id in np.unique(labels):
        if object_id == 0:
            continue
        mask = labels == object_id
        colour = PALETTE[object_id].astype(np.float32)
        out[mask] = (out[mask] * (1 - alpha) + colour * alpha).astype(np.uint8)
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, tuple(int(c) for c in PALETTE[object_id]), thickness=2)
    return out


class OverlayWriter:
    """Encodes overlay frames into an H.264 MP4 (PyAV), one frame at a time."""

    def __init__(self, path: str | Path, fps: float, width: int, height: int) -> None:
        from fractions import Fraction

        import av

        self._container = av.open(str(path), mode="w")
        self._stream = self._container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        self._stream.width, self._stream.height = width - width % 2, height - height % 2  # yuv420 needs even sizes
        self._stream.pix_fmt = "yuv420p"
        self._stream.options = {"crf": "23", "preset": "veryfast"}

    def write(self, frame: np.ndarray, labels: np.ndarray) -> None:
        import av

        image = draw_overlay(frame, labels)[: self._stream.height, : self._stream.width]
        for packet in self._stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")):
            self._container.mux(packet)

    def close(self) -> None:
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()

    def __enter__(self) -> OverlayWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
