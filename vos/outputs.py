"""Write tracking results to a folder: palette PNGs, COCO RLE JSON lines and an overlay MP4."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vos.engine import FrameResult
from vos.masks import OverlayWriter, object_record, write_palette_png
from vos.video import VideoInfo

MASKS_DIR = "masks"
RLE_FILE = "masks.jsonl"
OVERLAY_FILE = "overlay.mp4"


def frame_record(result: FrameResult) -> dict[str, Any]:
    """One frame as JSON: its index and every object's RLE mask, score, area and bbox."""
    return {
        "frame": result.index,
        "objects": [object_record(i, r.mask, r.score) for i, r in sorted(result.objects.items())],
    }


class ResultWriter:
    """Writes each :class:`FrameResult` as it arrives, one call per frame (a session writes the latest revision of
    each frame, see :meth:`vos.session.Session.write`); call :meth:`close` (or use ``with``) at the end."""

    def __init__(self, out_dir: str | Path, info: VideoInfo, *, pngs: bool = True, rle: bool = True,
                 overlay: bool = True) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._png_dir = self.out_dir / MASKS_DIR if pngs else None
        if self._png_dir is not None:
            self._png_dir.mkdir(exist_ok=True)
        self._rle = (self.out_dir / RLE_FILE).open("w") if rle else None
        self._overlay = (OverlayWriter(self.out_dir / OVERLAY_FILE, info.fps, info.width, info.height)
                         if overlay else None)

    def write(self, result: FrameResult) -> None:
        labels = result.label_map()
        if self._png_dir is not None:
            write_palette_png(self._png_dir / f"{result.index:05d}.png", labels)
        if self._rle is not None:
            self._rle.write(json.dumps(frame_record(result)) + "\n")
        if self._overlay is not None and result.image is not None:
            self._overlay.write(result.image, labels)

    def close(self) -> None:
        if self._rle is not None:
            self._rle.close()
        if self._overlay is not None:
            self._overlay.close()

    def __enter__(self) -> ResultWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
