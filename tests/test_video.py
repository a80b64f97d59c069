"""Video input on real files: shared MP4s, DAVIS frame folders, and every kind of unreadable input."""

import inspect
from pathlib import Path

import numpy as np
import psutil
import pytest

from vos.errors import VideoError
from vos.video import ArrayVideo, ByteLRUCache, DecordSource, FrameFolderSource, PyAVSource, open_video

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "samples" / "blackswan.mp4"


@pytest.fixture(scope="module")
def dog_mp4(shared_dir: Path) -> Path:
    return shared_dir / "data" / "videos" / "01_dog.mp4"


def test_shared_mp4_metadata_and_frames(dog_mp4: Path) -> None:
    with open_video(dog_mp4) as video:
        assert isinstance(video, DecordSource)
        assert (video.info.num_frames, video.info.width, video.info.height) == (289, 1280, 720)
        assert video.info.fps == pytest.approx(29.97, abs=0.01)
        frames = iter(video)
        assert inspect.isgenerator(frames)
        first = next(frames)
        assert first.shape == (720, 1280, 3) and first.dtype == np.uint8
        assert first.std() > 10  # a real picture, not a blank frame


def test_decoding_whole_video_keeps_memory_flat(dog_mp4: Path) -> None:
    process = psutil.Process()
    with open_video(dog_mp4) as video:
        frames = iter(video)
        for _ in range(20):
            next(frames)
        rss_after_20 = process.memory_info().rss
        count = 20 + sum(1 for _ in frames)
    assert count == 289
    # Holding all 289 frames would take 289 * 2.7 MB = 800 MB; lazy decoding stays far below that.
    assert process.memory_info().rss - rss_after_20 < 150 * 2**20


def test_pyav_fallback_decodes_same_frames(shared_dir: Path) -> None:
    path = shared_dir / "data" / "videos" / "04_coffee.mp4"
    pyav = PyAVSource(path)
    with open_video(path) as decord_video:
        assert pyav.info.num_frames == decord_video.info.num_frames
        assert (pyav.info.width, pyav.info.height) == (decord_video.info.width, decord_video.info.height)
        a, b = next(iter(pyav)), next(iter(decord_video))
    assert a.shape == b.shape
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 2.0  # same decoder underneath, maybe other scaler


def test_davis_frame_folder(davis16_root: Path) -> None:
    with open_video(davis16_root / "JPEGImages" / "480p" / "blackswan") as video:
        assert isinstance(video, FrameFolderSource)
        assert (video.info.num_frames, video.info.width, video.info.height) == (50, 854, 480)
        frames = list(video)
    assert len(frames) == 50 and frames[0].shape == (480, 854, 3)


def test_shipped_sample_decodes() -> None:
    with open_video(SAMPLE) as video:
        assert (video.info.num_frames, video.info.width, video.info.height) == (50, 854, 480)
        assert sum(1 for _ in video) == 50


def test_missing_file() -> None:
    with pytest.raises(VideoError, match="does not exist"):
        open_video("/nonexistent/video.mp4")


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(VideoError, match="empty"):
        open_video(tmp_path / "empty.mp4")


def test_not_a_video(tmp_path: Path) -> None:
    (tmp_path / "notes.mp4").write_text("this is not a video\n" * 100)
    with pytest.raises(VideoError, match="not a readable video"):
        open_video(tmp_path / "notes.mp4")


def test_truncated_video(tmp_path: Path, dog_mp4: Path) -> None:
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(dog_mp4.read_bytes()[:300_000])
    with pytest.raises(VideoError, match="truncated"):
        open_video(truncated)


def test_folder_without_frames(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("no frames here")
    with pytest.raises(VideoError, match="no .jpg"):
        open_video(tmp_path)


def test_folder_with_mixed_sizes(tmp_path: Path) -> None:
    import cv2

    cv2.imwrite(str(tmp_path / "00000.jpg"), np.zeros((48, 64, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "00001.jpg"), np.zeros((100, 100, 3), np.uint8))
    with open_video(tmp_path) as video, pytest.raises(VideoError, match="one size"):
        list(video)


def test_unreadable_image_in_folder(tmp_path: Path) -> None:
    (tmp_path / "00000.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(VideoError, match="not a readable image"):
        open_video(tmp_path)


# ------------------------------------------------------------------------------------------------ random access

ORDER = [37, 3, 4, 49, 0, 20, 21, 22, 48]  # backward, forward and repeated jumps


@pytest.fixture(scope="module")
def sample_frames() -> list[np.ndarray]:
    with open_video(SAMPLE) as video:
        return list(video)


def _frame_folder(folder: Path, frames: list[np.ndarray]) -> Path:
    import cv2

    folder.mkdir()
    for index, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"{index:05d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))  # lossless
    return folder


@pytest.mark.parametrize("source", ["decord", "pyav", "folder", "arrays"])
def test_random_access_returns_the_frames_of_sequential_decoding(source: str, sample_frames: list[np.ndarray],
                                                                 tmp_path: Path) -> None:
    opened = {
        "decord": lambda: DecordSource(SAMPLE),
        "pyav": lambda: PyAVSource(SAMPLE),
        "folder": lambda: open_video(_frame_folder(tmp_path / "frames", sample_frames)),
        "arrays": lambda: ArrayVideo(sample_frames),
    }[source]
    with opened() as video:
        for index in ORDER:
            frame = video.frame(index)
            # decord and PyAV may convert colours with other scalers (see the fallback test above)
            assert np.abs(frame.astype(int) - sample_frames[index].astype(int)).mean() < 2.0, (source, index)
        with pytest.raises(VideoError, match="frame 50 does not exist"):
            video.frame(50)


def test_pyav_seeking_lands_on_the_exact_frame() -> None:
    pyav = PyAVSource(SAMPLE)
    sequential = list(pyav)
    for index in ORDER:
        assert np.array_equal(pyav.frame(index), sequential[index]), index
    pyav.close()


def test_byte_lru_cache_keeps_recent_values_within_its_budget() -> None:
    cache = ByteLRUCache(max_bytes=3000)
    computed = []

    def make(key: int) -> np.ndarray:
        computed.append(key)
        return np.zeros(1000, np.uint8)

    for key in (1, 2, 3, 1, 4):  # 1 is used again before 4 arrives, so 2 is the least recently used
        cache.get_or_compute(key, lambda key=key: make(key))
    assert computed == [1, 2, 3, 4] and len(cache) == 3 and cache.bytes == 3000
    cache.get_or_compute(2, lambda: make(2))
    assert computed[-1] == 2
    cache.get_or_compute(9, lambda: np.zeros(5000, np.uint8))  # larger than the budget: returned, not kept
    assert len(cache) == 3 and cache.bytes == 3000
