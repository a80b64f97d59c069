"""Class logits are optional: without the class vocabulary the prompt and text paths still run and give the same
masks; the spatial result carries the selected and candidate embeddings."""

from pathlib import Path

import pytest
import torch

from vos.seem.config import SeemConfig
from vos.seem.model import ImageFeatures, SeemModel, load_seem

ROWS = torch.tensor([10, 13, 18])


@pytest.fixture(scope="module")
def no_vocabulary_model(seem_fixtures: Path) -> SeemModel:
    config = SeemConfig.from_official_yaml(seem_fixtures / "tiny_config.yaml")
    return load_seem(seem_fixtures / "tiny_weights.pt", config, vocabulary=False)


def test_spatial_result_without_class_logits(seem_tiny_model: SeemModel, no_vocabulary_model: SeemModel,
                                             seem_tiny_features: ImageFeatures, seem_tiny_io: dict) -> None:
    f, stroke = seem_tiny_features, seem_tiny_io["inputs/stroke_mask"]
    with torch.no_grad():
        full = seem_tiny_model.decode_spatial(f, stroke, query_indices=ROWS)
        bare = no_vocabulary_model.decode_spatial(f, stroke, query_indices=ROWS, with_class_logits=False)
    assert full.class_logits is not None and bare.class_logits is None
    torch.testing.assert_close(bare.mask_logits, full.mask_logits)
    rows = torch.arange(bare.query_index.shape[0])
    assert torch.equal(bare.mask_embedding, bare.candidate_mask_embeddings[rows, bare.query_index])
    assert bare.candidate_embeddings.shape == (1, 3, seem_tiny_model.config.decoder.dim_proj)
    # mask logits are the selected query's mask embedding applied to the mask features
    logits = torch.einsum("nc,chw->nhw", bare.mask_embedding, f.mask_features[0])
    torch.testing.assert_close(logits, bare.mask_logits, atol=1e-4, rtol=1e-4)
    with pytest.raises(RuntimeError):  # asking for class logits without the vocabulary fails loudly
        no_vocabulary_model.decode_spatial(f, stroke, query_indices=ROWS)


def test_grounding_without_class_logits(seem_tiny_model: SeemModel, no_vocabulary_model: SeemModel,
                                        seem_tiny_features: ImageFeatures) -> None:
    with torch.no_grad():
        full = seem_tiny_model.ground_text(seem_tiny_features, ["a dog", "the grass"])
        bare = no_vocabulary_model.ground_text(seem_tiny_features, ["a dog", "the grass"], with_class_logits=False)
    assert full.class_logits is not None and bare.class_logits is None
    torch.testing.assert_close(bare.mask_logits, full.mask_logits)
    assert torch.equal(bare.query_index, full.query_index)
