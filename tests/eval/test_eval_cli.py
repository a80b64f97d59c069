"""``vos eval``: the official numbers on stored results, engine runs and comparisons, submissions, clear errors."""

from __future__ import annotations

import csv
import json
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from layouts import SOURCE, YTVOS_VIDEO, RepeatMaskEngine, build_davis16, build_davis17, build_ytvos, save_indexed

from vos.cli import main
from vos.masks import write_palette_png

TOL = 1e-6
COLUMNS = ["J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay"]


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


# ----------------------------------------------------------------------------------------- stored results (official)


@pytest.fixture(scope="module")
def flow_results(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``flow`` prediction set as result PNGs: values {0, 1}, DAVIS palette, every frame (PREDICTIONS.md)."""
    packed_path = shared_dir / "fixtures" / "davis_metrics" / "flow_masks_packbits.npz"
    if not packed_path.is_file():
        pytest.skip(f"flow fixture {packed_path} not found")
    out = tmp_path_factory.mktemp("results") / "flow"
    with np.load(packed_path) as packed:
        for name in packed.files:
            masks = np.unpackbits(packed[name], axis=-1, count=854)
            (out / name).mkdir(parents=True)
            for t, mask in enumerate(masks):
                write_palette_png(out / name / f"{t:05d}.png", mask)
    return out


def test_scoring_stored_results_gives_the_official_numbers(
    flow_results: Path, davis16_root: Path, shared_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reference = json.loads((shared_dir / "fixtures" / "davis_metrics" / "reference_metrics.json").read_text())
    report = tmp_path / "report"
    rc = main(["eval", "davis", "--root", str(davis16_root), "--year", "2016", "--predictions", str(flow_results),
               "--out", str(report)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "Global results on DAVIS 2016 val (10 sequences, 10 objects)" in printed
    assert "flow       0.416   0.410" in printed

    (global_row,) = _rows(report / "global.csv")
    assert list(global_row) == COLUMNS
    for column, value in reference["global_summary"]["flow"].items():
        assert float(global_row[column]) == pytest.approx(value, abs=TOL), column
    per_sequence = _rows(report / "per-sequence.csv")
    assert list(per_sequence[0]) == ["Sequence", *COLUMNS]
    assert [r["Sequence"] for r in per_sequence] == [f"{name}_1" for name in sorted(reference["sets"]["flow"])]
    for row in per_sequence:
        ref = reference["sets"]["flow"][row["Sequence"][:-2]]
        assert float(row["J-Mean"]) == pytest.approx(ref["J_mean"], abs=TOL)
        assert float(row["F-Decay"]) == pytest.approx(ref["F_decay"], abs=TOL)
    for plot in ("jf-per-sequence.png", "j-per-frame.png"):
        assert (report / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------------------ engine runs, comparison


def test_engine_comparison_on_davis2017(
    davis16_root: Path, tmp_path: Path, test_engines: type[RepeatMaskEngine], capsys: pytest.CaptureFixture[str]
) -> None:
    root = build_davis17(davis16_root, tmp_path / "davis17", n_frames=6)
    out = tmp_path / "out"
    args = ["eval", "davis", "--root", str(root), "--year", "2017", "--engine", "repeat", "--engine", "shifted",
            "--seed", "5", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    for engine in ("repeat", "shifted"):
        folder = out / engine
        assert sorted(p.name for p in (folder / SOURCE).glob("*.png")) == [f"{t:05d}.png" for t in range(6)]
        assert [r["Sequence"] for r in _rows(folder / "per-sequence.csv")] == [f"{SOURCE}_1", f"{SOURCE}_2"]
        assert (folder / "global.csv").is_file() and (folder / "jf-per-sequence.png").is_file()
        assert f"{engine}: 6 frames in" in printed
        marker = json.loads((folder / SOURCE / ".complete.json").read_text())
        assert marker["fingerprint"]["options"] == ({"seed": "5"} if engine == "repeat" else {})  # only its options
    table = {row["Method"]: float(row["J&F-Mean"]) for row in _rows(out / "comparison.csv")}
    assert list(table) == ["repeat", "shifted"] and table["repeat"] > table["shifted"]
    assert (out / "comparison.png").is_file()
    assert printed.index("repeat  ") < printed.index("shifted  ")  # one table, engines in command-line order

    assert main(args) == 0  # a rerun reuses everything
    assert "1 of 1 sequences reused" in capsys.readouterr().out


def test_youtube_vos_submission(davis16_root: Path, tmp_path: Path, test_engines: type[RepeatMaskEngine],
                                capsys: pytest.CaptureFixture[str]) -> None:
    root = build_ytvos(davis16_root, tmp_path / "ytvos")
    out = tmp_path / "out"
    rc = main(["eval", "youtube-vos", "--root", str(root), "--year", "2018", "--all-frames", "--engine", "repeat",
               "--out", str(out)])
    assert rc == 0
    assert "2 PNGs for 1 videos zipped into" in capsys.readouterr().out
    with zipfile.ZipFile(out / "repeat" / "submission.zip") as zipped:
        assert zipped.namelist() == [f"Annotations/{YTVOS_VIDEO}/00000.png", f"Annotations/{YTVOS_VIDEO}/00005.png"]


def test_classical_engine_end_to_end(davis16_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The real weight-free engine on 8 frames of blackswan, through the CLI."""
    root = build_davis16(davis16_root, tmp_path / "davis16", 8)
    assert main(["eval", "davis", "--root", str(root), "--year", "2016", "--out", str(tmp_path / "out")]) == 0
    (row,) = _rows(tmp_path / "out" / "classical" / "global.csv")
    assert float(row["J&F-Mean"]) > 0.6  # the swan barely moves in 8 frames
    assert "classical" in capsys.readouterr().out


def test_seem_engine_end_to_end(davis16_root: Path, seem_fixtures: Path, tmp_path: Path) -> None:
    """The SEEM engine (tiny official-layout weights) through both runners: the path a real checkpoint takes."""
    weights = ["--engine", "seem", "--weights", str(seem_fixtures / "tiny_weights.pt"),
               "--variant", str(seem_fixtures / "tiny_config.yaml"), "--resolution", "128"]
    davis = build_davis16(davis16_root, tmp_path / "davis16", 4)
    assert main(["eval", "davis", "--root", str(davis), "--year", "2016", *weights, "--out", str(tmp_path / "d")]) == 0
    (row,) = _rows(tmp_path / "d" / "seem" / "global.csv")
    assert 0.0 <= float(row["J&F-Mean"]) <= 1.0  # random weights: the number means nothing, the path must run
    assert len(list((tmp_path / "d" / "seem" / SOURCE).glob("*.png"))) == 4
    ytvos = build_ytvos(davis16_root, tmp_path / "ytvos")
    assert main(["eval", "youtube-vos", "--root", str(ytvos), *weights, "--out", str(tmp_path / "y")]) == 0
    assert (tmp_path / "y" / "seem" / "submission.zip").is_file()


# ------------------------------------------------------------------------------------------------------------ errors


def _break_image_sets(root: Path) -> None:
    shutil.rmtree(root / "ImageSets")


def _break_first_annotation(root: Path) -> None:
    (root / "Annotations" / "480p" / SOURCE / "00000.png").unlink()


def _break_annotation_size(root: Path) -> None:
    save_indexed(root / "Annotations" / "480p" / SOURCE / "00002.png", np.zeros((240, 427), np.uint8))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_break_image_sets, r"sequence list for split 'val' not found: .*ImageSets[/\\]2017[/\\]val\.txt"),
        (_break_first_annotation, r"no annotation for its first frame: .*00000\.png is missing"),
        (_break_annotation_size, r"00002\.png is 427x240 but its image .* is 854x480"),
    ],
    ids=["no-image-sets", "no-first-annotation", "size-mismatch"],
)
def test_bad_layouts_are_clear_errors(
    damage, message: str, davis16_root: Path, tmp_path: Path, test_engines: type[RepeatMaskEngine],
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = build_davis17(davis16_root, tmp_path / "davis17", n_frames=4)
    damage(root)
    rc = main(["eval", "davis", "--root", str(root), "--engine", "repeat", "--out", str(tmp_path / "out")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "vos eval: error: " in err and "Traceback" not in err
    assert re.search(message, err), err


def test_missing_predictions_and_bad_options(
    davis16_root: Path, tmp_path: Path, test_engines: type[RepeatMaskEngine], capsys: pytest.CaptureFixture[str]
) -> None:
    root = build_davis16(davis16_root, tmp_path / "davis16", 4)
    (tmp_path / "results" / "other").mkdir(parents=True)
    base = ["eval", "davis", "--root", str(root), "--year", "2016"]
    assert main([*base, "--predictions", str(tmp_path / "results")]) == 2
    assert f"vos eval: error: no predictions for 1 of 1 sequences in {tmp_path / 'results'}: {SOURCE}" in (
        capsys.readouterr().err
    )
    assert main([*base, "--engine", "classical"]) == 2
    assert "vos eval: error: --out is required when running an engine" in capsys.readouterr().err
    assert main([*base, "--engine", "classical", "--weights", "w.pt", "--out", str(tmp_path / "out")]) == 2
    assert "vos eval: error: engine 'classical' has no option weights" in capsys.readouterr().err
    assert main([*base, "--engine", "repeat", "--engine", "shifted", "--weights", "w.pt", "--out", "x"]) == 2
    assert "vos eval: error: no engine among repeat, shifted takes the option(s) weights" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:  # argparse: the two sources exclude each other
        main([*base, "--engine", "classical", "--predictions", str(tmp_path / "results")])
    assert exit_info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
