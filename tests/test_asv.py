"""The asv suites stay importable and well-formed (``asv check``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ASV = Path(sys.executable).with_name("asv")


@pytest.mark.skipif(not ASV.exists() and shutil.which("asv") is None, reason="asv not installed")
def test_asv_check(tmp_path):
    asv = str(ASV) if ASV.exists() else shutil.which("asv")
    env = {**os.environ, "HOME": str(tmp_path)}
    out = subprocess.run(
        [asv, "check", "-E", f"existing:{sys.executable}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "No problems found" in out.stdout
