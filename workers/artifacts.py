"""Result files written while a job runs: DAVIS palette PNGs in a zip, COCO RLE JSON and an overlay MP4.

They are built in a local folder and uploaded to storage when the job succeeds; a re-run after a crash starts
them afresh from frame 0, so a result file is never a mix of two runs.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

from vos.engine import FrameResult
from vos.masks import OverlayWriter, write_palette_png
from vos.video import VideoInfo
from workers.jobs import Storage


class ArtifactWriter:
    def __init__(self, folder: str | Path, info: VideoInfo, overlay: bool = True) -> None:
        self.folder = Path(folder)
        # PNGs are already compressed: storing them keeps the zip as fast to write as the PNGs themselves.
        self._zip = zipfile.ZipFile(self.folder / "masks.zip", "w", compression=zipfile.ZIP_STORED)
        self._json = (self.folder / "masks.json").open("w")
        video = {"width": info.width, "height": info.height, "num_frames": info.num_frames, "fps": info.fps}
        # Written frame by frame so memory stays flat on long videos; the closing brackets come in close().
        self._json.write(json.dumps({"video": video})[:-1] + ', "frames": [\n')
        self._first = True
        self._overlay = OverlayWriter(self.folder / "overlay.mp4", info.fps, info.width, info.height) if overlay else None

    def write(self, result: FrameResult, record_json: str) -> None:
        labels = result.label_map()
        png = io.BytesIO()
        write_palette_png(png, labels)
        self._zip.writestr(f"{result.index:05d}.png", png.getvalue())
        self._json.write(("" if self._first else ",\n") + record_json)
        self._first = False
        if self._overlay is not None and result.image is not None:
            self._overlay.write(result.image, labels)

    def close(self) -> None:
        self._zip.close()
        self._json.write("\n]}\n")
        self._json.close()
        if self._overlay is not None:
            self._overlay.close()

    def upload(self, storage: Storage, job_id: str) -> None:
        for name in ("masks.zip", "masks.json", "overlay.mp4"):
            if (self.folder / name).exists():
                storage.put(str(self.folder / name), storage.path(job_id, "results", name))

    def __enter__(self) -> ArtifactWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
