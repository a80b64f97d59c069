"""Session benchmark (issue 11 targets): prompt latency, memory against video length, backward propagation quality.

1. **Prompt latency** at 854x480 with the weight-free engine: ``Session.add_prompt`` on a frame, masks of every
   object returned. Cold = the frame's first prompt (decode and working images included); warm = another prompt on
   an already seen frame (a correction). Target: <= 150 ms.
2. **Peak RSS** of a session propagating 2 objects through 300 and through 3000 frames of a synthetic 854x480 video
   (frames are drawn on demand, so only the session holds memory). Each length runs in its own process so its peak
   (VmHWM) is its own. Target: flat with video length. What keeps it flat: results on disk, byte-bounded frame
   and feature caches that a sweep does not fill (its per-frame data stays in a small window of its own), and a
   fixed glibc mmap threshold (1 MB; else heap fragmentation from freed frame-sized blocks creeps up with length).
3. **Backward propagation**: per shared DAVIS 2016 val sequence, J&F of the ground-truth mask on the middle frame
   propagated both ways against the ground-truth mask on frame 0 propagated forward (official J and F over the frames
   neither run was prompted on, first and last dropped). Target: within 0.05.

    python bench/bench_session.py [--latency-reps 10] [--lengths 300,3000] [--split val] [--skip-memory]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eval.datasets import Davis2016  # noqa: E402 - after the path set-up above
from eval.metrics import boundary_f_measure, region_similarity  # noqa: E402
from eval.runner import SequenceVideo, interior_point  # noqa: E402
from vos.engine import create_engine  # noqa: E402
from vos.prompts import Box, ObjectPrompt, Point  # noqa: E402
from vos.session import Session  # noqa: E402
from vos.video import FOLDER_FPS, VideoInfo, VideoSource, open_video  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "samples" / "blackswan.mp4"
SAMPLE_MASK = REPO / "samples" / "blackswan-mask.png"
DAVIS16 = REPO.parent / "shared" / "data" / "davis16"
WIDTH, HEIGHT = 854, 480


# ------------------------------------------------------------------------------------------------------- latency


def latency(reps: int) -> dict[str, float]:
    """Median milliseconds of add_prompt on the sample clip (854x480), per prompt kind."""
    engine = create_engine("classical")
    truth = cv2.imread(str(SAMPLE_MASK), cv2.IMREAD_GRAYSCALE) > 0
    ys, xs = np.nonzero(truth)
    click = interior_point(truth)
    box = Box(x0=float(xs.min()), y0=float(ys.min()), x1=float(xs.max()) + 1, y1=float(ys.max()) + 1)
    times: dict[str, list[float]] = {"click (cold frame)": [], "click (warm frame)": [], "box (warm frame)": [],
                                     "mask (warm frame)": [], "correction click": []}
    with open_video(SAMPLE) as video:
        for rep in range(reps):
            with Session(engine, video) as session:
                frame = rep % video.info.num_frames
                times["click (cold frame)"].append(_ms(lambda: session.add_prompt(
                    ObjectPrompt(object_id=1, frame_index=frame, points=[click]))))
                times["click (warm frame)"].append(_ms(lambda: session.add_prompt(
                    ObjectPrompt(object_id=2, frame_index=frame, points=[click]))))
                times["box (warm frame)"].append(_ms(lambda: session.add_prompt(
                    ObjectPrompt(object_id=3, frame_index=frame, box=box))))
                times["mask (warm frame)"].append(_ms(lambda: session.add_prompt(
                    ObjectPrompt(object_id=4, frame_index=frame, mask=truth))))
                wrong = Point(x=float(xs.max()) + 30, y=click.y, positive=True)
                times["correction click"].append(_ms(lambda: session.add_prompt(
                    ObjectPrompt(object_id=4, frame_index=frame, points=[wrong]))))
    return {kind: statistics.median(values) for kind, values in times.items()}


def _ms(call: object) -> float:
    begin = time.perf_counter()
    call()  # type: ignore[operator]
    return 1000 * (time.perf_counter() - begin)


# -------------------------------------------------------------------------------------------------------- memory


class DrawnVideo(VideoSource):
    """A synthetic 854x480 video drawn on demand: two discs moving over a fixed texture."""

    def __init__(self, num_frames: int) -> None:
        super().__init__(Path("<drawn>"), VideoInfo(num_frames, FOLDER_FPS, WIDTH, HEIGHT))
        rng = np.random.default_rng(0)
        self.texture = cv2.GaussianBlur(rng.uniform(40, 200, (HEIGHT, WIDTH, 3)).astype(np.float32), (0, 0), 4)

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self.frame(i) for i in range(self.info.num_frames))

    def frame(self, index: int) -> np.ndarray:
        self._check_index(index)
        image = np.roll(self.texture, index % WIDTH, axis=1).astype(np.uint8)
        for k, mask in enumerate(self.masks(index)):
            image[mask] = ((230, 40, 40), (40, 60, 220))[k]
        return image

    @staticmethod
    def masks(index: int) -> list[np.ndarray]:
        out = []
        for k, phase in enumerate((0.0, np.pi)):
            mask = np.zeros((HEIGHT, WIDTH), np.uint8)
            x = int(WIDTH / 2 + 250 * np.sin(index / 40 + phase))
            cv2.circle(mask, (x, 150 + 180 * k), 50, 1, -1)
            out.append(mask.astype(bool))
        return out


def memory_child(num_frames: int) -> dict[str, float]:
    """Propagate 2 objects through ``num_frames`` drawn frames; the peak RSS of this process (run in a child)."""
    video = DrawnVideo(num_frames)
    engine = create_engine("classical")
    begin = time.perf_counter()
    with Session(engine, video) as session:
        for k, mask in enumerate(video.masks(0), start=1):
            session.add_prompt(ObjectPrompt(object_id=k, mask=mask))
        frames = sum(1 for _ in session.propagate(0, "forward"))
    return {"frames": num_frames, "propagated": frames, "seconds": time.perf_counter() - begin,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def memory(lengths: list[int]) -> list[dict[str, float]]:
    out = []
    for length in lengths:
        child = subprocess.run([sys.executable, __file__, "--memory-child", str(length)], check=True,
                               capture_output=True, text=True)
        out.append(json.loads(child.stdout.strip().splitlines()[-1]))
    return out


# ---------------------------------------------------------------------------------------------------- backward


def backward_vs_forward(root: Path, split: str) -> list[tuple[str, float, float]]:
    """(sequence, J&F forward from frame 0, J&F both ways from the middle frame) per sequence of the split."""
    engine = create_engine("classical")
    rows = []
    for sequence in Davis2016(root, split=split):
        truth = sequence.annotations() > 0
        middle = len(truth) // 2
        forward = _propagated(sequence, engine, 0, truth[0], "forward")
        both = _propagated(sequence, engine, middle, truth[middle], "both")
        frames = [t for t in range(1, len(truth) - 1) if t != middle]  # prompted frames and first/last left out
        rows.append((sequence.name, _jf(truth[frames], forward[frames]), _jf(truth[frames], both[frames])))
        print(f"  {sequence.name}: forward from 0 {rows[-1][1]:.3f}, both ways from {middle} {rows[-1][2]:.3f}",
              flush=True)
    return rows


def _propagated(sequence: object, engine: object, start: int, mask: np.ndarray, direction: str) -> np.ndarray:
    with SequenceVideo(sequence) as video, Session(engine, video) as session:  # type: ignore[arg-type]
        session.add_prompt(ObjectPrompt(object_id=1, frame_index=start, mask=mask))
        list(session.propagate(start, direction))  # type: ignore[arg-type]
        return np.stack([r.label_map() > 0 for r in session.results(with_images=False)])


def _jf(truth: np.ndarray, prediction: np.ndarray) -> float:
    j = float(np.mean(region_similarity(truth, prediction)))
    f = float(np.mean(boundary_f_measure(truth, prediction)))
    return (j + f) / 2


# ------------------------------------------------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency-reps", type=int, default=10)
    parser.add_argument("--lengths", default="300,3000", help="video lengths of the memory run")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--split", default="val", help="DAVIS 2016 split of the backward run ('' skips it)")
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child)))
        return
    print("prompt latency at 854x480, classical engine (median ms):")
    for kind, ms in latency(args.latency_reps).items():
        print(f"  {kind:20s} {ms:7.1f} ms")
    if not args.skip_memory:
        print("session memory, 2 objects propagated through a drawn 854x480 video:")
        for row in memory([int(n) for n in args.lengths.split(",")]):
            print(f"  {row['frames']:5.0f} frames: peak RSS {row['peak_rss_mb']:.0f} MB "
                  f"({row['propagated']:.0f} frames propagated in {row['seconds']:.0f} s)")
    if args.split:
        if not DAVIS16.is_dir():
            print(f"backward run skipped: {DAVIS16} is absent")
            return
        print(f"backward propagation, DAVIS 2016 {args.split}, classical engine:")
        rows = backward_vs_forward(DAVIS16, args.split)
        forward, both = np.mean([r[1] for r in rows]), np.mean([r[2] for r in rows])
        print(f"  mean J&F: forward from frame 0 {forward:.3f}, both ways from the middle frame {both:.3f} "
              f"(difference {both - forward:+.3f})")


if __name__ == "__main__":
    main()
