"""Time the DAVIS J/F evaluation of the 10 shared DAVIS 2016 val sequences.

Usage: python bench/bench_metrics.py [--root ../shared/data/davis16] [--set flow] [--repeat 3]

The prediction set is rebuilt from the ground truth (or, for ``flow``, read from the stored masks), as in
``../shared/fixtures/davis_metrics/PREDICTIONS.md``. Loading is timed apart from the metrics, which are what this
benchmark is about; the reported metric time is the best of ``--repeat`` runs (the machine is shared).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from eval.datasets import Davis2016  # noqa: E402
from eval.metrics import SequenceMetrics, evaluate_sequence, summarize  # noqa: E402

SHARED = REPO_ROOT.parent / "shared"
FLOW_MASKS = SHARED / "fixtures" / "davis_metrics" / "flow_masks_packbits.npz"
SETS = ("static", "shift", "erode_dilate", "empty_late", "flow")


def make_prediction(kind: str, gt: np.ndarray, name: str) -> np.ndarray:
    """Prediction label maps ``[N, H, W]`` of one sequence for one of the reference sets."""
    if kind == "static":
        return np.repeat(gt[:1], len(gt), axis=0)
    if kind == "shift":
        pred = np.zeros_like(gt)
        pred[:, 3:, 7:] = gt[:, :-3, :-7]
        return pred
    if kind == "erode_dilate":
        k = np.ones((5, 5), np.uint8)
        return np.stack([(cv2.erode if t % 2 == 0 else cv2.dilate)(m, k) for t, m in enumerate(gt)])
    if kind == "empty_late":
        pred = gt.copy()
        pred[len(gt) // 2 :] = 0
        return pred
    if kind == "flow":
        packed = np.load(FLOW_MASKS)[name]
        return np.unpackbits(packed, axis=-1, count=gt.shape[-1]).astype(np.uint8)
    raise ValueError(f"unknown prediction set {kind!r}; choose from {SETS}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=SHARED / "data" / "davis16")
    parser.add_argument("--set", choices=SETS, default="flow")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    t0 = time.perf_counter()
    data = []
    for seq in Davis2016(args.root):
        gt = seq.annotations()
        data.append((seq.name, gt, make_prediction(args.set, gt, seq.name)))
    load_s = time.perf_counter() - t0

    best, best_cpu = float("inf"), float("inf")
    results: list[SequenceMetrics] = []
    for _ in range(max(args.repeat, 1)):
        t0, c0 = time.perf_counter(), time.process_time()
        results = [m for name, gt, pred in data for m in evaluate_sequence(gt, pred, sequence=name)]
        best = min(best, time.perf_counter() - t0)
        best_cpu = min(best_cpu, time.process_time() - c0)  # less sensitive to other users of the machine

    n_frames = sum(len(m.frame_indices) for m in results)
    summary = summarize(results)
    print(f"set={args.set} sequences={summary.n_sequences} objects={summary.n_objects}")
    print(f"loading GT + building predictions: {load_s:.2f} s ({sum(len(g) for _, g, _ in data)} frames)")
    print(
        f"metrics: {n_frames} frames evaluated in {best:.2f} s wall, {best_cpu:.2f} s CPU (best of {args.repeat}), "
        f"{1000 * best / n_frames:.2f} ms/frame"
    )
    print("J&F-Mean {:.4f}  J-Mean {:.4f}  F-Mean {:.4f}".format(summary.JF_mean, summary.J_mean, summary.F_mean))


if __name__ == "__main__":
    main()
