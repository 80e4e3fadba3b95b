"""The speed of every registered method: ``sparsebench speed --preset methods``.

Every registered method, reference rows included, at two configurations: the one the
leaderboard reports (the ``config@0.95`` column of ``results/shakespeare-lm/leaderboard.csv``,
the sparsest configuration reaching recall 0.95 on the bundled LM; the method's defaults where
its row has none) and its defaults (the configuration each method declares from its paper); one
that is both is measured once, with both roles. At N = 1024, 4096, 8192 and 16384, 8 heads of
64, float32, block size 64, softmax with SDPA as the dense baseline (``--normalizer entmax``:
against the dense α-entmax path), causal like the LM (a method without causal support runs
bidirectional, against a bidirectional baseline), each graph on the path ``auto`` picks
(``grouped`` for one set of groups, else ``block``; the record's ``path``). Each case times
prediction, layout, kernel and end to end, and takes the peak memory (:mod:`.speed`), on the
seeded generator's queries, keys and values. A method with a fit step is fitted once, before
anything is measured, on layer 0 of the bundled ``shakespeare-lm`` train split (its 4 heads
repeated to 8), and that fit is applied at every N (the records' ``fit_on``); fitted methods
are kept in ``fitted/`` beside the records, for every later process and a resumed run.

Order, most useful first: the baseline at every N, then the leaderboard configurations below
N = 16384 (shorter N first), then the default ones, then both at 16384. On CPU each case runs
in fresh processes (timing, then memory), each for at most :data:`CASE_TIMEOUT_S` seconds; on
CUDA a configuration's cases share a worker (:mod:`.speed_group`). No case starts after
:data:`BUDGET_S` seconds. A case that fails, runs past its limit or is cut by the budget is
recorded with its ``error``. Records carry ``preset: "methods"``, ``spec``, ``config_role`` and
``config_source``; cases the records hold a measurement of are kept, so ``--resume`` continues.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "BUDGET_S",
    "CASE_TIMEOUT_S",
    "FIT_DATA",
    "LEADERBOARD",
    "LENGTHS",
    "Config",
    "config_params",
    "leaderboard_configs",
    "measured_cases",
    "method_configs",
    "preset_cases",
    "run_preset",
]

#: Sequence lengths of the preset; :data:`LATE_N` and longer run after every shorter case.
LENGTHS = (1024, 4096, 8192, 16384)
LATE_N = 16384
HEADS, DIM, BLOCK, REPEATS = 8, 64, 64, 3
#: The leaderboard whose recall-0.95 configurations are measured, and the data fits run on.
LEADERBOARD = "results/shakespeare-lm/leaderboard.csv"
FIT_DATA = "shakespeare-lm"
#: Seconds of measuring after which no case starts.
BUDGET_S = 4 * 3600.0
#: The most seconds each of a case's processes may take.
CASE_TIMEOUT_S = 600.0
#: What a case takes where the ``speed`` command leaves an option unset.
DEFAULTS = {
    "heads": HEADS,
    "dim": DIM,
    "device": "cpu",
    "dtype": "float32",
    "normalizer": "softmax",
    "path": "auto",
    "block_size": BLOCK,
    "repeats": REPEATS,
    "fit_data": FIT_DATA,
}
#: The fields that make two records the same case (``device`` as the records write it).
KEY_FIELDS = ("spec", "n", "device", "dtype", "heads", "dim", "block_size", "normalizer", "causal")


@dataclass(frozen=True)
class Config:
    """One configuration of a method in the preset.

    Attributes:
        method: the registered name.
        spec: the configuration as a speed spec (``name`` or ``name:k=v,k=v``).
        params: its parameters.
        roles: ``("leaderboard",)``, ``("default",)`` or both.
        source: where the configuration comes from (the records' ``config_source``).
        causal: whether its cases are causal (the method declares causal support).
        learns: whether the method has a fit step (its cases name the fit data).
    """

    method: str
    spec: str
    params: dict[str, Any] = field(hash=False)
    roles: tuple[str, ...]
    source: str
    causal: bool = True
    learns: bool = False

    @property
    def role(self) -> str:
        """The roles as the records' ``config_role``: ``leaderboard+default`` for both."""
        return "+".join(self.roles)


def leaderboard_configs(path: str | Path) -> dict[str, str]:
    """Each method's configuration at recall 0.95 in a leaderboard CSV (``""`` where none).

    Raises:
        ValueError: when the file is missing or is not a leaderboard CSV.
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise ValueError(
            f"--leaderboard {path}: no such file; run from the repository root or pass the "
            "leaderboard.csv that `sparsebench leaderboard` wrote"
        )
    t = pd.read_csv(path)
    missing = {"method", "config@0.95"} - set(t.columns)
    if missing:
        raise ValueError(
            f"--leaderboard {path}: not a leaderboard CSV (no {', '.join(sorted(missing))} "
            "column); pass the leaderboard.csv that `sparsebench leaderboard` wrote"
        )
    return {str(m): "" if pd.isna(c) else str(c) for m, c in zip(t["method"], t["config@0.95"])}


def config_params(method_id: str) -> tuple[str, dict[str, Any]]:
    """``name[k=v,k=v]`` (a method id, as leaderboards write it) as ``(name, params)``.

    Raises:
        ValueError: for an id that is not of that form or names an unknown method or parameter.
    """
    from sparsebench.methods import parse_spec

    name, bracket, rest = method_id.strip().partition("[")
    if bracket and not rest.endswith("]"):
        raise ValueError(f"configuration {method_id!r}: expected name[k=v,...]")
    try:
        return parse_spec(name + (":" + rest[:-1] if bracket else ""))
    except (KeyError, ValueError) as e:
        msg = e.args[0] if e.args else e
        raise ValueError(
            f"configuration {method_id!r}: {msg}; regenerate the leaderboard or pass another "
            "--leaderboard"
        ) from None


def method_configs(names: list[str], leaderboard: str | Path) -> list[Config]:
    """The configurations of ``names``: the leaderboard's and the default, once if equal.

    Raises:
        ValueError: see :func:`leaderboard_configs` and :func:`config_params`.
    """
    from sparsebench import methods

    board = leaderboard_configs(leaderboard)
    out = []
    for name in names:
        cid = board.get(name, "")
        if cid:
            _, params = config_params(cid)
            spec = cid.replace("[", ":", 1).removesuffix("]") if params else name
            source = f"{leaderboard}: config@0.95 {cid}"
        else:
            why = "no configuration reaches recall 0.95" if name in board else "no row"
            spec, params, source = name, {}, f"{leaderboard}: {why}; the method's defaults"
        what = {
            "causal": methods.get(name).tags.supports_causal,
            "learns": methods.create(name, **params).learns,
        }
        if not params:
            out.append(Config(name, name, {}, ("leaderboard", "default"), source, **what))
            continue
        out.append(Config(name, spec, params, ("leaderboard",), source, **what))
        what["learns"] = methods.create(name).learns
        out.append(Config(name, name, {}, ("default",), "the method's defaults", **what))
    return out


def preset_cases(
    configs: list[Config], base: dict[str, Any], lengths=LENGTHS, baseline: str = "sdpa"
) -> list[tuple[Config | None, dict[str, Any]]]:
    """``(config, case)`` of every configuration at every length, most useful first.

    ``base`` holds the fields every case shares (``heads``, ``dim``, ``device``, ...); the
    baseline's cases come with ``config`` ``None``, one per length and causality used. On
    CUDA the cases of one configuration are consecutive within each stage (they share a worker).
    """
    from sparsebench.methods import get

    fit = {k: base[k] for k in ("fit_data", "fit_cache") if k in base}
    shared = {k: v for k, v in base.items() if k not in fit}
    names = sorted({c.method for c in configs}, key=lambda m: (get(m).tags.reference, m))
    order = {name: i for i, name in enumerate(names)}  # methods first, reference rows last
    items: list[tuple[tuple, Config | None, dict]] = []
    for causal in sorted({c.causal for c in configs}, reverse=True):
        for n in lengths:
            case = {**shared, "method": baseline, "params": {}, "n": n, "causal": causal}
            items.append(((0, 0, n, 0), None, case))
    cuda = str(base.get("device", "cpu")).startswith("cuda")
    for c in configs:
        for n in lengths:
            stage = 1 + 2 * (n >= LATE_N) + (c.roles == ("default",))
            rank = order[c.method] * 2 + (c.roles == ("default",))
            key = (stage, rank, n) if cuda else (stage, n, rank)
            case = {**shared, "method": c.method, "params": dict(c.params), "n": n}
            items.append(((*key, 0), c, {**case, "causal": c.causal, **(fit if c.learns else {})}))
    items.sort(key=lambda x: x[0])
    return [(c, case) for _, c, case in items]


def _key(rec: dict[str, Any]) -> tuple:
    return tuple(rec.get(f) for f in KEY_FIELDS)


def measured_cases(out: Path) -> set[tuple]:
    """The :data:`KEY_FIELDS` of the cases ``out`` holds a preset measurement of (no error)."""
    from .runs import read_records

    if not out.exists():
        return set()
    recs = read_records(out, keyed=False)
    return {_key(r) for r in recs if r.get("preset") == "methods" and not r.get("error")}


def _labelled(config: Config | None, case: dict[str, Any], label: str) -> dict[str, Any]:
    """The fields a preset record adds to what the harness returns."""
    extra = {"suite": "execute", "preset": "methods", "device": label}
    if config is None:
        return {**extra, "spec": case["method"], "config_role": "dense baseline"}
    return {
        **extra,
        "spec": config.spec,
        "config_role": config.role,
        "config_source": config.source,
    }


def _say(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _prefit(todo: list[tuple[Config | None, dict]]) -> None:
    """Fit each learning configuration once in this process, into the fit cache.

    Sparsefinder variants fitted here share one trained projector, as in a sweep. A fit that
    fails is reported; its cases then record the error themselves.
    """
    from .speed_cases import fitted_method

    seen = set()
    for config, case in todo:
        if config is None or config.spec in seen:
            continue
        seen.add(config.spec)
        if not config.learns:
            continue
        _say(f"fitting {config.spec} ...")
        try:
            _, seconds, about = fitted_method(case)
            _say(f"  fitted in {seconds:.1f} s on {about}")
        except Exception as e:  # reported here; its cases record the error themselves
            _say(f"  fit failed: {type(e).__name__}: {e}")


def _measure(
    todo: list[tuple[Config | None, dict]], deadline: float, case_timeout: float
) -> Iterator[tuple[Config | None, dict, dict]]:
    """``(config, case, record)`` of each case, cases after the deadline with error records.

    On CPU each case runs in fresh processes; on CUDA a configuration's cases of one stage
    share a worker.
    """
    from .speed import error_record, measure_case
    from .speed_group import measure_group

    i = 0
    while i < len(todo):
        config, case = todo[i]
        j = i + 1
        if case["device"].startswith("cuda"):
            while j < len(todo) and todo[j][0] is config:
                j += 1
        group, i = todo[i:j], j
        left = deadline - time.monotonic()
        if left <= 0:
            for c, cs in group:
                yield c, cs, error_record(cs, "skipped: the time budget was spent")
            continue
        spec = config.spec if config else case["method"]
        if case["device"].startswith("cuda"):
            cases = [cs for _, cs in group]
            recs = measure_group(
                cases,
                case_timeout,
                deadline=deadline,
                on_start=lambda c, spec=spec: _say(f"measuring {spec} n={c['n']} ..."),
            )
            yield from ((c, cs, r) for (c, cs), r in zip(group, recs, strict=True))
            continue
        _say(f"measuring {spec} n={case['n']} ...")
        rec = measure_case(case, timeout=min(case_timeout, left))
        if str(rec.get("error", "")).startswith("timed out") and left < case_timeout:
            rec["error"] = "stopped: the time budget was spent"
        yield config, case, rec


def _names(pattern: str | None) -> list[str]:
    """The methods ``--methods`` selects (globs and names only: the configs are the preset's)."""
    from .runs import select_methods

    chosen = select_methods(pattern or "*")
    if any(params for _, _, params in chosen):
        raise ValueError(
            "--preset methods: --methods takes method names or globs (the configurations come "
            "from --leaderboard and the defaults); for your own specs, leave out --preset"
        )
    return [name for _, name, _ in chosen]


def _table(out: Path, label: str) -> str:
    """The preset's cases on this device (newest of each) as text, through the speed table."""
    from .commands import text_table
    from .report import load_records, speed_table

    recs = load_records(out)
    if "preset" in recs:
        recs = recs[(recs["preset"] == "methods") & (recs["device"] == label)]
    sp = speed_table(recs) if "preset" in recs and not recs.empty else recs.iloc[:0]
    cols = ["spec", "role", "n", "path", "time_s", "x_best_dense", "peak_mb", "sparsity"]
    return text_table(sp.to_dict("records"), cols)


def run_preset(args: Any) -> int:
    """Run the preset (``args``: the ``speed`` command's options; unset ones take the preset's).

    Returns the exit status: 0, or 1 when every case measured in this call failed.

    Raises:
        ValueError: for bad options, before any run folder is made.
    """
    from .commands import echo
    from .run_commands import records_out
    from .runs import open_run_folder, provenance, records_writer
    from .speed import device_label
    from .speed_cases import validate_case

    base = {k: getattr(args, k, None) or v for k, v in DEFAULTS.items()} | {"warmup": 1}
    configs = method_configs(
        _names(args.methods), getattr(args, "leaderboard", None) or LEADERBOARD
    )
    baseline = "sdpa" if base["normalizer"] == "softmax" else "dense_entmax"
    items = preset_cases(configs, base, tuple(args.lengths or LENGTHS), baseline)
    for _, case in items:
        validate_case(case)
    out = records_out(args)
    if out is None:
        folder = open_run_folder(
            "speed", getattr(args, "argv", ()), results=args.results, resume=args.resume
        )
        _say(f"run folder: {folder}")
        out = folder / "speed" / "records.jsonl"
    label = device_label(base["device"])
    for _, case in items:
        if "fit_data" in case:
            case["fit_cache"] = str(out.parent / "fitted")
    done = measured_cases(out)
    todo = [
        (c, case) for c, case in items if _key({**case, **_labelled(c, case, label)}) not in done
    ]
    budget = float(getattr(args, "budget", None) or BUDGET_S)
    case_timeout = float(getattr(args, "case_timeout", None) or CASE_TIMEOUT_S)
    _say(
        f"{len(configs)} configurations of {len({c.method for c in configs})} methods and "
        f"{baseline}: {len(todo)} cases to measure on {label} ({len(items) - len(todo)} measured "
        f"before are kept); at most {case_timeout:.0f} s per process, none past {budget:.0f} s"
    )
    deadline = time.monotonic() + budget
    _prefit(todo)
    prov = {**provenance(), "device": label}
    failed = measured = 0
    with records_writer(out, keyed=False) as records:
        for config, case, rec in _measure(todo, deadline, case_timeout):
            rec.update({**prov, **_labelled(config, case, label)})
            records.add(rec)
            measured += 1
            failed += bool(rec.get("error"))
            if rec.get("error"):
                _say(f"  {rec['spec']} n={rec['n']}: {rec['error']}")
    echo(_table(out, label))
    if failed:
        echo(f"{failed} of {measured} cases failed or were cut: their errors are in the records")
    echo(f"records appended to {out.resolve()}")
    return 1 if measured and failed == measured else 0
