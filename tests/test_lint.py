"""ruff is clean, and CI runs the README's test command."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_BESIDE = Path(sys.executable).with_name("ruff")
RUFF = str(_BESIDE) if _BESIDE.exists() else shutil.which("ruff")


@pytest.mark.skipif(RUFF is None, reason="ruff not installed (it comes with the test extra)")
def test_ruff_check_and_format():
    ruff = RUFF
    check = subprocess.run([ruff, "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    fmt = subprocess.run([ruff, "format", "--check", "."], cwd=ROOT, capture_output=True, text=True)
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|sh)\n(.*?)```", readme, re.S)
    test_cmds = [line for b in blocks for line in b.splitlines() if "pytest" in line]
    assert test_cmds, "README shows a test command"
    assert test_cmds[0].strip() in (ROOT / ".ci/run").read_text()


def test_readme_method_example_runs(tmp_path):
    readme = (ROOT / "README.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "my_band" in b)
    assert len(block.strip().splitlines()) <= 40
    script = tmp_path / "example.py"
    script.write_text(
        block
        + "\nfrom sparsebench import methods\n"
        + "g = methods.create('my_band', r=1).predict(torch.randn(1, 2, 6, 4), "
        + "torch.randn(1, 2, 6, 4))\nprint(int(g.num_edges().sum()))\n"
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    # per head: band of half-width 1 on 6 tokens = 16 edges, plus column 0 rows 2..5 and
    # row 0 keys 2..5 = 8 more -> 24; two heads.
    assert out.stdout.strip() == "48"
