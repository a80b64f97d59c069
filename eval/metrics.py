"""DAVIS video object segmentation metrics: region similarity J, boundary F-measure, and their statistics.

The numbers equal those of the official DAVIS 2017 evaluation toolkit (semi-supervised mode), which the tests prove
against ``../shared/fixtures/davis_metrics``. The implementation is our own and vectorised over frames:

* J (``db_eval_iou``): ``|A & B| / |A | B|`` outside void pixels, 1 when the union is empty.
* F (``db_eval_boundary``): boundary maps as the toolkit's ``seg2bmap`` draws them, each dilated by a disk of radius
  ``ceil(bound_th * hypot(H, W))`` (``bound_th`` itself when it is >= 1), precision/recall of matched boundary pixels,
  with the toolkit's special cases for empty boundaries.
* Statistics (``db_statistics``): mean = nanmean, recall = nanmean(v > 0.5) (NaN counts as not recalled), decay =
  nanmean(first of 4 overlapping bins) - nanmean(last bin).
* Semi-supervised evaluation drops the first frame (it is the prompt) and the last frame of every sequence.
* The global J&F is (mean over all objects of J_mean + mean over all objects of F_mean) / 2.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

__all__ = [
    "DEFAULT_BOUND_TH",
    "VOID_LABEL",
    "Statistics",
    "SequenceMetrics",
    "Summary",
    "boundary_map",
    "boundary_radius",
    "disk_kernel",
    "region_similarity",
    "boundary_f_measure",
    "statistics",
    "sequence_metrics",
    "evaluate_sequence",
    "summarize",
]

DEFAULT_BOUND_TH = 0.008
VOID_LABEL = 255
N_DECAY_BINS = 4


# --------------------------------------------------------------------------------------------------- per-frame metrics


def _as_bool_stack(masks: np.ndarray, name: str) -> np.ndarray:
    """Masks as a bool array ``[N, H, W]`` (a single ``[H, W]`` mask becomes N = 1)."""
    arr = np.asarray(masks)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise ValueError(f"{name} must have shape [H, W] or [N, H, W], got {arr.shape}")
    return arr if arr.dtype == np.bool_ else arr.astype(bool)


def _check_same_shape(gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None) -> None:
    if gt.shape != pred.shape:
        raise ValueError(f"ground truth {gt.shape} and prediction {pred.shape} differ in shape")
    if void is not None and void.shape != gt.shape:
        raise ValueError(f"void mask {void.shape} does not match the masks {gt.shape}")


def _unwrap(values: np.ndarray, single: bool) -> float | np.ndarray:
    return float(values[0]) if single else values


def region_similarity(
    gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None = None
) -> float | np.ndarray:
    """Jaccard index J of ``pred`` against ``gt`` (``[H, W]`` -> float, ``[N, H, W]`` -> float64 array ``[N]``).

    Void pixels (``void`` true) take no part. An empty union gives 1, as in the official toolkit.
    """
    single = np.ndim(gt) == 2
    g, p = _as_bool_stack(gt, "gt"), _as_bool_stack(pred, "pred")
    v = None if void is None else _as_bool_stack(void, "void")
    _check_same_shape(g, p, v)
    inter, union = g & p, g | p
    if v is not None:
        inter &= ~v
        union &= ~v
    n_inter = np.count_nonzero(inter, axis=(1, 2)).astype(np.float64)
    n_union = np.count_nonzero(union, axis=(1, 2)).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        j = n_inter / n_union
    j[n_union == 0] = 1.0
    return _unwrap(j, single)


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels of a mask ``[..., H, W]``, drawn exactly like the toolkit's ``seg2bmap``.

    A pixel is on the boundary when it differs from its east, south or south-east neighbour. The last row compares
    only with the east neighbour, the last column only with the south one, and the bottom-right pixel is never a
    boundary: so a mask touching the bottom/right border has no boundary along it, and a full mask has none at all.
    """
    seg = np.asarray(mask, dtype=bool)
    b = np.zeros_like(seg)
    c = seg[..., :-1, :-1]
    b[..., :-1, :-1] = (c ^ seg[..., :-1, 1:]) | (c ^ seg[..., 1:, :-1]) | (c ^ seg[..., 1:, 1:])
    b[..., -1, :-1] = seg[..., -1, :-1] ^ seg[..., -1, 1:]
    b[..., :-1, -1] = seg[..., :-1, -1] ^ seg[..., 1:, -1]
    # The bottom-right pixel stays False. These rules also hold for images one pixel wide or high.
    return b


def boundary_radius(shape: Sequence[int], bound_th: float = DEFAULT_BOUND_TH) -> float:
    """Matching tolerance in pixels: ``bound_th`` itself when >= 1, else ``ceil(bound_th * hypot(H, W))``."""
    if bound_th >= 1:
        return float(bound_th)
    height, width = shape[-2], shape[-1]
    return float(np.ceil(bound_th * np.linalg.norm([height, width])))


def disk_kernel(radius: float) -> np.ndarray:
    """uint8 disk ``x^2 + y^2 <= r^2``, element for element what ``skimage.morphology.disk(radius)`` returns."""
    offsets = np.arange(-radius, radius + 1)
    xx, yy = np.meshgrid(offsets, offsets)
    return (xx**2 + yy**2 <= radius**2).astype(np.uint8)


def _bounds(any_along: np.ndarray) -> tuple[int, int]:
    """Slice bounds of the true entries, grown by one on each side (clipped) so border rules see real neighbours."""
    idx = np.flatnonzero(any_along)
    return max(int(idx[0]) - 1, 0), min(int(idx[-1]) + 2, len(any_along))


def _crop_box(mask: np.ndarray) -> tuple[slice, slice] | None:
    """Bounding box of ``mask`` plus one pixel of margin (clipped), or None when the mask is empty.

    Working inside it is exact: with that margin the crop's boundary maps equal the full image's there (and the full
    image has none outside), every dilation source lies inside it, and cv2's default border adds nothing to a
    dilation. Objects usually cover a small part of the frame, so this saves most of the work.
    """
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    height, width = mask.shape
    return (
        slice(max(int(rows[0]) - 1, 0), min(int(rows[-1]) + 2, height)),
        slice(max(int(cols[0]) - 1, 0), min(int(cols[-1]) + 2, width)),
    )


def _frame_f(gt: np.ndarray, pred: np.ndarray, kernel: np.ndarray) -> float:
    """F of one frame (bool ``[H, W]``, void already cleared); ``kernel`` comes from the full frame's size."""
    box = _crop_box(gt | pred)
    if box is None:
        return _f_from_counts(0, 0, 0, 0)  # both masks empty
    gt_b, pred_b = boundary_map(gt[box]), boundary_map(pred[box])
    n_gt, n_pred = int(np.count_nonzero(gt_b)), int(np.count_nonzero(pred_b))
    if n_gt == 0 or n_pred == 0:
        return _f_from_counts(n_pred, n_gt, 0, 0)
    gt_dil = cv2.dilate(gt_b.view(np.uint8), kernel).view(bool)
    pred_dil = cv2.dilate(pred_b.view(np.uint8), kernel).view(bool)
    pred_matched = int(np.count_nonzero(pred_b & gt_dil))
    gt_matched = int(np.count_nonzero(gt_b & pred_dil))
    return _f_from_counts(n_pred, n_gt, pred_matched, gt_matched)


def _frame_jf(gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None, kernel: np.ndarray) -> tuple[float, float]:
    """(J, F) of one frame, both computed inside the bounding box of the two masks."""
    if void is not None:
        # Clearing void from both masks is what the toolkit does for F, and leaves J's counts unchanged.
        gt, pred = gt & ~void, pred & ~void
    box = _crop_box(gt | pred)
    if box is None:
        return 1.0, 1.0  # empty union and no boundaries: the toolkit's conventions give 1 for both
    g, p = gt[box], pred[box]
    j = np.count_nonzero(g & p) / np.count_nonzero(g | p)
    return j, _frame_f(g, p, kernel)


def _f_from_counts(n_pred: int, n_gt: int, pred_matched: int, gt_matched: int) -> float:
    """F from boundary pixel counts, with the toolkit's conventions for empty boundaries."""
    if n_pred == 0 and n_gt > 0:
        precision, recall = 1.0, 0.0
    elif n_pred > 0 and n_gt == 0:
        precision, recall = 0.0, 1.0
    elif n_pred == 0 and n_gt == 0:
        precision, recall = 1.0, 1.0
    else:
        precision = pred_matched / float(n_pred)
        recall = gt_matched / float(n_gt)
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def boundary_f_measure(
    gt: np.ndarray,
    pred: np.ndarray,
    bound_th: float = DEFAULT_BOUND_TH,
    void: np.ndarray | None = None,
) -> float | np.ndarray:
    """Boundary F-measure of ``pred`` against ``gt`` (``[H, W]`` -> float, ``[N, H, W]`` -> float64 array ``[N]``).

    Void pixels are cleared from both masks before their boundaries are drawn, as in the official toolkit.
    """
    single = np.ndim(gt) == 2
    g, p = _as_bool_stack(gt, "gt"), _as_bool_stack(pred, "pred")
    v = None if void is None else _as_bool_stack(void, "void")
    _check_same_shape(g, p, v)
    if v is not None:
        g, p = g & ~v, p & ~v
    kernel = disk_kernel(boundary_radius(g.shape, bound_th))
    f = np.array([_frame_f(g[i], p[i], kernel) for i in range(len(g))], dtype=np.float64)
    return _unwrap(f, single)


# ---------------------------------------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class Statistics:
    """Mean, recall (fraction of frames > 0.5) and decay (early minus late performance) of per-frame values."""

    mean: float
    recall: float
    decay: float


def _decay_bin_edges(n: int, uint8_overflow: bool) -> np.ndarray:
    # The toolkit rounds 5 evenly spaced 1-based positions and casts them to uint8; that cast wraps for n >= 257.
    ids = np.round(np.linspace(1, n, N_DECAY_BINS + 1) + 1e-10) - 1
    return ids.astype(np.uint8) if uint8_overflow else ids.astype(np.int64)


def statistics(values: Sequence[float] | np.ndarray, uint8_overflow: bool = False) -> Statistics:
    """Mean / recall / decay of per-frame values, as the toolkit's ``db_statistics``.

    NaN values are skipped by mean and decay but count as *not recalled*. Decay compares the first and the last of
    4 bins whose ends overlap. ``uint8_overflow=True`` reproduces the toolkit's bin-index wrap-around for sequences
    of 257+ frames (it then usually gives a NaN decay); the default computes the intended bins. The two agree for
    every sequence shorter than 257 frames, i.e. all of DAVIS.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"statistics need a non-empty 1-D array of per-frame values, got shape {v.shape}")
    ids = _decay_bin_edges(len(v), uint8_overflow)
    bins = [v[ids[i] : ids[i + 1] + 1] for i in range(N_DECAY_BINS)]
    with warnings.catch_warnings():
        # All-NaN sequences or empty (wrapped) bins give NaN, as in the toolkit; their warnings are noise.
        warnings.simplefilter("ignore", category=RuntimeWarning)
        mean = np.nanmean(v)
        recall = np.nanmean(v > 0.5)
        decay = np.nanmean(bins[0]) - np.nanmean(bins[-1])
    return Statistics(float(mean), float(recall), float(decay))


# ------------------------------------------------------------------------------------------------ sequence evaluation


@dataclass(frozen=True)
class SequenceMetrics:
    """J and F of one object of one sequence over its evaluated frames."""

    sequence: str
    object_id: int
    frame_indices: np.ndarray  # indices (into the sequence's frames) of the evaluated frames, int64 [M]
    J_per_frame: np.ndarray  # float64 [M]
    F_per_frame: np.ndarray  # float64 [M]
    J_mean: float
    J_recall: float
    J_decay: float
    F_mean: float
    F_recall: float
    F_decay: float

    @property
    def JF_mean(self) -> float:
        return (self.J_mean + self.F_mean) / 2


def _evaluated_frames(n_frames: int, drop_first_last: bool) -> np.ndarray:
    if not drop_first_last:
        return np.arange(n_frames)
    if n_frames < 3:
        raise ValueError(
            f"semi-supervised evaluation drops the first and last frames, so it needs >= 3 frames, got {n_frames}"
        )
    return np.arange(1, n_frames - 1)


def sequence_metrics(
    gt_masks: np.ndarray,
    pred_masks: np.ndarray,
    *,
    void_masks: np.ndarray | None = None,
    bound_th: float = DEFAULT_BOUND_TH,
    drop_first_last: bool = True,
    sequence: str = "",
    object_id: int = 1,
    uint8_overflow: bool = False,
) -> SequenceMetrics:
    """J, F and their statistics for one object: ``gt_masks`` and ``pred_masks`` are ``[N, H, W]`` over all frames.

    ``drop_first_last`` (semi-supervised mode, the default) evaluates frames 1..N-2 only, as the official toolkit.
    """
    gt = _as_bool_stack(gt_masks, "gt_masks")
    pred = _as_bool_stack(pred_masks, "pred_masks")
    void = None if void_masks is None else _as_bool_stack(void_masks, "void_masks")
    _check_same_shape(gt, pred, void)
    frames = _evaluated_frames(len(gt), drop_first_last)
    kernel = disk_kernel(boundary_radius(gt.shape, bound_th))
    scores = [_frame_jf(gt[t], pred[t], None if void is None else void[t], kernel) for t in frames]
    j, f = (np.array(v, dtype=np.float64).reshape(len(frames)) for v in zip(*scores))
    return _object_metrics(sequence, object_id, frames, j, f, uint8_overflow)


def _object_metrics(
    sequence: str, object_id: int, frames: np.ndarray, j: np.ndarray, f: np.ndarray, uint8_overflow: bool
) -> SequenceMetrics:
    js, fs = statistics(j, uint8_overflow), statistics(f, uint8_overflow)
    return SequenceMetrics(
        sequence=sequence,
        object_id=int(object_id),
        frame_indices=frames,
        J_per_frame=j,
        F_per_frame=f,
        J_mean=js.mean,
        J_recall=js.recall,
        J_decay=js.decay,
        F_mean=fs.mean,
        F_recall=fs.recall,
        F_decay=fs.decay,
    )


def _default_object_ids(first_gt: np.ndarray, void_label: int | None) -> list[int]:
    # The toolkit evaluates objects 1..max(label of the first frame), void excluded.
    labels = first_gt[first_gt != void_label] if void_label is not None else first_gt
    top = int(labels.max()) if labels.size else 0
    return list(range(1, top + 1))


def evaluate_sequence(
    gt_labels: np.ndarray,
    pred_labels: np.ndarray,
    *,
    object_ids: Sequence[int] | None = None,
    void_label: int | None = VOID_LABEL,
    bound_th: float = DEFAULT_BOUND_TH,
    drop_first_last: bool = True,
    sequence: str = "",
    uint8_overflow: bool = False,
) -> list[SequenceMetrics]:
    """Per-object metrics of a multi-object sequence given label maps ``[N, H, W]`` (0 = background).

    ``object_ids`` defaults to 1..max(first-frame label), as the toolkit. Ground-truth pixels equal to ``void_label``
    are ignored by J and F (None: no void label). A predicted id that is not among the objects is an error, as in
    the toolkit, because it almost always means a label-mapping bug in the caller.
    """
    gt = np.asarray(gt_labels)
    pred = np.asarray(pred_labels)
    if gt.ndim != 3 or gt.shape != pred.shape:
        raise ValueError(f"label maps must both be [N, H, W] of one shape, got {gt.shape} and {pred.shape}")
    ids = list(object_ids) if object_ids is not None else _default_object_ids(gt[0], void_label)
    frames = _evaluated_frames(len(gt), drop_first_last)
    unknown = _unknown_ids(pred[frames[0] : frames[-1] + 1], ids)
    if unknown:
        raise ValueError(f"sequence {sequence!r}: prediction holds object ids {unknown} not in the objects {ids}")
    kernel = disk_kernel(boundary_radius(gt.shape, bound_th))
    scores = np.ones((len(ids), len(frames), 2), dtype=np.float64)  # empty frames keep J = F = 1
    for k, t in enumerate(frames):
        # Crop to everything labelled in either map (void included) once, then compare ids inside the crop only.
        box = _crop_box((gt[t] != 0) | (pred[t] != 0))
        if box is None:
            continue
        g, p = gt[t][box], pred[t][box]
        void = None
        if void_label is not None:
            void = g == void_label
            void = void if void.any() else None
        for i, obj in enumerate(ids):
            scores[i, k] = _frame_jf(g == obj, p == obj, void, kernel)
    return [
        _object_metrics(sequence, obj, frames, scores[i, :, 0].copy(), scores[i, :, 1].copy(), uint8_overflow)
        for i, obj in enumerate(ids)
    ]


def _unknown_ids(pred: np.ndarray, ids: Sequence[int]) -> list[int]:
    """Predicted labels that are neither background nor one of ``ids`` (cheap when ids are 1..K, the usual case)."""
    allowed = {0, *ids}
    low, high = int(pred.min()), int(pred.max())
    if low >= 0 and all(i in allowed for i in range(high + 1)):
        return []
    return sorted(set(np.unique(pred).tolist()) - allowed)


# ------------------------------------------------------------------------------------------------------------ summary


@dataclass(frozen=True)
class Summary:
    """Dataset-level numbers: every X_* is the mean over all objects of all sequences of that object statistic."""

    JF_mean: float
    J_mean: float
    J_recall: float
    J_decay: float
    F_mean: float
    F_recall: float
    F_decay: float
    n_objects: int
    n_sequences: int
    per_object: tuple[SequenceMetrics, ...] = field(repr=False, default=())

    def as_dict(self) -> dict[str, float]:
        """The official CSV's global columns."""
        return {
            "J&F-Mean": self.JF_mean,
            "J-Mean": self.J_mean,
            "J-Recall": self.J_recall,
            "J-Decay": self.J_decay,
            "F-Mean": self.F_mean,
            "F-Recall": self.F_recall,
            "F-Decay": self.F_decay,
        }


def summarize(results: Iterable[SequenceMetrics]) -> Summary:
    """Global statistics over objects; J&F-Mean = (J-Mean + F-Mean) / 2 as in the toolkit."""
    objs = tuple(results)
    if not objs:
        raise ValueError("summarize needs at least one SequenceMetrics")

    def avg(attr: str) -> float:
        return float(np.mean([getattr(o, attr) for o in objs]))

    j_mean, f_mean = avg("J_mean"), avg("F_mean")
    return Summary(
        JF_mean=(j_mean + f_mean) / 2,
        J_mean=j_mean,
        J_recall=avg("J_recall"),
        J_decay=avg("J_decay"),
        F_mean=f_mean,
        F_recall=avg("F_recall"),
        F_decay=avg("F_decay"),
        n_objects=len(objs),
        n_sequences=len({o.sequence for o in objs}),
        per_object=objs,
    )

