"""``vos track`` end to end on the shipped sample, and its errors for bad input."""

import json
from pathlib import Path

import numpy as np
import pytest

from vos.cli import main
from vos.masks import decode_rle, read_label_png
from vos.video import open_video

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "samples" / "blackswan.mp4"
SAMPLE_MASK = REPO / "samples" / "blackswan-mask.png"


def test_track_writes_pngs_rle_and_overlay(tmp_path: Path) -> None:
    assert main(["track", str(SAMPLE), "--mask", str(SAMPLE_MASK), "--out", str(tmp_path)]) == 0
    pngs = sorted((tmp_path / "masks").glob("*.png"))
    assert [p.name for p in pngs] == [f"{i:05d}.png" for i in range(50)]
    lines = (tmp_path / "masks.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["frame"] for r in records] == list(range(50))
    # The RLE records and the PNGs hold the same masks.
    np.testing.assert_array_equal(decode_rle(records[30]["objects"][0]["rle"]), read_label_png(pngs[30]) == 1)
    prompt = read_label_png(SAMPLE_MASK) > 0
    first = read_label_png(pngs[0]) == 1
    assert np.logical_and(prompt, first).sum() / np.logical_or(prompt, first).sum() > 0.95
    with open_video(tmp_path / "overlay.mp4") as overlay:
        assert overlay.info.num_frames == 50


def test_track_two_objects_from_a_click_and_a_scribble(tmp_path: Path) -> None:
    # The swan (a click on its body) and the stone wall (a stroke along it): two objects through all 50 frames.
    code = main(["track", str(SAMPLE), "--point", "400,330", "--object", "2", "--scribble", "100,175;350,155",
                 "--out", str(tmp_path), "--no-overlay"])
    assert code == 0 and not (tmp_path / "overlay.mp4").exists()
    records = [json.loads(line) for line in (tmp_path / "masks.jsonl").read_text().splitlines()]
    assert all(sorted(o["object_id"] for o in r["objects"]) == [1, 2] for r in records)
    labels = read_label_png(tmp_path / "masks" / "00000.png")
    assert labels[330, 400] == 1 and labels[165, 225] == 2
    assert (labels == 2).sum() > 2000  # the stroke grew into a region of the wall


def test_track_prompts_on_a_later_frame_fill_the_frames_before(tmp_path: Path) -> None:
    # The frame-0 mask given on frame 10 (the swan barely moves): frames 0-9 come from backward propagation.
    code = main(["track", str(SAMPLE), "--frame", "10", "--mask", str(SAMPLE_MASK), "--out", str(tmp_path),
                 "--no-overlay"])
    assert code == 0
    prompt = read_label_png(SAMPLE_MASK) > 0
    assert np.array_equal(read_label_png(tmp_path / "masks" / "00010.png") == 1, prompt)
    first = read_label_png(tmp_path / "masks" / "00000.png") == 1
    assert np.logical_and(prompt, first).sum() / np.logical_or(prompt, first).sum() > 0.7


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["/no/such/video.mp4", "--point", "1,1"], "does not exist"),
        ([str(SAMPLE)], "no prompt given"),
        ([str(SAMPLE), "--point", "12"], "--point expects 2 comma-separated numbers"),
        ([str(SAMPLE), "--point", "900,10"], "outside the 854x480 frame"),
        ([str(SAMPLE), "--box", "50,50,10,10"], "x1 > x0"),
        ([str(SAMPLE), "--mask", "/no/such/mask.png"], "cannot read /no/such/mask.png"),
        ([str(SAMPLE), "--text", "a black swan"], "need the 'seem' engine"),
        ([str(SAMPLE), "--point", "1,1", "--engine", "classical", "--weights", "x.pt"], "has no option weights"),
        ([str(SAMPLE), "--frame", "50", "--point", "1,1"], "prompted on frame 50, but the video has 50 frames"),
        ([str(SAMPLE), "--frame", "-1", "--point", "1,1"], "--frame must be 0 or more"),
        ([str(SAMPLE), "--point", "1,1", "--band", "inf"], "option band: Input should be a finite number"),
        ([str(SAMPLE), "--scribble", "1,1;5,5", "--scribble-width", "1e30"], "Input should be less than or equal"),
    ],
)
def test_track_bad_input_exits_2_with_a_message(arguments: list[str], message: str, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["track", *arguments, "--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err


def test_wrong_size_mask_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    small = tmp_path / "small.png"
    Image.fromarray(np.full((10, 10), 255, np.uint8)).save(small)
    assert main(["track", str(SAMPLE), "--mask", str(small), "--out", str(tmp_path / "out")]) == 2
    assert "expected 854x480" in capsys.readouterr().err
