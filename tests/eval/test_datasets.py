"""Dataset readers: DAVIS 2016 on the shared data; DAVIS 2017 and YouTube-VOS layouts built from a shared sequence."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from layouts import SOURCE, box_mask, build_davis17, build_ytvos, save_indexed, source_gt
from PIL import Image

from eval.datasets import Davis2016, Davis2017, YouTubeVOS, open_dataset
from eval.metrics import evaluate_sequence
from vos.errors import DatasetError

# ----------------------------------------------------------------------------------------------------------- DAVIS 2016


def test_davis2016_reads_the_shared_sequences(davis16_root: Path) -> None:
    ds = Davis2016(davis16_root)
    listed = (davis16_root / "ImageSets" / "2016" / "val.txt").read_text().split()
    assert ds.names == tuple(listed) and len(ds) == 10 and "libby" in ds
    seq = ds["libby"]
    n_jpegs = len(list((davis16_root / "JPEGImages" / "480p" / "libby").glob("*.jpg")))
    assert len(seq) == n_jpegs == 49
    assert seq.frame_names[0] == "00000" and seq.frame_names[-1] == "00048"
    assert seq.size == (480, 854)
    assert seq.output_indices == tuple(range(49)) and seq.annotated_indices == tuple(range(49))
    assert seq.void_label is None and seq.object_ids == (1,)
    rgb = seq.image(3)
    bgr = cv2.imread(str(seq.image_paths[3]), cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(rgb, bgr[..., ::-1])
    labels = seq.annotation(7)
    assert labels.dtype == np.uint8 and set(np.unique(labels)) <= {0, 1}
    raw = cv2.imread(str(davis16_root / "Annotations" / "480p" / "libby" / "00007.png"), cv2.IMREAD_GRAYSCALE)
    np.testing.assert_array_equal(labels, raw > 0)
    (first,) = seq.first_appearances()
    assert (first.object_id, first.frame_index, first.frame_name) == (1, 0, "00000")
    np.testing.assert_array_equal(first.mask, seq.annotation(0) == 1)


def test_davis2016_iterates_lazily_and_selects(davis16_root: Path) -> None:
    ds = Davis2016(davis16_root, sequences=["dog", "cows"])
    assert [s.name for s in ds] == ["dog", "cows"]
    with pytest.raises(DatasetError, match="not listed"):
        Davis2016(davis16_root, sequences=["dog", "no-such-seq"])
    with pytest.raises(DatasetError, match="unknown sequence 'bear'.*available: blackswan"):
        Davis2016(davis16_root)["bear"]


def test_davis2016_original_image_set_format(davis16_root: Path, tmp_path: Path) -> None:
    """The 2016 release lists frame paths in ImageSets/480p/<split>.txt instead of names."""
    for sub in ("JPEGImages", "Annotations"):
        (tmp_path / sub / "480p").mkdir(parents=True)
        (tmp_path / sub / "480p" / "libby").symlink_to(davis16_root / sub / "480p" / "libby")
    lines = [f"/JPEGImages/480p/libby/{t:05d}.jpg /Annotations/480p/libby/{t:05d}.png" for t in range(49)]
    (tmp_path / "ImageSets" / "480p").mkdir(parents=True)
    (tmp_path / "ImageSets" / "480p" / "val.txt").write_text("\n".join(lines) + "\n")
    ds = Davis2016(tmp_path)
    assert ds.names == ("libby",) and len(ds["libby"]) == 49


# ----------------------------------------------------------------------------------------------------------- DAVIS 2017


@pytest.fixture
def davis17_root(davis16_root: Path, tmp_path: Path) -> Path:
    """DAVIS 2017 layout: 5 frames of the source sequence, swan = object 1, a box = object 2, void around the box."""
    return build_davis17(davis16_root, tmp_path / "davis17")


def test_davis2017_objects_void_and_first_masks(davis17_root: Path, davis16_root: Path) -> None:
    ds = Davis2017(davis17_root)
    seq = ds[SOURCE]
    assert len(seq) == 5 and seq.object_ids == (1, 2) and seq.void_label == 255
    labels = seq.annotation(0)
    assert set(np.unique(labels)) == {0, 1, 2, 255}
    swan, box = seq.first_appearances()
    assert (swan.object_id, swan.frame_index, box.object_id, box.frame_index) == (1, 0, 2, 0)
    np.testing.assert_array_equal(swan.mask, source_gt(davis16_root, 0))
    np.testing.assert_array_equal(box.mask, box_mask(labels.shape))
    gt = seq.annotations()
    assert gt.shape == (5, 480, 854)
    pred = np.where(gt == 255, 0, gt)
    results = evaluate_sequence(gt, pred, sequence=seq.name)
    assert [(r.object_id, r.J_mean, r.F_mean) for r in results] == [(1, 1.0, 1.0), (2, 1.0, 1.0)]


def _annotation(root: Path, t: int) -> Path:
    return root / "Annotations" / "480p" / SOURCE / f"{t:05d}.png"


def test_davis_missing_root_and_folders(davis17_root: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="nope"):
        Davis2017(tmp_path / "nope")
    with pytest.raises(DatasetError, match="unknown DAVIS resolution"):
        Davis2017(davis17_root, resolution="1080p")
    shutil.rmtree(davis17_root / "Annotations")
    with pytest.raises(DatasetError, match=r"Annotations[/\\]480p"):
        Davis2017(davis17_root)


def test_davis_missing_or_empty_image_set(davis17_root: Path) -> None:
    image_set = davis17_root / "ImageSets" / "2017" / "val.txt"
    with pytest.raises(DatasetError, match=r"ImageSets[/\\]2017[/\\]train\.txt"):
        Davis2017(davis17_root, split="train")
    image_set.write_text("\n")
    with pytest.raises(DatasetError, match="is empty"):
        Davis2017(davis17_root)
    image_set.unlink()
    with pytest.raises(DatasetError, match="sequence list .* not found"):
        Davis2017(davis17_root)


def test_davis_listed_sequence_without_frames(davis17_root: Path) -> None:
    (davis17_root / "ImageSets" / "2017" / "val.txt").write_text(f"{SOURCE}\nghost\n")
    ds = Davis2017(davis17_root)
    with pytest.raises(DatasetError, match=r"JPEGImages[/\\]480p[/\\]ghost"):
        ds["ghost"]
    assert ds[SOURCE].object_ids == (1, 2)  # the good sequence still opens


def test_davis_missing_first_annotation(davis17_root: Path) -> None:
    _annotation(davis17_root, 0).unlink()
    with pytest.raises(DatasetError, match=r"first frame: .*00000\.png is missing"):
        Davis2017(davis17_root)[SOURCE]


def test_davis_annotation_size_mismatch(davis17_root: Path) -> None:
    save_indexed(_annotation(davis17_root, 2), np.zeros((240, 427), np.uint8))
    seq = Davis2017(davis17_root)[SOURCE]
    seq.annotation(1)
    with pytest.raises(DatasetError, match=r"00002\.png is 427x240 but its image .* is 854x480"):
        seq.annotation(2)


def test_davis_rgb_annotation_is_rejected(davis17_root: Path) -> None:
    Image.new("RGB", (854, 480)).save(_annotation(davis17_root, 1))
    with pytest.raises(DatasetError, match=r"00001\.png is a 'RGB' PNG"):
        Davis2017(davis17_root)[SOURCE].annotation(1)


def test_davis_empty_first_frame_and_missing_later_annotation(davis17_root: Path) -> None:
    _annotation(davis17_root, 3).unlink()
    seq = Davis2017(davis17_root)[SOURCE]
    with pytest.raises(DatasetError, match="no annotation for 1 frames"):
        seq.annotations()
    with pytest.raises(DatasetError, match=r"frame 3 \(00003\) .* has no annotation"):
        seq.annotation(3)
    save_indexed(_annotation(davis17_root, 0), np.zeros((480, 854), np.uint8))
    with pytest.raises(DatasetError, match="has no object"):
        Davis2017(davis17_root)[SOURCE].object_ids


# ---------------------------------------------------------------------------------------------------------- YouTube-VOS

@pytest.fixture
def ytvos_root(davis16_root: Path, tmp_path: Path) -> Path:
    """A valid split with one video: swan from frame 0, a box appearing on frame 5, annotated only there."""
    return build_ytvos(davis16_root, tmp_path / "ytvos")


def _meta(root: Path) -> dict:
    return json.loads((root / "valid" / "meta.json").read_text())


def _write_meta(root: Path, meta: dict) -> None:
    (root / "valid" / "meta.json").write_text(json.dumps(meta))


def test_ytvos_sparse_frames(ytvos_root: Path, davis16_root: Path) -> None:
    ds = YouTubeVOS(ytvos_root)
    assert ds.names == ("vid",) and ds.year == 2019
    seq = ds["vid"]
    assert seq.frame_names == ("00000", "00005") and seq.output_indices == (0, 1)
    assert seq.object_ids == (1, 2) and seq.annotated_indices == (0, 1)
    swan, box = seq.first_appearances()
    assert (swan.frame_index, swan.frame_name) == (0, "00000")
    assert (box.frame_index, box.frame_name) == (1, "00005")
    np.testing.assert_array_equal(swan.mask, source_gt(davis16_root, 0))
    np.testing.assert_array_equal(box.mask, box_mask((480, 854)))


def test_ytvos_all_frames(ytvos_root: Path) -> None:
    seq = open_dataset("youtubevos2018", ytvos_root, all_frames=True)["vid"]
    assert len(seq) == 10 and seq.output_indices == (0, 5)
    assert [(a.object_id, a.frame_index) for a in seq.first_appearances()] == [(1, 0), (2, 5)]
    assert seq.image(7).shape == (480, 854, 3)
    with pytest.raises(DatasetError, match="no annotation for 8 frames"):
        seq.annotations()


def test_ytvos_missing_or_malformed_meta(ytvos_root: Path) -> None:
    with pytest.raises(DatasetError, match=r"YouTube-VOS split folder .*test"):
        YouTubeVOS(ytvos_root, split="test")
    _write_meta(ytvos_root, {"vids": {}})
    with pytest.raises(DatasetError, match=r"meta\.json is malformed"):
        YouTubeVOS(ytvos_root)
    (ytvos_root / "valid" / "meta.json").write_text("{not json")
    with pytest.raises(DatasetError, match=r"meta\.json is malformed"):
        YouTubeVOS(ytvos_root)
    (ytvos_root / "valid" / "meta.json").unlink()
    with pytest.raises(DatasetError, match=r"valid[/\\]meta\.json is missing"):
        YouTubeVOS(ytvos_root)


def test_ytvos_unknown_and_missing_video(ytvos_root: Path) -> None:
    with pytest.raises(DatasetError, match="unknown sequence 'other'"):
        YouTubeVOS(ytvos_root)["other"]
    meta = _meta(ytvos_root)
    meta["videos"]["ghost"] = meta["videos"]["vid"]
    _write_meta(ytvos_root, meta)
    with pytest.raises(DatasetError, match=r"JPEGImages[/\\]ghost"):
        YouTubeVOS(ytvos_root)["ghost"]


def test_ytvos_first_annotation_missing(ytvos_root: Path) -> None:
    (ytvos_root / "valid" / "Annotations" / "vid" / "00005.png").unlink()
    with pytest.raises(DatasetError, match=r"object 2 .*00005\.png is missing"):
        YouTubeVOS(ytvos_root)["vid"]


def test_ytvos_object_absent_from_its_first_annotation(ytvos_root: Path) -> None:
    meta = _meta(ytvos_root)
    meta["videos"]["vid"]["objects"]["3"] = {"category": "ghost", "frames": ["00005"]}
    _write_meta(ytvos_root, meta)
    seq = YouTubeVOS(ytvos_root)["vid"]
    assert seq.object_ids == (1, 2, 3)
    with pytest.raises(DatasetError, match=r"object 3 .*00005\.png but that annotation has no pixel with value 3"):
        seq.first_appearances()


def test_ytvos_first_frame_not_among_frames(ytvos_root: Path) -> None:
    meta = _meta(ytvos_root)
    meta["videos"]["vid"]["objects"]["2"]["frames"] = ["00003"]
    _write_meta(ytvos_root, meta)
    with pytest.raises(DatasetError, match="first appears on frame 00003 .* no 00003.jpg"):
        YouTubeVOS(ytvos_root)["vid"]
    with pytest.raises(DatasetError, match=r"00003\.png is missing"):  # among all frames, but not annotated
        YouTubeVOS(ytvos_root, all_frames=True)["vid"]


def test_ytvos_all_frames_layout_errors(ytvos_root: Path) -> None:
    (ytvos_root / "valid_all_frames" / "JPEGImages" / "vid" / "00005.jpg").unlink()
    with pytest.raises(DatasetError, match=r"\['00005'\] .* missing from .*valid_all_frames"):
        YouTubeVOS(ytvos_root, all_frames=True)["vid"]
    shutil.rmtree(ytvos_root / "valid_all_frames")
    with pytest.raises(DatasetError, match="all-frames folder .* use all_frames=False"):
        YouTubeVOS(ytvos_root, all_frames=True)
    assert len(YouTubeVOS(ytvos_root)["vid"]) == 2  # sparse reading needs no all-frames folder


def test_open_dataset_names(davis16_root: Path, ytvos_root: Path) -> None:
    assert isinstance(open_dataset("DAVIS-2016", davis16_root), Davis2016)
    assert open_dataset("youtubevos2019", ytvos_root).year == 2019
    with pytest.raises(DatasetError, match="unknown dataset 'kitti'"):
        open_dataset("kitti", davis16_root)
