"""The prepared GPU benchmark: ``sparsebench speed --preset gpu``.

``python -m sparsebench.bench.gpu_bench`` runs the same. One command, fixed cases, sized for
under 8 minutes on one GPU. Causal attention, 16 heads of 64, batch 1, at N = 1k, 4k, 16k, 32k
and 64k for the main lines, bfloat16 (float32 for a few lines at 4k and 16k):

* dense softmax: SDPA pinned to flash and to memory-efficient, xformers;
* dense α-entmax (α = 1.5): AdaSplash's dispatcher (causal α = 1.5 runs AdaSplash-2), its
  block-mask kernel, its kernel without block mask, and the entmax package's ``entmax15`` and
  ``entmax_bisect`` over full score matrices (up to 16k);
* predicted graphs, predict + layout + attention: a window of ``N/32 + 1`` with the first and
  last token global (about 97 % sparse within the causal triangle at every N) on the flex path
  (softmax), the new ``flex_entmax`` path and the block path (α-entmax); Sparsefinder k-means
  with 16 clusters (about 92 %) on its grouped path, both normalisers.

Nothing is installed at run time: a baseline whose package is missing (the ``gpu`` extra:
xformers, adasplash) is listed as skipped. Each line of the table runs in one worker process
(:mod:`.speed_group`), lines in order of importance; a case may take at most
:data:`CASE_TIMEOUT_S` seconds (compilation included), and no case starts or keeps running
after :data:`BUDGET_S` seconds, so the run cannot overrun. Records go to the run folder's
``speed/records.jsonl`` (``sparsebench publish`` merges them into ``results/``), with
``speed/gpu.md`` and ``speed/gpu.png`` (:mod:`.gpu_report`) beside them. Without CUDA it exits
with status 2 and one line, before anything is made.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "BUDGET_S",
    "CASE_TIMEOUT_S",
    "LINES",
    "Line",
    "main",
    "measured_cases",
    "parse_lengths",
    "preset_cases",
    "run_preset",
    "select_lines",
]

#: Seconds of measuring after which no case starts or keeps running.
BUDGET_S = 420.0
#: The most seconds one case may take, its compilation included.
CASE_TIMEOUT_S = 90.0
#: Sequence lengths of the main lines; the long one runs where the line says so.
LENGTHS = (1024, 4096, 16384, 32768)
LONG = 65536
HEADS, DIM, BLOCK = 16, 64, 128


def window(n: int) -> dict[str, Any]:
    """The window graph's parameters at length ``n``: ``N/32 + 1`` wide, two global tokens."""
    return {"w": n // 32 + 1, "global_tokens": 2}


@dataclass(frozen=True)
class Line:
    """One line of the benchmark: a method (or dense baseline) at several lengths.

    Attributes:
        label: the line's name in the tables and the plot.
        method: a registered method or a dense baseline name.
        normalizer: ``softmax`` or ``entmax``.
        path: the execution path of a method (``auto`` for baselines).
        dtype: the input dtype.
        lengths: the sequence lengths.
        window: the method's parameters are :func:`window` of each length.
        params: fixed parameters of the method.
        package: the package the line needs (skipped when it is not installed).
    """

    label: str
    method: str
    normalizer: str
    path: str = "auto"
    dtype: str = "bfloat16"
    lengths: tuple[int, ...] = LENGTHS
    window: bool = False
    params: dict[str, Any] = field(default_factory=dict)
    package: str | None = None


_KMEANS = {"num_clusters": 16}
_FP32 = (4096, 16384)
#: The lines, most important first (the budget cuts from the end).
LINES: tuple[Line, ...] = (
    Line("SDPA flash", "sdpa_flash", "softmax", lengths=(*LENGTHS, LONG)),
    Line("window, flex", "window", "softmax", "flex", window=True, lengths=(*LENGTHS, LONG)),
    Line("AdaSplash (dispatcher)", "adasplash", "entmax", package="adasplash"),
    Line(
        "window, flex_entmax",
        "window",
        "entmax",
        "flex_entmax",
        window=True,
        lengths=(*LENGTHS, LONG),
    ),
    Line("AdaSplash v1 block mask", "adasplash_block_mask", "entmax", package="adasplash"),
    Line("xformers", "xformers", "softmax", package="xformers"),
    Line("SDPA mem-efficient", "sdpa_efficient", "softmax"),
    Line("k-means 16, grouped", "sparsefinder_kmeans", "softmax", params=_KMEANS),
    Line("k-means 16, grouped", "sparsefinder_kmeans", "entmax", params=_KMEANS),
    Line("window, block", "window", "entmax", "block", window=True),
    Line(
        "AdaSplash no block mask",
        "adasplash_no_block_mask",
        "entmax",
        lengths=LENGTHS[:3],
        package="adasplash",
    ),
    Line("entmax15 full", "entmax15_full", "entmax", lengths=LENGTHS[:3]),
    Line("entmax_bisect full", "entmax_bisect_full", "entmax", lengths=LENGTHS[:3]),
    Line("SDPA mem-efficient", "sdpa_efficient", "softmax", dtype="float32", lengths=_FP32),
    Line("window, flex", "window", "softmax", "flex", "float32", _FP32, window=True),
    Line(
        "AdaSplash (dispatcher)",
        "adasplash",
        "entmax",
        dtype="float32",
        lengths=_FP32,
        package="adasplash",
    ),
    Line("window, flex_entmax", "window", "entmax", "flex_entmax", "float32", _FP32, window=True),
)


def preset_cases(line: Line, device: str = "cuda") -> list[dict[str, Any]]:
    """The speed cases of one line, one per length."""
    return [
        {
            "method": line.method,
            "params": window(n) if line.window else dict(line.params),
            "n": n,
            "heads": HEADS,
            "dim": DIM,
            "device": device,
            "dtype": line.dtype,
            "causal": True,
            "normalizer": line.normalizer,
            "path": line.path,
            "block_size": BLOCK,
            "repeats": 5,
            "warmup": 2,
        }
        for n in line.lengths
    ]


def _plan(
    lines: tuple[Line, ...], lengths: set[int] | None = None, done: set[tuple] = frozenset()
) -> tuple[list[tuple[Line, list[dict]]], list[Line]]:
    """The lines that can run here, with their cases, and those whose package is missing.

    Cases at lengths outside ``lengths`` (when given) and cases in ``done`` (``(label, dtype,
    n)`` measured before in the same records) are left out.
    """
    runnable, missing = [], []
    for line in lines:
        if line.package and importlib.util.find_spec(line.package) is None:
            missing.append(line)
            continue
        cases = [
            c
            for c in preset_cases(line)
            if (lengths is None or c["n"] in lengths)
            and (line.label, line.dtype, c["n"]) not in done
        ]
        if cases:
            runnable.append((line, cases))
    return runnable, missing


def select_lines(only: str | None) -> tuple[Line, ...]:
    """The lines whose label contains one of the ``;``-separated words of ``only`` (all if None).

    Raises:
        ValueError: when a word matches no line's label.
    """
    if not only:
        return LINES
    words = [w.strip().lower() for w in only.split(";") if w.strip()]
    for word in words:
        if not any(word in line.label.lower() for line in LINES):
            labels = sorted({line.label for line in LINES})
            raise ValueError(f"--only {word!r} matches no line; the lines are: {'; '.join(labels)}")
    return tuple(line for line in LINES if any(w in line.label.lower() for w in words))


def parse_lengths(text: str | None) -> set[int] | None:
    """``--lengths 4096,32768`` as a set of the preset's lengths (``None``: all).

    Raises:
        ValueError: for a length that is not a number or not one of the preset's.
    """
    if not text:
        return None
    known = {*LENGTHS, LONG}
    try:
        lengths = {int(x) for x in text.split(",") if x.strip()}
    except ValueError:
        raise ValueError(
            f"--lengths {text!r}: give comma-separated numbers, e.g. 4096,32768"
        ) from None
    if not lengths or not lengths <= known:
        raise ValueError(f"--lengths {text!r}: the preset's lengths are {sorted(known)}")
    return lengths


def measured_cases(out) -> set[tuple]:
    """``(label, dtype, n)`` of the cases ``out`` already holds a measurement of (no error)."""
    from .runs import read_records

    if not out.exists():
        return set()
    return {
        (r.get("label"), r.get("dtype"), r.get("n"))
        for r in read_records(out, keyed=False)
        if r.get("preset") == "gpu" and not r.get("error")
    }


def _say(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _spec(rec: dict[str, Any]) -> str:
    """The method spec of a record (``window:w=33,global_tokens=2``), as ``speed`` writes it."""
    params = rec.get("params") or {}
    return rec["method"] + (":" + ",".join(f"{k}={v}" for k, v in params.items()) if params else "")


def _measure(
    runnable: list[tuple[Line, list[dict]]], out, deadline: float, case_timeout: float
) -> tuple[int, int]:
    """Measure every line's cases (one worker per line), appending records to ``out``.

    Returns the number of records and of failed ones.
    """
    from .runs import provenance, records_writer
    from .speed import device_label
    from .speed_group import measure_group

    prov = {**provenance(), "device": device_label("cuda")}
    failed = measured = 0
    with records_writer(out, keyed=False) as records:
        for line, cases in runnable:
            for rec in measure_group(
                cases,
                case_timeout,
                deadline=deadline,
                on_start=lambda c, label=line.label: _say(f"measuring {label} n={c['n']} ..."),
            ):
                rec.update({"suite": "execute", "spec": _spec(rec), "preset": "gpu", **prov})
                rec["label"] = line.label
                records.add(rec)
                measured += 1
                failed += bool(rec.get("error"))
                if rec.get("error"):
                    _say(f"  {line.label} n={rec['n']}: {rec['error']}")
    return measured, failed


def run_preset(args: Any) -> int:
    """Run the benchmark (``args``: results, resume, out, budget, case_timeout, only, lengths).

    Cases the records already hold a measurement of are not measured again, so ``--resume``
    continues a run the budget cut.

    Returns the exit status: 0, 1 if every case failed, 2 without CUDA (one line, nothing made).
    """
    import torch

    from .commands import CLIError
    from .gpu_report import write_gpu_report
    from .run_commands import records_out
    from .runs import open_run_folder

    if not torch.cuda.is_available():
        raise CLIError(
            "--preset gpu: CUDA is not available on this machine; run the GPU benchmark on a "
            "machine with an NVIDIA GPU and the 'gpu' extra (CPU speed: sparsebench speed)"
        )
    budget = float(getattr(args, "budget", None) or BUDGET_S)
    case_timeout = float(getattr(args, "case_timeout", None) or CASE_TIMEOUT_S)
    lines = select_lines(getattr(args, "only", None))
    lengths = parse_lengths(getattr(args, "lengths", None))
    out = records_out(args)
    if out is None:
        folder = open_run_folder(
            "speed", getattr(args, "argv", ()), results=args.results, resume=args.resume
        )
        _say(f"run folder: {folder}")
        out = folder / "speed" / "records.jsonl"
    done = measured_cases(out)
    runnable, missing = _plan(lines, lengths, done)
    count = sum(len(c) for _, c in runnable)
    _say(
        f"GPU benchmark on {torch.cuda.get_device_name(0)}: {count} cases in {len(runnable)} "
        f"worker processes ({len(done)} measured before are kept); at most {case_timeout:.0f} s "
        f"per case, no case past {budget:.0f} s (the least important lines are cut first)"
    )
    for line in missing:
        _say(f"skipped: {line.label} ({line.dtype}): the {line.package} package is not installed")
    deadline = time.monotonic() + budget
    measured, failed = _measure(runnable, out, deadline, case_timeout)
    skipped = [(m.label, m.dtype, m.package) for m in missing]
    written = write_gpu_report(out.parent, skipped=skipped)
    for path in written:
        sys.stdout.write(f"wrote {path}\n")
    sys.stdout.write(f"records appended to {out.resolve()}\n")
    return 1 if measured and failed == measured else 0


def main(argv: list[str] | None = None) -> int:
    """``python -m sparsebench.bench.gpu_bench``: the run of ``sparsebench speed --preset gpu``."""
    from .commands import CLIError

    p = argparse.ArgumentParser(
        prog="python -m sparsebench.bench.gpu_bench",
        description="The prepared GPU benchmark (see sparsebench.bench.gpu_bench).",
    )
    p.add_argument("--results", help="the run folder (default: a new runs/<UTC time>-speed)")
    p.add_argument("--resume", help="continue the run in this run folder")
    p.add_argument("--out", help="append the records to this file instead of a run folder's")
    p.add_argument("--budget", type=float, default=BUDGET_S, help="seconds of measuring at most")
    p.add_argument(
        "--only", help="';'-separated words: run only the lines whose label contains one"
    )
    p.add_argument("--lengths", help="comma-separated: run only these of the preset's lengths")
    p.add_argument(
        "--case-timeout", type=float, default=CASE_TIMEOUT_S, help="seconds one case may take"
    )
    args = p.parse_args(argv)
    args.argv = ["speed", "--preset", "gpu"]
    try:
        return run_preset(args)
    except (CLIError, ValueError) as e:
        sys.stderr.write(f"sparsebench: error: {e}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
