"""Benchmark layouts built from one shared DAVIS 2016 sequence, for the dataset, runner and CLI tests.

Only DAVIS 2016 data exists locally, so DAVIS 2017 and YouTube-VOS folders are made from ``blackswan``: the swan is
object 1 and a fixed box in the top-left corner is object 2. Test engines with known outputs live here too.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from vos.engine import Engine, EngineOptions, ObjectResult, ObjectState, Propagation, VideoFrame
from vos.prompts import ObjectPrompt

SOURCE = "blackswan"  # the shared sequence the synthetic layouts are made from
VOC_PALETTE = [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0] + [0, 0, 0] * 251 + [224, 224, 192]
SIZE = (480, 854)  # (H, W) of the shared 480p frames

YTVOS_ALL_FRAMES = list(range(10))
YTVOS_SPARSE = [0, 5]  # every 5th frame, as in the YouTube-VOS valid split
YTVOS_VIDEO = "vid"


def save_indexed(path: Path, labels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(labels.astype(np.uint8), mode="P")
    im.putpalette(VOC_PALETTE)
    im.save(path)


def copy_frames(davis16_root: Path, dest: Path, indices: Sequence[int], source: str = SOURCE) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for t in indices:
        shutil.copy(davis16_root / "JPEGImages" / "480p" / source / f"{t:05d}.jpg", dest / f"{t:05d}.jpg")


def source_gt(davis16_root: Path, t: int, source: str = SOURCE) -> np.ndarray:
    png = cv2.imread(str(davis16_root / "Annotations" / "480p" / source / f"{t:05d}.png"), cv2.IMREAD_GRAYSCALE)
    return png > 0


def box_mask(shape: tuple[int, int] = SIZE) -> np.ndarray:
    """A second object: a box in the top-left corner, away from the swan."""
    mask = np.zeros(shape, bool)
    mask[10:60, 10:90] = True
    return mask


def build_davis16(davis16_root: Path, root: Path, n_frames: int, sources: Sequence[str] = (SOURCE,)) -> Path:
    """A DAVIS 2016 layout holding the first ``n_frames`` frames (and 0/255 annotations) of ``sources``."""
    for source in sources:
        copy_frames(davis16_root, root / "JPEGImages" / "480p" / source, range(n_frames), source)
        annotations = root / "Annotations" / "480p" / source
        annotations.mkdir(parents=True, exist_ok=True)
        for t in range(n_frames):
            name = f"{t:05d}.png"
            shutil.copy(davis16_root / "Annotations" / "480p" / source / name, annotations / name)
    (root / "ImageSets" / "2016").mkdir(parents=True, exist_ok=True)
    (root / "ImageSets" / "2016" / "val.txt").write_text("".join(f"{s}\n" for s in sources))
    return root


def davis17_labels(davis16_root: Path, t: int) -> np.ndarray:
    """Frame ``t`` of the DAVIS 2017 layout: swan = 1, box = 2, a void band under the box."""
    labels = source_gt(davis16_root, t).astype(np.uint8)
    labels[box_mask(labels.shape)] = 2
    labels[60:63, 10:90] = 255
    return labels


def build_davis17(davis16_root: Path, root: Path, n_frames: int = 5) -> Path:
    """DAVIS 2017 layout of the source sequence's first ``n_frames`` frames (labels of :func:`davis17_labels`)."""
    copy_frames(davis16_root, root / "JPEGImages" / "480p" / SOURCE, range(n_frames))
    for t in range(n_frames):
        save_indexed(root / "Annotations" / "480p" / SOURCE / f"{t:05d}.png", davis17_labels(davis16_root, t))
    (root / "ImageSets" / "2017").mkdir(parents=True, exist_ok=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text(f"{SOURCE}\n")
    return root


def build_ytvos(davis16_root: Path, root: Path) -> Path:
    """A valid split with one video: swan from frame 0, a box appearing on frame 5, annotated only there.

    ``valid/JPEGImages`` holds the sparse frames (0 and 5), ``valid_all_frames`` frames 0..9.
    """
    copy_frames(davis16_root, root / "valid_all_frames" / "JPEGImages" / YTVOS_VIDEO, YTVOS_ALL_FRAMES)
    copy_frames(davis16_root, root / "valid" / "JPEGImages" / YTVOS_VIDEO, YTVOS_SPARSE)
    annotations = root / "valid" / "Annotations" / YTVOS_VIDEO
    save_indexed(annotations / "00000.png", source_gt(davis16_root, 0).astype(np.uint8))
    save_indexed(annotations / "00005.png", box_mask().astype(np.uint8) * 2)
    meta = {
        "videos": {
            YTVOS_VIDEO: {
                "objects": {
                    "1": {"category": "bird", "frames": ["00000", "00005"]},
                    "2": {"category": "box", "frames": ["00005"]},
                }
            }
        }
    }
    (root / "valid" / "meta.json").write_text(json.dumps(meta))
    return root


# ------------------------------------------------------------------------------------------------------ test engines


class RepeatMaskEngine(Engine):
    """Repeats every object's prompt mask on every frame, shifted by ``shift`` pixels right and down.

    Its outputs are known in advance (``shift=0`` is the ``static`` prediction set), so runner tests can check
    files and metrics exactly. ``steps`` counts frames over all instances, to see which sequences were rerun.
    """

    name = "repeat"
    supported_prompts = frozenset({"mask"})
    steps = 0

    class Options(EngineOptions):
        shift: int = 0
        seed: int = 0  # an option only this engine takes

    def __init__(self, options: EngineOptions | None = None, **values: object) -> None:
        super().__init__(options, **values)
        self.shift = self.options.shift

    def new_object(self, object_id: int) -> ObjectState:
        return ObjectState(object_id)

    def add_prompt(self, frame: VideoFrame, state: ObjectState, prompt: ObjectPrompt,
                   current: np.ndarray | None) -> ObjectResult:
        return ObjectResult(prompt.object_id, shifted(prompt.mask, self.shift), 1.0)

    def remove_anchor(self, state: ObjectState, frame_index: int) -> None:
        pass

    def start_propagation(self) -> Propagation:
        return _Repeat()


class _Repeat(Propagation):
    """Each object keeps the mask it started from."""

    def __init__(self) -> None:
        self.masks: dict[int, np.ndarray] = {}

    def step(self, frame: VideoFrame, objects: Mapping[int, ObjectState],
             seeds: Mapping[int, np.ndarray]) -> dict[int, ObjectResult]:
        RepeatMaskEngine.steps += 1  # one counter for both test engines
        self.masks.update(seeds)
        return {i: ObjectResult(i, self.masks[i], 1.0) for i in objects}


class ShiftedMaskEngine(RepeatMaskEngine):
    """A second, worse engine for comparisons: the prompt mask moved by 7 pixels."""

    name = "shifted"

    class Options(EngineOptions):
        shift: int = 7


TEST_ENGINES = {"repeat": "layouts:RepeatMaskEngine", "shifted": "layouts:ShiftedMaskEngine"}


def shifted(mask: np.ndarray, shift: int) -> np.ndarray:
    if shift == 0:
        return mask.copy()
    out = np.zeros_like(mask)
    out[shift:, shift:] = mask[:-shift, :-shift]
    return out
