"""The gold graph's realism statistics (datasets/realism.py) on data whose answer is known."""

from __future__ import annotations

import pytest
import torch

from sparsebench.datasets import QKData, synthetic
from sparsebench.datasets.realism import STAT_NAMES, gold_statistics


def _data(q: torch.Tensor, k: torch.Tensor, causal: bool) -> QKData:
    S, L, H, n, _ = q.shape
    return QKData(
        q=q,
        k=k,
        v=None,
        lengths=torch.full((S,), n),
        causal=causal,
        alpha=1.5,
        splits=["eval"] * S,
        meta={"name": "known"},
    )


def test_statistics_agree_with_the_card_sparsity_and_count_every_edge():
    data = synthetic(num_seqs=12, layers=2, heads=3, n=40, d=8, min_length=20, causal=True)
    stats = gold_statistics(data, batch_size=5)
    assert [x["mean"]["sparsity"] for x in stats["layers"]] == pytest.approx(
        data.split("eval").gold_sparsity(), abs=1e-4
    )
    for layer in stats["layers"]:
        for h in layer["heads"]:
            assert set(h) == set(STAT_NAMES)
            assert 0 <= h["near_1"] <= h["near_3"] <= h["near_11"] <= 1
            assert 1 <= h["support_mean"] <= h["support_max"] <= 40 and h["entropy"] >= 0
        # Edges by distance sum to the edges of every head of the layer; causal: none above.
        assert sum(layer["by_distance"]) > 0
    assert stats["sequences"] == len(data.split("eval")) and stats["causal"]


def test_a_sink_and_a_diagonal_give_the_shares_they_should():
    n, d = 16, 4
    # Every query points where only key 0 points: the whole support is the first token.
    q = torch.zeros(2, 1, 1, n, d)
    q[..., 0] = 50.0
    k = torch.zeros(2, 1, 1, n, d)
    k[..., 0, 0] = 1.0
    sink = gold_statistics(_data(q, k, causal=True))["mean"]
    assert sink["first_token"] == 1.0 and sink["support_mean"] == 1.0
    assert sink["entropy"] == pytest.approx(0.0, abs=1e-6)
    # Orthogonal one-hot tokens with large norm: each query sees only itself.
    eye = torch.eye(n).view(1, 1, 1, n, n).repeat(2, 1, 1, 1, 1) * 50.0
    diag = gold_statistics(_data(eye, eye, causal=False))["mean"]
    assert diag["near_1"] == 1.0 and diag["support_max"] == 1 and diag["first_token"] == 1 / n
    assert diag["sparsity"] == pytest.approx(1 - 1 / n, abs=1e-4)


def test_bad_arguments_are_refused():
    data = synthetic(num_seqs=4, layers=1, heads=2, n=16, d=4)
    with pytest.raises(ValueError, match="max_seqs must be >= 1"):
        gold_statistics(data, max_seqs=0)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        gold_statistics(data, batch_size=0)


def test_table_and_plot_of_the_statistics(tmp_path):
    from sparsebench.bench.report.realism_plot import realism_markdown, realism_plot

    data = synthetic(num_seqs=8, layers=2, heads=2, n=24, d=4, causal=True)
    stats = gold_statistics(data)
    md = realism_markdown(stats, "syn")
    assert md.count("\n| ") == 4 and "| mean |" in md  # header, 2 layers, mean
    path = realism_plot(stats, "syn", tmp_path / "realism.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_datasets_info_prints_the_table_and_writes_the_files(tmp_path, capsys):
    from sparsebench.bench.cli import main

    synthetic(num_seqs=6, layers=2, heads=2, n=20, d=4).save(tmp_path / "syn")
    out = tmp_path / "realism"
    assert main(["datasets", "info", str(tmp_path / "syn"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert '"card_version"' in printed and "| mean |" in printed
    assert sorted(p.name for p in out.iterdir()) == ["realism.json", "realism.md", "realism.png"]
    (tmp_path / "file").write_text("x")
    assert main(["datasets", "info", str(tmp_path / "syn"), "--out", str(tmp_path / "file")]) == 2
    assert "is a file" in capsys.readouterr().err
    assert (tmp_path / "file").read_text() == "x"
