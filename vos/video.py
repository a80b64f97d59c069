"""Video input: lazily decoded frames from video files (decord, PyAV fallback) and frame folders.

Every source yields RGB ``uint8`` arrays of shape ``[H, W, 3]`` one at a time, in order or by index
(:meth:`VideoSource.frame`: decord's random access, PyAV seeking, or one file of a folder), and never holds the
whole video, so memory stays flat however long the video is. :class:`ByteLRUCache` keeps recently used frames and
features within a byte budget.
"""

from __future__ import annotations

import abc
import bisect
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

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

    @abc.abstractmethod
    def frame(self, index: int) -> np.ndarray:
        """Frame ``index`` (0-based) as an RGB ``uint8`` array ``[H, W, 3]``, in any order."""

    def _check_index(self, index: int) -> None:
        if not 0 <= index < self.info.num_frames:
            raise VideoError(f"frame {index} does not exist: {self.path} has {self.info.num_frames} frames")

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
        for index in range(self.info.num_frames):
            yield self.frame(index)

    def frame(self, index: int) -> np.ndarray:
        self._check_index(index)
        frame_path = self.frame_paths[index]
        frame = read_image(frame_path)
        if frame.shape[:2] != (self.info.height, self.info.width):
            raise VideoError(
                f"{frame_path} is {frame.shape[1]}x{frame.shape[0]}, but the first frame of {self.path} is "
                f"{self.info.width}x{self.info.height}: all frames of a folder must have one size"
            )
        return frame


class ArrayVideo(VideoSource):
    """Frames already in memory (synthetic clips, tests, a few frames): RGB uint8 arrays of one size."""

    def __init__(self, frames: Sequence[np.ndarray], fps: float = FOLDER_FPS, name: str = "<frames>") -> None:
        if not len(frames):
            raise VideoError("a video needs at least one frame")
        height, width = frames[0].shape[:2]
        if any(frame.shape != frames[0].shape or frame.dtype != np.uint8 for frame in frames):
            raise VideoError("all frames must be RGB uint8 arrays of one size")
        super().__init__(Path(name), VideoInfo(len(frames), fps, width, height))
        self.frames = frames

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter(self.frames)

    def frame(self, index: int) -> np.ndarray:
        self._check_index(index)
        return self.frames[index]


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

    def frame(self, index: int) -> np.ndarray:
        import decord

        self._check_index(index)
        try:
            return self._reader[index].asnumpy()
        except (decord.DECORDError, RuntimeError) as error:
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
                # Demuxing (no decoding) is cheap, finds truncated files before any work is queued, and gives each
                # frame's presentation time for seeking.
                times = sorted(p.pts for p in container.demux(stream) if p.size and p.pts is not None)
                num_frames = len(times)
                width, height = stream.codec_context.width, stream.codec_context.height
        except av.error.FFmpegError as error:
            raise VideoError(
                f"{path} is not a readable video ({error}); give an MP4, MOV, MKV or WebM file or a folder of frames"
            ) from error
        if declared and num_frames < declared:
            raise VideoError(f"{path} is truncated: {declared} frames declared, {num_frames} present")
        super().__init__(path, VideoInfo(num_frames, fps, width, height))
        self._times = times
        self._container: Any = None
        self._decoded: Iterator[Any] | None = None  # frames after the last one returned by frame()
        self._next_index = -1  # the index the next frame of ``_decoded`` has

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

    def frame(self, index: int) -> np.ndarray:
        """Decodes on from the last frame read when ``index`` follows it, else seeks to the keyframe before it."""
        import av

        self._check_index(index)
        try:
            if self._decoded is None or index != self._next_index:
                self._seek(index)
            assert self._decoded is not None
            for decoded in self._decoded:
                position = bisect.bisect_left(self._times, decoded.pts) if decoded.pts is not None else -1
                if position >= index:
                    self._next_index = position + 1
                    return decoded.to_ndarray(format="rgb24")
        except av.error.FFmpegError as error:
            raise VideoError(f"{self.path} is corrupt: frame {index} cannot be decoded ({error})") from error
        raise VideoError(f"{self.path} is truncated: frame {index} cannot be decoded")

    def _seek(self, index: int) -> None:
        import av

        if self._container is None:
            self._container = av.open(str(self.path))
        stream = self._container.streams.video[0]
        self._container.seek(self._times[index], stream=stream, backward=True, any_frame=False)
        self._decoded = self._container.decode(stream)

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
        self._container, self._decoded = None, None


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


T = TypeVar("T")


class ByteLRUCache:
    """Least-recently-used values (frames, features) within ``max_bytes``; a value's size is ``nbytes``.

    A value larger than the whole budget is returned but not kept.
    """

    def __init__(self, max_bytes: int, size_of: Callable[[Any], int] | None = None) -> None:
        self.max_bytes = max_bytes
        self._size_of = size_of or nbytes
        self._entries: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self.bytes = 0

    def get_or_compute(self, key: Hashable, compute: Callable[[], T]) -> T:
        if key in self._entries:
            self._entries.move_to_end(key)
            return self._entries[key][0]
        value = compute()
        size = self._size_of(value)
        if size <= self.max_bytes:
            self._entries[key] = (value, size)
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, (_, dropped) = self._entries.popitem(last=False)
                self.bytes -= dropped
        return value

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    def clear(self) -> None:
        self._entries.clear()
        self.bytes = 0


def nbytes(value: Any) -> int:
    """Bytes held by arrays and tensors in ``value`` (nested in tuples, lists, dicts and dataclasses)."""
    if hasattr(value, "nbytes"):
        return int(value.nbytes)
    if hasattr(value, "element_size") and hasattr(value, "numel"):  # a torch tensor
        return int(value.element_size() * value.numel())
    if isinstance(value, dict):
        return sum(nbytes(v) for v in value.values())
    if isinstance(value, (tuple, list)):
        return sum(nbytes(v) for v in value)
    if hasattr(value, "__dataclass_fields__"):
        return sum(nbytes(getattr(value, name)) for name in value.__dataclass_fields__)
    return 0


def read_image(path: str | Path) -> np.ndarray:
    """Read one JPEG/PNG image as RGB uint8."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise VideoError(f"{path} is not a readable image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
