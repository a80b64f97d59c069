"""SEEM's text side: the CLIP-style text transformer and ``LanguageEncoder`` (spec §8.2-§8.4).

Parameter names equal the official ones under ``sem_seg_head.predictor.lang_encoder.`` (Appendix A.3), so
``LanguageEncoder().state_dict()`` keys are the official keys with that prefix stripped, in the official order:
``lang_proj``, ``logit_scale``, ``lang_encoder.positional_embedding``, ``lang_encoder.token_embedding.weight``,
``lang_encoder.resblocks.{i}.{attn,ln_1,mlp.c_fc,mlp.c_proj,ln_2}.*``, ``lang_encoder.ln_final.*``.

Numerics follow the official code: pre-norm blocks, LayerNorm statistics in fp32 with eps 1e-12, QuickGELU,
an additive causal mask and *no* key-padding mask, EOS pooling at the first argmax of the token ids (pad = EOS).
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from vos.seem.tokenizer import CONTEXT_LENGTH, VOCAB_SIZE, tokenize
from vos.seem.vocabulary import DEFAULT_VOCABULARY, PROMPT_TEMPLATES, prompts_for

LANG_ENCODER_PREFIX = "sem_seg_head.predictor.lang_encoder."
_NORM_EPS = 1e-7  # the official normalisation adds 1e-7 to the norm (except after template averaging)
_GROUNDING_MAX_TEMPERATURE = 100.0


@dataclass(frozen=True)
class TextEncoderConfig:
    """Text encoder hyper-parameters; defaults are the full-size SEEM v1 values (T and L share them)."""

    width: int = 512
    heads: int = 8
    layers: int = 12
    context_length: int = CONTEXT_LENGTH
    vocab_size: int = VOCAB_SIZE
    proj_dim: int = 512  # MODEL.DIM_PROJ (= decoder hidden width)
    mlp_ratio: int = 4

    def __post_init__(self) -> None:
        if self.width % self.heads != 0:
            raise ValueError(f"width {self.width} is not divisible by heads {self.heads}")

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, torch.Tensor], heads: int, prefix: str = "") -> TextEncoderConfig:
        """Infer sizes from (prefix-stripped) LanguageEncoder weights; the head count is not visible in shapes."""
        tok = state_dict[prefix + "lang_encoder.token_embedding.weight"]
        fc = state_dict[prefix + "lang_encoder.resblocks.0.mlp.c_fc.weight"]
        block_prefix = prefix + "lang_encoder.resblocks."
        n_layers = len({k[len(block_prefix):].split(".")[0] for k in state_dict if k.startswith(block_prefix)})
        return cls(
            width=tok.shape[1],
            heads=heads,
            layers=n_layers,
            context_length=state_dict[prefix + "lang_encoder.positional_embedding"].shape[0],
            vocab_size=tok.shape[0],
            proj_dim=state_dict[prefix + "lang_proj"].shape[1],
            mlp_ratio=fc.shape[0] // tok.shape[1],
        )


class TFLayerNorm(nn.Module):
    """"TF-style" LayerNorm: statistics in float32 with eps inside the square root, cast back, then affine."""

    def __init__(self, dim: int, eps: float = 1e-12) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        mean = x.mean(-1, keepdim=True)
        var = (x - mean).pow(2).mean(-1, keepdim=True)
        x = ((x - mean) / torch.sqrt(var + self.eps)).to(dtype)
        return self.weight * x + self.bias


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    """Pre-norm block: x + Attn(ln_1(x)), then x + MLP(ln_2(x)); sequence-first [L, N, C]."""

    def __init__(self, width: int, heads: int, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_1 = TFLayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(width, width * mlp_ratio)),
            ("gelu", QuickGELU()),
            ("c_proj", nn.Linear(width * mlp_ratio, width)),
        ]))
        self.ln_2 = TFLayerNorm(width)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=attn_mask.to(x.dtype))[0]
        return x + self.mlp(self.ln_2(x))


class TextTransformer(nn.Module):
    """CLIP text transformer (``...lang_encoder.lang_encoder``); returns ``ln_final`` hidden states [N, L, C]."""

    def __init__(self, config: TextEncoderConfig) -> None:
        super().__init__()
        self.context_length = config.context_length
        self.token_embedding = nn.Embedding(config.vocab_size, config.width)
        self.positional_embedding = nn.Parameter(torch.empty(config.context_length, config.width))
        self.resblocks = nn.ModuleList(
            [ResidualAttentionBlock(config.width, config.heads, config.mlp_ratio) for _ in range(config.layers)]
        )
        self.ln_final = TFLayerNorm(config.width)
        # Not in the checkpoint (spec A.3): additive causal mask, 0 on/below the diagonal and -inf above.
        causal = torch.full((config.context_length, config.context_length), float("-inf")).triu_(1)
        self.register_buffer("attn_mask", causal, persistent=False)
        self._init_weights()

    def _init_weights(self) -> None:
        # Only to get sane values before loading; every parameter comes from the checkpoint.
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Hidden states for ``input_ids`` [N, L] (L <= context_length).

        ``attention_mask`` is accepted for API parity and deliberately ignored: SEEM's encoder is autoregressive
        (causal mask only, no key-padding mask), so padding never influences positions up to EOS.
        """
        length = input_ids.shape[1]
        if length > self.context_length:
            raise ValueError(f"sequence length {length} exceeds context length {self.context_length}")
        x = self.token_embedding(input_ids) + self.positional_embedding[:length]
        x = x.permute(1, 0, 2)  # [L, N, C] (nn.MultiheadAttention is sequence-first)
        mask = self.attn_mask[:length, :length]
        for block in self.resblocks:
            x = block(x, mask)
        return self.ln_final(x.permute(1, 0, 2))


@dataclass
class TextTokenEmbeddings:
    """Output of :meth:`LanguageEncoder.get_text_token_embeddings` (spec §8.4 step 1)."""

    input_ids: torch.Tensor  # [n, 77] int64
    attention_mask: torch.Tensor  # [n, 77] int64, 1 on SOT..EOT
    token_emb: torch.Tensor  # [n, 77, P] every position's hidden state @ lang_proj
    class_emb: torch.Tensor  # [n, P] EOS hidden state @ lang_proj

    def grounding_tokens(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoder inputs: all non-padding token embeddings of all texts in order, ``[L_tot, 1, P]``, and the
        all-False ``grounding_nonzero_mask`` ``[1, L_tot]``."""
        keep = self.attention_mask.to(self.token_emb.device).bool()
        tokens = self.token_emb[keep][:, None]
        return tokens, torch.zeros((1, tokens.shape[0]), dtype=torch.bool, device=tokens.device)


def l2_normalize(x: torch.Tensor, eps: float = _NORM_EPS) -> torch.Tensor:
    """``x / (‖x‖ + eps)`` along the last dim (the official formula, not ``F.normalize``'s max(‖x‖, eps))."""
    return x / (x.norm(dim=-1, keepdim=True) + eps)


def eos_positions(input_ids: torch.Tensor) -> torch.Tensor:
    """Index of EOS in each row: the first argmax of the ids (pad = EOS = the largest id)."""
    # torch.argmax returns the first maximal index, which is what the official pooling relies on.
    return input_ids.argmax(dim=-1)


def vl_similarity(image_feat: torch.Tensor, text_feat: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Grounding logits ``min(exp(logit_scale), 100) · image_feat @ text_featᵀ`` (inputs already normalised)."""
    return logit_scale.exp().clamp(max=_GROUNDING_MAX_TEMPERATURE) * (image_feat @ text_feat.t())


class LanguageEncoder(nn.Module):
    """``sem_seg_head.predictor.lang_encoder``: text transformer + ``lang_proj`` + ``logit_scale``.

    ``default_text_embeddings`` ([K, P], K = 134 for the COCO vocabulary) is a non-persistent buffer: it is never in a
    checkpoint, must be built once after loading (:meth:`get_text_embeddings`), and moves with ``.to(device)``.
    """

    def __init__(self, config: TextEncoderConfig | None = None) -> None:
        super().__init__()
        self.config = config or TextEncoderConfig()
        # Registration order = official state_dict order (own parameters come before child modules anyway).
        self.lang_proj = nn.Parameter(torch.empty(self.config.width, self.config.proj_dim))
        self.logit_scale = nn.Parameter(torch.ones([]))
        self.lang_encoder = TextTransformer(self.config)
        self.register_buffer("default_text_embeddings", None, persistent=False)
        nn.init.trunc_normal_(self.lang_proj, std=0.02)

    @property
    def device(self) -> torch.device:
        return self.lang_proj.device

    # ---- token ids → embeddings -------------------------------------------------------------------------------
    def forward_language(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, norm: bool = True
    ) -> torch.Tensor:
        """Sentence embeddings [N, P]: EOS hidden state @ lang_proj, L2-normalised (+1e-7) when ``norm``."""
        input_ids = input_ids.to(self.device)
        # Causal attention makes positions after EOS irrelevant to the EOS state, so drop them (exact, much faster).
        input_ids = input_ids[:, : int(eos_positions(input_ids).max()) + 1]
        hidden = self.lang_encoder(input_ids)
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        emb = hidden[rows, eos_positions(input_ids)] @ self.lang_proj
        return l2_normalize(emb) if norm else emb

    def forward_language_token(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, norm: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(token_emb [N, L, P], class_emb [N, P])``: all hidden states and the EOS one, times ``lang_proj``."""
        input_ids = input_ids.to(self.device)
        hidden = self.lang_encoder(input_ids)
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        token_emb = hidden @ self.lang_proj
        class_emb = hidden[rows, eos_positions(input_ids)] @ self.lang_proj
        if norm:
            token_emb, class_emb = l2_normalize(token_emb), l2_normalize(class_emb)
        return token_emb, class_emb

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, norm: bool = True
    ) -> torch.Tensor:
        return self.forward_language(input_ids, attention_mask, norm=norm)

    # ---- text → embeddings -------------------------------------------------------------------------------------
    def get_text_token_embeddings(self, texts: str | Sequence[str], norm: bool = False) -> TextTokenEmbeddings:
        """Tokenise and encode referring texts (grounding, §8.4); unnormalised by default as the official call."""
        ids, mask = tokenize(texts, self.config.context_length)
        token_emb, class_emb = self.forward_language_token(ids, mask, norm=norm)
        return TextTokenEmbeddings(ids.to(self.device), mask.to(self.device), token_emb, class_emb)

    def encode_sentences(self, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        """Normalised sentence embeddings [N, P] for many texts, batched by token length.

        Sorting by length lets every batch be trimmed to its own longest sentence (exact under causal attention),
        which saves ~30 % of the work for the 134 × 81 class prompts compared with per-class batches.
        """
        ids, _ = tokenize(texts, self.config.context_length)
        order = torch.argsort(eos_positions(ids), stable=True)
        out = torch.empty(len(texts), self.config.proj_dim, dtype=self.lang_proj.dtype, device=self.device)
        for start in range(0, len(texts), batch_size):
            chunk = order[start : start + batch_size]
            out[chunk.to(self.device)] = self.forward_language(ids[chunk], norm=True)
        return out

    def encode_class_names(
        self, class_names: Sequence[str], templates: Sequence[str] = PROMPT_TEMPLATES
    ) -> torch.Tensor:
        """Eval-time class embeddings [K, P] (§8.3): per name, clean it, fill every template, encode with
        normalisation, average over templates, then divide by the norm of the average (no eps)."""
        prompts = [p for name in class_names for p in prompts_for(name, templates)]
        per_prompt = self.encode_sentences(prompts).view(len(class_names), len(templates), -1)
        mean = per_prompt.mean(dim=1)
        return mean / mean.norm(dim=-1, keepdim=True)

    @torch.no_grad()
    def get_text_embeddings(
        self,
        class_names: Sequence[str] = DEFAULT_VOCABULARY,
        name: str = "default",
        templates: Sequence[str] = PROMPT_TEMPLATES,
        cache_dir: str | Path | None = None,
    ) -> torch.Tensor:
        """Compute class embeddings and store them as the non-persistent buffer ``{name}_text_embeddings``.

        The default call (COCO-133 + "background", K = 134) is what the decoder's class head needs at start-up.
        Full size this encodes 134 × 81 sentences: seconds on a GPU but minutes on one CPU thread, so pass
        ``cache_dir`` to reuse a result keyed by a fingerprint of the weights, names and templates.
        """
        cache_file = None
        if cache_dir is not None:
            cache_file = Path(cache_dir) / f"text_emb_{self.fingerprint(class_names, templates)}.pt"
            cached = _load_cached_embeddings(cache_file, len(class_names), self.config.proj_dim)
            if cached is not None:
                return self.set_text_embeddings(cached, name)
        embeddings = self.encode_class_names(class_names, templates)
        if cache_file is not None:
            _save_atomically(embeddings, cache_file)
        return self.set_text_embeddings(embeddings, name)

    def fingerprint(self, class_names: Sequence[str], templates: Sequence[str] = PROMPT_TEMPLATES) -> str:
        """Hash of the weights that shape sentence embeddings, the vocabulary and the templates (cache key)."""
        digest = hashlib.blake2b(digest_size=12)
        for key, tensor in self.state_dict().items():
            if key == "lang_encoder.token_embedding.weight":
                continue  # 100 MB; any real change of checkpoint also changes the hashed tensors
            digest.update(key.encode())
            digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        digest.update("\x00".join(class_names).encode())
        digest.update("\x00".join(templates).encode())
        digest.update(str(self.lang_proj.dtype).encode())
        return digest.hexdigest()

    def set_text_embeddings(self, embeddings: torch.Tensor, name: str = "default") -> torch.Tensor:
        """Store precomputed class embeddings [K, P] under ``{name}_text_embeddings`` (a non-persistent buffer)."""
        if embeddings.ndim != 2 or embeddings.shape[1] != self.config.proj_dim:
            raise ValueError(f"expected [K, {self.config.proj_dim}] text embeddings, got {tuple(embeddings.shape)}")
        embeddings = embeddings.to(device=self.device, dtype=self.lang_proj.dtype)
        self.register_buffer(f"{name}_text_embeddings", embeddings, persistent=False)
        return embeddings

    # ---- similarities ------------------------------------------------------------------------------------------
    def compute_similarity(self, v_emb: torch.Tensor, name: str = "default") -> torch.Tensor:
        """Class logits ``exp(logit_scale) · normalize(v_emb) @ Eᵀ`` (unclamped; §4.9, pitfall 17).

        ``v_emb`` is [B, Q, P]; returns [B, Q, K].
        """
        t_emb = getattr(self, f"{name}_text_embeddings", None)
        if t_emb is None:
            raise RuntimeError(
                f"{name}_text_embeddings is not set: call LanguageEncoder.get_text_embeddings() after loading weights"
            )
        v_emb = l2_normalize(v_emb)
        return self.logit_scale.exp() * (v_emb @ t_emb.to(v_emb.dtype).t())

    def grounding_similarity(self, pred_gtexts: torch.Tensor, class_emb: torch.Tensor) -> torch.Tensor:
        """Grounding match logits [Q, n] between decoder text outputs [Q, P] and text class embeddings [n, P]
        (both normalised with +1e-7, temperature clamped at 100; §8.4 step 4)."""
        return vl_similarity(l2_normalize(pred_gtexts), l2_normalize(class_emb), self.logit_scale)


def num_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _load_cached_embeddings(path: Path, rows: int, dim: int) -> torch.Tensor | None:
    """A cached [rows, dim] tensor, or None when absent or unusable (then it is recomputed and rewritten)."""
    if not path.is_file():
        return None
    try:
        cached = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - any unreadable cache file is simply recomputed
        return None
    ok = isinstance(cached, torch.Tensor) and tuple(cached.shape) == (rows, dim)
    return cached if ok else None


def _save_atomically(tensor: torch.Tensor, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    torch.save(tensor.detach().cpu(), tmp)
    os.replace(tmp, path)  # concurrent writers produce identical files; the rename keeps readers safe
