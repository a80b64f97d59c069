"""Result files written while a job runs: DAVIS palette PNGs in a zip, COCO RLE JSON and an overlay MP4.

They are built in a local folder and uploaded to storage when the job succeeds; a re-run after a crash starts
them afresh from frame 0, so a result file is never a mix of two runs. PNG and H.264 encoding run in a background
thread (both release the GIL), so the tracking loop only hands frames over and the engine never waits on them.
"""

from __future__ import annotations

import io
import json
import queue
import threading
import zipfile
from pathlib import Path
from typing import Optional

from vos.engine import FrameResult
from vos.masks import OverlayWriter, write_palette_png
from vos.video import VideoInfo
from workers.jobs import Storage


_PENDING_FRAMES = 8  # frames handed over but not yet written; bounds memory if encoding falls behind


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
        self._pending: queue.Queue[Optional[tuple[FrameResult, str]]] = queue.Queue(maxsize=_PENDING_FRAMES)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._drain, name="artifact-writer", daemon=True)
        self._thread.start()

    def write(self, result: FrameResult, record_json: str) -> None:
        """Queue one frame's results; raises the writer thread's error if it failed on an earlier frame."""
        if self._error is not None:
            raise self._error
        self._pending.put((result, record_json))

    def _drain(self) -> None:
        while (item := self._pending.get()) is not None:
            if self._error is None:
                try:
                    self._write_now(*item)
                except BaseException as error:  # re-raised in the tracking thread by write() or close()
                    self._error = error

    def _write_now(self, result: FrameResult, record_json: str) -> None:
        labels = result.label_map()
        png = io.BytesIO()
        write_palette_png(png, labels)
        self._zip.writestr(f"{result.index:05d}.png", png.getvalue())
        self._json.write(("" if self._first else ",\n") + record_json)
        self._first = False
        if self._overlay is not None and result.image is not None:
            self._overlay.write(result.image, labels)

    def close(self) -> None:
        self._pending.put(None)
        self._thread.join()
        self._zip.close()
        self._json.write("\n]}\n")
        self._json.close()
        if self._overlay is not None:
            self._overlay.close()
        if self._error is not None:
            raise self._error

    def upload(self, storage: Storage, job_id: str) -> None:
        for name in ("masks.zip", "masks.json", "overlay.mp4"):
            if (self.folder / name).exists():
                storage.put(str(self.folder / name), storage.path(job_id, "results", name))

    def __enter__(self) -> ArtifactWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
