"""Throughput and memory of the ``seem`` engine: full-size Focal-T with random weights on 854x480 frames.

Usage: python bench/bench_seem_engine.py [--precision bf16] [--resolution 512] [--objects 1,2,4,8] [--frames 3]
                                         [--propagation both]
                                         [--memory-frames 50,300] [--memory-resolution 128] [--threads 2]

* Speed: frames/s of ``engine.step`` (decode excluded) with 1, 2, 4 and 8 objects, ``--frames`` timed frames per
  setting after one warm-up frame. Target: 8 objects cost at most 1.5x one object (the image is encoded once and all
  objects share one decoder call).
* Memory: peak resident memory (VmHWM, reset after the warm-up frame) after each ``--memory-frames`` checkpoint,
  tracking 2 objects. Target: no growth with video length. Frames cycle over the first ``--cache`` frames of the
  shared dog video (1280x720, resized to 854x480), so long runs cost no decoding; ``--memory-resolution`` lowers the
  model input size of this part only, to keep the 300-frame run affordable on a CPU (the engine keeps the same state
  at any resolution). ``--memory-frames ''`` skips it.

Random weights and an all-present setting (``absent_threshold=0``) make every object do the full per-frame work
(click, memory, decoder slot). Run on an idle machine for numbers you quote; the defaults are modest.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from vos.engine import VideoFrame, create_engine  # noqa: E402 - after the path set-up above
from vos.engines.seem import SeemEngine  # noqa: E402
from vos.prompts import ObjectPrompt  # noqa: E402
from vos.seem.config import SeemConfig  # noqa: E402
from vos.seem.model import SeemModel, build_seem  # noqa: E402
from vos.video import open_video  # noqa: E402

VIDEO = REPO_ROOT.parent / "shared" / "data" / "videos" / "01_dog.mp4"
SIZE = (854, 480)  # (width, height) of a DAVIS 480p frame


def cached_frames(path: Path, count: int) -> list[np.ndarray]:
    """The first ``count`` frames of the video, resized to 854x480."""
    with open_video(path) as video:
        return [cv2.resize(f, SIZE, interpolation=cv2.INTER_AREA) for f in itertools.islice(video, count)]


def looped(frames: list[np.ndarray]) -> Iterator[np.ndarray]:
    """Forwards then backwards, forever: a long video without jumps."""
    return itertools.cycle(frames + frames[-2:0:-1])


def object_prompts(count: int) -> list[ObjectPrompt]:
    """``count`` disjoint elliptic masks laid out on a grid over the frame."""
    cols = int(np.ceil(np.sqrt(count)))
    rows = int(np.ceil(count / cols))
    width, height = SIZE
    prompts = []
    for k in range(count):
        mask = np.zeros((height, width), np.uint8)
        cx, cy = int((k % cols + 0.5) * width / cols), int((k // cols + 0.5) * height / rows)
        cv2.ellipse(mask, (cx, cy), (width // (3 * cols), height // (3 * rows)), 0, 0, 360, 1, -1)
        prompts.append(ObjectPrompt(object_id=k + 1, mask=mask.astype(bool)))
    return prompts


def engine(model: SeemModel, args: argparse.Namespace, resolution: int) -> SeemEngine:
    built = create_engine("seem", weights=model, precision=args.precision, resolution=resolution,
                          propagation=args.propagation, absent_threshold=0.0)
    assert isinstance(built, SeemEngine)
    return built


def start_sweep(model: SeemModel, frames: Iterator[np.ndarray], args: argparse.Namespace, resolution: int,
                count: int) -> Callable[[], object]:
    """A propagation sweep seeded with ``count`` objects on the first frame; returns its one-more-frame step."""
    built = engine(model, args, resolution)
    prompts = object_prompts(count)
    states = {p.object_id: built.new_object(p.object_id) for p in prompts}
    sweep = built.start_propagation()
    sweep.step(VideoFrame(0, next(frames)), states, {p.object_id: p.mask for p in prompts})
    return lambda: sweep.step(VideoFrame(1, next(frames)), states, {})


def time_objects(model: SeemModel, frames: Iterator[np.ndarray], args: argparse.Namespace, count: int) -> float:
    """Frames per second of a propagation step with ``count`` objects."""
    step = start_sweep(model, frames, args, args.resolution, count)
    step()  # warm-up of the propagation path
    begin = time.perf_counter()
    for _ in range(args.frames):
        step()
    return args.frames / (time.perf_counter() - begin)


def peak_rss_mb() -> float:
    """Peak resident set size since the last reset (VmHWM), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("VmHWM not found in /proc/self/status (Linux only)")


def reset_peak_rss() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # 5 = reset the peak RSS (Linux >= 4.0)


def memory_run(model: SeemModel, frames: Iterator[np.ndarray], args: argparse.Namespace,
               checkpoints: list[int]) -> list[tuple[int, float, float]]:
    """(frames, peak RSS MB, seconds) at each checkpoint, 2 objects tracked from frame 0."""
    step = start_sweep(model, frames, args, args.memory_resolution, 2)
    reset_peak_rss()
    out, done, begin = [], 1, time.perf_counter()
    for checkpoint in checkpoints:
        for _ in range(checkpoint - done):
            step()
        done = checkpoint
        out.append((checkpoint, peak_rss_mb(), time.perf_counter() - begin))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--propagation", default="both", choices=["reference", "click", "both"])
    parser.add_argument("--objects", default="1,2,4,8", help="object counts of the speed run ('' skips it)")
    parser.add_argument("--frames", type=int, default=3, help="timed frames per object count")
    parser.add_argument("--memory-frames", default="50,300", help="checkpoints of the memory run ('' skips it)")
    parser.add_argument("--memory-resolution", type=int, default=128)
    parser.add_argument("--cache", type=int, default=30, help="distinct video frames to cycle over")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    frames = looped(cached_frames(VIDEO, args.cache))
    model = build_seem(SeemConfig.focal_t())
    print(f"SEEM Focal-T (random weights), {args.precision}, {SIZE[0]}x{SIZE[1]} frames, {args.threads} threads, "
          f"propagation {args.propagation}")

    counts = [int(c) for c in args.objects.split(",") if c.strip()]
    if counts:
        print(f"\nspeed at {args.resolution} short side ({args.frames} timed frames per setting)")
    base = None
    for count in counts:
        fps = time_objects(model, frames, args, count)
        base = base or fps
        print(f"  {count} object(s): {fps:7.3f} frames/s  {1000 / fps:8.0f} ms/frame  cost x{base / fps:.2f}")

    checkpoints = [int(c) for c in args.memory_frames.split(",") if c.strip()]
    if checkpoints:
        print(f"\nmemory at {args.memory_resolution} short side, 2 objects (peak RSS since frame 1)")
        for count, peak, seconds in memory_run(model, frames, args, checkpoints):
            print(f"  after {count:4d} frames: peak RSS {peak:8.1f} MB  ({seconds:.0f} s)")


if __name__ == "__main__":
    main()
