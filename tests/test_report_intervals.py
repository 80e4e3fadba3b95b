"""Leaderboard intervals, best marks, rounding and exports (md, csv, html, LaTeX)."""

from __future__ import annotations

import csv
import re

import pytest

from sparsebench.bench.report import write_leaderboard
from sparsebench.bench.runs import append_record
from tests.test_leaderboard import rec


def seq_rec(method, mid, layer, s, r, spread, n=8, **extra):
    """A record whose per-sequence sparsity and recall lie evenly within ``±spread``."""
    offsets = [spread * (2 * i / (n - 1) - 1) for i in range(n)]
    per = {
        "sparsity": [s + o for o in offsets],
        "recall": [min(1.0, r + o) for o in reversed(offsets)],
        "exact": [r + o for o in offsets],
        "output_error": [0.2 + o for o in offsets],
    }
    return rec(
        method,
        mid,
        layer,
        s,
        r,
        output_error=0.2,
        per_sequence=per,
        sequence_lengths=[60 * (i + 1) for i in range(n)],
        dataset_hash="h1",
        sparsebench="0.1.0",
        **extra,
    )


def make_seq(tmp_path, bigbird_spread=0.002, method="window"):
    path = tmp_path / "results" / "toy" / "records.jsonl"
    for layer in (0, 1):
        append_record(path, seq_rec(method, f"{method}[w=3]", layer, 0.80, 0.96, 0.01))
        append_record(path, seq_rec(method, f"{method}[w=9]", layer, 0.60, 0.99, 0.01))
        append_record(path, seq_rec("bigbird", "bigbird", layer, 0.85, 0.95, bigbird_spread))
        append_record(path, seq_rec("full", "full", layer, 0.0, 1.0, 0.0))
    return tmp_path / "results"


def row_of(md, name):
    return next(line for line in md.splitlines() if line.startswith(f"| {name} |"))


def test_intervals_shown_and_best_marked_only_when_clear(tmp_path):
    from sparsebench.bench.report import layer_average, load_records, with_intervals

    results = make_seq(tmp_path)
    write_leaderboard(results)
    md = (results / "toy" / "leaderboard.md").read_text()
    big, win = row_of(md, "bigbird"), row_of(md, "window")
    # bigbird's sparsity at recall 0.95 (0.85, tight) clears window's (0.80 ± ~0.005): bold.
    assert big.split(" | ")[2].startswith("**0.850") and "±" in big.split(" | ")[2]
    assert "**" not in win.split(" | ")[2]
    assert "95% percentile bootstrap" in md and "1000 resamples" in md
    # The CSV holds the bounds; they are those of the configuration the figure comes from.
    recs = load_records(results / "toy" / "records.jsonl")
    avg = with_intervals(layer_average(recs), recs).set_index("method_id")
    by = {r["method"]: r for r in csv.DictReader(open(results / "toy" / "leaderboard.csv"))}
    assert float(by["window"]["sparsity@0.95_lo"]) == pytest.approx(
        avg.loc["window[w=3]", "sparsity_lo"]
    )
    assert float(by["window"]["sparsity@0.99_hi"]) == pytest.approx(
        avg.loc["window[w=9]", "sparsity_hi"]
    )
    assert float(by["window"]["best_recall_lo"]) == pytest.approx(
        avg.loc["window[w=9]", "recall_lo"]
    )
    assert by["bigbird"]["output_error@0.95"] == "0.2"
    assert "output_error" in open(results / "toy" / "configs.csv").readline()
    page = (results / "index.html").read_text()
    assert re.search(r"<b>0\.850\d* ± 0\.\d+</b>", page) and "Output error @ 0.95" in page
    assert "95% percentile bootstrap" in page
    assert "bootstrap" in (results / "README.md").read_text()


def test_no_best_mark_when_intervals_overlap(tmp_path):
    # bigbird now spreads ±0.2 per sequence: 0.85 against 0.80 is within noise.
    results = make_seq(tmp_path, bigbird_spread=0.2)
    write_leaderboard(results)
    md = (results / "toy" / "leaderboard.md").read_text()
    cell = row_of(md, "bigbird").split(" | ")[2]
    assert cell.startswith("0.8") and "±" in cell and "**" not in cell
    assert "**" not in row_of(md, "window").split(" | ")[2]


def test_latex_export(tmp_path):
    from sparsebench.bench.report import render_leaderboard

    results = make_seq(tmp_path, method="my_window")
    written = write_leaderboard(results, formats=("latex",))
    tex = (results / "toy" / "leaderboard.tex").read_text()
    assert results / "toy" / "leaderboard.tex" in written
    assert not (results / "toy" / "leaderboard.md").exists()  # only the formats asked for
    for rule in ("\\toprule", "\\midrule", "\\bottomrule", "\\begin{tabular}", "\\end{table}"):
        assert rule in tex
    assert "my\\_window" in tex and "my_window" not in tex.replace("my\\_window", "")
    assert re.search(r"\\textbf\{0\.850\d* \$\\pm\$ 0\.\d+\}", tex)
    assert "±" not in tex and "±" not in tex and "$\\uparrow$" in tex
    body = tex.split("\\midrule", 1)[1].split("\\bottomrule")[0]
    rows = [line for line in body.splitlines() if line.endswith("\\\\") and "&" in line]
    assert len({line.count("&") for line in rows}) == 1  # every row has every column
    for line in tex.splitlines():  # compiles-looking: math and groups closed on every line
        plain = line.replace("\\$", "").replace("\\{", "").replace("\\}", "")
        assert plain.count("$") % 2 == 0 and plain.count("{") == plain.count("}"), line
    assert render_leaderboard(results, "latex") == tex
    # A later leaderboard in other formats keeps the .tex current instead of leaving it stale.
    (results / "toy" / "leaderboard.tex").write_text("stale")
    write_leaderboard(results, formats="md")
    assert (results / "toy" / "leaderboard.tex").read_text() == tex
    with pytest.raises(ValueError, match="unknown leaderboard format 'pdf'"):
        write_leaderboard(results, formats="md,pdf")


def test_render_leaderboard_formats(tmp_path):
    from sparsebench.bench.report import load_records, render_leaderboard

    results = make_seq(tmp_path)
    write_leaderboard(results, formats="md,csv")
    md = render_leaderboard(results, "md")
    assert md == (results / "toy" / "leaderboard.md").read_text()
    lines = render_leaderboard(results, "csv").splitlines()
    assert lines[0].startswith("dataset,method,name,reference,sparsity@0.90,sparsity@0.90_lo")
    assert "<table>" in render_leaderboard(results, "html")
    # The same table from the records as a frame.
    frame = render_leaderboard(load_records(results / "toy" / "records.jsonl"), "md")
    assert row_of(frame, "bigbird") == row_of(md, "bigbird")


def test_accuracy_intervals_and_tokens(tmp_path):
    from sparsebench.bench import stats

    results = make_seq(tmp_path)
    acc = results / "toy" / "accuracy.jsonl"
    tokens = [100, 120, 80, 100, 90, 110]
    gold_correct = [40, 50, 30, 41, 35, 44]
    win_correct = [30, 37, 22, 30, 27, 33]
    for mid, method, correct in (
        ("gold", "gold", gold_correct),
        ("window[w=3]", "window", win_correct),
    ):
        a = sum(correct) / sum(tokens)
        append_record(
            acc,
            {
                "dataset": "toy",
                "method": method,
                "method_id": mid,
                "accuracy": a,
                "delta_accuracy": a - sum(gold_correct) / sum(tokens),
                "split": "eval-windows=6",
                "windows": 6,
                "num_tokens": sum(tokens),
                "per_window": {"loss": [1.0] * 6, "correct": correct, "tokens": tokens},
                "dataset_hash": "h1",
                "sparsebench": "0.1.0",
                "params": {},
            },
        )
    write_leaderboard(results)
    row = next(
        r
        for r in csv.DictReader(open(results / "toy" / "leaderboard.csv"))
        if r["method"] == "window"
    )
    lo, hi = stats.ratio_interval(win_correct, tokens)
    assert float(row["accuracy@0.95_lo"]) == pytest.approx(lo)
    assert float(row["accuracy@0.95_hi"]) == pytest.approx(hi)
    dlo, dhi = stats.paired_ratio_delta_interval(win_correct, gold_correct, tokens)
    assert float(row["delta_accuracy@0.95_lo"]) == pytest.approx(dlo)
    assert float(row["delta_accuracy@0.95_hi"]) == pytest.approx(dhi)
    assert float(row["tokens@0.95"]) == 600
    md_row = row_of((results / "toy" / "leaderboard.md").read_text(), "window")
    assert " | 600 | " in md_row and md_row.count("±") >= 5
    # A frame of sweep and accuracy records (told apart by ``kind``) renders the same table.
    import pandas as pd

    from sparsebench.bench.report import load_records, render_leaderboard

    frame = pd.concat(
        [load_records(results / "toy" / "records.jsonl").assign(kind="graph"), load_records(acc)]
    )
    assert row_of(render_leaderboard(frame, "md"), "window") == md_row


def test_rounding_follows_the_interval():
    from sparsebench.bench.report.formatting import decimals, format_interval

    assert format_interval(0.69712, 0.685, 0.709) == "0.697 ± 0.012"  # half-width 0.012
    assert format_interval(0.69712, 0.69, 0.70) == "0.6971 ± 0.0050"  # 0.0050: 4 decimals
    assert format_interval(0.69712, 0.6, 0.8) == "0.70 ± 0.10"
    assert format_interval(0.69712, 0.69711, 0.69713) == "0.6971 ± 0.0000"  # at most 4
    assert format_interval(123.4, 100.0, 150.0) == "123 ± 25"
    assert format_interval(0.0123, 0.01, 0.014, "{:+.4f}") == "+0.0123 ± 0.0020"
    assert format_interval(0.69712, float("nan"), float("nan")) == "0.697"  # no interval
    assert format_interval(float("nan"), 0.1, 0.2) == "—"
    assert [decimals(h) for h in (0.5, 0.05, 0.0099, 0.0, 30.0)] == [2, 3, 4, 4, 0]


def test_best_mark_rule():
    from sparsebench.bench.report.formatting import best_position

    nan = float("nan")
    # Higher is better: 0.9 [0.88, 0.92] against 0.8 [0.78, 0.82]: clear.
    assert best_position([0.8, 0.9], [0.78, 0.88], [0.82, 0.92], True) == 1
    assert best_position([0.8, 0.9], [0.78, 0.81], [0.82, 0.92], True) is None  # overlap
    assert best_position([0.8, 0.9], [0.78, 0.88], [0.82, 0.92], False) == 0
    assert best_position([0.8, 0.9], [0.78, nan], [0.82, nan], True) is None  # no interval
    assert best_position([0.9, nan], [0.88, nan], [0.92, nan], True) is None  # no runner-up
    assert best_position([0.9, 0.9], [0.9, 0.9], [0.9, 0.9], True) is None  # a tie
