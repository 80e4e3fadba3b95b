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
from typing import Any

__all__ = [
    "CLIError",
    "cmd_datasets",
    "cmd_evaluate",
    "cmd_leaderboard",
    "cmd_methods",
    "cmd_publish",
    "cmd_show",
    "echo",
    "text_table",
    "warn",
]


class CLIError(Exception):
    """A user error, printed as one line."""


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return "nan" if math.isnan(x) else f"{x:.4f}"
    return str(x)


def text_table(rows: list[dict], cols: list[str]) -> str:
    """``rows`` as a plain-text table of ``cols``, left-aligned; floats to four places."""
    widths = {c: max(len(c), *(len(_fmt(r.get(c, ""))) for r in rows)) for c in cols}
    lines = ["  ".join(c.ljust(widths[c]) for c in cols)]
    lines.append("  ".join("-" * widths[c] for c in cols))
    for r in rows:
        lines.append("  ".join(_fmt(r.get(c, "")).ljust(widths[c]) for c in cols))
    return "\n".join(lines)


def echo(message: str) -> None:
    """Print a line of a command's output (flushed, so progress shows as it happens)."""
    print(message, flush=True)


def warn(message: str) -> None:
    """Print a warning line on stderr: ``sparsebench: warning: ...``."""
    print(f"sparsebench: warning: {message}", file=sys.stderr, flush=True)


def cmd_methods(args) -> int:
    """List registered methods with parameters, tags and grids."""
    from sparsebench import methods

    rows = []
    for name in methods.names(args.pattern):
        cls = methods.get(name)
        params = {f.name: f.default for f in dataclasses.fields(cls)}
        tags = {k: v for k, v in dataclasses.asdict(cls.tags).items() if v}
        rows.append(
            {
                "name": name,
                "params": params,
                "tags": tags,
                "grid": cls.grid,
                "doc": (cls.__doc__ or "").strip().splitlines()[0],
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    for r in rows:
        print(f"{r['name']}: {r['doc']}")
        print(f"  params: {', '.join(f'{k}={v!r}' for k, v in r['params'].items())}")
        print(f"  tags:   {', '.join(f'{k}={v}' for k, v in r['tags'].items())}")
        for setting, grid in r["grid"].items():
            print(f"  grid {setting}: {dict(grid)}")
    return 0


def cmd_evaluate(args) -> int:
    """Score one configuration and print metrics averaged over layers."""
    from sparsebench import datasets
    from sparsebench.bench import evaluate
    from sparsebench.bench.runs import check_layers, check_split
    from sparsebench.methods import from_spec

    method = from_spec(args.method, args.param or ())
    data = datasets.load(args.data)
    layers = None if args.layer is None else check_layers(data, [args.layer])
    check_split(data, args.split)
    res = evaluate(
        data,
        method,
        layers=layers,
        split=args.split,
        batch_size=args.batch_size,
        block_size=args.block_size,
    )
    summary = {
        "method": method.id,
        "data": data.meta.get("name", args.data),
        "layers": list(res["layers"]),
        **res["metrics"],
        "fit_s": res["fit_s"],
        "predict_s": res["predict_s"],
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for key, value in summary.items():
            print(f"{key:>20}: {_fmt(value)}")
    return 0


def _list_datasets() -> None:
    from sparsebench import datasets

    print(f"cache: {datasets.cache_root() / 'datasets'}  (set SPARSEBENCH_HOME to move it)")
    for name, spec in datasets.DATASETS.items():
        path = datasets.dataset_dir(name)
        state = "built" if (path / "card.json").exists() else "not built"
        print(f"  {name:<18} {state:<10} {spec.description}")
        if state == "built":
            card = datasets.QKData.load(path, verify=False).meta
            splits = ", ".join(f"{k}: {v['num_seqs']}" for k, v in card["splits"].items())
            print(
                f"  {'':<18} {card['layers']} layers x {card['heads']} heads, "
                f"d={card['head_dim']}, causal={card['causal']}, {splits}; gold sparsity "
                f"per layer {card.get('gold_sparsity_per_layer', '?')}"
            )


def cmd_datasets(args) -> int:
    """List, build, describe, import or train datasets, or write a synthetic one."""
    from sparsebench import datasets

    action = args.action
    if action != "list" and not args.target:
        raise CLIError(f"`sparsebench datasets {action}` needs a NAME (or a DIR for synthetic)")
    if action == "list":
        _list_datasets()
    elif action == "build":
        path = datasets.build(args.target, args.out, log=echo)
        print(f"wrote {path}")
    elif action == "info":
        print(json.dumps(datasets.load(args.target).meta, indent=2))
    elif action == "import-sparsefinder":
        from sparsebench.datasets.importers import import_sparsefinder

        if not args.out:
            raise CLIError("import-sparsefinder needs --out DIR for the converted dataset")
        data = import_sparsefinder(args.target, rescale_queries=args.rescale_queries)
        path = data.save(args.out)
        print(f"wrote {path} ({len(data)} sequences, causal={data.causal})")
    elif action == "train":
        from sparsebench.datasets.shakespeare import train

        train(args.target, steps=args.steps, log=echo)
    else:
        data = datasets.synthetic(
            num_seqs=args.num_seqs,
            layers=args.layers,
            heads=args.heads,
            n=args.n,
            d=args.dim,
            causal=args.causal,
            seed=args.seed,
        )
        path = data.save(args.target)
        print(
            f"wrote synthetic dataset ({len(data)} sequences, {data.num_layers} layers, "
            f"{data.num_heads} heads, n<={args.n}) to {path}"
        )
    return 0


def cmd_leaderboard(args) -> int:
    """Write tables, plots and the results page from the records."""
    from sparsebench.bench.report import write_leaderboard

    for path in write_leaderboard(args.results, log=warn):
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
