"""The bodies of the catalog and report commands; :mod:`.cli` parses the arguments.

Each ``cmd_<name>(args) -> int`` takes the parsed arguments and returns the exit status; user
errors are raised (``CLIError``, ``ValueError``, ``KeyError``, ...) and printed by the CLI as
one line. Method specs (``--method``/``--param``, ``--methods "a;b:k=v"``) are parsed by
:func:`sparsebench.methods.parse_spec`, the one spec parser. The commands that write run
folders are in :mod:`.run_commands` and :mod:`.speed_command`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import textwrap
from pathlib import Path
from typing import Any

from .cli_options import check_device

__all__ = [
    "CLIError",
    "cmd_compare",
    "cmd_evaluate",
    "cmd_leaderboard",
    "cmd_methods",
    "cmd_publish",
    "cmd_show",
    "echo",
    "match_methods",
    "names_table",
    "text_table",
    "warn",
]


class CLIError(Exception):
    """A user error, printed as one line."""


#: The widest table a command prints, in columns.
TABLE_WIDTH = 100


def _fmt(x: Any) -> str:
    if x is None:
        return ""
    if isinstance(x, float):
        return "nan" if math.isnan(x) else f"{x:.4f}"
    return str(x)


def text_table(rows: list[dict], cols: list[str], *, max_colwidth: int = 40) -> str:
    """``rows`` as a plain-text table of ``cols`` at most 100 columns wide; floats to 4 places.

    The table is pandas' own text rendering, the first column (names) left-aligned and the
    others right-aligned: a cell longer than ``max_colwidth`` is shortened with ``...``, and
    columns that do not fit in :data:`TABLE_WIDTH` continue in a block below.
    """
    import pandas as pd

    if not rows:
        return "  ".join(cols) + "\n(no rows)"
    frame = pd.DataFrame([{c: _fmt(r.get(c)) for c in cols} for r in rows], columns=cols)
    return names_table(frame, max_colwidth=max_colwidth)


def names_table(frame, *, max_colwidth: int = 40) -> str:
    """A DataFrame whose first column names its rows, as text at most 100 columns wide."""
    frame = frame.set_index(frame.columns[0])
    frame.columns.name, frame.index.name = frame.index.name, None
    return frame.to_string(max_colwidth=max_colwidth, line_width=TABLE_WIDTH)


def echo(message: str) -> None:
    """Print a line of a command's output (flushed, so progress shows as it happens)."""
    print(message, flush=True)


def warn(message: str) -> None:
    """Print a warning line on stderr: ``sparsebench: warning: ...``."""
    print(f"sparsebench: warning: {message}", file=sys.stderr, flush=True)


def match_methods(pattern: str) -> list[str]:
    """The registered names ``pattern`` selects: globs separated by ``;`` (or ``,``), in order.

    Raises:
        CLIError: for a glob that matches no method, naming the closest names.
    """
    from sparsebench import methods

    known = methods.names()
    out: list[str] = []
    for item in [x.strip() for x in pattern.replace(",", ";").split(";")]:
        if not item:
            continue
        found = methods.names(item)
        if not found:
            hint = methods.suggest(item, known, otherwise="; `sparsebench methods` lists them")
            raise CLIError(f"no method matches {item!r}{hint}")
        out += [n for n in found if n not in out]
    if not out:
        raise CLIError("no method name given; give a glob such as 'sparsefinder*'")
    return out


def _method_row(name: str) -> dict[str, Any]:
    from sparsebench import methods

    cls = methods.get(name)
    return {
        "name": name,
        "params": {f.name: f.default for f in dataclasses.fields(cls)},
        "tags": {k: v for k, v in dataclasses.asdict(cls.tags).items() if v},
        "grid": cls.grid,
        "complexity": {c: cls.complexity.get(c, "?") for c in ("time", "memory")},
        "doc": (cls.__doc__ or "").strip().splitlines()[0],
    }


def _details(r: dict[str, Any]) -> str:
    """One method's name, summary, parameters, tags, predict cost and grids, in 100 columns."""
    lines = [("params:", ", ".join(f"{k}={v!r}" for k, v in r["params"].items()))]
    lines.append(("tags:", ", ".join(f"{k}={v}" for k, v in r["tags"].items())))
    cost = r["complexity"]
    lines.append(("predict cost:", f"time {cost['time']}, memory {cost['memory']}"))
    for setting, grid in r["grid"].items():
        values = "; ".join(f"{k}={list(v)}" for k, v in dict(grid).items())
        lines.append((f"grid {setting}:", values or "(the default configuration)"))
    width = max(len(label) for label, _ in lines) + 1
    out = [textwrap.fill(f"{r['name']}: {r['doc']}", TABLE_WIDTH, subsequent_indent="  ")]
    for label, text in lines:
        out.append(
            textwrap.fill(
                text,
                width=TABLE_WIDTH,
                initial_indent=f"  {label:<{width}}",
                subsequent_indent=" " * (width + 2),
                break_on_hyphens=False,
            )
        )
    return "\n".join(out)


#: The letters of the predict-cost columns (``Method.complexity``), under the methods table.
_COST_LEGEND = (
    "Predict cost per sequence and head, in N length, d head dim, r projection dim, b block,\n"
    "C clusters or buckets, k keys or clusters kept per row, s slab rows, R hash rounds,\n"
    "I k-means iterations, m k-means runs (? = not declared)."
)


def _kind(tags: dict[str, Any]) -> str:
    """``learned``, ``reference`` and ``no causal`` as they apply (one short cell)."""
    kinds = ["learned"] if tags.get("requires_fit") else []
    kinds += ["reference"] if tags.get("reference") else []
    kinds += [] if tags.get("supports_causal") else ["no causal"]
    return ", ".join(kinds)


def cmd_methods(args) -> int:
    """A table of the registered methods and their predict cost, or the details of those named."""
    rows = [_method_row(name) for name in match_methods(args.pattern)]
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    if args.pattern == "*":
        table = [
            {
                "method": r["name"],
                "kind": _kind(r["tags"]),
                "predict time": r["complexity"]["time"],
                "predict memory": r["complexity"]["memory"],
            }
            for r in rows
        ]
        print(text_table(table, list(table[0])))
        print(_COST_LEGEND)
        print("`sparsebench methods NAME` says what a method does: parameters, tags, sweep grids.")
        return 0
    print("\n\n".join(_details(r) for r in rows))
    return 0


def cmd_evaluate(args) -> int:
    """Score one configuration and print metrics averaged over layers.

    The layers are scored one after another, each by :func:`sparsebench.bench.evaluate` (the
    gold graphs shared through one cache), so a progress bar on stderr says which layer is
    being fitted or scored; the average over layers is the one ``evaluate`` takes.
    """
    from tqdm import tqdm

    from sparsebench import datasets
    from sparsebench.bench import evaluate
    from sparsebench.bench.evaluate import on_device
    from sparsebench.bench.metrics import average_layers
    from sparsebench.bench.runs import check_layers, check_split
    from sparsebench.methods import from_spec

    check_device(args.device)
    method = from_spec(args.method, args.param or ())
    data = datasets.load(args.data)
    layers = check_layers(data, None if args.layer is None else [args.layer])
    check_split(data, args.split)
    if method.learns and "train" not in data.split_names:
        raise CLIError(
            f"{method.id} learns from a 'train' split, which {args.data} lacks (its splits: "
            f"{', '.join(data.split_names)}); give a dataset with a train split"
        )
    data = on_device(data, args.device)  # once, for every layer
    per_layer: dict[int, dict] = {}
    fit_s = predict_s = 0.0
    gold_cache: dict = {}
    doing = "fitting and scoring" if method.learns else "scoring"
    bar = tqdm(total=len(layers), desc=f"evaluate {method.id}", unit="layer", file=sys.stderr)
    for layer in layers:
        bar.set_postfix_str(f"{doing} layer {layer}")
        res = evaluate(
            data,
            method,
            layers=[layer],
            split=args.split,
            batch_size=args.batch_size,
            block_size=args.block_size,
            gold_cache=gold_cache,
            device=args.device,
        )
        per_layer[layer] = res["layers"][layer]
        fit_s += res["fit_s"]
        predict_s += res["predict_s"]
        bar.update(1)
    bar.set_postfix_str("done", refresh=False)
    bar.close()
    summary = {
        "method": method.id,
        "data": data.meta.get("name", args.data),
        "layers": layers,
        **average_layers(per_layer.values()),
        "fit_s": fit_s,
        "predict_s": predict_s,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(
            text_table([{"figure": k, "value": v} for k, v in summary.items()], ["figure", "value"])
        )
    return 0


def cmd_leaderboard(args) -> int:
    """Write tables (in each ``--format``), plots and the results page from the records."""
    from sparsebench.bench.report import write_leaderboard

    kw = {}
    if args.formats:  # --format a,b --format c: one list, each checked by the report
        kw["formats"] = [f for group in args.formats for f in group.split(",")]
    for path in write_leaderboard(args.results, log=warn, **kw):
        print(f"wrote {path}")
    return 0


def cmd_publish(args) -> int:
    """Merge run folders' records into the published results and regenerate its leaderboard."""
    from pathlib import Path

    from sparsebench.bench.report import publish

    report = publish(args.runs, args.results, replace=args.replace, log=warn)
    for rel, n in report.items():
        replaced = (
            f", {n['replaced']} of another build or version replaced" if n["replaced"] else ""
        )
        print(f"{Path(args.results) / rel}: {n['added']} records added, {n['kept']} kept{replaced}")
    print(f"published into {Path(args.results).resolve()}; leaderboard regenerated")
    return 0


def cmd_show(args) -> int:
    """Draw one head of one sequence: the gold graph beside a method's prediction."""
    from sparsebench import datasets
    from sparsebench.bench.report import show
    from sparsebench.methods import from_spec

    data = datasets.load(args.data, log=echo)
    method = from_spec(args.method, args.param or ())
    out = show(data, method, layer=args.layer, head=args.head, seq=args.seq, out=args.out)
    print(f"wrote {out}")
    return 0


def cmd_compare(args) -> int:
    """Per-method differences between two runs of the same dataset builds."""
    from sparsebench.bench.report import compare_runs, format_comparison

    for run in (args.run_a, args.run_b):
        if not Path(run).is_dir():
            raise CLIError(f"{run}: no such folder; give two run or results folders")
    print(format_comparison(compare_runs(args.run_a, args.run_b, log=warn)), end="")
    return 0
