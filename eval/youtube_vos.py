"""YouTube-VOS submissions: run an engine over a split and zip its results the way the evaluation server wants them.

The server scores the ``valid`` (or ``test``) split itself; locally we only produce the upload:
``Annotations/<video>/<frame>.png``, one palette PNG of object ids per frame of ``<split>/JPEGImages/<video>`` (the
sparse frames, even when propagation ran on ``<split>_all_frames``), zipped with ``Annotations/`` at the top.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from eval.datasets import YouTubeVOS
from eval.runner import EngineRun, ResultsError, run_engine

__all__ = ["ANNOTATIONS_DIR", "SUBMISSION_ZIP", "submission_files", "zip_submission", "write_submission"]

ANNOTATIONS_DIR = "Annotations"
SUBMISSION_ZIP = "submission.zip"


def submission_files(dataset: YouTubeVOS) -> list[str]:
    """Every path the server expects in the zip, ``Annotations/<video>/<frame>.png``, in a stable order."""
    files = []
    for sequence in dataset:
        files.extend(
            f"{ANNOTATIONS_DIR}/{sequence.name}/{sequence.frame_names[i]}.png" for i in sequence.output_indices
        )
    return files


def zip_submission(dataset: YouTubeVOS, engine_dir: str | os.PathLike[str], zip_path: str | os.PathLike[str]) -> Path:
    """Zip exactly the expected PNGs under ``engine_dir`` (markers and stray files stay out) into ``zip_path``."""
    engine_dir, zip_path = Path(engine_dir), Path(zip_path)
    files = submission_files(dataset)
    missing = [f for f in files if not (engine_dir / f).is_file()]
    if missing:
        raise ResultsError(
            f"{len(missing)} of {len(files)} submission PNGs are missing under {engine_dir} (first: {missing[0]}); "
            "run the engine again with the same --out to complete them"
        )
    tmp = zip_path.with_name(zip_path.name + ".tmp")
    # PNGs are already compressed; storing them keeps zipping fast at no size cost.
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as archive:
        for name in files:
            archive.write(engine_dir / name, name)
    os.replace(tmp, zip_path)
    return zip_path


def write_submission(
    dataset: YouTubeVOS,
    engine: str,
    engine_dir: str | os.PathLike[str],
    options: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> tuple[EngineRun, Path]:
    """Run ``engine`` into ``engine_dir/Annotations`` (reusing finished videos) and zip it as ``submission.zip``."""
    engine_dir = Path(engine_dir)
    run = run_engine(dataset, engine, engine_dir / ANNOTATIONS_DIR, options, progress)
    return run, zip_submission(dataset, engine_dir, engine_dir / SUBMISSION_ZIP)
