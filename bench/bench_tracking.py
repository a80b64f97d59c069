"""Tracking speed benchmark (issue 14 targets): frames/s at 854x480 with one object, and the cost of five.

    python bench/bench_tracking.py [--sequence bear] [--repeats 3] [--engine classical]

Tracks a DAVIS 2016 sequence (``../shared/data/davis16`` by default) from its frame-0 ground-truth mask through
:func:`vos.tracker.track`, as ``vos track`` does: frames decoded from the JPEG folder, every result written as a
palette PNG. The five-object run adds four objects to the same video: discs a quarter of the object's area in the
frame's corners, off the object. Each setting runs ``--repeats`` times in one process, the two taking turns, on one
engine (the first run also warms it up); each setting's best run counts. ``ms/frame`` covers the whole loop
(decoding, engine, writing), starting after the prompts: the prompt frame's work is excluded. Targets: >= 25
frames/s with one object, five objects <= 1.5x one.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vos.engine import Engine, create_engine  # noqa: E402 - after the path set-up above
from vos.engines.refiner import preferred_dtype  # noqa: E402
from vos.masks import read_label_png, write_palette_png  # noqa: E402
from vos.prompts import ObjectPrompt  # noqa: E402
from vos.tracker import track  # noqa: E402
from vos.video import FrameFolderSource  # noqa: E402

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "davis16"
CORNER_GAP = 10  # pixels between a corner disc and the frame's border


def prompts_for(truth: np.ndarray, objects: int) -> list[ObjectPrompt]:
    """The sequence's object from its mask, plus ``objects - 1`` corner discs a quarter of its area, off it."""
    height, width = truth.shape
    radius = int(np.sqrt(truth.sum() / 4 / np.pi))
    near, far_x, far_y = radius + CORNER_GAP, width - radius - CORNER_GAP, height - radius - CORNER_GAP
    corners = [(near, near), (far_x, near), (near, far_y), (far_x, far_y)]
    assert objects - 1 <= len(corners), "at most five objects: one per corner besides the sequence's own"
    prompts = [ObjectPrompt(object_id=1, mask=truth)]
    for object_id, centre in enumerate(corners[:objects - 1], start=2):
        disc = np.zeros(truth.shape, np.uint8)
        cv2.circle(disc, centre, radius, 1, -1)
        prompts.append(ObjectPrompt(object_id=object_id, mask=disc.astype(bool) & ~truth))
    return prompts


def seconds_per_frame(frames: Path, engine: Engine, prompts: list[ObjectPrompt]) -> float:
    """Wall time per tracked frame of one run, after the prompt frame."""
    with tempfile.TemporaryDirectory() as out, FrameFolderSource(frames) as video:
        results = track(video, engine, prompts, backfill=False)
        first = next(results)  # the prompt frame: the prompts' own work, not tracking
        write_palette_png(Path(out) / f"{first.index:05d}.png", first.label_map())
        begin, count = time.perf_counter(), 0
        for result in results:
            write_palette_png(Path(out) / f"{result.index:05d}.png", result.label_map())
            count += 1
        return (time.perf_counter() - begin) / max(1, count)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="DAVIS 2016 folder (default ../shared/...)")
    parser.add_argument("--sequence", default="bear", help="DAVIS 2016 sequence at 854x480 (default bear)")
    parser.add_argument("--engine", default="classical", help="engine name (default classical)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per setting; the best counts (default 3)")
    args = parser.parse_args()
    frames = args.root / "JPEGImages" / "480p" / args.sequence
    annotation = args.root / "Annotations" / "480p" / args.sequence / "00000.png"
    if not frames.is_dir() or not annotation.is_file():
        parser.error(f"no DAVIS 2016 sequence {args.sequence!r} under {args.root}")
    truth = read_label_png(annotation) > 0
    # The two settings take turns, run after run: this host's speed drifts by a quarter over minutes, and runs of
    # one setting after the other's would measure the drift as well.
    engine = create_engine(args.engine)
    one, five = float("inf"), float("inf")
    for _ in range(args.repeats):
        one = min(one, seconds_per_frame(frames, engine, prompts_for(truth, 1)))
        five = min(five, seconds_per_frame(frames, engine, prompts_for(truth, 5)))
    height, width = truth.shape
    # the classical engine's refiner runs in bf16 only on CPUs with native bf16: say which this run measured
    precision = f", refiner in {str(preferred_dtype()).removeprefix('torch.')}" if args.engine == "classical" else ""
    print(f"{args.engine}{precision}, {args.sequence} ({width}x{height}), decoding and PNG writing included, "
          f"best of {args.repeats}")
    print(f"  1 object : {1000 * one:6.1f} ms/frame  {1 / one:5.1f} frames/s  (target >= 25 frames/s)")
    print(f"  5 objects: {1000 * five:6.1f} ms/frame  {1 / five:5.1f} frames/s  cost x{five / one:.2f} (target <= 1.5)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
