"""CLIP BPE tokenizer: ids must equal the official (HF slow CLIPTokenizer with ftfy) ids recorded in the fixture."""

from pathlib import Path

import pytest
import torch

from vos.seem.tokenizer import CONTEXT_LENGTH, EOT_ID, SOT_ID, VOCAB_SIZE, clean_text, get_tokenizer, tokenize


@pytest.fixture(scope="module")
def tiny_io(seem_fixtures: Path) -> dict[str, torch.Tensor]:
    return torch.load(seem_fixtures / "tiny_io.pt", map_location="cpu")


def test_matches_fixture_tokenizer_check(tiny_io: dict[str, torch.Tensor]) -> None:
    ids, mask = tokenize(["a dog", "a photo of a person."])
    assert torch.equal(ids, tiny_io["text/tokenizer_check/input_ids"])
    assert torch.equal(mask, tiny_io["text/tokenizer_check/attention_mask"])


def test_matches_fixture_language_and_grounding_ids(tiny_io: dict[str, torch.Tensor]) -> None:
    assert torch.equal(tokenize("person.")[0], tiny_io["text/forward_language_check/input_ids"])
    ids, mask = tokenize(["a dog"])
    assert torch.equal(ids, tiny_io["paths/grounding/inputs/input_ids"])
    assert torch.equal(mask, tiny_io["paths/grounding/inputs/attention_mask"])


def test_layout_sot_eot_padding() -> None:
    ids, mask = tokenize("a dog")
    assert ids.shape == mask.shape == (1, CONTEXT_LENGTH) and ids.dtype == mask.dtype == torch.int64
    assert ids[0, :4].tolist() == [SOT_ID, 320, 1929, EOT_ID]
    assert (ids[0, 4:] == EOT_ID).all()  # pad = EOT
    assert mask[0].tolist() == [1] * 4 + [0] * (CONTEXT_LENGTH - 4)


def test_vocabulary_size_and_special_ids() -> None:
    tok = get_tokenizer()
    assert len(tok.encoder) == VOCAB_SIZE
    assert tok.encoder["<|startoftext|>"] == SOT_ID and tok.encoder["<|endoftext|>"] == EOT_ID


def test_truncation_keeps_eot() -> None:
    ids, mask = tokenize("dog " * 200)
    assert ids[0, 0] == SOT_ID and ids[0, -1] == EOT_ID
    assert (ids[0, 1:-1] == 1929).all() and mask.all()


def test_custom_context_length() -> None:
    ids, mask = tokenize(["a dog", "a photo of a person."], context_length=6)
    assert ids.shape == (2, 6) and mask[1].all()
    assert ids[1].tolist() == [SOT_ID, 320, 1125, 539, 320, EOT_ID]
    with pytest.raises(ValueError):
        tokenize("x", context_length=1)


def test_cleaning_lowercase_whitespace() -> None:
    assert clean_text("  A \t Dog\n") == "a dog"
    assert torch.equal(tokenize("  A   DOG ")[0], tokenize("a dog")[0])


def test_empty_and_unicode_text() -> None:
    ids, mask = tokenize(["", "café naïve 東京 😀"])
    assert ids[0, :2].tolist() == [SOT_ID, EOT_ID] and mask[0].sum() == 2
    assert mask[1].sum() > 4 and (ids[1] < VOCAB_SIZE).all()
