"""Soak benchmark: does a long job's memory stay flat, on each Keras backend?

What it measures: the resident memory (RSS) of a whole ``tuning run`` job, the process and every
process it started, after each of its trials. It starts the real command line in a fresh folder
(``python -m tuning run EXPERIMENT --n-trials N`` with ``KERAS_BACKEND`` set), reads its progress
lines, and at each ``trial N ...`` line sums ``VmRSS`` over the job's process tree from ``/proc``.
From that series it reports the memory after trial 10, after trial 110 (or the last), the ratio of
the two (the goal: at most 1.2), and the slope in MB per trial (least squares over trials 10 to
the end), with the job's own time breakdown line (setup, build, compile, fit, study+tracking).

Run it (from the repository root)::

    python benchmarks/soak.py --backend jax --backend tensorflow --trials 120 \\
        --out benchmarks/results/soak-quickstart.json
    python benchmarks/soak.py --experiment experiments/fashion_mnist.yaml --trials 50 \\
        --set training.max_epochs=2 --set search_space.batch_size=128 --backend jax \\
        --out benchmarks/results/soak-fashion.json

Each backend runs in its own process, one after another. This is a benchmark, not a test:
nothing is asserted; it prints a markdown table and writes every sample to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TRIAL_LINE = re.compile(r"^trial\s+(\d+)\s+(\w+)")


def tree_rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and all its descendants, in MB (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    total_kb = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        todo.extend(children.get(p, []))
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
        except OSError:
            continue
    return total_kb / 1024


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over xs."""
    if len(xs) < 2:
        return 0.0
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


def soak(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run one job on ``backend`` and sample its memory after every trial."""
    work = Path(tempfile.mkdtemp(prefix=f"soak-{backend}-"))
    cmd = [
        sys.executable,
        "-m",
        "tuning",
        "run",
        str(Path(args.experiment).resolve()),
        "--n-trials",
        str(args.trials),
        "--study-name",
        f"soak-{backend}",
    ]
    for item in args.set or []:
        cmd += ["--set", item]
    env = {
        **os.environ,
        "KERAS_BACKEND": backend,
        "TUNING_CACHE_DIR": str(work / "cache"),
        "PYTHONUNBUFFERED": "1",  # each trial line as it happens
    }
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    samples: list[dict[str, Any]] = []
    tail: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip()
        tail = [*tail[-30:], line]
        match = TRIAL_LINE.match(line)
        if match:
            samples.append(
                {
                    "trial": len(samples) + 1,
                    "number": int(match.group(1)),
                    "state": match.group(2),
                    "rss_mb": round(tree_rss_mb(proc.pid), 1),
                    "seconds": round(time.perf_counter() - start, 2),
                }
            )
            if len(samples) % 10 == 0:
                print(
                    f"  {backend}: trial {len(samples)} rss {samples[-1]['rss_mb']:.0f} MB",
                    flush=True,
                )
    code = proc.wait()
    times = next((t for t in tail if t.startswith("time:")), "")
    rss = {s["trial"]: s["rss_mb"] for s in samples}
    last = len(samples)
    at = min(110, last) if last >= 110 else last
    xs = [float(s["trial"]) for s in samples if s["trial"] >= 10]
    ys = [s["rss_mb"] for s in samples if s["trial"] >= 10]
    return {
        "backend": backend,
        "exit_code": code,
        "trials": last,
        "seconds": round(time.perf_counter() - start, 1),
        "rss_at_10": rss.get(10),
        "rss_at": at,
        "rss_at_n": rss.get(at),
        "rss_last": rss.get(last),
        "ratio": (rss[at] / rss[10]) if 10 in rss and at in rss else None,
        "ratio_last": (rss[last] / rss[10]) if 10 in rss and last in rss else None,
        "mb_per_trial": round(slope(xs, ys), 3),
        "time_line": times,
        "samples": samples,
        "tail": tail if code else [],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default=str(ROOT / "experiments" / "quickstart.yaml"))
    parser.add_argument("--trials", type=int, default=120)
    parser.add_argument("--backend", action="append", help="jax, tensorflow or torch (repeat)")
    parser.add_argument("--set", action="append", help="an override for tuning run --set")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    results = []
    for backend in args.backend or ["jax", "tensorflow"]:
        print(f"{backend}: {args.trials} trials of {args.experiment}", flush=True)
        results.append(soak(backend, args))
    print()
    print(
        "| backend | trials | s | RSS after 10 (MB) | RSS after N (MB) | N | ratio | "
        "MB/trial | exit |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        ratio = f"{r['ratio']:.2f}" if r["ratio"] else "-"
        print(
            f"| {r['backend']} | {r['trials']} | {r['seconds']:.0f} | {r['rss_at_10'] or 0:.0f} | "
            f"{r['rss_at_n'] or 0:.0f} | {r['rss_at']} | {ratio} | {r['mb_per_trial']:.2f} | "
            f"{r['exit_code']} |"
        )
    for r in results:
        print(f"{r['backend']}: {r['time_line']}")
        if r["exit_code"]:
            print("\n".join(r["tail"]))
    if args.out:
        Path(args.out).write_text(json.dumps({"argv": sys.argv, "results": results}, indent=1))


if __name__ == "__main__":
    main()
