"""Shared test fixtures: the shipped sample clip, small synthetic clips the tests make, and the read-only data in
``../shared`` beside the checkout (tests that need ``../shared`` skip with a reason when it is absent)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT.parent / "shared"
SAMPLE_VIDEO = REPO_ROOT / "samples" / "blackswan.mp4"  # 50 real DAVIS frames, shipped with the package
SAMPLE_MASK = REPO_ROOT / "samples" / "blackswan-mask.png"  # the first frame's ground truth


@dataclass(frozen=True)
class SyntheticClip:
    """A textured disc gliding over a textured background, as an MP4 and as a JPEG frame folder."""

    mp4: Path
    frames_dir: Path
    masks: list[np.ndarray]  # bool [H, W] ground truth of the disc on every frame

    @property
    def num_frames(self) -> int:
        return len(self.masks)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return self.masks[0].shape[1], self.masks[0].shape[0]


def make_synthetic_clip(folder: Path, num_frames: int = 24, width: int = 160, height: int = 96,
                        radius: int = 18, seed: int = 0) -> SyntheticClip:
    """Write a clip whose object is easy to see but not trivial: both the disc and the background are textured, in
    different colours, and the disc moves 2 px right and 1 px down per frame."""
    rng = np.random.default_rng(seed)
    background = (rng.integers(0, 60, (height, width, 3)) + np.array([40, 110, 60])).astype(np.uint8)
    disc_texture = (rng.integers(0, 50, (height, width, 3)) + np.array([190, 60, 40])).astype(np.uint8)
    yy, xx = np.mgrid[:height, :width]
    folder.mkdir(parents=True, exist_ok=True)
    frames_dir = folder / "frames"
    frames_dir.mkdir(exist_ok=True)
    masks, frames = [], []
    for index in range(num_frames):
        cx, cy = width // 4 + 2 * index, height // 3 + index
        mask = (xx - cx) ** 2 + (yy - cy) ** 2 <= radius**2
        frame = np.where(mask[..., None], disc_texture, background)
        Image.fromarray(frame).save(frames_dir / f"{index:05d}.jpg", quality=95)
        masks.append(mask)
        frames.append(frame)
    mp4 = folder / "clip.mp4"
    with av.open(str(mp4), "w") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "12"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return SyntheticClip(mp4, frames_dir, masks)


@pytest.fixture(scope="session")
def synthetic_clip(tmp_path_factory: pytest.TempPathFactory) -> SyntheticClip:
    """A 24-frame 160x96 synthetic clip with ground truth; needs nothing outside the repository."""
    return make_synthetic_clip(tmp_path_factory.mktemp("synthetic-clip"))


@pytest.fixture(scope="session")
def sample_video() -> Path:
    """The shipped 50-frame 854x480 sample clip of real DAVIS frames (blackswan)."""
    return SAMPLE_VIDEO


@pytest.fixture(scope="session")
def sample_mask_path() -> Path:
    """The sample clip's first-frame ground truth as shipped: an 8-bit 0/255 PNG, like a DAVIS 2016 annotation."""
    return SAMPLE_MASK


@pytest.fixture(scope="session")
def sample_mask(sample_mask_path: Path) -> np.ndarray:
    """The sample clip's first-frame ground truth, bool [480, 854]."""
    return np.asarray(Image.open(sample_mask_path)) > 0


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The ``../shared`` folder; tests that need it are skipped when it is absent."""
    if not SHARED_DIR.is_dir():
        pytest.skip(f"shared data folder {SHARED_DIR} is absent")
    return SHARED_DIR


@pytest.fixture(scope="session")
def davis16_root(shared_dir: Path) -> Path:
    root = shared_dir / "data" / "davis16"
    if not (root / "JPEGImages" / "480p").is_dir():
        pytest.skip(f"DAVIS 2016 sequences not found under {root}")
    return root


@pytest.fixture(scope="session")
def seem_fixtures(shared_dir: Path) -> Path:
    root = shared_dir / "fixtures" / "seem"
    if not (root / "tiny_weights.pt").is_file():
        pytest.skip(f"SEEM fixtures not found under {root}")
    return root
