"""Every recorded path of the official SEEM v1 tiny fixture, reproduced by our decoder and model.

Recorded random draws (spatial-query rows, memory assignment) are injected; the prompt masks have <= 512 pixels so
point sampling is deterministic. Floats: atol = rtol = 1e-4; ints/bools exact; thresholded masks may flip a
handful of pixels whose logits are ~0.
"""

import pytest
import torch

from vos.seem.decoder import DecoderOutput, GroundingTokens, Prediction, select_spatial_masks
from vos.seem.model import ImageFeatures, SeemModel, upsample_logits

TOL = {"atol": 1e-4, "rtol": 1e-4}
MAX_FLIPPED_PIXELS = 5
SPATIAL_PATHS = ("paths/stroke", "paths/interactive/iter0", "paths/interactive/iter1", "paths/interactive/iter2")


def _close(got: torch.Tensor, expected: torch.Tensor, name: str) -> None:
    torch.testing.assert_close(got, expected, **TOL, msg=lambda m: f"{name}: {m}")


def _compare_prediction(pred: Prediction, io: dict, prefix: str, final: bool) -> int:
    """Compare every recorded output of ``prefix``; returns how many tensors were compared."""
    compared = 0
    for key, value in pred.to_official().items():
        name = f"{prefix}/{key}"
        if final and key == "pred_masks" and name not in io:  # final object masks are stored only under paths/seg
            name = "paths/seg/outputs/pred_masks"
        if name in io:
            _close(value, io[name], name)
            compared += 1
    return compared


def _compare_output(out: DecoderOutput, io: dict, prefix: str) -> int:
    compared = _compare_prediction(out.final, io, prefix, final=True)
    for i, aux in enumerate(out.aux):
        compared += _compare_prediction(aux, io, f"{prefix}/aux_outputs/{i}", final=False)
    return compared


def _spatial_inputs(io: dict, path: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    stroke = io["inputs/stroke_mask"][None]
    neg = io.get(f"{path}/inputs/spatial_query_neg_mask/0", torch.zeros_like(stroke))
    return stroke, neg, io.get(f"{path}/inputs/prev_mask")


# ---- seg ------------------------------------------------------------------------------------------------


def test_seg_path(seem_tiny_model: SeemModel, seem_tiny_features: ImageFeatures, seem_tiny_io: dict) -> None:
    f = seem_tiny_features
    with torch.no_grad():
        out = seem_tiny_model.predictor(f.multi_scale, f.mask_features, return_aux=True)
        seg = seem_tiny_model.segment(f)
    assert len(out.aux) == 3
    assert _compare_output(out, seem_tiny_io, "paths/seg/outputs") == 2 + 3  # logits + masks, 3 aux logits
    _close(seg.class_logits, seem_tiny_io["paths/seg/outputs/pred_logits"][0], "segment().class_logits")
    _close(seg.mask_logits, seem_tiny_io["paths/seg/outputs/pred_masks"][0], "segment().mask_logits")


# ---- stroke and interactive (spatial prompts, memory prompt) ---------------------------------------------


@pytest.mark.parametrize("path", SPATIAL_PATHS)
def test_spatial_paths_full_outputs(seem_tiny_model: SeemModel, seem_tiny_features: ImageFeatures,
                                    seem_tiny_io: dict, path: str) -> None:
    """Decoder level: every recorded outputs_full tensor (incl. aux) and the selected prev_mask."""
    io, f, model = seem_tiny_io, seem_tiny_features, seem_tiny_model
    pos, neg, prev = _spatial_inputs(io, path)
    memory = io.get(f"{path}/rng/memory_indices")
    with torch.no_grad():
        prompt = model.predictor.encode_prompt(f.multi_scale, f.mask_features, [pos], [neg])
        out = model.predictor(f.multi_scale, f.mask_features, prompt=prompt, prev_mask=prev,
                              query_indices=io[f"{path}/rng/queries_spatial_rand_idx_0"],
                              memory_assignment=memory, return_aux=True)
    compared = _compare_output(out, io, f"{path}/outputs_full")
    # 8 final outputs (incl. the shared pred_masks); the stroke path also recorded 3 aux sets of 7
    assert compared == 8 + (3 * 7 if path == "paths/stroke" else 0)
    selection = select_spatial_masks(out.final)
    _close(selection.masks, io[f"{path}/outputs/prev_mask"], f"{path}/outputs/prev_mask")
    if prev is not None:
        assert len(out.memory_assignments) == model.config.decoder.num_layers
        assert all(torch.equal(a, memory) for a in out.memory_assignments)


@pytest.mark.parametrize("path", SPATIAL_PATHS)
def test_spatial_paths_public_api(seem_tiny_model: SeemModel, seem_tiny_features: ImageFeatures,
                                  seem_tiny_io: dict, path: str) -> None:
    """Same paths through decode_spatial (object queries skipped by default: the result must not change)."""
    io = seem_tiny_io
    pos, neg, prev = _spatial_inputs(io, path)
    with torch.no_grad():
        result = seem_tiny_model.decode_spatial(seem_tiny_features, pos, neg, prev_mask=prev,
                                                query_indices=io[f"{path}/rng/queries_spatial_rand_idx_0"])
    expected = io[f"{path}/outputs/prev_mask"]
    _close(result.prev_mask, expected, f"{path} decode_spatial prev_mask")
    _close(result.candidate_mask_logits, io[f"{path}/outputs_full/pred_smasks"], f"{path} candidates")
    assert result.class_logits.shape == (1, 134)
    stexts = io[f"{path}/outputs_full/pred_stexts"][0, result.query_index]
    _close(result.class_logits, seem_tiny_model.predictor.class_logits(stexts), f"{path} class logits")


def test_memory_prompt_changes_the_result(seem_tiny_model: SeemModel, seem_tiny_features: ImageFeatures,
                                          seem_tiny_io: dict) -> None:
    """Guard against a silently ignored prev_mask: without it iteration 1 must differ from the recording."""
    io, path = seem_tiny_io, "paths/interactive/iter1"
    pos, neg, _ = _spatial_inputs(io, path)
    with torch.no_grad():
        result = seem_tiny_model.decode_spatial(seem_tiny_features, pos, neg,
                                                query_indices=io[f"{path}/rng/queries_spatial_rand_idx_0"])
    assert (result.candidate_mask_logits - io[f"{path}/outputs_full/pred_smasks"]).abs().max() > 1e-2


def test_stroke_final_mask(seem_tiny_model: SeemModel, seem_tiny_features: ImageFeatures, seem_tiny_io: dict) -> None:
    """evaluate_interactive_single's pred_mask_ori: bicubic to padded size, crop, bicubic, sigmoid > 0.5."""
    io = seem_tiny_io
    pos, neg, _ = _spatial_inputs(io, "paths/stroke")
    with torch.no_grad():
        result = seem_tiny_model.decode_spatial(seem_tiny_features, pos, neg,
                                                query_indices=io["paths/stroke/rng/queries_spatial_rand_idx_0"])
    mask = upsample_logits(result.mask_logits, seem_tiny_features, (256, 320), mode="bicubic").sigmoid() > 0.5
    expected = io["paths/stroke/result/pred_mask_ori"]
    assert mask.shape == expected.shape
    assert int((mask != expected).sum()) <= MAX_FLIPPED_PIXELS


# ---- grounding ------------------------------------------------------------------------------------------


def test_grounding_path_decoder(seem_tiny_model: SeemModel, seem_tiny_features: ImageFeatures,
                                seem_tiny_io: dict) -> None:
    io, f = seem_tiny_io, seem_tiny_features
    tokens = GroundingTokens(io["paths/grounding/inputs/grounding_tokens"].transpose(0, 1),
                             io["paths/grounding/inputs/grounding_nonzero_mask"])
    with torch.no_grad():
        out = seem_tiny_model.predictor(f.multi_scale, f.mask_features, grounding=tokens, return_aux=True)
    assert _compare_output(out, io, "paths/grounding/outputs") >= 5 + 3 * 3


def test_grounding_with_recorded_tokens(seem_tiny_model: SeemModel, seem_tiny_features: ImageFeatures,
                                        seem_tiny_io: dict) -> None:
    io = seem_tiny_io
    with torch.no_grad():
        result = seem_tiny_model.ground_tokens(
            seem_tiny_features, io["paths/grounding/inputs/grounding_tokens"].transpose(0, 1),
            io["paths/grounding/inputs/grounding_nonzero_mask"], io["paths/grounding/inputs/class_emb"])
    _close(result.similarity, io["paths/grounding/result/out_prob"], "out_prob")
    assert torch.equal(result.query_index, io["paths/grounding/result/matched_id"])
    matched = int(io["paths/grounding/result/matched_id"][0])
    _close(result.mask_logits[0], io["paths/grounding/outputs/pred_gmasks"][0, matched], "grounding mask")


def test_grounding_from_text(seem_tiny_model: SeemModel, seem_tiny_features: ImageFeatures, seem_tiny_io: dict) -> None:
    """End to end from the string "a dog" through the tokenizer and text encoder."""
    io = seem_tiny_io
    with torch.no_grad():
        result = seem_tiny_model.ground_text(seem_tiny_features, ["a dog"])
    _close(result.similarity, io["paths/grounding/result/out_prob"], "out_prob from text")
    assert torch.equal(result.query_index, io["paths/grounding/result/matched_id"])


# ---- referring image, stage 1, and end to end from pixels --------------------------------------------------


@pytest.fixture(scope="module")
def ref_features(seem_tiny_model: SeemModel, seem_tiny_io: dict) -> ImageFeatures:
    with torch.no_grad():
        return seem_tiny_model.encode_image(seem_tiny_io["inputs/ref_image"], short_side=None)


def test_refimg_stage1(seem_tiny_model: SeemModel, ref_features: ImageFeatures, seem_tiny_io: dict) -> None:
    io, prefix = seem_tiny_io, "paths/refimg/stage1_outputs"
    assert ref_features.image_size == (240, 304) and ref_features.padded_size == (256, 320)
    with torch.no_grad():
        tokens = seem_tiny_model.encode_reference(ref_features, io["inputs/ref_stroke_mask"][None])
    _close(tokens.pooled_pos.transpose(0, 1), io[f"{prefix}/spatial_query_pos"], "spatial_query_pos")
    _close(tokens.pooled_neg.transpose(0, 1), io[f"{prefix}/spatial_query_neg"], "spatial_query_neg")
    for level in range(3):
        _close(tokens.level_tokens[level].transpose(0, 1), io[f"{prefix}/src_spatial_queries/{level}"],
               f"src_spatial_queries/{level}")
        assert torch.equal(tokens.level_padding[level], io[f"{prefix}/src_spatial_maskings/{level}"])
        assert torch.equal(tokens.level_object_index[level], torch.zeros(1, 284, dtype=torch.long))


def test_end_to_end_from_image(seem_tiny_model: SeemModel, seem_tiny_io: dict) -> None:
    """Pixels -> backbone -> pixel decoder -> stroke prompt, against the recordings."""
    io = seem_tiny_io
    with torch.no_grad():
        features = seem_tiny_model.encode_image(io["inputs/image"].permute(1, 2, 0).numpy(), short_side=None)
        _close(features.mask_features, io["features/pixel_decoder/mask_features"], "mask_features")
        for i in range(3):
            _close(features.multi_scale[i], io[f"features/pixel_decoder/multi_scale_features/{i}"], f"level {i}")
        pos, neg, _ = _spatial_inputs(io, "paths/stroke")
        result = seem_tiny_model.decode_spatial(features, pos, neg,
                                                query_indices=io["paths/stroke/rng/queries_spatial_rand_idx_0"])
    _close(result.prev_mask, io["paths/stroke/outputs/prev_mask"], "end-to-end prev_mask")
