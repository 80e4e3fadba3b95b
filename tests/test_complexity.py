"""Every method declares what its predict step costs, and the listings show it."""

from __future__ import annotations

import csv
import json
import re

from sparsebench import methods
from sparsebench.bench.cli import main
from sparsebench.bench.report import write_leaderboard
from sparsebench.bench.runs import append_record
from sparsebench.methods import Method

#: A big-O term: ``O(`` … ``)`` with balanced parentheses, e.g. ``O(N r (d + m C))``.
_BIG_O = re.compile(r"O\(.+\)")


def test_every_method_declares_its_complexity():
    undeclared = [n for n in methods.names() if methods.get(n).complexity == Method.complexity]
    assert not undeclared, f"methods still without a declared complexity: {undeclared}"


def test_declared_complexities_are_big_o_of_time_and_memory():
    for name in methods.names():
        cost = methods.get(name).complexity
        if cost == Method.complexity:
            continue  # reported by the test above
        assert set(cost) == {"time", "memory"}, name
        for kind, text in cost.items():
            assert _BIG_O.search(text) and text.count("(") == text.count(")"), (name, kind, text)


def test_methods_table_has_predict_cost_columns(capsys):
    assert main(["methods"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[-4:] == ["predict", "time", "predict", "memory"]
    assert max(len(line) for line in lines) <= 100
    rows = {line.split()[0]: line for line in lines[1 : len(methods.names()) + 1]}
    assert rows["window"].split()[-2:] == ["O(1)", "O(1)"]
    assert rows["bigbird"].rstrip().endswith(methods.get("bigbird").complexity["memory"])
    assert any("N length" in line for line in lines), "the legend names the letters"


def test_methods_details_and_json_carry_the_cost(capsys):
    assert main(["methods", "openai_fixed"]) == 0
    out = capsys.readouterr().out
    assert "predict cost:   time O(N² log N), memory O(N²)" in out
    assert main(["methods", "routing*", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"]: r["complexity"] for r in rows} == {
        n: dict(methods.get(n).complexity) for n in ("routing", "routing_trained")
    }


def test_leaderboard_has_a_predict_cost_column(tmp_path):
    path = tmp_path / "toy" / "records.jsonl"
    for layer in (0, 1):
        for method, s, r in (("window", 0.8, 0.96), ("not_installed", 0.5, 0.97)):
            append_record(
                path,
                {
                    "dataset": "toy",
                    "method": method,
                    "method_id": method,
                    "layer": layer,
                    "sparsity": s,
                    "recall": r,
                    "params": {},
                },
            )
    write_leaderboard(tmp_path, formats="md,csv")
    md = (tmp_path / "toy" / "leaderboard.md").read_text()
    head = next(line for line in md.splitlines() if line.startswith("| Method |"))
    assert head.endswith("| Predict cost | Config @ 0.95 |")
    window = next(line for line in md.splitlines() if line.startswith("| window |"))
    assert window.endswith("| O(1) / O(1) | `window` |")
    other = next(line for line in md.splitlines() if line.startswith("| not_installed |"))
    assert other.endswith("| — | `not_installed` |")
    by = {r["method"]: r for r in csv.DictReader(open(tmp_path / "toy" / "leaderboard.csv"))}
    assert (by["window"]["predict_cost_time"], by["window"]["predict_cost_memory"]) == (
        "O(1)",
        "O(1)",
    )
    assert by["not_installed"]["predict_cost_time"] == ""
