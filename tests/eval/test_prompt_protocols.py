"""``vos eval davis --prompt mask|box|click``: prompts derived from the ground truth, run through the engine."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest
from layouts import SOURCE, build_davis16

from eval.datasets import Davis2016
from eval.runner import sequence_prompts
from vos.cli import main
from vos.masks import read_label_png


def test_box_and_click_prompts_come_from_the_first_ground_truth_mask(davis16_root: Path) -> None:
    sequence = Davis2016(davis16_root, split="train", sequences=["bear"]).sequence("bear")
    gt = sequence.annotation(0) > 0
    ys, xs = np.nonzero(gt)
    (box,) = sequence_prompts(sequence, "box")
    assert box.box is not None and box.mask is None and box.frame_index == 0
    assert (box.box.x0, box.box.y0, box.box.x1, box.box.y1) == (xs.min(), ys.min(), xs.max(), ys.max())
    (click,) = sequence_prompts(sequence, "click")
    (point,) = click.points
    assert point.positive and click.mask is None and click.box is None
    depth = cv2.distanceTransform(gt.astype(np.uint8), cv2.DIST_L2, 5)
    assert depth[int(point.y), int(point.x)] == depth.max()  # the pixel farthest from the border
    (mask,) = sequence_prompts(sequence)
    assert np.array_equal(mask.mask, gt)


@pytest.mark.parametrize("protocol", ["box", "click"])
def test_prompt_protocol_is_one_command(davis16_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        protocol: str) -> None:
    root = build_davis16(davis16_root, tmp_path / "davis16", 8)
    out = tmp_path / "out"
    assert main(["eval", "davis", "--root", str(root), "--year", "2016", "--prompt", protocol, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    line = next(line for line in printed.splitlines() if "mean IoU on the prompted frames" in line)
    assert line.startswith(f"classical: mean IoU on the prompted frames ({protocol} prompts): ")
    written = read_label_png(out / f"classical-{protocol}" / SOURCE / "00000.png") > 0
    gt = read_label_png(root / "Annotations" / "480p" / SOURCE / "00000.png") > 0
    assert float(line.rsplit(" ", 1)[1]) == pytest.approx(np.sum(written & gt) / np.sum(written | gt), abs=5e-4)
    if protocol == "box":
        assert float(line.rsplit(" ", 1)[1]) > 0.8  # the tight box around the swan
    with (out / f"classical-{protocol}" / "global.csv").open(newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    assert 0.0 <= float(row["J&F-Mean"]) <= 1.0
    assert (out / f"classical-{protocol}" / SOURCE / "00007.png").is_file()


def test_prompt_does_not_apply_to_stored_predictions(davis16_root: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    root = build_davis16(davis16_root, tmp_path / "davis16", 2)
    args = ["eval", "davis", "--root", str(root), "--year", "2016", "--prompt", "click", "--predictions", "x"]
    assert main(args) == 2
    assert "--prompt says how an engine is prompted" in capsys.readouterr().err


def _global_jf(out: Path) -> float:
    with (out / "global.csv").open(newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    return float(row["J&F-Mean"])


def test_mask_protocol_on_train_sequences_the_refiner_never_saw(davis16_root: Path, tmp_path: Path) -> None:
    """Two of the train sequences left out of the refiner's training (eval/train_refiner.py HOLDOUT): J&F 0.654 and
    0.723 with the GrabCut engine before it (mean 0.689), 0.758 and 0.759 with the refiner."""
    args = ["eval", "davis", "--root", str(davis16_root), "--year", "2016", "--split", "train",
            "--sequences", "horsejump-low", "mallard-water", "--out", str(tmp_path)]
    assert main(args) == 0
    assert _global_jf(tmp_path / "classical") > 0.72


def test_many_objects_beat_plain_flow_warping(shared_dir: Path, tmp_path: Path) -> None:
    """schoolgirls, 7 objects that cross: J&F 0.441 for plain DIS flow warping, 0.413 with the GrabCut engine (each
    object cut alone); the refiner, with objects competing for pixels, does better than both."""
    root = shared_dir / "data" / "davis17-lowres"
    if not (root / "JPEGImages" / "480p" / "schoolgirls").is_dir():
        pytest.skip(f"the multi-object sequence is not under {root}")
    assert main(["eval", "davis", "--root", str(root), "--year", "2017", "--out", str(tmp_path)]) == 0
    assert _global_jf(tmp_path / "classical") > 0.47
