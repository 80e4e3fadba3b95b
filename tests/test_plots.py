"""Leaderboard figures and the method style: hand-made frames, with and without intervals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.image import imread

from sparsebench.bench.report.plot_parts import draw_frontier, interval_errors, sort_bins
from sparsebench.bench.report.plots import accuracy_plot, length_plot, pareto_plot, speed_plot
from sparsebench.bench.report.show import CELL_COLORS, show
from sparsebench.bench.report.style import FAMILIES, figure_context, method_style, ordered
from sparsebench.bench.report.summary import pareto_frontier, summarize
from sparsebench.methods import create, names

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def figures(monkeypatch):
    """The figures the plot functions save, kept for inspection."""
    saved = []
    original = Figure.savefig

    def savefig(self, *args, **kwargs):
        saved.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    return saved


def _with_intervals(df: pd.DataFrame, metrics, width: float = 0.02) -> pd.DataFrame:
    df = df.copy()
    for m in metrics:
        df[f"{m}_lo"] = df[m] - width
        df[f"{m}_hi"] = df[m] + width
    return df


def _avg() -> pd.DataFrame:
    rows = [
        ("sparsefinder_kmeans", "sparsefinder_kmeans[k=2]", 0.99, 0.60),
        ("sparsefinder_kmeans", "sparsefinder_kmeans[k=4]", 0.95, 0.80),
        ("sparsefinder_kmeans", "sparsefinder_kmeans[k=8]", 0.80, 0.95),
        ("sparsefinder_kmeans", "sparsefinder_kmeans[k=9]", 0.70, 0.90),  # dominated
        ("window", "window[w=3]", 0.40, 0.90),
        ("window", "window[w=9]", 0.70, 0.70),
        ("dsa", "dsa[k=4]", 0.90, 0.99),
        ("gold", "gold", 1.0, 0.93),
        ("full", "full", 1.0, 0.0),
    ]
    df = pd.DataFrame(rows, columns=["method", "method_id", "recall", "sparsity"])
    df["dataset"] = "toy"
    df["gold_sparsity"] = 0.93
    return df


def _png(path) -> bool:
    return path.exists() and path.stat().st_size > 5_000 and path.read_bytes()[:8] == PNG


@pytest.mark.parametrize("intervals", [False, True])
def test_pareto_plot_log_density_and_linear_panels(tmp_path, figures, intervals):
    avg = _with_intervals(_avg(), ["recall", "sparsity"]) if intervals else _avg()
    out = tmp_path / "pareto.png"
    pareto_plot(pareto_frontier(avg), avg, "toy", out)
    assert _png(out)
    fig = figures[-1]
    log_ax, lin_ax = fig.axes[:2]
    assert log_ax.get_xscale() == "log" and lin_ax.get_xscale() == "linear"
    lo, hi = log_ax.get_xlim()
    assert lo > 1 > hi > 0  # density from 1 down, sparser to the right
    # error bars only where the frame has intervals
    bars = [c for c in log_ax.collections if c.__class__.__name__ == "LineCollection"]
    assert bool(bars) == intervals
    # the legend sits outside both panels
    fig.canvas.draw()
    legend = fig.legends[0].get_window_extent()
    for ax in (log_ax, lin_ax):
        assert not legend.overlaps(ax.get_window_extent())
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "DSA (Liu et al., 2021)" in labels
    assert any("gold graph's density" in t for t in labels)


def test_frontier_step_curve_has_the_summary_auc():
    avg = _avg()
    front = pareto_frontier(avg)
    auc = summarize(avg).set_index("method")["auc"]
    with figure_context() as plt:
        for method in ("sparsefinder_kmeans", "window", "dsa"):
            fig, ax = plt.subplots()
            g = front[front["method"] == method]
            assert not draw_frontier(ax, g, "recall", method_style(method), density=False)
            area = 0.0
            for line in ax.lines[:2]:  # the faint lead-in from sparsity 0, then the steps
                xy = line.get_path().vertices
                area += float(np.sum(np.diff(xy[:, 0]) * xy[1:, 1]))
            assert area == pytest.approx(auc[method], abs=1e-12), method
            plt.close(fig)


@pytest.mark.parametrize("intervals", [False, True])
def test_accuracy_plot_frontier_and_reference(tmp_path, figures, intervals):
    avg = _avg()
    acc = pd.DataFrame(
        {
            "method": avg["method"],
            "method_id": avg["method_id"],
            "accuracy": [0.50, 0.49, 0.40, 0.30, 0.35, 0.45, 0.47, 0.50, 0.50],
            "task": "next-token",
            "tokens": 4096,
        }
    )
    if intervals:
        acc = _with_intervals(acc, ["accuracy"], 0.01)
    out = tmp_path / "accuracy.png"
    assert accuracy_plot(acc, avg, "toy", out)
    assert _png(out)
    fig = figures[-1]
    ax = fig.axes[0]
    # The dominated configuration (accuracy 0.30 at sparsity 0.90 < 0.95) is not drawn.
    ys = np.concatenate([line.get_ydata() for line in ax.lines])
    assert 0.30 not in ys and 0.40 in ys
    assert any("full α-entmax attention" in t.get_text() for t in fig.legends[0].get_texts())
    assert any("4,096 held-out tokens" in t.get_text() for t in fig.texts)
    assert any("95% bootstrap" in t.get_text() for t in fig.texts) == intervals


def test_accuracy_plot_without_matching_configurations(tmp_path):
    acc = pd.DataFrame({"method": ["x"], "method_id": ["x[a=1]"], "accuracy": [0.1]})
    assert not accuracy_plot(acc, _avg(), "toy", tmp_path / "a.png")
    assert not (tmp_path / "a.png").exists()


def _lengths(intervals: bool) -> pd.DataFrame:
    rows = []
    for m, r, s in (("sparsefinder_kmeans", 0.95, 0.8), ("window", 0.96, 0.6), ("gold", 1, 0.9)):
        for i, b in enumerate(["128-256", "0-128", "256-384"]):
            rows.append(
                {
                    "method": m,
                    "method_id": m,
                    "bin": b,
                    "num_sequences": [20, 30, 5][i],
                    "recall": r - 0.01 * i,
                    "sparsity": s + 0.01 * i,
                }
            )
    df = pd.DataFrame(rows)
    return _with_intervals(df, ["recall", "sparsity"], 0.01) if intervals else df


@pytest.mark.parametrize("intervals", [False, True])
def test_length_plot(tmp_path, figures, intervals):
    out = tmp_path / "length.png"
    assert length_plot(_lengths(intervals), "toy", out)
    assert _png(out)
    ax = figures[-1].axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == ["0–128\n30 seqs", "128–256\n20 seqs", "256–384\n5 seqs"]
    assert bool(ax.collections) == intervals
    assert not length_plot(_lengths(False).iloc[:0], "toy", tmp_path / "none.png")


def test_length_bins_sort_by_lower_bound():
    assert sort_bins(["256-384", "0-128", "1024-1152", "128-256"]) == [
        "0-128",
        "128-256",
        "256-384",
        "1024-1152",
    ]


def _speed() -> pd.DataFrame:
    rows = []
    for norm, spec, path, scale in (
        ("softmax", "sdpa", "", 1.0),
        ("softmax", "window:w=9", "block b=64", 0.5),
        ("softmax", "window:w=9", "flex b=64", 0.5),  # same times: must stay visible
        ("entmax", "dense_entmax", "", 4.0),
        ("entmax", "sparsefinder_kmeans:num_clusters=4", "grouped", 1.0),
    ):
        for n in (1024, 2048, 4096):
            rows.append(
                {
                    "device": "cpu",
                    "normalizer": norm,
                    "spec": spec,
                    "path": path,
                    "n": n,
                    "time_s": scale * n / 1e4,
                    "peak_mb": scale * n / 100 if spec != "sdpa" else 0.0,
                }
            )
    return pd.DataFrame(rows)


def test_speed_plot_one_column_per_normaliser_every_line_visible(tmp_path, figures):
    out = tmp_path / "speed.png"
    speed_plot(_speed(), out)
    assert _png(out)
    fig = figures[-1]
    titles = [a.get_title() for a in fig.axes]
    assert "structured" in titles and "Sparsefinder" in titles
    assert "softmax" in fig.axes[0].get_ylabel()
    soft = fig.axes[titles.index("structured")]  # top row: cpu, softmax
    assert soft.get_xscale() == "log" and soft.get_yscale() == "log"
    block, flex = (
        line
        for line in soft.lines
        if line.get_label().startswith("window") and line.get_label() != "_nolegend_"
    )
    # Equal figures, yet the two lines differ in position and line style.
    assert not np.allclose(block.get_xdata(), flex.get_xdata())
    assert block.get_linestyle() != flex.get_linestyle()
    assert block.get_color() == flex.get_color()


def test_method_style_is_fixed_and_families_share_a_hue():
    for name in names():
        a, b = method_style(name), method_style(name)
        assert a == b and set(a) >= {"color", "marker", "linestyle", "label"}
    for family, (_, members) in FAMILIES.items():
        colours = [method_style(m)["color"] for m, _ in members]
        if family not in ("reference", "dense kernel"):
            assert len(set(colours)) == len(colours), family
            hues = {round(_hue(c), 2) for c in colours}
            assert max(hues) - min(hues) < 0.03, family  # shades of one hue
    registered = [n for n in names() if not create(n).tags.reference]
    markers = [method_style(n)["marker"] for n in registered]
    assert len(set(markers)) == len(markers)
    assert method_style("dsa")["label"] == "DSA (Liu et al., 2021)"
    assert method_style("window:w=129")["color"] == method_style("window")["color"]


def _hue(colour: str) -> float:
    import colorsys

    return colorsys.rgb_to_hls(*to_rgb(colour))[0]


def test_reference_rows_grey_and_dashed():
    for name in ("gold", "full", "topk_oracle", "random"):
        st = method_style(name)
        r, g, b = to_rgb(st["color"])
        assert r == g == b, name  # grey (black included)
        assert st["linestyle"] == "--", name
    assert method_style("window")["linestyle"] == "-"
    assert ordered(["gold", "window", "sparsefinder_kmeans", "zz_plugin"]) == [
        "sparsefinder_kmeans",
        "window",
        "zz_plugin",
        "gold",
    ]


def test_unknown_method_gets_a_stable_colour():
    a = method_style("my_plugin_method")
    assert a == method_style("my_plugin_method")
    assert a["label"] == "my_plugin_method" and a["linestyle"] == "-"
    known = {method_style(n)["color"] for n in names()}
    assert a["color"] not in known
    # the colour comes from a hash of the name, not from the process
    assert a["color"] == method_style("my_plugin_method")["color"]
    others = {method_style(f"plugin_{i}")["color"] for i in range(12)}
    assert len(others) > 3


def test_interval_errors_only_from_finite_columns():
    df = pd.DataFrame({"recall": [0.9, 0.8], "recall_lo": [0.85, np.nan], "recall_hi": [0.95, 1]})
    err = interval_errors(df, "recall")
    assert err.shape == (2, 2)
    assert err[:, 0] == pytest.approx([0.05, 0.05]) and list(err[:, 1]) == [0.0, 0.0]
    assert interval_errors(df.assign(recall_lo=np.nan), "recall") is None
    assert interval_errors(df.drop(columns="recall_hi"), "recall") is None


def test_show_writes_a_labelled_figure(tmp_path, syn_bidir, figures):
    out = show(syn_bidir, create("window", w=3), layer=1, head=2, out=tmp_path / "s.png")
    assert _png(out)
    fig = figures[-1]
    texts = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert texts[0].startswith("found") and texts[1].startswith("missed")
    # Nothing is cut off: the PNG is the figure's tight box (titles, legend below the axes).
    renderer = FigureCanvasAgg(fig).get_renderer()
    box = fig.get_tightbbox(renderer)
    height, width = imread(out).shape[:2]
    assert width == pytest.approx((box.width + 0.2) * 110, abs=3)
    assert height == pytest.approx((box.height + 0.2) * 110, abs=3)
    inches = (
        fig.axes[1]
        .get_legend()
        .get_window_extent(renderer)
        .transformed(fig.dpi_scale_trans.inverted())
    )
    assert box.y0 <= inches.y0 and inches.y1 <= box.y1
    colours = {to_rgb(c) for c in CELL_COLORS.values()}
    assert len(colours) == 4
    with pytest.raises(ValueError, match="head 9 out of range"):
        show(syn_bidir, create("window", w=3), head=9, out=tmp_path / "x.png")
