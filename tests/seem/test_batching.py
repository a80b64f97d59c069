"""N objects decoded in one call on shared image features equal N separate single-object calls (1e-4)."""

import pytest
import torch

from vos.seem.model import ImageFeatures, SeemModel, SpatialResult

TOL = {"atol": 1e-4, "rtol": 1e-4}


def _objects(io: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Three objects of different kinds: a scribble (479 px), a large ellipse (> 512 px, so its points are
    sub-sampled at random) and a small box; the ellipse also gets a negative click."""
    stroke, ellipse = io["inputs/stroke_mask"], io["inputs/gt_mask"]
    box = torch.zeros_like(stroke)
    box[40:52, 200:230] = True
    pos = torch.stack([stroke, ellipse, box])
    neg = torch.zeros_like(pos)
    neg[1, 10:13, 10:13] = True
    assert int(ellipse.sum()) > 512
    return pos, neg


def _assert_same(batched: SpatialResult, singles: list[SpatialResult]) -> None:
    for i, single in enumerate(singles):
        torch.testing.assert_close(batched.mask_logits[i : i + 1], single.mask_logits, **TOL)
        torch.testing.assert_close(batched.candidate_mask_logits[i : i + 1], single.candidate_mask_logits, **TOL)
        torch.testing.assert_close(batched.scores[i : i + 1], single.scores, **TOL)
        torch.testing.assert_close(batched.class_logits[i : i + 1], single.class_logits, **TOL)
        assert torch.equal(batched.query_index[i : i + 1], single.query_index)


@pytest.fixture(scope="module")
def first_round(seem_tiny_model: SeemModel, seem_tiny_features: ImageFeatures, seem_tiny_io: dict) -> SpatialResult:
    pos, neg = _objects(seem_tiny_io)
    with torch.no_grad():
        return seem_tiny_model.decode_spatial(seem_tiny_features, pos, neg, generator=torch.Generator().manual_seed(0))


def test_batched_spatial_equals_separate_calls(seem_tiny_model: SeemModel, seem_tiny_features: ImageFeatures,
                                               seem_tiny_io: dict, first_round: SpatialResult) -> None:
    pos, neg = _objects(seem_tiny_io)
    with torch.no_grad():
        singles = [seem_tiny_model.decode_spatial(seem_tiny_features, pos[i : i + 1], neg[i : i + 1],
                                                  generator=torch.Generator().manual_seed(0)) for i in range(3)]
    _assert_same(first_round, singles)


def test_batched_memory_prompt_equals_separate_calls(seem_tiny_model: SeemModel, seem_tiny_features: ImageFeatures,
                                                     seem_tiny_io: dict, first_round: SpatialResult) -> None:
    """Second round with each object's previous mask as memory prompt and per-object spatial-query rows."""
    pos, neg = _objects(seem_tiny_io)
    prev = first_round.mask_logits
    rows = torch.tensor([[1, 5, 9], [0, 0, 20], [7, 3, 14]])
    with torch.no_grad():
        batched = seem_tiny_model.decode_spatial(seem_tiny_features, pos, neg, prev_mask=prev, query_indices=rows,
                                                 generator=torch.Generator().manual_seed(1))
        singles = [seem_tiny_model.decode_spatial(seem_tiny_features, pos[i : i + 1], neg[i : i + 1],
                                                  prev_mask=prev[i : i + 1], query_indices=rows[i],
                                                  generator=torch.Generator().manual_seed(1)) for i in range(3)]
    _assert_same(batched, singles)
    assert torch.equal(batched.query_indices, rows)


def test_batched_reference_tokens_equal_separate_calls(seem_tiny_model: SeemModel, seem_tiny_features: ImageFeatures,
                                                       seem_tiny_io: dict) -> None:
    """Reference tokens of several objects (different token counts -> padding) decoded together or one by one."""
    pos, neg = _objects(seem_tiny_io)
    model, f = seem_tiny_model, seem_tiny_features
    with torch.no_grad():
        reference = model.encode_reference(f, pos, neg, generator=torch.Generator().manual_seed(2))
        assert bool(reference.level_padding[0].any())  # the objects have different point counts
        batched = model.decode_prompt(f, reference, query_indices=torch.tensor([4, 4, 17]))
        singles = [model.decode_prompt(f, reference.select([i]), query_indices=torch.tensor([4, 4, 17]))
                   for i in range(3)]
        again = [model.decode_prompt(f, model.encode_reference(f, pos[i : i + 1], neg[i : i + 1],
                                                               generator=torch.Generator().manual_seed(2)),
                                     query_indices=torch.tensor([4, 4, 17])) for i in range(3)]
    _assert_same(batched, singles)
    _assert_same(batched, again)


def test_generator_makes_calls_reproducible(seem_tiny_model: SeemModel, seem_tiny_features: ImageFeatures,
                                            seem_tiny_io: dict, first_round: SpatialResult) -> None:
    pos, neg = _objects(seem_tiny_io)
    with torch.no_grad():
        again = seem_tiny_model.decode_spatial(seem_tiny_features, pos, neg, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again.query_indices, first_round.query_indices)
    torch.testing.assert_close(again.mask_logits, first_round.mask_logits, atol=0, rtol=0)
