"""The body of ``sparsebench datasets``: list, build, describe, import, extract, train.

Split from :mod:`.commands` (the other catalog commands), whose table helpers it uses.
"""

from __future__ import annotations

import json
from pathlib import Path

from .commands import CLIError, echo, text_table

__all__ = ["cmd_datasets"]


def _list_datasets() -> None:
    from sparsebench import datasets

    print(f"cache: {datasets.cache_root() / 'datasets'}")
    rows = []
    for name, spec in datasets.DATASETS.items():
        path = datasets.dataset_dir(name)
        row = {"dataset": name, "built": "no", "shape": "", "seqs": ""}
        if (path / "card.json").exists():
            card = datasets.QKData.load(path, verify=False).meta
            row["built"] = "yes"
            row["shape"] = (
                f"{card['layers']}L x {card['heads']}H, d={card['head_dim']}, "
                f"{'causal' if card['causal'] else 'bidir'}"
            )
            row["seqs"] = ", ".join(f"{k} {v['num_seqs']}" for k, v in card["splits"].items())
        rows.append({**row, "about": spec.description})
    print(text_table(rows, list(rows[0]), max_colwidth=30))
    print("SPARSEBENCH_HOME moves the cache; `sparsebench datasets info NAME` prints a card.")


def _extract(args) -> None:
    """``datasets extract``: a Hugging Face model's queries and keys on a text file."""
    missing = [
        flag for flag, value in (("--model", args.model), ("--texts", args.texts)) if not value
    ]
    missing += ["--out DIR"] if not args.out else []
    if missing:
        raise CLIError(f"`sparsebench datasets extract` needs {' and '.join(missing)}")
    texts = Path(args.texts)
    if not texts.is_file():
        raise CLIError(f"--texts {args.texts}: no such file; give a text file, one text per line")
    from sparsebench.datasets.hf import extract_dataset

    path = extract_dataset(args.model, texts, alpha=args.alpha, out=args.out, log=echo)
    print(f"wrote {path}")


def _info(data, args) -> None:
    """``datasets info``: the card, then where the gold edges are (``--out``: files too)."""
    from sparsebench.bench.report.realism_plot import realism_markdown, realism_plot
    from sparsebench.datasets.realism import gold_statistics

    from .runs import atomic_write

    out = Path(args.out) if args.out else None
    if out is not None and out.exists() and not out.is_dir():
        raise CLIError(f"--out {args.out}: is a file; give a folder for the realism files")
    print(json.dumps(data.meta, indent=2))
    name = str(data.meta.get("name", args.target))
    split = "eval" if "eval" in data.split_names else data.split_names[-1]
    stats = gold_statistics(data, split, max_seqs=args.max_seqs)
    table = realism_markdown(stats, name)
    print()
    print(table, end="")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / "realism.json", json.dumps(stats, indent=1) + "\n")
        atomic_write(out / "realism.md", table)
        realism_plot(stats, name, out / "realism.png")
        for f in ("realism.json", "realism.md", "realism.png"):
            print(f"wrote {out / f}")


def cmd_datasets(args) -> int:
    """List, build, describe, import, extract or train datasets, or write a synthetic one."""
    from sparsebench import datasets

    action = args.action
    if action not in ("list", "extract") and not args.target:
        raise CLIError(f"`sparsebench datasets {action}` needs a NAME (or a DIR for synthetic)")
    if action == "list":
        _list_datasets()
    elif action == "extract":
        _extract(args)
    elif action == "build":
        path = datasets.build(args.target, args.out, log=echo)
        print(f"wrote {path}")
    elif action == "info":
        _info(datasets.load(args.target), args)
    elif action == "import-sparsefinder":
        from sparsebench.datasets.importers import import_sparsefinder

        if not args.out:
            raise CLIError("import-sparsefinder needs --out DIR for the converted dataset")
        data = import_sparsefinder(args.target, rescale_queries=args.rescale_queries)
        path = data.save(args.out)
        print(f"wrote {path} ({len(data)} sequences, causal={data.causal})")
    elif action == "train" and args.target == "minilm-entmax-ft":
        from sparsebench.bench.stats import macro_interval
        from sparsebench.datasets.minilm_ft import train as finetune_minilm

        path = finetune_minilm(
            steps=args.steps, interval=lambda xs: macro_interval([xs], seed=0), log=echo
        )
        print(f"wrote {path}")
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
