"""The Shakespeare text, tokenizer, entmax models and the datasets built from them."""

from __future__ import annotations

import torch
from entmax import entmax15

from sparsebench.bench import gold_graph
from sparsebench.datasets.models import EntmaxTransformer, ModelConfig
from sparsebench.datasets.tokenizer import Tokenizer, pretokenize
from sparsebench.datasets.train import mlm_mask
from sparsebench.methods import attention_logits

TEXT = """HAMLET.
To be, or not to be, that is the question:
Whether 'tis nobler in the mind to suffer
The slings and arrows of outrageous fortune,
Or to take arms against a sea of troubles,
And by opposing end them? To die--to sleep,
No more; and by a sleep to say we end.
"""


def test_pretokens_concatenate_back():
    assert "".join(pretokenize(TEXT)) == TEXT


def test_tokenizer_round_trip_and_determinism(tmp_path):
    a = Tokenizer.train([TEXT] * 3, vocab_size=120, min_count=1)
    b = Tokenizer.train([TEXT] * 3, vocab_size=120, min_count=1)
    assert a.merges == b.merges and len(a) == 120
    ids = a.encode(TEXT)
    assert a.decode(ids) == TEXT
    assert len(ids) < len(TEXT) / 2  # merges compress
    a.save(tmp_path / "tok.json")
    c = Tokenizer.load(tmp_path / "tok.json")
    assert c.encode(TEXT) == ids
    assert c.encode("Zebra").count(c.unk_id) >= 1  # unseen characters map to <unk>


def tiny_model(causal: bool) -> EntmaxTransformer:
    torch.manual_seed(0)
    cfg = ModelConfig(
        vocab_size=64, d_model=32, n_layers=2, n_heads=2, d_ff=64, max_len=24, causal=causal
    )
    return EntmaxTransformer(cfg).eval()


def test_captured_queries_give_the_models_own_support():
    for causal in (False, True):
        model = tiny_model(causal)
        # Larger weights make the attention sparse enough to be an interesting check.
        with torch.no_grad():
            for b in model.blocks:
                b.qkv.weight.mul_(40)
        ids = torch.randint(4, 64, (3, 24), generator=torch.Generator().manual_seed(1))
        lengths = torch.tensor([24, 17, 5])
        cap: list = []
        with torch.no_grad():
            model(ids, lengths, capture=cap)
        assert len(cap) == 2 and cap[0][0].shape == (3, 2, 24, 16)
        q, k, _ = cap[1]
        gold = gold_graph(q, k, lengths=lengths, causal=causal).to_dense()
        pos = torch.arange(24)
        valid = (pos.view(1, 1, 1, -1) < lengths.view(-1, 1, 1, 1)) & (
            pos.view(1, 1, -1, 1) < lengths.view(-1, 1, 1, 1)
        )
        if causal:
            valid &= pos.view(1, 1, 1, -1) <= pos.view(1, 1, -1, 1)
        z = attention_logits(q, k).masked_fill(~valid, float("-inf"))
        p = entmax15(torch.where(valid.any(-1, keepdim=True), z, 0.0), dim=-1)
        assert torch.equal(gold, (p > 0) & valid)
        assert 0 < gold.sum() < valid.sum()


def test_padding_does_not_change_real_tokens():
    model = tiny_model(False)
    ids = torch.randint(4, 64, (1, 10), generator=torch.Generator().manual_seed(2))
    padded = torch.cat([ids, torch.full((1, 6), 7)], dim=1)
    with torch.no_grad():
        a = model(ids)
        b = model(padded, torch.tensor([10]))
    assert torch.allclose(a, b[:, :10], atol=1e-5)


def test_restrict_to_the_diagonal_changes_the_output():
    model = tiny_model(True)
    ids = torch.randint(4, 64, (2, 12), generator=torch.Generator().manual_seed(3))
    eye = torch.eye(12, dtype=torch.bool).view(1, 1, 12, 12)
    with torch.no_grad():
        full = model(ids)
        diag = model(ids, restrict=lambda layer, q, k, lengths, causal: eye)
    assert not torch.allclose(full, diag)


def test_mlm_mask_proportions():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(4, 1000, (64, 512), generator=g)
    inputs, targets = mlm_mask(ids, 1000, 0.15, g)
    chosen = targets != -100
    assert abs(chosen.float().mean().item() - 0.15) < 0.01
    masked = (inputs == Tokenizer.mask_id) & chosen
    assert abs(masked.sum().item() / chosen.sum().item() - 0.8) < 0.02
    assert torch.equal(targets[chosen], ids[chosen])
    assert torch.equal(inputs[~chosen], ids[~chosen])


def test_save_load_round_trip(tmp_path):
    model = tiny_model(True)
    model.save(tmp_path / "m")
    back = EntmaxTransformer.load(tmp_path / "m")
    ids = torch.randint(4, 64, (1, 8), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        # Weights are stored in float16: outputs agree to float16 rounding.
        assert torch.allclose(model(ids), back(ids), atol=1e-2)


def test_build_small_shakespeare_dataset(tmp_path, capsys):
    import json

    from sparsebench.bench.cli import main
    from sparsebench.datasets import QKData
    from sparsebench.datasets.shakespeare import build

    path = build(
        "shakespeare-lm", tmp_path / "lm", counts={"train": 2, "eval": 3}, log=lambda m: None
    )
    card = json.loads((path / "card.json").read_text())
    for field in (
        "name",
        "version",
        "model",
        "alpha",
        "layers",
        "heads",
        "head_dim",
        "causal",
        "tokenization",
        "text_source",
        "text_license",
        "splits",
        "scaling",
        "files",
        "gold_sparsity_per_layer",
        "sparsebench_version",
    ):
        assert field in card, field
    assert card["causal"] is True and card["heads"] == 4 and card["head_dim"] == 64
    assert len(card["gold_sparsity_per_layer"]) == card["layers"]
    assert all(0.5 < s < 1 for s in card["gold_sparsity_per_layer"])  # structured attention
    data = QKData.load(path)
    assert data.split_names == ["train", "eval"] and len(data) == 5
    assert 128 <= int(data.lengths.min()) and int(data.lengths.max()) <= 512
    assert main(["evaluate", "--data", str(path), "--method", "full", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["recall"] == 1.0


def test_text_split_by_play():
    from sparsebench.datasets.text import EVAL_PLAYS, split_plays

    splits = split_plays()
    assert set(splits["eval"]) == set(EVAL_PLAYS)
    assert not set(splits["train"]) & set(splits["eval"])
    assert len(splits["train"]) >= 30
