"""Text encoder: official key layout (full size) and numerical parity with the tiny official fixture."""

import json
from pathlib import Path

import pytest
import torch

from vos.seem.checkpoint import load_state_dict_strict, read_state_dict, sub_state_dict
from vos.seem.text_encoder import (
    LANG_ENCODER_PREFIX,
    LanguageEncoder,
    TextEncoderConfig,
    TFLayerNorm,
    num_parameters,
)
from vos.seem.tokenizer import tokenize
from vos.seem.vocabulary import COCO_PANOPTIC_CLASSES, DEFAULT_VOCABULARY, PROMPT_TEMPLATES, clean_class_name

TOL = {"atol": 1e-4, "rtol": 1e-4}
TINY = TextEncoderConfig(width=64, heads=4, layers=2, proj_dim=64)


@pytest.fixture(scope="module")
def tiny_io(seem_fixtures: Path) -> dict[str, torch.Tensor]:
    return torch.load(seem_fixtures / "tiny_io.pt", map_location="cpu")


@pytest.fixture(scope="module")
def tiny_encoder(seem_fixtures: Path) -> LanguageEncoder:
    torch.set_num_threads(1)
    state = sub_state_dict(read_state_dict(seem_fixtures / "tiny_weights.pt"), LANG_ENCODER_PREFIX)
    assert TextEncoderConfig.from_state_dict(state, heads=4) == TINY
    encoder = LanguageEncoder(TINY).eval()
    load_state_dict_strict(encoder, state)
    return encoder


# ---- layout ------------------------------------------------------------------------------------------------------
def test_full_size_keys_match_official_focalt_and_focall(seem_fixtures: Path) -> None:
    with torch.device("meta"):  # shapes only: no 250 MB allocation
        encoder = LanguageEncoder()
    ours = [(k, list(v.shape)) for k, v in encoder.state_dict().items()]
    assert num_parameters(encoder) == 63_428_097
    for variant in ("focalt", "focall"):
        rows = json.loads((seem_fixtures / f"keys_{variant}_v1.json").read_text())
        official = [(k[len(LANG_ENCODER_PREFIX):], shape) for k, shape, _ in rows if k.startswith(LANG_ENCODER_PREFIX)]
        assert len(official) == 150
        assert ours == official  # same names, shapes and state_dict order


def test_default_config_is_full_size() -> None:
    cfg = TextEncoderConfig()
    assert (cfg.width, cfg.heads, cfg.layers, cfg.context_length, cfg.vocab_size, cfg.proj_dim) == (
        512, 8, 12, 77, 49408, 512)
    with pytest.raises(ValueError):
        TextEncoderConfig(width=64, heads=5)


def test_text_embeddings_are_not_in_state_dict() -> None:
    encoder = LanguageEncoder(TINY)
    encoder.set_text_embeddings(torch.randn(3, 64))
    assert not any("text_embeddings" in k or "attn_mask" in k for k in encoder.state_dict())
    assert encoder.default_text_embeddings.shape == (3, 64)


# ---- numerics against the official fixture -----------------------------------------------------------------------
@torch.no_grad()
def test_hidden_states_and_sentence_embedding(tiny_encoder: LanguageEncoder, tiny_io: dict) -> None:
    ids = tiny_io["text/forward_language_check/input_ids"]
    hidden = tiny_encoder.lang_encoder(ids)
    torch.testing.assert_close(hidden, tiny_io["text/forward_language_check/last_hidden_state"], **TOL)
    emb = tiny_encoder.forward_language(ids, norm=True)
    torch.testing.assert_close(emb, tiny_io["text/forward_language_check/embedding"], **TOL)


@torch.no_grad()
def test_grounding_token_and_class_embeddings(tiny_encoder: LanguageEncoder, tiny_io: dict) -> None:
    out = tiny_encoder.get_text_token_embeddings(["a dog"], norm=False)
    assert torch.equal(out.input_ids, tiny_io["paths/grounding/inputs/input_ids"])
    torch.testing.assert_close(out.token_emb, tiny_io["paths/grounding/inputs/token_emb"], **TOL)
    torch.testing.assert_close(out.class_emb, tiny_io["paths/grounding/inputs/class_emb"], **TOL)
    tokens, nonzero = out.grounding_tokens()
    torch.testing.assert_close(tokens, tiny_io["paths/grounding/inputs/grounding_tokens"], **TOL)
    assert torch.equal(nonzero, tiny_io["paths/grounding/inputs/grounding_nonzero_mask"])


@torch.no_grad()
def test_grounding_similarity_matches_out_prob(tiny_encoder: LanguageEncoder, tiny_io: dict) -> None:
    sim = tiny_encoder.grounding_similarity(
        tiny_io["paths/grounding/outputs/pred_gtexts"][0], tiny_io["paths/grounding/inputs/class_emb"])
    torch.testing.assert_close(sim, tiny_io["paths/grounding/result/out_prob"], **TOL)
    assert torch.equal(sim.argmax(0), tiny_io["paths/grounding/result/matched_id"])


@torch.no_grad()
def test_default_text_embeddings_134_classes(tiny_encoder: LanguageEncoder, tiny_io: dict) -> None:
    emb = tiny_encoder.get_text_embeddings()  # COCO-133 + "background", 81 templates each
    assert emb.shape == (134, 64)
    torch.testing.assert_close(emb, tiny_io["text/default_text_embeddings"], **TOL)
    assert tiny_encoder.default_text_embeddings is emb


@torch.no_grad()
def test_compute_similarity_reproduces_class_logits(tiny_encoder: LanguageEncoder, tiny_io: dict) -> None:
    # The decoder's class head: logits = exp(logit_scale) * normalize(query @ class_embed) @ E^T, where the
    # recorded pred_captions are exactly normalize-free `query @ class_embed`.
    encoder = LanguageEncoder(TINY).eval()
    encoder.load_state_dict(tiny_encoder.state_dict())
    encoder.set_text_embeddings(tiny_io["text/default_text_embeddings"])
    for prefix in ("paths/grounding/outputs/", "paths/grounding/outputs/aux_outputs/0/"):
        logits = encoder.compute_similarity(tiny_io[prefix + "pred_captions"])
        torch.testing.assert_close(logits, tiny_io[prefix + "pred_logits"], **TOL)


# ---- behaviour (no fixture needed) -------------------------------------------------------------------------------
def _random_encoder() -> LanguageEncoder:
    torch.manual_seed(0)
    encoder = LanguageEncoder(TINY).eval()
    with torch.no_grad():
        for p in encoder.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return encoder


@torch.no_grad()
def test_eos_trimming_is_exact() -> None:
    # forward_language drops positions after EOS; with causal attention that must not change the result.
    encoder = _random_encoder()
    ids, _ = tokenize(["a dog", "a photo of a large person in a video game."])
    hidden = encoder.lang_encoder(ids)
    eos = ids.argmax(-1)
    full = hidden[torch.arange(2), eos] @ encoder.lang_proj
    torch.testing.assert_close(encoder.forward_language(ids, norm=False), full, atol=1e-5, rtol=1e-5)
    _, class_emb = encoder.forward_language_token(ids)
    torch.testing.assert_close(class_emb, full, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_class_embedding_is_normalised_template_average() -> None:
    encoder = _random_encoder()
    names = ["sky-other-merged", "dog"]
    got = encoder.encode_class_names(names)
    for row, name in enumerate(names):
        ids, _ = tokenize([t.format(clean_class_name(name)) for t in PROMPT_TEMPLATES])
        per = encoder.forward_language(ids, norm=True)
        mean = per.mean(0)
        torch.testing.assert_close(got[row], mean / mean.norm(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.norm(dim=-1), torch.ones(2))


def test_compute_similarity_requires_embeddings() -> None:
    with pytest.raises(RuntimeError, match="get_text_embeddings"):
        LanguageEncoder(TINY).compute_similarity(torch.randn(1, 3, 64))


@torch.no_grad()
def test_text_embedding_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    encoder = _random_encoder()
    names = ["dog", "cat"]
    first = encoder.get_text_embeddings(names, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("text_emb_*.pt"))) == 1

    def fail(*args, **kwargs):
        raise AssertionError("should have been read from the cache")

    monkeypatch.setattr(encoder, "encode_class_names", fail)
    second = encoder.get_text_embeddings(names, cache_dir=tmp_path)
    assert torch.equal(first, second)
    # Different weights -> different fingerprint -> no stale reuse.
    fp = encoder.fingerprint(names)
    encoder.lang_proj.data.mul_(2)
    assert encoder.fingerprint(names) != fp


def test_layernorm_stats_in_fp32_eps_1e12() -> None:
    ln = TFLayerNorm(8)
    x = torch.randn(2, 8)
    ref = (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + 1e-12)
    torch.testing.assert_close(ln(x), ref)
    assert ln.to(torch.bfloat16)(x.to(torch.bfloat16)).dtype == torch.bfloat16  # weights follow the model dtype


def test_vocabulary_constants() -> None:
    assert len(COCO_PANOPTIC_CLASSES) == 133 and len(DEFAULT_VOCABULARY) == 134
    assert DEFAULT_VOCABULARY[-1] == "background" and len(PROMPT_TEMPLATES) == 81
    assert clean_class_name("sky-other-merged") == "sky" and clean_class_name("door-stuff") == "door"
    assert clean_class_name("floor-wood") == "floor-wood"
