"""The SEEM v1 model (`SeemModel`) and its inference API.

State-dict keys equal the official ``GeneralizedSEEM`` keys exactly (no prefix), including the two persistent
buffers ``dilation_kernel`` and ``criterion.empty_weight``.

Inference is split so that the expensive part runs once per image and the cheap part once per prompt:

* `SeemModel.encode_image` -> `ImageFeatures` (backbone + pixel decoder, batch 1, reusable);
* `SeemModel.encode_prompt` (alias `encode_reference`) -> `PromptTokens` for N objects drawn on an image;
* `SeemModel.decode_prompt` -> `SpatialResult`: decode N objects (one per batch element) on an image from
  prompt tokens computed on the same or another image (referring-image prompts), optionally with the memory
  prompt ``prev_mask`` (the previous mask logits);
* `SeemModel.decode_spatial` = encode_prompt + decode_prompt on the same image (strokes, clicks, masks);
* `SeemModel.ground_text` (referring text), `SeemModel.segment` / `semantic_segmentation` /
  `panoptic_segmentation` (object queries with the 134-entry COCO vocabulary).

Class logits need the class embeddings (`compute_vocabulary`, minutes of text encoding on a CPU at full size, or
`set_class_embeddings`). `decode_prompt`, `decode_spatial` and `ground_text` compute them by default; with
``with_class_logits=False`` they skip them (``class_logits`` is None) and run without the embeddings, which no other
output depends on. `segment` and the segmentations built on it always need them.

Objects are decoded one per batch element on shared (batch-1) image features, so N objects in one call equal N
separate calls (up to float rounding) as long as the same spatial-query draw is used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vos.errors import CheckpointError, EngineError, PromptError
from vos.seem.backbone import build_backbone
from vos.seem.config import SeemConfig
from vos.seem.decoder import (
    DecoderOutput,
    GroundingTokens,
    PromptTokens,
    SeemDecoder,
    SpatialSelection,
    select_spatial_masks,
)
from vos.seem.pixel_decoder import build_pixel_decoder
from vos.seem.preprocess import pad_to_multiple, resize_image, resize_prompt_mask, resized_shape
from vos.seem.text_encoder import LanguageEncoder
from vos.seem.vocabulary import DEFAULT_VOCABULARY, display_names, is_thing

ImageInput = np.ndarray | Tensor
MaskInput = np.ndarray | Tensor

# ----------------------------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------------------------


@dataclass
class ImageFeatures:
    """Backbone + pixel-decoder output of one image, reusable for any number of decoder calls.

    Mask logits produced from these features live on the ``mask_size`` grid = 1/4 of ``padded_size``.
    """

    mask_features: Tensor  # [1, C, Hp/4, Wp/4]
    multi_scale: tuple[Tensor, ...]  # coarse -> fine: strides 32, 16, 8, each [1, C, h, w]
    image_size: tuple[int, int]  # (H, W) after resizing, before padding
    padded_size: tuple[int, int]  # (Hp, Wp), multiples of 32
    original_size: tuple[int, int]  # (H0, W0) of the input image

    @property
    def mask_size(self) -> tuple[int, int]:
        return int(self.mask_features.shape[-2]), int(self.mask_features.shape[-1])

    @property
    def batch_size(self) -> int:
        return int(self.mask_features.shape[0])

    def __getitem__(self, index: int) -> ImageFeatures:
        """Features of image ``index`` of a batch encoded together."""
        sl = slice(index, index + 1 if index != -1 else None)
        return ImageFeatures(self.mask_features[sl], tuple(f[sl] for f in self.multi_scale), self.image_size,
                             self.padded_size, self.original_size)


@dataclass
class SpatialResult:
    """Spatial / referring / memory prompt result for N objects (one per prompt channel)."""

    mask_logits: Tensor  # [N, h4, w4] logits of the selected spatial query (official prev_mask[:, 0])
    scores: Tensor  # [N] selection score: mask embedding . pooled prompt vector (raw dot product)
    query_index: Tensor  # [N] which of the 3 spatial queries of the object was selected
    mask_embedding: Tensor  # [N, C] mask embedding of the selected query (mask_logits = mask_embedding . features)
    class_logits: Tensor | None  # [N, K] class head on the selected query (K = 134); None if not asked for
    candidate_mask_logits: Tensor  # [N, 3, h4, w4] the masks of all 3 spatial queries of each object
    candidate_mask_embeddings: Tensor  # [N, 3, C] their mask embeddings (official pred_smaskembs)
    candidate_embeddings: Tensor  # [N, 3, P] their class-space embeddings (pred_stexts), e.g. to choose by text
    query_indices: Tensor  # [3] or [N, 3]: object-query rows copied as spatial queries (the random draw)
    decoder_output: DecoderOutput | None = None  # full output when asked for (return_decoder_output=True)

    @property
    def prev_mask(self) -> Tensor:
        """[N, 1, h4, w4]: what to feed back as ``prev_mask`` (memory prompt) in the next call."""
        return self.mask_logits[:, None]


@dataclass
class GroundingResult:
    """Referring-text grounding for n texts."""

    mask_logits: Tensor  # [n, h4, w4] mask logits of the best-matching grounding query of each text
    query_index: Tensor  # [n]
    scores: Tensor  # [n] grounding similarity of the selected query
    similarity: Tensor  # [Q, n] min(exp(logit_scale), 100) * cos(pred_gtexts, text)
    class_logits: Tensor | None  # [n, K] class head on the selected grounding queries; None if not asked for


@dataclass
class SegmentationResult:
    """Object-query predictions of one image (the official ``evaluate`` decoder outputs)."""

    class_logits: Tensor  # [Q, K]
    mask_logits: Tensor  # [Q, h4, w4]


@dataclass
class PanopticSegment:
    id: int  # 1-based id in the panoptic map
    category_id: int  # index into the COCO-133 vocabulary
    isthing: bool
    score: float


# ----------------------------------------------------------------------------------------------------------
# Module tree (official names)
# ----------------------------------------------------------------------------------------------------------


class SeemHead(nn.Module):
    """``sem_seg_head`` (official ``XdecoderHead``): pixel decoder + decoder; no parameters of its own."""

    def __init__(self, config: SeemConfig) -> None:
        super().__init__()
        self.pixel_decoder = build_pixel_decoder(config.pixel_decoder)
        self.predictor = SeemDecoder(config.decoder, LanguageEncoder(config.text))


class CriterionBuffers(nn.Module):
    """Holds only the training criterion's persistent ``empty_weight`` (ones, last entry = no-object weight), so
    that checkpoints with it load strictly. Nothing here is used at inference."""

    def __init__(self, num_classes: int, no_object_weight: float = 0.1) -> None:
        super().__init__()
        weight = torch.ones(num_classes + 1)
        weight[-1] = no_object_weight
        self.register_buffer("empty_weight", weight)


class SeemModel(nn.Module):
    """SEEM v1 (``GeneralizedSEEM``); see the module docstring for the inference API."""

    def __init__(self, config: SeemConfig) -> None:
        super().__init__()
        self.config = config
        # persistent, official top-level buffer (click dilation kernel); first in the state_dict
        self.register_buffer("dilation_kernel", torch.ones(1, 1, 3, 3))
        self.register_buffer("pixel_mean", torch.tensor(config.pixel_mean).view(3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(config.pixel_std).view(3, 1, 1), persistent=False)
        self.backbone = build_backbone(config.backbone)
        self.sem_seg_head = SeemHead(config)
        self.criterion = CriterionBuffers(config.num_classes)

    # ---- conveniences -------------------------------------------------------------------------------------
    @property
    def predictor(self) -> SeemDecoder:
        return self.sem_seg_head.predictor

    @property
    def lang_encoder(self) -> LanguageEncoder:
        return self.sem_seg_head.predictor.lang_encoder

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def dtype(self) -> torch.dtype:
        return self.predictor.query_feat.weight.dtype

    @property
    def class_names(self) -> tuple[str, ...]:
        """Display names of the class-logit columns (133 COCO panoptic names + "others")."""
        return display_names()

    @torch.no_grad()
    def compute_vocabulary(self, class_names: Sequence[str] = DEFAULT_VOCABULARY,
                           cache_dir: str | Path | None = None) -> Tensor:
        """Encode the class vocabulary (81 templates per name) for the class head; returns [K, P].

        The official demo does this at start-up with the 133 COCO names + "background"; the embeddings are
        never part of a checkpoint. Full size that is minutes on a CPU, so with ``cache_dir`` the result is
        saved there (keyed by a fingerprint of the weights) and later starts load it.
        """
        return self.lang_encoder.get_text_embeddings(list(class_names), cache_dir=cache_dir)

    def set_class_embeddings(self, embeddings: Tensor) -> None:
        """Use precomputed (L2-normalised) class embeddings [K, P] for the class head."""
        self.predictor.set_class_embeddings(embeddings)

    # ---- image ------------------------------------------------------------------------------------------
    def forward(self, image: ImageInput, short_side: int | None = 512) -> ImageFeatures:
        """Same as `encode_image`."""
        return self.encode_image(image, short_side=short_side)

    def encode_image(self, image: ImageInput, *, short_side: int | None = 512,
                     max_size: int | None = None) -> ImageFeatures:
        """Backbone + pixel decoder for an RGB image: uint8 ``H x W x 3`` numpy array, or uint8/float (0..255)
        tensor ``[3, H, W]`` / ``[B, 3, H, W]``.

        ``short_side``: resize (PIL-style bicubic) so the shorter side has this length, as the demo does (512);
        ``None`` keeps the input size. The image is normalised and zero-padded bottom/right to a multiple of 32.
        """
        x = _image_tensor(image)
        if x.dim() == 3:
            x = x[None]
        original = (int(x.shape[-2]), int(x.shape[-1]))
        if short_side is not None:
            x = resize_image(x, resized_shape(*original, short_side, max_size))
        size = (int(x.shape[-2]), int(x.shape[-1]))
        x = x.to(self.device)
        x = (x.float() - self.pixel_mean) / self.pixel_std
        x = pad_to_multiple(x, self.config.size_divisibility).to(self.dtype)
        feats = self.backbone(x)
        out = self.sem_seg_head.pixel_decoder.forward_features(feats)
        return ImageFeatures(out.mask_features, tuple(out.multi_scale_features), size,
                             (int(x.shape[-2]), int(x.shape[-1])), original)

    # ---- spatial / referring / memory prompts ---------------------------------------------------------------
    def prompt_masks(self, features: ImageFeatures, masks: MaskInput) -> Tensor:
        """Prompt masks ``[N, H, W]`` (or ``[H, W]``) -> bool ``[N, Hp, Wp]`` on the padded input grid.

        Accepted sizes: the resized image size (padded with False), the padded size, or the original image size
        (resized like the demo: bilinear then ``> 0``).
        """
        m = torch.as_tensor(np.asarray(masks) if isinstance(masks, np.ndarray) else masks)
        if m.dim() == 2:
            m = m[None]
        if m.dim() != 3:
            raise ValueError(f"prompt masks must be [N, H, W] or [H, W], got shape {tuple(m.shape)}")
        m = m.to(self.device) != 0
        size = tuple(m.shape[-2:])
        if size == features.padded_size:
            return m
        if size != features.image_size:
            if size != features.original_size:
                raise ValueError(f"prompt mask size {size} matches neither the image {features.original_size}, the "
                                  f"resized image {features.image_size} nor the padded input {features.padded_size}")
            m = resize_prompt_mask(m, features.image_size)
        return pad_to_multiple(m, self.config.size_divisibility, value=False)

    def encode_prompt(self, features: ImageFeatures, positive: MaskInput, negative: MaskInput | None = None, *,
                      generator: torch.Generator | None = None) -> PromptTokens:
        """Encode N objects' prompts (positive masks ``[N, H, W]``, optional negative masks) drawn on the image
        of ``features`` -> `PromptTokens` with batch N (one object per element).

        Points are sub-sampled (randomly) only for masks of more than 512 pixels. With a ``generator``, every
        object samples from its own copy of the generator's current state (the generator itself is not
        advanced), so an object's tokens do not depend on which other objects share the call.
        """
        self._check_single(features)
        pos = self.prompt_masks(features, positive)
        neg = torch.zeros_like(pos) if negative is None else self.prompt_masks(features, negative)
        if neg.shape != pos.shape:
            raise ValueError(f"negative masks {tuple(neg.shape)} do not match positive masks {tuple(pos.shape)}")
        empty = [i for i in range(pos.shape[0]) if not bool(pos[i].any())]
        if empty:
            raise PromptError(f"positive prompt of object(s) {empty} is empty")
        generators = None if generator is None else [_copy_generator(generator) for _ in range(pos.shape[0])]
        return self.predictor.encode_prompt(features.multi_scale, features.mask_features,
                                            list(pos[:, None]), list(neg[:, None]), generator=generators)

    def encode_reference(self, features: ImageFeatures, ref_masks: MaskInput,
                         negative: MaskInput | None = None, *,
                         generator: torch.Generator | None = None) -> PromptTokens:
        """Referring-image prompt (stage 1): tokens of N objects drawn on a reference image, to be decoded on
        other images with `decode_prompt`. Same as `encode_prompt`; the returned tokens carry the per-token
        object index that the official v1 target pass lacks (§7.2)."""
        return self.encode_prompt(features, ref_masks, negative, generator=generator)

    def decode_prompt(self, features: ImageFeatures, prompt: PromptTokens, *, prev_mask: Tensor | None = None,
                      query_indices: Tensor | None = None, generator: torch.Generator | None = None,
                      with_object_queries: bool = False, with_class_logits: bool = True,
                      return_decoder_output: bool = False) -> SpatialResult:
        """Decode the N objects of ``prompt`` on the image of ``features``.

        ``prev_mask``: previous mask logits ``[N, h, w]`` or ``[N, 1, h, w]`` (normally a previous result's
        ``mask_logits``) -> memory prompt. ``query_indices``: object-query rows to copy as spatial queries,
        ``[3]`` shared by all objects or ``[N, 3]``; drawn from ``generator`` (one shared draw) when None.
        ``with_object_queries``: also run the object queries (does not change the result; only needed for
        their outputs in ``decoder_output``). ``with_class_logits``: compute ``class_logits`` (needs the class
        embeddings; nothing else depends on them).
        """
        self._check_single(features)
        prev = None
        if prev_mask is not None:
            prev = prev_mask if prev_mask.dim() == 4 else prev_mask[:, None]
            if prev.shape[:2] != (prompt.batch_size, prompt.num_objects):
                raise ValueError(f"prev_mask has shape {tuple(prev_mask.shape)}, expected [{prompt.batch_size}, h, w]")
            prev = prev.to(device=self.device)
        out = self.predictor(features.multi_scale, features.mask_features, prompt=prompt, prev_mask=prev,
                             query_indices=query_indices, generator=generator,
                             include_object_queries=with_object_queries, with_class_logits=with_class_logits)
        sel = select_spatial_masks(out.final, self.config.decoder.queries_per_object)
        return self._spatial_result(sel, out, with_class_logits, return_decoder_output)

    def decode_spatial(self, features: ImageFeatures, positive: MaskInput, negative: MaskInput | None = None, *,
                       prev_mask: Tensor | None = None, query_indices: Tensor | None = None,
                       generator: torch.Generator | None = None, with_object_queries: bool = False,
                       with_class_logits: bool = True, return_decoder_output: bool = False) -> SpatialResult:
        """Strokes / clicks / masks on this image for N objects (``positive [N, H, W]``), optional negatives
        and memory (``prev_mask``); see `encode_prompt` and `decode_prompt`."""
        prompt = self.encode_prompt(features, positive, negative, generator=generator)
        return self.decode_prompt(features, prompt, prev_mask=prev_mask, query_indices=query_indices,
                                  generator=generator, with_object_queries=with_object_queries,
                                  with_class_logits=with_class_logits, return_decoder_output=return_decoder_output)

    def _spatial_result(self, sel: SpatialSelection, out: DecoderOutput, with_class_logits: bool,
                        keep_output: bool) -> SpatialResult:
        pred = out.final
        assert pred.spatial_masks is not None and pred.spatial_mask_embeddings is not None
        assert pred.spatial_embeddings is not None and out.query_indices is not None
        if sel.masks.shape[1] != 1:
            raise EngineError("SpatialResult expects one object per batch element")

        def candidates(t: Tensor) -> Tensor:  # [N, 3, ...]: the object's queries (one object per element)
            return t.reshape(t.shape[0], -1, self.config.decoder.queries_per_object, *t.shape[2:])[:, 0]

        return SpatialResult(
            mask_logits=sel.masks[:, 0], scores=sel.scores[:, 0],
            query_index=sel.query_index[:, 0],  # 0..2 within the object's spatial queries
            mask_embedding=sel.mask_embeddings[:, 0],
            class_logits=self.predictor.class_logits(sel.embeddings[:, 0]) if with_class_logits else None,
            candidate_mask_logits=candidates(pred.spatial_masks),
            candidate_mask_embeddings=candidates(pred.spatial_mask_embeddings),
            candidate_embeddings=candidates(pred.spatial_embeddings),
            query_indices=out.query_indices, decoder_output=out if keep_output else None)

    # ---- text ---------------------------------------------------------------------------------------------
    def ground_text(self, features: ImageFeatures, texts: Sequence[str] | str, *,
                    with_class_logits: bool = True) -> GroundingResult:
        """Referring-text segmentation (official ``evaluate_grounding``): the tokens of all texts go into one
        decoder call; for each text the grounding query with the highest similarity is selected.
        ``with_class_logits``: compute ``class_logits`` (needs the class embeddings)."""
        self._check_single(features)
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            raise PromptError("no text given")
        emb = self.lang_encoder.get_text_token_embeddings(texts, norm=False)
        tokens, padding = emb.grounding_tokens()  # [L, 1, P], [1, L]
        return self.ground_tokens(features, tokens.transpose(0, 1), padding, emb.class_emb,
                                  with_class_logits=with_class_logits)

    def ground_tokens(self, features: ImageFeatures, tokens: Tensor, padding: Tensor, class_emb: Tensor, *,
                      with_class_logits: bool = True) -> GroundingResult:
        """Grounding from precomputed text token embeddings ``[1, L, P]`` and sentence embeddings ``[n, P]``."""
        out = self.predictor(features.multi_scale, features.mask_features,
                             grounding=GroundingTokens(tokens.to(self.device), padding.to(self.device)),
                             include_object_queries=False)
        assert out.final.grounding_embeddings is not None and out.final.grounding_masks is not None
        gtexts = out.final.grounding_embeddings[0]
        sim = self.lang_encoder.grounding_similarity(gtexts, class_emb.to(gtexts.dtype))  # [Q, n]
        scores, best = sim.max(dim=0)
        class_logits = self.predictor.class_logits(gtexts[best]) if with_class_logits else None
        return GroundingResult(mask_logits=out.final.grounding_masks[0, best], query_index=best, scores=scores,
                               similarity=sim, class_logits=class_logits)

    # ---- generic segmentation -------------------------------------------------------------------------------
    def segment(self, features: ImageFeatures) -> SegmentationResult:
        """Object queries only (the decoder part of the official ``evaluate``)."""
        self._check_single(features)
        out = self.predictor(features.multi_scale, features.mask_features)
        assert out.final.object_logits is not None and out.final.object_masks is not None
        return SegmentationResult(out.final.object_logits[0], out.final.object_masks[0])

    def semantic_segmentation(self, features: ImageFeatures, output_size: tuple[int, int] | None = None,
                              seg: SegmentationResult | None = None) -> Tensor:
        """Per-class scores ``[num_classes, H, W]`` = sum_q softmax(class_q)[:133] * sigmoid(mask_q), at
        ``output_size`` (default: the original image size); argmax over dim 0 gives the label map."""
        seg = seg or self.segment(features)
        masks = upsample_logits(seg.mask_logits, features, output_size, mode="bicubic_antialias")
        probs = seg.class_logits.float().softmax(-1)[:, : self.config.num_classes]
        return torch.einsum("qc,qhw->chw", probs, masks.float().sigmoid())

    def panoptic_segmentation(self, features: ImageFeatures, output_size: tuple[int, int] | None = None,
                              seg: SegmentationResult | None = None) -> tuple[Tensor, list[PanopticSegment]]:
        """Official panoptic inference: ``(id map [H, W] int32 with 0 = void, segments)``."""
        seg = seg or self.segment(features)
        masks = upsample_logits(seg.mask_logits, features, output_size, mode="bicubic_antialias").float().sigmoid()
        scores, labels = seg.class_logits.float().softmax(-1).max(-1)
        keep = (labels != self.config.num_classes) & (scores > self.config.object_mask_threshold)
        panoptic = torch.zeros(masks.shape[-2:], dtype=torch.int32, device=masks.device)
        segments: list[PanopticSegment] = []
        if not bool(keep.any()):
            return panoptic, segments
        cur_scores, cur_labels, cur_masks = scores[keep], labels[keep], masks[keep]
        owner = (cur_scores[:, None, None] * cur_masks).argmax(0)
        stuff_ids: dict[int, int] = {}
        for k in range(cur_labels.shape[0]):
            label = int(cur_labels[k])
            thing = is_thing(label)
            owned = owner == k
            area, mask_area = int(owned.sum()), int((cur_masks[k] >= 0.5).sum())
            pixels = owned & (cur_masks[k] >= 0.5)
            if area == 0 or mask_area == 0 or not bool(pixels.any()):
                continue
            if area / mask_area < self.config.overlap_threshold:
                continue
            if not thing and label in stuff_ids:  # stuff classes are merged per class
                panoptic[pixels] = stuff_ids[label]
                continue
            seg_id = len(segments) + 1
            panoptic[pixels] = seg_id
            segments.append(PanopticSegment(seg_id, label, thing, float(cur_scores[k])))
            if not thing:
                stuff_ids[label] = seg_id
        return panoptic, segments

    # ---- helpers ------------------------------------------------------------------------------------------
    @staticmethod
    def _check_single(features: ImageFeatures) -> None:
        if features.batch_size != 1:
            raise EngineError(f"decode one image at a time (features have batch {features.batch_size}); "
                              "index a batch with features[i]")


# ----------------------------------------------------------------------------------------------------------
# Post-processing
# ----------------------------------------------------------------------------------------------------------


def upsample_logits(mask_logits: Tensor, features: ImageFeatures, output_size: tuple[int, int] | None = None,
                    mode: str = "bilinear") -> Tensor:
    """Mask logits ``[N, h4, w4]`` -> ``[N, H, W]`` logits at ``output_size`` (default: original image size).

    Upsampled to the padded input, cropped to the resized image, then resized to the output size (spec §9).
    ``mode``: ``"bilinear"`` (demo, evaluate_interactive), ``"bicubic"`` (evaluate_interactive_single) or
    ``"bicubic_antialias"`` (the second resize of sem_seg_postprocess; the first upsampling stays bilinear).
    Threshold the result at 0 for binary masks.
    """
    if mode not in ("bilinear", "bicubic", "bicubic_antialias"):
        raise ValueError(f"unknown upsampling mode {mode!r}")
    output_size = tuple(output_size or features.original_size)  # type: ignore[assignment]
    x = mask_logits[None] if mask_logits.dim() == 3 else mask_logits
    first = "bicubic" if mode == "bicubic" else "bilinear"
    x = F.interpolate(x, size=features.padded_size, mode=first, align_corners=False)
    x = x[..., : features.image_size[0], : features.image_size[1]]
    if tuple(x.shape[-2:]) != output_size:
        if mode == "bicubic_antialias":
            x = F.interpolate(x, size=output_size, mode="bicubic", align_corners=False, antialias=True)
        else:
            x = F.interpolate(x, size=output_size, mode=first, align_corners=False)
    return x[0] if mask_logits.dim() == 3 else x


def prev_mask_from_binary(masks: MaskInput, features: ImageFeatures, logit: float = 8.0) -> Tensor:
    """Binary masks ``[N, H, W]`` (at the original, resized or padded size) -> memory-prompt logits
    ``[N, 1, h4, w4]`` on the features' mask grid: area fraction f per 4x4 cell mapped to ``logit * (2f - 1)``.

    A 0/1 float mask would be wrong as ``prev_mask``: sigmoid(0) = 0.5 is not masked, so the background would
    stay attendable (§11.3); use this or a previous result's ``mask_logits``.
    """
    m = torch.as_tensor(np.asarray(masks) if isinstance(masks, np.ndarray) else masks)
    m = (m[None] if m.dim() == 2 else m).to(features.mask_features.device) != 0
    size = tuple(m.shape[-2:])
    if size == features.original_size and size != features.image_size:
        m = resize_prompt_mask(m, features.image_size)
    if tuple(m.shape[-2:]) != features.padded_size:
        if tuple(m.shape[-2:]) != features.image_size:
            raise ValueError(f"mask size {size} does not match the image of these features")
        pad_h, pad_w = features.padded_size[0] - m.shape[-2], features.padded_size[1] - m.shape[-1]
        m = F.pad(m, (0, pad_w, 0, pad_h), value=False)  # bottom/right, like the image
    frac = F.adaptive_avg_pool2d(m[:, None].float(), features.mask_size)
    return logit * (2.0 * frac - 1.0)


def _copy_generator(generator: torch.Generator) -> torch.Generator:
    copy = torch.Generator(device=generator.device)
    copy.set_state(generator.get_state())
    return copy


def _image_tensor(image: ImageInput) -> Tensor:
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an H x W x 3 RGB array, got shape {image.shape}")
        return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    if not isinstance(image, Tensor) or image.dim() not in (3, 4) or image.shape[-3] != 3:
        raise ValueError("expected an RGB image: H x W x 3 numpy array or [3, H, W] / [B, 3, H, W] tensor")
    return image


# ----------------------------------------------------------------------------------------------------------
# Building and loading
# ----------------------------------------------------------------------------------------------------------


def _resolve_config(variant: str | SeemConfig) -> SeemConfig:
    return variant if isinstance(variant, SeemConfig) else SeemConfig.from_variant(variant)


def build_seem(config: SeemConfig | str = "focalt") -> SeemModel:
    """A `SeemModel` with initial (random) weights, in eval mode. Build under ``torch.device("meta")`` to get
    the structure without allocating memory."""
    return SeemModel(_resolve_config(config)).eval()


def load_seem(path_or_name: str | Path, variant: str | SeemConfig = "focalt", *,
              device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
              vocabulary: bool = True) -> SeemModel:
    """Build the model and load a checkpoint strictly (`vos.seem.checkpoint.load_state_dict_strict`).

    ``path_or_name``: a checkpoint file, or a registry name (``seem-focalt``, ``seem-focall``; found locally or
    downloaded from the Hugging Face hub, see `vos.seem.download`). ``variant``: ``"focalt"``, ``"focall"`` or a
    `SeemConfig` (e.g. ``SeemConfig.from_official_yaml(...)``). ``vocabulary``: compute the 134 COCO class
    embeddings needed by the class head (minutes on a CPU for full-size weights, then cached beside the weights
    folder); without it call `compute_vocabulary` or `set_class_embeddings` before using class logits. Returns
    the model in eval mode.
    """
    from vos.seem.checkpoint import compare_state_dicts, load_state_dict_strict, read_state_dict
    from vos.seem.download import resolve_weights

    config = _resolve_config(variant)
    state = read_state_dict(resolve_weights(path_or_name))
    label = variant if isinstance(variant, str) else "custom config"
    with torch.device("meta"):  # check the layout first: a wrong variant fails fast, before any allocation
        skeleton = SeemModel(config)
    missing, unexpected, mis_shaped = compare_state_dicts(skeleton.state_dict(), state)
    if missing or unexpected or mis_shaped:
        raise CheckpointError(f"{path_or_name} does not match the SEEM v1 {label} layout: "
                              f"{len(missing)} missing, {len(unexpected)} unexpected, {len(mis_shaped)} mis-shaped "
                              f"keys (first: {(missing + unexpected + mis_shaped)[:3]})")
    with torch.device(device):
        model = SeemModel(config)
    load_state_dict_strict(model, state)
    model.eval()
    if vocabulary:
        from vos.seem.download import weights_dir

        model.compute_vocabulary(cache_dir=weights_dir().parent / "text_embeddings")
    return model.to(dtype=dtype)
