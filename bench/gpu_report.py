"""``gpu.md`` and ``gpu.png``: the tables and the plot of the prepared GPU benchmark.

Written beside the speed records (a run folder's ``speed/``, or ``results/speed/`` when the
leaderboard is regenerated after ``sparsebench publish``) from the records the preset wrote
(``"preset": "gpu"``), one section per GPU, the newest record of each case kept. Nothing is
written when there is no such record: no GPU figure exists that was not measured.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["gpu_markdown", "gpu_rows", "write_gpu_report"]

#: Headline ratios: (column, baseline line, line, normaliser), times baseline ÷ line.
RATIOS = (
    ("AdaSplash ÷ flex_entmax", "AdaSplash (dispatcher)", "window, flex_entmax", "entmax"),
    ("AdaSplash v1 ÷ flex_entmax", "AdaSplash v1 block mask", "window, flex_entmax", "entmax"),
    ("SDPA flash ÷ flex softmax", "SDPA flash", "window, flex", "softmax"),
)


def gpu_rows(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One flat row per case of the preset's records (the newest of each case), errors kept."""
    newest: dict[tuple, dict[str, Any]] = {}
    for r in records:
        if r.get("preset") != "gpu" or not str(r.get("device", "")).startswith("cuda"):
            continue
        key = (r["device"], r.get("label"), r.get("normalizer"), r.get("dtype"), r.get("n"))
        if key not in newest or str(r.get("date", "")) >= str(newest[key].get("date", "")):
            newest[key] = r
    rows = []
    order = sorted(newest.items(), key=lambda kv: (*map(str, kv[0][:4]), kv[0][4] or 0))
    for (device, label, norm, dtype, n), r in order:
        part = r.get("end_to_end") or {}
        causal_pairs = n * (n + 1) / 2
        sparsity = r.get("sparsity")
        rows.append(
            {
                "device": device,
                "label": label,
                "normalizer": norm,
                "dtype": dtype,
                "n": n,
                "ms": 1000 * part["median_s"] if part else math.nan,
                "kernel_ms": 1000 * r["kernel"]["median_s"] if r.get("kernel") else math.nan,
                "peak_mb": r.get("peak_mb", math.nan),
                # Sparsity within the causal triangle (the records count against N²).
                "sparsity": (
                    math.nan if sparsity is None else 1 - (1 - sparsity) * n * n / causal_pairs
                ),
                "block_density": r.get("block_density", math.nan),
                "passes": r.get("threshold_passes"),
                "error": r.get("error", ""),
                "date": r.get("date", ""),
                "git_sha": r.get("git_sha", "") + ("+changes" if r.get("git_dirty") else ""),
                "torch": r.get("torch", ""),
            }
        )
    return rows


def _fmt(x: float, digits: int = 2) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _ratio_table(rows: list[dict[str, Any]], dtype: str) -> list[str]:
    at = {(r["label"], r["normalizer"], r["n"]): r for r in rows if r["dtype"] == dtype}
    ns = sorted({r["n"] for r in rows if r["dtype"] == dtype})
    head = ["N", *[c for c, *_ in RATIOS], "kernel only: AdaSplash ÷ flex_entmax"]
    md = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for n in ns:
        cells = [str(n)]
        for _, base, line, norm in RATIOS:
            b, o = at.get((base, norm, n)), at.get((line, norm, n))
            ok = b and o and not b["error"] and not o["error"]
            cells.append(f"{b['ms'] / o['ms']:.2f}×" if ok else "—")
        b, o = at.get((RATIOS[0][1], "entmax", n)), at.get((RATIOS[0][2], "entmax", n))
        ok = b and o and not b["error"] and not o["error"]
        cells.append(f"{b['ms'] / o['kernel_ms']:.2f}×" if ok else "—")
        md.append("| " + " | ".join(cells) + " |")
    return md


def _time_table(rows: list[dict[str, Any]], dtype: str) -> list[str]:
    mine = [r for r in rows if r["dtype"] == dtype]
    ns = sorted({r["n"] for r in mine})
    lines = sorted({(r["normalizer"], r["label"]) for r in mine})
    at = {(r["normalizer"], r["label"], r["n"]): r for r in mine}
    md = [
        "| normalizer | line | " + " | ".join(f"N={n}" for n in ns) + " |",
        "|---|---|" + "---|" * len(ns),
    ]
    for norm, label in lines:
        cells = []
        for n in ns:
            r = at.get((norm, label, n))
            if r is None:
                cells.append("")
            elif r["error"]:
                cells.append("failed" if not r["error"].startswith(("skip", "stop")) else "cut")
            else:
                cells.append(f"{r['ms']:.3f} ({_fmt(r['peak_mb'], 0)})")
        md.append(f"| {norm} | {label} | " + " | ".join(cells) + " |")
    return md


def gpu_markdown(rows: list[dict[str, Any]], skipped: Sequence[tuple] = ()) -> str:
    """The page ``gpu.md`` of :func:`gpu_rows`' rows (and lines skipped for a package)."""
    md = ["# GPU speed and memory (the prepared benchmark)", ""]
    for device in sorted({r["device"] for r in rows}):
        rs = [r for r in rows if r["device"] == device]
        dates = sorted(r["date"] for r in rs if r["date"])
        # A sha with "+changes" ran a checkout with uncommitted changes on top of it.
        shas = sorted({r["git_sha"][:10] + r["git_sha"][40:] for r in rs if r["git_sha"]})
        md += [
            f"## {device}",
            "",
            f"{len(rs)} cases of `sparsebench speed --preset gpu`"
            + (f", measured {dates[0][:10]} to {dates[-1][:10]}" if dates else "")
            + (f", git {', '.join(shas)}" if shas else "")
            + f", torch {rs[0]['torch']}. Causal attention, batch 1, 16 heads of 64, block "
            "size 128. A graph's time is predict + layout + attention, a dense baseline's its "
            "kernel; median of 5 repeats after 2 warm-ups, timed by CUDA events; peak = "
            "`max_memory_allocated` above the inputs, in MB.",
            "",
            "### Headline ratios, bfloat16 (above 1: the predicted-graph path is faster)",
            "",
            *_ratio_table(rs, "bfloat16"),
            "",
        ]
        for dtype in ("bfloat16", "float32"):
            if any(r["dtype"] == dtype for r in rs):
                md += [f"### {dtype}: milliseconds (peak MB)", "", *_time_table(rs, dtype), ""]
        graphs = [r for r in rs if not math.isnan(r["sparsity"]) and not r["error"]]
        if graphs:
            md += [
                "### The graphs",
                "",
                "| line | normalizer | dtype | N | sparsity (causal) | block density | "
                "threshold passes |",
                "|---|---|---|---|---|---|---|",
                *(
                    f"| {r['label']} | {r['normalizer']} | {r['dtype']} | {r['n']} | "
                    f"{_fmt(r['sparsity'], 4)} | {_fmt(r['block_density'], 4)} | "
                    f"{r['passes'] if r['passes'] is not None else '—'} |"
                    for r in graphs
                ),
                "",
            ]
        failed = [r for r in rs if r["error"]]
        if failed:
            md += ["### Not measured", ""]
            md += [f"- {r['label']} ({r['dtype']}, N={r['n']}): {r['error']}" for r in failed]
            md.append("")
    if skipped:
        md += ["Lines skipped (package not installed; `pip install 'sparsebench[gpu]'`):", ""]
        md += [f"- {label} ({dtype}): needs {package}" for label, dtype, package in skipped]
        md.append("")
    return "\n".join(md)


def gpu_plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Time and peak memory against N (log-log), one panel row per dtype, the GPU in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if not r["error"]]
    dtypes = [d for d in ("bfloat16", "float32") if any(r["dtype"] == d for r in ok)]
    fig, axes = plt.subplots(len(dtypes), 2, figsize=(14, 5.5 * len(dtypes)), squeeze=False)
    for row, dtype in zip(axes, dtypes, strict=True):
        lines = sorted({(r["normalizer"], r["label"]) for r in ok if r["dtype"] == dtype})
        for norm, label in lines:
            pts = sorted(
                (r["n"], r["ms"], r["peak_mb"])
                for r in ok
                if (r["normalizer"], r["label"], r["dtype"]) == (norm, label, dtype)
            )
            style = "-" if norm == "entmax" else "--"
            for ax, i in ((row[0], 1), (row[1], 2)):
                # Zero or missing figures (below the measure's resolution) are not drawable on
                # a log axis: left out.
                kept = [(p[0], p[i]) for p in pts if p[i] is not None and p[i] > 0]
                if kept:
                    xs, ys = zip(*kept, strict=True)
                    ax.plot(xs, ys, style, marker="o", label=f"{label} ({norm})")
        for ax, what in ((row[0], "milliseconds"), (row[1], "peak MB above the inputs")):
            if not ax.lines:
                ax.set_axis_off()
                continue
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("sequence length N")
            ax.set_ylabel(f"{what} ({dtype})")
            ax.legend(fontsize=7)
    devices = ", ".join(sorted({r["device"] for r in rows}))
    fig.suptitle(f"{devices}: causal attention, 16 heads of 64 (solid: α-entmax, dashed: softmax)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_gpu_report(folder: str | Path, skipped: Sequence[tuple] = ()) -> list[Path]:
    """Write ``gpu.md`` and ``gpu.png`` into ``folder`` from its ``records.jsonl``.

    Returns the files written: none when the folder holds no record of the GPU preset.
    """
    from .runs import atomic_write, read_records

    folder = Path(folder)
    rows = gpu_rows(read_records(folder / "records.jsonl", keyed=False))
    if not rows:
        return []
    atomic_write(folder / "gpu.md", gpu_markdown(rows, skipped))
    written = [folder / "gpu.md"]
    if any(not r["error"] for r in rows):
        gpu_plot(rows, folder / "gpu.png")
        written.append(folder / "gpu.png")
    return written
