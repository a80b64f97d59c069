"""Public inference API of SeemModel: input forms, post-processing, errors, precision modes."""

import numpy as np
import pytest
import torch

from vos.errors import EngineError, PromptError
from vos.seem.model import ImageFeatures, SeemModel, upsample_logits

ROWS = torch.tensor([10, 13, 18])


def test_prompt_mask_sizes(seem_tiny_model: SeemModel, seem_tiny_io: dict) -> None:
    """Masks may be given at the original, resized or padded size; resizing follows the demo (bilinear, > 0)."""
    model, io = seem_tiny_model, seem_tiny_io
    with torch.no_grad():
        features = model.encode_image(io["inputs/ref_image"], short_side=120)  # 240x304 -> 120x152 -> pad 128x160
    assert features.original_size == (240, 304) and features.image_size == (120, 152)
    assert features.padded_size == (128, 160) and features.mask_size == (32, 40)
    original = io["inputs/ref_stroke_mask"]
    from_original = model.prompt_masks(features, original)
    assert from_original.shape == (1, 128, 160) and not from_original[:, 120:].any() and from_original.any()
    resized = from_original[:, :120, :152]
    assert torch.equal(model.prompt_masks(features, resized.numpy()), from_original)
    assert torch.equal(model.prompt_masks(features, from_original), from_original)
    with pytest.raises(ValueError):
        model.prompt_masks(features, torch.ones(1, 100, 100, dtype=torch.bool))
    with torch.no_grad():
        result = model.decode_spatial(features, original, query_indices=ROWS)
    full = upsample_logits(result.mask_logits, features)  # back to the original 240x304
    assert full.shape == (1, 240, 304)
    assert upsample_logits(result.mask_logits, features, (60, 76), mode="bicubic_antialias").shape == (1, 60, 76)


def test_errors(seem_tiny_model: SeemModel, seem_tiny_features: ImageFeatures, seem_tiny_io: dict) -> None:
    model, f = seem_tiny_model, seem_tiny_features
    stroke = seem_tiny_io["inputs/stroke_mask"]
    with pytest.raises(PromptError):  # empty positive prompt
        model.decode_spatial(f, torch.zeros(1, 256, 320, dtype=torch.bool))
    with pytest.raises(ValueError):  # wrong number of spatial-query rows
        model.decode_spatial(f, stroke, query_indices=torch.tensor([1, 2]))
    with pytest.raises(ValueError):
        model.decode_spatial(f, stroke, query_indices=torch.tensor([1, 2, 99]))
    with pytest.raises(ValueError):  # negatives for a different number of objects
        model.decode_spatial(f, stroke, torch.zeros(2, 256, 320, dtype=torch.bool))
    batch = ImageFeatures(f.mask_features.expand(2, -1, -1, -1), tuple(t.expand(2, -1, -1, -1) for t in f.multi_scale),
                          f.image_size, f.padded_size, f.original_size)
    with pytest.raises(EngineError):
        model.segment(batch)
    assert torch.equal(batch[1].mask_features, f.mask_features)


def test_segmentation_outputs(seem_tiny_model: SeemModel, seem_tiny_features: ImageFeatures) -> None:
    model, f = seem_tiny_model, seem_tiny_features
    with torch.no_grad():
        seg = model.segment(f)
        semantic = model.semantic_segmentation(f, seg=seg)
        panoptic, segments = model.panoptic_segmentation(f, seg=seg)
    assert seg.class_logits.shape == (21, 134) and seg.mask_logits.shape == (21, 64, 80)
    assert semantic.shape == (133, 256, 320) and bool((semantic >= 0).all())
    assert panoptic.shape == (256, 320) and int(panoptic.max()) == len(segments)
    assert len(model.class_names) == 134 and model.class_names[-1] == "others"


def test_inference_mode_and_bf16_autocast(seem_tiny_model: SeemModel, seem_tiny_features: ImageFeatures,
                                          seem_tiny_io: dict) -> None:
    """The same calls work under torch.inference_mode and CPU bf16 autocast, with close results.

    Under autocast the decoder starts from the recorded fp32 features: CPU bf16 convolutions make the backbone
    ~10x slower here (the CUDA test below runs the whole pipeline under fp16 autocast)."""
    model, io = seem_tiny_model, seem_tiny_io
    stroke = io["inputs/stroke_mask"]
    with torch.inference_mode():
        ref = model.decode_spatial(seem_tiny_features, stroke, query_indices=ROWS)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            features_bf16 = seem_tiny_features
            first = model.decode_spatial(features_bf16, stroke, query_indices=ROWS)
            second = model.decode_spatial(features_bf16, stroke, prev_mask=first.mask_logits, query_indices=ROWS)
            grounded = model.ground_text(features_bf16, "a dog")
    torch.testing.assert_close(ref.prev_mask, io["paths/stroke/outputs/prev_mask"], atol=1e-4, rtol=1e-4)
    for result in (first, second):
        assert torch.isfinite(result.mask_logits.float()).all()
    assert ((first.mask_logits.float() > 0) != (ref.mask_logits > 0)).float().mean() < 0.02
    assert grounded.mask_logits.shape == (1, 64, 80)


def test_numpy_and_tensor_images_agree(seem_tiny_model: SeemModel, seem_tiny_io: dict) -> None:
    image = seem_tiny_io["inputs/ref_image"]
    with torch.no_grad():
        a = seem_tiny_model.encode_image(image, short_side=64)
        b = seem_tiny_model.encode_image(np.ascontiguousarray(image.permute(1, 2, 0).numpy()), short_side=64)
    assert torch.equal(a.mask_features, b.mask_features)
    with pytest.raises(ValueError):
        seem_tiny_model.encode_image(np.zeros((10, 10), dtype=np.uint8))


def test_prev_mask_from_binary(seem_tiny_model: SeemModel, seem_tiny_features: ImageFeatures,
                               seem_tiny_io: dict) -> None:
    """A binary mask turned into memory-prompt logits: +8 inside, -8 outside, usable as prev_mask."""
    from vos.seem.model import prev_mask_from_binary

    gt = seem_tiny_io["inputs/gt_mask"]
    logits = prev_mask_from_binary(gt, seem_tiny_features)
    assert logits.shape == (1, 1, 64, 80)
    assert float(logits.max()) == 8.0 and float(logits.min()) == -8.0
    assert torch.equal(logits > 0, torch.nn.functional.avg_pool2d(gt[None, None].float(), 4) > 0.5)
    with torch.no_grad():
        result = seem_tiny_model.decode_spatial(seem_tiny_features, seem_tiny_io["inputs/stroke_mask"],
                                                prev_mask=logits, query_indices=ROWS)
    assert torch.isfinite(result.mask_logits).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_fp16_autocast(seem_fixtures, seem_tiny_io: dict) -> None:
    io = seem_tiny_io
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False  # TF32 convolutions alone exceed fp32 reference tolerances
    try:
        _cuda_check(seem_fixtures, io)
    finally:
        torch.backends.cudnn.allow_tf32 = tf32


def _cuda_check(seem_fixtures, io: dict) -> None:
    from vos.seem.config import SeemConfig
    from vos.seem.model import load_seem

    config = SeemConfig.from_official_yaml(seem_fixtures / "tiny_config.yaml")
    model = load_seem(seem_fixtures / "tiny_weights.pt", config, device="cuda", vocabulary=False)
    model.set_class_embeddings(io["text/default_text_embeddings"].cuda())
    with torch.inference_mode():
        features = model.encode_image(io["inputs/image"], short_side=None)
        fp32 = model.decode_spatial(features, io["inputs/stroke_mask"], query_indices=ROWS)
        torch.testing.assert_close(fp32.prev_mask.cpu(), io["paths/stroke/outputs/prev_mask"], atol=1e-3, rtol=1e-3)
        with torch.autocast("cuda", dtype=torch.float16):
            half = model.decode_spatial(model.encode_image(io["inputs/image"], short_side=None),
                                        io["inputs/stroke_mask"], query_indices=ROWS)
    assert ((half.mask_logits.float() > 0) != (fp32.mask_logits > 0)).float().mean() < 0.02


def test_vocabulary_computed_at_load(seem_fixtures, seem_tiny_io: dict) -> None:
    """compute_vocabulary (what load_seem(vocabulary=True) runs with all 134 names) equals the recorded class
    embeddings; a few names keep the test fast, the full set only changes the row count."""
    from vos.seem.config import SeemConfig
    from vos.seem.model import load_seem
    from vos.seem.vocabulary import DEFAULT_VOCABULARY

    config = SeemConfig.from_official_yaml(seem_fixtures / "tiny_config.yaml")
    model = load_seem(seem_fixtures / "tiny_weights.pt", config, vocabulary=False)
    rows = [0, 16, 119, 133]  # person, dog, sky-other-merged (cleaned name), background
    embeddings = model.compute_vocabulary([DEFAULT_VOCABULARY[i] for i in rows])
    torch.testing.assert_close(embeddings, seem_tiny_io["text/default_text_embeddings"][rows], atol=1e-5, rtol=1e-5)
