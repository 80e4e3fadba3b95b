"""The command line: evaluate, methods, datasets; one-line errors with non-zero exits."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sparsebench import datasets, methods
from sparsebench.bench.cli import COMMANDS, main
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


def help_text(capsys, *argv) -> str:
    with pytest.raises(SystemExit) as e:
        main([*argv, "--help"])
    assert e.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_subcommand_explains_itself(capsys, monkeypatch, command):
    monkeypatch.setenv("COLUMNS", "300")  # a wide terminal: help still wraps at 100 columns
    out = help_text(capsys, command)
    usage, description, *rest = out.split("\n\n")
    assert usage.startswith(f"usage: sparsebench {command}")
    assert len(description.split()) >= 12  # a description, not a one-word summary
    assert f"examples:\n  sparsebench {command}" in out
    if command != "compare":  # compare takes two folders and nothing with a default
        assert "(default: " in out
    assert "(default: None)" not in out and "(default: False)" not in out
    assert max(len(line) for line in out.splitlines()) <= 100


def test_methods_means_the_same_in_every_subcommand(capsys):
    from sparsebench.bench.cli_options import METHODS_HELP

    for command in ("sweep", "accuracy", "run", "speed"):
        words = " ".join(help_text(capsys, command).split())
        assert " ".join(METHODS_HELP.split()) in words, command


def test_version(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"sparsebench {version('sparsebench')}"


def test_methods_name_shows_details_and_a_typo_is_an_error(capsys):
    assert main(["methods", "window"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("window: ") and "grid quick:" in out and "bigbird" not in out
    assert main(["methods", "windw"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "sparsebench: error: no method matches 'windw'; did you mean 'window'?"
    assert main(["methods", "window;sparsefinder_k*"]) == 0
    assert "sparsefinder_kmeans: " in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["methods"], ["methods", "*"], ["datasets"]])
def test_terminal_tables_fit_in_100_columns(capsys, monkeypatch, tmp_path, argv):
    monkeypatch.setenv("SPARSEBENCH_HOME", str(tmp_path))
    if argv == ["datasets"]:  # one built dataset, so its row has every column filled
        datasets.build("synthetic-bidir", log=lambda m: None)
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    if argv == ["datasets"]:
        assert lines.pop(0) == f"cache: {tmp_path / 'datasets'}"  # a path: as long as it is
    assert len(lines) > 5 and max(len(line) for line in lines) <= 100
    first = [line.split()[0] for line in lines[1:] if line.strip()]
    if argv[0] == "methods":  # one table: a row per method, nothing wrapped into a second block
        assert first[: len(methods.names())] == methods.names()
    else:
        assert first[: len(datasets.DATASETS)] == list(datasets.DATASETS)
        assert "2L x 4H, d=16, bidir" in lines[4] and lines[1].split()[:2] == [
            "shakespeare-lm",
            "no",
        ]


def test_text_table_is_pandas_and_narrow():
    from sparsebench.bench.commands import text_table

    rows = [{"spec": f"method_{i}:" + "w=1," * 30, "n": 64, "x": 1 / 3} for i in range(3)]
    cols = ["spec", "n", "x", *(f"column_{i}" for i in range(12))]
    text = text_table(rows, cols)
    assert max(len(line) for line in text.splitlines()) <= 100
    assert "0.3333" in text and "..." in text  # floats to 4 places, long cells shortened


def test_evaluate_shows_progress_and_averages_as_evaluate_does(capsys, tmp_path):
    from sparsebench.bench import evaluate
    from sparsebench.methods import from_spec

    data = datasets.synthetic(num_seqs=6, layers=2, heads=2, n=16, d=8, seed=0)
    path = data.save(tmp_path / "tiny")
    spec = "sparsefinder_kmeans:num_clusters=2,n_init=1"
    assert main(["evaluate", "--data", str(path), "--method", spec, "--json"]) == 0
    out = capsys.readouterr()
    got = json.loads(out.out)
    assert "fitting and scoring layer 1" in out.err and "2/2" in out.err
    direct = evaluate(datasets.QKData.load(path), from_spec(spec))
    for name, value in direct["metrics"].items():
        assert got[name] == pytest.approx(value, nan_ok=True), name
    assert got["layers"] == [0, 1] and got["method"] == from_spec(spec).id


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two run folders of one tiny dataset: window with and without a global token."""
    from sparsebench.bench.runs import open_run_folder, sweep

    root = tmp_path_factory.mktemp("runs")
    data = datasets.synthetic(num_seqs=6, layers=2, heads=2, n=24, d=8, seed=0)
    folders = []
    for name, methods_ in (("a", "window;full"), ("b", "window:global_tokens=1;full")):
        folder = open_run_folder("sweep", ["sweep"], results=root / name)
        out = folder / "synthetic-bidir" / "records.jsonl"
        sweep(data, out, dataset="synthetic-bidir", methods=methods_, progress=False, log=print)
        folders.append(folder)
    return folders


def test_compare_two_runs_of_one_dataset(capsys, two_runs):
    a, b = two_runs
    assert main(["compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "synthetic-bidir (dataset build " in out and "B − A" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    # full: sparsity 0 in both runs, and no difference
    assert [float(x) for x in rows["full"][1:4]] == [0.0, 0.0, 0.0]
    assert max(len(line) for line in out.splitlines()) <= 100


def test_leaderboard_formats(capsys, two_runs, tmp_path):
    import shutil

    folder = shutil.copytree(two_runs[0], tmp_path / "run")
    assert main(["leaderboard", "--results", str(folder), "--format", "latex"]) == 0
    tex = folder / "synthetic-bidir" / "leaderboard.tex"
    assert f"wrote {tex}" in capsys.readouterr().out
    assert "\\toprule" in tex.read_text() and "\\bottomrule" in tex.read_text()
    assert not (folder / "synthetic-bidir" / "leaderboard.md").exists()
    argv = ["leaderboard", "--results", str(folder), "--format", "md,csv", "--format", "html"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    for name in ("leaderboard.md", "leaderboard.csv"):
        assert f"wrote {folder / 'synthetic-bidir' / name}" in out
