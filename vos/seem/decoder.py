"""SEEM v1 decoder (`sem_seg_head.predictor`, official name ``seem_v1``), written from the specification.

Layout of one decoder call (batch-first internally; the official code is sequence-first, which is only a
transpose):

* **queries** take part in masked cross-attention with the image features and feed the prediction heads:
  ``object`` (learnable, Q rows), ``grounding`` (copies of the initial object queries, for text grounding),
  ``spatial`` (3 random copies of the initial object queries per prompted object) and ``memory`` (32 memory
  tokens whose cross-attention mask comes from the previous mask, active only when ``prev_mask`` is given);
* **tokens** only take part in self-attention: ``grounding`` text tokens and the per-level ``spatial`` prompt
  tokens (re-created at every layer from the level being attended, so they are keys/values only: their own
  outputs would be discarded and are not computed).

Self-attention groups keep object queries, grounding and spatial prompts fully isolated from one another, so
every group can be computed with or without the others (used here to skip the object queries when only a
prompted mask is wanted).

Randomness (the 3 spatial-query copies, point sub-sampling of prompts with more than 512 pixels, and memory
assignment when one batch element holds several objects) is either drawn from an explicit ``torch.Generator``
or injected (``query_indices`` / ``memory_assignment``), so results are reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vos.seem.config import DecoderConfig

# ----------------------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------------------


def sine_position_encoding(height: int, width: int, channels: int, *, device: torch.device,
                           dtype: torch.dtype, temperature: float = 10000.0) -> Tensor:
    """DETR-style normalised sine encoding of an ``height x width`` grid, flattened row-major -> [h*w, channels].

    Computed in float32 and cast afterwards: the official code computes it in the feature dtype, which only
    matters under fp16 autocast (and there fp32 is the more accurate choice).
    """
    num_feats = channels // 2
    scale = 2 * math.pi
    eps = 1e-6
    y = torch.arange(1, height + 1, device=device, dtype=torch.float32)
    x = torch.arange(1, width + 1, device=device, dtype=torch.float32)
    y = y / (height + eps) * scale
    x = x / (width + eps) * scale
    dim_t = torch.arange(num_feats, device=device, dtype=torch.float32)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_feats)
    pos_y = y[:, None] / dim_t  # [h, F]
    pos_x = x[:, None] / dim_t  # [w, F]
    # channel k is sin for even k and cos for odd k (interleaved)
    pos_y = torch.stack((pos_y[:, 0::2].sin(), pos_y[:, 1::2].cos()), dim=2).flatten(1)
    pos_x = torch.stack((pos_x[:, 0::2].sin(), pos_x[:, 1::2].cos()), dim=2).flatten(1)
    pos = torch.cat((pos_y[:, None, :].expand(height, width, num_feats),
                     pos_x[None, :, :].expand(height, width, num_feats)), dim=2)
    return pos.reshape(height * width, 2 * num_feats).to(dtype)


class MultiHeadAttention(nn.Module):
    """Multi-head attention with the parameter layout of ``nn.MultiheadAttention`` (``in_proj_weight``,
    ``in_proj_bias``, ``out_proj``), batch-first, boolean masks with True = not allowed.

    Keys/values may have batch 1 while queries have batch B (shared image features): the projections of the
    (large) key/value sequence are then computed once and broadcast. A query row whose keys are all masked gets
    zero attention (the official self-attention's NaN->0), so its output is just the output bias.
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.dim = dim
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.in_proj_bias)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, query: Tensor, key: Tensor, value: Tensor, blocked: Tensor | None) -> Tensor:
        """query [B, Lq, C]; key/value [B or 1, Lk, C]; blocked [B, Lq, Lk] bool (True = masked) or None."""
        w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        b_q, b_k, b_v = self.in_proj_bias.chunk(3)
        batch, len_q, _ = query.shape
        len_k = key.shape[1]
        head_dim = self.dim // self.num_heads
        q = F.linear(query, w_q, b_q).view(batch, len_q, self.num_heads, head_dim).transpose(1, 2)
        k = F.linear(key, w_k, b_k).view(key.shape[0], len_k, self.num_heads, head_dim).transpose(1, 2)
        v = F.linear(value, w_v, b_v).view(value.shape[0], len_k, self.num_heads, head_dim).transpose(1, 2)
        k = k.expand(batch, -1, -1, -1)
        v = v.expand(batch, -1, -1, -1)
        q = q * (float(head_dim) ** -0.5)  # scale q before q.k like nn.MultiheadAttention
        if q.dtype != k.dtype:  # mixed dtypes can appear under autocast when inputs were not cast alike
            k, v = k.to(q.dtype), v.to(q.dtype)
        attn_mask = None if blocked is None else (~blocked)[:, None]  # SDPA: True = allowed
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=1.0)
        if blocked is not None:
            # rows with every key masked yield NaN in softmax; the official self-attention turns them into 0
            out = torch.nan_to_num(out, nan=0.0)
        out = out.transpose(1, 2).reshape(batch, len_q, self.dim)
        return self.out_proj(out)


class CrossAttentionLayer(nn.Module):
    """Post-norm masked cross-attention: ``T <- LN(T + MHA(T + P_T, S + P_S, S, mask))``."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.multihead_attn = MultiHeadAttention(dim, num_heads)
        self.norm = nn.LayerNorm(dim)

    def forward(self, tgt: Tensor, tgt_pos: Tensor, memory: Tensor, memory_pos: Tensor, blocked: Tensor) -> Tensor:
        out = self.multihead_attn(tgt + tgt_pos, memory + memory_pos, memory, blocked)
        return self.norm(tgt + out)


class SelfAttentionLayer(nn.Module):
    """Post-norm self-attention: ``T <- LN(T + MHA(T + P, T + P, T, mask))`` (fully masked rows give zeros)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(dim, num_heads)
        self.norm = nn.LayerNorm(dim)

    def forward(self, tgt: Tensor, tgt_pos: Tensor, blocked: Tensor, rows: Tensor | None = None) -> Tensor:
        """tgt/tgt_pos [B, N, C], blocked [B, N, N]. ``rows`` [R]: compute only these positions (every position
        stays a key/value) and return [B, R, C]; all N positions when None."""
        qk = tgt + tgt_pos
        if rows is None:
            return self.norm(tgt + self.self_attn(qk, qk, tgt, blocked))
        query = tgt.index_select(1, rows)
        out = self.self_attn(qk.index_select(1, rows), qk, tgt, blocked.index_select(1, rows))
        return self.norm(query + out)


class FFNLayer(nn.Module):
    """Post-norm feed-forward: ``T <- LN(T + linear2(ReLU(linear1(T))))``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.linear1 = nn.Linear(dim, hidden)
        self.linear2 = nn.Linear(hidden, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, tgt: Tensor) -> Tensor:
        return self.norm(tgt + self.linear2(F.relu(self.linear1(tgt))))


class MLP(nn.Module):
    """Linear layers with ReLU between them (none after the last one)."""

    def __init__(self, dim_in: int, dim_hidden: int, dim_out: int, num_layers: int) -> None:
        super().__init__()
        dims = [dim_in] + [dim_hidden] * (num_layers - 1) + [dim_out]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


# ----------------------------------------------------------------------------------------------------------
# Prompt data structures
# ----------------------------------------------------------------------------------------------------------


@dataclass
class PromptTokens:
    """Spatial prompt encoded on one image ("refimg tokens"), batch-first.

    One batch element per decoder batch element; ``mb`` objects per element (the public API uses mb = 1 and one
    object per batch element). Unlike the official dict it carries the per-token object index, which the
    official v1 target pass needs but never receives (the upstream ``src_spatial_indices`` crash).
    """

    pooled_pos: Tensor  # [B, mb, C] mean mask_features over the positive points (-1 when no point)
    pooled_neg: Tensor  # [B, mb, C] same for the negative points
    level_tokens: tuple[Tensor, ...]  # per level [B, S_l, C] (projected features + pn_indicator)
    level_padding: tuple[Tensor, ...]  # per level [B, S_l] bool, True = padding
    level_object_index: tuple[Tensor, ...]  # per level [B, S_l] long, object index n, -1 = padding

    @property
    def batch_size(self) -> int:
        return self.pooled_pos.shape[0]

    @property
    def num_objects(self) -> int:
        return self.pooled_pos.shape[1]

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> PromptTokens:
        """Move to a device and/or cast the float tensors (e.g. tokens from another run or device)."""
        def floats(t: Tensor) -> Tensor:
            return t.to(device=device, dtype=dtype)

        def ints(t: Tensor) -> Tensor:
            return t.to(device=device)

        return PromptTokens(floats(self.pooled_pos), floats(self.pooled_neg),
                            tuple(floats(t) for t in self.level_tokens), tuple(ints(t) for t in self.level_padding),
                            tuple(ints(t) for t in self.level_object_index))

    def select(self, index: Sequence[int] | Tensor) -> PromptTokens:
        """Keep the given batch elements (trims padding that is no longer needed)."""
        idx = torch.as_tensor(index, dtype=torch.long, device=self.pooled_pos.device)
        tokens, padding, obj = [], [], []
        for t, p, o in zip(self.level_tokens, self.level_padding, self.level_object_index):
            t, p, o = t[idx], p[idx], o[idx]
            used = (~p).any(0).nonzero()  # padding may sit between token groups (with_extra_tokens)
            keep = int(used[-1]) + 1 if used.numel() else 0
            tokens.append(t[:, :keep])
            padding.append(p[:, :keep])
            obj.append(o[:, :keep])
        return PromptTokens(self.pooled_pos[idx], self.pooled_neg[idx], tuple(tokens), tuple(padding), tuple(obj))

    @staticmethod
    def cat(parts: Sequence[PromptTokens]) -> PromptTokens:
        """Concatenate along the batch (objects must agree in count; token lengths are re-padded)."""
        tokens, padding, obj = [], [], []
        for level in range(len(parts[0].level_tokens)):
            length = max(p.level_tokens[level].shape[1] for p in parts)
            tokens.append(torch.cat([_pad_seq(p.level_tokens[level], length, 0.0) for p in parts]))
            padding.append(torch.cat([_pad_seq(p.level_padding[level], length, True) for p in parts]))
            obj.append(torch.cat([_pad_seq(p.level_object_index[level], length, -1) for p in parts]))
        return PromptTokens(torch.cat([p.pooled_pos for p in parts]), torch.cat([p.pooled_neg for p in parts]),
                            tuple(tokens), tuple(padding), tuple(obj))


    def with_extra_tokens(self, extra: PromptTokens) -> PromptTokens:
        """These pooled vectors (used for selection) with the tokens of ``extra`` appended per level.

        For combining e.g. reference-image tokens with click tokens on the current image (§11.3 option c); both
        must have the same batch size and object count (object indices are kept).
        """
        if extra.batch_size != self.batch_size or extra.num_objects != self.num_objects:
            raise ValueError("prompt tokens to combine must agree in batch size and object count")
        tokens = tuple(torch.cat([a, b.to(a.dtype)], dim=1) for a, b in zip(self.level_tokens, extra.level_tokens))
        padding = tuple(torch.cat([a, b], dim=1) for a, b in zip(self.level_padding, extra.level_padding))
        obj = tuple(torch.cat([a, b], dim=1) for a, b in zip(self.level_object_index, extra.level_object_index))
        return PromptTokens(self.pooled_pos, self.pooled_neg, tokens, padding, obj)


def _pad_seq(t: Tensor, length: int, value: float | bool | int) -> Tensor:
    if t.shape[1] == length:
        return t
    pad_shape = (t.shape[0], length - t.shape[1]) + tuple(t.shape[2:])
    return torch.cat([t, t.new_full(pad_shape, value)], dim=1)


@dataclass
class GroundingTokens:
    """Text tokens for grounding: projected, unnormalised token embeddings, batch-first."""

    tokens: Tensor  # [B, L, C]
    padding: Tensor  # [B, L] bool, True = padded token


@dataclass
class Prediction:
    """One set of predictions (the final one or an auxiliary one), restricted to each query group.

    Mask tensors are logits at 1/4 of the padded input. Missing groups are None.
    """

    object_logits: Tensor | None = None  # [B, Q, K]  official pred_logits (None without class logits)
    object_masks: Tensor | None = None  # [B, Q, h, w]  pred_masks
    object_embeddings: Tensor | None = None  # [B, Q, P]  pred_captions (class_embed output)
    grounding_masks: Tensor | None = None  # [B, Q, h, w]  pred_gmasks
    grounding_embeddings: Tensor | None = None  # [B, Q, P]  pred_gtexts
    spatial_masks: Tensor | None = None  # [B, 3mb, h, w]  pred_smasks
    spatial_embeddings: Tensor | None = None  # [B, 3mb, P]  pred_stexts
    spatial_mask_embeddings: Tensor | None = None  # [B, 3mb, C]  pred_smaskembs
    pooled_pos: Tensor | None = None  # [B, mb, C]  pred_pspatials
    pooled_neg: Tensor | None = None  # [B, mb, C]  pred_nspatials

    _OFFICIAL_NAMES = {
        "object_logits": "pred_logits", "object_masks": "pred_masks", "object_embeddings": "pred_captions",
        "grounding_masks": "pred_gmasks", "grounding_embeddings": "pred_gtexts", "spatial_masks": "pred_smasks",
        "spatial_embeddings": "pred_stexts", "spatial_mask_embeddings": "pred_smaskembs",
        "pooled_pos": "pred_pspatials", "pooled_neg": "pred_nspatials",
    }

    def to_official(self) -> dict[str, Tensor]:
        """The official output key names (``pred_logits``, ``pred_smasks`` ...)."""
        return {official: getattr(self, ours) for ours, official in self._OFFICIAL_NAMES.items()
                if getattr(self, ours) is not None}


@dataclass
class DecoderOutput:
    """Final predictions, optional auxiliary ones (#0 .. #L-1) and the random draws used."""

    final: Prediction
    aux: list[Prediction] = field(default_factory=list)
    query_indices: Tensor | None = None  # [3 mb] rows of the object queries copied as spatial queries
    memory_assignments: list[Tensor] = field(default_factory=list)  # per layer [M] object index per memory slot


@dataclass
class SpatialSelection:
    """Result of the official spatial selection (`update_spatial_results`)."""

    masks: Tensor  # [B, mb, h, w] logits of the selected spatial query of each object (official prev_mask)
    scores: Tensor  # [B, mb] selection score pred_smaskembs . pred_pspatials of the selected query
    query_index: Tensor  # [B, mb] index j* into the 3mb spatial queries
    embeddings: Tensor  # [B, mb, P] class-space embedding (pred_stexts) of the selected query
    mask_embeddings: Tensor  # [B, mb, C] mask embedding (pred_smaskembs) of the selected query


# ----------------------------------------------------------------------------------------------------------
# Prompt point sampling
# ----------------------------------------------------------------------------------------------------------


def sample_prompt_points(mask: Tensor, budget: int, generator: torch.Generator | None = None) -> Tensor:
    """The official ``rand_sample`` (v1): True pixels of ``mask [mb, H, W]`` as ``(n, y, x)`` rows [K, 3].

    Every pixel is kept when there are at most ``budget``; otherwise ``budget`` pixels are drawn without
    replacement with per-object balanced probabilities and returned in raster (object-major) order.
    """
    points = mask.nonzero()
    if points.shape[0] <= budget:
        return points
    counts = torch.bincount(points[:, 0], minlength=mask.shape[0])
    present = int((counts > 0).sum())
    prob = 1.0 / (present * counts[points[:, 0]].to(torch.float64))
    draw_device = generator.device if generator is not None else prob.device
    chosen = torch.multinomial(prob.to(draw_device), budget, replacement=False, generator=generator)
    return points[chosen.sort().values.to(points.device)]


def point_sample(features: Tensor, points_xy: Tensor) -> Tensor:
    """Bilinear lookup with ``align_corners=True``: features [N, C, H, W], points [N, P, 2] in [0, 1] (x, y)
    -> [N, P, C]. Points are the official ``(x / Wp, y / Hp)`` of integer pixels of the padded grid."""
    grid = (2.0 * points_xy - 1.0).to(features.dtype).unsqueeze(2)  # [N, P, 1, 2]
    out = F.grid_sample(features, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return out.squeeze(3).transpose(1, 2)


def _normalised_xy(points: Tensor, height: int, width: int) -> Tensor:
    """(n, y, x) integer rows -> (x / W, y / H) float rows (divided by the padded size, no +0.5)."""
    y = points[:, 1].to(torch.float32) / height
    x = points[:, 2].to(torch.float32) / width
    return torch.stack((x, y), dim=1)


# ----------------------------------------------------------------------------------------------------------
# The decoder
# ----------------------------------------------------------------------------------------------------------


class SeemDecoder(nn.Module):
    """SEEM v1 decoder; parameter names equal the official ``sem_seg_head.predictor.*`` keys.

    ``lang_encoder`` is the text encoder (`vos.seem.text_encoder.LanguageEncoder`) registered under
    ``lang_encoder``; the class head uses its ``logit_scale`` and its class-name embeddings
    (``default_text_embeddings``, never part of a checkpoint: set them with `set_class_embeddings` or
    ``lang_encoder.get_text_embeddings()`` after loading).
    """

    def __init__(self, config: DecoderConfig, lang_encoder: nn.Module) -> None:
        super().__init__()
        c = config
        self.config = c
        dim = c.hidden_dim
        # own parameter first: state_dict puts it before all children, as in the official module
        self.class_embed = nn.Parameter(torch.empty(dim, c.dim_proj))
        self.transformer_self_attention_layers = nn.ModuleList(
            SelfAttentionLayer(dim, c.num_heads) for _ in range(c.num_layers))
        self.transformer_cross_attention_layers = nn.ModuleList(
            CrossAttentionLayer(dim, c.num_heads) for _ in range(c.num_layers))
        self.transformer_ffn_layers = nn.ModuleList(FFNLayer(dim, c.dim_feedforward) for _ in range(c.num_layers))
        self.decoder_norm = nn.LayerNorm(dim)
        self.query_feat = nn.Embedding(c.num_queries, dim)
        self.query_embed = nn.Embedding(c.num_queries, dim)
        self.level_embed = nn.Embedding(c.num_feature_levels, dim)
        self.lang_encoder = lang_encoder
        self.mask_embed = MLP(dim, dim, c.mask_dim, 3)
        self.mask_sptial_embed = nn.ParameterList(  # (sic) official key spelling
            nn.Parameter(torch.empty(dim, dim)) for _ in range(c.num_feature_levels))
        self.spatial_embed = nn.Embedding(c.spatial_memories, dim)
        self.spatial_featured = nn.Embedding(c.spatial_memories, dim)
        self.pn_indicator = nn.Embedding(2, dim)
        self._init_parameters()

    def _init_parameters(self) -> None:
        if self.class_embed.is_meta:
            return
        nn.init.trunc_normal_(self.class_embed, std=0.02)
        for p in self.mask_sptial_embed:
            nn.init.trunc_normal_(p, std=0.02)

    # ------------------------------------------------------------------------------------------------------
    def set_class_embeddings(self, embeddings: Tensor) -> None:
        """L2-normalised class-name embeddings [K, P] used by the class head (``default_text_embeddings``)."""
        self.lang_encoder.set_text_embeddings(embeddings.detach())

    def class_logits(self, class_embeddings: Tensor) -> Tensor:
        """``exp(logit_scale) * normalize(v) @ E_text^T`` [..., K] (unclamped, as the official class head)."""
        return self.lang_encoder.compute_similarity(class_embeddings)

    # ------------------------------------------------------------------------------------------------------
    def _prepare_levels(self, multi_scale_features: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor],
                                                                             list[tuple[int, int]]]:
        """Per level (coarse -> fine): src [Bf, h*w, C] (+ level_embed), pos [1, h*w, C], size (h, w)."""
        srcs, poss, sizes = [], [], []
        for level, feat in enumerate(multi_scale_features[: self.config.num_feature_levels]):
            _, channels, h, w = feat.shape
            src = feat.flatten(2).transpose(1, 2) + self.level_embed.weight[level]
            pos = sine_position_encoding(h, w, channels, device=feat.device, dtype=src.dtype)
            srcs.append(src)
            poss.append(pos[None])
            sizes.append((h, w))
        return srcs, poss, sizes

    # ------------------------------------------------------------------------------------------------------
    def encode_prompt(self, multi_scale_features: Sequence[Tensor], mask_features: Tensor,
                      pos_masks: Sequence[Tensor] | Tensor, neg_masks: Sequence[Tensor] | Tensor | None = None,
                      *, generator: torch.Generator | None | Sequence[torch.Generator | None] = None
                      ) -> PromptTokens:
        """Encode spatial prompts (the official ``task='refimg'`` early return, plus object indices).

        ``pos_masks`` / ``neg_masks``: per batch element a bool mask ``[mb, Hp, Wp]`` at the padded input size
        (a tensor [B, mb, Hp, Wp] also works). The feature tensors may have batch B or 1 (shared features).
        ``generator``: one generator for the whole batch (official draw order) or one per batch element, so that
        an element's point sub-sampling does not depend on the other elements.
        """
        if neg_masks is None:
            neg_masks = [torch.zeros_like(m, dtype=torch.bool) for m in pos_masks]
        if len(pos_masks) != len(neg_masks):
            raise ValueError("positive and negative prompt masks differ in batch size")
        batch = len(pos_masks)
        feat_batch = mask_features.shape[0]
        if feat_batch not in (1, batch):
            raise ValueError(f"features have batch {feat_batch}, prompts have batch {batch}")
        srcs, _, sizes = self._prepare_levels(multi_scale_features)
        budgets = self.config.max_spatial_len
        if generator is None or isinstance(generator, torch.Generator):
            generators: list[torch.Generator | None] = [generator] * batch
        else:
            generators = list(generator)
            if len(generators) != batch:
                raise ValueError(f"{len(generators)} generators given for a batch of {batch}")

        pooled_pos, pooled_neg = [], []
        for b in range(batch):
            fb = b if feat_batch > 1 else 0
            pooled_pos.append(self._pooled_prompt(mask_features[fb], pos_masks[b], budgets[-1], generators[b]))
            pooled_neg.append(self._pooled_prompt(mask_features[fb], neg_masks[b], budgets[-1], generators[b]))
        num_obj = max(p.shape[0] for p in pooled_pos)
        pooled_pos_t = torch.stack([_pad_rows(p, num_obj, -1.0) for p in pooled_pos]).nan_to_num(0.0)
        pooled_neg_t = torch.stack([_pad_rows(p, num_obj, -1.0) for p in pooled_neg]).nan_to_num(0.0)

        tokens, paddings, indices = [], [], []
        for level, (src, (h, w)) in enumerate(zip(srcs, sizes)):
            # per-level prompt feature map: (src + level_embed) @ mask_sptial_embed[l]  (right multiplication)
            grid = (src @ self.mask_sptial_embed[level].to(src.dtype)).transpose(1, 2).reshape(-1, src.shape[-1], h, w)
            per_b = []
            for b in range(batch):
                fb = b if feat_batch > 1 else 0
                per_b.append(self._level_tokens(grid[fb:fb + 1], pos_masks[b], neg_masks[b], budgets[level],
                                                generators[b]))
            length = max(t.shape[0] for t, _ in per_b)
            tok = torch.stack([_pad_rows(t, length, 0.0) for t, _ in per_b])
            idx = torch.stack([_pad_rows(i, length, -1) for _, i in per_b])
            tokens.append(tok)
            indices.append(idx)
            paddings.append(idx < 0)
        return PromptTokens(pooled_pos_t, pooled_neg_t, tuple(tokens), tuple(paddings), tuple(indices))

    def _pooled_prompt(self, mask_features: Tensor, mask: Tensor, budget: int,
                       generator: torch.Generator | None) -> Tensor:
        """[mb, C]: mean of point_sample(mask_features) over each object's sampled points (-1 if none)."""
        num_obj, height, width = mask.shape
        out = mask_features.new_full((num_obj, mask_features.shape[0]), -1.0)
        points = sample_prompt_points(mask, budget, generator)
        if points.shape[0] == 0:
            return out
        values = point_sample(mask_features[None], _normalised_xy(points, height, width)[None])[0]  # [K, C]
        for n in range(num_obj):
            sel = points[:, 0] == n
            if bool(sel.any()):
                out[n] = values[sel].mean(0)
        return out

    def _level_tokens(self, grid: Tensor, pos: Tensor, neg: Tensor, budget: int,
                      generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """Tokens [S, C] (positives then negatives, + pn_indicator) and their object index [S]."""
        height, width = pos.shape[-2:]
        pos_points = sample_prompt_points(pos, budget, generator)
        neg_points = sample_prompt_points(neg, budget, generator)
        points = torch.cat([pos_points, neg_points])
        polarity = torch.cat([torch.zeros(len(pos_points), dtype=torch.long, device=points.device),
                              torch.ones(len(neg_points), dtype=torch.long, device=points.device)])
        if points.shape[0] == 0:
            return grid.new_zeros((0, grid.shape[1])), points.new_zeros((0,))
        values = point_sample(grid, _normalised_xy(points, height, width)[None])[0]
        values = values + self.pn_indicator.weight[polarity.to(values.device)].to(values.dtype)
        return values, points[:, 0].to(values.device)

    # ------------------------------------------------------------------------------------------------------
    def forward(self, multi_scale_features: Sequence[Tensor], mask_features: Tensor, *,
                batch_size: int | None = None,
                prompt: PromptTokens | None = None,
                query_indices: Tensor | None = None,
                prev_mask: Tensor | None = None,
                memory_assignment: Tensor | None = None,
                grounding: GroundingTokens | None = None,
                include_object_queries: bool = True,
                with_class_logits: bool = True,
                return_aux: bool = False,
                generator: torch.Generator | None = None) -> DecoderOutput:
        """Run the decoder.

        Features may have batch 1 and be shared by B decoder batch elements (B taken from ``batch_size``, the
        prompt or the grounding tokens). ``query_indices`` [3 mb] overrides the random choice of the object
        query rows copied as spatial queries; ``memory_assignment`` [M] overrides the random memory-to-object
        assignment (only random when one element holds several objects). ``prev_mask`` [B, mb, h', w'] are the
        previous mask *logits* and switch on the memory tokens (needs a spatial prompt). ``with_class_logits``:
        compute ``object_logits`` (needs the class embeddings, see `set_class_embeddings`); no other output
        depends on them.
        """
        batch = self._decoder_batch(mask_features, batch_size, prompt, grounding)
        srcs, poss, sizes = self._prepare_levels(multi_scale_features)
        state = _QueryState(batch)
        dtype = srcs[0].dtype
        if include_object_queries:
            state.add_query("object", self.query_feat.weight, self.query_embed.weight)
        if grounding is not None:
            state.add_query("grounding", self.query_feat.weight, self.query_embed.weight)
        memory_rows = None
        if prompt is not None:
            if prompt.batch_size != batch:
                raise ValueError(f"prompt tokens have batch {prompt.batch_size}, decoder batch is {batch}")
            query_indices = self._spatial_query_indices(prompt.num_objects, batch, query_indices, generator)
            state.add_query("spatial", self.query_feat.weight[query_indices], self.query_embed.weight[query_indices])
            if prev_mask is not None:
                state.add_query("memory", self.spatial_featured.weight, self.spatial_embed.weight)
                memory_rows = _MemoryMask(prev_mask, self.config.spatial_memories, memory_assignment, generator)
        elif prev_mask is not None:
            raise ValueError("prev_mask (memory prompt) needs a spatial prompt")
        state.cast(dtype)
        if grounding is not None:
            tokens = grounding.tokens.to(dtype)
            state.grounding_tokens = tokens
            state.grounding_tokens_pos = tokens.detach().clone()
            state.grounding_padding = grounding.padding

        if not state.order:
            raise ValueError("nothing to decode: no object queries, prompt or grounding tokens")
        predictions = []
        pred = self._predict(state, mask_features, sizes[0], prompt, with_class_logits)
        predictions.append(pred)
        for i in range(self.config.num_layers):
            level = i % self.config.num_feature_levels
            self._cross_attention(i, state, srcs[level], poss[level], memory_rows, sizes[level])
            self._self_attention(i, state, prompt, level, memory_rows)
            next_size = sizes[(i + 1) % self.config.num_feature_levels]
            pred = self._predict(state, mask_features, next_size, prompt, with_class_logits)
            predictions.append(pred)
        aux = predictions[:-1] if return_aux else []
        return DecoderOutput(final=predictions[-1], aux=aux,
                             query_indices=query_indices if prompt is not None else None,
                             memory_assignments=memory_rows.history if memory_rows is not None else [])

    def _decoder_batch(self, mask_features: Tensor, batch_size: int | None, prompt: PromptTokens | None,
                       grounding: GroundingTokens | None) -> int:
        candidates = {mask_features.shape[0]} - {1}
        for b in (batch_size, prompt.batch_size if prompt is not None else None,
                  grounding.tokens.shape[0] if grounding is not None else None):
            if b is not None:
                candidates.add(b)
        if len(candidates) > 1:
            raise ValueError(f"inconsistent batch sizes {sorted(candidates)} (features may have batch 1)")
        return candidates.pop() if candidates else 1

    def _spatial_query_indices(self, num_objects: int, batch: int, query_indices: Tensor | None,
                               generator: torch.Generator | None) -> Tensor:
        """Rows of the object queries copied as spatial queries: [3 mb] shared by the batch, or [B, 3 mb]."""
        count = self.config.queries_per_object * num_objects
        device = self.query_feat.weight.device
        if query_indices is None:
            # official: one CPU randint shared by all batch elements, with replacement
            gen_device = generator.device if generator is not None else torch.device("cpu")
            query_indices = torch.randint(0, self.config.num_queries, (count,), generator=generator,
                                          device=gen_device)
        query_indices = torch.as_tensor(query_indices, dtype=torch.long).to(device)
        if query_indices.shape not in ((count,), (batch, count)):
            raise ValueError(f"spatial query indices must have shape [{count}] or [{batch}, {count}], "
                              f"got {tuple(query_indices.shape)}")
        if bool((query_indices < 0).any()) or bool((query_indices >= self.config.num_queries).any()):
            raise ValueError("spatial query indices out of range")
        return query_indices

    # ------------------------------------------------------------------------------------------------------
    def _predict(self, state: _QueryState, mask_features: Tensor, target_size: tuple[int, int],
                 prompt: PromptTokens | None, with_class_logits: bool) -> Prediction:
        """Prediction heads on every query group (memory excluded: its masks are always replaced)."""
        names = [n for n in state.order if n != "memory"]
        content = torch.cat([state.content[n] for n in names], dim=1)
        decoded = self.decoder_norm(content)
        class_emb = decoded @ self.class_embed.to(decoded.dtype)
        mask_emb = self.mask_embed(decoded)
        masks = _mask_logits(mask_emb, mask_features)
        attn = F.interpolate(masks, size=target_size, mode="bilinear", align_corners=False)
        attn = (attn.sigmoid().flatten(2) < 0.5).detach()

        pred = Prediction()
        offset = 0
        for name in names:
            length = state.content[name].shape[1]
            sl = slice(offset, offset + length)
            state.attn_mask[name] = attn[:, sl]
            if name == "object":
                pred.object_masks = masks[:, sl]
                pred.object_embeddings = class_emb[:, sl]
                if with_class_logits:
                    pred.object_logits = self.class_logits(class_emb[:, sl])
            elif name == "grounding":
                pred.grounding_masks = masks[:, sl]
                pred.grounding_embeddings = class_emb[:, sl]
            elif name == "spatial":
                pred.spatial_masks = masks[:, sl]
                pred.spatial_embeddings = class_emb[:, sl]
                pred.spatial_mask_embeddings = mask_emb[:, sl]
            offset += length
        if prompt is not None:
            pred.pooled_pos = prompt.pooled_pos
            pred.pooled_neg = prompt.pooled_neg
        return pred

    def _cross_attention(self, layer: int, state: _QueryState, src: Tensor, pos: Tensor,
                         memory_rows: _MemoryMask | None, size: tuple[int, int]) -> None:
        masks = []
        for name in state.order:
            if name == "memory":
                assert memory_rows is not None
                masks.append(memory_rows.rows(size, state.batch))
            else:
                masks.append(state.attn_mask[name])
        blocked = torch.cat(masks, dim=1)
        # a row that would mask every key attends everywhere instead (official rule)
        blocked = blocked & ~blocked.all(dim=-1, keepdim=True)
        content, qpos = state.concat(state.order)
        out = self.transformer_cross_attention_layers[layer](content, qpos, src, pos, blocked)
        state.split(state.order, out)

    def _self_attention(self, layer: int, state: _QueryState, prompt: PromptTokens | None, level: int,
                        memory_rows: _MemoryMask | None) -> None:
        parts: list[tuple[str, Tensor, Tensor]] = []
        for name in ("object", "grounding", "spatial"):
            if name in state.content:
                parts.append((name, state.content[name], state.pos[name]))
        if state.grounding_tokens is not None:
            parts.append(("grounding_tokens", state.grounding_tokens, state.grounding_tokens_pos))
        if prompt is not None:
            # prompt tokens are re-created at every layer from the level being attended; pos = the tokens
            tokens = prompt.level_tokens[level].to(state.dtype)
            parts.append(("spatial_tokens", tokens, tokens))
        if "memory" in state.content:
            parts.append(("memory", state.content["memory"], state.pos["memory"]))
        lengths = {name: t.shape[1] for name, t, _ in parts}
        blocked = build_self_attention_mask(
            lengths, state.batch, content_device=parts[0][1].device,
            queries_per_object=self.config.queries_per_object,
            token_padding=prompt.level_padding[level] if prompt is not None else None,
            token_object=prompt.level_object_index[level] if prompt is not None else None,
            grounding_padding=state.grounding_padding,
            memory_assignment=memory_rows.current if memory_rows is not None else None)
        content = torch.cat([t for _, t, _ in parts], dim=1)
        qpos = torch.cat([p for _, _, p in parts], dim=1)
        # Prompt tokens are re-created from the prompt at the next layer, so their own outputs would be thrown
        # away: they only serve as keys/values, and the query rows, output projection and FFN run on the other
        # positions alone (with 512-point prompts that is most of the per-object cost).
        kept = [name for name in lengths if name != "spatial_tokens"]
        rows = _segment_rows(lengths, kept, content.device) if "spatial_tokens" in lengths else None
        out = self.transformer_self_attention_layers[layer](content, qpos, blocked, rows)
        out = self.transformer_ffn_layers[layer](out)
        offset = 0
        for name in kept:
            chunk = out[:, offset:offset + lengths[name]]
            offset += lengths[name]
            if name in state.content:
                state.content[name] = chunk
            else:  # grounding tokens carry state across layers, their pos stays fixed
                state.grounding_tokens = chunk


# ----------------------------------------------------------------------------------------------------------
# Decoder helpers
# ----------------------------------------------------------------------------------------------------------


def _segment_rows(lengths: dict[str, int], names: Sequence[str], device: torch.device) -> Tensor:
    """Sequence positions [R] of the named segments of a sequence laid out as ``lengths`` (in its order)."""
    rows, start = [], 0
    for name, length in lengths.items():
        if name in names:
            rows.append(torch.arange(start, start + length, device=device))
        start += length
    return torch.cat(rows)


def _pad_rows(t: Tensor, length: int, value: float | int) -> Tensor:
    if t.shape[0] == length:
        return t
    return torch.cat([t, t.new_full((length - t.shape[0],) + tuple(t.shape[1:]), value)])


def _mask_logits(mask_emb: Tensor, mask_features: Tensor) -> Tensor:
    """masks[b, q] = sum_c mask_emb[b, q, c] * mask_features[b, c]; mask_features may have batch 1 (shared)."""
    batch, queries, channels = mask_emb.shape
    _, _, h, w = mask_features.shape
    if mask_features.shape[0] == 1:
        flat = mask_emb.reshape(batch * queries, channels) @ mask_features.reshape(channels, h * w).to(mask_emb.dtype)
        return flat.view(batch, queries, h, w)
    return torch.einsum("bqc,bchw->bqhw", mask_emb, mask_features.to(mask_emb.dtype))


class _QueryState:
    """The decoder's variables that take part in cross-attention, in the official concatenation order."""

    ORDER = ("object", "grounding", "spatial", "memory")

    def __init__(self, batch: int) -> None:
        self.batch = batch
        self.content: dict[str, Tensor] = {}
        self.pos: dict[str, Tensor] = {}
        self.attn_mask: dict[str, Tensor] = {}
        self.grounding_tokens: Tensor | None = None
        self.grounding_tokens_pos: Tensor | None = None
        self.grounding_padding: Tensor | None = None
        self.dtype = torch.float32

    @property
    def order(self) -> list[str]:
        return [n for n in self.ORDER if n in self.content]

    def add_query(self, name: str, content: Tensor, pos: Tensor) -> None:
        """content/pos [L, C] shared by the batch, or [B, L, C] per batch element."""
        self.content[name] = (content if content.dim() == 3 else content[None]).expand(self.batch, -1, -1)
        self.pos[name] = (pos if pos.dim() == 3 else pos[None]).expand(self.batch, -1, -1)

    def cast(self, dtype: torch.dtype) -> None:
        self.dtype = dtype
        for name in self.content:
            self.content[name] = self.content[name].to(dtype)
            self.pos[name] = self.pos[name].to(dtype)

    def concat(self, names: Sequence[str]) -> tuple[Tensor, Tensor]:
        return (torch.cat([self.content[n] for n in names], dim=1), torch.cat([self.pos[n] for n in names], dim=1))

    def split(self, names: Sequence[str], values: Tensor) -> None:
        offset = 0
        for n in names:
            length = self.content[n].shape[1]
            self.content[n] = values[:, offset:offset + length]
            offset += length


class _MemoryMask:
    """Cross-attention rows of the memory tokens, taken from the previous mask logits (§6.2)."""

    def __init__(self, prev_mask: Tensor, num_memories: int, assignment: Tensor | None,
                 generator: torch.Generator | None) -> None:
        if prev_mask.dim() != 4:
            raise ValueError(f"prev_mask must be [B, objects, h, w] logits, got shape {tuple(prev_mask.shape)}")
        self.prev_mask = prev_mask
        self.num_memories = num_memories
        self.fixed = None if assignment is None else torch.as_tensor(assignment, dtype=torch.long).reshape(-1)
        self.generator = generator
        self.current: Tensor | None = None
        self.history: list[Tensor] = []
        objects = prev_mask.shape[1]
        if objects > num_memories:
            raise ValueError(f"at most {num_memories} objects per batch element can use the memory prompt")
        if self.fixed is not None and (self.fixed.numel() != num_memories or int(self.fixed.max()) >= objects):
            raise ValueError("memory_assignment must hold one valid object index per memory slot")

    def _draw(self) -> Tensor:
        objects = self.prev_mask.shape[1]
        if self.fixed is not None:
            return self.fixed
        if objects == 1:  # deterministic: every memory slot belongs to the single object
            return torch.zeros(self.num_memories, dtype=torch.long)
        gen_device = self.generator.device if self.generator is not None else torch.device("cpu")
        weights = torch.full((objects,), 1.0, device=gen_device)
        draw = torch.multinomial(weights, self.num_memories, replacement=True, generator=self.generator)
        return draw.sort().values.cpu()

    def rows(self, size: tuple[int, int], batch: int) -> Tensor:
        """[B, M, h*w] bool for this layer (a new assignment is drawn at every layer, as upstream)."""
        assign = self._draw()
        self.current = assign
        self.history.append(assign)
        prev = F.interpolate(self.prev_mask, size=size, mode="bilinear", align_corners=False)
        blocked = (prev.sigmoid().flatten(2) < 0.5)
        blocked = blocked[:, assign.to(blocked.device)]
        if blocked.shape[0] != batch:
            blocked = blocked.expand(batch, -1, -1)
        return blocked


def build_self_attention_mask(lengths: dict[str, int], batch: int, *, content_device: torch.device,
                              queries_per_object: int, token_padding: Tensor | None,
                              token_object: Tensor | None, grounding_padding: Tensor | None,
                              memory_assignment: Tensor | None) -> Tensor:
    """Self-attention mask [B, N, N] (True = blocked) following the v1 ATTENTION_ARCH rules (§4.8).

    ``lengths`` lists the present segments in sequence order, among: object, grounding, spatial,
    grounding_tokens, spatial_tokens, memory.
    """
    offsets, start = {}, 0
    for name, length in lengths.items():
        offsets[name] = slice(start, start + length)
        start += length
    blocked = torch.ones(batch, start, start, dtype=torch.bool, device=content_device)

    allowed_groups = {
        "object": ("object",),
        "grounding": ("grounding", "grounding_tokens"),
        "spatial": ("spatial", "spatial_tokens", "memory"),
        "grounding_tokens": ("grounding", "grounding_tokens"),
        "spatial_tokens": ("spatial_tokens",),
        "memory": ("memory",),
    }
    # 1. group permissions
    for key1, keys2 in allowed_groups.items():
        if key1 not in offsets:
            continue
        for key2 in keys2:
            if key2 in offsets:
                blocked[:, offsets[key1], offsets[key2]] = False
    paddings = {"spatial_tokens": token_padding, "grounding_tokens": grounding_padding}
    # 2. padding inside a token block: padded rows and columns blocked
    for key, pad in paddings.items():
        if key in offsets and pad is not None:
            block = blocked[:, offsets[key], offsets[key]]
            block |= pad[:, None, :] | pad[:, :, None]
            blocked[:, offsets[key], offsets[key]] = block
    # 3. padding across blocks: padded token columns (token as key) and rows (token as query)
    for key1, keys2 in allowed_groups.items():
        for key2 in keys2:
            if key1 == key2 or key1 not in offsets or key2 not in offsets:
                continue
            if key2 in paddings and paddings[key2] is not None:
                blocked[:, offsets[key1], offsets[key2]] |= paddings[key2][:, None, :]
            if key1 in paddings and paddings[key1] is not None:
                blocked[:, offsets[key1], offsets[key2]] |= paddings[key1][:, :, None]
    # 4. per-object structure of spatial queries and prompt tokens (overwrites the blocks above)
    if "spatial" in offsets and "spatial_tokens" in offsets:
        n_spatial = lengths["spatial"]
        query_object = torch.arange(n_spatial, device=content_device) // queries_per_object
        blocked[:, offsets["spatial"], offsets["spatial"]] = query_object[:, None] != query_object[None, :]
        token_obj = token_object.to(content_device)
        blocked[:, offsets["spatial"], offsets["spatial_tokens"]] = query_object[None, :, None] != token_obj[:, None, :]
        same_object = token_obj[:, :, None] == token_obj[:, None, :]  # padded tokens (-1) see each other
        blocked[:, offsets["spatial_tokens"], offsets["spatial_tokens"]] = ~same_object
    # 5. memory structure: spatial queries of object n see the memory slots assigned to n
    if "memory" in offsets and memory_assignment is not None:
        assign = memory_assignment.to(content_device)
        if "spatial" in offsets:
            query_object = torch.arange(lengths["spatial"], device=content_device) // queries_per_object
            blocked[:, offsets["spatial"], offsets["memory"]] = query_object[:, None] != assign[None, :]
        blocked[:, offsets["memory"], offsets["memory"]] = assign[:, None] != assign[None, :]
    return blocked


# ----------------------------------------------------------------------------------------------------------
# Selection and similarity
# ----------------------------------------------------------------------------------------------------------


def select_spatial_masks(pred: Prediction, queries_per_object: int = 3) -> SpatialSelection:
    """Official ``update_spatial_results``: per object, the spatial query whose mask embedding has the largest
    dot product with the pooled positive prompt vector; ties resolve to the first index (torch argmax)."""
    if pred.spatial_masks is None or pred.pooled_pos is None or pred.spatial_mask_embeddings is None:
        raise ValueError("the decoder output has no spatial predictions")
    v, s = pred.spatial_mask_embeddings, pred.pooled_pos
    num_obj = s.shape[1]
    score = torch.einsum("bjc,bnc->bjn", v.float(), s.float())  # [B, 3mb, mb]
    query_object = torch.arange(v.shape[1], device=v.device) // queries_per_object
    own = query_object[:, None] == torch.arange(num_obj, device=v.device)[None, :]
    score = score.masked_fill(~own[None], float("-inf"))
    best_score, best = score.max(dim=1)  # [B, mb]
    masks = torch.gather(pred.spatial_masks, 1,
                         best[:, :, None, None].expand(-1, -1, *pred.spatial_masks.shape[2:]))
    emb = torch.gather(pred.spatial_embeddings, 1, best[:, :, None].expand(-1, -1, pred.spatial_embeddings.shape[2]))
    mask_emb = torch.gather(v, 1, best[:, :, None].expand(-1, -1, v.shape[2]))
    return SpatialSelection(masks=masks, scores=best_score, query_index=best, embeddings=emb, mask_embeddings=mask_emb)


def vl_similarity(image_emb: Tensor, text_emb: Tensor, logit_scale: Tensor) -> Tensor:
    """Grounding similarity: ``min(exp(logit_scale), 100) * normalize(image) @ normalize(text)^T``."""
    image_emb = image_emb / (image_emb.norm(dim=-1, keepdim=True) + 1e-7)
    text_emb = text_emb / (text_emb.norm(dim=-1, keepdim=True) + 1e-7)
    return torch.clamp(logit_scale.exp(), max=100) * image_emb @ text_emb.t()
