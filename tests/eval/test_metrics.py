"""The DAVIS metrics equal the official toolkit's numbers (fixtures in ../shared/fixtures/davis_metrics)."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage.morphology import disk

from eval.datasets import Davis2016
from eval.metrics import (
    SequenceMetrics,
    boundary_f_measure,
    boundary_map,
    boundary_radius,
    disk_kernel,
    evaluate_sequence,
    region_similarity,
    sequence_metrics,
    statistics,
    summarize,
)

SETS = ("static", "shift", "erode_dilate", "empty_late", "flow")
STATS = ("J_mean", "J_recall", "J_decay", "F_mean", "F_recall", "F_decay")
TOL = 1e-6


# ----------------------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def metrics_dir(shared_dir: Path) -> Path:
    root = shared_dir / "fixtures" / "davis_metrics"
    if not (root / "reference_metrics.json").is_file():
        pytest.skip(f"DAVIS metric fixtures not found under {root}")
    return root


@pytest.fixture(scope="module")
def reference(metrics_dir: Path) -> dict:
    return json.loads((metrics_dir / "reference_metrics.json").read_text())


@pytest.fixture(scope="module")
def tiny(metrics_dir: Path) -> tuple[dict, np.lib.npyio.NpzFile]:
    return (
        json.loads((metrics_dir / "tiny_boundary_cases.json").read_text()),
        np.load(metrics_dir / "tiny_boundary_cases.npz"),
    )


@pytest.fixture(scope="module")
def ground_truth(davis16_root: Path) -> dict[str, np.ndarray]:
    """Every shared sequence's GT as bool ``[N, H, W]``, read once for all prediction sets."""
    return {seq.name: seq.annotations() > 0 for seq in Davis2016(davis16_root)}


@pytest.fixture(scope="module")
def flow_masks(metrics_dir: Path) -> np.lib.npyio.NpzFile:
    return np.load(metrics_dir / "flow_masks_packbits.npz")


def make_prediction(kind: str, gt: np.ndarray, packed_flow: np.ndarray | None = None) -> np.ndarray:
    """The prediction sets of PREDICTIONS.md, as bool ``[N, H, W]``."""
    if kind == "static":
        return np.repeat(gt[:1], len(gt), axis=0)
    if kind == "shift":
        pred = np.zeros_like(gt)
        pred[:, 3:, 7:] = gt[:, :-3, :-7]
        return pred
    if kind == "erode_dilate":
        k = np.ones((5, 5), np.uint8)
        ops = [cv2.erode if t % 2 == 0 else cv2.dilate for t in range(len(gt))]
        return np.stack([op(m.astype(np.uint8), k) for op, m in zip(ops, gt)]).astype(bool)
    if kind == "empty_late":
        pred = gt.copy()
        pred[len(gt) // 2 :] = False
        return pred
    if kind == "flow":
        assert packed_flow is not None
        return np.unpackbits(packed_flow, axis=-1, count=gt.shape[-1]).astype(bool)
    raise ValueError(kind)


def packbits_sha256(masks: np.ndarray) -> str:
    return hashlib.sha256(np.packbits(masks, axis=-1).tobytes()).hexdigest()


# -------------------------------------------------------------------------------- official numbers on DAVIS 2016 val


def test_ground_truth_is_read_bit_for_bit(ground_truth: dict[str, np.ndarray], reference: dict) -> None:
    assert sorted(ground_truth) == sorted(reference["inputs"])
    for name, gt in ground_truth.items():
        assert len(gt) == reference["inputs"][name]["n_frames"]
        assert packbits_sha256(gt) == reference["inputs"][name]["sha256_gt_packbits"], name


@pytest.mark.parametrize("kind", SETS)
def test_prediction_set_matches_official_metrics(
    kind: str, ground_truth: dict[str, np.ndarray], flow_masks: np.lib.npyio.NpzFile, reference: dict
) -> None:
    results = []
    for name, gt in ground_truth.items():
        pred = make_prediction(kind, gt, flow_masks[name] if kind == "flow" else None)
        assert packbits_sha256(pred) == reference["prediction_sha256_packbits"]["sets"][kind][name], name
        ref = reference["sets"][kind][name]
        m = sequence_metrics(gt, pred, sequence=name)
        frame_names = [f"{t:05d}" for t in m.frame_indices]
        assert frame_names == ref["frames_evaluated"]
        np.testing.assert_allclose(m.J_per_frame, ref["J_per_frame"], rtol=0, atol=TOL, err_msg=name)
        np.testing.assert_allclose(m.F_per_frame, ref["F_per_frame"], rtol=0, atol=TOL, err_msg=name)
        for stat in STATS:
            assert getattr(m, stat) == pytest.approx(ref[stat], abs=TOL), (name, stat)
        results.append(m)
    summary = summarize(results).as_dict()
    for key, value in reference["global_summary"][kind].items():
        assert summary[key] == pytest.approx(value, abs=TOL), key


def test_label_map_evaluation_equals_mask_evaluation(ground_truth: dict[str, np.ndarray]) -> None:
    """``evaluate_sequence`` on uint8 label maps gives the same numbers as ``sequence_metrics`` on bool masks."""
    gt = ground_truth["libby"]
    pred = make_prediction("shift", gt)
    (by_labels,) = evaluate_sequence(gt.astype(np.uint8), pred.astype(np.uint8), sequence="libby")
    by_masks = sequence_metrics(gt, pred, sequence="libby")
    assert by_labels.object_id == 1
    np.testing.assert_array_equal(by_labels.J_per_frame, by_masks.J_per_frame)
    np.testing.assert_array_equal(by_labels.F_per_frame, by_masks.F_per_frame)
    np.testing.assert_array_equal(by_labels.frame_indices, by_masks.frame_indices)


# ------------------------------------------------------------------------------------------------ tiny official cases


def test_disk_kernel_is_skimage_disk() -> None:
    for radius in (1, 2, 3, 5, 8, 8.0, 13, 2.5):
        np.testing.assert_array_equal(disk_kernel(radius), disk(radius).astype(np.uint8), err_msg=str(radius))


def test_boundary_radius() -> None:
    assert boundary_radius((480, 854)) == 8
    assert boundary_radius((200, 300)) == 3
    assert boundary_radius((64, 64), bound_th=2) == 2


def _cases(tiny: tuple[dict, np.lib.npyio.NpzFile]):
    meta, arrays = tiny
    for case in meta["boundary_cases"]:
        name = case["name"]
        yield case, arrays[f"{name}__gt"], arrays[f"{name}__pred"], arrays


def test_tiny_boundary_maps(tiny: tuple[dict, np.lib.npyio.NpzFile]) -> None:
    for case, gt, pred, arrays in _cases(tiny):
        name = case["name"]
        np.testing.assert_array_equal(boundary_map(gt), arrays[f"{name}__gt_bmap"], err_msg=name)
        np.testing.assert_array_equal(boundary_map(pred), arrays[f"{name}__pred_bmap"], err_msg=name)


def test_tiny_j_and_f_exact(tiny: tuple[dict, np.lib.npyio.NpzFile]) -> None:
    for case, gt, pred, _ in _cases(tiny):
        name = case["name"]
        assert region_similarity(gt, pred) == case["J"], name
        assert boundary_f_measure(gt, pred) == case["F"], name
        assert boundary_f_measure(pred, gt) == case["F_args_swapped"], name
        assert boundary_f_measure(gt, pred, bound_th=2) == case["F_bound_th_2px"], name
        assert boundary_f_measure(gt, pred, bound_th=0.02) == case["F_bound_th_0p02"], name
        assert boundary_radius(gt.shape) == case["bound_pix_default"], name
        assert boundary_radius(gt.shape, 0.02) == case["bound_pix_0p02"], name


def test_tiny_cases_batched_equal_single(tiny: tuple[dict, np.lib.npyio.NpzFile]) -> None:
    cases = [(gt, pred) for case, gt, pred, _ in _cases(tiny) if gt.shape == (64, 64)]
    gts, preds = np.stack([c[0] for c in cases]), np.stack([c[1] for c in cases])
    np.testing.assert_array_equal(region_similarity(gts, preds), [region_similarity(g, p) for g, p in cases])
    np.testing.assert_array_equal(boundary_f_measure(gts, preds), [boundary_f_measure(g, p) for g, p in cases])


def _same(a: float, b: float | None) -> bool:
    if b is None or (isinstance(b, float) and math.isnan(b)):
        return math.isnan(a)
    return a == b


def test_tiny_statistics_exact(tiny: tuple[dict, np.lib.npyio.NpzFile]) -> None:
    for name, case in tiny[0]["db_statistics_cases"].items():
        values = np.array([np.nan if v is None else v for v in case["values"]], dtype=np.float64)
        official = statistics(values, uint8_overflow=True)
        assert official.mean == case["mean"], name
        assert official.recall == case["recall"], name
        assert _same(official.decay, case["decay"]), name
        fixed = statistics(values)
        assert (fixed.mean, fixed.recall) == (official.mean, official.recall), name
        expected_decay = case.get("decay_without_uint8_overflow", case["decay"])
        assert _same(fixed.decay, expected_decay), name


# ------------------------------------------------------------------------------------- cropping, void, multi-object


def _uncropped_f(gt: np.ndarray, pred: np.ndarray, bound_th: float) -> float:
    """A literal full-frame F, to prove that the cropped computation changes nothing."""
    gb, pb = boundary_map(gt), boundary_map(pred)
    k = disk_kernel(boundary_radius(gt.shape, bound_th))
    gd = cv2.dilate(gb.astype(np.uint8), k) > 0
    pd = cv2.dilate(pb.astype(np.uint8), k) > 0
    n_g, n_p = int(gb.sum()), int(pb.sum())
    if n_g == 0 or n_p == 0:
        return 1.0 if n_g == n_p else 0.0
    precision, recall = (pb & gd).sum() / n_p, (gb & pd).sum() / n_g
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def test_cropped_f_equals_full_frame_f() -> None:
    rng = np.random.default_rng(0)
    for trial in range(150):
        h, w = (int(x) for x in rng.integers(1, 40, 2))
        gt = rng.random((h, w)) < rng.random() * 0.3
        pred = rng.random((h, w)) < rng.random() * 0.3
        if trial % 3 == 0:  # blobs that touch the image border
            gt = cv2.dilate(gt.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        for th in (0.008, 2, 0.1):
            assert boundary_f_measure(gt, pred, th) == pytest.approx(_uncropped_f(gt, pred, th), abs=1e-15)


def test_void_pixels_are_ignored() -> None:
    gt = np.zeros((20, 30), bool)
    gt[5:15, 5:15] = True
    pred = gt.copy()
    pred[5:15, 15:20] = True  # wrong pixels...
    void = np.zeros_like(gt)
    void[:, 15:20] = True  # ...all inside void
    assert region_similarity(gt, pred) < 1
    assert region_similarity(gt, pred, void) == 1.0
    assert boundary_f_measure(gt, pred, bound_th=1, void=void) == 1.0


def _two_object_labels(n: int = 6) -> np.ndarray:
    labels = np.zeros((n, 40, 60), np.uint8)
    for t in range(n):
        labels[t, 5:20, 5 + t : 20 + t] = 1
        labels[t, 22:35, 30:50] = 2
        labels[t, 22:35, 50:52] = 255  # void band next to object 2
    return labels


def test_multi_object_evaluation_per_object() -> None:
    gt = _two_object_labels()
    pred = gt.copy()
    pred[pred == 255] = 2  # predicting object 2 over the void band costs nothing
    pred[:, 5:20, :] = np.where(pred[:, 5:20, :] == 1, 0, pred[:, 5:20, :])
    pred[:, 6:21, 6:21] = 1  # object 1 slightly off on every frame
    results = evaluate_sequence(gt, pred, sequence="toy")
    assert [r.object_id for r in results] == [1, 2]
    obj1, obj2 = results
    assert list(obj1.frame_indices) == [1, 2, 3, 4]
    assert obj2.J_mean == 1.0 and obj2.F_mean == 1.0
    expected = sequence_metrics(gt == 1, pred == 1, sequence="toy", object_id=1)
    np.testing.assert_array_equal(obj1.J_per_frame, expected.J_per_frame)
    np.testing.assert_array_equal(obj1.F_per_frame, expected.F_per_frame)
    assert obj1.J_mean < 1


def test_multi_object_missing_prediction_scores_zero() -> None:
    gt = _two_object_labels()
    pred = np.where(gt == 1, 1, 0).astype(np.uint8)  # object 2 never predicted
    obj1, obj2 = evaluate_sequence(gt, pred)
    assert obj1.J_mean == 1.0
    assert obj2.J_mean == 0.0 and obj2.F_mean == 0.0


def test_unknown_predicted_object_is_an_error() -> None:
    gt = _two_object_labels()
    pred = np.where(gt == 255, 0, gt).astype(np.uint8)
    pred[2, 0, 0] = 3
    with pytest.raises(ValueError, match=r"object ids \[3\]"):
        evaluate_sequence(gt, pred, sequence="toy")


def test_summary_averages_over_objects_not_sequences() -> None:
    def fake(seq: str, obj: int, j: float, f: float) -> SequenceMetrics:
        return SequenceMetrics(seq, obj, np.arange(1), np.array([j]), np.array([f]), j, 1.0, 0.0, f, 1.0, 0.0)

    summary = summarize([fake("a", 1, 1.0, 1.0), fake("b", 1, 0.0, 0.5), fake("b", 2, 0.5, 0.0)])
    assert summary.n_objects == 3 and summary.n_sequences == 2
    assert summary.J_mean == pytest.approx(0.5)
    assert summary.F_mean == pytest.approx(0.5)
    assert summary.JF_mean == pytest.approx(0.5)


def test_misuse_is_rejected() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        region_similarity(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(ValueError, match=">= 3 frames"):
        sequence_metrics(np.zeros((2, 4, 4)), np.zeros((2, 4, 4)))
    with pytest.raises(ValueError, match="non-empty"):
        statistics([])
    with pytest.raises(ValueError, match="at least one"):
        summarize([])
