"""Records files: one writer at a time, honest readers, and sweeps that are killed or overlap."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pytest

from sparsebench import datasets
from sparsebench.bench.runs import (
    RecordFile,
    RecordsLockedError,
    append_record,
    lock_path,
    read_records,
    records_writer,
)

HOLD = textwrap.dedent(
    """
    import sys, time
    from sparsebench.bench.runs import records_writer

    with records_writer(sys.argv[1]) as records:
        records.add({"key": "held", "recall": 1.0})
        print("locked", flush=True)
        time.sleep(float(sys.argv[2]))
    """
)


def hold_lock(path: Path, seconds: float) -> subprocess.Popen:
    """A process that writes one record under the lock of ``path`` and keeps it ``seconds``."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_writer_takes_a_lock_file_beside_the_records(tmp_path):
    path = tmp_path / "run" / "records.jsonl"
    with records_writer(path) as records:
        assert isinstance(records, RecordFile) and lock_path(path).exists()
        assert lock_path(path) == tmp_path / "run" / "records.jsonl.lock"
        records.add({"key": "a"})
    with records_writer(path) as records:  # released at the end of the block
        assert "a" in records


def test_killed_writer_leaves_no_lock_that_blocks_the_next(tmp_path):
    path = tmp_path / "records.jsonl"
    proc = hold_lock(path, 60)
    with pytest.raises(RecordsLockedError):
        with records_writer(path):
            pass
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert lock_path(path).exists()  # the file stays; the OS lock went with the process
    with records_writer(path) as records:
        assert "held" in records


def test_a_writer_that_waits_sees_what_the_first_wrote(tmp_path):
    path = tmp_path / "records.jsonl"
    proc = hold_lock(path, 1.0)
    with records_writer(path, timeout=30) as records:
        assert "held" in records  # keys are read inside the lock
        assert not records.add({"key": "held", "recall": 0.0})
        assert records.add({"key": "mine"})
    proc.wait()
    assert [r["key"] for r in read_records(path)] == ["held", "mine"]


def test_torn_last_line_is_skipped_silently_and_cut_by_the_next_writer(tmp_path):
    path = tmp_path / "records.jsonl"
    append_record(path, {"key": "a"})
    with open(path, "a") as f:
        f.write('{"key": "b", "rec')
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [r["key"] for r in read_records(path)] == ["a"]
        with records_writer(path) as records:
            records.add({"key": "b"})
    assert path.read_text().splitlines() == ['{"key": "a"}', '{"key": "b"}']


def test_a_log_of_measurements_keeps_every_line(tmp_path):
    path = tmp_path / "speed.jsonl"
    with records_writer(path, keyed=False) as records:
        for t in (0.1, 0.2, 0.1):
            records.add({"spec": "sdpa", "n": 64, "time_min_s": t})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(read_records(path)) == 3  # no key in the file: nothing deduplicated
        assert len(read_records(path, keyed=False)) == 3


# -- through the command line ---------------------------------------------------------------

METHODS = "*"
VOLATILE = ("date",)


def cli(*args: str, home: Path, **kw) -> subprocess.Popen:
    env = {**os.environ, "SPARSEBENCH_HOME": str(home), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "sparsebench.bench.cli", *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def sweep_args(data: Path, results: Path, methods: str = METHODS) -> list[str]:
    return ["sweep", "--data", str(data), "--results", str(results), "--methods", methods]


def records_in(results: Path) -> list[dict]:
    files = sorted(results.rglob("records.jsonl"))
    assert len(files) <= 1, files
    return read_records(files[0]) if files else []


def stable(rec: dict) -> dict:
    """A record without what changes between identical runs: timings and dates."""
    return {
        k: v for k, v in rec.items() if k not in VOLATILE and not k.endswith("_s") and k != "key"
    } | {"key": rec["key"]}


@pytest.fixture
def tiny(tmp_path) -> Path:
    data = datasets.synthetic(num_seqs=6, layers=2, heads=2, n=32, d=8, seed=0)
    return data.save(tmp_path / "tiny")


def finish(proc: subprocess.Popen) -> tuple[int, str]:
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


def test_two_concurrent_sweeps_on_one_folder(tmp_path, tiny):
    results = tmp_path / "results"
    procs = [cli(*sweep_args(tiny, results), home=tmp_path / "home") for _ in range(2)]
    outcomes = [finish(p) for p in procs]
    codes = sorted(rc for rc, _ in outcomes)
    assert codes in ([0, 0], [0, 2]), outcomes
    for rc, err in outcomes:
        if rc == 2:  # the second writer exits at once with one line
            assert err.count("\n") == 1 and "another run is writing it" in err, err
    recs = records_in(results)
    keys = [r["key"] for r in recs]
    assert len(keys) == len(set(keys)), "duplicate key"
    # Every record present: the same set as one sweep on its own.
    rc, err = finish(cli(*sweep_args(tiny, tmp_path / "alone"), home=tmp_path / "home"))
    assert rc == 0, err
    assert sorted(keys) == sorted(r["key"] for r in records_in(tmp_path / "alone"))
    assert len(keys) > 0


def test_kill_9_during_a_cli_sweep_then_resume_equals_an_uninterrupted_run(tmp_path, tiny):
    results = tmp_path / "killed"
    proc = cli(*sweep_args(tiny, results, "*"), home=tmp_path / "home")
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        files = list(results.rglob("records.jsonl"))
        if files and files[0].read_bytes().count(b"\n") >= 2:
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = records_in(results)
    # Simulate the worst case too: a record torn by the kill.
    with open(next(results.rglob("records.jsonl")), "a") as f:
        f.write('{"key": "torn')
    rc, err = finish(cli(*sweep_args(tiny, results, "*"), home=tmp_path / "home"))
    assert rc in (0, 1), err  # 1: a configuration failed in both runs alike
    rc_ref, err_ref = finish(cli(*sweep_args(tiny, tmp_path / "ref", "*"), home=tmp_path / "home"))
    assert rc_ref == rc, err_ref
    resumed = {r["key"]: stable(r) for r in records_in(results)}
    reference = {r["key"]: stable(r) for r in records_in(tmp_path / "ref")}
    assert 2 <= len(partial) < len(reference), "killed mid-sweep"
    assert len(resumed) == len(records_in(results))  # no duplicate key
    assert resumed == reference
    assert not next(results.rglob("records.jsonl")).read_text().count('"torn')
    json.dumps(resumed)  # plain JSON all through
