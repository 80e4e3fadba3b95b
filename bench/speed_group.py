"""Many speed cases in one worker process, each with its own time limit.

A fresh process per case (:func:`~sparsebench.bench.speed.measure_case`) pays the interpreter,
torch and CUDA start-up every time, several seconds on a GPU machine; the GPU preset runs a
group of cases (one method, all lengths) in one worker instead. Peak CUDA memory is still per
call (``max_memory_allocated`` is reset before it, above what is allocated then), so sharing
the process does not mix the cases' memory figures; CPU peak-RSS figures would mix, so groups
are for CUDA cases.

The worker prints one JSON record per case as soon as it is measured. A case that raises gets
an error record and the worker goes on (after ``torch.cuda.empty_cache()``, so an
out-of-memory case leaves no cached blocks behind). A case that runs past its limit, or a worker
that dies, gets an error record; the worker is then started again for the cases after it.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

from .speed import error_record, run_case, validate_case

__all__ = ["measure_group", "worker_main"]

_WORKER = "import sys; from sparsebench.bench.speed_group import worker_main; worker_main()"


def worker_main() -> None:
    """Worker entry: read a JSON list of cases on stdin, print one JSON record per case."""
    import torch

    for case in json.loads(sys.stdin.read()):
        try:
            rec = run_case(case)
        except Exception as e:  # the case fails, the group goes on
            first = (str(e).strip().splitlines() or [""])[0]
            rec = error_record(case, f"{type(e).__name__}: {first}")
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        sys.stdout.write(json.dumps(rec) + "\n")
        sys.stdout.flush()


class _Worker:
    """One worker process: cases on stdin, records read line by line from its stdout.

    Its stderr goes to a temporary file (a pipe nobody reads would fill up and stall it).
    """

    def __init__(self, cases: list[dict[str, Any]], env: dict) -> None:
        self.err = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _WORKER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.err,
            env=env,
        )
        self.proc.stdin.write(json.dumps(cases).encode())
        self.proc.stdin.close()
        self.fd = self.proc.stdout.fileno()
        self.buffer = b""

    def next_line(self, until: float) -> str | None:
        """The next line of output, or ``None`` at ``until`` (monotonic) or when it exits."""
        while b"\n" not in self.buffer:
            left = until - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                return None
            chunk = os.read(self.fd, 1 << 16)
            if not chunk:  # the worker exited
                return None
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode()

    def stop(self) -> str:
        """Stop the worker (once); the last line it wrote on stderr."""
        if self.err.closed:
            return "(stopped)"
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()
        self.err.seek(0)
        lines = self.err.read().strip().splitlines()
        self.err.close()
        return lines[-1] if lines else "(no output)"


def measure_group(
    cases: list[dict[str, Any]],
    timeout: float,
    *,
    deadline: float | None = None,
    on_start: Callable[[dict[str, Any]], None] | None = None,
) -> Iterator[dict[str, Any]]:
    """Measure ``cases`` in one worker process, yielding one record per case, in order.

    Args:
        cases: checked speed cases (CUDA cases: see the module docstring).
        timeout: the most seconds one case may take (its compilation included).
        deadline: a ``time.monotonic()`` after which no case runs: the rest get error records
            saying so, and a running case is stopped there.
        on_start: called with each case before it is waited for (progress lines).

    Raises:
        ValueError: for a case with bad arguments, before any process starts.
    """
    for case in cases:
        validate_case(case)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    todo = list(cases)
    while todo:
        if deadline is not None and time.monotonic() >= deadline:
            yield from (error_record(c, "skipped: the time budget was spent") for c in todo)
            return
        worker = _Worker(todo, env)
        done = 0
        try:
            for case in todo:
                if on_start is not None:
                    on_start(case)
                limit = time.monotonic() + timeout
                if deadline is not None:
                    limit = min(limit, deadline)
                line = worker.next_line(limit)
                done += 1
                if line is not None:
                    yield json.loads(line)
                    continue
                if time.monotonic() < limit:
                    yield error_record(case, f"worker died: {worker.stop()}")
                elif deadline is not None and limit >= deadline:
                    worker.stop()
                    yield error_record(case, "stopped: the time budget was spent")
                else:
                    worker.stop()
                    yield error_record(case, f"timed out after {timeout:.0f} s")
                break
        finally:
            worker.stop()
        todo = todo[done:]
