"""Shared test fixtures: paths to the read-only data in ``../shared`` beside the checkout."""

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT.parent / "shared"


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
