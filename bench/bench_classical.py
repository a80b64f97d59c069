"""Benchmark the weight-free classical engine on DAVIS 2016 val: J&F per sequence, frames/s and peak memory.

Each sequence is tracked through ``open_video`` + ``track`` (JPEG decoding included in the timing) from its
first-frame ground-truth mask, and scored with the official semi-supervised protocol (first and last frame
excluded) by ``eval.metrics``.

    python bench/bench_classical.py [--root ../shared/data/davis16] [--sequences blackswan dog] [--option k=v ...]
"""

from __future__ import annotations

import argparse
import ast
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from eval.metrics import SequenceMetrics, sequence_metrics, summarize
from vos.engine import create_engine
from vos.masks import read_label_png
from vos.prompts import ObjectPrompt
from vos.tracker import track
from vos.video import open_video

DEFAULT_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "davis16"


def run_sequence(root: Path, sequence: str, options: dict[str, Any]) -> tuple[SequenceMetrics, int, float]:
    """Track one sequence from its first GT mask; return its metrics, frame count and tracking seconds."""
    annotations = sorted((root / "Annotations" / "480p" / sequence).glob("*.png"))
    gt = np.stack([read_label_png(path) > 0 for path in annotations])
    engine = create_engine("classical", **options)
    prompts = [ObjectPrompt(object_id=1, mask=gt[0])]
    begin = time.perf_counter()
    with open_video(root / "JPEGImages" / "480p" / sequence) as video:
        predictions = np.stack([result.label_map() == 1 for result in track(video, engine, prompts)])
    seconds = time.perf_counter() - begin
    return sequence_metrics(gt, predictions, sequence=sequence), len(gt), seconds


def peak_rss_mib() -> float:
    # ru_maxrss is in KiB on Linux and in bytes on macOS.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def parse_options(items: list[str]) -> dict[str, Any]:
    """``key=value`` pairs as engine options; values are Python literals when they parse as one."""
    options = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            options[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            options[key] = value
    return options


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="DAVIS 2016 root (JPEGImages, Annotations)")
    parser.add_argument("--sequences", nargs="*", help="sequences to run (default: ImageSets/2016/val.txt)")
    parser.add_argument("--option", nargs="*", default=[], help="engine options as key=value")
    args = parser.parse_args(argv)
    sequences = args.sequences or (args.root / "ImageSets" / "2016" / "val.txt").read_text().split()
    options = parse_options(args.option)
    results, total_frames, total_seconds = [], 0, 0.0
    print(f"{'sequence':<16} {'J&F':>6} {'J':>6} {'F':>6} {'frames':>6} {'fps':>6}")
    for sequence in sequences:
        metrics, frames, seconds = run_sequence(args.root, sequence, options)
        results.append(metrics)
        total_frames, total_seconds = total_frames + frames, total_seconds + seconds
        print(f"{sequence:<16} {metrics.JF_mean:6.3f} {metrics.J_mean:6.3f} {metrics.F_mean:6.3f} "
              f"{frames:6d} {frames / seconds:6.1f}", flush=True)
    summary = summarize(results)
    print(f"{'mean':<16} {summary.JF_mean:6.3f} {summary.J_mean:6.3f} {summary.F_mean:6.3f} "
          f"{total_frames:6d} {total_frames / total_seconds:6.1f}")
    print(f"J&F-Mean {summary.JF_mean:.3f}  J-Mean {summary.J_mean:.3f}  F-Mean {summary.F_mean:.3f}  "
          f"{total_frames / total_seconds:.1f} frames/s (decoding included)  peak RSS {peak_rss_mib():.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
