"""Run folders, record identity, publishing, and the leaderboard's one identity per dataset."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from sparsebench import datasets
from sparsebench.bench.cli import main
from sparsebench.bench.report import write_leaderboard
from sparsebench.bench.runs import (
    append_record,
    open_run_folder,
    read_records,
    record_key,
    select_methods,
    sweep,
)

QUIET = {"progress": False, "log": lambda m: None}


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEBENCH_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def syn_dir(tmp_path_factory):
    data = datasets.synthetic(num_seqs=6, layers=2, heads=2, n=24, d=8, seed=0)
    return data.save(tmp_path_factory.mktemp("d") / "syn")


def folders_printed(out: str) -> list[str]:
    return re.findall(r"^run folder: (.+)$", out, flags=re.M)


def test_sweep_makes_a_new_run_folder_printed_at_start_and_end(tmp_path, syn_dir, capsys):
    assert main(["sweep", "--data", str(syn_dir), "--methods", "window"]) == 0
    printed = folders_printed(capsys.readouterr().out)
    assert len(printed) == 2 and printed[0] == printed[1]
    folder = Path(printed[0])
    assert folder.is_absolute() and folder.parent == tmp_path / "runs"
    assert re.fullmatch(r"\d{8}-\d{6}-sweep", folder.name)
    run = json.loads((folder / "run.json").read_text())
    assert run["command"][:2] == ["sparsebench", "sweep"]
    assert {"started", "sparsebench", "git_sha"} <= set(run)
    recs = read_records(folder / "synthetic-bidir" / "records.jsonl")
    assert len(recs) == 4 * 2  # the quick grid of window, two layers


def test_two_runs_in_one_second_get_two_folders(tmp_path):
    a = open_run_folder("sweep", ["sweep"])
    b = open_run_folder("sweep", ["sweep"])
    assert a != b and a.parent == b.parent == tmp_path / "runs"


def test_resume_continues_a_run_folder_and_refuses_other_folders(tmp_path, syn_dir, capsys):
    argv = ["sweep", "--data", str(syn_dir), "--methods", "window", "--layers", "0"]
    assert main(argv) == 0
    folder = folders_printed(capsys.readouterr().out)[0]
    assert main([*argv[:-1], "0,1", "--resume", folder]) == 0
    out = capsys.readouterr().out
    assert "4 records written, 4 already done" in out and folders_printed(out)[0] == folder
    assert len(json.loads((Path(folder) / "run.json").read_text())["resumed"]) == 1
    (tmp_path / "plain").mkdir()
    assert main([*argv, "--resume", str(tmp_path / "plain")]) == 2
    assert "not a run folder" in capsys.readouterr().err


def test_results_chooses_the_folder_and_continues_it(tmp_path, syn_dir, capsys):
    argv = ["sweep", "--data", str(syn_dir), "--methods", "window", "--results", "mine"]
    assert main(argv) == 0
    assert main(argv) == 0
    assert "0 records written, 8 already done" in capsys.readouterr().out
    assert (tmp_path / "mine" / "run.json").exists() and not (tmp_path / "runs").exists()


def test_keys_carry_the_dataset_hash_and_version(tmp_path):
    a = datasets.synthetic(num_seqs=4, layers=1, heads=2, n=16, d=8, seed=0)
    b = datasets.synthetic(num_seqs=4, layers=1, heads=2, n=16, d=8, seed=1)
    out = tmp_path / "r.jsonl"
    first = sweep(a, out, dataset="same", methods="window", **QUIET)
    # Another build under the same name: nothing of the first build counts as done.
    second = sweep(b, out, dataset="same", methods="window", **QUIET)
    assert first["done"] == second["done"] == 4 and second["skipped"] == 0
    recs = read_records(out)
    assert {r["dataset_hash"] for r in recs} == {a.content_hash, b.content_hash}
    r = recs[0]
    assert r["key"] == record_key(
        "same",
        r["method_id"],
        0,
        "eval",
        data_hash=a.content_hash,
        version=r["sparsebench"],
    )
    assert r["key"].endswith(f"|data={a.content_hash}|v={r['sparsebench']}")


def test_methods_means_globs_and_specs_everywhere():
    assert [n for _, n, _ in select_methods("window;dsa")] == ["window", "dsa"]
    assert [n for _, n, _ in select_methods("sparsefinder_k*")] == ["sparsefinder_kmeans"]
    (spec,) = select_methods("window:w=5")
    assert spec == ("window:w=5", "window", {"w": 5})
    with pytest.raises(ValueError, match="did you mean 'window'"):
        select_methods("windw")


def test_a_spec_fixes_its_parameters_in_the_sweep(tmp_path):
    data = datasets.synthetic(num_seqs=4, layers=1, heads=2, n=16, d=8, seed=0)
    sweep(data, tmp_path / "r.jsonl", methods="window:global_tokens=0", **QUIET)
    recs = read_records(tmp_path / "r.jsonl")
    assert recs and all(r["params"]["global_tokens"] == 0 for r in recs)


def sweep_into(syn_dir, results: str, *extra: str) -> None:
    argv = ["sweep", "--data", str(syn_dir), "--methods", "window", "--results", results]
    assert main([*argv, *extra]) == 0


def test_publish_merges_refuses_and_replaces(tmp_path, syn_dir, capsys):
    sweep_into(syn_dir, "run1", "--layers", "0")
    sweep_into(syn_dir, "run2")
    assert main(["publish", "run1", "--results", "pub"]) == 0
    recs = tmp_path / "pub" / "synthetic-bidir" / "records.jsonl"
    assert len(read_records(recs)) == 4
    assert (tmp_path / "pub" / "synthetic-bidir" / "leaderboard.md").exists()
    # The same build: merged by key (layer 0 is already there).
    assert main(["publish", "run2", "--results", "pub"]) == 0
    assert "4 records added, 4 kept" in capsys.readouterr().out
    assert len(read_records(recs)) == 8

    other = datasets.synthetic(num_seqs=6, layers=2, heads=2, n=24, d=8, seed=5)
    other_dir = other.save(tmp_path / "other")
    other_hash = datasets.QKData.load(other_dir).content_hash
    sweep_into(other_dir, "run3")
    capsys.readouterr()
    before = recs.read_bytes()
    assert main(["publish", "run3", "--results", "pub"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--replace" in err and other_hash in err and len(err.splitlines()) == 1
    assert recs.read_bytes() == before
    assert main(["publish", "run3", "--results", "pub", "--replace"]) == 0
    assert {r["dataset_hash"] for r in read_records(recs)} == {other_hash}


def test_publish_keeps_packed_records_packed(tmp_path, syn_dir):
    sweep_into(syn_dir, "run1")
    sweep_into(syn_dir, "run2")
    assert main(["publish", "run1", "--results", "pub"]) == 0
    import gzip

    folder = tmp_path / "pub" / "synthetic-bidir"
    plain = folder / "records.jsonl"
    (folder / "records.jsonl.gz").write_bytes(gzip.compress(plain.read_bytes()))
    plain.unlink()
    assert main(["publish", "run2", "--results", "pub"]) == 0
    assert not plain.exists() and len(read_records(plain)) == 8


def rec(layer: int, data_hash: str | None, date: str, recall: float) -> dict:
    r = {
        "key": f"toy|window|layer={layer}|eval|data={data_hash}|v=0.1.0",
        "dataset": "toy",
        "method": "window",
        "method_id": "window",
        "layer": layer,
        "sparsity": 0.5,
        "recall": recall,
        "gold_sparsity": 0.8,
        "date": date,
        "git_sha": "abc",
        "sparsebench": "0.1.0",
        "params": {},
    }
    if data_hash:
        r["dataset_hash"] = data_hash
    return r


def test_leaderboard_keeps_the_newest_identity_and_says_so(tmp_path):
    path = tmp_path / "res" / "toy" / "records.jsonl"
    for layer in (0, 1):
        append_record(path, rec(layer, None, "2026-01-01T00:00:00+00:00", 0.5))
        append_record(path, rec(layer, "aaaa", "2026-02-01T00:00:00+00:00", 0.9))
    append_record(path, rec(0, "bbbb", "2026-01-15T00:00:00+00:00", 0.1))
    warnings: list[str] = []
    write_leaderboard(tmp_path / "res", log=warnings.append)
    md = (tmp_path / "res" / "toy" / "leaderboard.md").read_text()
    assert "dataset build aaaa, sparsebench 0.1.0" in md
    assert "Left out 3 records" in md
    assert len(warnings) == 1 and "left out 3 records" in warnings[0]
    import pandas as pd

    configs = pd.read_csv(tmp_path / "res" / "toy" / "configs.csv")
    assert configs["recall"].tolist() == [0.9]  # never averaged with the other builds
    assert "dataset build aaaa" in (tmp_path / "res" / "index.html").read_text()


def test_records_without_a_hash_are_shown_as_an_unknown_build(tmp_path):
    path = tmp_path / "res" / "toy" / "records.jsonl"
    for layer in (0, 1):
        append_record(path, rec(layer, None, "2026-01-01T00:00:00+00:00", 0.5))
    write_leaderboard(tmp_path / "res", log=lambda m: None)
    md = (tmp_path / "res" / "toy" / "leaderboard.md").read_text()
    assert "unknown dataset build" in md and "Left out" not in md


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_run_computes_everything_in_its_own_folder_and_leaves_results_alone(
    tmp_path, syn_dir, capsys
):
    # A published results/ in the working directory, with a record under the very key a
    # run would write: the run must not read it as done, nor touch the folder.
    published = tmp_path / "results" / "synthetic-bidir" / "records.jsonl"
    data = datasets.QKData.load(syn_dir)
    sweep(data, published, methods="window", layers=[0], **QUIET)
    before = snapshot(tmp_path / "results")
    argv = ["run", "--data", str(syn_dir), "--methods", "window", "--accuracy-windows", "0"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert snapshot(tmp_path / "results") == before
    assert "8 records written, 0 already done" in out
    folder = Path(folders_printed(out)[-1])
    assert folder.parent == tmp_path / "runs" and folder.name.endswith("-run")
    assert (folder / "synthetic-bidir" / "leaderboard.md").exists()
    assert (folder / "index.html").exists()
    assert "sparsebench publish" in out and "| Method |" not in out  # no wide markdown table
    summary = out[out.index("synthetic-bidir:\n") :]
    assert summary.splitlines()[1].split()[:4] == ["method", "sparsity", "@", "recall"]
    assert "window" in summary and f"leaderboard: {folder / 'index.html'}" in summary
    assert max(len(line) for line in summary.splitlines() if "/" not in line) <= 100


def test_speed_writes_its_run_folder_and_fails_when_every_case_fails(tmp_path, monkeypatch, capsys):
    import sparsebench.bench as bench

    monkeypatch.setattr(bench, "measure_case", lambda case: {"error": "boom"})
    argv = ["speed", "--lengths", "64", "--methods", "window", "--repeats", "1"]
    assert main(argv) == 1
    out = capsys.readouterr()
    folder = Path(folders_printed(out.out)[0])
    assert "every case failed" in out.err
    assert read_records(folder / "speed" / "records.jsonl")[0]["error"] == "boom"


def test_debug_shows_the_traceback(syn_dir, capsys):
    assert main(["--debug", "sweep", "--data", str(syn_dir), "--split", "evl"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("sparsebench: error:")
    assert main(["sweep", "--data", str(syn_dir), "--split", "evl", "--debug"]) == 2
    assert "Traceback" in capsys.readouterr().err


def leaderboard_csv(folder: Path, dataset: str, rows: list[dict]) -> None:
    import pandas as pd

    (folder / dataset).mkdir(parents=True)
    pd.DataFrame(rows).to_csv(folder / dataset / "leaderboard.csv", index=False)


def test_run_summary_is_narrow_and_shows_intervals_where_records_have_them(tmp_path):
    from sparsebench.bench.run_commands import run_summary

    nan = float("nan")
    long_name = "a plugin method with a very long display name indeed, longer than a column"
    leaderboard_csv(
        tmp_path,
        "toy",
        [
            {
                "name": "Sparsefinder k-means",
                "reference": False,
                "sparsity@0.95": 0.697,
                "sparsity@0.95_lo": 0.685,
                "sparsity@0.95_hi": 0.709,
                "delta_accuracy@0.95": -0.0123,
                "delta_accuracy@0.95_lo": -0.02,
                "delta_accuracy@0.95_hi": -0.004,
                "speed_x_dense": 0.153,
            },
            {
                "name": long_name,
                "reference": False,
                "sparsity@0.95": 0.5,
                "best_recall": 0.96,
                "sparsity@0.95_lo": nan,
                "sparsity@0.95_hi": nan,
                "delta_accuracy@0.95": nan,
                "speed_x_dense": nan,
            },
            {"name": "full", "reference": True, "sparsity@0.95": 0.0, "speed_x_dense": 1.0},
        ],
    )
    text = run_summary(tmp_path)
    lines = text.splitlines()
    assert lines[0] == "toy:" and max(len(line) for line in lines) <= 100
    row = next(line for line in lines if line.startswith("Sparsefinder k-means"))
    assert row.split()[-8:] == ["0.697", "±", "0.012", "—", "-0.0123", "±", "0.0080", "0.15"]
    row = next(line for line in lines if line.startswith("a plugin"))
    assert row.split()[-4:] == ["0.500", "0.960", "—", "—"]  # no interval, accuracy, speed
    assert any(line.startswith("full (reference)") for line in lines)


def test_accuracy_frontier_scores_only_the_frontier_configs(tmp_path, syn_dir, monkeypatch, capsys):
    import sparsebench.bench.runs as runs
    from sparsebench.bench.report import load_records
    from sparsebench.bench.runs.accuracy import frontier_configs, reported_configs

    # Sweep records of the model's dataset in a run folder, as `sparsebench sweep` leaves them.
    data = datasets.QKData.load(syn_dir)
    records = tmp_path / "sweep1" / "shakespeare-lm" / "records.jsonl"
    sweep(data, records, dataset="shakespeare-lm", methods="window;full", **QUIET)
    seen = {}

    def fake_accuracy_sweep(model, out, **kw):
        seen.update(kw, model=model)
        return {"done": len(kw["only"]), "skipped": 0, "failed": 0}

    monkeypatch.setattr(runs, "accuracy_sweep", fake_accuracy_sweep)
    argv = ["accuracy", "--model", "shakespeare-lm", "--methods", "window;full"]
    assert main([*argv, "--configs", "frontier", "--from", "sweep1", "--windows", "0"]) == 0
    expected = frontier_configs(load_records(records))
    assert sorted(seen["only"]) == sorted({i for ids in expected.values() for i in ids})
    assert seen["model"] == "shakespeare-lm" and seen["max_windows"] is None
    assert seen["device"] == "cpu"
    assert f"{len(seen['only'])} records written" in capsys.readouterr().out
    # --configs reported: only the configuration each method's leaderboard row reports.
    assert main([*argv, "--configs", "reported", "--from", "sweep1"]) == 0
    reported = reported_configs(load_records(records))
    assert seen["only"] == list(dict.fromkeys(reported.values()))
    assert len(seen["only"]) == 2 and set(reported) == {"window", "full"}
