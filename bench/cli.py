"""The ``sparsebench`` command line."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path
from typing import Any

__all__ = ["main"]

_USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    KeyError,
    NotImplementedError,
    FileNotFoundError,
    RuntimeError,
)


class CLIError(Exception):
    """A user error, printed as one line."""


# -- helpers -------------------------------------------------------------------------------
def _parse_value(cls, name: str, raw: str) -> Any:
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    default = field.default
    kind = type(default) if default is not dataclasses.MISSING and default is not None else None
    try:
        if kind is bool:
            if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return raw.lower() in ("true", "1", "yes")
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
        if kind is str:
            return raw
        return json.loads(raw)
    except (ValueError, json.JSONDecodeError):
        want = kind.__name__ if kind else "a JSON value"
        raise CLIError(f"parameter {name!r} expects {want}, got {raw!r}") from None


def _method_from_args(name: str, params: list[str]):
    from sparsebench import methods

    cls = methods.get(name)
    kwargs = {}
    for item in params or []:
        if "=" not in item:
            raise CLIError(f"--param takes key=value, got {item!r}")
        key, raw = item.split("=", 1)
        methods._registry.check_params(cls, {key: None})
        kwargs[key] = _parse_value(cls, key, raw)
    return methods.create(name, **kwargs)


def _load_data(spec: str):
    from sparsebench import datasets

    return datasets.load(spec)


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return "nan" if math.isnan(x) else f"{x:.4f}"
    return str(x)


def _table(rows: list[dict], cols: list[str]) -> str:
    widths = {c: max(len(c), *(len(_fmt(r.get(c, ""))) for r in rows)) for c in cols}
    lines = ["  ".join(c.ljust(widths[c]) for c in cols)]
    lines.append("  ".join("-" * widths[c] for c in cols))
    for r in rows:
        lines.append("  ".join(_fmt(r.get(c, "")).ljust(widths[c]) for c in cols))
    return "\n".join(lines)


# -- commands ------------------------------------------------------------------------------
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
    from sparsebench.bench.evaluate import evaluate

    method = _method_from_args(args.method, args.param)
    data = _load_data(args.data)
    layers = None if args.layer is None else [args.layer]
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


def cmd_datasets(args) -> int:
    """List, build, describe or train datasets."""
    from sparsebench import datasets

    action = args.action
    if action != "list" and not args.target:
        raise CLIError(f"`sparsebench datasets {action}` needs a NAME (or a DIR for synthetic)")
    if action == "list":
        print(f"cache: {datasets.cache_root() / 'datasets'}  (set SPARSEBENCH_HOME to move it)")
        for name, (desc, _) in datasets.DATASETS.items():
            path = datasets.dataset_dir(name)
            state = "built" if (path / "card.json").exists() else "not built"
            print(f"  {name:<18} {state:<10} {desc}")
            if state == "built":
                card = datasets.QKData.load(path, verify=False).meta
                splits = ", ".join(f"{k}: {v['num_seqs']}" for k, v in card["splits"].items())
                print(
                    f"  {'':<18} {card['layers']} layers x {card['heads']} heads, "
                    f"d={card['head_dim']}, causal={card['causal']}, {splits}; gold sparsity "
                    f"per layer {card.get('gold_sparsity_per_layer', '?')}"
                )
        return 0
    if action == "build":
        path = datasets.build(args.target, args.out, log=lambda m: print(m, flush=True))
        print(f"wrote {path}")
        return 0
    if action == "info":
        data = datasets.load(args.target)
        print(json.dumps(data.meta, indent=2))
        return 0
    if action == "import-sparsefinder":
        from sparsebench.datasets.importers import import_sparsefinder

        if not args.out:
            raise CLIError("import-sparsefinder needs --out DIR for the converted dataset")
        data = import_sparsefinder(args.target, rescale_queries=args.rescale_queries)
        path = data.save(args.out)
        print(f"wrote {path} ({len(data)} sequences, causal={data.causal})")
        return 0
    if action == "train":
        from sparsebench.datasets.shakespeare import train

        train(args.target, steps=args.steps, log=lambda m: print(m, flush=True))
        return 0
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


def _method_spec(spec: str) -> tuple[str, dict]:
    """``name`` or ``name:k=v,k=v`` -> (name, params), values parsed by the field types."""
    from sparsebench import methods
    from sparsebench.bench.timing import DENSE

    name, _, rest = spec.partition(":")
    if name in DENSE:
        return name, {}
    cls = methods.get(name)
    params = {}
    for item in filter(None, rest.split(",")):
        if "=" not in item:
            raise CLIError(f"method spec {spec!r}: parameters are k=v, got {item!r}")
        key, raw = item.split("=", 1)
        methods._registry.check_params(cls, {key: None})
        params[key] = _parse_value(cls, key, raw)
    return name, params


def cmd_speed(args) -> int:
    """Wall-clock and peak memory across lengths, each case in a fresh process."""
    from sparsebench.bench.records import append_record, provenance

    lengths = [int(x) for x in args.lengths.split(",")]
    prov = provenance()
    out = Path(args.out) if args.out else Path(args.results) / "speed" / "records.jsonl"
    rows = []
    if args.suite == "gold":
        from sparsebench.bench.goldspeed import IMPLS, measure

        impls = args.methods.split(",") if args.methods else ["gold", "entmax15"]
        for impl in impls:
            if impl not in IMPLS:
                raise CLIError(f"unknown implementation {impl!r}; choose from {', '.join(IMPLS)}")
        for n in lengths:
            for impl in impls:
                if impl != "gold" and n > args.max_dense:
                    rows.append({"impl": impl, "n": n, "note": f"skipped (n > {args.max_dense})"})
                    continue
                print(f"measuring {impl} n={n} ...", file=sys.stderr, flush=True)
                rec = measure(impl, n, args.heads, args.dim, args.repeats)
                rec.update({"suite": "gold", **prov})
                rows.append(rec)
                append_record(out, rec)
        base = {
            r["n"]: r["time_min_s"]
            for r in rows
            if r.get("impl") == "entmax15" and "time_min_s" in r
        }
        for r in rows:
            if "time_min_s" in r and r["n"] in base:
                r["speedup_vs_entmax15"] = base[r["n"]] / r["time_min_s"]
        cols = [
            "impl",
            "n",
            "time_min_s",
            "time_median_s",
            "peak_extra_mb",
            "speedup_vs_entmax15",
            "note",
        ]
    else:
        from sparsebench.bench.timing import measure_case

        specs = (
            args.methods
            or "sdpa,dense_entmax,window:w=65,global_tokens=2,sparsefinder_kmeans:num_clusters=16"
        ).split(";")
        specs = [x for spec in specs for x in ([spec] if ":" in spec else spec.split(","))]
        for n in lengths:
            for spec in specs:
                name, params = _method_spec(spec)
                if name == "entmax15_full" and n > args.max_dense:
                    continue
                case = {
                    "method": name,
                    "params": params,
                    "n": n,
                    "heads": args.heads,
                    "dim": args.dim,
                    "device": args.device,
                    "normalizer": args.normalizer,
                    "path": args.path,
                    "block_size": args.block_size,
                    "repeats": args.repeats,
                }
                print(f"measuring {spec} n={n} ...", file=sys.stderr, flush=True)
                rec = measure_case(case)
                rec.update({"suite": "execute", "spec": spec, **prov})
                append_record(out, rec)
                flat = {"spec": spec, "n": n, "error": rec.get("error", "")}
                for part in ("predict", "layout", "kernel", "end_to_end"):
                    if part in rec:
                        flat[f"{part}_s"] = rec[part]["median_s"]
                flat["peak_mb"] = rec.get("peak_mb")
                flat["sparsity"] = rec.get("sparsity")
                flat["block_density"] = rec.get("block_density")
                rows.append(flat)
        dense = "sdpa" if args.normalizer == "softmax" else "dense_entmax"
        base = {
            r["n"]: r["end_to_end_s"] for r in rows if r["spec"] == dense and "end_to_end_s" in r
        }
        for r in rows:
            if "end_to_end_s" in r and r["n"] in base:
                r[f"x_{dense}"] = r["end_to_end_s"] / base[r["n"]]
        cols = [
            "spec",
            "n",
            "predict_s",
            "layout_s",
            "kernel_s",
            "end_to_end_s",
            f"x_{dense}",
            "peak_mb",
            "sparsity",
            "block_density",
            "error",
        ]
    print(_table(rows, cols))
    dev = f"{prov['device']} ({prov['cpu']})"
    print(f"device: {dev}, {prov['threads']} threads, torch {prov['torch']}")
    print(f"records appended to {out}")
    return 0


def cmd_sweep(args) -> int:
    """Run a resumable grid sweep and append records."""
    from sparsebench import datasets
    from sparsebench.bench.sweep import sweep

    data = datasets.load(args.data, log=lambda m: print(m, flush=True))
    name = data.meta.get("name", Path(args.data).name)
    out = Path(args.out) if args.out else Path(args.results) / name / "records.jsonl"
    layers = [int(x) for x in args.layers.split(",")] if args.layers else None
    res = sweep(
        data,
        out,
        dataset=name,
        methods=args.methods,
        grid=args.grid,
        layers=layers,
        executor=args.executor,
        address=args.address,
        gpus_per_task=args.gpus_per_task,
    )
    print(
        f"{res['done']} records written, {res['skipped']} already done, "
        f"{res['failed']} failed -> {out}"
    )
    return 0 if res["failed"] == 0 else 1


def cmd_accuracy(args) -> int:
    """Task accuracy with each configuration's graph replacing attention at test time."""
    from sparsebench.bench.accuracy import accuracy_sweep

    out = Path(args.results) / args.model / "accuracy.jsonl"
    windows = None if args.windows == 0 else args.windows
    res = accuracy_sweep(args.model, out, methods=args.methods, grid=args.grid, max_windows=windows)
    print(
        f"{res['done']} records written, {res['skipped']} already done, "
        f"{res['failed']} failed -> {out}"
    )
    return 0 if res["failed"] == 0 else 1


def cmd_leaderboard(args) -> int:
    """Write tables, plots and the results page from the records."""
    from sparsebench.bench.leaderboard import write_leaderboard

    for path in write_leaderboard(args.results):
        print(f"wrote {path}")
    return 0


def cmd_show(args) -> int:
    """Draw one head of one sequence: the gold graph beside a method's prediction."""
    from sparsebench import datasets
    from sparsebench.bench.show import show

    data = datasets.load(args.data, log=lambda m: print(m, flush=True))
    method = _method_from_args(args.method, args.param)
    out = show(data, method, layer=args.layer, head=args.head, seq=args.seq, out=args.out)
    print(f"wrote {out}")
    return 0


def cmd_run(args) -> int:
    """The main job: quick sweep of every method on the bundled datasets, then the leaderboard."""
    import time

    from sparsebench import datasets
    from sparsebench.bench.leaderboard import write_leaderboard
    from sparsebench.bench.sweep import sweep

    t0 = time.perf_counter()
    names = args.data or ["shakespeare-lm", "shakespeare-mlm"]
    failed = 0
    for spec in names:
        data = datasets.load(spec, log=lambda m: print(m, flush=True))
        name = data.meta.get("name", Path(spec).name)
        out = Path(args.results) / name / "records.jsonl"
        res = sweep(data, out, dataset=name, methods=args.methods, grid=args.grid)
        failed += res["failed"]
        print(f"{name}: {res['done']} records written, {res['skipped']} already done -> {out}")
        if name in ("shakespeare-lm", "shakespeare-mlm") and args.accuracy_windows > 0:
            from sparsebench.bench.accuracy import accuracy_sweep

            acc_out = Path(args.results) / name / "accuracy.jsonl"
            res = accuracy_sweep(
                name,
                acc_out,
                methods=args.methods,
                grid="default",
                max_windows=args.accuracy_windows,
            )
            failed += res["failed"]
            print(f"{name}: task accuracy of each method's default configuration -> {acc_out}")
    paths = write_leaderboard(args.results)
    for p in paths:
        if p.name == "leaderboard.md":
            print(f"\n{p}:")
            lines = p.read_text().splitlines()
            print("\n".join(lines[4:14]))
    print(
        f"\nleaderboard: {Path(args.results) / 'index.html'} "
        f"({time.perf_counter() - t0:.0f} s in all)"
    )
    return 0 if failed == 0 else 1


# -- parser --------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``sparsebench``."""
    p = argparse.ArgumentParser(
        prog="sparsebench",
        description="Benchmark attention-sparsity predictors against the gold α-entmax graph.",
    )
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("methods", help="list methods, parameters, tags and grids")
    s.add_argument("pattern", nargs="?", default="*", help="glob over method names")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_methods)

    s = sub.add_parser("evaluate", help="score one configuration on a dataset")
    s.add_argument("--data", required=True, help="dataset name or directory")
    s.add_argument("--method", required=True)
    s.add_argument("--param", action="append", metavar="K=V", help="method parameter (repeat)")
    s.add_argument("--layer", type=int, help="only this layer (default: all, averaged)")
    s.add_argument("--split", default="eval")
    s.add_argument("--batch-size", type=int, default=16)
    s.add_argument("--block-size", type=int, default=None, help="also report block sparsity")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("datasets", help="list, build, describe or train datasets")
    s.add_argument(
        "action", nargs="?", default="list", choices=["list", "build", "info", "train", "synthetic"]
    )
    s.add_argument("target", nargs="?", help="dataset name (or directory for info/synthetic)")
    s.add_argument("--out", help="build into this directory instead of the cache")
    s.add_argument("--steps", type=int, help="train: number of steps (default: the recipe's)")
    s.add_argument(
        "--rescale-queries",
        action="store_true",
        help="import: multiply q by sqrt(d) (dumps whose queries carry 1/sqrt(d))",
    )
    s.add_argument("--num-seqs", type=int, default=12)
    s.add_argument("--layers", type=int, default=2)
    s.add_argument("--heads", type=int, default=4)
    s.add_argument("--n", type=int, default=64)
    s.add_argument("--dim", type=int, default=16)
    s.add_argument("--causal", action="store_true")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_datasets)

    s = sub.add_parser("speed", help="wall-clock and peak memory across lengths")
    s.add_argument(
        "--suite",
        choices=["execute", "gold"],
        default="execute",
        help="execute: predict + sparse attention per method; gold: the gold graph",
    )
    s.add_argument("--lengths", default="512,1024,2048,4096")
    s.add_argument(
        "--methods",
        help="execute: name or name:k=v,k=v, separated by ';' "
        "(dense baselines: sdpa, dense_entmax, entmax15_full, xformers); "
        "gold: gold,entmax15,entmax15_k64",
    )
    s.add_argument("--device", default="cpu", help="cpu or cuda")
    s.add_argument("--normalizer", choices=["entmax", "softmax"], default="entmax")
    s.add_argument("--path", default="auto", choices=["auto", "block", "flex", "grouped", "dense"])
    s.add_argument("--block-size", type=int, default=128)
    s.add_argument("--heads", type=int, default=8)
    s.add_argument("--dim", type=int, default=64)
    s.add_argument("--repeats", type=int, default=3)
    s.add_argument(
        "--max-dense",
        type=int,
        default=4096,
        help="skip the package's full-matrix entmax above this n",
    )
    s.add_argument("--results", default="results", help="results folder")
    s.add_argument("--out", help="records file (default: RESULTS/speed/records.jsonl)")
    s.set_defaults(func=cmd_speed)

    s = sub.add_parser("sweep", help="a resumable grid sweep (records as JSON lines)")
    s.add_argument("--data", required=True, help="dataset name or directory")
    s.add_argument("--methods", default="*", help="glob over method names")
    s.add_argument("--grid", default="quick", help="grid setting: quick or paper")
    s.add_argument("--layers", help="comma-separated layers (default: all)")
    s.add_argument("--results", default="results", help="results folder")
    s.add_argument("--out", help="records file (default: RESULTS/<dataset>/records.jsonl)")
    s.add_argument(
        "--executor",
        choices=["local", "ray"],
        default="local",
        help="local: in this process; ray: one Ray task per layer and method",
    )
    s.add_argument("--address", help="Ray cluster address (default: start a local instance)")
    s.add_argument("--gpus-per-task", type=float, default=0, help="GPUs each Ray task requests")
    s.set_defaults(func=cmd_sweep)

    s = sub.add_parser("accuracy", help="task accuracy with predicted attention graphs")
    s.add_argument(
        "--model",
        required=True,
        choices=["shakespeare-lm", "shakespeare-mlm", "minilm-entmax"],
        help="a bundled model, or minilm-entmax (hf extra: embedding fidelity)",
    )
    s.add_argument("--methods", default="*", help="glob over method names")
    s.add_argument("--grid", default="quick", help="quick, paper, or default (one per method)")
    s.add_argument(
        "--windows",
        type=int,
        default=32,
        help="held-out windows of 512 tokens to score, or sentences for minilm-entmax (0 = all)",
    )
    s.add_argument("--results", default="results", help="results folder")
    s.set_defaults(func=cmd_accuracy)

    s = sub.add_parser("leaderboard", help="tables, plots and index.html from records")
    s.add_argument("--results", default="results", help="results folder")
    s.set_defaults(func=cmd_leaderboard)

    s = sub.add_parser("show", help="gold graph beside a method's graph, one head")
    s.add_argument("--data", required=True, help="dataset name or directory")
    s.add_argument("--method", required=True)
    s.add_argument("--param", action="append", metavar="K=V", help="method parameter (repeat)")
    s.add_argument("--layer", type=int, default=0)
    s.add_argument("--head", type=int, default=0)
    s.add_argument("--seq", type=int, default=0, help="sequence index in the eval split")
    s.add_argument("--out", help="PNG path (default: show-<data>-<method>-L<l>H<h>.png)")
    s.set_defaults(func=cmd_show)

    s = sub.add_parser("run", help="the main job on the bundled datasets")
    s.add_argument("--data", action="append", help="dataset name or directory (repeat)")
    s.add_argument("--methods", default="*", help="glob over method names")
    s.add_argument("--grid", default="quick", help="grid setting (quick or paper)")
    s.add_argument("--results", default="results", help="results folder")
    s.add_argument(
        "--accuracy-windows",
        type=int,
        default=8,
        help="held-out windows for the quick accuracy run (0 = skip it)",
    )
    s.set_defaults(func=cmd_run)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; user errors print one line and exit 2."""
    from sparsebench.datasets import DatasetError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (CLIError, DatasetError, *_USER_ERRORS) as e:
        msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
        print(f"sparsebench: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
