"""Result files of a job, written by :class:`vos.outputs.ResultWriter` (the one results format) in a background thread.

They are built in a local folder and uploaded to storage when the job succeeds; a re-run after a crash starts
them afresh from frame 0, so a result file is never a mix of two runs. PNG and H.264 encoding release the GIL,
so the tracking loop only hands frames over and the engine never waits on them.
"""

from __future__ import annotations

import queue
import threading
import zipfile
from pathlib import Path

from vos.engine import FrameResult
from vos.outputs import MASKS_DIR, OVERLAY_FILE, RLE_FILE, ResultWriter
from vos.video import VideoInfo
from workers.core.storage import Storage

ZIP_FILE = "masks.zip"
_PENDING_FRAMES = 8  # frames handed over but not yet written; bounds memory if encoding falls behind


class BackgroundResults:
    def __init__(self, folder: str | Path, info: VideoInfo, overlay: bool = True) -> None:
        self.folder = Path(folder)
        self._writer = ResultWriter(self.folder, info, overlay=overlay)
        self._pending: queue.Queue[FrameResult | None] = queue.Queue(maxsize=_PENDING_FRAMES)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._drain, name="result-writer", daemon=True)
        self._thread.start()

    def write(self, result: FrameResult) -> None:
        """Queue one frame's results; raises the writer thread's error if it failed on an earlier frame."""
        if self._error is not None:
            raise self._error
        self._pending.put(result)

    def _drain(self) -> None:
        while (result := self._pending.get()) is not None:
            if self._error is None:
                try:
                    self._writer.write(result)
                except BaseException as error:  # re-raised in the tracking thread by write() or close()
                    self._error = error

    def close(self) -> None:
        self._pending.put(None)
        self._thread.join()
        self._writer.close()
        if self._error is not None:
            raise self._error

    def upload(self, storage: Storage, job_id: str) -> None:
        """Zip the palette PNGs (stored: they are compressed already) and copy every result file to storage."""
        with zipfile.ZipFile(self.folder / ZIP_FILE, "w", compression=zipfile.ZIP_STORED) as archive:
            for png in sorted((self.folder / MASKS_DIR).glob("*.png")):
                archive.write(png, png.name)
        for name in (ZIP_FILE, RLE_FILE, OVERLAY_FILE):
            if (self.folder / name).exists():
                storage.put(str(self.folder / name), storage.path(job_id, "results", name))

    def __enter__(self) -> BackgroundResults:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
