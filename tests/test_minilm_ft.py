"""Fine-tuning an encoder's q/k projections for entmax attention, on a tiny BERT (hf extra).

The real all-MiniLM-L6-v2 is never trained here: a 2-layer BERT (hidden 32, 2 heads) with a
word-level tokenizer is built from a config, saved to a temporary directory and used as both
teacher (softmax) and student (1.5-entmax), as ``sparsebench datasets train minilm-entmax-ft``
uses MiniLM.
"""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")
pytest.importorskip("safetensors")

from sparsebench.datasets import DATASETS, DatasetError, hf, sha256_file  # noqa: E402
from sparsebench.datasets import minilm_ft as ft  # noqa: E402

from .test_hf_models import WORDS, word_tokenizer  # noqa: E402

TEXTS = [
    "good night sweet prince",
    "to be or not to be that is the question now good night",
    "now winter of our question",
    "that is the question good prince",
]
RECIPE = ft.Recipe(steps=20, lr=1e-3, batch_size=4, seed=0, max_length=32)
TRAIN_HINT = "run `sparsebench datasets train minilm-entmax-ft`"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()  # a tiny model runs fastest on one thread
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    cfg = transformers.BertConfig(
        vocab_size=len(WORDS) + 2,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        initializer_range=0.5,  # peaked logits: entmax is sparse and far from softmax
    )
    path = tmp_path_factory.mktemp("tiny-bert")
    transformers.BertModel(cfg).save_pretrained(path)
    word_tokenizer().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tuned(model_dir):
    lines = []
    net, tok, stats = ft.finetune(model_dir, TEXTS, recipe=RECIPE, log_every=5, log=lines.append)
    return net, tok, stats, lines


def _batch(texts=TEXTS):
    return dict(word_tokenizer()(texts, padding=True, return_tensors="pt"))


def _fresh(model_dir):
    return hf.entmax_model(model_dir, progress=False)[0]


def test_finetuning_lowers_the_distillation_loss(model_dir, tuned):
    net, _, stats, lines = tuned
    teacher = ft.softmax_model(model_dir)
    with torch.no_grad():
        before, _ = ft.distillation_loss(_fresh(model_dir), teacher, _batch())
        after, parts = ft.distillation_loss(net, teacher, _batch())
    assert float(after) < 0.5 * float(before)
    assert parts["mse"] >= 0 and 0 <= parts["cos"] <= 2
    assert stats["steps"] == RECIPE.steps and stats["loss_last"] < stats["loss_first"]
    assert [s for s, _ in stats["history"]] == [1, 5, 10, 15, 20]
    assert len(lines) == 5 and lines[0].startswith("step 1/20: loss ")
    assert not any(p.requires_grad for p in net.parameters())


def test_finetuning_is_seeded_and_stops_at_the_time_budget(model_dir, tuned):
    recipe = ft.Recipe(**{**RECIPE.__dict__, "steps": 10})
    again = ft.finetune(model_dir, TEXTS, recipe=recipe, log_every=5, log=lambda m: None)[2]
    assert again["history"] == tuned[2]["history"][:3]  # steps 1, 5 and 10
    lines = []
    short = ft.finetune(model_dir, TEXTS, recipe=RECIPE, time_budget_s=0, log=lines.append)[2]
    assert short["steps"] == 1 and "time budget" in lines[-1]
    with pytest.raises(DatasetError, match="need texts"):
        ft.finetune(model_dir, [], recipe=RECIPE)


def test_only_query_and_key_projections_change(model_dir, tuned):
    base = dict(_fresh(model_dir).named_parameters())
    qk = ft.qk_parameters(tuned[0])
    assert len(qk) == 2 * 2 * 2  # layers x (query, key) x (weight, bias)
    for name, p in tuned[0].named_parameters():
        if name in qk:
            assert not torch.equal(p, base[name]), name
        else:
            assert torch.equal(p, base[name]), name


def test_delta_round_trips_through_safetensors(model_dir, tuned, tmp_path):
    from safetensors import safe_open

    net = tuned[0]
    path = ft.save_delta(net, tmp_path)
    with safe_open(str(path), "pt") as f:
        assert set(f.keys()) == set(ft.qk_parameters(net))
        assert all(f.get_tensor(k).dtype == torch.float16 for k in f.keys())
        assert f.metadata()["alpha"] == "1.5"
    loaded, _ = ft.load_finetuned(model_dir, tmp_path)
    rounded = _fresh(model_dir)
    with torch.no_grad():
        for name, p in ft.qk_parameters(rounded).items():
            p.copy_(ft.qk_parameters(net)[name].half().float())
        for name, p in rounded.named_parameters():
            assert torch.equal(p, dict(loaded.named_parameters())[name]), name
        out = loaded(**_batch()).last_hidden_state
        assert torch.allclose(out, rounded(**_batch()).last_hidden_state, atol=1e-6)
        assert torch.allclose(out, net(**_batch()).last_hidden_state, atol=0.05)  # float16


def test_a_missing_or_foreign_delta_is_refused(model_dir, tmp_path):
    for call in (
        lambda: ft.load_finetuned(model_dir, tmp_path),
        lambda: ft.finetuned_model_dir(model_dir, tmp_path),
        lambda: ft.embedding_fidelity_report(model_dir, tmp_path, texts=TEXTS),
        lambda: ft.build_minilm_entmax_ft(tmp_path / "out", folder=tmp_path),
    ):
        with pytest.raises(DatasetError, match=rf"delta\.safetensors is missing; {TRAIN_HINT}"):
            call()
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / "delta.safetensors"))
    with pytest.raises(DatasetError, match="does not hold this model's 8 q/k projections"):
        ft.load_finetuned(model_dir, tmp_path)


def test_extraction_from_the_finetuned_model(model_dir, tuned, tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEBENCH_HOME", str(tmp_path / "home"))
    ft.save_delta(tuned[0], tmp_path / "delta")
    tuned_dir = ft.finetuned_model_dir(model_dir, tmp_path / "delta")
    assert tuned_dir == ft.finetuned_model_dir(model_dir, tmp_path / "delta")  # saved once
    data = hf.extract_hf(tuned_dir, TEXTS, batch_size=2, progress=False)
    base = hf.extract_hf(model_dir, TEXTS, batch_size=2, progress=False)
    n = max(len(t.split()) for t in TEXTS)
    assert data.q.shape == data.k.shape == data.v.shape == (len(TEXTS), 2, 2, n, 16)
    assert data.lengths.tolist() == [len(t.split()) for t in TEXTS] and not data.causal
    assert not torch.allclose(data.q, base.q) and not torch.allclose(data.k, base.k)
    # The first layer's values do not depend on its queries and keys.
    assert torch.allclose(data.v[:, 0], base.v[:, 0], atol=1e-5)
    digest = sha256_file(tmp_path / "delta" / "delta.safetensors")
    with pytest.raises(DatasetError, match="built from another delta .*; rebuild it"):
        ft.finetuned_model_dir(model_dir, tmp_path / "delta", expect_sha256="0" * 64)
    assert ft.finetuned_model_dir(model_dir, tmp_path / "delta", expect_sha256=digest) == tuned_dir


def test_fidelity_report_before_and_after(model_dir, tuned, tmp_path):
    ft.save_delta(tuned[0], tmp_path)
    from sparsebench.bench.stats import macro_interval

    rep = ft.embedding_fidelity_report(
        model_dir, tmp_path, texts=TEXTS, interval=lambda xs: macro_interval([xs], seed=0)
    )
    assert rep["sentences"] == len(TEXTS) and "softmax" in rep["reference"]
    for when in ("before", "after"):
        lo, hi = rep[when]["ci95"]
        assert -1 <= lo <= rep[when]["mean"] <= hi <= 1
    assert rep["after"]["mean"] > rep["before"]["mean"]  # trained on these very sentences


def test_registered_and_trained_from_the_cli(monkeypatch):
    from sparsebench.bench.cli import main

    spec = DATASETS["minilm-entmax-ft"]
    assert spec.task == "embedding-fidelity" and spec.model == DATASETS["minilm-entmax"].model
    calls = []
    monkeypatch.setattr(ft, "train", lambda **kw: calls.append(kw) or "folder")
    assert main(["datasets", "train", "minilm-entmax-ft", "--steps", "3"]) == 0
    assert calls[0]["steps"] == 3
