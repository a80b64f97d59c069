"""Runners: engine runs write the official layout and reuse finished sequences; result folders are scored exactly.

Engines here are the test engines of layouts.py, whose outputs are known, on short layouts built from blackswan.
"""

from __future__ import annotations

import csv
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from layouts import (
    SOURCE,
    YTVOS_SPARSE,
    YTVOS_VIDEO,
    RepeatMaskEngine,
    box_mask,
    build_davis16,
    build_davis17,
    build_ytvos,
    save_indexed,
    shifted,
)
from PIL import Image

from eval.datasets import Davis2016, Davis2017, YouTubeVOS
from eval.metrics import sequence_metrics
from eval.report import write_csvs
from eval.runner import MARKER_FILE, ResultsError, read_predictions, run_engine, score_predictions
from eval.youtube_vos import write_submission
from vos.masks import PALETTE

N_FRAMES = 6
SEQUENCES = (SOURCE, "libby")


@pytest.fixture
def davis16_small(davis16_root: Path, tmp_path: Path) -> Path:
    """DAVIS 2016 layout: the first 6 frames of blackswan and libby."""
    return build_davis16(davis16_root, tmp_path / "davis16", N_FRAMES, SEQUENCES)


def _png_names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.png"))


# ------------------------------------------------------------------------------------------------------- engine runs


def test_engine_run_writes_official_layout_and_scores_it(
    davis16_small: Path, tmp_path: Path, test_engines: type[RepeatMaskEngine]
) -> None:
    dataset = Davis2016(davis16_small)
    run = run_engine(dataset, "repeat", tmp_path / "out" / "repeat", progress=False)
    assert run.engine == "repeat" and run.frames == 2 * N_FRAMES and run.reused == 0
    assert test_engines.steps == 2 * N_FRAMES
    for name in SEQUENCES:
        seq_dir = run.results_dir / name
        assert _png_names(seq_dir) == [f"{t:05d}.png" for t in range(N_FRAMES)]
        assert (seq_dir / MARKER_FILE).is_file()
        with Image.open(seq_dir / "00003.png") as image:
            assert image.mode == "P" and image.size == (854, 480)
            assert tuple(image.getpalette()[3:6]) == tuple(PALETTE[1])  # object 1 = (128, 0, 0)
            labels = np.array(image)
        gt = dataset[name].annotations()
        np.testing.assert_array_equal(labels, gt[0])  # the repeated first-frame mask, values {0, 1}

    summary = score_predictions(dataset, run.results_dir, progress=False)
    assert [(m.sequence, m.object_id) for m in summary.per_object] == [(SOURCE, 1), ("libby", 1)]
    for metrics in summary.per_object:
        gt = dataset[metrics.sequence].annotations() > 0
        expected = sequence_metrics(gt, np.repeat(gt[:1], len(gt), axis=0))
        np.testing.assert_array_equal(metrics.J_per_frame, expected.J_per_frame)
        np.testing.assert_array_equal(metrics.F_per_frame, expected.F_per_frame)


def test_rerun_reuses_finished_sequences_only(
    davis16_small: Path, tmp_path: Path, test_engines: type[RepeatMaskEngine]
) -> None:
    dataset, out = Davis2016(davis16_small), tmp_path / "repeat"
    run_engine(dataset, "repeat", out, progress=False)
    first_png = (out / "libby" / "00002.png").read_bytes()

    test_engines.steps = 0
    again = run_engine(dataset, "repeat", out, progress=False)
    assert again.reused == 2 and test_engines.steps == 0  # no engine work, not even engine creation
    assert again.frames == 2 * N_FRAMES  # timings of reused sequences come from their markers

    (out / SOURCE / "00004.png").unlink()  # an incomplete folder is redone, even with its marker
    (out / "libby" / MARKER_FILE).unlink()  # so is one whose run was interrupted (no marker yet)
    redo = run_engine(dataset, "repeat", out, progress=False)
    assert redo.reused == 0 and test_engines.steps == 2 * N_FRAMES
    assert (out / "libby" / "00002.png").read_bytes() == first_png

    test_engines.steps = 0
    changed = run_engine(dataset, "repeat", out, options={"shift": 3}, progress=False)  # other options: redo
    assert changed.reused == 0 and test_engines.steps == 2 * N_FRAMES
    record = json.loads((out / "libby" / MARKER_FILE).read_text())
    assert record["fingerprint"]["options"] == {"shift": "3"} and record["frames"] == N_FRAMES


def test_davis2017_objects_ids_void_and_csv_names(
    davis16_root: Path, tmp_path: Path, test_engines: type[RepeatMaskEngine]
) -> None:
    dataset = Davis2017(build_davis17(davis16_root, tmp_path / "davis17", n_frames=N_FRAMES))
    run = run_engine(dataset, "repeat", tmp_path / "out", progress=False)
    labels = np.array(Image.open(run.results_dir / SOURCE / "00004.png"))
    assert set(np.unique(labels)) == {0, 1, 2}  # ids as in the annotation, void not predicted
    summary = score_predictions(dataset, run.results_dir, progress=False)
    swan, box = summary.per_object
    assert (swan.object_id, box.object_id) == (1, 2)
    assert box.J_mean == 1.0 and box.F_mean == 1.0  # the box never moves
    assert 0.5 < swan.J_mean < 1.0
    _, per_sequence = write_csvs(summary, tmp_path / "report")
    with per_sequence.open() as handle:
        assert [row["Sequence"] for row in csv.DictReader(handle)] == [f"{SOURCE}_1", f"{SOURCE}_2"]


# ----------------------------------------------------------------------------------------------------------- scoring


def test_scoring_tolerates_missing_first_and_last_frames(davis16_small: Path, tmp_path: Path,
                                                         test_engines: type[RepeatMaskEngine]) -> None:
    dataset = Davis2016(davis16_small, sequences=["libby"])
    run = run_engine(dataset, "repeat", tmp_path / "out", progress=False)
    full = score_predictions(dataset, run.results_dir, progress=False)
    (run.results_dir / "libby" / "00000.png").unlink()
    (run.results_dir / "libby" / f"{N_FRAMES - 1:05d}.png").unlink()
    assert score_predictions(dataset, run.results_dir, progress=False).as_dict() == full.as_dict()


def test_davis2016_results_may_be_0_255_gray(davis16_small: Path, tmp_path: Path) -> None:
    """The 2016 toolkit binarised results, so 0/255 gray PNGs (the ground truth itself) score perfectly."""
    dataset = Davis2016(davis16_small)
    summary = score_predictions(dataset, davis16_small / "Annotations" / "480p", progress=False)
    assert summary.JF_mean == 1.0


@pytest.fixture
def libby_results(davis16_small: Path, tmp_path: Path, test_engines: type[RepeatMaskEngine]) -> Path:
    run = run_engine(Davis2016(davis16_small), "repeat", tmp_path / "results", progress=False)
    return run.results_dir


def test_missing_sequences_are_named_before_scoring(davis16_small: Path, libby_results: Path) -> None:
    shutil.rmtree(libby_results / "libby")
    with pytest.raises(ResultsError, match=r"no predictions for 1 of 2 sequences in .*results: libby"):
        score_predictions(Davis2016(davis16_small), libby_results, progress=False)
    with pytest.raises(ResultsError, match=r"predictions folder .*nowhere does not exist"):
        score_predictions(Davis2016(davis16_small), libby_results / "nowhere", progress=False)


def test_missing_middle_frame(davis16_small: Path, libby_results: Path) -> None:
    (libby_results / "libby" / "00002.png").unlink()
    with pytest.raises(ResultsError, match=r"libby[/\\]00002\.png is missing; .* \(00001\.png to 00004\.png"):
        score_predictions(Davis2016(davis16_small), libby_results, progress=False)


def test_prediction_of_the_wrong_size(davis16_small: Path, libby_results: Path) -> None:
    save_indexed(libby_results / "libby" / "00003.png", np.zeros((240, 427), np.uint8))
    with pytest.raises(ResultsError, match=r"00003\.png is 427x240 but the sequence's frames are 854x480"):
        read_predictions(Davis2016(davis16_small)["libby"], libby_results / "libby")


def test_prediction_with_an_unknown_object(davis16_root: Path, tmp_path: Path,
                                           test_engines: type[RepeatMaskEngine]) -> None:
    dataset = Davis2017(build_davis17(davis16_root, tmp_path / "davis17", n_frames=N_FRAMES))
    run = run_engine(dataset, "repeat", tmp_path / "out", progress=False)
    labels = np.array(Image.open(run.results_dir / SOURCE / "00002.png"))
    labels[200:210, 200:210] = 7
    save_indexed(run.results_dir / SOURCE / "00002.png", labels)
    with pytest.raises(ResultsError, match=r"cannot score .*object ids \[7\]"):
        score_predictions(dataset, run.results_dir, progress=False)


# ------------------------------------------------------------------------------------------------------- YouTube-VOS


@pytest.mark.parametrize("all_frames", [False, True], ids=["sparse", "all-frames"])
def test_youtube_vos_submission(davis16_root: Path, tmp_path: Path, test_engines: type[RepeatMaskEngine],
                                all_frames: bool) -> None:
    dataset = YouTubeVOS(build_ytvos(davis16_root, tmp_path / "ytvos"), all_frames=all_frames)
    run, archive = write_submission(dataset, "shifted", tmp_path / "out" / "shifted", progress=False)
    assert test_engines.steps == (10 if all_frames else 2)  # propagation sees every frame it is given...
    expected = [f"Annotations/{YTVOS_VIDEO}/{t:05d}.png" for t in YTVOS_SPARSE]  # ...but only these are written
    assert archive == tmp_path / "out" / "shifted" / "submission.zip"
    assert sorted(str(p.relative_to(archive.parent)) for p in archive.parent.rglob("*.png")) == expected
    with zipfile.ZipFile(archive) as zipped:
        assert zipped.namelist() == expected
        frames = {}
        for name in expected:
            with zipped.open(name) as handle, Image.open(handle) as image:
                assert image.mode == "P" and image.size == (854, 480)
                frames[name[-9:-4]] = np.array(image)
    assert set(np.unique(frames["00000"])) == {0, 1}  # the box is not there yet
    assert set(np.unique(frames["00005"])) == {0, 1, 2}  # it joins on its first annotated frame
    np.testing.assert_array_equal(frames["00005"] == 2, shifted(box_mask(), 7))
    assert run.reused == 0
    again, _ = write_submission(dataset, "shifted", tmp_path / "out" / "shifted", progress=False)
    assert again.reused == 1
