"""Session fixtures for the SEEM model tests: the official tiny fixture loaded once."""

from pathlib import Path

import pytest
import torch

from vos.seem.config import SeemConfig
from vos.seem.model import ImageFeatures, SeemModel, load_seem


@pytest.fixture(scope="session", autouse=True)
def _seem_single_thread() -> None:
    """The SEEM tests use tiny tensors: intra-op threads only add overhead, and on shared CI cores they make
    the tests several times slower."""
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def seem_tiny_io(seem_fixtures: Path) -> dict[str, torch.Tensor]:
    """The 119 recorded tensors of ``tiny_io.pt``."""
    return torch.load(seem_fixtures / "tiny_io.pt", map_location="cpu")


@pytest.fixture(scope="session")
def seem_tiny_model(seem_fixtures: Path, seem_tiny_io: dict[str, torch.Tensor]) -> SeemModel:
    """The tiny SEEM v1 model, weights loaded strictly, class embeddings injected from the fixture."""
    config = SeemConfig.from_official_yaml(seem_fixtures / "tiny_config.yaml")
    model = load_seem(seem_fixtures / "tiny_weights.pt", config, vocabulary=False)
    model.set_class_embeddings(seem_tiny_io["text/default_text_embeddings"])
    return model


@pytest.fixture(scope="session")
def seem_tiny_features(seem_tiny_io: dict[str, torch.Tensor]) -> ImageFeatures:
    """Image features of ``inputs/image`` made from the *recorded* pixel-decoder outputs (so decoder tests do
    not depend on the backbone / pixel decoder)."""
    io = seem_tiny_io
    return ImageFeatures(
        mask_features=io["features/pixel_decoder/mask_features"],
        multi_scale=tuple(io[f"features/pixel_decoder/multi_scale_features/{i}"] for i in range(3)),
        image_size=(256, 320), padded_size=(256, 320), original_size=(256, 320),
    )
