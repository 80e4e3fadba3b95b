"""Speed and memory tables from the records of ``sparsebench speed``.

Records of ``speed --preset methods`` name the role of their configuration (``config_role``:
``leaderboard``, ``default`` or both); the tables carry it as ``role``, and the leaderboards'
speed columns take each method's leaderboard configuration where one was measured.
"""

from __future__ import annotations

import math

import pandas as pd

from ..speed import DENSE
from ..speed_cases import DENSE_ENTMAX, DENSE_SOFTMAX

__all__ = ["speed_by_method", "speed_markdown", "speed_table"]

#: Configuration roles in the order the tables write them.
_ROLES = ("leaderboard", "default")


def _roles(records: pd.DataFrame) -> dict[str, str]:
    """Each spec's configuration roles over all its records (``leaderboard+default`` for both).

    A spec keeps its roles when a later run of it (outside the preset) names none.
    """
    found: dict[str, set[str]] = {}
    if "config_role" not in records:
        return {}
    for spec, role in zip(records["spec"], records["config_role"], strict=True):
        if isinstance(role, str) and role != "dense baseline":
            found.setdefault(spec, set()).update(role.split("+"))
    return {
        spec: "+".join(sorted(roles, key=lambda r: (_ROLES + (r,)).index(r)))
        for spec, roles in found.items()
    }


def speed_table(records: pd.DataFrame) -> pd.DataFrame:
    """End-to-end time and peak memory per (normalizer, method spec, n).

    Adds the ratio to the best dense kernel of the same normaliser and the crossover length:
    the smallest n from which the method beats that kernel at every larger measured n.
    Longer than most functions: one pass that labels the cases, keeps each case's newest run and
    builds the rows with their ratios and crossover, kept together so the rules read in order.
    """
    ok = records[records.get("error", pd.Series([None] * len(records))).isna()].copy()
    if ok.empty:
        return ok
    ok["time_s"] = ok["end_to_end"].map(lambda d: d["median_s"])
    ok["spread_s"] = ok["end_to_end"].map(lambda d: d["iqr_s"])
    ok["normalizer"] = ok.get("normalizer", "entmax")
    ok["device"] = ok.get("device", "cpu")
    if "dtype" in ok:  # half-precision cases are compared among themselves
        half = ok["dtype"].fillna("float32") != "float32"
        ok.loc[half, "device"] = ok.loc[half, "device"] + " " + ok.loc[half, "dtype"]
    if "causal" in ok:  # so are causal ones
        ok.loc[ok["causal"].eq(True), "device"] += " causal"
    # A method's cases differ by execution path too (dense baselines ignore it).
    ok["path"] = ok["path"].fillna("auto") if "path" in ok else "auto"
    if "block_size" in ok:  # layouts at different block sizes are different cases
        laid = ok["path"].isin(["block", "flex", "flex_entmax"]) & ok["block_size"].notna()
        ok.loc[laid, "path"] = (
            ok.loc[laid, "path"] + " b=" + ok.loc[laid, "block_size"].map(lambda b: str(int(b)))
        )
    ok.loc[ok["spec"].isin(list(DENSE)), "path"] = ""
    roles = _roles(ok)
    # The newest run of each case wins.
    ok = ok.sort_values("date").groupby(["device", "normalizer", "spec", "path", "n"]).tail(1)
    rows = []
    for (device, norm), g in ok.groupby(["device", "normalizer"]):
        dense = list(DENSE_SOFTMAX if norm == "softmax" else DENSE_ENTMAX)
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
                        "role": roles.get(spec, ""),
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


def speed_by_method(sp: pd.DataFrame) -> dict[str, dict]:
    """Each method's CPU speed for the leaderboards: its leaderboard configuration where measured.

    ``sp`` is :func:`speed_table`'s output. For a method with cases of its leaderboard
    configuration (``role`` holds ``leaderboard``; of several such specs, the one measured last),
    those cases; otherwise every case of the method. Of them, the fastest relative to the best
    dense kernel at their largest N. Returns ``{method: {"speed_x_dense", "speed_peak_mb",
    "speed_case"}}``; dense baselines are left out. The leaderboards are measured on the CPU, so
    their speed column is too: GPU cases have their own page (``speed/gpu.md``).
    """
    out: dict[str, dict] = {}
    if sp is None or sp.empty:
        return out
    cpu = sp["device"].astype(str).str.startswith("cpu")
    sp = sp[cpu & sp["x_best_dense"].notna() & ~sp["spec"].isin(list(DENSE))].copy()
    sp["method"] = sp["spec"].str.split(":").str[0]
    role = sp["role"] if "role" in sp else pd.Series("", index=sp.index)
    sp["leaderboard"] = role.fillna("").astype(str).str.split("+").map(lambda r: _ROLES[0] in r)
    for method, g in sp.groupby("method"):
        board = g[g["leaderboard"]]
        if not board.empty:
            dates = board["date"].astype(str) if "date" in board else board["spec"].map(str)
            g = board[board["spec"] == board.loc[dates.sort_values().index[-1], "spec"]]
        at = g[g["n"] == g["n"].max()]
        r = at.loc[at["x_best_dense"].idxmin()]
        config = "; leaderboard config" if r["leaderboard"] else ""
        out[str(method)] = {
            "speed_x_dense": float(r["x_best_dense"]),
            "speed_peak_mb": float(r["peak_mb"]),
            "speed_case": (
                f"{r['spec']} ({r['normalizer']}, {r['device']}, {r['path']} path, "
                f"N={int(r['n'])}{config})"
            ),
        }
    return out


def speed_markdown(sp: pd.DataFrame) -> str:
    """The page ``speed/speed.md``: every case of :func:`speed_table` with its provenance."""
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
        "peak MB ↓ | sparsity | block density | crossover N | config |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
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
            str(r.get("role") or "—").replace("+", " = "),
        ]
        md.append("| " + " | ".join(cells) + " |")
    md += [
        "",
        "End-to-end = predict + block layout + attention kernel, median of "
        "repeats (± interquartile range), each case in a fresh process. Crossover N: "
        "the smallest measured N from which the method is faster than the best dense "
        "kernel of the same normaliser at every larger measured N. Config: the role of the "
        "configuration in `sparsebench speed --preset methods` (leaderboard: the one the "
        "leaderboard reports, at recall 0.95 on the bundled LM or the default where none "
        "reaches it; default: the method's defaults; leaderboard = default: both).",
        "",
    ]
    return "\n".join(md)
