"""Several workers on one study: N processes on this machine, each a job of its own.

Owns starting, watching and stopping worker processes for ``tuning run --workers N``. Each worker
is a plain ``tuning run`` of the same experiment and options (so it opens its own parent run
tagged with the study, and adds its own ``n_trials``); Optuna's storage hands out unique trial
numbers. On a machine with GPUs each worker sees one (``CUDA_VISIBLE_DEVICES``), round robin.
Signals to this process (Ctrl-C, SIGTERM) are passed on, so every worker ends its runs.

``$TUNING_WORKER_SCRIPT``, when set, is a Python script each worker runs instead of ``-m tuning``
(with the same arguments): benchmarks and tests use it to put a stand-in trial in every worker
(``benchmarks/synthetic_worker.py``). Users leave it unset.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["WORKER_SCRIPT_ENV", "run_workers", "visible_gpus"]

WORKER_SCRIPT_ENV = "TUNING_WORKER_SCRIPT"


def visible_gpus() -> list[str]:
    """GPU ids this process may use: $CUDA_VISIBLE_DEVICES, else what nvidia-smi lists."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in env.split(",") if g.strip() and g.strip() != "-1"]
    try:
        out = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]


def _pump(stream: Any, prefix: str, say: Callable[[str], None]) -> None:
    for line in iter(stream.readline, ""):
        say(f"{prefix}{line.rstrip()}")
    stream.close()


def run_workers(args: Sequence[str], *, n: int, say: Callable[[str], None] = print) -> int:
    """Run ``tuning run ARGS`` in ``n`` processes and wait for all of them.

    Args:
        args: Arguments after ``tuning run`` (the experiment and its options, no ``--workers``).
        n: Number of worker processes.
        say: Where the workers' lines go, each prefixed with ``[worker i]``.

    Returns:
        0 if every worker succeeded; 130 if any was interrupted; else the first non-zero code.
    """
    gpus = visible_gpus()
    script = os.environ.get(WORKER_SCRIPT_ENV)
    entry = [script] if script else ["-m", "tuning"]
    procs: list[subprocess.Popen[str]] = []
    threads = []
    for i in range(n):
        env = {**os.environ, "TUNING_WORKER": str(i)}
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus[i % len(gpus)]
        proc = subprocess.Popen(
            [sys.executable, *entry, "run", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        procs.append(proc)
        t = threading.Thread(target=_pump, args=(proc.stdout, f"[worker {i}] ", say), daemon=True)
        t.start()
        threads.append(t)

    def forward(signum: int, frame: Any) -> None:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        codes = [p.wait() for p in procs]
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for t in threads:
            t.join(timeout=5)
    if all(c == 0 for c in codes):
        return 0
    if any(c == 130 for c in codes):
        return 130
    return next(c for c in codes if c != 0)
