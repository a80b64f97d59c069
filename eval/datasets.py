"""Lazy readers for video object segmentation benchmarks: DAVIS 2016, DAVIS 2017 and YouTube-VOS 2018/2019.

A dataset reads only its sequence list (``ImageSets`` file or ``meta.json``) when created. A sequence lists its folders
when opened, and decodes a frame or an annotation only when asked, so a runner holds one sequence at a time.

Every sequence exposes the same things whatever the benchmark:

* ``name``, ``frame_names`` (file stems in order), ``image_paths``, ``image(i)`` (RGB uint8 ``[H, W, 3]``);
* ``annotation(i)``: the ground-truth label map (uint8 ``[H, W]``, 0 = background, k = object k, ``void_label`` =
  ignored pixels) of an annotated frame; ``annotated_indices``; ``annotations()`` stacks all frames for evaluation;
* ``object_ids`` and ``first_appearances()``: for each object its first annotated frame and mask, which a runner
  turns into prompts;
* ``output_indices``: the frames whose predictions are scored or submitted (all frames, except YouTube-VOS read with
  ``all_frames=True``, where only the sparse frames of the split's own ``JPEGImages`` count).

Layouts (``<res>`` is ``480p`` or ``Full-Resolution``):

* DAVIS 2016: ``JPEGImages/<res>/<seq>/00000.jpg``, ``Annotations/<res>/<seq>/00000.png`` (8-bit gray, object = > 0),
  sequence list ``ImageSets/2016/<split>.txt`` (or the original release's ``ImageSets/<res>/<split>.txt`` of paths).
* DAVIS 2017: same folders, indexed-colour PNGs holding object ids (255 = void), list ``ImageSets/2017/<split>.txt``.
* YouTube-VOS: ``<split>/JPEGImages/<vid>/*.jpg``, ``<split>/Annotations/<vid>/*.png`` (indexed, object ids),
  ``<split>/meta.json``; optional ``<split>_all_frames/JPEGImages/<vid>`` with every frame. In the ``valid`` split,
  an object may first appear after frame 0 and is annotated only on that first frame.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from vos.errors import DatasetError

__all__ = [
    "FirstAppearance",
    "VosSequence",
    "VosDataset",
    "Davis2016",
    "Davis2017",
    "YouTubeVOS",
    "open_dataset",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg")
DAVIS_RESOLUTIONS = ("480p", "Full-Resolution")


@dataclass(frozen=True)
class FirstAppearance:
    """Where an object is first annotated, and its mask there: what a semi-supervised run is prompted with."""

    object_id: int
    frame_index: int
    frame_name: str
    mask: np.ndarray  # bool [H, W]


# ----------------------------------------------------------------------------------------------------------- helpers


def _require_dir(path: Path, what: str, hint: str) -> None:
    if not path.is_dir():
        raise DatasetError(f"{what} {path} does not exist or is not a folder; {hint}")


def _list_stems(folder: Path, suffixes: Sequence[str]) -> dict[str, Path]:
    """File stem -> path of the files in ``folder`` with one of ``suffixes``, in sorted (= frame) order."""
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(tuple(suffixes)))
    return {os.path.splitext(n)[0]: folder / n for n in names}


def _image_size(path: Path) -> tuple[int, int]:
    """(H, W) from the file header only: checking sizes must not decode every JPEG."""
    try:
        with Image.open(path) as im:
            width, height = im.size
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read image {path}: {exc}; replace the file or remove it from the dataset") from exc
    return height, width


def _read_label_png(path: Path) -> np.ndarray:
    """Object-id label map of an indexed (P) or 8-bit gray (L) PNG, as uint8 ``[H, W]``.

    PIL keeps palette indices (cv2 would expand them to colours, losing the ids); gray files go through cv2, which
    decodes them about 3x faster than PIL's array conversion.
    """
    try:
        with Image.open(path) as im:
            mode = im.mode
            if mode == "P":
                return np.array(im, dtype=np.uint8)
    except OSError as exc:
        raise DatasetError(f"cannot read annotation {path}: {exc}; replace the file") from exc
    if mode != "L":
        raise DatasetError(
            f"annotation {path} is a {mode!r} PNG; expected an indexed-colour (P) or 8-bit gray (L) PNG whose "
            "pixel values are object ids"
        )
    labels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if labels is None or labels.ndim != 2:
        raise DatasetError(f"cannot decode annotation {path} as an 8-bit gray PNG; replace the file")
    return labels


# ---------------------------------------------------------------------------------------------------------- sequence


class VosSequence:
    """One video: its frames and ground truth, read lazily. Built by a dataset, not directly."""

    void_label: int | None = None

    def __init__(
        self,
        name: str,
        image_paths: Mapping[str, Path],
        annotation_paths: Mapping[str, Path],
        output_frames: Sequence[str] | None = None,
    ) -> None:
        self.name = name
        self.frame_names: tuple[str, ...] = tuple(image_paths)
        self.image_paths: tuple[Path, ...] = tuple(image_paths.values())
        self._index = {f: i for i, f in enumerate(self.frame_names)}
        self._annotation_paths = {self._index[f]: p for f, p in annotation_paths.items() if f in self._index}
        outputs = self.frame_names if output_frames is None else output_frames
        self.output_indices: tuple[int, ...] = tuple(self._index[f] for f in outputs)
        self._size: tuple[int, int] | None = None

    def __len__(self) -> int:
        return len(self.frame_names)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {len(self)} frames, objects={self.object_ids})"

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the video, from the first frame's header."""
        if self._size is None:
            self._size = _image_size(self.image_paths[0])
        return self._size

    def frame_index(self, frame_name: str) -> int:
        try:
            return self._index[frame_name]
        except KeyError:
            raise DatasetError(f"sequence {self.name!r} has no frame {frame_name!r}") from None

    def image(self, index: int) -> np.ndarray:
        """Frame ``index`` as RGB uint8 ``[H, W, 3]``."""
        path = self.image_paths[index]
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise DatasetError(f"cannot decode image {path}; replace the file or remove it from the dataset")
        if bgr.shape[:2] != self.size:
            raise DatasetError(
                f"image {path} is {bgr.shape[1]}x{bgr.shape[0]} but the sequence's first frame is "
                f"{self.size[1]}x{self.size[0]}; all frames of a sequence must have one size"
            )
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def images(self) -> Iterator[np.ndarray]:
        """All frames in order, decoded one at a time."""
        return (self.image(i) for i in range(len(self)))

    @property
    def annotated_indices(self) -> tuple[int, ...]:
        return tuple(sorted(self._annotation_paths))

    def annotation_path(self, index: int) -> Path:
        try:
            return self._annotation_paths[index]
        except KeyError:
            raise DatasetError(
                f"frame {index} ({self.frame_names[index]}) of sequence {self.name!r} has no annotation"
            ) from None

    def annotation(self, index: int) -> np.ndarray:
        """Ground-truth label map uint8 ``[H, W]`` of an annotated frame (0 = background, ids, ``void_label``)."""
        path = self.annotation_path(index)
        labels = self._decode_annotation(path)
        if labels.shape != self.size:
            raise DatasetError(
                f"annotation {path} is {labels.shape[1]}x{labels.shape[0]} but its image "
                f"{self.image_paths[index]} is {self.size[1]}x{self.size[0]}; annotations must match their frames "
                "(check that both come from the same resolution folder)"
            )
        return labels

    def annotations(self) -> np.ndarray:
        """Label maps of every frame, uint8 ``[N, H, W]``: the ground truth an evaluation compares with."""
        missing = [self.frame_names[i] for i in range(len(self)) if i not in self._annotation_paths]
        if missing:
            raise DatasetError(
                f"sequence {self.name!r} has no annotation for {len(missing)} frames (first: {missing[0]}); "
                "it cannot be evaluated locally (server-evaluated splits only annotate first appearances)"
            )
        return np.stack([self.annotation(i) for i in range(len(self))])

    @property
    def object_ids(self) -> tuple[int, ...]:
        return tuple(sorted(self._first_frames()))

    def first_frame_indices(self) -> dict[int, int]:
        """Object id -> index of its first annotated frame, without reading the masks there."""
        return dict(sorted(self._first_frames().items()))

    def first_appearances(self) -> list[FirstAppearance]:
        """Each object's first annotated frame and its mask there, ordered by object id."""
        out = []
        cache: dict[int, np.ndarray] = {}
        for obj, index in sorted(self._first_frames().items()):
            if index not in cache:
                cache[index] = self.annotation(index)
            mask = cache[index] == obj
            if not mask.any():
                raise DatasetError(
                    f"object {obj} of sequence {self.name!r} should first appear in "
                    f"{self.annotation_path(index)} but that annotation has no pixel with value {obj}"
                )
            out.append(FirstAppearance(obj, index, self.frame_names[index], mask))
        return out

    # --- what each benchmark defines
    def _decode_annotation(self, path: Path) -> np.ndarray:
        return _read_label_png(path)

    def _first_frames(self) -> dict[int, int]:
        """Object id -> index of its first annotated frame."""
        raise NotImplementedError


class _DavisSequence(VosSequence):
    """DAVIS semi-supervised protocol: the objects are those of the frame-0 annotation, all first seen there."""

    def _first_frames(self) -> dict[int, int]:
        labels = self.annotation(0)
        ids = [int(i) for i in np.unique(labels) if i != 0 and i != self.void_label]
        if not ids:
            raise DatasetError(
                f"the frame-0 annotation {self.annotation_path(0)} of sequence {self.name!r} has no object; "
                "semi-supervised evaluation needs every object in the first frame"
            )
        return {i: 0 for i in ids}


class Davis2016Sequence(_DavisSequence):
    """One object; annotations are 8-bit gray with object = value > 0 (the official 0/255 files)."""

    def _decode_annotation(self, path: Path) -> np.ndarray:
        return (_read_label_png(path) > 0).astype(np.uint8)


class Davis2017Sequence(_DavisSequence):
    """Indexed PNGs whose values are object ids; 255 marks void pixels that metrics ignore."""

    void_label = 255


class YouTubeVOSSequence(VosSequence):
    """Objects come from ``meta.json``; each is annotated first on its own first frame, which may come after 0."""

    def __init__(
        self,
        name: str,
        image_paths: Mapping[str, Path],
        annotation_paths: Mapping[str, Path],
        output_frames: Sequence[str],
        first_frames: Mapping[int, int],
    ) -> None:
        super().__init__(name, image_paths, annotation_paths, output_frames)
        self._first = dict(first_frames)

    def _first_frames(self) -> dict[int, int]:
        return dict(self._first)


# ----------------------------------------------------------------------------------------------------------- datasets


class VosDataset:
    """A benchmark split: an ordered list of sequence names; sequences are opened one at a time on access."""

    root: Path
    names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, name: object) -> bool:
        return name in self.names

    def __iter__(self) -> Iterator[VosSequence]:
        return (self.sequence(n) for n in self.names)

    def __getitem__(self, name: str) -> VosSequence:
        return self.sequence(name)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r}, {len(self)} sequences)"

    def sequence(self, name: str) -> VosSequence:
        if name not in self.names:
            shown = ", ".join(self.names[:10]) + (", ..." if len(self.names) > 10 else "")
            raise DatasetError(f"unknown sequence {name!r} in {self.root}; available: {shown}")
        return self._open(name)

    def _open(self, name: str) -> VosSequence:
        raise NotImplementedError

    def _select(self, listed: Sequence[str], wanted: Sequence[str] | None, source: Path) -> tuple[str, ...]:
        if wanted is None:
            return tuple(listed)
        unknown = [n for n in wanted if n not in listed]
        if unknown:
            raise DatasetError(f"sequences {unknown} are not listed in {source}; pick from the names listed there")
        return tuple(wanted)


class _Davis(VosDataset):
    year: str
    sequence_class: type[_DavisSequence]

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "val",
        resolution: str = "480p",
        sequences: Sequence[str] | None = None,
    ) -> None:
        self.root = Path(root)
        if resolution not in DAVIS_RESOLUTIONS:
            raise DatasetError(f"unknown DAVIS resolution {resolution!r}; use one of {DAVIS_RESOLUTIONS}")
        self.split, self.resolution = split, resolution
        _require_dir(self.root, "DAVIS root", "pass the folder that holds JPEGImages/, Annotations/ and ImageSets/")
        self.image_root = self.root / "JPEGImages" / resolution
        self.annotation_root = self.root / "Annotations" / resolution
        _require_dir(self.image_root, "DAVIS image folder", f"expected <root>/JPEGImages/{resolution}/<sequence>/")
        _require_dir(
            self.annotation_root, "DAVIS annotation folder", f"expected <root>/Annotations/{resolution}/<sequence>/"
        )
        listed, source = self._read_image_set()
        self.names = self._select(listed, sequences, source)

    def _image_set_candidates(self) -> list[Path]:
        return [self.root / "ImageSets" / self.year / f"{self.split}.txt"]

    def _read_image_set(self) -> tuple[list[str], Path]:
        """Sequence names from the first ImageSets file found, in file order without duplicates."""
        candidates = self._image_set_candidates()
        for path in candidates:
            if path.is_file():
                names: dict[str, None] = {}
                for line in path.read_text().splitlines():
                    if line.strip():
                        names[self._name_from_line(line)] = None
                if not names:
                    raise DatasetError(f"sequence list {path} is empty; list one sequence name per line")
                return list(names), path
        tried = " or ".join(str(p) for p in candidates)
        raise DatasetError(
            f"DAVIS {self.year} sequence list for split {self.split!r} not found: {tried}; "
            "add it (one sequence name per line) or pick another split"
        )

    @staticmethod
    def _name_from_line(line: str) -> str:
        # The original DAVIS 2016 lists hold "/JPEGImages/480p/<seq>/00000.jpg /Annotations/..." instead of names.
        first = line.split()[0]
        return first.strip("/").split("/")[-2] if "/" in first else first

    def _open(self, name: str) -> VosSequence:
        image_dir, annotation_dir = self.image_root / name, self.annotation_root / name
        _require_dir(image_dir, f"image folder of sequence {name!r}", "restore it or drop the name from ImageSets")
        _require_dir(
            annotation_dir, f"annotation folder of sequence {name!r}", "restore it or drop the name from ImageSets"
        )
        images = _list_stems(image_dir, IMAGE_SUFFIXES)
        if not images:
            raise DatasetError(f"image folder {image_dir} holds no .jpg frames")
        annotations = _list_stems(annotation_dir, (".png",))
        first = next(iter(images))
        if first not in annotations:
            raise DatasetError(
                f"sequence {name!r} has no annotation for its first frame: {annotation_dir / (first + '.png')} is "
                "missing, and semi-supervised evaluation needs it"
            )
        return self.sequence_class(name, images, annotations)


class Davis2016(_Davis):
    """DAVIS 2016: one object per sequence, 0/255 gray annotations."""

    year = "2016"
    sequence_class = Davis2016Sequence

    def _image_set_candidates(self) -> list[Path]:
        return super()._image_set_candidates() + [self.root / "ImageSets" / self.resolution / f"{self.split}.txt"]


class Davis2017(_Davis):
    """DAVIS 2017: several objects per sequence, indexed PNG annotations with 255 = void."""

    year = "2017"
    sequence_class = Davis2017Sequence


class YouTubeVOS(VosDataset):
    """YouTube-VOS 2018 or 2019 (same layout) read from ``<root>/<split>``.

    With ``all_frames=True`` frames come from ``<root>/<split>_all_frames/JPEGImages`` (every frame, for smoother
    propagation) while ``output_indices`` still point at the sparse frames of ``<root>/<split>/JPEGImages``, the
    only ones the benchmark scores.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "valid",
        year: int = 2019,
        all_frames: bool = False,
        sequences: Sequence[str] | None = None,
    ) -> None:
        self.root, self.split, self.year, self.all_frames = Path(root), split, year, all_frames
        _require_dir(self.root, "YouTube-VOS root", f"pass the folder that holds {split}/ (e.g. valid/, train/)")
        self.split_root = self.root / split
        _require_dir(self.split_root, "YouTube-VOS split folder", f"expected <root>/{split}/ with meta.json")
        self.meta_path = self.split_root / "meta.json"
        self._meta = self._read_meta()
        self.names = self._select(sorted(self._meta), sequences, self.meta_path)
        self.image_root = self.split_root / "JPEGImages"
        self.annotation_root = self.split_root / "Annotations"
        self.all_frames_root = self.root / f"{split}_all_frames" / "JPEGImages"
        _require_dir(self.image_root, "YouTube-VOS image folder", f"expected <root>/{split}/JPEGImages/<video>/")
        _require_dir(
            self.annotation_root, "YouTube-VOS annotation folder", f"expected <root>/{split}/Annotations/<video>/"
        )
        if all_frames:
            _require_dir(
                self.all_frames_root,
                "YouTube-VOS all-frames folder",
                f"download {split}_all_frames or use all_frames=False",
            )

    def _read_meta(self) -> dict[str, dict[int, list[str]]]:
        """Video -> object id -> frame names listed for that object."""
        if not self.meta_path.is_file():
            raise DatasetError(
                f"YouTube-VOS meta file {self.meta_path} is missing; it comes with the official {self.split} "
                "release and lists each video's objects"
            )
        try:
            videos = json.loads(self.meta_path.read_text())["videos"]
            meta = {
                str(vid): {int(obj): [str(f) for f in info["frames"]] for obj, info in entry["objects"].items()}
                for vid, entry in videos.items()
            }
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DatasetError(
                f"YouTube-VOS meta file {self.meta_path} is malformed ({type(exc).__name__}: {exc}); expected "
                '{"videos": {"<video>": {"objects": {"<id>": {"frames": ["00000", ...]}}}}}'
            ) from exc
        return meta

    def _open(self, name: str) -> VosSequence:
        sparse_dir = self.image_root / name
        _require_dir(sparse_dir, f"image folder of video {name!r}", f"restore it or remove {name!r} from meta.json")
        sparse = _list_stems(sparse_dir, IMAGE_SUFFIXES)
        if not sparse:
            raise DatasetError(f"image folder {sparse_dir} holds no .jpg frames")
        images = sparse
        if self.all_frames:
            all_dir = self.all_frames_root / name
            _require_dir(all_dir, f"all-frames folder of video {name!r}", "restore it or use all_frames=False")
            images = _list_stems(all_dir, IMAGE_SUFFIXES)
            absent = [f for f in sparse if f not in images]
            if absent:
                raise DatasetError(
                    f"frames {absent[:5]} of {sparse_dir} are missing from {all_dir}; the all-frames folder must "
                    "hold every frame of the sparse one"
                )
        annotation_dir = self.annotation_root / name
        _require_dir(annotation_dir, f"annotation folder of video {name!r}", "restore it from the release")
        annotations = _list_stems(annotation_dir, (".png",))
        index = {f: i for i, f in enumerate(images)}
        first_frames = {}
        for obj, frames in sorted(self._meta[name].items()):
            first_frames[obj] = self._first_frame(name, obj, frames, index, annotations, annotation_dir)
        return YouTubeVOSSequence(name, images, annotations, list(sparse), first_frames)

    def _first_frame(
        self,
        name: str,
        obj: int,
        frames: Sequence[str],
        index: Mapping[str, int],
        annotations: Mapping[str, Path],
        annotation_dir: Path,
    ) -> int:
        if not frames:
            raise DatasetError(f"object {obj} of video {name!r} lists no frames in {self.meta_path}")
        first = min(frames)  # names are zero-padded frame numbers, so string order is time order
        if first not in index:
            raise DatasetError(
                f"object {obj} of video {name!r} first appears on frame {first} (per {self.meta_path}), but there "
                f"is no {first}.jpg among the video's frames"
            )
        if first not in annotations:
            raise DatasetError(
                f"object {obj} of video {name!r} first appears on frame {first} but "
                f"{annotation_dir / (first + '.png')} is missing; the first mask of every object is required"
            )
        return index[first]


def open_dataset(kind: str, root: str | os.PathLike[str], **options: object) -> VosDataset:
    """Open a benchmark by name: ``davis2016``, ``davis2017``, ``youtubevos2018`` or ``youtubevos2019``."""
    key = kind.lower().replace("-", "").replace("_", "")
    if key == "davis2016":
        return Davis2016(root, **options)  # type: ignore[arg-type]
    if key == "davis2017":
        return Davis2017(root, **options)  # type: ignore[arg-type]
    if key in ("youtubevos2018", "youtubevos2019", "ytvos2018", "ytvos2019"):
        return YouTubeVOS(root, year=int(key[-4:]), **options)  # type: ignore[arg-type]
    raise DatasetError(f"unknown dataset {kind!r}; use davis2016, davis2017, youtubevos2018 or youtubevos2019")
