"""Video input: lazily decoded frames from video files (decord, PyAV fallback) and frame folders.

Every source yields RGB ``uint8`` arrays of shape ``[H, W, 3]`` one at a time and never holds the whole video,
so memory stays flat however long the video is.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from vos.errors import VideoError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})
FOLDER_FPS = 24.0  # DAVIS and YouTube-VOS frame folders carry no frame rate; this is DAVIS's capture rate.


@dataclass(frozen=True)
class VideoInfo:
    num_frames: int
    fps: float
    width: int
    height: int


class VideoSource(abc.ABC):
    """A video opened for sequential reading. Use as a context manager or call :meth:`close`."""

    def __init__(self, path: Path, info: VideoInfo) -> None:
        self.path = path
        self.info = info

    @abc.abstractmethod
    def __iter__(self) -> Iterator[np.ndarray]:
        """Yield every frame in order as an RGB ``uint8`` array ``[H, W, 3]``."""

    def __len__(self) -> int:
        return self.info.num_frames

    def close(self) -> None:
        """Release the decoder. Sources that hold nothing open need not override this."""

    def __enter__(self) -> VideoSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FrameFolderSource(VideoSource):
    """A folder of JPEG/PNG frames (DAVIS / YouTube-VOS layout), ordered by file name."""

    def __init__(self, path: Path) -> None:
        self.frame_paths = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.frame_paths:
            raise VideoError(f"{path} holds no .jpg/.jpeg/.png frames")
        first = read_image(self.frame_paths[0])
        height, width = first.shape[:2]
        super().__init__(path, VideoInfo(len(self.frame_paths), FOLDER_FPS, width, height))

    def __iter__(self) -> Iterator[np.ndarray]:
        for frame_path in self.frame_paths:
            frame = read_image(frame_path)
            if frame.shape[:2] != (self.info.height, self.info.width):
                raise VideoError(
                    f"{frame_path} is {frame.shape[1]}x{frame.shape[0]}, but the first frame of {self.path} is "
                    f"{self.info.width}x{self.info.height}: all frames of a folder must have one size"
                )
            yield frame


class DecordSource(VideoSource):
    """A video file decoded with decord, which indexes the file once and then decodes frame by frame."""

    def __init__(self, path: Path) -> None:
        import decord

        try:
            self._reader = decord.VideoReader(str(path), num_threads=1)
            height, width = self._reader[0].shape[:2] if len(self._reader) else (0, 0)
            self._reader.seek(0)
        except (decord.DECORDError, RuntimeError) as error:  # its C++ side also raises plain RuntimeErrors
            raise VideoError(f"decord cannot open {path}: {error}") from error
        super().__init__(path, VideoInfo(len(self._reader), float(self._reader.get_avg_fps()), width, height))

    def __iter__(self) -> Iterator[np.ndarray]:
        import decord

        self._reader.seek(0)
        for index in range(self.info.num_frames):
            try:
                yield self._reader.next().asnumpy()
            except (decord.DECORDError, RuntimeError, StopIteration) as error:
                raise VideoError(f"{self.path} is truncated or corrupt: frame {index} cannot be decoded") from error

    def close(self) -> None:
        self._reader = None


class PyAVSource(VideoSource):
    """A video file decoded with PyAV (FFmpeg): the fallback for files decord cannot open."""

    def __init__(self, path: Path) -> None:
        import av

        try:
            with av.open(str(path)) as container:
                if not container.streams.video:
                    raise VideoError(f"{path} has no video stream")
                stream = container.streams.video[0]
                fps = float(stream.average_rate or stream.guessed_rate or 0.0)
                declared = stream.frames
                # Demuxing (no decoding) is cheap and finds truncated files before any work is queued.
                num_frames = sum(1 for packet in container.demux(stream) if packet.size)
                width, height = stream.codec_context.width, stream.codec_context.height
        except av.error.FFmpegError as error:
            raise VideoError(
                f"{path} is not a readable video ({error}); give an MP4, MOV, MKV or WebM file or a folder of frames"
            ) from error
        if declared and num_frames < declared:
            raise VideoError(f"{path} is truncated: {declared} frames declared, {num_frames} present")
        super().__init__(path, VideoInfo(num_frames, fps, width, height))

    def __iter__(self) -> Iterator[np.ndarray]:
        import av

        count = 0
        try:
            with av.open(str(self.path)) as container:
                for frame in container.decode(video=0):
                    count += 1
                    yield frame.to_ndarray(format="rgb24")
        except av.error.FFmpegError as error:
            raise VideoError(f"{self.path} is corrupt: decoding failed after {count} frames ({error})") from error
        if count < self.info.num_frames:
            raise VideoError(f"{self.path} is truncated: {self.info.num_frames} frames declared, {count} decoded")


def open_video(path: str | Path) -> VideoSource:
    """Open a video file or a folder of frames, checking that it holds at least one decodable frame."""
    path = Path(path)
    if not path.exists():
        raise VideoError(f"{path} does not exist")
    if path.is_dir():
        return FrameFolderSource(path)
    if path.stat().st_size == 0:
        raise VideoError(f"{path} is empty (0 bytes)")
    source = _open_video_file(path)
    if source.info.num_frames == 0 or source.info.width == 0:
        raise VideoError(f"{path} contains no video frames")
    return source


def _open_video_file(path: Path) -> VideoSource:
    try:
        return DecordSource(path)
    except VideoError as decord_error:
        try:
            return PyAVSource(path)
        except VideoError as pyav_error:
            raise pyav_error from decord_error


def read_image(path: str | Path) -> np.ndarray:
    """Read one JPEG/PNG image as RGB uint8."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise VideoError(f"{path} is not a readable image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
