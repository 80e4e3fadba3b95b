"""Importing official Sparsefinder q/k dumps."""

from __future__ import annotations

import math

import pytest
import torch

from sparsebench.datasets import DatasetError, QKData
from sparsebench.datasets.importers import import_sparsefinder

LAYERS, HEADS, D = 2, 3, 16


def _seq(L, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(LAYERS, HEADS, L, D, generator=g)


def _dump(path, lengths, *, trg=None, tensor_lengths=None, **overrides):
    tensor_lengths = tensor_lengths or (trg if trg is not None else lengths)
    obj = {
        "length_src": torch.tensor(lengths),
        "q": [_seq(L, 2 * i) for i, L in enumerate(tensor_lengths)],
        "k": [_seq(L, 2 * i + 1) for i, L in enumerate(tensor_lengths)],
    }
    if trg is not None:
        obj["length_trg"] = torch.tensor(trg)
    obj.update(overrides)
    torch.save(obj, path)
    return obj


def test_mlm_dump(tmp_path):
    lengths = [5, 9, 7, 3, 8, 6, 9, 4, 5, 7, 6, 2]
    obj = _dump(tmp_path / "kqs_enc-attn.pt", lengths)
    data = import_sparsefinder(tmp_path / "kqs_enc-attn.pt")
    assert isinstance(data, QKData)
    assert data.q.shape == (12, LAYERS, HEADS, 9, D) and data.k.shape == data.q.shape
    assert data.v is None
    assert data.lengths.tolist() == lengths
    assert data.causal is False and data.alpha == 1.5
    # The official split: last int(0.1 * N) sequences are eval, in file order.
    assert data.splits == ["train"] * 11 + ["eval"]
    for i, L in enumerate(lengths):
        torch.testing.assert_close(data.q[i, :, :, :L], obj["q"][i], rtol=0, atol=0)
        torch.testing.assert_close(data.k[i, :, :, :L], obj["k"][i], rtol=0, atol=0)
        assert torch.count_nonzero(data.q[i, :, :, L:]) == 0
        assert torch.count_nonzero(data.k[i, :, :, L:]) == 0
    assert data.meta["name"] == "kqs_enc-attn"
    assert data.meta["queries_rescaled_on_import"] is False
    assert data.split("eval").lengths.tolist() == [2]


def test_round_trip_and_eval_fraction(tmp_path):
    _dump(tmp_path / "d.pt", [4, 6, 5, 3, 7])
    data = import_sparsefinder(tmp_path / "d.pt", eval_fraction=0.4, name="tiny", alpha=1.25)
    assert data.splits == ["train"] * 3 + ["eval"] * 2
    loaded = QKData.load(data.save(tmp_path / "out"))
    assert loaded.meta["name"] == "tiny" and loaded.alpha == 1.25
    torch.testing.assert_close(loaded.q, data.q)
    assert loaded.splits == data.splits
    assert import_sparsefinder(tmp_path / "d.pt", eval_fraction=0).splits == ["train"] * 5


def test_rescale_queries(tmp_path):
    obj = _dump(tmp_path / "d.pt", [4, 6])
    plain = import_sparsefinder(tmp_path / "d.pt")
    scaled = import_sparsefinder(tmp_path / "d.pt", rescale_queries=True)
    torch.testing.assert_close(scaled.q, plain.q * math.sqrt(D))
    torch.testing.assert_close(scaled.k, plain.k, rtol=0, atol=0)
    torch.testing.assert_close(scaled.q[1, :, :, :6], obj["q"][1] * math.sqrt(D))
    assert scaled.meta["queries_rescaled_on_import"] is True


def test_mt_dump_uses_target_lengths_and_is_causal(tmp_path):
    src, trg = [12, 15, 11], [5, 8, 6]
    _dump(tmp_path / "mt.pt", src, trg=trg)
    data = import_sparsefinder(tmp_path / "mt.pt")
    assert data.causal is True
    assert data.lengths.tolist() == trg
    assert data.q.shape == (3, LAYERS, HEADS, 8, D)
    assert data.meta["length_key"] == "length_trg"
    assert data.meta["length_src_range"] == [11, 15]
    assert import_sparsefinder(tmp_path / "mt.pt", causal=False).causal is False


def test_padded_tensors_are_trimmed_and_zeroed(tmp_path):
    # Tensors stored longer than the sequence (batch padding) keep only the real length.
    _dump(tmp_path / "d.pt", [3, 5], tensor_lengths=[6, 6])
    data = import_sparsefinder(tmp_path / "d.pt")
    assert data.q.shape[3] == 5
    assert torch.count_nonzero(data.q[0, :, :, 3:]) == 0


def test_truncated_file(tmp_path):
    _dump(tmp_path / "d.pt", [4, 6, 5])
    raw = (tmp_path / "d.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DatasetError, match="truncated"):
        import_sparsefinder(tmp_path / "cut.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file at all")
    with pytest.raises(DatasetError, match="truncated|not a torch-saved"):
        import_sparsefinder(tmp_path / "junk.pt")
    with pytest.raises(DatasetError, match="does not exist"):
        import_sparsefinder(tmp_path / "nope.pt")


def test_missing_key(tmp_path):
    torch.save({"length_src": torch.tensor([3]), "q": [_seq(3, 0)]}, tmp_path / "d.pt")
    with pytest.raises(DatasetError, match=r"lacks key\(s\) \['k'\]"):
        import_sparsefinder(tmp_path / "d.pt")


def test_not_a_dict(tmp_path):
    torch.save([torch.zeros(2)], tmp_path / "d.pt")
    with pytest.raises(DatasetError, match="not a dict"):
        import_sparsefinder(tmp_path / "d.pt")


def test_mismatched_counts_and_shapes(tmp_path):
    _dump(tmp_path / "a.pt", [4, 6], k=[_seq(4, 0)])
    with pytest.raises(DatasetError, match="disagree in number"):
        import_sparsefinder(tmp_path / "a.pt")
    _dump(tmp_path / "b.pt", [4, 6, 5])
    obj = torch.load(tmp_path / "b.pt", weights_only=True)
    obj["length_src"] = torch.tensor([4, 6])
    torch.save(obj, tmp_path / "b.pt")
    with pytest.raises(DatasetError, match="length_src has 2"):
        import_sparsefinder(tmp_path / "b.pt")
    _dump(tmp_path / "c.pt", [4], q=[torch.zeros(HEADS, 4, D)])
    with pytest.raises(DatasetError, match="rank 3"):
        import_sparsefinder(tmp_path / "c.pt")
    _dump(tmp_path / "d.pt", [4, 5], k=[_seq(4, 0), torch.zeros(LAYERS, HEADS, 5, D + 1)])
    with pytest.raises(DatasetError, match="sequence 1 has q of shape"):
        import_sparsefinder(tmp_path / "d.pt")
    _dump(tmp_path / "e.pt", [4, 9], tensor_lengths=[4, 6])
    with pytest.raises(DatasetError, match="length_src 9 but its tensors have length 6"):
        import_sparsefinder(tmp_path / "e.pt")
    _dump(tmp_path / "f.pt", [4], length_src=torch.tensor([[4]]))
    with pytest.raises(DatasetError, match="1-D integer"):
        import_sparsefinder(tmp_path / "f.pt")
    with pytest.raises(DatasetError, match="eval_fraction"):
        import_sparsefinder(tmp_path / "a.pt", eval_fraction=1.0)


def test_refuses_arbitrary_objects(tmp_path):
    import datetime

    torch.save({"length_src": datetime.date(2020, 1, 1)}, tmp_path / "d.pt")
    with pytest.raises(DatasetError, match="weights_only"):
        import_sparsefinder(tmp_path / "d.pt")
