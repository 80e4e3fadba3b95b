"""Bad-input corpus, datasets: writers that must not destroy, names and paths that must not
escape, cards that must be checked, splits that must exist (the kill -9 test and the cleanup of
killed writers' temporaries are in test_dataset_interrupted.py).

Every case asserts the exception type (or the CLI's exit code 2), a one-line message that names
the problem, and that nothing under the test's folder was written or deleted.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from sparsebench import datasets
from sparsebench.datasets import DatasetError, QKData, check_name

TINY = {"num_seqs": 4, "layers": 1, "heads": 2, "n": 8, "d": 4}


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEBENCH_HOME", str(tmp_path / "home"))


def snapshot(root: Path) -> dict[str, object]:
    """Everything under ``root``: file bytes, directories, link targets."""
    out: dict[str, object] = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = f"link->{os.readlink(p)}"
        elif p.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = p.read_bytes()
    return out


def tiny(seed: int = 0) -> QKData:
    return datasets.synthetic(seed=seed, **TINY)


def saved(tmp: Path, name: str = "ds") -> Path:
    return tiny().save(tmp / name)


def edit_card(path: Path, **changes) -> Path:
    card = json.loads((path / "card.json").read_text())
    card.update(changes)
    (path / "card.json").write_text(json.dumps(card))
    return path


def file_entry(path: Path, entry: str) -> Path:
    card = json.loads((path / "card.json").read_text())
    card["files"]["eval"]["file"] = entry
    (path / "card.json").write_text(json.dumps(card))
    return path


def user_folder(tmp: Path) -> Path:
    folder = tmp / "mine"
    (folder / "sub").mkdir(parents=True)
    (folder / "thesis.tex").write_text("years of work")
    (folder / "sub" / "data.csv").write_text("1,2,3")
    return folder


def cli(*argv: str):
    from sparsebench.bench.cli import main

    def run():
        rc = main(list(argv))
        if rc != 0:
            raise SystemExit(rc)

    return run


# --- writers never destroy what isn't theirs ------------------------------------------------
def _save_onto_user_folder(tmp):
    folder = user_folder(tmp)
    return lambda: tiny().save(folder)


def _save_onto_file(tmp):
    (tmp / "notes.txt").write_text("keep me")
    return lambda: tiny().save(tmp / "notes.txt")


def _save_onto_dataset_with_user_files(tmp):
    path = saved(tmp)
    (path / "my-notes.md").write_text("mine")
    return lambda: tiny(1).save(path)


def _save_onto_model_card_folder(tmp):
    folder = tmp / "model"
    folder.mkdir()
    (folder / "card.json").write_text(json.dumps({"name": "shakespeare-lm", "kind": "model"}))
    (folder / "model.safetensors").write_bytes(b"weights")
    return lambda: tiny().save(folder)


def _save_onto_symlink(tmp):
    path = saved(tmp, "real")
    (tmp / "link").symlink_to(path)
    return lambda: tiny(1).save(tmp / "link")


def _build_onto_user_folder(tmp):
    folder = user_folder(tmp)
    return lambda: datasets.build("synthetic-bidir", folder, log=lambda m: None)


def _importer_bad_name(tmp):
    return lambda: __import__("sparsebench.datasets.importers", fromlist=["x"]).import_sparsefinder(
        tmp / "dump.pt", name="../escape"
    )


WRITERS = [
    ("save-onto-user-folder", _save_onto_user_folder, "exists and is not a sparsebench dataset"),
    ("save-onto-a-file", _save_onto_file, r"notes\.txt exists and is not a sparsebench dataset"),
    ("save-onto-dataset-with-user-files", _save_onto_dataset_with_user_files, "my-notes.md"),
    ("save-onto-model-folder", _save_onto_model_card_folder, "is not a sparsebench dataset"),
    ("save-onto-symlink", _save_onto_symlink, "is a symbolic link"),
    ("build-onto-user-folder", _build_onto_user_folder, "mine exists and is not a sparsebench"),
    ("import-with-escaping-name", _importer_bad_name, "invalid dataset name '../escape'"),
]

# --- names confined ---------------------------------------------------------------------------
NAMES = [
    ("load-dotdot-name", lambda tmp: lambda: datasets.load("../x"), "no dataset directory '../x'"),
    (
        "load-absolute-name",
        lambda tmp: lambda: datasets.load("/nonexistent/sparsebench-x"),
        "no dataset directory '/nonexistent/sparsebench-x'",
    ),
    ("load-name-with-space", lambda tmp: lambda: datasets.load("my data"), "invalid dataset name"),
    ("dataset-dir-dotdot", lambda tmp: lambda: datasets.dataset_dir(".."), "invalid dataset name"),
    ("build-escaping-name", lambda tmp: lambda: datasets.build("../../x"), "invalid dataset name"),
    ("check-name-slash", lambda tmp: lambda: check_name("a/b"), "invalid dataset name 'a/b'"),
    ("check-name-backslash", lambda tmp: lambda: check_name("a\\b"), "invalid dataset name"),
    ("check-name-absolute", lambda tmp: lambda: check_name("/etc"), "invalid dataset name '/etc'"),
    ("check-name-dot", lambda tmp: lambda: check_name("."), "invalid dataset name '.'"),
    ("check-name-empty", lambda tmp: lambda: check_name(""), "invalid dataset name ''"),
    (
        "in-memory-escaping-name",
        lambda tmp: (
            lambda: QKData(q=tiny().q, k=tiny().k, lengths=tiny().lengths, meta={"name": "../../x"})
        ),
        "invalid dataset name '../../x'",
    ),
]


# --- cards checked, file entries confined -----------------------------------------------------
def _card_case(**changes):
    return lambda tmp: (lambda p: lambda: QKData.load(p))(edit_card(saved(tmp), **changes))


def _entry_case(entry):
    return lambda tmp: (lambda p: lambda: QKData.load(p))(file_entry(saved(tmp), entry))


def _entry_symlink_outside(tmp):
    (tmp / "outside.safetensors").write_bytes(b"secret")
    path = saved(tmp)
    (path / "eval.safetensors").unlink()
    (path / "eval.safetensors").symlink_to(tmp / "outside.safetensors")
    return lambda: QKData.load(path)


def _card_not_utf8(tmp):
    path = saved(tmp)
    (path / "card.json").write_bytes(b'{"name": "\xff"}')
    return lambda: QKData.load(path)


def _card_a_list(tmp):
    path = saved(tmp)
    (path / "card.json").write_text("[1, 2]")
    return lambda: QKData.load(path)


CARDS = [
    ("card-version-string", _card_case(card_version="1"), r"card\.json: 'card_version' must be"),
    ("card-version-bool", _card_case(card_version=True), "'card_version' must be an integer"),
    ("card-alpha-string", _card_case(alpha="1.5"), "'alpha' must be a finite number > 1"),
    ("card-alpha-one", _card_case(alpha=1.0), "'alpha' must be a finite number > 1, got 1.0"),
    ("card-alpha-nan", _card_case(alpha=math.nan), "'alpha' must be a finite number > 1"),
    ("card-causal-string", _card_case(causal="yes"), "'causal' must be true or false"),
    ("card-files-list", _card_case(files=["train.safetensors"]), "'files' must be a non-empty"),
    ("card-layers-zero", _card_case(layers=0), "'layers' must be a positive integer"),
    ("card-name-escapes", _card_case(name="../../x"), "'name' is an invalid dataset name"),
    ("card-json-list", _card_a_list, "holds a JSON list, not an object"),
    ("card-not-utf8", _card_not_utf8, r"card\.json is not valid JSON"),
    ("card-entry-dotdot", _entry_case("../../etc/passwd"), "lies outside the dataset directory"),
    ("card-entry-absolute", _entry_case("/etc/passwd"), "'/etc/passwd' lies outside"),
    ("card-entry-symlink-outside", _entry_symlink_outside, "lies outside the dataset directory"),
    (
        "card-shape-disagrees",
        _card_case(heads=3),
        r"card\.json says \(layers, heads, head_dim\)",
    ),
]


# --- splits, values -------------------------------------------------------------------------
def _no_eval_split(tmp):
    data = datasets.synthetic(num_seqs=1, layers=1, heads=1, n=8, d=4)
    return lambda: data.split("eval")


OTHERS = [
    (
        "missing-split-typo",
        lambda tmp: lambda: tiny().split("evl"),
        r"no split 'evl'; this dataset has \['train', 'eval'\]",
    ),
    ("missing-eval-split", _no_eval_split, r"no split 'eval'; this dataset has \['train'\]"),
    (
        "in-memory-alpha-nan",
        lambda tmp: lambda: QKData(q=tiny().q, k=tiny().k, lengths=tiny().lengths, alpha=math.nan),
        "alpha must be a finite number > 1, got nan",
    ),
    (
        "in-memory-alpha-one",
        lambda tmp: lambda: QKData(q=tiny().q, k=tiny().k, lengths=tiny().lengths, alpha=1),
        "alpha must be a finite number > 1, got 1",
    ),
]

API_CASES = WRITERS + NAMES + CARDS + OTHERS


@pytest.mark.parametrize(
    "setup, pattern", [c[1:] for c in API_CASES], ids=[c[0] for c in API_CASES]
)
def test_api_bad_input(tmp_path, setup, pattern):
    call = setup(tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(DatasetError, match=pattern) as info:
        call()
    assert "\n" not in str(info.value)
    assert snapshot(tmp_path) == before


def _cli_build_onto_file(tmp):
    (tmp / "f").write_text("x")
    return cli("datasets", "build", "synthetic-bidir", "--out", str(tmp / "f"))


CLI_CASES = [
    (
        "cli-synthetic-onto-user-folder",
        lambda tmp: cli("datasets", "synthetic", str(user_folder(tmp))),
        "mine exists and is not a sparsebench dataset; choose another folder",
    ),
    ("cli-build-out-a-file", _cli_build_onto_file, "f exists and is not a sparsebench dataset"),
    (
        "cli-info-escaping-name",
        lambda tmp: cli("datasets", "info", "../../no-such-sparsebench-x"),
        "no dataset directory '../../no-such-sparsebench-x'",
    ),
    (
        "cli-evaluate-bad-card",
        lambda tmp: cli(
            "evaluate", "--data", str(edit_card(saved(tmp), card_version="1")), "--method", "window"
        ),
        "'card_version' must be an integer",
    ),
]


@pytest.mark.parametrize(
    "setup, pattern", [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES]
)
def test_cli_bad_input(tmp_path, capsys, setup, pattern):
    import re

    call = setup(tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(SystemExit) as info:
        call()
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sparsebench: error: ") and "\n" not in err
    assert re.search(pattern, err), err
    assert snapshot(tmp_path) == before
