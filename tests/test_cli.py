"""The command line: evaluate, methods, datasets; one-line errors with non-zero exits."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sparsebench import datasets
from sparsebench.bench.cli import main
from sparsebench.datasets import QKData


@pytest.fixture(scope="module")
def syn_dir(tmp_path_factory):
    return datasets.synthetic(seed=0).save(tmp_path_factory.mktemp("d") / "syn")


@pytest.fixture(scope="module")
def diagonal_dir(tmp_path_factory):
    # One-hot queries equal to keys: every query's gold support is itself alone.
    n = 8
    eye = 10 * torch.eye(n).view(1, 1, 1, n, n).expand(3, 1, 2, n, n).clone()
    lengths = torch.tensor([8, 6, 5])
    pad = torch.arange(n).view(1, 1, 1, n, 1) >= lengths.view(-1, 1, 1, 1, 1)
    q = eye.masked_fill(pad, 0.0)
    data = QKData(q=q, k=q.clone(), lengths=lengths, splits=["eval"] * 3, meta={"name": "diag"})
    return data.save(tmp_path_factory.mktemp("d") / "diag")


def run_json(capsys, *argv):
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_full_has_recall_one(capsys, syn_dir):
    out = run_json(capsys, "evaluate", "--data", str(syn_dir), "--method", "full")
    assert out["recall"] == 1.0 and out["sparsity"] == 0.0 and out["exact"] == 1.0


def test_window_hand_checked(capsys, diagonal_dir):
    out = run_json(
        capsys, "evaluate", "--data", str(diagonal_dir), "--method", "window", "--param", "w=3"
    )
    # Gold is the diagonal, so recall is 1; window 3 keeps 3L - 2 of L^2 pairs.
    expected = sum(1 - (3 * L - 2) / L**2 for L in (8, 6, 5)) / 3
    assert out["recall"] == 1.0 and out["exact"] == 1.0
    assert out["sparsity"] == pytest.approx(expected)
    assert out["precision"] == pytest.approx(sum(L / (3 * L - 2) for L in (8, 6, 5)) / 3)
    out0 = run_json(
        capsys,
        "evaluate",
        "--data",
        str(diagonal_dir),
        "--method",
        "window",
        "--param",
        "w=0",
        "--layer",
        "0",
    )
    assert out0["recall"] == 0.0 and out0["sparsity"] == 1.0
    # An even window reaches one further ahead: w=2 keeps j - i in {0, 1}, missing nothing.
    out2 = run_json(
        capsys, "evaluate", "--data", str(diagonal_dir), "--method", "window", "--param", "w=2"
    )
    assert out2["sparsity"] == pytest.approx(sum(1 - (2 * L - 1) / L**2 for L in (8, 6, 5)) / 3)


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["evaluate", "--data", "/nonexistent/x", "--method", "full"], "no dataset directory"),
        (["evaluate", "--data", "SYN", "--method", "windw"], "did you mean 'window'"),
        (
            ["evaluate", "--data", "SYN", "--method", "window", "--param", "ww=3"],
            "did you mean 'w'",
        ),
        (["evaluate", "--data", "SYN", "--method", "window", "--param", "w=abc"], "expects int"),
        (["evaluate", "--data", "SYN", "--method", "window", "--param", "w"], "key=value"),
        (["evaluate", "--data", "SYN", "--method", "full", "--layer", "7"], "out of range"),
    ],
)
def test_user_errors_are_one_line(capsys, syn_dir, argv, needle):
    argv = [str(syn_dir) if a == "SYN" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_nan_in_data_is_a_clear_error(capsys, tmp_path):
    path = datasets.synthetic(seed=0).save(tmp_path / "nan")
    from safetensors.torch import load_file, save_file

    from sparsebench.datasets import sha256_file

    t = load_file(str(path / "eval.safetensors"))
    t["q"][0, 0, 0, 0, 0] = float("nan")
    save_file(t, str(path / "eval.safetensors"))
    card = json.loads((path / "card.json").read_text())
    card["files"]["eval"]["sha256"] = sha256_file(path / "eval.safetensors")
    (path / "card.json").write_text(json.dumps(card))
    assert main(["evaluate", "--data", str(path), "--method", "full"]) == 2
    assert "NaN or inf" in capsys.readouterr().err


def test_methods_lists_params_tags_grid(capsys):
    rows = run_json(capsys, "methods")
    by = {r["name"]: r for r in rows}
    assert by["window"]["params"]["w"] == 3
    assert by["window"]["grid"]["paper"]["w"][:3] == [0, 1, 3]
    assert by["full"]["tags"]["reference"] is True


def test_console_script_runs(tmp_path):
    exe = Path(sys.executable).with_name("sparsebench")
    out = subprocess.run(
        [str(exe), "datasets", "synthetic", str(tmp_path / "s")], capture_output=True, text=True
    )
    assert out.returncode == 0 and "wrote synthetic dataset" in out.stdout
    bad = subprocess.run(
        [str(exe), "evaluate", "--data", str(tmp_path / "s"), "--method", "x"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and bad.stderr.startswith("sparsebench: error:")


def test_import_sparsefinder_as_documented(capsys, tmp_path):
    # README: `sparsebench datasets import-sparsefinder DUMP.pt --out DIR [--rescale-queries]`.
    g = torch.Generator().manual_seed(0)
    lengths = [5, 7, 3, 6, 4, 7, 5, 6, 7, 4]
    dump = tmp_path / "kqs_enc-attn.pt"
    q = [torch.randn(2, 3, L, 8, generator=g) for L in lengths]
    k = [torch.randn(2, 3, L, 8, generator=g) for L in lengths]
    torch.save({"length_src": torch.tensor(lengths), "q": q, "k": k}, dump)
    argv = ["datasets", "import-sparsefinder", str(dump), "--out", str(tmp_path / "plain")]
    assert main(argv) == 0
    assert "wrote" in capsys.readouterr().out
    plain = QKData.load(tmp_path / "plain")
    assert plain.lengths.tolist() == lengths and plain.causal is False
    torch.testing.assert_close(plain.q[1, :, :, :7], q[1], rtol=0, atol=0)
    argv = [*argv[:3], "--out", str(tmp_path / "scaled"), "--rescale-queries"]
    assert main(argv) == 0
    scaled = QKData.load(tmp_path / "scaled")
    torch.testing.assert_close(scaled.q, plain.q * 8**0.5)
    assert main(argv[:3]) == 2
    assert "needs --out DIR" in capsys.readouterr().err


def test_speed_specs_use_the_one_spec_parser():
    from sparsebench.bench.speed_command import speed_specs

    specs = speed_specs("sdpa,dense_entmax;window:w=5,global_tokens=2")
    assert specs == [
        ("sdpa", "sdpa", {}),
        ("dense_entmax", "dense_entmax", {}),
        ("window:w=5,global_tokens=2", "window", {"w": 5, "global_tokens": 2}),
    ]
    with pytest.raises(ValueError, match="expects int"):
        speed_specs("window:w=x")
    # The default cases (no --methods) parse too.
    names = [name for _, name, _ in speed_specs(None)]
    assert names == ["sdpa", "dense_entmax", "window", "sparsefinder_kmeans"]
