"""Bad input at the command line: exit status 2, one line naming the problem, nothing written.

Each case runs ``sparsebench`` in a private working directory holding a small dataset, a run
folder, a folder that is not one and a published results folder; after the command every file
there is unchanged and no run folder was made.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from sparsebench import datasets
from sparsebench.bench.cli import main
from sparsebench.bench.runs import append_record, open_run_folder


@pytest.fixture
def cwd(tmp_path, monkeypatch):
    """A working directory: ``syn`` (train + eval), ``evalonly``, ``run1`` (a run folder with
    records), ``plain`` (a folder of other files), ``pub`` (published results), ``afile``."""
    monkeypatch.setenv("SPARSEBENCH_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    data = datasets.synthetic(num_seqs=6, layers=2, heads=2, n=16, d=8, seed=0)
    data.save(tmp_path / "syn")
    only = datasets.synthetic(num_seqs=3, layers=1, heads=2, n=16, d=8, seed=1)
    only.splits = ["train"] * 3
    only.save(tmp_path / "trainonly")
    only.splits = ["eval"] * 3
    only.save(tmp_path / "evalonly")
    run = open_run_folder("sweep", ["sweep"], results=tmp_path / "run1")
    append_record(run / "synthetic-bidir" / "records.jsonl", _rec("synthetic-bidir", "h1"))
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.txt").write_text("mine\n")
    append_record(
        tmp_path / "pub" / "synthetic-bidir" / "records.jsonl", _rec("synthetic-bidir", "h0")
    )
    (tmp_path / "afile").write_text("x\n")
    return tmp_path


def _rec(dataset: str, data_hash: str, layer: int = 0) -> dict:
    return {
        "key": f"{dataset}|window|layer={layer}|eval|data={data_hash}|v=0.1.0",
        "dataset": dataset,
        "dataset_hash": data_hash,
        "sparsebench": "0.1.0",
        "method": "window",
        "method_id": "window",
        "layer": layer,
        "recall": 0.9,
        "sparsity": 0.5,
        "gold_sparsity": 0.8,
        "date": "2026-01-01T00:00:00+00:00",
        "params": {},
    }


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in folder.rglob("*")
        if p.is_file() and "home" not in p.relative_to(folder).parts
    }


def _evil_run(cwd: Path) -> None:
    """A run folder whose record names a dataset outside the results folder."""
    run = open_run_folder("sweep", ["sweep"], results=cwd / "evil")
    append_record(run / "synthetic-bidir" / "records.jsonl", _rec("../../escape", "h1"))


def _evil_results(cwd: Path) -> None:
    append_record(cwd / "evilres" / "x" / "records.jsonl", _rec("/tmp/escape", "h1"))


def _run_with_other_build(cwd: Path) -> None:
    run = open_run_folder("sweep", ["sweep"], results=cwd / "run2")
    append_record(run / "synthetic-bidir" / "records.jsonl", _rec("synthetic-bidir", "h9"))


def _readonly(cwd: Path) -> None:
    (cwd / "ro").mkdir()
    os.chmod(cwd / "ro", 0o555)


SWEEP = ["sweep", "--data", "syn", "--methods", "window"]
SPEED = ["speed", "--methods", "window", "--lengths", "64", "--repeats", "1"]

CASES = [
    # (id, argv, words the message must hold, set-up)
    ("layers-negative", [*SWEEP, "--layers", "-1"], ["--layers", "-1", "negative"], None),
    ("layers-not-int", [*SWEEP, "--layers", "x"], ["--layers", "'x'", "integer"], None),
    ("layers-out-of-range", [*SWEEP, "--layers", "0,2"], ["layer 2", "out of range"], None),
    ("layers-twice", [*SWEEP, "--layers", "1,1"], ["layer 1", "twice"], None),
    ("split-typo", [*SWEEP, "--split", "evl"], ["'evl'", "train, eval"], None),
    (
        "dataset-without-eval-split",
        ["sweep", "--data", "trainonly", "--methods", "window"],
        ["no split 'eval'", "train"],
        None,
    ),
    (
        "methods-no-match",
        ["sweep", "--data", "syn", "--methods", "windw"],
        ["did you mean 'window'"],
        None,
    ),
    ("methods-empty", ["sweep", "--data", "syn", "--methods", ";"], ["--methods", "empty"], None),
    (
        "methods-unknown-param",
        ["sweep", "--data", "syn", "--methods", "window:ww=3"],
        ["did you mean 'w'"],
        None,
    ),
    ("grid-unknown", [*SWEEP, "--grid", "huge"], ["no grid 'huge'"], None),
    ("resume-not-a-run", [*SWEEP, "--resume", "plain"], ["not a run folder"], None),
    ("resume-missing", [*SWEEP, "--resume", "nowhere"], ["not a run folder"], None),
    ("results-other-folder", [*SWEEP, "--results", "plain"], ["plain", "not a run folder"], None),
    ("results-published", [*SWEEP, "--results", "pub"], ["pub", "publish"], None),
    ("results-is-a-file", [*SWEEP, "--results", "afile"], ["afile", "is a file"], None),
    ("results-and-resume", [*SWEEP, "--results", "x", "--resume", "run1"], ["not both"], None),
    ("out-is-a-folder", [*SWEEP, "--out", "plain"], ["plain", "is a folder"], None),
    ("out-below-a-file", [*SWEEP, "--results", "afile/sub"], ["afile", "a file"], None),
    ("gpus-negative", [*SWEEP, "--gpus-per-task", "-1"], ["--gpus-per-task"], None),
    (
        "accuracy-windows-negative",
        ["accuracy", "--model", "shakespeare-lm", "--windows", "-1"],
        ["--windows", "-1"],
        None,
    ),
    (
        "accuracy-methods-no-match",
        ["accuracy", "--model", "shakespeare-lm", "--methods", "sparsefindr*"],
        ["matches no method"],
        None,
    ),
    (
        "run-methods-no-match",
        ["run", "--data", "syn", "--methods", "nothing"],
        ["'nothing'", "matches no method"],
        None,
    ),
    ("speed-length-zero", [*SPEED[:-4], "--lengths", "0"], ["--lengths", "0"], None),
    ("speed-length-not-int", [*SPEED[:-4], "--lengths", "512,abc"], ["--lengths", "'abc'"], None),
    ("speed-heads-zero", [*SPEED, "--heads", "0"], ["--heads", "positive"], None),
    (
        "speed-repeats-zero",
        ["speed", "--methods", "window", "--lengths", "64", "--repeats", "0"],
        ["--repeats"],
        None,
    ),
    (
        "speed-methods-no-match",
        ["speed", "--methods", "windw", "--lengths", "64"],
        ["did you mean 'window'"],
        None,
    ),
    (
        "speed-dense-with-params",
        ["speed", "--methods", "sdpa:w=3", "--lengths", "64"],
        ["sdpa", "no parameters"],
        None,
    ),
    (
        "speed-gold-unknown",
        ["speed", "--suite", "gold", "--methods", "gld", "--lengths", "64"],
        ["'gld'", "did you mean 'gold'"],
        None,
    ),
    ("speed-device-unknown", [*SPEED, "--device", "tpu"], ["--device", "tpu"], None),
    (
        "evaluate-split-typo",
        ["evaluate", "--data", "syn", "--method", "window", "--split", "evl"],
        ["'evl'", "train, eval"],
        None,
    ),
    (
        "evaluate-learned-without-train",
        ["evaluate", "--data", "evalonly", "--method", "sparsefinder_kmeans"],
        ["sparsefinder_kmeans", "'train' split", "evalonly", "eval"],
        None,
    ),
    (
        "evaluate-layer-negative",
        ["evaluate", "--data", "syn", "--method", "window", "--layer", "-1"],
        ["--layer", "negative"],
        None,
    ),
    (
        "show-head-negative",
        ["show", "--data", "syn", "--method", "window", "--head", "-2"],
        ["--head", "negative"],
        None,
    ),
    (
        "synthetic-zero-seqs",
        ["datasets", "synthetic", "new", "--num-seqs", "0"],
        ["--num-seqs", "positive"],
        None,
    ),
    ("leaderboard-empty", ["leaderboard", "--results", "plain"], ["no records", "plain"], None),
    (
        "leaderboard-dataset-escapes",
        ["leaderboard", "--results", "evilres"],
        ["/tmp/escape", "invalid dataset name"],
        _evil_results,
    ),
    (
        "publish-missing-run",
        ["publish", "nowhere", "--results", "pub"],
        ["nowhere", "no such run folder"],
        None,
    ),
    (
        "publish-into-itself",
        ["publish", "pub", "--results", "pub"],
        ["results folder itself"],
        None,
    ),
    (
        "publish-other-build",
        ["publish", "run2", "--results", "pub"],
        ["h0", "h9", "--replace"],
        _run_with_other_build,
    ),
    (
        "publish-dataset-escapes",
        ["publish", "evil", "--results", "pub"],
        ["'../../escape'"],
        _evil_run,
    ),
    ("unknown-subcommand", ["sweeep"], ["invalid choice", "sweeep"], None),
    (
        "methods-name-typo",
        ["methods", "windw"],
        ["no method matches", "did you mean 'window'"],
        None,
    ),
    (
        "compare-other-build",
        ["compare", "run1", "run2"],
        ["synthetic-bidir", "h1", "h9", "same dataset build"],
        _run_with_other_build,
    ),
    ("compare-missing-run", ["compare", "run1", "nowhere"], ["nowhere", "no such folder"], None),
    (
        "leaderboard-format-unknown",
        ["leaderboard", "--results", "pub", "--format", "md,docx"],
        ["'docx'", "latex"],
        None,
    ),
    ("extract-without-model", ["datasets", "extract", "--texts", "afile"], ["--model"], None),
    (
        "extract-without-texts-file",
        ["datasets", "extract", "--model", "m", "--texts", "nofile", "--out", "new"],
        ["--texts nofile", "no such file"],
        None,
    ),
    (
        "accuracy-frontier-without-from",
        ["accuracy", "--model", "shakespeare-lm", "--configs", "frontier"],
        ["--configs frontier", "--from DIR"],
        None,
    ),
    (
        "accuracy-from-without-records",
        ["accuracy", "--model", "shakespeare-lm", "--configs", "frontier", "--from", "plain"],
        ["--from plain", "no sweep records of shakespeare-lm"],
        None,
    ),
    (
        "accuracy-from-without-frontier",
        ["accuracy", "--model", "shakespeare-lm", "--from", "run1"],
        ["--from DIR", "--configs frontier or reported"],
        None,
    ),
    (
        "evaluate-device-unknown",
        ["evaluate", "--data", "syn", "--method", "window", "--device", "tpu"],
        ["--device", "'tpu'"],
        None,
    ),
]


@pytest.mark.parametrize(
    ("argv", "words", "setup"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input_is_one_line_and_writes_nothing(cwd, capsys, argv, words, setup):
    if setup is not None:
        setup(cwd)
    before = _snapshot(cwd)
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse's usage errors
        rc = e.code
    err = capsys.readouterr().err.strip()
    assert rc == 2
    lines = [line for line in err.splitlines() if "config/s" not in line]
    assert len(lines) == 1 and lines[0].startswith("sparsebench: error:"), err
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert _snapshot(cwd) == before
    assert not (cwd / "runs").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_speed_on_cuda_without_cuda(cwd, capsys):
    before = _snapshot(cwd)
    assert main([*SPEED, "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "CUDA is not available" in err
    assert _snapshot(cwd) == before and not (cwd / "runs").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize(
    "argv",
    [
        ["evaluate", "--data", "syn", "--method", "window"],
        SWEEP,
        ["accuracy", "--model", "shakespeare-lm", "--methods", "window"],
    ],
    ids=["evaluate", "sweep", "accuracy"],
)
def test_device_cuda_without_cuda_stops_before_any_work(cwd, capsys, argv):
    before = _snapshot(cwd)
    assert main([*argv, "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "sparsebench: error: --device cuda: CUDA is not available on this machine; use cpu"
    )
    assert _snapshot(cwd) == before and not (cwd / "runs").exists()
    assert not (cwd / "home" / "datasets").exists()  # no dataset was built or loaded


def test_extract_a_model_that_is_not_available_offline(cwd, capsys, monkeypatch):
    pytest.importorskip("transformers")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (cwd / "texts.txt").write_text("to be or not to be\nthat is the question\n")
    before = _snapshot(cwd)
    argv = ["datasets", "extract", "--model", "nobody/no-such-model", "--texts", "texts.txt"]
    assert main([*argv, "--out", "new"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("sparsebench: error:") and "nobody/no-such-model" in err
    assert _snapshot(cwd) == before and not (cwd / "new").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_results_folder(cwd, capsys):
    _readonly(cwd)
    assert main([*SWEEP, "--results", "ro"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "ro" in err and "permission" in err.lower()


def test_a_published_folder_is_never_a_sweeps_target(cwd, capsys):
    # The committed results/ change only through publish.
    before = json.dumps(sorted(_snapshot(cwd)))
    assert main([*SWEEP, "--results", "pub"]) == 2
    assert json.dumps(sorted(_snapshot(cwd))) == before
