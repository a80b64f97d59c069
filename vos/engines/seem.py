"""The ``seem`` engine: zero-shot video object segmentation with SEEM v1 memory prompts (spec §6, §7, §11.3).

Every frame is encoded once per session (backbone + pixel decoder; the features sit in the session's frame cache).
Each prompted frame of an object is an *anchor*: the referring-image tokens of the object's mask there (or of the
user's reference image + mask). In a propagation sweep each followed object takes one batch element of a single
decoder call on the shared features, with

* its spatial prompt for the frame: the tokens of its anchor nearest in time and/or a click at the interior of its
  previous mask (``propagation`` = ``"reference"``, ``"click"`` or ``"both"``);
* its mask logits on the previous frame of the sweep (forward or backward) as the memory prompt ``prev_mask``.

The selected spatial query's mask logits become the object's next memory.

**Absence.** A query's mask logit at a pixel is ``m . feature(pixel)`` (``m`` its mask embedding), and the anchor's
pooled vector ``p`` is the mean feature of the object on its reference, so ``m . p`` is the mean logit the query
would give the reference object. ``score = sigmoid(m . p)``: below ``absent_threshold`` (0.5, i.e. ``m . p < 0``)
the region the decoder found does not look like the object, so the object is reported absent (empty mask) and
its memory is dropped. While lost it is searched for with its anchor tokens and a memory that allows every
location, the same decoder input a fresh object prompted with its reference gets, until the score is back up.

**Prompts.** A mask is taken as given. Points, boxes (as a click at the centre, the official "Box" mode, with
the mask clipped to the box) and scribbles are decoded like interactive clicks, in one decoder call with the frame's
cached features; on a frame where the object already has a mask (a correction) that mask is the memory prompt, as in
SEEM's interactive refinement. A text alone is grounded; a text next to a spatial prompt chooses among the 3
candidate masks by text similarity; a reference image + mask gives the anchor tokens (and is judged for absence,
since nobody pointed at the object on the frame).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import Tensor

from vos.engine import Engine, ObjectResult, ObjectState, Propagation, VideoFrame
from vos.engines.seem_options import SeemOptions
from vos.errors import EngineError, PromptError
from vos.prompts import PROMPT_KINDS, Box, ObjectPrompt
from vos.seem.config import SeemConfig
from vos.seem.decoder import PromptTokens
from vos.seem.download import find_checkpoint
from vos.seem.model import ImageFeatures, SeemModel, build_seem, load_seem, upsample_logits
from vos.seem.preprocess import pad_to_multiple

PRECISIONS: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# A user mask fed back as memory needs logits, not 0/1: sigmoid(0) = 0.5 would leave the background attendable.
MASK_LOGIT = 8.0
# On its prompt frame a user mask wins every pixel it covers against the other objects.
USER_MASK_PRIORITY = 1e4
MASK_STRIDE = 4  # mask logits live on 1/4 of the padded input

WeightsOption = str | Path | SeemConfig | SeemModel


@dataclass
class SeemObject(ObjectState):
    """One object of a session: its spatial queries and the referring-image tokens of each of its anchor frames."""

    query_indices: Tensor = field(default=None, repr=False)  # type: ignore[assignment]  # [3], fixed per object
    anchors: dict[int, PromptTokens] = field(default_factory=dict, repr=False)  # anchor frame -> its tokens

    def anchor_near(self, index: int) -> PromptTokens:
        """The tokens of the anchor closest in time to frame ``index`` (the earlier one on a tie)."""
        return self.anchors[min(self.anchors, key=lambda frame: (abs(frame - index), frame))]


@dataclass
class TrackState:
    """What a propagation keeps about one object between frames (read it for inspection; do not modify it)."""

    object_id: int
    query_indices: Tensor  # [3] object-query rows copied as the object's spatial queries, fixed per object
    anchor: PromptTokens  # referring-image tokens of the object (batch 1)
    memory: Tensor | None  # [h4, w4] mask logits of the last frame it was seen on; None while it is lost

    @property
    def prototype(self) -> Tensor:
        """[C] mean mask feature of the object on its reference (the anchor's pooled vector)."""
        return self.anchor.pooled_pos[0, 0]


@dataclass
class _Slot:
    """One object's batch element in the frame's decoder call."""

    object_id: int
    tokens: PromptTokens
    query_indices: Tensor
    memory: Tensor | None = None  # None: the memory allows every location
    anchor: PromptTokens | None = None  # None for a new object found by clicks (built from its first mask)
    pointed: bool = False  # the user pointed at it on this frame: present by definition, no absence test
    text: Tensor | None = None  # [P] sentence embedding that chooses among the candidate masks
    keep: Tensor | None = None  # bool [h4, w4]: the box that bounds the mask


@dataclass
class _Outcome:
    """One object on this frame before the objects are merged into one label per pixel."""

    score: float
    logits: Tensor | None = None  # [h4, w4] when present and decoded
    user_mask: np.ndarray | None = None  # bool [H, W] when the user gave the mask on this frame

    @property
    def present(self) -> bool:
        return self.logits is not None or self.user_mask is not None


class SeemEngine(Engine):
    """Zero-shot tracking with SEEM v1: referring-image anchor + click + memory prompts (see the module docstring
    and :class:`SeemOptions`)."""

    name = "seem"
    supported_prompts = PROMPT_KINDS
    Options = SeemOptions
    options: SeemOptions

    def __init__(self, options: SeemOptions | None = None, **values: Any) -> None:
        super().__init__(options, **values)
        opts = self.options
        self.model = load_engine_model(opts.weights, opts.variant, opts.device, opts.precision)
        self.resolution = opts.resolution
        self.propagation = opts.propagation
        self.absent_threshold = opts.absent_threshold
        self.seed = opts.seed

    # ------------------------------------------------------------------------------------------------ session API
    def new_object(self, object_id: int) -> SeemObject:
        return SeemObject(object_id, self._query_indices(object_id))

    @torch.inference_mode()
    def add_prompt(self, frame: VideoFrame, state: ObjectState, prompt: ObjectPrompt,
                   current: np.ndarray | None) -> ObjectResult:
        """A mask is taken as given, a text alone is grounded, the rest is one decoder call; with ``current`` the
        clicks and strokes refine it (it is the decoder's memory prompt, SEEM's interactive refinement)."""
        assert isinstance(state, SeemObject)
        self.check_prompts([prompt])
        features = self._features(frame)
        if prompt.mask is not None:
            outcome = _Outcome(score=1.0, user_mask=prompt.mask.astype(bool))
        elif prompt.kinds == {"text"}:
            outcome = self._ground_text(features, prompt)
        else:
            current = current if current is not None and current.any() else None
            memory = self._mask_logits(features, current) if current is not None else None
            slot = self._prompt_slot(features, prompt, state.query_indices, memory, current)
            (logits, embedding), = self._decode(features, [slot])
            outcome, _ = self._update(features, slot, logits, embedding)
        result = self._results(features, {prompt.object_id: outcome})[prompt.object_id]
        if prompt.reference is not None or result.mask.any():
            state.anchors[frame.index] = self._anchor(features, prompt, result.mask)
        else:
            state.anchors.pop(frame.index, None)  # the object is absent here: nothing to learn from
        return result

    def prepare_frame(self, frame: VideoFrame) -> None:
        self._features(frame)

    def remove_anchor(self, state: ObjectState, frame_index: int) -> None:
        assert isinstance(state, SeemObject)
        state.anchors.pop(frame_index, None)

    def start_propagation(self) -> SeemPropagation:
        return SeemPropagation(self)

    def _features(self, frame: VideoFrame) -> ImageFeatures:
        """The frame's encoded features, computed once per frame and session (the session's feature cache)."""
        return frame.cached(f"seem/{self.resolution}", lambda: self._encode(frame.image))

    def _encode(self, image: np.ndarray) -> ImageFeatures:
        return self.model.encode_image(image, short_side=self.resolution)

    def _generator(self, object_id: int) -> torch.Generator:
        """Each object draws from its own seeded stream, so its result does not depend on the other objects."""
        return torch.Generator().manual_seed(self.seed * 1_000_003 + object_id)

    def _query_indices(self, object_id: int) -> Tensor:
        count = self.model.config.decoder.queries_per_object
        return torch.randint(0, self.model.config.decoder.num_queries, (count,), generator=self._generator(object_id))

    # ------------------------------------------------------------------------------------------------ propagation
    def _propagation_slots(self, features: ImageFeatures, tracks: Sequence[TrackState]) -> list[_Slot]:
        """Anchor and/or click tokens (one prompt-encoder call for all clicks) and memory of each followed object."""
        clicks: dict[int, Tensor] = {}
        if self.propagation != "reference":
            for track in tracks:
                click = None if track.memory is None else self._interior_click(features, track.memory)
                if click is not None:
                    clicks[track.object_id] = click
        click_tokens = self.model.encode_prompt(features, torch.stack(list(clicks.values()))) if clicks else None
        click_row = {object_id: row for row, object_id in enumerate(clicks)}
        slots = []
        for track in tracks:
            tokens = track.anchor
            if click_tokens is not None and track.object_id in click_row:
                own = click_tokens.select([click_row[track.object_id]])
                # "both": the anchor's pooled vector stays the one that selects the mask (appearance, not location)
                tokens = own if self.propagation == "click" else track.anchor.with_extra_tokens(own)
            slots.append(_Slot(track.object_id, tokens, track.query_indices, track.memory, track.anchor))
        return slots

    def _interior_click(self, features: ImageFeatures, logits: Tensor) -> Tensor | None:
        """A click at the point of the mask farthest from its border (the form of SEEM's evaluation clicks)."""
        inside = (self._in_image(features, logits) > 0).cpu().numpy().astype(np.uint8)
        if not inside.any():
            return None
        # padding with background makes the frame border count as a border of the object
        distance = cv2.distanceTransform(np.pad(inside, 1), cv2.DIST_L2, 5)[1:-1, 1:-1]
        y, x = np.unravel_index(int(distance.argmax()), distance.shape)
        return self._click(features, y * MASK_STRIDE + MASK_STRIDE // 2, x * MASK_STRIDE + MASK_STRIDE // 2)

    # ------------------------------------------------------------------------------------------------ prompts
    def _ground_text(self, features: ImageFeatures, prompt: ObjectPrompt) -> _Outcome:
        """Referring-text grounding (spec §8.4): the grounding query most similar to the sentence gives the mask."""
        assert prompt.text is not None
        logits = self.model.ground_text(features, prompt.text, with_class_logits=False).mask_logits[0]
        self._first_mask(features, prompt.object_id, logits)  # raises when the text selects nothing
        return _Outcome(score=self._inside_score(features, logits), logits=logits)

    def _prompt_slot(self, features: ImageFeatures, prompt: ObjectPrompt, query_indices: Tensor,
                     memory: Tensor | None, current: np.ndarray | None = None) -> _Slot:
        """Points, box, scribbles and/or a reference (plus an optional text) as one decoder batch element. In a
        correction (``current``: the object's mask on the frame) made of negative clicks alone, the positive
        prompt is the current mask without what they reject."""
        positive, negative = self._spatial_masks(features, prompt)
        if not positive.any() and current is not None:
            positive = self.model.prompt_masks(features, current)[0] & ~negative
        anchor = self._anchor(features, prompt, None) if prompt.reference is not None else None
        pointed = bool(positive.any())
        if not pointed and anchor is None:
            raise PromptError(f"object {prompt.object_id}: only negative points/scribbles; add a positive one")
        tokens = self.model.encode_prompt(features, positive[None], negative[None]) if pointed else None
        if anchor is not None:
            tokens = anchor if tokens is None else anchor.with_extra_tokens(tokens)
        assert tokens is not None
        text = None
        if prompt.text is not None:
            text = self.model.lang_encoder.get_text_token_embeddings([prompt.text], norm=False).class_emb[0]
        keep = self._box_region(features, prompt.box) if prompt.box is not None else None
        return _Slot(prompt.object_id, tokens, query_indices, memory=memory, anchor=anchor, pointed=pointed,
                     text=text, keep=keep)

    def _spatial_masks(self, features: ImageFeatures, prompt: ObjectPrompt) -> tuple[Tensor, Tensor]:
        """Positive and negative prompt masks [Hp, Wp]: 3x3 clicks for points and the box centre, strokes as drawn."""
        positive = torch.zeros(features.padded_size, dtype=torch.bool, device=self.model.device)
        negative = torch.zeros_like(positive)
        for point in prompt.points:
            click = self._click(features, *self._input_pixel(features, point.x, point.y))
            (positive if point.positive else negative).logical_or_(click)
        if prompt.box is not None:
            box = prompt.box
            centre = self._input_pixel(features, (box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2)
            positive |= self._click(features, *centre)
        height, width = features.original_size
        for scribble in prompt.scribbles:
            stroke = self.model.prompt_masks(features, scribble.rasterize(height, width))[0]
            (positive if scribble.positive else negative).logical_or_(stroke)
        return positive, negative & ~positive

    def _anchor(self, features: ImageFeatures, prompt: ObjectPrompt, mask: np.ndarray | Tensor | None) -> PromptTokens:
        """Referring-image tokens: of the user's reference when given, else of the object's mask on this frame."""
        generator = self._generator(prompt.object_id)
        if prompt.reference is not None:
            reference = self._encode(prompt.reference.image)
            return self.model.encode_reference(reference, prompt.reference.mask[None], generator=generator)
        assert mask is not None
        return self.model.encode_reference(features, mask[None], generator=generator)

    # ------------------------------------------------------------------------------------------------ decoding
    def _decode(self, features: ImageFeatures, slots: Sequence[_Slot]) -> list[tuple[Tensor, Tensor]]:
        """One decoder call for every slot; per slot the chosen mask logits [h4, w4] and mask embedding [C]."""
        if not slots:
            return []
        open_memory = features.mask_features.new_zeros(features.mask_size)  # logit 0 is not masked: attend anywhere
        memory = torch.stack([s.memory if s.memory is not None else open_memory for s in slots])
        result = self.model.decode_prompt(features, PromptTokens.cat([s.tokens for s in slots]), prev_mask=memory,
                                          query_indices=torch.stack([s.query_indices for s in slots]),
                                          with_class_logits=False)
        chosen = result.query_index.clone()
        for b, slot in enumerate(slots):
            if slot.text is not None:
                similarity = self.model.lang_encoder.grounding_similarity(result.candidate_embeddings[b],
                                                                          slot.text[None])
                chosen[b] = similarity[:, 0].argmax()
        rows = torch.arange(len(slots), device=chosen.device)
        return list(zip(result.candidate_mask_logits[rows, chosen], result.candidate_mask_embeddings[rows, chosen]))

    def _update(self, features: ImageFeatures, slot: _Slot, logits: Tensor,
                embedding: Tensor) -> tuple[_Outcome, Tensor | None]:
        """Score the decoded mask and decide presence; returns the outcome and the object's next memory."""
        if slot.keep is not None:
            logits = logits.masked_fill(~slot.keep, -MASK_LOGIT)
        if slot.pointed:
            self._first_mask(features, slot.object_id, logits)  # raises when the prompt selects nothing
            score, present = self._inside_score(features, logits), True
        else:
            assert slot.anchor is not None
            score = float(torch.sigmoid(embedding.float() @ slot.anchor.pooled_pos[0, 0].float()))
            present = score >= self.absent_threshold and bool((self._in_image(features, logits) > 0).any())
        memory = logits if present else None
        return _Outcome(score=score, logits=memory), memory

    # ------------------------------------------------------------------------------------------------ output
    def _results(self, features: ImageFeatures, outcomes: Mapping[int, _Outcome]) -> dict[int, ObjectResult]:
        """Masks at the frame size, one object per pixel: the largest logit wins where it is positive."""
        height, width = features.original_size
        present = [i for i, o in outcomes.items() if o.present]
        masks = {i: np.zeros((height, width), bool) for i in outcomes}
        if present:
            maps: dict[int, Tensor] = {}
            decoded = [i for i in present if outcomes[i].user_mask is None]
            if decoded:
                stacked = torch.stack([outcomes[i].logits for i in decoded]).float()  # type: ignore[misc]
                maps.update(zip(decoded, upsample_logits(stacked, features).cpu()))
            for i in present:
                user = outcomes[i].user_mask
                if user is not None:
                    maps[i] = torch.where(torch.from_numpy(user), USER_MASK_PRIORITY, -USER_MASK_PRIORITY)
            best, owner = torch.stack([maps[i] for i in present]).max(0)
            for k, i in enumerate(present):
                masks[i] = ((owner == k) & (best > 0)).numpy()
        return {i: ObjectResult(i, masks[i], outcomes[i].score) for i in outcomes}

    # ------------------------------------------------------------------------------------------------ geometry
    def _input_pixel(self, features: ImageFeatures, x: float, y: float) -> tuple[int, int]:
        """Frame coordinates -> (row, column) on the resized model input (pixel centres kept aligned)."""
        (h0, w0), (h, w) = features.original_size, features.image_size
        row = min(h - 1, max(0, round((y + 0.5) * h / h0 - 0.5)))
        col = min(w - 1, max(0, round((x + 0.5) * w / w0 - 0.5)))
        return row, col

    def _click(self, features: ImageFeatures, row: int, col: int) -> Tensor:
        """A 3x3 square at (row, col) of the padded input, inside the image: SEEM's dilated click."""
        click = torch.zeros(features.padded_size, dtype=torch.bool, device=self.model.device)
        h, w = features.image_size
        click[max(0, row - 1):min(h, row + 2), max(0, col - 1):min(w, col + 2)] = True
        return click

    def _box_region(self, features: ImageFeatures, box: Box) -> Tensor:
        """bool [h4, w4]: the mask cells that overlap the box."""
        (h0, w0), (h, w) = features.original_size, features.image_size
        sy, sx = h / h0 / MASK_STRIDE, w / w0 / MASK_STRIDE
        keep = torch.zeros(features.mask_size, dtype=torch.bool, device=self.model.device)
        keep[math.floor(box.y0 * sy):math.ceil(box.y1 * sy), math.floor(box.x0 * sx):math.ceil(box.x1 * sx)] = True
        return keep

    def _in_image(self, features: ImageFeatures, logits: Tensor) -> Tensor:
        """The mask cells that cover the image (the rest covers the bottom/right padding)."""
        h, w = features.image_size
        return logits[: -(-h // MASK_STRIDE), : -(-w // MASK_STRIDE)]

    def _mask_logits(self, features: ImageFeatures, mask: np.ndarray) -> Tensor:
        """A user mask as memory logits [h4, w4]: +-MASK_LOGIT by the covered fraction of each cell."""
        x = torch.from_numpy(mask).to(self.model.device, torch.float32)[None, None]
        x = torch.nn.functional.interpolate(x, size=features.image_size, mode="bilinear", align_corners=False)
        x = pad_to_multiple(x, self.model.config.size_divisibility)
        covered = torch.nn.functional.avg_pool2d(x, MASK_STRIDE)[0, 0]
        return ((covered - 0.5) * 2 * MASK_LOGIT).to(features.mask_features.dtype)

    def _first_mask(self, features: ImageFeatures, object_id: int, logits: Tensor) -> Tensor:
        """The decoded mask on the resized image; a prompt that selects nothing is an error."""
        mask = upsample_logits(logits[None].float(), features, output_size=features.image_size)[0] > 0
        if not bool(mask.any()):
            raise PromptError(f"object {object_id}: the prompt selects nothing on its frame; give a mask or more "
                              "clicks")
        return mask

    def _inside_score(self, features: ImageFeatures, logits: Tensor) -> float:
        """sigmoid of the mean logit inside the mask: how sure the model is of the mask it drew."""
        inside = self._in_image(features, logits).float()
        return float(torch.sigmoid(inside[inside > 0].mean())) if bool((inside > 0).any()) else 0.0


class SeemPropagation(Propagation):
    """One sweep: each object's memory (its mask logits on the previous frame of the sweep, None while lost).

    Each followed object is decoded with the tokens of its anchor nearest in time and its memory; objects seeded on
    a frame take their given mask, which becomes their memory. :attr:`tracks` holds the objects after the last step.
    """

    def __init__(self, engine: SeemEngine) -> None:
        self._engine = engine
        self.tracks: dict[int, TrackState] = {}

    @torch.inference_mode()
    def step(self, frame: VideoFrame, objects: Mapping[int, ObjectState],
             seeds: Mapping[int, np.ndarray]) -> dict[int, ObjectResult]:
        engine = self._engine
        features = engine._features(frame)
        outcomes: dict[int, _Outcome] = {}
        tracks: dict[int, TrackState] = {}
        for object_id, state in objects.items():
            assert isinstance(state, SeemObject)
            if not state.anchors:  # prompted only where it is absent: nothing to follow
                outcomes[object_id] = _Outcome(score=0.0)
                continue
            memory = self.tracks[object_id].memory if object_id in self.tracks else None
            if object_id in seeds:
                seed = seeds[object_id]
                memory = engine._mask_logits(features, seed) if seed.any() else None
                outcomes[object_id] = _Outcome(score=float(seed.any()), user_mask=seed if seed.any() else None)
            tracks[object_id] = TrackState(object_id, state.query_indices, state.anchor_near(frame.index), memory)
        slots = engine._propagation_slots(features, [t for i, t in tracks.items() if i not in seeds])
        for slot, (logits, embedding) in zip(slots, engine._decode(features, slots)):
            outcomes[slot.object_id], tracks[slot.object_id].memory = engine._update(features, slot, logits,
                                                                                     embedding)
        self.tracks = tracks
        return engine._results(features, outcomes)


# ---------------------------------------------------------------------------------------------------- weights


def load_engine_model(weights: WeightsOption, variant: str | Path | SeemConfig | None = None,
                      device: str | None = None, precision: str | None = None) -> SeemModel:
    """The model for the engine options, in eval mode on ``device`` in ``precision``.

    A ready model keeps its device and dtype unless they are given. A `SeemConfig` builds random weights (tests and
    benchmarks). A registry name is downloaded into the Hugging Face cache on first use (`vos.seem.download`).
    """
    dtype = _dtype(precision, device) if precision is not None else None
    target = _device(device) if device is not None else None
    if isinstance(weights, SeemModel):
        return weights.to(device=target, dtype=dtype).eval()
    target = target or torch.device("cpu")
    if isinstance(weights, SeemConfig):
        with target:
            model = build_seem(weights)
        return model.to(dtype=dtype or torch.float32)
    config = _model_config(variant, weights)
    return load_seem(weights, config, device=target, dtype=dtype or torch.float32, vocabulary=False)


def _model_config(variant: str | Path | SeemConfig | None, weights: str | Path) -> SeemConfig:
    """``variant``: a config, ``focalt``/``focall``, or an official YAML file; by default the registry's variant
    for a checkpoint name and Focal-T for a file."""
    if isinstance(variant, SeemConfig):
        return variant
    if variant is None:
        info = find_checkpoint(str(weights))
        return SeemConfig.from_variant(info.variant) if info else SeemConfig.focal_t()
    if Path(variant).suffix.lower() in (".yaml", ".yml"):
        return SeemConfig.from_official_yaml(variant)
    return SeemConfig.from_variant(str(variant))


def _device(device: str) -> torch.device:
    try:
        target = torch.device(device)
    except RuntimeError as exc:
        raise EngineError(f"unknown device {device!r}: {exc}") from None
    if target.type == "cuda" and not torch.cuda.is_available():
        raise EngineError(f"device {device!r} asked for, but CUDA is not available")
    return target


def _dtype(precision: str, device: str | None) -> torch.dtype:
    if precision not in PRECISIONS:
        raise EngineError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp16" and (device is None or not device.startswith("cuda")):
        raise EngineError("fp16 runs on CUDA only; use bf16 or fp32 on the CPU")
    return PRECISIONS[precision]
