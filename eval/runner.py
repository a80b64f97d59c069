"""Run an engine over a benchmark and score result folders, the way the official DAVIS toolkit lays them out.

Results layout (the official one): ``<results>/<sequence>/<frame>.png``, one indexed-colour PNG per output frame,
holding object ids (DAVIS palette). :func:`run_engine` writes it through :func:`vos.tracker.track`, the generator the
CLI and the service use, prompting every object on its first annotated frame with its ground-truth mask, the tight
box around it, or one click at its interior point (the pixel farthest from its border), as ``protocol`` says.

A sequence folder is *finished* when its marker file ``.complete.json`` exists, names the same engine, options, frames
and objects, and every PNG it lists exists. The marker is written last, so an interrupted run leaves no marker and the
sequence is redone on the next run, while finished ones are reused.

:func:`score_predictions` compares a results folder with the ground truth using :mod:`eval.metrics`, whoever wrote it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from eval.datasets import Davis2016, FirstAppearance, VosDataset, VosSequence
from eval.metrics import SequenceMetrics, Summary, evaluate_sequence, region_similarity, summarize
from vos.engine import Engine, create_engine
from vos.errors import VosError
from vos.masks import read_label_png, write_palette_png
from vos.prompts import Box, ObjectPrompt, Point
from vos.tracker import track
from vos.video import FOLDER_FPS, VideoInfo, VideoSource

__all__ = [
    "MARKER_FILE",
    "ResultsError",
    "SequenceRun",
    "EngineRun",
    "SequenceVideo",
    "PROMPT_PROTOCOLS",
    "interior_point",
    "sequence_prompts",
    "run_engine",
    "predict_sequence",
    "read_predictions",
    "score_sequence",
    "score_predictions",
    "prompted_frame_iou",
]

MARKER_FILE = ".complete.json"
# How each object is prompted on its first annotated frame: ground-truth mask, tight box, or one interior click.
PROMPT_PROTOCOLS = ("mask", "box", "click")


class ResultsError(VosError):
    """A results folder is missing predictions or holds unusable ones."""


# -------------------------------------------------------------------------------------------------------- run records


@dataclass(frozen=True)
class SequenceRun:
    """How one sequence's predictions were made (read back from its marker when reused)."""

    sequence: str
    frames: int  # frames the engine processed
    engine_seconds: float  # time inside Engine.step
    wall_seconds: float  # decode + engine + PNG writing
    reused: bool = False


@dataclass(frozen=True)
class EngineRun:
    """An engine's pass over a dataset: where its results are and how long they took."""

    engine: str
    results_dir: Path
    sequences: tuple[SequenceRun, ...]

    @property
    def frames(self) -> int:
        return sum(s.frames for s in self.sequences)

    @property
    def wall_seconds(self) -> float:
        return sum(s.wall_seconds for s in self.sequences)

    @property
    def engine_seconds(self) -> float:
        return sum(s.engine_seconds for s in self.sequences)

    @property
    def reused(self) -> int:
        return sum(s.reused for s in self.sequences)


# ------------------------------------------------------------------------------------------------------ engine runs


class SequenceVideo(VideoSource):
    """A dataset sequence as a tracker video: frame ``i`` is ``sequence.image(i)``, so result indices match the
    dataset's frame list exactly (a folder scan could pick up stray files, or the sparse instead of all frames)."""

    def __init__(self, sequence: VosSequence) -> None:
        height, width = sequence.size
        super().__init__(sequence.image_paths[0].parent, VideoInfo(len(sequence), FOLDER_FPS, width, height))
        self.sequence = sequence

    def __iter__(self) -> Iterator[np.ndarray]:
        return self.sequence.images()

    def frame(self, index: int) -> np.ndarray:
        self._check_index(index)
        return self.sequence.image(index)


def sequence_prompts(sequence: VosSequence, protocol: str = "mask") -> list[ObjectPrompt]:
    """One prompt per object, on the frame where its ground truth first appears (see ``PROMPT_PROTOCOLS``)."""
    return [_prompt(first, protocol) for first in sequence.first_appearances()]


def _prompt(first: FirstAppearance, protocol: str) -> ObjectPrompt:
    if protocol == "mask":
        return ObjectPrompt(object_id=first.object_id, frame_index=first.frame_index, mask=first.mask)
    if protocol == "box":
        ys, xs = np.nonzero(first.mask)
        box = Box(x0=float(xs.min()), y0=float(ys.min()), x1=float(xs.max()), y1=float(ys.max()))
        return ObjectPrompt(object_id=first.object_id, frame_index=first.frame_index, box=box)
    assert protocol == "click", protocol
    return ObjectPrompt(object_id=first.object_id, frame_index=first.frame_index, points=[interior_point(first.mask)])


def interior_point(mask: np.ndarray) -> Point:
    """A positive click on the pixel of ``mask`` (bool, non-empty) farthest from its border: the least ambiguous
    click a user could give."""
    distance = cv2.distanceTransform(np.pad(mask, 1).astype(np.uint8), cv2.DIST_L2, 5)[1:-1, 1:-1]
    y, x = np.unravel_index(int(distance.argmax()), distance.shape)
    return Point(x=float(x), y=float(y))


def _fingerprint(sequence: VosSequence, engine: str, options: Mapping[str, Any], protocol: str) -> dict[str, Any]:
    """What a finished sequence must match to be reused: same engine, options and prompts, same frames and objects."""
    return {
        "engine": engine,
        "options": {k: str(v) for k, v in sorted(options.items())},
        "prompt": protocol,
        "frames": len(sequence),
        "outputs": [sequence.frame_names[i] for i in sequence.output_indices],
        "objects": {str(obj): sequence.frame_names[t] for obj, t in sequence.first_frame_indices().items()},
    }


def _finished_run(sequence: VosSequence, seq_dir: Path, fingerprint: Mapping[str, Any]) -> SequenceRun | None:
    """The recorded run of a finished sequence folder, or None when it must be (re)computed."""
    marker = seq_dir / MARKER_FILE
    try:
        record = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    if record.get("fingerprint") != fingerprint:
        return None
    if not all((seq_dir / f"{name}.png").is_file() for name in fingerprint["outputs"]):
        return None
    return SequenceRun(sequence.name, int(record["frames"]), float(record["engine_seconds"]),
                       float(record["wall_seconds"]), reused=True)


def _write_marker(seq_dir: Path, run: SequenceRun, fingerprint: Mapping[str, Any]) -> None:
    record = {"fingerprint": fingerprint, "frames": run.frames, "engine_seconds": run.engine_seconds,
              "wall_seconds": run.wall_seconds}
    tmp = seq_dir / (MARKER_FILE + ".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, seq_dir / MARKER_FILE)  # atomic: a marker is either absent or complete


def predict_sequence(
    sequence: VosSequence, engine: Engine, seq_dir: Path, progress: bool = False, protocol: str = "mask"
) -> SequenceRun:
    """Track ``sequence`` with ``engine`` from ``protocol``'s prompts and write a palette PNG for each of its output
    frames into ``seq_dir``."""
    seq_dir.mkdir(parents=True, exist_ok=True)
    outputs = set(sequence.output_indices)
    begin = time.perf_counter()
    engine_seconds = 0.0
    with SequenceVideo(sequence) as video, tqdm(
        total=len(sequence), unit="frame", desc=sequence.name, leave=False, disable=not progress
    ) as bar:
        # Semi-supervised protocol: an object exists from its first annotated frame on, so no backward fill.
        for result in track(video, engine, sequence_prompts(sequence, protocol), backfill=False):
            engine_seconds += result.seconds
            if result.index in outputs:
                write_palette_png(seq_dir / f"{sequence.frame_names[result.index]}.png", result.label_map())
            bar.update(1)
    return SequenceRun(sequence.name, len(sequence), engine_seconds, time.perf_counter() - begin)


def run_engine(
    dataset: VosDataset,
    engine: str,
    results_dir: str | os.PathLike[str],
    options: Mapping[str, Any] | None = None,
    progress: bool = True,
    protocol: str = "mask",
) -> EngineRun:
    """Write ``engine``'s predictions for every sequence of ``dataset`` under ``results_dir/<sequence>/``, each object
    prompted as ``protocol`` (one of ``PROMPT_PROTOCOLS``) says.

    Finished sequences (see the module doc) are reused; the engine is only created if some sequence needs it, so a
    complete rerun loads no weights.
    """
    if protocol not in PROMPT_PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROMPT_PROTOCOLS)}, got {protocol!r}")
    results_dir = Path(results_dir)
    options = dict(options or {})
    instance: Engine | None = None
    runs = []
    with tqdm(total=len(dataset), unit="seq", desc=engine, disable=not progress) as bar:
        for sequence in dataset:
            seq_dir = results_dir / sequence.name
            fingerprint = _fingerprint(sequence, engine, options, protocol)
            run = _finished_run(sequence, seq_dir, fingerprint)
            if run is None:
                (seq_dir / MARKER_FILE).unlink(missing_ok=True)  # never leave a stale marker over new PNGs
                instance = instance or create_engine(engine, **options)
                run = predict_sequence(sequence, instance, seq_dir, progress, protocol)
                _write_marker(seq_dir, run, fingerprint)
            runs.append(run)
            bar.set_postfix_str(_speed_text(runs), refresh=False)
            bar.update(1)
    return EngineRun(engine, results_dir, tuple(runs))


def _speed_text(runs: Sequence[SequenceRun]) -> str:
    fresh = [r for r in runs if not r.reused]
    frames, seconds = sum(r.frames for r in fresh), sum(r.wall_seconds for r in fresh)
    return f"{frames / seconds:.1f} frames/s" if seconds > 0 else "reused"


# ------------------------------------------------------------------------------------------------------------ scoring


def read_predictions(sequence: VosSequence, seq_dir: Path, binary: bool = False) -> np.ndarray:
    """Predicted label maps ``[N, H, W]`` uint8 of a sequence from ``seq_dir/<frame>.png``.

    The first and last frames may be missing (zeros stand in): semi-supervised scoring never reads them, and the
    official toolkit accepts results without them. ``binary`` maps every non-zero label to 1 (DAVIS 2016, whose
    results are often 0/255 masks).
    """
    if not seq_dir.is_dir():
        raise ResultsError(f"no predictions for sequence {sequence.name!r}: folder {seq_dir} is missing")
    names = sequence.frame_names
    labels = np.zeros((len(names), *sequence.size), np.uint8)
    for t, name in enumerate(names):
        path = seq_dir / f"{name}.png"
        if not path.is_file():
            if 0 < t < len(names) - 1:
                raise ResultsError(
                    f"prediction {path} is missing; sequence {sequence.name!r} needs one PNG per frame "
                    f"({names[1]}.png to {names[-2]}.png at least)"
                )
            continue
        labels[t] = _read_prediction(path, sequence.size)
    return (labels > 0).astype(np.uint8) if binary else labels


def _read_prediction(path: Path, size: tuple[int, int]) -> np.ndarray:
    try:
        labels = read_label_png(path)
    except OSError as exc:
        raise ResultsError(f"cannot read prediction {path}: {exc}") from exc
    if labels.shape != size:
        raise ResultsError(
            f"prediction {path} is {labels.shape[1]}x{labels.shape[0]} but the sequence's frames are "
            f"{size[1]}x{size[0]}; write results at the resolution of the images"
        )
    return labels


def score_sequence(sequence: VosSequence, seq_dir: Path, binary: bool = False) -> list[SequenceMetrics]:
    """Per-object J/F of one sequence's predictions against its ground truth (toolkit semi-supervised mode)."""
    predictions = read_predictions(sequence, seq_dir, binary)
    try:
        return evaluate_sequence(sequence.annotations(), predictions, void_label=sequence.void_label,
                                 sequence=sequence.name)
    except ValueError as exc:  # e.g. a predicted id the ground truth lacks
        raise ResultsError(f"cannot score {seq_dir}: {exc}") from exc


def score_predictions(
    dataset: VosDataset,
    predictions_dir: str | os.PathLike[str],
    progress: bool = True,
    description: str = "scoring",
) -> Summary:
    """Score the results folder ``predictions_dir/<sequence>/<frame>.png`` on every sequence of ``dataset``."""
    predictions_dir = Path(predictions_dir)
    _check_sequence_folders(dataset, predictions_dir)
    binary = isinstance(dataset, Davis2016)
    results: list[SequenceMetrics] = []
    for sequence in tqdm(dataset, total=len(dataset), unit="seq", desc=description, disable=not progress):
        results.extend(score_sequence(sequence, predictions_dir / sequence.name, binary))
    return summarize(results)


def prompted_frame_iou(dataset: VosDataset, predictions_dir: str | os.PathLike[str]) -> float:
    """Mean IoU of each object's prediction on the frame it is prompted on (its first annotated frame), which the
    semi-supervised J&F leaves out: how well a box or click prompt was turned into a mask."""
    predictions_dir = Path(predictions_dir)
    _check_sequence_folders(dataset, predictions_dir)
    binary = isinstance(dataset, Davis2016)
    ious = []
    for sequence in dataset:
        for first in sequence.first_appearances():
            path = predictions_dir / sequence.name / f"{first.frame_name}.png"
            if not path.is_file():
                raise ResultsError(f"prediction {path} is missing: the prompted frame of object {first.object_id}")
            labels = _read_prediction(path, sequence.size)
            predicted = labels > 0 if binary else labels == first.object_id
            ious.append(float(region_similarity(first.mask, predicted)))
    return float(np.mean(ious))


def _check_sequence_folders(dataset: VosDataset, predictions_dir: Path) -> None:
    """Fail before any scoring when whole sequences are missing, naming all of them at once."""
    if not predictions_dir.is_dir():
        raise ResultsError(f"predictions folder {predictions_dir} does not exist")
    missing = [name for name in dataset.names if not (predictions_dir / name).is_dir()]
    if missing:
        shown = ", ".join(missing[:10]) + (", ..." if len(missing) > 10 else "")
        raise ResultsError(
            f"no predictions for {len(missing)} of {len(dataset)} sequences in {predictions_dir}: {shown}; "
            "expected <predictions>/<sequence>/<frame>.png (or pick sequences with --sequences)"
        )

