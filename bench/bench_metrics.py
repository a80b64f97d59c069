"""Time the DAVIS J/F evaluation of the 10 shared DAVIS 2016 val sequences.

Usage: python bench/bench_metrics.py [--root ../shared/data/davis16] [--repeat 3]

The predictions are the stored ``flow`` set of ``../shared/fixtures/davis_metrics`` (a realistic, imperfect
tracker). Loading is timed apart from the metrics, which are what this benchmark is about; the reported metric
time is the best of ``--repeat`` runs (the machine is shared).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from eval.datasets import Davis2016  # noqa: E402
from eval.metrics import SequenceMetrics, evaluate_sequence, summarize  # noqa: E402

SHARED = REPO_ROOT.parent / "shared"
FLOW_MASKS = SHARED / "fixtures" / "davis_metrics" / "flow_masks_packbits.npz"
def flow_prediction(name: str, width: int) -> np.ndarray:
    """The stored ``flow`` prediction set of one sequence (DIS-flow propagation, bit-exact), uint8 ``[N, H, W]``."""
    return np.unpackbits(np.load(FLOW_MASKS)[name], axis=-1, count=width).astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=SHARED / "data" / "davis16")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    t0 = time.perf_counter()
    data = []
    for seq in Davis2016(args.root):
        gt = seq.annotations()
        data.append((seq.name, gt, flow_prediction(seq.name, gt.shape[-1])))
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
    print(f"set=flow sequences={summary.n_sequences} objects={summary.n_objects}")
    print(f"loading GT + predictions: {load_s:.2f} s ({sum(len(g) for _, g, _ in data)} frames)")
    print(
        f"metrics: {n_frames} frames evaluated in {best:.2f} s wall, {best_cpu:.2f} s CPU (best of {args.repeat}), "
        f"{1000 * best / n_frames:.2f} ms/frame"
    )
    print(f"J&F-Mean {summary.JF_mean:.4f}  J-Mean {summary.J_mean:.4f}  F-Mean {summary.F_mean:.4f}")


if __name__ == "__main__":
    main()
