"""Leaderboard tables: one row per method from the summaries, as a DataFrame and as markdown.

The columns are :data:`COLUMNS`; each reads its direction (for the arrow and the bold best) and
its cell format from a metric of :data:`~sparsebench.bench.metrics.METRICS`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from sparsebench.methods import get

from ..metrics import METRICS, Metric
from .summary import THRESHOLDS

__all__ = [
    "COLUMNS",
    "Column",
    "display_name",
    "is_reference",
    "leaderboard_markdown",
    "leaderboard_table",
]


@dataclass(frozen=True)
class Column:
    """A leaderboard column derived from a metric.

    Attributes:
        key: the column of the leaderboard table (and CSV).
        metric: the name in ``METRICS`` that gives the direction and, by default, header and
            format.
        header: the column header (default: the metric's).
        fmt: the cell format (default: the metric's); set where the column changes the unit.
    """

    key: str
    metric: str
    header: str = ""
    fmt: str = ""

    @property
    def base(self) -> Metric:
        """The metric the column is derived from."""
        return METRICS[self.metric]

    @property
    def title(self) -> str:
        """Header with the direction arrow, as tables print it."""
        return f"{self.header or self.base.header} {self.base.arrow}"

    def format(self, value: float) -> str:
        """One cell's text."""
        return (self.fmt or self.base.fmt).format(value)


#: The ranked columns of every leaderboard table, in order.
COLUMNS: tuple[Column, ...] = (
    *(Column(f"sparsity@{t:.2f}", "sparsity", f"Sparsity @ recall {t:.2f}") for t in THRESHOLDS),
    Column("auc", "auc"),
    Column("best_recall", "recall", "Best recall"),
    Column("block_sparsity@0.95", "block_sparsity", "Block sparsity @ 0.95"),
    Column("exact@0.95", "exact", "Exact @ 0.95"),
    Column("accuracy@0.95", "accuracy", "Accuracy @ 0.95"),
    Column("delta_accuracy@0.95", "delta_accuracy", "Δ accuracy @ 0.95"),
    Column("fit_s", "fit_s"),
    Column("predict_ms", "predict_s", "Predict ms", "{:.1f}"),
    Column("speed_x_dense", "x_best_dense", "Time × dense"),
    Column("speed_peak_mb", "peak_mb"),
)


def display_name(method: str) -> str:
    """The name a table shows: the method's ``label`` when it declares one."""
    try:
        return getattr(get(method), "label", "") or method
    except KeyError:
        return method


def is_reference(method: str) -> bool:
    """Whether a method is a reference row (gold, full, oracles), kept apart from the ranking."""
    try:
        return bool(get(method).tags.reference)
    except KeyError:
        return method in ("gold", "full", "topk_oracle", "random")


def leaderboard_table(
    summary: pd.DataFrame,
    avg: pd.DataFrame,
    acc: pd.DataFrame | None = None,
    speed: dict[str, dict] | None = None,
) -> pd.DataFrame:
    """One row per method of one dataset, ranked; reference rows last.

    Args:
        summary: :func:`summarize` of the dataset's layer averages.
        avg: the layer averages (:func:`layer_average`).
        acc: task-accuracy records, when there are any.
        speed: :func:`speed_by_method` of the speed table.

    Returns:
        The table: every column of :data:`COLUMNS`, the configuration at each threshold, the
        display name, the reference flag, the timed configuration and the speed case.
    """
    by_id = {} if acc is None or acc.empty else acc.set_index("method_id").to_dict("index")
    speed = speed or {}
    rows = []
    for _, s in summary.iterrows():
        cfg = s.get("config@0.95", "")
        at = avg[(avg["method_id"] == cfg) & (avg["dataset"] == s["dataset"])] if cfg else None
        pick = at.iloc[0] if at is not None and len(at) else None
        if pick is None:  # no configuration reaches 0.95: report the best-recall one
            g = avg[(avg["method"] == s["method"]) & (avg["dataset"] == s["dataset"])]
            pick = g.loc[g["recall"].idxmax()]
        row = {
            "method": s["method"],
            "name": display_name(s["method"]),
            "reference": is_reference(s["method"]),
            **{c: s[c] for c in s.index if c.startswith(("sparsity@", "config@"))},
            "auc": s["auc"],
            "best_recall": s["best_recall"],
            "configs": s["configs"],
            "block_sparsity@0.95": pick.get("block_sparsity", math.nan) if cfg else math.nan,
            "exact@0.95": pick.get("exact", math.nan) if cfg else math.nan,
            "fit_s": pick.get("fit_s", math.nan) * pick.get("num_layers", 1),
            "predict_ms": 1000 * pick.get("predict_s", math.nan),
            "timed_config": pick["method_id"],
            "accuracy@0.95": by_id.get(cfg, {}).get("accuracy", math.nan) if cfg else math.nan,
            "delta_accuracy@0.95": (
                by_id.get(cfg, {}).get("delta_accuracy", math.nan) if cfg else math.nan
            ),
            **speed.get(
                s["method"],
                {"speed_x_dense": math.nan, "speed_peak_mb": math.nan, "speed_case": ""},
            ),
        }
        rows.append(row)
    t = pd.DataFrame(rows)
    return t.sort_values(
        ["reference", "sparsity@0.95", "auc"], ascending=[True, False, False], na_position="last"
    ).reset_index(drop=True)


def leaderboard_markdown(t: pd.DataFrame, dataset: str, meta: str) -> str:
    """The markdown page of one dataset's table: ranked rows, best figures bold, then references."""
    head = "| Method | " + " | ".join(c.title for c in COLUMNS) + " | Config @ 0.95 |"
    sep = "|---" * (len(COLUMNS) + 2) + "|"
    lines = [f"# Leaderboard: {dataset}", "", meta, "", head, sep]
    ranked = t[~t["reference"]]
    best = {
        c.key: (ranked[c.key].max() if c.base.higher_is_better else ranked[c.key].min())
        for c in COLUMNS
        if c.key in ranked and ranked[c.key].notna().any()
    }

    def cells(r, bold: bool) -> str:
        out = []
        for c in COLUMNS:
            v = r.get(c.key, math.nan)
            if v is None or (isinstance(v, float) and math.isnan(v)):
                out.append("—")
                continue
            s = c.format(v)
            out.append(f"**{s}**" if bold and c.key in best and v == best[c.key] else s)
        return " | ".join(out)

    for _, r in ranked.iterrows():
        lines.append(f"| {r['name']} | {cells(r, True)} | `{r.get('config@0.95') or '—'}` |")
    refs = t[t["reference"]]
    if len(refs):
        lines.append(f"| *reference rows* |{' |' * (len(COLUMNS) + 1)}")
        for _, r in refs.iterrows():
            lines.append(f"| {r['name']} | {cells(r, False)} | `{r.get('config@0.95') or '—'}` |")
    lines += [
        "",
        "Sparsity @ recall t: the highest sparsity of a configuration whose layer-averaged "
        "recall is at least t (on the method's recall–sparsity frontier). AUC: area under the "
        "frontier's step curve. Block sparsity, exact, fit and predict time are those of the "
        "configuration reaching recall 0.95 (or, when none does, its best-recall one). "
        "Time × dense and peak MB come from `sparsebench speed` (see `../speed/speed.md`): the "
        "method's fastest measured case at its largest measured N, predict + layout + kernel "
        "time over the best dense kernel of the same normaliser, and that case's extra peak "
        "memory; the case is in the CSV's `speed_case` column. "
        "— : not reached or not measured. Reference rows are not ranked.",
        "",
    ]
    return "\n".join(lines)
