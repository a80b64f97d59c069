"""Interactive evaluation: a simulated user corrects an engine's result round after round, through a session.

Per sequence, on the same :class:`vos.session.Session` API the service uses:

* **round 0**: each object gets one positive click at the interior point of its ground truth on its first annotated
  frame (the pixel farthest from the border); the session propagates both ways from there;
* **each further round**: the frame with the lowest J (mean over objects) gets one correction, and the session
  propagates both ways from it, each object halfway to its other prompted frames (so every frame keeps the masks
  propagated from its nearest prompt). The correction is one click at
  the interior point of the largest error region over all objects: positive for the object whose pixels were
  missed, negative for the object that took pixels it does not own. In ``mask_corrections`` mode it is instead the
  ground-truth mask of every object on that frame.

After each round the sequence is scored with the official J and F (:mod:`eval.metrics`). The report gives J&F after
rounds 0, 1, 3 and 5, and the rounds needed to reach J&F >= ``target`` (capped at ``max_rounds``). Each sequence's
CSV also tells, per round, how good the correction was on its frame (J before and right after) and whether the
propagation kept it: the mean J of the other frames the round changed, before and after.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np
from matplotlib.figure import Figure
from tqdm import tqdm

from eval.datasets import VosDataset, VosSequence
from eval.metrics import evaluate_sequence, region_similarity
from eval.report import save_figure
from eval.runner import SequenceVideo, interior_point
from vos.engine import Engine
from vos.prompts import ObjectPrompt, Point
from vos.session import Session

REPORT_ROUNDS = (0, 1, 3, 5)
TARGET_JF = 0.8
MAX_ROUNDS = 10
SUMMARY_CSV = "interactive.csv"
ROUNDS_PLOT = "jf-per-round.png"
SEQUENCES_DIR = "sequences"


@dataclass(frozen=True)
class Correction:
    """What the simulated user did in one round."""

    round: int
    frame: int
    object_id: int  # 0 for a mask correction of every object
    kind: str  # "click+", "click-" or "mask"
    x: float = -1.0
    y: float = -1.0
    j_before: float = -1.0  # J of the corrected frame (mean over objects) before and right after the correction
    j_after: float = -1.0
    # Whether propagation keeps the correction: mean J over the other frames whose masks the round changed, before
    # and after it, and how many they were.
    changed_frames: int = 0
    changed_j_before: float = -1.0
    changed_j_after: float = -1.0


@dataclass
class SequenceInteraction:
    """One sequence's J&F after each round, and the corrections that led there."""

    sequence: str
    jf: list[float] = field(default_factory=list)  # index = round
    corrections: list[Correction] = field(default_factory=list)

    def jf_after(self, round_: int) -> float:
        """J&F after ``round_`` (the last one when the sequence reached the target earlier and stopped)."""
        return self.jf[min(round_, len(self.jf) - 1)]

    def rounds_to(self, target: float, cap: int) -> int:
        """The first round whose J&F reaches ``target``; ``cap`` when none does."""
        return next((r for r, value in enumerate(self.jf) if value >= target), cap)


def interact(sequence: VosSequence, engine: Engine, *, mask_corrections: bool = False, rounds: int = MAX_ROUNDS,
             target: float = TARGET_JF) -> SequenceInteraction:
    """Run the simulated user on one sequence (see the module docstring). Rounds go on until both the last
    reported round and the target are reached, or ``rounds`` runs out."""
    truth = sequence.annotations()
    ids = sorted(a.object_id for a in sequence.first_appearances())
    result = SequenceInteraction(sequence.name)
    predictions = np.zeros_like(truth)
    with SequenceVideo(sequence) as video, Session(engine, video) as session:
        for first in sequence.first_appearances():
            point = interior_point(first.mask)
            session.add_prompt(ObjectPrompt(object_id=first.object_id, frame_index=first.frame_index, points=[point]))
            result.corrections.append(Correction(0, first.frame_index, first.object_id, "click+", point.x, point.y))
            _propagate(session, first.frame_index, predictions)
        result.jf.append(_jf(sequence, truth, predictions, ids))
        for round_ in range(1, rounds + 1):
            if round_ > max(REPORT_ROUNDS) and result.jf[-1] >= target:
                break
            frame = _worst_frame(truth, predictions, ids)
            before = _frame_j(truth[frame], predictions[frame], ids)
            previous = predictions.copy()
            correction = _correct(session, truth[frame], predictions[frame], frame, ids, round_, mask_corrections)
            if correction is None:
                break  # nothing left to correct
            _propagate(session, frame, predictions)
            changed = [t for t in range(len(truth)) if t != frame and not np.array_equal(previous[t], predictions[t])]
            result.corrections.append(replace(
                correction, j_before=before, j_after=_frame_j(truth[frame], predictions[frame], ids),
                changed_frames=len(changed),
                changed_j_before=_mean_j(truth, previous, changed, ids),
                changed_j_after=_mean_j(truth, predictions, changed, ids)))
            result.jf.append(_jf(sequence, truth, predictions, ids))
    return result


def _propagate(session: Session, frame: int, predictions: np.ndarray) -> None:
    predictions[frame] = session.result(frame, with_image=False).label_map()
    for changed in session.propagate(frame, "both", midway=True):
        predictions[changed.index] = changed.label_map()


def _jf(sequence: VosSequence, truth: np.ndarray, predictions: np.ndarray, ids: Sequence[int]) -> float:
    metrics = evaluate_sequence(truth, predictions, object_ids=ids, void_label=sequence.void_label,
                                sequence=sequence.name)
    return float(np.mean([m.JF_mean for m in metrics]))


def _worst_frame(truth: np.ndarray, predictions: np.ndarray, ids: Sequence[int]) -> int:
    """The frame with the lowest J, averaged over the objects."""
    j = np.mean([region_similarity(truth == i, predictions == i) for i in ids], axis=0)
    return int(np.argmin(j))


def _frame_j(truth: np.ndarray, prediction: np.ndarray, ids: Sequence[int]) -> float:
    return float(np.mean([region_similarity(truth == i, prediction == i) for i in ids]))


def _mean_j(truth: np.ndarray, predictions: np.ndarray, frames: Sequence[int], ids: Sequence[int]) -> float:
    """Mean J over ``frames`` (-1 when there are none)."""
    if not frames:
        return -1.0
    return float(np.mean([_frame_j(truth[t], predictions[t], ids) for t in frames]))


def _correct(session: Session, truth: np.ndarray, prediction: np.ndarray, frame: int, ids: Sequence[int],
             round_: int, mask_corrections: bool) -> Correction | None:
    """Give the frame's correction to the session; None when the frame is already perfect."""
    if mask_corrections:
        for object_id in ids:
            if (truth == object_id).any():
                session.add_prompt(ObjectPrompt(object_id=object_id, frame_index=frame, mask=truth == object_id))
        return Correction(round_, frame, 0, "mask")
    object_id, point = _error_click(truth, prediction, ids)
    if object_id == 0:
        return None
    session.add_prompt(ObjectPrompt(object_id=object_id, frame_index=frame, points=[point]))
    return Correction(round_, frame, object_id, "click+" if point.positive else "click-", point.x, point.y)


def _error_click(truth: np.ndarray, prediction: np.ndarray, ids: Sequence[int]) -> tuple[int, Point]:
    """The click at the interior point of the largest error region over all objects, and the object it is for
    (0 when nothing is wrong)."""
    best: tuple[float, int, Point] = (0.0, 0, Point(x=0, y=0))
    for object_id in ids:
        for region, positive in (((truth == object_id) & (prediction != object_id), True),
                                 ((prediction == object_id) & (truth != object_id), False)):
            if not region.any():
                continue
            count, components, stats, _ = cv2.connectedComponentsWithStats(region.astype(np.uint8), connectivity=8)
            largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
            area = float(stats[largest, cv2.CC_STAT_AREA])
            if area > best[0]:
                point = interior_point(components == largest).model_copy(update={"positive": positive})
                best = (area, object_id, point)
    return best[1], best[2]


# ------------------------------------------------------------------------------------------------------------ report


def run_interactive(dataset: VosDataset, engine: Engine, *, mask_corrections: bool = False, rounds: int = MAX_ROUNDS,
                    target: float = TARGET_JF, progress: bool = True) -> list[SequenceInteraction]:
    return [interact(sequence, engine, mask_corrections=mask_corrections, rounds=rounds, target=target)
            for sequence in tqdm(dataset, total=len(dataset), unit="seq", desc="interactive", disable=not progress)]


def summary_row(results: Sequence[SequenceInteraction], target: float = TARGET_JF,
                cap: int = MAX_ROUNDS) -> dict[str, float]:
    """Mean J&F after each reported round, the mean rounds to reach ``target`` and the gain from round 0 to 5."""
    row = {f"J&F@{r}": float(np.mean([s.jf_after(r) for s in results])) for r in REPORT_ROUNDS}
    row[f"rounds-to-{target:g}"] = float(np.mean([s.rounds_to(target, cap) for s in results]))
    row["gain-0-to-5"] = row["J&F@5"] - row["J&F@0"]
    return row


def write_interactive_report(results: Sequence[SequenceInteraction], out_dir: str | os.PathLike[str], title: str,
                             target: float = TARGET_JF, cap: int = MAX_ROUNDS) -> list[Path]:
    """``interactive.csv`` (one row per sequence and a mean row), ``sequences/<name>.csv`` (J&F and the correction
    of every round) and ``jf-per-round.png``."""
    out_dir = Path(out_dir)
    (out_dir / SEQUENCES_DIR).mkdir(parents=True, exist_ok=True)
    columns = [*(f"J&F@{r}" for r in REPORT_ROUNDS), f"rounds-to-{target:g}"]
    summary = out_dir / SUMMARY_CSV
    with summary.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Sequence", *columns])
        for s in results:
            writer.writerow([s.sequence, *(f"{s.jf_after(r):.6f}" for r in REPORT_ROUNDS), s.rounds_to(target, cap)])
        mean = summary_row(results, target, cap)
        writer.writerow(["mean", *(f"{mean[c]:.6f}" for c in columns)])
    paths = [summary]
    for s in results:
        paths.append(_write_sequence_csv(s, out_dir / SEQUENCES_DIR / f"{s.sequence}.csv"))
    paths.append(plot_rounds(results, out_dir / ROUNDS_PLOT, title))
    return paths


def _write_sequence_csv(result: SequenceInteraction, path: Path) -> Path:
    by_round: dict[int, list[Correction]] = {}
    for correction in result.corrections:
        by_round.setdefault(correction.round, []).append(correction)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["round", "J&F", "frame", "object", "kind", "x", "y", "frame-J-before", "frame-J-after",
                         "changed-frames", "changed-J-before", "changed-J-after"])
        for round_, jf in enumerate(result.jf):
            for c in by_round.get(round_, [Correction(round_, -1, 0, "none")]):
                writer.writerow([round_, f"{jf:.6f}", c.frame, c.object_id, c.kind, c.x, c.y, f"{c.j_before:.4f}",
                                 f"{c.j_after:.4f}", c.changed_frames, f"{c.changed_j_before:.4f}",
                                 f"{c.changed_j_after:.4f}"])
    return path


def plot_rounds(results: Sequence[SequenceInteraction], path: Path, title: str) -> Path:
    """J&F against rounds: one thin line per sequence, the mean in bold."""
    figure = Figure(figsize=(7, 4.5))
    axes = figure.add_subplot()
    longest = max(len(s.jf) for s in results)
    rounds = np.arange(longest)
    for s in results:
        axes.plot(rounds, [s.jf_after(r) for r in rounds], color="tab:gray", linewidth=0.8, alpha=0.6)
    mean = [np.mean([s.jf_after(r) for s in results]) for r in rounds]
    axes.plot(rounds, mean, color="tab:blue", linewidth=2.5, marker="o", label="mean")
    axes.axhline(TARGET_JF, color="tab:red", linestyle="--", linewidth=1, label=f"J&F {TARGET_JF}")
    axes.set_xlabel("round (0: one click per object)")
    axes.set_ylabel("J&F")
    axes.set_ylim(0, 1)
    axes.set_title(title)
    axes.legend(loc="lower right")
    return save_figure(figure, path)
