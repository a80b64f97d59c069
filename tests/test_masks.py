"""Mask formats: RLE and PNG round trips on a real DAVIS mask (the shipped sample's), palette, overlay video, overlap
resolution."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from vos.errors import PromptError
from vos.masks import (
    PALETTE,
    OverlayWriter,
    decode_rle,
    encode_rle,
    exclusive_masks,
    object_record,
    read_label_png,
    write_palette_png,
)
from vos.video import open_video


@pytest.fixture(scope="module")
def swan_mask(sample_mask_path: Path) -> np.ndarray:
    return read_label_png(sample_mask_path) > 0


def test_davis16_annotation_reads_as_binary(swan_mask: np.ndarray) -> None:
    assert swan_mask.shape == (480, 854)
    assert 0.05 < swan_mask.mean() < 0.3  # the swan covers a fair part of the frame


def test_rle_round_trip_is_lossless_and_json_ready(swan_mask: np.ndarray) -> None:
    rle = json.loads(json.dumps(encode_rle(swan_mask)))
    assert rle["size"] == [480, 854]
    np.testing.assert_array_equal(decode_rle(rle), swan_mask)


def test_rle_decodes_with_pycocotools_and_uncompressed_counts(swan_mask: np.ndarray) -> None:
    rle = encode_rle(swan_mask)
    theirs = coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode()})
    np.testing.assert_array_equal(theirs.astype(bool), swan_mask)
    # Uncompressed COCO RLE: run lengths over the column-major flattening, starting with zeros.
    flat = swan_mask.flatten(order="F").astype(np.int8)
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    counts = np.diff(np.concatenate([[0], changes])).tolist()
    np.testing.assert_array_equal(decode_rle({"size": [480, 854], "counts": counts}), swan_mask)


def test_object_record_area_and_bbox(swan_mask: np.ndarray) -> None:
    record = object_record(3, swan_mask, 0.75)
    ys, xs = np.nonzero(swan_mask)
    assert record["object_id"] == 3 and record["score"] == 0.75
    assert record["area"] == int(swan_mask.sum())
    assert record["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]


def test_bad_rle_is_a_prompt_error() -> None:
    with pytest.raises(PromptError, match="invalid COCO RLE"):
        decode_rle({"counts": "abc"})


def test_palette_png_round_trip(tmp_path: Path, swan_mask: np.ndarray) -> None:
    labels = np.zeros(swan_mask.shape, np.uint8)
    labels[swan_mask] = 1
    labels[:40, :60] = 7
    write_palette_png(tmp_path / "labels.png", labels)
    with Image.open(tmp_path / "labels.png") as image:
        assert image.mode == "P"
        assert image.getpalette()[3:6] == [128, 0, 0]  # DAVIS / PASCAL VOC: object 1 is dark red
    np.testing.assert_array_equal(read_label_png(tmp_path / "labels.png"), labels)


def test_palette_matches_pascal_voc() -> None:
    assert PALETTE[:4].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0]]
    assert PALETTE[255].tolist() == [224, 224, 192]


def test_exclusive_masks_assign_each_pixel_once() -> None:
    a = np.zeros((4, 4))
    a[:, :3] = 0.9
    b = np.zeros((4, 4))
    b[:, 1:] = 0.8
    b[:, 1] = 0.95
    masks = exclusive_masks({1: a, 2: b})
    assert not (masks[1] & masks[2]).any()
    assert masks[1][:, 0].all() and masks[2][:, 1].all() and masks[1][:, 2].all() and masks[2][:, 3].all()


def test_overlay_video_is_readable(tmp_path: Path, sample_video: Path, swan_mask: np.ndarray) -> None:
    labels = swan_mask.astype(np.uint8)
    with open_video(sample_video) as video, \
            OverlayWriter(tmp_path / "overlay.mp4", 24.0, 854, 480) as writer:
        frames = iter(video)
        first = next(frames)
        for _ in range(5):
            writer.write(first, labels)
    with open_video(tmp_path / "overlay.mp4") as overlay:
        assert overlay.info.num_frames == 5
        painted = next(iter(overlay))
    # Inside the swan the red channel is raised by the overlay colour; outside the picture is unchanged.
    inside, outside = swan_mask, ~swan_mask
    assert painted[inside][:, 0].mean() > first[inside][:, 0].mean() + 20
    assert abs(painted[outside].astype(int).mean() - first[:, :854][outside].astype(int).mean()) < 6
