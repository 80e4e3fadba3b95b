"""Interrupted dataset writes: kill -9 mid-write never leaves a half dataset, and the
temporaries a killed writer leaves are cleaned up (only ours: our naming, a dead pid) on the
next write or load.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sparsebench import datasets
from sparsebench.datasets import QKData

TINY = {"num_seqs": 4, "layers": 1, "heads": 2, "n": 8, "d": 4}


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEBENCH_HOME", str(tmp_path / "home"))


def tiny(seed: int = 0) -> QKData:
    return datasets.synthetic(seed=seed, **TINY)


def saved(tmp: Path, name: str = "ds") -> Path:
    return tiny().save(tmp / name)


# --- temporaries of killed writers --------------------------------------------------------------
def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _host() -> str:
    import re
    import socket

    return re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:32] or "host"


def test_stale_temporaries_of_dead_writers_are_cleaned_only(tmp_path):
    path = saved(tmp_path)
    dead, alive = _dead_pid(), os.getpid()
    stale = tmp_path / f".ds.tmp-{_host()}-{dead}-abc123"
    stale_old = tmp_path / f".ds.old-{_host()}-{dead}"
    live = tmp_path / f".ds.tmp-{_host()}-{alive}-xyz"
    other_host = tmp_path / f".ds.tmp-elsewhere-{dead}-abc"
    not_ours = tmp_path / ".ds.tmp-notes"
    other_target = tmp_path / f".other.tmp-{_host()}-{dead}-abc"
    for d in (stale, stale_old, live, other_host, not_ours, other_target):
        d.mkdir()
        (d / "x").write_text("x")
    tiny(1).save(path)
    left = {p.name for p in tmp_path.iterdir()}
    assert stale.name not in left and stale_old.name not in left
    assert {live.name, other_host.name, not_ours.name, other_target.name, "ds"} == left
    assert torch.equal(QKData.load(path).q, tiny(1).q)


def test_an_interrupted_swap_restores_the_previous_dataset(tmp_path):
    path = saved(tmp_path)
    old = tmp_path / f".ds.old-{_host()}-{_dead_pid()}"
    os.replace(path, old)  # killed between moving the old dataset aside and moving the new in
    from sparsebench.datasets.store import clean_stale

    assert clean_stale(path) == [old]
    assert torch.equal(QKData.load(path).q, tiny().q)


# --- kill -9 during a write -------------------------------------------------------------------
CHILD = """
import os, signal, sys, time
import safetensors.torch as st
from sparsebench import datasets

mode, target = sys.argv[1], sys.argv[2]
tiny = dict(num_seqs=4, layers=1, heads=2, n=8, d=4)
if mode == "slow-writer":
    real = st.save_file
    def slow(*a, **k):
        real(*a, **k)
        print("wrote a file", flush=True)
        time.sleep(60)
    st.save_file = slow
elif mode == "kill-at-swap":
    real_replace = os.replace
    def replace(src, dst):
        real_replace(src, dst)
        if ".old-" in str(dst):
            os.kill(os.getpid(), signal.SIGKILL)
    os.replace = replace
elif mode == "loop":
    print("started", flush=True)
    seed = 1
    while True:
        datasets.synthetic(seed=seed % 3, **tiny).save(target)
        seed += 1
datasets.synthetic(seed=1, **tiny).save(target)
"""


def _child(mode: str, target: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, mode, str(target)], stdout=subprocess.PIPE, text=True
    )


def _complete_or_absent(path: Path) -> None:
    if os.path.lexists(path):
        q = QKData.load(path).q  # verifies the card and every checksum
        assert any(torch.equal(q, tiny(s).q) for s in range(3))


def test_kill_9_during_a_dataset_write(tmp_path):
    path = saved(tmp_path)
    # 1. killed while the temporary is being written: the old dataset is untouched
    child = _child("slow-writer", path)
    assert child.stdout.readline().strip() == "wrote a file"
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert any(p.name.startswith(".ds.tmp-") for p in tmp_path.iterdir())
    assert torch.equal(QKData.load(path).q, tiny().q)
    # 2. killed between moving the old dataset aside and the new one in: the target is absent
    child = _child("kill-at-swap", path)
    assert child.wait() == -signal.SIGKILL
    assert not path.exists()
    # 3. killed at random moments of repeated writes: never a half dataset
    for delay in (0.3, 0.9):
        child = _child("loop", path)
        assert child.stdout.readline().strip() == "started"
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        child.wait()
        _complete_or_absent(path)
    # the next write succeeds and cleans every temporary the killed writers left
    tiny(2).save(path)
    assert {p.name for p in tmp_path.iterdir()} - {"home"} == {"ds"}
    assert torch.equal(QKData.load(path).q, tiny(2).q)


def test_loading_a_named_dataset_restores_what_a_killed_build_moved_aside(tmp_path):
    cached = datasets.dataset_dir("synthetic-bidir")
    datasets.build("synthetic-bidir", log=lambda m: None)
    old = cached.with_name(f".synthetic-bidir.old-{_host()}-{_dead_pid()}")
    tmp = cached.with_name(f".synthetic-bidir.tmp-{_host()}-{_dead_pid()}-abc")
    os.replace(cached, old)
    tmp.mkdir()
    logs: list[str] = []
    data = datasets.load("synthetic-bidir", log=logs.append)
    assert torch.equal(data.q, datasets.synthetic(seed=0).q)
    assert not any("building" in m for m in logs)  # restored, not rebuilt
    assert not old.exists() and not tmp.exists()
