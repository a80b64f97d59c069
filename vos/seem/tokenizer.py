"""CLIP byte-level BPE tokenizer, written from the SEEM spec (§8.1).

SEEM calls the HuggingFace *slow* ``CLIPTokenizer`` of ``openai/clip-vit-base-patch32`` with padding to 77 tokens and
truncation. This module reproduces its ids without ``transformers``:

* vocabulary: the 49408-entry CLIP BPE vocabulary, built from ``assets/bpe_simple_vocab_16e6.txt.gz`` (the merge list
  shipped by open_clip; see ``assets/LICENSE-open_clip.txt``): 256 byte symbols, the same 256 symbols with the
  end-of-word marker ``</w>``, 48894 merges, then ``<|startoftext|>`` (49406) and ``<|endoftext|>`` (49407);
* text cleaning as in the slow tokenizer *with ftfy installed* (the official environment pins ftfy; without it the
  slow tokenizer falls back to a BERT basic tokenizer and gives different ids, spec §12 pitfall 18):
  ``ftfy.fix_text`` → collapse whitespace → strip → lower-case;
* layout: ``[SOT] tokens[:75] [EOT] [EOT padding...]`` (pad = EOT), attention mask 1 on SOT..EOT, 0 on padding.
"""

from __future__ import annotations

import functools
import gzip
from collections.abc import Sequence
from pathlib import Path

import ftfy
import regex
import torch

VOCAB_PATH = Path(__file__).resolve().parent / "assets" / "bpe_simple_vocab_16e6.txt.gz"
SOT_TOKEN = "<|startoftext|>"
EOT_TOKEN = "<|endoftext|>"
SOT_ID = 49406
EOT_ID = 49407
PAD_ID = EOT_ID  # the official tokenizer pads with the EOT token; EOS pooling relies on it (first argmax)
VOCAB_SIZE = 49408
CONTEXT_LENGTH = 77
_NUM_MERGES = VOCAB_SIZE - 2 * 256 - 2  # 48894: the merge list holds more lines than CLIP uses

# Pre-tokenisation pattern of the CLIP tokenizer: special tokens, English contractions, letter runs, single digits,
# runs of other non-space symbols. Case-insensitive (the text is lower-cased anyway).
_WORD_PATTERN = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)
_WHITESPACE = regex.compile(r"\s+")


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP reversible byte → printable character map (avoids whitespace/control chars in BPE symbols)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    mapping: dict[int, str] = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def clean_text(text: str) -> str:
    """Text normalisation of the slow CLIP tokenizer with ftfy installed."""
    text = ftfy.fix_text(text)
    return _WHITESPACE.sub(" ", text).strip().lower()


class ClipTokenizer:
    """Byte-level BPE with the CLIP vocabulary; ``encode`` returns ids without SOT/EOT."""

    def __init__(self, vocab_path: Path | str = VOCAB_PATH) -> None:
        self.byte_encoder = _bytes_to_unicode()
        merges = self._read_merges(Path(vocab_path))
        symbols = list(self.byte_encoder.values())
        symbols += [s + "</w>" for s in symbols]
        symbols += ["".join(pair) for pair in merges]
        symbols += [SOT_TOKEN, EOT_TOKEN]
        self.encoder: dict[str, int] = {s: i for i, s in enumerate(symbols)}
        self.bpe_ranks: dict[tuple[str, str], int] = {pair: i for i, pair in enumerate(merges)}
        self._cache: dict[str, list[str]] = {SOT_TOKEN: [SOT_TOKEN], EOT_TOKEN: [EOT_TOKEN]}
        assert len(self.encoder) == VOCAB_SIZE and self.encoder[EOT_TOKEN] == EOT_ID

    @staticmethod
    def _read_merges(path: Path) -> list[tuple[str, str]]:
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            lines = fh.read().split("\n")
        # Line 0 is a version header; CLIP uses exactly the first 48894 merges after it.
        pairs = [tuple(line.split()) for line in lines[1 : 1 + _NUM_MERGES]]
        return [(a, b) for a, b in pairs]

    def bpe(self, word: str) -> list[str]:
        """Merge the characters of one pre-token (already byte-mapped) into vocabulary symbols."""
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        while len(parts) > 1:
            pairs = {(parts[i], parts[i + 1]) for i in range(len(parts) - 1)}
            best = min(pairs, key=lambda p: self.bpe_ranks.get(p, float("inf")))
            if best not in self.bpe_ranks:
                break
            parts = self._merge(parts, best)
        self._cache[word] = parts
        return parts

    @staticmethod
    def _merge(parts: list[str], pair: tuple[str, str]) -> list[str]:
        merged: list[str] = []
        i = 0
        while i < len(parts):
            if i < len(parts) - 1 and parts[i] == pair[0] and parts[i + 1] == pair[1]:
                merged.append(pair[0] + pair[1])
                i += 2
            else:
                merged.append(parts[i])
                i += 1
        return merged

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for piece in _WORD_PATTERN.findall(clean_text(text)):
            mapped = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
            ids.extend(self.encoder[s] for s in self.bpe(mapped))
        return ids


@functools.lru_cache(maxsize=1)
def get_tokenizer() -> ClipTokenizer:
    """The shared tokenizer (building the merge table takes ~0.3 s, so do it once)."""
    return ClipTokenizer()


def tokenize(texts: str | Sequence[str], context_length: int = CONTEXT_LENGTH) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokenise like ``CLIPTokenizer(texts, padding='max_length', truncation=True, max_length=context_length)``.

    Returns ``(input_ids, attention_mask)``, both int64 ``[N, context_length]``.
    """
    if isinstance(texts, str):
        texts = [texts]
    if context_length < 2:
        raise ValueError(f"context_length must be >= 2 (SOT and EOT), got {context_length}")
    tok = get_tokenizer()
    ids = torch.full((len(texts), context_length), PAD_ID, dtype=torch.long)
    mask = torch.zeros((len(texts), context_length), dtype=torch.long)
    for row, text in enumerate(texts):
        # Truncation keeps the first context_length-2 tokens so EOT is always present (HF behaviour).
        seq = [SOT_ID] + tok.encode(text)[: context_length - 2] + [EOT_ID]
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return ids, mask
