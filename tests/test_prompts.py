"""Prompt parsing and validation: every prompt kind from JSON, and every bad input with its own message."""

import base64
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vos.errors import PromptError
from vos.masks import encode_rle
from vos.prompts import ObjectPrompt, Point, Scribble, parse_prompts, validate_prompts

H, W = 48, 64


def _mask(top: int = 10, left: int = 10, size: int = 12) -> np.ndarray:
    mask = np.zeros((H, W), bool)
    mask[top : top + size, left : left + size] = True
    return mask


def _png_bytes(mask: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255).save(buffer, format="PNG")
    return buffer.getvalue()


def test_every_prompt_kind_parses_from_json() -> None:
    mask = _mask()
    files = {"m.png": _png_bytes(mask), "ref.png": _png_bytes(np.ones((H, W), bool))}
    raw = [
        {"object_id": 1, "mask": {"rle": encode_rle(mask)}},
        {"object_id": 2, "points": [{"x": 5, "y": 6}, {"x": 30, "y": 20, "positive": False}]},
        {"object_id": 3, "box": {"x0": 1, "y0": 2, "x1": 40, "y1": 30}},
        {"object_id": 4, "scribbles": [{"lines": [[[5, 5], [20, 20]]], "width": 3}]},
        {"object_id": 5, "text": "a black swan"},
        {"object_id": 6, "reference": {"image": {"file": "ref.png"}, "mask": {"file": "m.png"}}},
        {"object_id": 7, "mask": {"png_base64": base64.b64encode(files["m.png"]).decode()}, "text": "swan"},
    ]
    prompts = parse_prompts(raw, files.__getitem__)
    assert [p.kinds for p in prompts] == [
        {"mask"}, {"points"}, {"box"}, {"scribble"}, {"text"}, {"reference"}, {"mask", "text"}
    ]
    np.testing.assert_array_equal(prompts[0].mask, mask)
    np.testing.assert_array_equal(prompts[6].mask, mask)
    assert prompts[1].points[1] == Point(x=30, y=20, positive=False)
    assert prompts[5].reference.image.shape == (H, W, 3)
    validate_prompts(prompts, W, H, num_frames=10)


def test_scribble_rasterizes_along_its_line() -> None:
    stroke = Scribble(lines=[[(5, 5), (30, 5)]], width=3).rasterize(H, W)
    assert stroke[5, 5:31].all()
    assert not stroke[20:].any()
    assert 3 * 26 <= stroke.sum() <= 5 * 30


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"object_id": 1}, "must be a JSON list"),
        (["not an object"], "must be a JSON object"),
        ([{"object_id": 1}], "has no prompt"),
        ([{"object_id": 0, "text": "dog"}], "object_id"),
        ([{"object_id": 300, "text": "dog"}], "object_id"),
        ([{"object_id": 1, "text": "  "}], "blank"),
        ([{"object_id": 1, "box": {"x0": 10, "y0": 10, "x1": 5, "y1": 20}}], "x1 > x0"),
        ([{"object_id": 1, "points": [{"x": "left", "y": 3}]}], "points.0.x"),
        ([{"object_id": 1, "mask": {"rle": {"counts": "x"}}}], "invalid COCO RLE"),
        ([{"object_id": 1, "mask": {"png_base64": "!!!"}}], "not valid base64"),
        ([{"object_id": 1, "mask": {"jpeg": "x"}}], "unknown mask encoding"),
        ([{"object_id": 1, "mask": {"file": "missing.png"}}], "no files were given"),
        ([{"object_id": 1, "scribbles": [{"lines": []}]}], "at least one polyline"),
        ([{"object_id": 1, "frame_index": -1, "text": "dog"}], "frame_index"),
    ],
)
def test_malformed_prompts_are_rejected_with_a_message(raw: object, message: str) -> None:
    with pytest.raises(PromptError, match=message):
        parse_prompts(raw)


def test_mask_file_that_is_not_a_png() -> None:
    with pytest.raises(PromptError, match="not a readable PNG"):
        parse_prompts([{"object_id": 1, "mask": {"file": "m"}}], {"m": b"garbage"}.__getitem__)


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        (ObjectPrompt(object_id=1, points=[Point(x=W, y=3)]), "outside the 64x48 frame"),
        (ObjectPrompt(object_id=1, points=[Point(x=3, y=-1)]), "outside"),
        (ObjectPrompt(object_id=1, box={"x0": 0, "y0": 0, "x1": W + 5, "y1": 10}), "box corner"),
        (ObjectPrompt(object_id=1, scribbles=[Scribble(lines=[[(1, 1), (100, 1)]])]), "scribble point"),
        (ObjectPrompt(object_id=1, mask=np.ones((H + 1, W), bool)), "expected 64x48"),
        (ObjectPrompt(object_id=1, mask=np.zeros((H, W), bool)), "mask is empty"),
        (ObjectPrompt(object_id=1, frame_index=10, text="dog"), "video has 10 frames"),
    ],
)
def test_prompts_that_do_not_fit_the_video(prompt: ObjectPrompt, message: str) -> None:
    with pytest.raises(PromptError, match=message):
        validate_prompts([prompt], W, H, num_frames=10)


def test_duplicate_object_ids_and_no_prompts() -> None:
    with pytest.raises(PromptError, match="prompted twice on frame 0"):
        validate_prompts([ObjectPrompt(object_id=2, text="a"), ObjectPrompt(object_id=2, text="b")], W, H)
    # one object on several frames is fine
    validate_prompts([ObjectPrompt(object_id=2, text="a"), ObjectPrompt(object_id=2, frame_index=4, text="b")], W, H)
    with pytest.raises(PromptError, match="no prompts"):
        validate_prompts([], W, H)


def test_davis_ground_truth_as_png_file_prompt(sample_mask_path: Path) -> None:
    png = sample_mask_path.read_bytes()  # the shipped sample's DAVIS annotation (blackswan, frame 0)
    (prompt,) = parse_prompts([{"object_id": 1, "mask": {"file": "gt"}}], {"gt": png}.__getitem__)
    assert prompt.mask.shape == (480, 854) and prompt.mask.sum() > 10_000
    validate_prompts([prompt], 854, 480, num_frames=50)


@pytest.mark.parametrize("width", ["Infinity", "NaN", 1e30, 0, -3])
def test_absurd_scribble_widths_are_refused(width) -> None:
    raw = [{"object_id": 1, "scribbles": [{"lines": [[[1, 1], [5, 5]]], "width": width}]}]
    with pytest.raises(PromptError, match=r"scribbles\.0\.width"):
        parse_prompts(raw)


@pytest.mark.parametrize(("item", "message"), [
    ({"points": [{"x": 1, "y": 1}] * 1001}, "points: List should have at most 1000 items"),
    ({"scribbles": [{"lines": [[[1, 1]] * 10_001]}]}, "at most 10000 points"),
    ({"scribbles": [{"lines": [[[1, 1]]]}] * 101}, "scribbles: List should have at most 100 items"),
    ({"points": [{"x": "NaN", "y": 1}], "frame_index": -1}, "frame_index: Input should be greater than or equal"),
])
def test_runaway_prompts_are_refused(item, message) -> None:
    with pytest.raises(PromptError, match=message):
        parse_prompts([{"object_id": 1, **item}])
