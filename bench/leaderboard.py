"""Leaderboard tables, plots and the static results page, generated from records only."""

from __future__ import annotations

import html
import math
import os
import platform
from pathlib import Path

import pandas as pd

from sparsebench.methods import get

from .analysis import THRESHOLDS, layer_average, load_records, pareto_frontier, summarize
from .timing import DENSE

__all__ = ["display_name", "write_leaderboard"]

_COLUMNS = [
    # (column, header, higher is better, format)
    ("sparsity@0.90", "Sparsity @ recall 0.90", True, "{:.3f}"),
    ("sparsity@0.95", "Sparsity @ recall 0.95", True, "{:.3f}"),
    ("sparsity@0.99", "Sparsity @ recall 0.99", True, "{:.3f}"),
    ("auc", "AUC", True, "{:.3f}"),
    ("best_recall", "Best recall", True, "{:.3f}"),
    ("block_sparsity@0.95", "Block sparsity @ 0.95", True, "{:.3f}"),
    ("exact@0.95", "Exact @ 0.95", True, "{:.3f}"),
    ("accuracy@0.95", "Accuracy @ 0.95", True, "{:.4f}"),
    ("delta_accuracy@0.95", "Δ accuracy @ 0.95", True, "{:+.4f}"),
    ("fit_s", "Fit s", False, "{:.2f}"),
    ("predict_ms", "Predict ms", False, "{:.1f}"),
    ("speed_x_dense", "Time × dense", False, "{:.3f}"),
    ("speed_peak_mb", "Peak MB", False, "{:.0f}"),
]


def display_name(method: str) -> str:
    """The name a table shows: the method's ``label`` when it declares one."""
    try:
        return getattr(get(method), "label", "") or method
    except KeyError:
        return method


def _is_reference(method: str) -> bool:
    try:
        return bool(get(method).tags.reference)
    except KeyError:
        return method in ("gold", "full", "topk_oracle", "random")


def speed_by_method(sp: pd.DataFrame) -> dict[str, dict]:
    """Each method's fastest measured case, relative to the best dense kernel, at its largest N.

    ``sp`` is :func:`speed_table`'s output. Returns ``{method: {"speed_x_dense", "speed_peak_mb",
    "speed_case"}}``; dense baselines are left out.
    """
    out: dict[str, dict] = {}
    if sp is None or sp.empty:
        return out
    sp = sp[sp["x_best_dense"].notna() & ~sp["spec"].isin(list(DENSE))].copy()
    sp["method"] = sp["spec"].str.split(":").str[0]
    for method, g in sp.groupby("method"):
        at = g[g["n"] == g["n"].max()]
        r = at.loc[at["x_best_dense"].idxmin()]
        out[str(method)] = {
            "speed_x_dense": float(r["x_best_dense"]),
            "speed_peak_mb": float(r["peak_mb"]),
            "speed_case": (
                f"{r['spec']} ({r['normalizer']}, {r['device']}, {r['path']} path, N={int(r['n'])})"
            ),
        }
    return out


def _table(
    summary: pd.DataFrame,
    avg: pd.DataFrame,
    acc: pd.DataFrame | None = None,
    speed: dict[str, dict] | None = None,
) -> pd.DataFrame:
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
            "reference": _is_reference(s["method"]),
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


def _markdown(t: pd.DataFrame, dataset: str, meta: str) -> str:
    head = (
        "| Method | "
        + " | ".join(f"{h} {'↑' if up else '↓'}" for _, h, up, _ in _COLUMNS)
        + " | Config @ 0.95 |"
    )
    sep = "|---" * (len(_COLUMNS) + 2) + "|"
    lines = [f"# Leaderboard: {dataset}", "", meta, "", head, sep]
    ranked = t[~t["reference"]]
    best = {
        c: (ranked[c].max() if up else ranked[c].min())
        for c, _, up, _ in _COLUMNS
        if c in ranked and ranked[c].notna().any()
    }

    def cells(r, bold: bool) -> str:
        out = []
        for c, _, _, fmt in _COLUMNS:
            v = r.get(c, math.nan)
            if v is None or (isinstance(v, float) and math.isnan(v)):
                out.append("—")
                continue
            s = fmt.format(v)
            out.append(f"**{s}**" if bold and c in best and v == best[c] else s)
        return " | ".join(out)

    for _, r in ranked.iterrows():
        lines.append(f"| {r['name']} | {cells(r, True)} | `{r.get('config@0.95') or '—'}` |")
    refs = t[t["reference"]]
    if len(refs):
        lines.append(f"| *reference rows* |{' |' * (len(_COLUMNS) + 1)}")
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


def _pareto_plot(front: pd.DataFrame, avg: pd.DataFrame, dataset: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid")
    fig, ax = plt.subplots(figsize=(9, 6))
    f = front.copy()
    f["name"] = f["method"].map(display_name)
    sns.lineplot(
        data=f,
        x="sparsity",
        y="recall",
        hue="name",
        style="name",
        markers=True,
        dashes=False,
        sort=True,
        ax=ax,
        estimator=None,
    )
    gold = float(avg["gold_sparsity"].mean())
    ax.axvline(gold, color="black", ls="--", lw=1)
    ax.annotate(
        f"gold graph sparsity {gold:.3f}\n(no method passes it at recall 1)",
        (gold, 0.02),
        xytext=(-8, 0),
        textcoords="offset points",
        ha="right",
        fontsize=8,
    )
    ax.set_xlim(max(0.0, min(0.5, f["sparsity"].min() - 0.02)), 1.0)
    ax.set_ylim(0, 1.02)
    ax.set_title(f"{dataset}: recall against sparsity (Pareto frontier of each method)")
    ax.legend(fontsize=8, loc="lower left", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _accuracy_plot(acc: pd.DataFrame, avg: pd.DataFrame, dataset: str, path: Path) -> bool:
    """Task accuracy against graph sparsity, one line per method; False if nothing to draw."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    j = acc.merge(avg[["method_id", "sparsity", "recall"]], on="method_id", how="inner")
    if j.empty:
        return False
    j["name"] = j["method"].map(display_name)
    sns.set_theme(style="whitegrid")
    fig, ax = plt.subplots(figsize=(9, 6))
    # One point per configuration (a method's configurations do not form a curve).
    sns.scatterplot(
        data=j.sort_values("sparsity"),
        x="sparsity",
        y="accuracy",
        hue="name",
        style="name",
        s=22,
        alpha=0.7,
        ax=ax,
    )
    gold = acc[acc["method"] == "gold"]
    if len(gold):
        ax.axhline(float(gold["accuracy"].iloc[0]), color="black", ls="--", lw=1)
        ax.annotate(
            "full α-entmax attention",
            (0.01, float(gold["accuracy"].iloc[0])),
            xycoords=("axes fraction", "data"),
            xytext=(0, 4),
            textcoords="offset points",
            fontsize=8,
        )
    task = acc["task"].iloc[0] if "task" in acc else "task"
    what = "embedding cosine" if task == "embedding-fidelity" else f"{task} accuracy"
    ax.set_ylabel("cosine to full-attention embedding" if "cosine" in what else "accuracy")
    ax.set_title(f"{dataset}: {what} with the predicted graph replacing attention")
    ax.legend(fontsize=8, loc="lower left", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _html(sections: list, meta: str, speed_imgs: list[str] | None = None) -> str:
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>sparsebench results</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1400px}"
        "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;"
        "padding:3px 6px;text-align:right}th{cursor:pointer;background:#f3f3f3}"
        "td:first-child,th:first-child{text-align:left}tr.ref{color:#666;font-style:italic}"
        "img{max-width:100%}</style>",
        "<script>function srt(t,c){const b=t.tBodies[0];const r=[...b.rows];const d=t.dataset"
        ".d==c?-1:1;t.dataset.d=d==1?c:'';r.sort((x,y)=>{const a=x.cells[c].dataset.v??x.cells"
        "[c].textContent,z=y.cells[c].dataset.v??y.cells[c].textContent;const p=parseFloat(a),"
        "q=parseFloat(z);return (isNaN(p)||isNaN(q)?a.localeCompare(z):p-q)*d});r.forEach(e=>"
        "b.appendChild(e))}</script></head><body><h1>sparsebench results</h1>",
        f"<p>{html.escape(meta)}</p><p>Click a column header to sort.</p>",
    ]
    for dataset, t, img in sections:
        parts.append(f"<h2>{html.escape(dataset)}</h2><table><thead><tr>")
        cols = ["name"] + [c for c, *_ in _COLUMNS] + ["config@0.95"]
        heads = (
            ["Method"]
            + [f"{h} {'↑' if up else '↓'}" for _, h, up, _ in _COLUMNS]
            + ["Config @ 0.95"]
        )
        for i, h in enumerate(heads):
            parts.append(f"<th onclick='srt(this.closest(\"table\"),{i})'>{html.escape(h)}</th>")
        parts.append("</tr></thead><tbody>")
        for _, r in t.iterrows():
            parts.append(f"<tr class='{'ref' if r['reference'] else ''}'>")
            for c in cols:
                v = r.get(c, "")
                if isinstance(v, float):
                    text = "—" if math.isnan(v) else f"{v:.3f}"
                    parts.append(f"<td data-v='{'' if math.isnan(v) else v}'>{text}</td>")
                else:
                    parts.append(f"<td>{html.escape(str(v or '—'))}</td>")
            parts.append("</tr>")
        parts.append("</tbody></table>")
        for src in img:
            parts.append(f"<p><img src='{html.escape(src)}' alt='{html.escape(src)}'></p>")
    if speed_imgs:
        parts.append("<h2>Speed and memory</h2><p>Table: <a href='speed/speed.md'>speed.md</a></p>")
        parts += [f"<p><img src='{html.escape(i)}' alt='speed'></p>" for i in speed_imgs]
    parts.append("</body></html>")
    return "\n".join(parts)


def speed_table(records: pd.DataFrame) -> pd.DataFrame:
    """End-to-end time and peak memory per (normalizer, method spec, n).

    Adds the ratio to the best dense kernel of the same normaliser and the crossover length:
    the smallest n from which the method beats that kernel at every larger measured n.
    """
    ok = records[records.get("error", pd.Series([None] * len(records))).isna()].copy()
    if ok.empty:
        return ok
    ok["time_s"] = ok["end_to_end"].map(lambda d: d["median_s"])
    ok["spread_s"] = ok["end_to_end"].map(lambda d: d["iqr_s"])
    ok["normalizer"] = ok.get("normalizer", "entmax")
    ok["device"] = ok.get("device", "cpu")
    # A method's cases differ by execution path too (dense baselines ignore it).
    ok["path"] = ok["path"].fillna("auto") if "path" in ok else "auto"
    if "block_size" in ok:  # layouts at different block sizes are different cases
        laid = ok["path"].isin(["block", "flex"]) & ok["block_size"].notna()
        ok.loc[laid, "path"] = (
            ok.loc[laid, "path"] + " b=" + ok.loc[laid, "block_size"].map(lambda b: str(int(b)))
        )
    ok.loc[ok["spec"].isin(list(DENSE)), "path"] = ""
    # The newest run of each case wins.
    ok = ok.sort_values("date").groupby(["device", "normalizer", "spec", "path", "n"]).tail(1)
    rows = []
    for (device, norm), g in ok.groupby(["device", "normalizer"]):
        dense = ["sdpa", "xformers"] if norm == "softmax" else ["dense_entmax", "entmax15_full"]
        best = g[g["spec"].isin(dense)].groupby("n")["time_s"].min()
        for (spec, path), s in g.groupby(["spec", "path"]):
            s = s.sort_values("n")
            beats = [
                n
                for n, t in zip(s["n"], s["time_s"], strict=True)
                if n in best.index and t < best[n]
            ]
            cross = math.nan
            for n in s["n"]:
                later = [m for m in s["n"] if m >= n and m in best.index]
                if later and all(m in beats for m in later):
                    cross = float(n)
                    break
            for _, r in s.iterrows():
                rows.append(
                    {
                        "device": device,
                        "normalizer": norm,
                        "spec": spec,
                        "path": path,
                        "n": r["n"],
                        "time_s": r["time_s"],
                        "spread_s": r["spread_s"],
                        "peak_mb": r.get("peak_mb", math.nan),
                        "x_best_dense": r["time_s"] / best[r["n"]]
                        if r["n"] in best.index
                        else math.nan,
                        "sparsity": r.get("sparsity", math.nan),
                        "block_density": r.get("block_density", math.nan),
                        "crossover_n": math.nan if spec in dense else cross,
                        "source": r.get("source", ""),
                        "date": r.get("date", ""),
                        "git_sha": r.get("git_sha", ""),
                    }
                )
    return pd.DataFrame(rows)


def _speed_plot(t: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid")
    t = t.copy()
    t["case"] = (
        t["spec"]
        + " ("
        + t["normalizer"]
        + ", "
        + t["device"]
        + t["path"].map(lambda p: f", {p}" if p else "")
        + ")"
    )
    # Peaks below the resolution of the RSS measure read 0: not drawable on a log axis.
    t["peak_mb"] = t["peak_mb"].where(t["peak_mb"] > 0)
    fig, axes = plt.subplots(1, 2, figsize=(14, 6))
    for ax, col, label in (
        (axes[0], "time_s", "end-to-end seconds (predict + layout + kernel)"),
        (axes[1], "peak_mb", "peak extra memory (MB)"),
    ):
        sns.lineplot(
            data=t,
            x="n",
            y=col,
            hue="case",
            style="case",
            markers=True,
            dashes=False,
            estimator=None,
            ax=ax,
        )
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length N")
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
    fig.suptitle("Time and memory against sequence length (log-log), dense baselines included")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_leaderboard(results: str | os.PathLike = "results") -> list[Path]:
    """Write tables, plots, the index page and the README of ``results/`` from its records."""
    results = Path(results)
    graph_records = {
        p.parent / "records.jsonl"
        for p in results.glob("*/records.jsonl*")
        if p.parent.name != "speed"
    }
    df = load_records(sorted(graph_records))
    if df.empty:
        raise ValueError(f"no records under {results}/*/records.jsonl; run `sparsebench sweep`")
    written: list[Path] = []
    sections = []
    dates = pd.to_datetime(df["date"], errors="coerce") if "date" in df else None
    machine = ", ".join(sorted(set(df.get("device", pd.Series(["?"])).astype(str))))
    cpu = ", ".join(sorted(set(df.get("cpu", pd.Series(["?"])).astype(str))))
    span = (
        f"{dates.min():%Y-%m-%d} to {dates.max():%Y-%m-%d}"
        if dates is not None and dates.notna().any()
        else "unknown dates"
    )
    meta = (
        f"Generated by `sparsebench leaderboard` from {len(df)} records; device {machine} "
        f"({cpu}); records dated {span}; git {', '.join(sorted(set(df['git_sha'].str[:10])))}"
        if "git_sha" in df
        else f"Generated from {len(df)} records."
    )
    speed_path = results / "speed" / "records.jsonl"
    sp = speed_table(load_records(speed_path)) if speed_path.exists() else pd.DataFrame()
    speed = speed_by_method(sp)
    for dataset, part in df.groupby("dataset", sort=True):
        avg = layer_average(part)
        summary = summarize(avg, THRESHOLDS)
        folder = results / str(dataset)
        acc_path = folder / "accuracy.jsonl"
        acc = load_records(acc_path) if acc_path.exists() else None
        note = ""
        if acc is not None and "cosine" in acc and "accuracy" not in acc:
            # Encoders without a task head report embedding fidelity in the accuracy columns.
            acc = acc.rename(columns={"cosine": "accuracy", "delta_cosine": "delta_accuracy"})
            note = (
                "\nAccuracy columns hold embedding fidelity: the mean cosine similarity of "
                "held-out sentence embeddings with the predicted graph against full attention.\n"
            )
        if acc is not None and not acc.empty and "windows" in acc and "split" in acc:
            # Runs over different numbers of held-out windows are not comparable: use the run
            # with the most configurations (the most windows among equals).
            size = acc.groupby("split").agg(n=("method_id", "nunique"), w=("windows", "max"))
            acc = acc[acc["split"] == size.sort_values(["n", "w"]).index[-1]]
        table = _table(summary, avg, acc, speed)
        folder.mkdir(parents=True, exist_ok=True)
        md = folder / "leaderboard.md"
        _atomic_write(md, _markdown(table, str(dataset), meta + note))
        csv = folder / "leaderboard.csv"
        _atomic_write(csv, table.to_csv(index=False))
        full = folder / "configs.csv"
        _atomic_write(full, avg.dropna(axis=1, how="all").to_csv(index=False))
        png = folder / "pareto.png"
        _pareto_plot(pareto_frontier(avg), avg, str(dataset), png)
        written += [md, csv, full, png]
        imgs = [f"{dataset}/pareto.png"]
        if (
            acc is not None
            and not acc.empty
            and _accuracy_plot(acc, avg, str(dataset), folder / "accuracy.png")
        ):
            written.append(folder / "accuracy.png")
            imgs.append(f"{dataset}/accuracy.png")
        sections.append((str(dataset), table, imgs))
    speed_imgs = []
    if not sp.empty:
        _atomic_write(results / "speed" / "speed.csv", sp.to_csv(index=False))
        dates = pd.to_datetime(sp["date"], errors="coerce", utc=True)
        shas = sorted({str(x)[:10] for x in sp["git_sha"] if isinstance(x, str) and x})
        md = [
            "# Speed and memory",
            "",
            f"Generated by `sparsebench leaderboard` from the newest record of each of {len(sp)} "
            f"cases in `records.jsonl`"
            + (
                f", measured {dates.min():%Y-%m-%d} to {dates.max():%Y-%m-%d}"
                if dates.notna().any()
                else ""
            )
            + (f", git {', '.join(shas)}" if shas else "")
            + ".",
            "",
            "| device | normalizer | method | path | N | end-to-end s ↓ | × best dense ↓ | "
            "peak MB ↓ | sparsity | block density | crossover N |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for _, r in sp.iterrows():
            cells = [
                r["device"],
                r["normalizer"],
                f"`{r['spec']}`",
                r["path"] or "—",
                str(int(r["n"])),
                f"{r['time_s']:.4f} ± {r['spread_s']:.4f}",
                *(
                    ("—" if pd.isna(r[c]) else f"{r[c]:.3f}")
                    for c in ("x_best_dense", "peak_mb", "sparsity", "block_density")
                ),
                "—" if pd.isna(r["crossover_n"]) else str(int(r["crossover_n"])),
            ]
            md.append("| " + " | ".join(cells) + " |")
        md += [
            "",
            "End-to-end = predict + block layout + attention kernel, median of "
            "repeats (± interquartile range), each case in a fresh process. Crossover N: "
            "the smallest measured N from which the method is faster than the best dense "
            "kernel of the same normaliser at every larger measured N.",
            "",
        ]
        _atomic_write(results / "speed" / "speed.md", "\n".join(md))
        _speed_plot(sp, results / "speed" / "speed.png")
        written += [results / "speed" / "speed.md", results / "speed" / "speed.png"]
        speed_imgs.append("speed/speed.png")
    index = results / "index.html"
    _atomic_write(index, _html(sections, meta, speed_imgs))
    readme = results / "README.md"
    _atomic_write(readme, _readme(sections, meta))
    return [*written, index, readme]


def _readme(sections, meta: str) -> str:
    lines = [
        "# results/",
        "",
        "Generated by `sparsebench leaderboard` from the records in `<dataset>/records.jsonl`; "
        "never edited by hand.",
        "",
        meta + f". Host: {platform.machine()}.",
        "",
        "| file | what |",
        "|---|---|",
        "| `<dataset>/records.jsonl` | one JSON record per (method configuration, layer): "
        "metrics, parameters, provenance (git sha, versions, device, date, seed, times) |",
        "| `<dataset>/leaderboard.md`, `.csv` | methods ranked by sparsity at recall 0.95, then "
        "AUC; reference rows apart |",
        "| `<dataset>/configs.csv` | every configuration, metrics averaged over layers |",
        "| `<dataset>/pareto.png` | recall against sparsity, each method's frontier |",
        "| `<dataset>/accuracy.jsonl`, `accuracy.png` | task accuracy with each configuration's "
        "graph replacing attention in the bundled model (`sparsebench accuracy`) |",
        "| `index.html` | all tables (sortable) and plots on one page |",
        "| `gold_speed.jsonl` | gold graph against dense entmax15, time and extra peak memory "
        "(`sparsebench speed --suite gold --lengths 4096,16384 --methods "
        "gold,entmax15,entmax15_k64 --out results/gold_speed.jsonl`) |",
        "| `speed/records.jsonl` | predict, layout, kernel and end-to-end time and peak memory "
        "per method and length (`sparsebench speed`) |",
        "",
        "Comparison rules: every method is scored on the same evaluation split of the same "
        "dataset against the same gold α-entmax graph; learned methods fit on the training split "
        "only; metrics are averaged per sequence, then over heads, then over layers; a "
        "configuration counts only with all its layers present.",
        "",
        "Datasets: " + ", ".join(f"[{d}]({d}/leaderboard.md)" for d, _, _ in sections) + ".",
        "",
    ]
    return "\n".join(lines)
