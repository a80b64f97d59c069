"""``vos eval interactive``: the simulated user, its corrections and its report, on real DAVIS frames."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from layouts import SOURCE, build_davis16, build_davis17

from eval.datasets import Davis2016, Davis2017
from eval.interactive import _error_click, interact
from vos.cli import main
from vos.engine import create_engine

N_FRAMES = 8


def test_the_error_click_targets_the_largest_error_region() -> None:
    truth = np.zeros((40, 60), np.uint8)
    truth[5:25, 5:25] = 1
    truth[30:38, 40:58] = 2
    prediction = truth.copy()
    prediction[5:25, 15:25] = 0  # object 1 misses a 20x10 strip (200 px)
    prediction[30:38, 20:40] = 2  # object 2 takes 8x20 = 160 px of background
    object_id, click = _error_click(truth, prediction, [1, 2])
    assert object_id == 1 and click.positive and 5 <= click.y < 25 and 15 <= click.x < 25
    prediction[5:25, 15:25] = 1
    object_id, click = _error_click(truth, prediction, [1, 2])
    assert object_id == 2 and not click.positive and 30 <= click.y < 38 and 20 <= click.x < 40
    assert _error_click(truth, truth, [1, 2])[0] == 0


def test_mask_corrections_raise_jf(davis16_root: Path, tmp_path: Path) -> None:
    dataset = Davis2016(build_davis16(davis16_root, tmp_path / "davis", N_FRAMES, sources=("bmx-trees",)))
    result = interact(next(iter(dataset)), create_engine("classical"), mask_corrections=True, rounds=6)
    assert result.corrections[0].kind == "click+" and result.corrections[0].frame == 0
    assert result.jf[-1] > result.jf[0] + 0.1, result.jf
    assert all(c.kind == "mask" and c.j_after == pytest.approx(1.0) for c in result.corrections[1:])
    assert len(result.jf) == len(result.corrections)  # one correction per round
    propagated = [c for c in result.corrections[1:] if c.changed_frames]
    assert propagated, "the corrections changed no other frame"
    assert np.mean([c.changed_j_after for c in propagated]) > np.mean([c.changed_j_before for c in propagated])


def test_every_object_of_a_multi_object_sequence_gets_its_click(davis16_root: Path, tmp_path: Path) -> None:
    dataset = Davis2017(build_davis17(davis16_root, tmp_path / "davis17", n_frames=N_FRAMES))
    result = interact(next(iter(dataset)), create_engine("classical"), rounds=5)
    assert [(c.round, c.object_id) for c in result.corrections[:2]] == [(0, 1), (0, 2)]
    assert len(result.jf) == 6 and all(0.0 <= v <= 1.0 for v in result.jf)
    assert all(c.frame >= 0 and c.kind in ("click+", "click-") for c in result.corrections)


def test_cli_writes_the_report(davis16_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = build_davis16(davis16_root, tmp_path / "davis", N_FRAMES)
    out = tmp_path / "report"
    assert main(["eval", "interactive", "--root", str(root), "--rounds", "5", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "J&F@0" in printed and "J&F@5" in printed and "rounds-to-0.8" in printed
    with (out / "interactive.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["Sequence"] for r in rows] == [SOURCE, "mean"]
    assert rows[0]["J&F@0"] == rows[1]["J&F@0"] and 0 <= int(rows[0]["rounds-to-0.8"]) <= 10
    with (out / "sequences" / f"{SOURCE}.csv").open() as handle:
        rounds = list(csv.DictReader(handle))
    assert rounds[0]["round"] == "0" and rounds[0]["kind"] == "click+"
    assert (out / "jf-per-round.png").stat().st_size > 1000
    assert main(["eval", "interactive", "--root", str(root), "--rounds", "3", "--out", str(out)]) == 2
    assert "--rounds must be at least 5" in capsys.readouterr().err


def test_the_seem_engine_runs_the_interactive_protocol(davis16_root: Path, seem_fixtures: Path, tmp_path: Path) -> None:
    from vos.seem.config import SeemConfig
    from vos.seem.model import load_seem

    config = SeemConfig.from_official_yaml(seem_fixtures / "tiny_config.yaml")
    model = load_seem(seem_fixtures / "tiny_weights.pt", config, vocabulary=False)
    engine = create_engine("seem", weights=model, resolution=256, absent_threshold=0.0)
    dataset = Davis2016(build_davis16(davis16_root, tmp_path / "davis", 4))
    result = interact(next(iter(dataset)), engine, rounds=5)
    assert len(result.jf) == 6 and all(0.0 <= v <= 1.0 for v in result.jf)
    assert all(c.kind in ("click+", "click-") for c in result.corrections)
