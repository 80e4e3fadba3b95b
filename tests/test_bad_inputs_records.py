"""Bad-input corpus, records part: corrupt records files, duplicated keys, locked files.

Each case asserts the exception or warning type, a one-line message that names the file (and
the line where there is one), and for writers that nothing was written or deleted.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from sparsebench.bench.runs import (
    RecordFile,
    RecordsError,
    RecordsLockedError,
    RecordsWarning,
    append_record,
    read_records,
    records_writer,
)


def rec(key: str | None = "d|m|layer=0|eval", **extra) -> dict:
    out = {"dataset": "d", "method": "m", "recall": 0.5, "sparsity": 0.9, **extra}
    if key is not None:
        out["key"] = key
    return out


def line(r: dict) -> bytes:
    return (json.dumps(r) + "\n").encode()


GOOD_A, GOOD_B = line(rec("a")), line(rec("b"))

# (id, content of records.jsonl, the line number the warning names, a word of the reason,
#  the keys that are read)
SKIPPED = [
    ("corrupt-json", GOOD_A + b'{"key": "x", oops}\n' + GOOD_B, 2, "not JSON", ["a", "b"]),
    (
        "several-corrupt-lines-count-and-first",
        GOOD_A + b"garbage\n" + GOOD_B + b"}{\n[\n",
        2,
        "3 unreadable",
        ["a", "b"],
    ),
    ("invalid-utf8", GOOD_A + b'{"key": "\xff\xfe"}\n' + GOOD_B, 2, "not UTF-8", ["a", "b"]),
    ("json-array-not-object", GOOD_A + b"[1, 2]\n" + GOOD_B, 2, "not an object", ["a", "b"]),
    ("json-number-not-object", b"42\n" + GOOD_A, 1, "not an object", ["a"]),
    ("json-null-not-object", GOOD_A + GOOD_B + b"null\n", 3, "not an object", ["a", "b"]),
    ("record-without-key", GOOD_A + line(rec(None)) + GOOD_B, 2, "no 'key'", ["a", "b"]),
    ("key-not-a-string", GOOD_A + line(rec(5)) + GOOD_B, 2, "'key' is not", ["a", "b"]),
    ("empty-key", line(rec("")) + GOOD_A, 1, "'key' is not", ["a"]),
    (
        "non-numeric-metric",
        GOOD_A + line(rec("c", recall="high")) + GOOD_B,
        2,
        "recall is not a number",
        ["a", "b"],
    ),
    (
        "boolean-metric",
        GOOD_A + line(rec("c", sparsity=True)) + GOOD_B,
        2,
        "sparsity is not a number",
        ["a", "b"],
    ),
    (
        "metric-as-a-list",
        GOOD_A + GOOD_B + line(rec("c", exact=[0.5])),
        3,
        "exact is not a number",
        ["a", "b"],
    ),
]


def one_warning(caught: list[warnings.WarningMessage]) -> str:
    ours = [w for w in caught if issubclass(w.category, RecordsWarning)]
    assert len(ours) == 1, [str(w.message) for w in caught]
    msg = str(ours[0].message)
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize(
    "content,lineno,reason,keys", [c[1:] for c in SKIPPED], ids=[c[0] for c in SKIPPED]
)
def test_unreadable_lines_are_skipped_with_one_warning(tmp_path, content, lineno, reason, keys):
    path = tmp_path / "records.jsonl"
    path.write_bytes(content)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = read_records(path)
    assert [r["key"] for r in got] == keys
    msg = one_warning(caught)
    assert str(path) in msg and f"line {lineno}" in msg and reason in msg


DUPLICATES = [
    ("duplicate-key-same-file", [rec("a", recall=0.1), rec("b"), rec("a", recall=0.9)], 3, 0.1),
    (
        "duplicate-key-three-times",
        [rec("a", recall=0.2), rec("a", recall=0.4), rec("a", recall=0.6)],
        2,
        0.2,
    ),
]


@pytest.mark.parametrize(
    "records,lineno,kept", [c[1:] for c in DUPLICATES], ids=[c[0] for c in DUPLICATES]
)
def test_duplicated_keys_keep_the_first_and_warn(tmp_path, records, lineno, kept):
    path = tmp_path / "records.jsonl"
    for r in records:
        append_record(path, r)
    with pytest.warns(RecordsWarning) as caught:
        got = read_records(path)
    assert len({r["key"] for r in got}) == len(got)
    assert next(r["recall"] for r in got if r["key"] == "a") == kept  # never averaged
    msg = one_warning(list(caught))
    assert str(path) in msg and f"line {lineno}" in msg and "'a'" in msg


def test_duplicate_key_across_packed_and_plain_files(tmp_path):
    path = tmp_path / "records.jsonl"
    packed = tmp_path / "records.jsonl.gz"
    packed.write_bytes(gzip.compress(line(rec("a", recall=0.1)) + line(rec("b"))))
    append_record(path, rec("a", recall=0.9))
    with pytest.warns(RecordsWarning) as caught:
        got = read_records(path)
    assert [(r["key"], r["recall"]) for r in got] == [("a", 0.1), ("b", 0.5)]
    msg = one_warning(list(caught))
    assert str(path) in msg and "line 1" in msg and f"{packed} line 1" in msg


ERRORS = [
    ("gz-not-gzip", lambda p: p.with_name("records.jsonl.gz").write_bytes(b"not gzip\n"), ".gz"),
    (
        "gz-truncated",
        lambda p: p.with_name("records.jsonl.gz").write_bytes(gzip.compress(GOOD_A * 50)[:30]),
        ".gz",
    ),
    ("records-path-is-a-folder", lambda p: p.mkdir(), ""),
]


@pytest.mark.parametrize("make,suffix", [c[1:] for c in ERRORS], ids=[c[0] for c in ERRORS])
def test_unreadable_files_raise_one_line_records_error(tmp_path, make, suffix):
    path = tmp_path / "records.jsonl"
    make(path)
    with pytest.raises(RecordsError) as e:
        read_records(path)
    msg = str(e.value)
    assert "\n" not in msg and f"{path}{suffix}" in msg
    assert isinstance(e.value, ValueError)  # the CLI's user errors: exit 2, one line


def test_a_writer_on_a_corrupt_gz_fails_before_writing(tmp_path):
    path = tmp_path / "records.jsonl"
    path.with_name("records.jsonl.gz").write_bytes(b"plain text")
    with pytest.raises(RecordsError, match="not a gzip file"):
        with records_writer(path) as records:
            records.add(rec("a"))
    assert not path.exists()


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_second_writer_is_refused_and_writes_nothing(tmp_path):
    path = tmp_path / "run" / "records.jsonl"
    with records_writer(path) as first:
        first.add(rec("a"))
        before = snapshot(tmp_path)
        with pytest.raises(RecordsLockedError) as e:
            with records_writer(path) as second:
                second.add(rec("b"))
        assert snapshot(tmp_path) == before
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and "another run is writing it" in msg
    assert isinstance(e.value, RuntimeError)
    assert [r["key"] for r in read_records(path)] == ["a"]


def test_records_folder_that_is_a_file_is_refused(tmp_path):
    blocker = tmp_path / "results"
    blocker.write_text("my notes\n")
    path = blocker / "records.jsonl"
    with pytest.raises(RecordsError) as e:
        with records_writer(path):
            pass
    assert "\n" not in str(e.value) and str(path) in str(e.value)
    assert blocker.read_text() == "my notes\n"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores permissions")
def test_read_only_folder_is_refused(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(RecordsError) as e:
            with records_writer(folder / "records.jsonl"):
                pass
    finally:
        folder.chmod(0o755)
    assert "\n" not in str(e.value) and str(folder / "records.jsonl") in str(e.value)
    assert list(folder.iterdir()) == []


def test_adding_a_record_without_key_is_refused(tmp_path):
    path = tmp_path / "records.jsonl"
    with records_writer(path) as records:
        with pytest.raises(ValueError, match="'key'") as e:
            records.add({"recall": 0.5})
    assert str(path) in str(e.value) and "\n" not in str(e.value)
    assert not path.exists() or path.read_bytes() == b""


def test_record_file_keeps_the_first_of_duplicates_on_resume(tmp_path):
    path = tmp_path / "records.jsonl"
    append_record(path, rec("a"))
    append_record(path, rec("a"))
    with pytest.warns(RecordsWarning, match="line 2"):
        records = RecordFile(path)
    assert not records.add(rec("a"))
    assert path.read_bytes().count(b"\n") == 2  # nothing added, nothing deleted


def cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "sparsebench.bench.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)


def cli_env(tmp_path: Path) -> dict:
    return {**os.environ, "SPARSEBENCH_HOME": str(tmp_path / "home")}


def test_cli_leaderboard_on_a_gz_that_is_not_gzip_exits_2(tmp_path):
    results = tmp_path / "results"
    (results / "toy").mkdir(parents=True)
    (results / "toy" / "records.jsonl.gz").write_bytes(b"this is not gzip")
    before = snapshot(tmp_path)
    p = cli("leaderboard", "--results", str(results), env=cli_env(tmp_path))
    assert p.returncode == 2, p.stderr
    err = p.stderr.strip()
    assert err.startswith("sparsebench: error:") and "\n" not in err and "records.jsonl.gz" in err
    assert "Traceback" not in p.stderr
    assert snapshot(tmp_path) == before


def test_cli_sweep_into_a_locked_records_file_exits_2_and_writes_nothing(tmp_path):
    from sparsebench import datasets
    from sparsebench.bench.runs import open_run_folder

    data = datasets.synthetic(num_seqs=4, layers=1, heads=2, n=16, d=8, seed=0)
    tiny = data.save(tmp_path / "tiny")
    results = open_run_folder("sweep", results=tmp_path / "results")  # another run's folder
    path = results / data.meta["name"] / "records.jsonl"
    args = ["sweep", "--data", str(tiny), "--results", str(results), "--methods", "window"]
    with records_writer(path) as records:
        records.add(rec("mine"))
        before = snapshot(tmp_path)
        p = cli(*args, env=cli_env(tmp_path))
        after = snapshot(tmp_path)
    # run.json logs each invocation of the folder; nothing else may change.
    assert {k: v for k, v in after.items() if not k.endswith("run.json")} == {
        k: v for k, v in before.items() if not k.endswith("run.json")
    }
    assert p.returncode == 2, p.stderr
    assert p.stderr.count("\n") == 1 and str(path) in p.stderr, p.stderr
    assert p.stderr.startswith("sparsebench: error:") and "another run is writing it" in p.stderr
