"""Referring-image prompts, stage 2 (target pass), which the official v1 code cannot run (§7.2).

Our definition: reference tokens carry each token's object index, and decoding them on an image is exactly the
spatial-prompt decoder with those tokens. So a reference computed on an image with a mask must select the same
object (same query, same mask) as a spatial prompt with that mask on that image.
"""

import pytest
import torch

from vos.errors import PromptError
from vos.seem.decoder import build_self_attention_mask
from vos.seem.model import ImageFeatures, SeemModel

ROWS = torch.tensor([10, 13, 18])  # the stroke path's recorded spatial-query rows


def test_reference_on_same_image_selects_same_object(seem_tiny_model: SeemModel, seem_tiny_features: ImageFeatures,
                                                     seem_tiny_io: dict) -> None:
    model, f, io = seem_tiny_model, seem_tiny_features, seem_tiny_io
    masks = torch.stack([io["inputs/stroke_mask"], io["inputs/gt_mask"]])
    with torch.no_grad():
        spatial = model.decode_spatial(f, masks, query_indices=ROWS, generator=torch.Generator().manual_seed(3))
        reference = model.encode_reference(f, masks, generator=torch.Generator().manual_seed(3))
        referred = model.decode_prompt(f, reference, query_indices=ROWS)
    assert torch.equal(referred.query_index, spatial.query_index)
    torch.testing.assert_close(referred.mask_logits, spatial.mask_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(referred.scores, spatial.scores, atol=1e-5, rtol=1e-5)
    # and it reproduces the official stroke path (single object, recorded rows)
    with torch.no_grad():
        stroke_ref = model.decode_prompt(f, model.encode_reference(f, io["inputs/stroke_mask"]), query_indices=ROWS)
    torch.testing.assert_close(stroke_ref.prev_mask, io["paths/stroke/outputs/prev_mask"], atol=1e-4, rtol=1e-4)


def test_reference_from_another_image(seem_tiny_model: SeemModel, seem_tiny_features: ImageFeatures,
                                      seem_tiny_io: dict) -> None:
    """Stage 1 on the (padded) reference image, stage 2 on the target image, with and without memory."""
    model, io = seem_tiny_model, seem_tiny_io
    with torch.no_grad():
        ref_features = model.encode_image(io["inputs/ref_image"], short_side=None)
        tokens = model.encode_reference(ref_features, io["inputs/ref_stroke_mask"])
        first = model.decode_prompt(seem_tiny_features, tokens, query_indices=ROWS)
        second = model.decode_prompt(seem_tiny_features, tokens, prev_mask=first.mask_logits, query_indices=ROWS)
    assert first.mask_logits.shape == (1, 64, 80) and first.class_logits.shape == (1, 134)
    assert torch.isfinite(first.mask_logits).all() and torch.isfinite(second.mask_logits).all()
    # the selection uses the reference's pooled vector: argmax_j  mask_emb_j . pooled_ref
    with torch.no_grad():
        out = model.predictor(seem_tiny_features.multi_scale, seem_tiny_features.mask_features, prompt=tokens,
                              query_indices=ROWS, include_object_queries=False)
    scores = torch.einsum("bjc,bc->bj", out.final.spatial_mask_embeddings, tokens.pooled_pos[:, 0])
    assert torch.equal(scores.argmax(1), first.query_index)


def test_combined_reference_and_click_tokens(seem_tiny_model: SeemModel, seem_tiny_features: ImageFeatures,
                                             seem_tiny_io: dict) -> None:
    """§11.3 option (c): reference tokens plus click tokens on the current image, reference pooled vector."""
    model, f, io = seem_tiny_model, seem_tiny_features, seem_tiny_io
    click = torch.zeros(1, 256, 320, dtype=torch.bool)
    click[0, 120:123, 150:153] = True
    with torch.no_grad():
        reference = model.encode_reference(f, io["inputs/stroke_mask"])
        combined = reference.with_extra_tokens(model.encode_prompt(f, click))
        result = model.decode_prompt(f, combined, query_indices=ROWS)
    assert combined.level_tokens[0].shape[1] == reference.level_tokens[0].shape[1] + 9
    assert torch.equal(combined.pooled_pos, reference.pooled_pos)
    assert torch.isfinite(result.mask_logits).all()


def test_reference_batch_must_match(seem_tiny_model: SeemModel, seem_tiny_features: ImageFeatures,
                                    seem_tiny_io: dict) -> None:
    with torch.no_grad():
        tokens = seem_tiny_model.encode_reference(seem_tiny_features, seem_tiny_io["inputs/stroke_mask"])
        with pytest.raises(ValueError):
            seem_tiny_model.decode_prompt(seem_tiny_features, tokens, prev_mask=torch.zeros(2, 1, 64, 80))
        with pytest.raises(PromptError):
            seem_tiny_model.encode_reference(seem_tiny_features, torch.zeros(1, 256, 320, dtype=torch.bool))


def test_self_attention_mask_routes_tokens_by_object() -> None:
    """Spatial queries of object n see only tokens of object n (never padding) and memories assigned to n."""
    lengths = {"object": 2, "spatial": 6, "spatial_tokens": 4, "memory": 4}
    token_object = torch.tensor([[0, 1, 1, -1]])
    blocked = build_self_attention_mask(lengths, 1, content_device=torch.device("cpu"), queries_per_object=3,
                                        token_padding=token_object < 0, token_object=token_object,
                                        grounding_padding=None, memory_assignment=torch.tensor([0, 0, 1, 1]))[0]
    allowed = ~blocked
    obj, spatial, tokens, memory = slice(0, 2), slice(2, 8), slice(8, 12), slice(12, 16)
    assert allowed[obj, obj].all() and not allowed[obj, 2:].any()  # object queries are isolated
    assert allowed[spatial, tokens].tolist() == [[True, False, False, False]] * 3 + [[False, True, True, False]] * 3
    assert allowed[spatial, memory].tolist() == [[True, True, False, False]] * 3 + [[False, False, True, True]] * 3
    assert allowed[spatial, spatial].tolist() == [[i // 3 == j // 3 for j in range(6)] for i in range(6)]
    assert not allowed[tokens, spatial].any() and not allowed[memory, spatial].any()
    assert allowed[tokens, tokens].tolist() == [[a == b for b in (0, 1, 1, -1)] for a in (0, 1, 1, -1)]
