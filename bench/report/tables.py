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
from .formatting import INTERVAL_NOTE, best_position, format_interval
from .intervals import widest
from .summary import THRESHOLDS

__all__ = [
    "COLUMNS",
    "COST_COLUMNS",
    "Column",
    "cost_cell",
    "display_name",
    "is_reference",
    "leaderboard_markdown",
    "leaderboard_table",
    "predict_cost",
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
        interval: whether the table holds the figure's interval as ``<key>_lo``, ``<key>_hi``.
        ranked: whether the column is ranked (an arrow in its title, a best mark); an
            unranked column says something about a neighbour, such as its token count.
    """

    key: str
    metric: str
    header: str = ""
    fmt: str = ""
    interval: bool = False
    ranked: bool = True

    @property
    def base(self) -> Metric:
        """The metric the column is derived from."""
        return METRICS[self.metric]

    @property
    def title(self) -> str:
        """Header with the direction arrow, as tables print it."""
        head = self.header or self.base.header
        return f"{head} {self.base.arrow}" if self.ranked else head

    def format(self, value: float, lo: float = math.nan, hi: float = math.nan) -> str:
        """One cell's text: ``value ± half-width`` when an interval is given."""
        return format_interval(value, lo, hi, self.fmt or self.base.fmt)


#: The columns of every leaderboard table, in order.
COLUMNS: tuple[Column, ...] = (
    *(
        Column(f"sparsity@{t:.2f}", "sparsity", f"Sparsity @ recall {t:.2f}", interval=True)
        for t in THRESHOLDS
    ),
    Column("auc", "auc"),
    Column("best_recall", "recall", "Best recall", interval=True),
    Column("block_sparsity@0.95", "block_sparsity", "Block sparsity @ 0.95", interval=True),
    Column("exact@0.95", "exact", "Exact @ 0.95", interval=True),
    Column("output_error@0.95", "output_error", "Output error @ 0.95", interval=True),
    Column("accuracy@0.95", "accuracy", "Accuracy @ 0.95", interval=True),
    Column("delta_accuracy@0.95", "delta_accuracy", "Δ accuracy @ 0.95", interval=True),
    Column("tokens@0.95", "accuracy", "Tokens", "{:.0f}", ranked=False),
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


def predict_cost(method: str) -> dict[str, str]:
    """The declared cost of a method's predict step: ``{"time": …, "memory": …}``.

    From the class's ``complexity`` (``"?"`` where it declares none); ``""`` for both when the
    method is not registered here (records of another installation).
    """
    try:
        declared = get(method).complexity
    except KeyError:
        return {"time": "", "memory": ""}
    return {c: declared.get(c, "?") for c in ("time", "memory")}


def cost_cell(cost: dict[str, str]) -> str:
    """One short table cell of a :func:`predict_cost`: ``time / memory``, ``—`` when unknown."""
    return f"{cost['time']} / {cost['memory']}" if cost["time"] else "—"


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
        avg: the layer averages (:func:`layer_average`), with intervals where
            :func:`with_intervals` added them.
        acc: task-accuracy records, when there are any (with the interval columns of
            :func:`~sparsebench.bench.report.intervals.with_accuracy_intervals` where known);
            a configuration scored in several runs shows its :func:`widest` record.
        speed: :func:`speed_by_method` of the speed table.

    Returns:
        The table: every column of :data:`COLUMNS` (with ``_lo``/``_hi`` beside each column
        that has an interval, NaN where the records hold none), the configuration at each
        threshold, the display name, the reference flag, the timed configuration and the
        speed case. A threshold column takes the interval of the configuration it comes from.
    """
    acc = widest(acc)
    by_id = {} if acc is None or acc.empty else acc.set_index("method_id").to_dict("index")
    speed = speed or {}
    rows = [_method_row(s, avg, by_id, speed) for _, s in summary.iterrows()]
    t = pd.DataFrame(rows, columns=table_columns())
    return t.sort_values(
        ["reference", "sparsity@0.95", "auc"], ascending=[True, False, False], na_position="last"
    ).reset_index(drop=True)


def _method_row(s: pd.Series, avg: pd.DataFrame, by_id: dict, speed: dict) -> dict:
    """:func:`leaderboard_table`'s row of one method (``s``: its summary row)."""
    mine = avg[(avg["method"] == s["method"]) & (avg["dataset"] == s["dataset"])]
    cfg = s.get("config@0.95", "")
    best = mine.loc[mine["recall"].idxmax()]
    pick = _config(mine, cfg)
    if pick is None:  # no configuration reaches 0.95: time the best-recall one
        pick = best
    row = {
        "method": s["method"],
        "name": display_name(s["method"]),
        "reference": is_reference(s["method"]),
        "auc": s["auc"],
        "best_recall": s["best_recall"],
        **_interval(best, "recall", "best_recall"),
        "configs": s["configs"],
    }
    for t in THRESHOLDS:
        key, at = f"sparsity@{t:.2f}", s.get(f"config@{t:.2f}", "")
        row[key] = s[key]
        row[f"config@{t:.2f}"] = at
        row.update(_interval(_config(mine, at), "sparsity", key))
    reached = pick if cfg else None
    for metric in ("block_sparsity", "exact", "output_error"):
        row[f"{metric}@0.95"] = _get(reached, metric)
        row.update(_interval(reached, metric, f"{metric}@0.95"))
    a = by_id.get(cfg, {}) if cfg else {}
    for metric in ("accuracy", "delta_accuracy"):
        row[f"{metric}@0.95"] = _get(a, metric)
        row[f"{metric}@0.95_lo"] = _get(a, f"{metric}_lo")
        row[f"{metric}@0.95_hi"] = _get(a, f"{metric}_hi")
    row["tokens@0.95"] = _get(a, "tokens")
    layers = _get(pick, "num_layers")
    row["fit_s"] = _get(pick, "fit_s") * (1 if math.isnan(layers) else layers)
    row["predict_ms"] = 1000 * _get(pick, "predict_s")
    row["timed_config"] = pick["method_id"]
    nothing = {"speed_x_dense": math.nan, "speed_peak_mb": math.nan, "speed_case": ""}
    row.update(speed.get(s["method"], nothing))
    cost = predict_cost(s["method"])
    row["predict_cost_time"], row["predict_cost_memory"] = cost["time"], cost["memory"]
    return row


#: The predict step's declared cost (:func:`predict_cost`), text columns after the figures.
COST_COLUMNS = ("predict_cost_time", "predict_cost_memory")


def table_columns() -> list[str]:
    """The columns of :func:`leaderboard_table`, in the order of its CSV."""
    cols = ["method", "name", "reference"]
    for c in COLUMNS:
        cols += [c.key, f"{c.key}_lo", f"{c.key}_hi"] if c.interval else [c.key]
    cols += [f"config@{t:.2f}" for t in THRESHOLDS]
    return cols + ["configs", "timed_config", "speed_case", *COST_COLUMNS]


def _config(rows: pd.DataFrame, method_id: str) -> pd.Series | None:
    """The row of configuration ``method_id`` (None when it is empty or absent)."""
    if not method_id:
        return None
    hit = rows[rows["method_id"] == method_id]
    return hit.iloc[0] if len(hit) else None


def _get(row, key: str) -> float:
    """A figure of a row (a Series or a dict), NaN when absent or not a number."""
    if row is None:
        return math.nan
    v = row.get(key, math.nan)
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _interval(row, metric: str, key: str) -> dict[str, float]:
    """``{key_lo, key_hi}`` from a layer-averaged row's ``metric_lo``/``metric_hi``."""
    return {f"{key}_lo": _get(row, f"{metric}_lo"), f"{key}_hi": _get(row, f"{metric}_hi")}


def table_cells(t: pd.DataFrame) -> list[list[tuple[str, bool]]]:
    """Each row's cells for :data:`COLUMNS`: ``(text, best)``.

    ``best`` marks the column's best figure among the ranked (non-reference) rows, only where
    its interval does not overlap the runner-up's (:func:`best_position`).
    """
    ranked = [i for i, ref in enumerate(t["reference"]) if not ref] if len(t) else []
    marks: dict[str, int] = {}
    for c in COLUMNS:
        if not c.ranked or c.key not in t:
            continue
        col = t[c.key]
        lo = t.get(f"{c.key}_lo", pd.Series(math.nan, index=t.index))
        hi = t.get(f"{c.key}_hi", pd.Series(math.nan, index=t.index))
        pos = best_position(
            [col.iloc[i] for i in ranked],
            [lo.iloc[i] for i in ranked],
            [hi.iloc[i] for i in ranked],
            c.base.higher_is_better,
        )
        if pos is not None:
            marks[c.key] = ranked[pos]
    out = []
    for i in range(len(t)):
        r = t.iloc[i]
        out.append(
            [
                (
                    c.format(
                        r.get(c.key, math.nan),
                        r.get(f"{c.key}_lo", math.nan),
                        r.get(f"{c.key}_hi", math.nan),
                    ),
                    marks.get(c.key) == i,
                )
                for c in COLUMNS
            ]
        )
    return out


#: What the leaderboard's columns mean, under every table.
TABLE_NOTE = (
    "Sparsity @ recall t: the highest sparsity of a configuration whose layer-averaged "
    "recall is at least t (on the method's recall–sparsity frontier), with that "
    "configuration's interval. AUC: area under the frontier's step curve (no interval). Block "
    "sparsity, exact, output error, fit and predict time are those of the configuration "
    "reaching recall 0.95 (or, for times, its best-recall one when none does). Accuracy and Δ "
    "accuracy (against full α-entmax attention, the gold row) are those of the recall-0.95 "
    "configuration; Tokens: how many scored tokens its accuracy rests on. "
    "Time × dense and peak MB come from `sparsebench speed` (see `../speed/speed.md`): the "
    "method's leaderboard configuration as `speed --preset methods` measured it on the CPU "
    "(causal, softmax), or its fastest measured CPU case where that was not measured, at its "
    "largest measured N: predict + layout + kernel time over the best dense kernel of the same "
    "normaliser, and that case's extra peak memory; the case is in the CSV's `speed_case` "
    "column (the CSV holds each interval as "
    "`_lo`/`_hi` columns). Predict cost: the method's declared time / memory of one predict "
    "per sequence and head, in N (length), d (head dim), r (projection dim), b (block), C "
    "(clusters), k (kept per row), s (slab rows); `sparsebench methods` lists the letters. — : "
    "not reached or not measured. Reference rows are not ranked."
)


def leaderboard_markdown(t: pd.DataFrame, dataset: str, meta: str) -> str:
    """The markdown page of one dataset's table: ranked rows, best figures bold, then references."""
    titles = [c.title for c in COLUMNS]
    head = "| Method | " + " | ".join(titles) + " | Predict cost | Config @ 0.95 |"
    sep = "|---" * (len(COLUMNS) + 3) + "|"
    lines = [f"# Leaderboard: {dataset}", "", meta, "", head, sep]
    cells = table_cells(t)

    def line(i: int) -> str:
        r = t.iloc[i]
        text = " | ".join(f"**{s}**" if best else s for s, best in cells[i])
        cost = cost_cell(predict_cost(r["method"]))
        return f"| {r['name']} | {text} | {cost} | `{r.get('config@0.95') or '—'}` |"

    refs = [i for i in range(len(t)) if t["reference"].iloc[i]]
    lines += [line(i) for i in range(len(t)) if i not in refs]
    if refs:
        lines.append(f"| *reference rows* |{' |' * (len(COLUMNS) + 2)}")
        lines += [line(i) for i in refs]
    lines += ["", TABLE_NOTE, "", INTERVAL_NOTE, ""]
    return "\n".join(lines)
