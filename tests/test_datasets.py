"""QKData: validation, save/load round trip, atomic writes, checksums, splits."""

from __future__ import annotations

import json

import pytest
import torch

from sparsebench import datasets
from sparsebench.datasets import DatasetError, QKData


def test_synthetic_is_seeded_and_split():
    a = datasets.synthetic(seed=3)
    b = datasets.synthetic(seed=3)
    c = datasets.synthetic(seed=4)
    assert torch.equal(a.q, b.q) and not torch.equal(a.q, c.q)
    assert a.split_names == ["train", "eval"]
    ev = a.split("eval")
    assert len(ev) == 3 and ev.q.shape[3] == int(ev.lengths.max())
    # zero padding past each length
    for i, L in enumerate(a.lengths.tolist()):
        assert a.q[i, :, :, L:].abs().sum() == 0


def test_save_load_round_trip(tmp_path):
    data = datasets.synthetic(num_seqs=5, layers=2, heads=2, n=16, d=8, causal=True)
    path = data.save(tmp_path / "ds")
    card = json.loads((path / "card.json").read_text())
    assert card["causal"] is True and card["layers"] == 2 and card["heads"] == 2
    assert set(card["files"]) == {"train", "eval"}
    assert card["splits"]["train"]["num_seqs"] + card["splits"]["eval"]["num_seqs"] == 5
    assert "unscaled" in card["scaling"]
    back = QKData.load(path)
    assert back.splits == data.splits
    assert torch.equal(back.q, data.q) and torch.equal(back.k, data.k)
    assert torch.equal(back.v, data.v) and torch.equal(back.lengths, data.lengths)
    assert back.causal and back.alpha == 1.5


def test_overwrite_is_atomic_and_leaves_no_temporaries(tmp_path):
    datasets.synthetic(seed=0).save(tmp_path / "ds")
    datasets.synthetic(seed=1).save(tmp_path / "ds")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
    assert torch.equal(QKData.load(tmp_path / "ds").q, datasets.synthetic(seed=1).q)


def test_failed_save_keeps_the_old_dataset(tmp_path, monkeypatch):
    datasets.synthetic(seed=0).save(tmp_path / "ds")
    import safetensors.torch

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        datasets.synthetic(seed=1).save(tmp_path / "ds")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
    assert torch.equal(QKData.load(tmp_path / "ds").q, datasets.synthetic(seed=0).q)


def test_truncated_or_modified_files_are_reported(tmp_path):
    path = datasets.synthetic().save(tmp_path / "ds")
    f = path / "eval.safetensors"
    f.write_bytes(f.read_bytes()[:-100])
    with pytest.raises(DatasetError, match="sha256.*rebuild"):
        QKData.load(path)
    with pytest.raises(DatasetError, match="cannot be read"):
        QKData.load(path, verify=False)
    (path / "eval.safetensors").unlink()
    with pytest.raises(DatasetError, match="missing"):
        QKData.load(path)


def test_bad_directories(tmp_path):
    with pytest.raises(DatasetError, match="no such directory"):
        QKData.load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no card.json"):
        QKData.load(tmp_path / "empty")
    (tmp_path / "empty" / "card.json").write_text("{not json")
    with pytest.raises(DatasetError, match="not valid JSON"):
        QKData.load(tmp_path / "empty")
    with pytest.raises(DatasetError, match="no dataset directory"):
        datasets.load(str(tmp_path / "nope"))


def test_validation_names_the_problem():
    q = torch.randn(2, 1, 1, 4, 3)
    with pytest.raises(DatasetError, match="k has shape"):
        QKData(q=q, k=torch.randn(2, 1, 1, 5, 3), lengths=[4, 4])
    with pytest.raises(DatasetError, match="lengths must lie"):
        QKData(q=q, k=q.clone(), lengths=[4, 9])
    bad = q.clone()
    bad[0, 0, 0, 0, 0] = float("inf")
    with pytest.raises(DatasetError, match="NaN or inf"):
        QKData(q=bad, k=q.clone(), lengths=[4, 4])
    with pytest.raises(DatasetError, match="no split"):
        QKData(q=q, k=q.clone(), lengths=[4, 4]).split("eval")


def test_layer_and_batches():
    data = datasets.synthetic(num_seqs=5, layers=3, heads=2, n=20, d=4)
    layer = data.layer(2)
    assert layer.q.shape == (5, 2, 20, 4)
    batches = list(data.batches(1, batch_size=2))
    assert [len(b.lengths) for b in batches] == [2, 2, 1]
    assert all(b.q.shape[2] == int(b.lengths.max()) for b in batches)
    with pytest.raises(DatasetError, match="out of range"):
        data.layer(3)


def test_dataset_table_records():
    from sparsebench.datasets import DATASETS, DatasetSpec, dataset_spec

    tasks = {"next-token", "masked-token", "embedding-fidelity", None}
    for name, spec in DATASETS.items():
        assert isinstance(spec, DatasetSpec) and spec.name == name and spec.description
        assert callable(spec.builder) and spec.task in tasks
        assert (spec.task is None) == (spec.model is None)
    assert DATASETS["shakespeare-lm"].task == "next-token"
    assert DATASETS["minilm-entmax"].task == "embedding-fidelity"
    assert dataset_spec("synthetic-bidir").task is None
    with pytest.raises(DatasetError, match="did you mean 'shakespeare-lm'"):
        dataset_spec("shakespeare-l")


def test_build_a_named_dataset(tmp_path):
    path = datasets.build("synthetic-causal", tmp_path / "syn", log=lambda m: None)
    data = QKData.load(path)
    assert data.causal and torch.equal(data.q, datasets.synthetic(causal=True, seed=0).q)


def test_padding_masks_are_the_real_lengths():
    data = datasets.synthetic(num_seqs=4, layers=1, heads=1, n=10, d=4, with_values=True, seed=7)
    for i, L in enumerate(data.lengths.tolist()):
        assert data.k[i, :, :, L:].abs().sum() == 0 and data.v[i, :, :, L:].abs().sum() == 0
        assert data.q[i, :, :, :L].abs().sum(-1).min() > 0


def test_names_and_name_from():
    from sparsebench.datasets import check_name, name_from

    for ok in ("shakespeare-lm", "a", "_x", "v1.2", "kqs_enc-attn"):
        assert check_name(ok) == ok
    assert name_from("sentence-transformers/all-MiniLM-L6-v2") == (
        "sentence-transformers-all-MiniLM-L6-v2"
    )
    assert name_from("../..") == "dataset" and name_from(".hidden dump") == "hidden-dump"
    assert datasets.content_hash is not None
    assert datasets.content_hash(datasets.synthetic().meta) is None


def test_write_into_an_empty_folder_and_over_a_dataset(tmp_path):
    (tmp_path / "empty").mkdir()
    datasets.synthetic(seed=0).save(tmp_path / "empty")
    path = datasets.synthetic(seed=1).save(tmp_path / "empty")
    assert torch.equal(QKData.load(path).q, datasets.synthetic(seed=1).q)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def test_one_builder_per_named_dataset(tmp_path, monkeypatch):
    """A second process waits for the lock, then finds the dataset built and does not rebuild."""
    import threading

    from sparsebench.datasets import DATASETS, DatasetSpec
    from sparsebench.datasets.store import build_lock

    monkeypatch.setenv("SPARSEBENCH_HOME", str(tmp_path))
    calls: list[str] = []

    def builder(out, log):
        calls.append(str(out))
        return datasets.synthetic(seed=0).save(out)

    spec = DATASETS["synthetic-bidir"]
    monkeypatch.setitem(DATASETS, spec.name, DatasetSpec(spec.name, spec.description, builder))
    lock = tmp_path / "datasets" / ".synthetic-bidir.lock"
    logs: list[str] = []
    got: list[QKData] = []
    with build_lock(lock, "synthetic-bidir"):
        waiter = threading.Thread(
            target=lambda: got.append(datasets.load(spec.name, log=logs.append))
        )
        waiter.start()
        for _ in range(200):
            if logs:
                break
            threading.Event().wait(0.02)
        assert logs and logs[0].startswith("waiting for another process building synthetic-bidir")
        datasets.synthetic(seed=0).save(datasets.dataset_dir(spec.name))  # the other builder
    waiter.join(timeout=30)
    assert calls == [] and len(got) == 1 and torch.equal(got[0].q, datasets.synthetic(seed=0).q)
    datasets.build(spec.name, log=lambda m: None)  # an explicit build rebuilds, under the lock
    assert calls == [str(datasets.dataset_dir(spec.name))]
