"""Sweeps on Ray: the same records as a local sweep, and nothing lost when a worker dies."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from sparsebench import datasets
from sparsebench.bench.runs import read_records, sweep

ray = pytest.importorskip("ray")

METRICS = ("recall", "sparsity", "exact", "precision", "mass_recall", "block_sparsity")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_records_equal_local_records(tmp_path, local_ray):
    data = datasets.synthetic(num_seqs=6, layers=2, heads=2, n=24, d=8, seed=3)
    quiet = {"progress": False, "log": lambda m: None}
    for pattern in ("window", "sparsefinder_quantize"):
        sweep(data, tmp_path / "local.jsonl", methods=pattern, **quiet)
        res = sweep(data, tmp_path / "ray.jsonl", methods=pattern, executor="ray", **quiet)
        assert res["failed"] == 0
    local = {r["key"]: r for r in read_records(tmp_path / "local.jsonl")}
    remote = {r["key"]: r for r in read_records(tmp_path / "ray.jsonl")}
    assert set(local) == set(remote) and len(local) == 16
    for key, r in local.items():
        for m in METRICS:
            assert remote[key][m] == r[m], (key, m)
        assert remote[key]["params"] == r["params"]


KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from dataclasses import dataclass
    from typing import ClassVar
    from sparsebench import datasets
    from sparsebench.bench.runs import sweep
    from sparsebench.methods import Band, Graph, Method, Tags, predict_time, register

    @register("killer_band")
    @dataclass(kw_only=True)
    class KillerBand(Method):
        '''A band whose first prediction kills the worker process running it.'''
        w: int = predict_time(1)
        flag: str = ""
        grid: ClassVar = {"quick": {"w": [1, 2, 3, 4, 5, 6]}}
        tags: ClassVar[Tags] = Tags()

        def _predict(self, q, k, *, lengths, causal):
            if self.flag and not os.path.exists(self.flag):
                open(self.flag, "w").close()
                os.kill(os.getpid(), signal.SIGKILL)
            return Graph((*q.shape[:3], k.shape[2]), [Band(-self.w, self.w)])

    KillerBand.grid = {"quick": {"w": [1, 2, 3, 4, 5, 6], "flag": [sys.argv[2]]}}
    data = datasets.synthetic(num_seqs=4, layers=2, heads=2, n=16, d=8, seed=0)
    res = sweep(data, sys.argv[1], methods="killer_band", executor="ray", num_cpus=2,
                progress=False, log=lambda m: None)
    print(res)
    """
)


def test_killed_worker_loses_nothing(tmp_path):
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    out, flag = tmp_path / "r.jsonl", tmp_path / "killed-once"
    proc = subprocess.run(
        [sys.executable, str(script), str(out), str(flag)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert flag.exists(), "a worker was killed"
    keys = [r["key"] for r in read_records(out)]
    assert len(keys) == 12 and len(set(keys)) == 12  # 6 configs x 2 layers, once each
    assert "'failed': 0" in proc.stdout
