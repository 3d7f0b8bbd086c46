"""Workers benchmark: trials per hour of `tuning run --workers N` per study and MLflow store.

What it measures: how the trial rate of one study grows with the number of local workers (1, 2,
4, 8) when the trials themselves cost no CPU, so that only the study storage, the MLflow store
and the workers' own overhead can hold it back. Each configuration is a study storage (SQLite,
Optuna's journal file, PostgreSQL) and an MLflow store (a SQLite file, or a local
``mlflow server`` on a SQLite file, started on 127.0.0.1 by this script and stopped after).

How: for every configuration and repetition it writes an experiment (digits, growth.py's search
space, the random sampler, no pruner, 5 epochs with no early stop, ``log_models: none``) into a
fresh folder and runs the real command line, ``tuning run EXP --workers N``, through
``benchmarks/synthetic_worker.py``: each trial sleeps 0.2 s per epoch (about 1 s a trial) and
reports every epoch to Optuna and MLflow as a real one does. It then reads back both stores:

- *trials/h* (steady): trials finished while every worker was running their trials (from the
  last worker's first trial start to the first worker's last trial end), per hour. Start-up
  (each worker imports Keras and loads the data) and the end of the job are left out; they are
  in *overall* (all trials over the whole command's wall time).
- *dup/lost*: Optuna trial numbers seen twice / missing from 0..N*n_trials-1; the same for the
  ``trial_number`` of MLflow child runs, which must also be one per trial, with the run id the
  trial recorded, and ``n_trials`` under each worker's parent run.
- *locked*: lines of the command's output that say ``database is locked``.

Run it (from the repository root; the full grid takes about an hour)::

    python benchmarks/workers.py --workdir /tmp/workers --out benchmarks/results/workers-scale.json

PostgreSQL is started by the script (benchmarks/servers.py: ``initdb``/``pg_ctl``, as the
``postgres`` user when run as root), one database per run. It prints a markdown table (median
and range over the repetitions) and writes every run to ``--out`` as JSON. This is a benchmark,
not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import experiment_files  # noqa: E402  (benchmarks/experiment_files.py)
from growth import SPACE  # noqa: E402  (the same search space as the growth benchmark)
from servers import Postgres, mlflow_server  # noqa: E402  (throwaway servers)

WORKER = HERE / "synthetic_worker.py"
STUDY = "workers"
LOCAL = {"sqlite": "sqlite:///optuna.db", "journal": "journal:///optuna.log"}
STORAGES = (*LOCAL, "postgres")
TRACKING = ("sqlite", "server")


def write_experiment(folder: Path, *, storage: str, tracking: str, trials: int) -> Path:
    """Write the experiment and its space into ``folder``; return the experiment's path."""
    exp = experiment_files.experiment(
        STUDY,
        description="workers benchmark: trials that sleep, real study and tracking",
        study={  # the default re-check, unlike the tests' experiment
            "storage": storage,
            "sampler": {"type": "random", "seed": 0},
            "pruner": "none",
            "n_trials": trials,
        },
        training={"max_epochs": 5, "batch_size": 64, "early_stopping": {"patience": 5}},
        tracking={"uri": tracking, "log_models": "none"},
    )
    return experiment_files.write_experiment(folder, exp, SPACE, file="exp.yaml")


# --- one run ----------------------------------------------------------------------------------


def _ts(dt: datetime | None) -> float | None:
    return dt.timestamp() if dt is not None else None


def _all_runs(client: Any, experiment_id: str) -> list[Any]:
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs([experiment_id], max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def check_stores(exp_path: Path, *, n: int, trials: int, uri: str) -> dict[str, Any]:
    """Read the study and the MLflow runs back: duplicates, losses, and each trial's times."""
    from mlflow.tracking import MlflowClient
    from optuna.storages._heartbeat import is_heartbeat_enabled
    from synthetic_worker import allow_journal

    from tuning.config import load_experiment
    from tuning.engines.optuna import open_study

    allow_journal()  # read a journal study the way the workers opened it

    with contextlib.chdir(exp_path.parent):  # relative storage paths are the job's
        exp = load_experiment(exp_path)
        study = open_study(exp)  # the tool's own way of opening the storage it used
    frozen = study.get_trials(deepcopy=False)
    expected = n * trials
    numbers = [t.number for t in frozen]
    states: dict[str, int] = {}
    for t in frozen:
        states[t.state.name] = states.get(t.state.name, 0) + 1

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(STUDY)
    runs = _all_runs(client, experiment.experiment_id) if experiment else []
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    child_numbers = [int(r.data.tags.get("trial_number", -1)) for r in children]
    by_number = {int(r.data.tags.get("trial_number", -1)): r for r in children}
    mismatched = sum(
        1
        for t in frozen
        if t.number not in by_number
        or by_number[t.number].info.run_id != t.user_attrs.get("mlflow_run_id")
    )
    per_parent = {p.info.run_id: 0 for p in parents}
    for r in children:
        parent_id = r.data.tags["mlflow.parentRunId"]
        per_parent[parent_id] = per_parent.get(parent_id, 0) + 1
    worker_of = {num: r.data.tags["mlflow.parentRunId"] for num, r in by_number.items()}
    spans = [
        {
            "number": t.number,
            "worker": worker_of.get(t.number),
            "start": _ts(t.datetime_start),
            "end": _ts(t.datetime_complete),
        }
        for t in frozen
    ]
    return {
        "expected": expected,
        "optuna_trials": len(frozen),
        "optuna_states": states,
        "optuna_duplicates": len(numbers) - len(set(numbers)),
        "optuna_lost": len(set(range(expected)) - set(numbers)),
        "mlflow_children": len(children),
        "mlflow_duplicates": len(child_numbers) - len(set(child_numbers)),
        "mlflow_lost": len(set(range(expected)) - set(child_numbers)),
        "mlflow_run_id_mismatch": mismatched,
        "mlflow_not_finished": sum(1 for r in runs if r.info.status != "FINISHED"),
        "parents": len(parents),
        "children_per_parent": sorted(per_parent.values()),
        "job_trials_per_parent": sorted(
            int(p.data.metrics.get("job_trials", -1)) for p in parents
        ),
        "heartbeat": is_heartbeat_enabled(study._storage),
        "spans": spans,
    }


def rates(spans: list[dict[str, Any]], wall: float) -> dict[str, Any]:
    """Trials per hour: steady (every worker running trials) and overall (the whole command)."""
    done = [s for s in spans if s["start"] is not None and s["end"] is not None]
    by_worker: dict[str, list[dict[str, Any]]] = {}
    for s in done:
        by_worker.setdefault(str(s["worker"]), []).append(s)
    first = max(min(s["start"] for s in ss) for ss in by_worker.values())
    last = min(max(s["end"] for s in ss) for ss in by_worker.values())
    inside = [s for s in done if first < s["end"] <= last]
    window = last - first
    durations = sorted(s["end"] - s["start"] for s in done)
    return {
        "steady_window_s": window,
        "steady_trials": len(inside),
        "trials_per_hour": 3600 * len(inside) / window if window > 0 else None,
        "overall_trials_per_hour": 3600 * len(done) / wall,
        "trial_seconds_median": statistics.median(durations),
        "trial_seconds_p90": durations[int(0.9 * (len(durations) - 1))],
        "start_stagger_s": first - min(s["start"] for s in done),
    }


def _cpu_busy_s() -> float:
    """CPU seconds spent by the whole machine (all processes, all cores) since boot."""
    fields = [float(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def one_run(
    folder: Path, *, storage_kind: str, storage: str, tracking_kind: str, n: int,
    trials: int, epoch_s: float,
) -> dict[str, Any]:  # fmt: skip
    """Run ``tuning run --workers n`` once in ``folder`` and read back what it did."""
    folder.mkdir(parents=True)
    with contextlib.ExitStack() as stack:
        if tracking_kind == "server":
            uri = stack.enter_context(mlflow_server(folder))
        else:
            uri = f"sqlite:///{folder / 'mlflow.db'}"
        exp = write_experiment(folder, storage=storage, tracking=uri, trials=trials)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        env.update(
            TUNING_OFFLINE="1", TF_CPP_MIN_LOG_LEVEL="3", TUNING_SYNTHETIC_EPOCH_S=str(epoch_s)
        )
        cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        load0 = os.getloadavg()[0]
        busy0 = _cpu_busy_s()
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, str(WORKER), "run", str(exp), "--workers", str(n)],
            cwd=folder, env=env, capture_output=True, text=True, timeout=1800,
        )  # fmt: skip
        wall = time.perf_counter() - t0
        cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        busy = _cpu_busy_s() - busy0
        output = proc.stdout + proc.stderr
        (folder / "output.log").write_text(output)
        lines = output.splitlines()
        first_line = next((ln for ln in lines if "study '" in ln), "")
        record: dict[str, Any] = {
            "storage": storage_kind,
            "tracking": tracking_kind,
            "workers": n,
            "trials_per_worker": trials,
            "epoch_sleep_s": epoch_s,
            "exit_code": proc.returncode,
            "wall_s": wall,
            "cpu_s": (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime),
            "machine_cpu_s": busy,
            "cores": os.cpu_count(),
            "loadavg_1m_before": load0,
            "loadavg_1m_after": os.getloadavg()[0],
            "locked_lines": sum("database is locked" in ln for ln in lines),
            "traceback_lines": sum("Traceback" in ln for ln in lines),
            "job_first_line": first_line,
            "folder": str(folder),
        }
        record.update(check_stores(exp, n=n, trials=trials, uri=uri))
    record.update(rates(record["spans"], wall))
    record["cpu_s_per_trial"] = record["cpu_s"] / max(record["optuna_trials"], 1)
    # CPU the rest of the machine took meanwhile (other users; the MLflow server is counted here
    # too), as a share of all cores: the noise to read the trial rates against.
    others = max(record["machine_cpu_s"] - record["cpu_s"], 0.0)
    record["others_cpu_share"] = others / (record["wall_s"] * (record["cores"] or 1))
    return record


# --- report -----------------------------------------------------------------------------------


def _median_range(values: list[float]) -> str:
    if not values:
        return "n/a"
    med = statistics.median(values)
    if len(values) == 1:
        return f"{med:,.0f}"
    return f"{med:,.0f} ({min(values):,.0f}–{max(values):,.0f})"


def table(runs: list[dict[str, Any]]) -> str:
    """Median and range over repetitions, per configuration, as a markdown table."""
    head = (
        "| storage | MLflow | workers | trials/h steady | ×1w | trials/h overall | "
        "s/trial (median) | CPU s/trial | others' CPU | dup/lost (Optuna, MLflow) | locked | "
        "exit |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r["storage"], r["tracking"], r["workers"]), []).append(r)
    for (storage, tracking, n), rs in groups.items():
        base = groups.get((storage, tracking, 1), [])
        base_rate = statistics.median(r["trials_per_hour"] for r in base) if base else None
        steady = [r["trials_per_hour"] for r in rs if r["trials_per_hour"]]
        ratio = statistics.median(steady) / base_rate if base_rate and steady else None
        dup = sum(r["optuna_duplicates"] + r["mlflow_duplicates"] for r in rs)
        lost = sum(r["optuna_lost"] + r["mlflow_lost"] + r["mlflow_run_id_mismatch"] for r in rs)
        lines.append(
            f"| {storage} | {tracking} | {n} | {_median_range(steady)} | "
            f"{f'{ratio:.2f}' if ratio else 'n/a'} | "
            f"{_median_range([r['overall_trials_per_hour'] for r in rs])} | "
            f"{statistics.median(r['trial_seconds_median'] for r in rs):.2f} | "
            f"{statistics.median(r['cpu_s_per_trial'] for r in rs):.2f} | "
            f"{100 * statistics.median(r['others_cpu_share'] for r in rs):.0f} % | "
            f"{dup}/{lost} | {sum(r['locked_lines'] for r in rs)} | "
            f"{','.join(str(r['exit_code']) for r in rs)} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--storages", nargs="+", choices=STORAGES, default=list(STORAGES))
    ap.add_argument("--tracking", nargs="+", choices=TRACKING, default=list(TRACKING))
    ap.add_argument("--workers", nargs="+", type=int, default=[1, 2, 4, 8])
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--trials", type=int, default=40, help="trials per worker")
    ap.add_argument("--epoch-sleep", type=float, default=0.2, help="seconds per synthetic epoch")
    args = ap.parse_args(argv)

    workdir: Path = args.workdir.resolve()
    if workdir.exists() and any(workdir.iterdir()):
        ap.error(f"{workdir} is not empty: give a fresh --workdir")
    workdir.mkdir(parents=True, exist_ok=True)
    out: Path = args.out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    pg = Postgres(prefix="tuning-pg-bench-") if "postgres" in args.storages else None
    runs: list[dict[str, Any]] = []
    commit = subprocess.run(
        ["git", "-C", str(HERE), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    report: dict[str, Any] = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "commit": commit or None,
        "cores": os.cpu_count(),
        "runs": runs,
    }
    try:
        for rep in range(args.reps):  # repetitions outermost: slow drifts hit every setup alike
            for storage_kind in args.storages:
                for tracking_kind in args.tracking:
                    for n in args.workers:
                        name = f"{storage_kind}-{tracking_kind}-{n}w-r{rep}"
                        if storage_kind == "postgres":
                            assert pg is not None
                            storage = pg.url(pg.new_database())
                        else:
                            storage = LOCAL[storage_kind]
                        record = one_run(
                            workdir / name, storage_kind=storage_kind, storage=storage,
                            tracking_kind=tracking_kind, n=n, trials=args.trials,
                            epoch_s=args.epoch_sleep,
                        )  # fmt: skip
                        record["rep"] = rep
                        runs.append(record)
                        out.write_text(json.dumps(report, indent=1, default=str))
                        print(
                            f"{name}: {record['trials_per_hour'] or 0:,.0f} trials/h steady, "
                            f"{record['overall_trials_per_hour']:,.0f} overall, "
                            f"dup {record['optuna_duplicates']}+{record['mlflow_duplicates']}, "
                            f"lost {record['optuna_lost']}+{record['mlflow_lost']}, "
                            f"locked {record['locked_lines']}, exit {record['exit_code']}, "
                            f"wall {record['wall_s']:.0f}s, "
                            f"others' CPU {100 * record['others_cpu_share']:.0f} %",
                            flush=True,
                        )
    finally:
        if pg is not None:
            pg.stop()
    print()
    print(table(runs))
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
