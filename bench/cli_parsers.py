"""The subcommand parsers of ``sparsebench``: one flat list of arguments per subcommand.

Each subcommand is added through :class:`~.cli_options.Subcommands`, which requires a one-line
summary, a description and at least one example, so that every ``sparsebench CMD --help``
says what the command does, shows each option's default and ends with a command to copy. The
functions here only declare arguments; the command bodies are in :mod:`.commands`,
:mod:`.run_commands` and :mod:`.speed_command`.
"""

from __future__ import annotations

from collections.abc import Callable

from .cli_options import (
    METHODS_HELP,
    Subcommands,
    count,
    count_or_zero,
    device_option,
    gpu_count,
    index,
    layer_list,
    length_list,
    run_folder_options,
)

__all__ = ["add_catalog", "add_runs", "add_speed"]


def add_catalog(sub: Subcommands, cmds: dict[str, Callable]) -> None:
    """Parsers of ``methods`` and ``datasets``.

    One flat list of arguments per subcommand, so it reads as a table and holds no logic.
    """
    s = sub.add(
        "methods",
        cmds["methods"],
        summary="list methods, or show their parameters, tags and grids",
        description="Without NAME: a table of every registered method. With NAME (a glob, or "
        "globs separated by ';'): each matching method's parameters, tags and sweep grids. "
        "A NAME that matches nothing is an error with the closest names.",
        examples=["sparsebench methods", "sparsebench methods 'sparsefinder*'"],
    )
    s.add_argument("pattern", nargs="?", default="*", metavar="NAME", help="glob over names")
    s.add_argument("--json", action="store_true", help="everything as JSON")

    actions = ["list", "build", "info", "import-sparsefinder", "train", "synthetic", "extract"]
    s = sub.add(
        "datasets",
        cmds["datasets"],
        summary="list, build, describe, import, extract or train datasets",
        description="Datasets are per-layer queries and keys of real sequences, with a card. "
        "list: the named datasets and whether they are built (the cache is "
        "$SPARSEBENCH_HOME/datasets). build NAME: extract a named dataset. info NAME|DIR: its "
        "card and where its gold edges are (per layer: sparsity, support size, share near the "
        "diagonal and on the first token, entropy; --out DIR also writes realism.json, .md and "
        ".png there). import-sparsefinder DUMP.pt --out DIR: convert a Sparsefinder dump. "
        "train NAME: train a bundled model. synthetic DIR: a small seeded dataset. extract: "
        "queries and keys of a Hugging Face model (encoder or decoder) on a text file, one "
        "text a line (needs the hf extra; the model must be a local path or already downloaded).",
        examples=[
            "sparsebench datasets",
            "sparsebench datasets build shakespeare-lm",
            "sparsebench datasets info shakespeare-lm --out results/shakespeare-lm",
            "sparsebench datasets synthetic data/syn --n 128 --causal",
            "sparsebench datasets extract --model gpt2 --texts lines.txt --alpha 1.5 --out data/g",
        ],
    )
    s.add_argument("action", nargs="?", default="list", choices=actions, help="what to do")
    s.add_argument(
        "target",
        nargs="?",
        help="dataset name (a directory for info/synthetic, the .pt dump for import-sparsefinder)",
    )
    s.add_argument(
        "--out",
        metavar="DIR",
        help="build, import-sparsefinder or extract into this directory (build: instead of "
        "the cache); info: write realism.json, realism.md and realism.png into it",
    )
    s.add_argument(
        "--max-seqs",
        type=count,
        default=64,
        help="info: gold statistics over at most this many held-out sequences",
    )
    s.add_argument("--steps", type=count, help="train: number of steps (default: the recipe's)")
    s.add_argument(
        "--rescale-queries",
        action="store_true",
        help="import: multiply q by sqrt(d) (dumps whose queries carry 1/sqrt(d))",
    )
    s.add_argument("--model", help="extract: a Hugging Face model name or local directory")
    s.add_argument("--texts", metavar="FILE", help="extract: a text file, one text per line")
    s.add_argument("--alpha", type=float, default=1.5, help="extract: the entmax α, above 1")
    s.add_argument("--num-seqs", type=count, default=12, help="synthetic: sequences")
    s.add_argument("--layers", type=count, default=2, help="synthetic: layers")
    s.add_argument("--heads", type=count, default=4, help="synthetic: heads per layer")
    s.add_argument("--n", type=count, default=64, help="synthetic: longest sequence")
    s.add_argument("--dim", type=count, default=16, help="synthetic: head dimension")
    s.add_argument("--causal", action="store_true", help="synthetic: decoder (causal) data")
    s.add_argument("--seed", type=int, default=0, help="synthetic: random seed")


def add_runs(sub: Subcommands, cmds: dict[str, Callable]) -> None:
    """Parsers of the scoring commands: ``evaluate``, ``sweep``, ``accuracy`` and ``run``.

    One flat list of arguments per subcommand, so it reads as a table and holds no logic.
    """
    s = sub.add(
        "evaluate",
        cmds["evaluate"],
        summary="score one configuration on a dataset",
        description="Fit one method configuration on the train split (when it learns), "
        "predict graphs on the scored split and compare them with the gold α-entmax graph; "
        "prints the metrics averaged over layers. Progress goes to stderr.",
        examples=[
            "sparsebench evaluate --data shakespeare-lm --method window --param w=5",
            "sparsebench evaluate --data data/syn --method sparsefinder_kmeans:num_clusters=8 "
            "--json",
        ],
    )
    s.add_argument("--data", required=True, help="dataset name or directory")
    s.add_argument("--method", required=True, help="a method name, or a spec name:k=v,k=v")
    s.add_argument("--param", action="append", metavar="K=V", help="method parameter (repeat)")
    s.add_argument("--layer", type=index, help="only this layer (default: all, averaged)")
    s.add_argument("--split", default="eval", help="the split to score")
    s.add_argument("--batch-size", type=count, default=16, help="sequences per batch")
    s.add_argument("--block-size", type=count, help="also report block sparsity at this block")
    device_option(s)
    s.add_argument("--json", action="store_true", help="print JSON")

    s = sub.add(
        "sweep",
        cmds["sweep"],
        summary="a resumable grid sweep (records as JSON lines)",
        description="Score every configuration of each selected method's grid on every layer; "
        "one record per configuration and layer, appended as it finishes, so a killed sweep "
        "resumes where it stopped. Writes into a new run folder (printed) unless --results, "
        "--resume or --out says where.",
        examples=[
            "sparsebench sweep --data shakespeare-lm --methods 'window;sparsefinder*'",
            "sparsebench sweep --data data/syn --grid paper --layers 0,1 --results runs/mine",
        ],
    )
    s.add_argument("--data", required=True, help="dataset name or directory")
    s.add_argument("--methods", default="*", help=METHODS_HELP)
    s.add_argument("--grid", default="quick", help="grid setting: quick or paper")
    s.add_argument("--layers", type=layer_list, help="comma-separated layers (default: all)")
    s.add_argument("--split", default="eval", help="the split to score")
    device_option(s)
    run_folder_options(s)
    s.add_argument(
        "--out", metavar="FILE", help="write the records to this file instead of a run folder"
    )
    s.add_argument(
        "--executor",
        choices=["local", "ray"],
        default="local",
        help="local: in this process; ray: one Ray task per layer and method",
    )
    s.add_argument("--address", help="Ray cluster address (default: start a local instance)")
    s.add_argument("--gpus-per-task", type=gpu_count, default=0, help="GPUs each Ray task asks")

    from sparsebench.datasets import DATASETS

    scored = {name: spec.task for name, spec in DATASETS.items() if spec.task}
    s = sub.add(
        "accuracy",
        cmds["accuracy"],
        summary="task accuracy with predicted attention graphs",
        description="Run a bundled model on its held-out text with each configuration's "
        "predicted graph replacing attention at test time, and record its task accuracy "
        "(and the difference to full attention). --configs frontier scores only the "
        "configurations on each method's recall-sparsity frontier in the sweep records of "
        "--from DIR; --configs reported only those the leaderboard's rows report.",
        examples=[
            "sparsebench accuracy --model shakespeare-lm --methods 'window;sparsefinder_kmeans'",
            "sparsebench accuracy --model shakespeare-lm --configs frontier --from runs/X",
            "sparsebench accuracy --model shakespeare-lm --configs reported --from runs/X "
            "--windows 0",
        ],
    )
    s.add_argument(
        "--model",
        required=True,
        choices=list(scored),
        help="the dataset whose model is scored, on its task: "
        + ", ".join(f"{name} ({task})" for name, task in scored.items()),
    )
    s.add_argument("--methods", default="*", help=METHODS_HELP)
    s.add_argument("--grid", default="quick", help="quick, paper, or default (one per method)")
    s.add_argument(
        "--configs",
        choices=["grid", "frontier", "reported"],
        default="grid",
        help="grid: every configuration of --grid; frontier: only the frontier and recall "
        "0.90/0.95/0.99 configurations of the sweep records in --from; reported: only the "
        "configuration each method's leaderboard row reports (recall 0.95, else best recall)",
    )
    s.add_argument(
        "--from",
        dest="from_dir",
        metavar="DIR",
        help="with --configs frontier or reported: a run or results folder holding the "
        "model's sweep records",
    )
    s.add_argument(
        "--windows",
        type=count_or_zero,
        metavar="N",
        default=32,
        help="held-out windows of 512 tokens to score, or sentences for embedding fidelity "
        "(0: every window of the held-out split)",
    )
    device_option(s)
    run_folder_options(s)

    s = sub.add(
        "run",
        cmds["run"],
        summary="the main job: sweep, accuracy and leaderboard on the bundled datasets",
        description="Sweep every method's quick grid on the datasets of the bundled models, "
        "score each method's default configuration by task accuracy, write the leaderboard "
        "and print a short summary. Everything goes into a new run folder; `sparsebench "
        "publish RUN` brings it into results/.",
        examples=["sparsebench run", "sparsebench run --data data/syn --accuracy-windows 0"],
    )
    s.add_argument(
        "--data",
        action="append",
        help="dataset name or directory (repeat; default: the datasets of the bundled models)",
    )
    s.add_argument("--methods", default="*", help=METHODS_HELP)
    s.add_argument("--grid", default="quick", help="grid setting (quick or paper)")
    run_folder_options(s)
    s.add_argument(
        "--accuracy-windows",
        type=count_or_zero,
        metavar="N",
        default=8,
        help="held-out windows for the quick accuracy run (0: skip it)",
    )


def add_speed(sub: Subcommands, cmds: dict[str, Callable]) -> None:
    """Parser of ``speed``: one flat list; defaults a preset changes are resolved later."""
    s = sub.add(
        "speed",
        cmds["speed"],
        summary="wall-clock and peak memory across lengths",
        description="Time predict + layout + sparse attention of each method against the dense "
        "kernels (execute suite), or the gold graph against dense entmax (gold suite), each "
        "case in a fresh process; records go to a run folder's speed/records.jsonl. The "
        "presets run prepared cases (--resume continues a cut run).",
        examples=[
            "sparsebench speed --lengths 1024,4096 --methods 'sdpa;window:w=65,global_tokens=2'",
            "sparsebench speed --suite gold --lengths 4096 --methods gold,entmax15",
            "sparsebench speed --preset methods --lengths 1024 --methods 'window;dsa'",
            "sparsebench speed --preset gpu",
        ],
    )
    s.add_argument(
        "--suite",
        choices=["execute", "gold"],
        default="execute",
        help="execute: predict + sparse attention per method; gold: the gold graph",
    )
    s.add_argument(
        "--lengths",
        type=length_list,
        help="sequence lengths N (default: 512,1024,2048,4096; --preset methods: "
        "1024,4096,8192,16384; --preset gpu: all of its lengths)",
    )
    s.add_argument(
        "--methods",
        help=f"execute: {METHODS_HELP}; dense baselines are names too (sdpa, dense_entmax, "
        "entmax15_full, xformers) (default: sdpa, dense_entmax, a window and k-means); gold: "
        "implementations separated by ',' from gold, entmax15, entmax15_k64 "
        "(default: gold,entmax15); --preset methods: globs over method names (default: all)",
    )
    s.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    s.add_argument(
        "--normalizer",
        choices=["entmax", "softmax"],
        help="the attention (default: entmax; --preset methods: softmax)",
    )
    s.add_argument(
        "--path",
        default="auto",
        choices=["auto", "block", "flex", "flex_entmax", "grouped", "dense"],
        help="execution path (auto: the one the graph suits)",
    )
    s.add_argument(
        "--dtype", choices=["float32", "bfloat16", "float16"], default="float32", help="inputs"
    )
    s.add_argument("--causal", action="store_true", help="causal attention (graphs and baselines)")
    s.add_argument(
        "--preset",
        choices=["gpu", "methods"],
        help="gpu: the prepared GPU benchmark (fixed cases, CUDA only, under 8 minutes; "
        "python -m sparsebench.bench.gpu_bench --help); methods: every registered method at "
        "its leaderboard and default configurations (causal; hours on a 2-core CPU)",
    )
    s.add_argument("--block-size", type=count, help="block size (default: 128; methods: 64)")
    s.add_argument("--heads", type=count, default=8, help="attention heads")
    s.add_argument("--dim", type=count, default=64, help="head dimension")
    s.add_argument("--repeats", type=count, default=3, help="timed repeats per case")
    s.add_argument(
        "--max-dense",
        type=count,
        default=4096,
        help="skip the package's full-matrix entmax above this n",
    )
    s.add_argument(
        "--fit-data",
        metavar="NAME",
        help="fit methods that learn on this dataset's train split, layer 0, once per run "
        "(default: synthetic sequences; --preset methods: shakespeare-lm)",
    )
    s.add_argument(
        "--leaderboard",
        metavar="CSV",
        help="--preset methods: measure its recall-0.95 configurations "
        "(default: results/shakespeare-lm/leaderboard.csv)",
    )
    s.add_argument("--budget", type=float, help="presets: no case starts after these seconds")
    s.add_argument("--case-timeout", type=float, help="presets: seconds per case (per process)")
    s.add_argument("--only", help="--preset gpu: ';'-separated words of the lines to run")
    run_folder_options(s)
    s.add_argument(
        "--out", metavar="FILE", help="append the records to this file instead of a run folder's"
    )
