"""Extraction from tiny randomly initialised Hugging Face models, offline (needs the hf extra).

Every model is built in the test from a config (hidden 32, 2 layers, 4 heads) with a word-level
tokenizer, saved to a temporary directory and extracted from there. The reference for what a
model's attention computes is the model itself run with transformers' eager attention, whose
softmax is intercepted: its input is the model's own masked attention scores, and replacing it
by 1.5-entmax gives the output the entmax swap must reproduce.
"""

from __future__ import annotations

import math
import sys

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from entmax import entmax15  # noqa: E402

from sparsebench.datasets import DatasetError, QKData, hf  # noqa: E402
from sparsebench.datasets.hf_attention import recording  # noqa: E402
from sparsebench.methods import attention_logits  # noqa: E402

WORDS = "to be or not that is the question good night sweet prince now winter of our".split()
TEXTS = [
    "good night sweet prince",
    "to be or not to be that is the question now good night",
    "now",
    "winter of our question",
]
SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
SMALL["max_position_embeddings"] = 64
# Wide initial weights give peaked logits, so entmax is sparse and differs clearly from softmax.
SMALL["initializer_range"] = 0.5


def word_tokenizer():
    """A word-level tokenizer of :data:`WORDS`, for the tiny BERTs built from configs."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[PAD]": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate(WORDS)}}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tk, unk_token="[UNK]", pad_token="[PAD]"
    )


VOCAB = len(WORDS) + 2
T = transformers
MODELS = {
    "gpt2": lambda: T.GPT2Model(
        T.GPT2Config(
            vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64, initializer_range=0.5
        )
    ),
    "gpt2-layer-scaled": lambda: T.GPT2Model(
        T.GPT2Config(
            vocab_size=VOCAB,
            n_embd=32,
            n_layer=2,
            n_head=4,
            n_positions=64,
            initializer_range=0.5,
            scale_attn_by_inverse_layer_idx=True,
        )
    ),
    "llama-gqa": lambda: T.LlamaModel(
        T.LlamaConfig(vocab_size=VOCAB, num_key_value_heads=2, **SMALL)
    ),
    "bert": lambda: T.BertModel(T.BertConfig(vocab_size=VOCAB, **SMALL)),
}
CAUSAL = {"gpt2": True, "gpt2-layer-scaled": True, "llama-gqa": True, "bert": False}


def _save(root, name, build):
    torch.manual_seed(0)
    path = root / name
    build().save_pretrained(path)
    word_tokenizer().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {name: _save(root, name, build) for name, build in MODELS.items()}


@pytest.fixture(scope="module")
def extracted(model_dirs):
    # batch_size 2 puts sequences of different lengths together: padding is exercised.
    return {
        name: hf.extract_hf(path, TEXTS, batch_size=2, progress=False)
        for name, path in model_dirs.items()
    }


def _batch(texts):
    return word_tokenizer()(texts, padding=True, return_tensors="pt")


def _eager(path, texts, *, entmax=True):
    """The model with eager attention: its masked scores per layer and its last hidden states."""
    net = T.AutoModel.from_pretrained(path, attn_implementation="eager", dtype=torch.float32)
    net.eval()
    scores = []
    softmax = torch.nn.functional.softmax

    def intercept(x, dim=-1, dtype=None, **kwargs):
        scores.append(x.detach().float().clone())
        if not entmax:
            return softmax(x, dim=dim, dtype=dtype)
        x = x.float()
        # Eager masks add the dtype's minimum to masked scores.
        return entmax15(x.masked_fill(x < torch.finfo(x.dtype).min / 2, -math.inf), dim=dim)

    with pytest.MonkeyPatch.context() as mp, torch.no_grad():
        mp.setattr(torch.nn.functional, "softmax", intercept)
        out = net(**_batch(texts)).last_hidden_state
    return scores, out


@pytest.mark.parametrize("name", list(MODELS))
def test_logits_equal_the_models_own_scores(name, model_dirs, extracted):
    data = extracted[name]
    assert data.causal is CAUSAL[name] and data.meta["attention"].count("causal") == data.causal
    assert data.q.shape[1:3] == (2, 4) and data.head_dim == 8
    for i, text in enumerate(TEXTS):
        L = int(data.lengths[i])
        scores, _ = _eager(model_dirs[name], [text])
        assert len(scores) == 2
        for layer, s in enumerate(scores):
            allowed = s[0] > torch.finfo(torch.float32).min / 2
            full = torch.ones(L, L, dtype=torch.bool)
            # The model's own mask: causal for decoders, nothing masked for the encoder.
            assert torch.equal(allowed, (full.tril() if data.causal else full).expand_as(allowed))
            ours = attention_logits(data.q[i, layer, :, :L], data.k[i, layer, :, :L])
            torch.testing.assert_close(ours[allowed], s[0][allowed], atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("name", list(MODELS))
def test_entmax_swap_reproduces_the_reference(name, model_dirs):
    net, tok = hf.entmax_model(model_dirs[name], progress=False)
    enc = _batch(TEXTS)
    with torch.no_grad():
        out = net(**enc, output_attentions=True)
    _, reference = _eager(model_dirs[name], TEXTS)
    _, with_softmax = _eager(model_dirs[name], TEXTS, entmax=False)
    real = enc["attention_mask"].bool()
    hidden = out.last_hidden_state
    torch.testing.assert_close(hidden[real], reference[real], atol=1e-5, rtol=1e-5)
    assert (hidden[real] - with_softmax[real]).abs().max() > 1e-2  # the swap changed something
    assert any(bool((p[:, :, :, :4] == 0).any()) for p in out.attentions)  # entmax is sparse
    for probs in out.attentions:
        for b, L in enumerate(enc["attention_mask"].sum(-1).tolist()):
            assert torch.all(probs[b, :, :L, L:] == 0)  # padded keys get nothing
            if CAUSAL[name]:
                assert torch.all(probs[b, :, :L, :L].triu(1) == 0)  # nor future keys


@pytest.mark.parametrize("name", list(MODELS))
def test_padding_does_not_change_real_tokens(name, model_dirs, extracted):
    padded = extracted[name]
    for i in (0, 2):
        alone = hf.extract_hf(model_dirs[name], [TEXTS[i]], progress=False)
        L = int(alone.lengths[0])
        assert int(padded.lengths[i]) == L
        for key in ("q", "k", "v"):
            torch.testing.assert_close(
                getattr(padded, key)[i, :, :, :L], getattr(alone, key)[0], atol=1e-5, rtol=0
            )
            assert torch.count_nonzero(getattr(padded, key)[i, :, :, L:]) == 0


def test_grouped_query_heads_expanded_or_kept(model_dirs, extracted):
    data = extracted["llama-gqa"]
    assert data.meta["num_key_value_heads"] == 2 and "h // 2" in data.meta["kv_heads"]
    net, _ = hf.entmax_model(model_dirs["llama-gqa"], progress=False)
    with recording(expand_kv=False) as kept, torch.no_grad():
        net(**_batch([TEXTS[1]]))
    L = int(data.lengths[1])
    for layer, rec in enumerate(kept):
        assert rec.kv_groups == 2 and rec.k.shape[1] == 2 and rec.v.shape[1] == 2
        for h in range(4):
            torch.testing.assert_close(data.k[1, layer, h, :L], rec.k[0, h // 2], atol=1e-5, rtol=0)
            torch.testing.assert_close(data.v[1, layer, h, :L], rec.v[0, h // 2], atol=1e-5, rtol=0)
    # Query heads sharing a key head see the same keys; the other group does not.
    assert torch.equal(data.k[:, :, 0], data.k[:, :, 1])
    assert not torch.equal(data.k[:, :, 1], data.k[:, :, 2])


def test_stored_queries_carry_the_rotary_embedding(model_dirs, extracted):
    data = extracted["llama-gqa"]
    net, _ = hf.entmax_model(model_dirs["llama-gqa"], progress=False)
    ids = _batch([TEXTS[1]])["input_ids"]
    L = ids.shape[1]
    with torch.no_grad():
        x = net.layers[0].input_layernorm(net.embed_tokens(ids))
        plain = net.layers[0].self_attn.q_proj(x).view(1, L, 4, 8).transpose(1, 2)[0]
    stored = data.q[1, 0, :, :L]
    # A rotation: the same vector at position 0, the same norms, other vectors further on.
    torch.testing.assert_close(stored[:, 0], plain[:, 0], atol=1e-5, rtol=0)
    torch.testing.assert_close(stored.norm(dim=-1), plain.norm(dim=-1), atol=1e-5, rtol=1e-5)
    assert (stored[:, 1:] - plain[:, 1:]).abs().max() > 1e-2


def test_model_scaling_is_folded_into_the_queries(extracted):
    standard, scaled = extracted["gpt2"], extracted["gpt2-layer-scaled"]
    d = standard.head_dim
    assert standard.meta["model_scaling"] == pytest.approx([d**-0.5, d**-0.5])
    assert scaled.meta["model_scaling"] == pytest.approx([d**-0.5, d**-0.5 / 2])
    assert "multiplied by model_scaling*sqrt(d)" in scaled.meta["scaling_note"]
    # Same weights and the same first layer: layer 1's stored queries are halved.
    torch.testing.assert_close(scaled.q[:, 0], standard.q[:, 0])
    assert not torch.allclose(scaled.q[:, 1], standard.q[:, 1], atol=1e-3)


def test_extract_dataset_writes_train_and_eval(tmp_path, model_dirs):
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(TEXTS[:2]) + "\n\n" + "\n".join(TEXTS[2:]) + "\nsweet prince\n")
    lines = []
    path = hf.extract_dataset(
        model_dirs["llama-gqa"], texts, out=tmp_path / "ds", name="tiny-llama", eval_fraction=0.4,
        log=lines.append,
    )  # fmt: skip
    data = QKData.load(path)
    assert data.splits == ["train"] * 3 + ["eval"] * 2
    card = data.meta
    assert card["name"] == "tiny-llama" and card["alpha"] == 1.5 and card["causal"] is True
    assert card["model"] == str(model_dirs["llama-gqa"]) and card["model_type"] == "llama"
    assert card["scaling"] == "queries stored unscaled; logits are q.k/sqrt(d)"
    assert card["text_source"] == "texts.txt" and len(card["text_sha256"]) == 64
    assert card["gold_sparsity_split"] == "eval" and len(card["gold_sparsity_per_layer"]) == 2
    assert lines[-1] == "extracted 5 sequences (causal, 2 layers x 4 heads)"
    with pytest.raises(DatasetError, match=r"eval_fraction must lie in \[0, 1\)"):
        hf.extract_dataset(model_dirs["bert"], texts, out=tmp_path / "x", eval_fraction=1.0)
    with pytest.raises(DatasetError, match="no texts file"):
        hf.extract_dataset(model_dirs["bert"], tmp_path / "none.txt", out=tmp_path / "x")


def test_model_not_available_offline(tmp_path):
    texts = tmp_path / "t.txt"
    texts.write_text("a b\nc d\n")
    with pytest.raises(ValueError, match="not found locally; pass a local path or pre-download it"):
        hf.extract_dataset("no-such-org/no-such-model", texts, out=tmp_path / "x", log=lambda s: 0)
    with pytest.raises(DatasetError, match="no config.json"):
        hf.extract_hf(tmp_path, ["a b"], progress=False)


def test_missing_transformers_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(DatasetError, match=r'pip install -c constraints.txt -e "\.\[hf\]"'):
        hf.extract_hf("anything", TEXTS, progress=False)


UNSUPPORTED = {
    # Attention outside the interface (relative position bias computed in the module).
    "mpnet": (lambda: T.MPNetModel(T.MPNetConfig(vocab_size=VOCAB, **SMALL)), "does not route"),
    "t5": (
        lambda: T.T5Model(
            T.T5Config(vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4)
        ),
        "encoder-decoder",
    ),
    "gemma2": (
        lambda: T.Gemma2Model(
            T.Gemma2Config(vocab_size=VOCAB, num_key_value_heads=2, head_dim=8, **SMALL)
        ),
        "passes softcap",
    ),
    "mistral-window-4": (
        lambda: T.MistralModel(
            T.MistralConfig(vocab_size=VOCAB, num_key_value_heads=2, sliding_window=4, **SMALL)
        ),
        "sliding window",
    ),
}


@pytest.mark.parametrize("name", list(UNSUPPORTED))
def test_unsupported_attention_is_refused(name, tmp_path):
    build, message = UNSUPPORTED[name]
    path = _save(tmp_path, name, build)
    with pytest.raises(DatasetError, match=message):
        hf.extract_hf(path, TEXTS, progress=False)
