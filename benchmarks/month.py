"""A month in an hour: ~30 short nights of one scheduled experiment on a CSV that grows nightly.

What it does: in a fresh folder, one experiment (a CSV of scikit-learn's breast-cancer rows, a
small space, ``register_as: nightly-mlp``) is run as the real command line, ``python -m tuning
run``, once per "night". The CSV gains rows every night. On chosen nights:

- ``widen``: a numeric range of the space is widened (Optuna keeps the study);
- ``choice``: a choice is added to ``activation`` (a new version of the study);
- ``together``: two jobs start at the same moment;
- ``kill``: the job is killed with ``kill -9`` while a trial runs, and the next night starts
  at once;
- ``drop``: a choice is removed from ``activation`` (another version: put it the night after a
  kill, and the new version's job must still end the killed job's trial and runs);
- ``weak``: that night's job is a smoke run (1 epoch at learning rate 1e-4), so the next
  better model must win the paired test to move ``@champion``;
- ``column``: a feature column is gone from that night on (a new data version; the champion,
  which needs the column, cannot score today's rows: ``tracking.stale_champion`` decides).

At the end it checks what must hold after a month: every night but the killed one exited 0;
nothing is RUNNING in Optuna (any version) or in MLflow; every trial this month ran has its
MLflow run, ended, under a parent of its own study version, and every trial run its Optuna trial
(nothing lost, nothing doubled); every parent run carries its lineage tags and the versions form
one chain; ``@champion`` moved only with a recorded paired test (or, where the champion could not
score today's data, the recorded rule). It prints a markdown table (nights, trials, versions,
champion moves, seconds per night) and writes every night's figures to ``--out``.

Run it (from the repository root)::

    python benchmarks/month.py --nights 30 --out benchmarks/results/month-30.json

``tests/test_month.py`` runs it with a few nights (marked slow). Exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import experiment_files  # benchmarks/experiment_files.py
import yaml

ROOT = Path(__file__).resolve().parents[1]

SPACE: dict[str, Any] = {
    "n_hidden": {"type": "int", "low": 1, "high": 2},
    "n_neurons": {"type": "int", "low": 8, "high": 32, "log": True},
    "activation": {"type": "categorical", "choices": ["relu", "elu"]},
    "learning_rate": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
    "batch_size": 32,
}


def experiment(trials: int, epochs: int) -> dict[str, Any]:
    return experiment_files.experiment(
        "nightly",
        dataset={"path": "rows.csv", "target": "target"},
        study__sampler={"type": "tpe", "n_startup_trials": 3},
        study__n_trials=trials,
        training={"max_epochs": epochs, "early_stopping": {"patience": 3}},
        tracking__register_as="nightly-mlp",
    )


def write_rows(work: Path, rows: int, drop: tuple[str, ...] = ()) -> None:
    """The first ``rows`` rows of breast cancer (8 features, less ``drop``): the table grows
    every night."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer(as_frame=True)
    frame = data.frame.iloc[:rows, :8].drop(columns=list(drop)).copy()
    frame["target"] = data.target[:rows].map({0: "malignant", 1: "benign"})
    tmp = work / "rows.csv.tmp"
    frame.to_csv(tmp, index=False)
    tmp.replace(work / "rows.csv")


WEAK = ["--set", "training.max_epochs=1", "--set", "search_space.learning_rate=0.0001"]


def start(work: Path, env: dict[str, str], extra: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tuning", "run", "exp.yaml", *extra],
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def running_trials(work: Path) -> int:
    """Trial runs RUNNING in MLflow (a trial's run opens once Optuna's trial runs)."""
    db = work / "mlflow.db"
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return int(
                conn.execute(
                    "SELECT COUNT(*) FROM runs r JOIN tags t ON r.run_uuid = t.run_uuid "
                    "WHERE r.status = 'RUNNING' AND t.key = 'tuning.role' AND t.value = 'trial'"
                ).fetchone()[0]
            )
    except sqlite3.Error:
        return 0


def kill_mid_trial(proc: subprocess.Popen[str], work: Path, limit: float = 120.0) -> bool:
    """``kill -9`` the job once one of its trials runs; whether it was caught mid-trial."""
    end = time.monotonic() + limit
    while time.monotonic() < end and proc.poll() is None:
        if running_trials(work):
            time.sleep(0.3)  # inside the trial's training
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.05)
    return False


def night(work: Path, env: dict[str, str], event: str | None) -> list[dict[str, Any]]:
    t0 = time.perf_counter()
    extra = WEAK if event == "weak" else []
    procs = [start(work, env, extra) for _ in range(2 if event == "together" else 1)]
    killed = kill_mid_trial(procs[0], work) if event == "kill" else False
    out = []
    for proc in procs:
        text, _ = proc.communicate(timeout=900)
        lines = text.splitlines()
        out.append(
            {
                "rc": proc.returncode,
                "killed": killed,
                "seconds": round(time.perf_counter() - t0, 2),
                "changes": [x for x in lines if "since the study's last job" in x],
                "registered": [x for x in lines if x.startswith("registered ")],
                "tail": lines[-3:] if proc.returncode else [],
            }
        )
    return out


def plan(nights: int, events: dict[str, int]) -> dict[int, str]:
    return {n: name for name, n in events.items() if 1 <= n <= nights}


def default_events(nights: int) -> dict[str, int]:
    return {
        "weak": 1,
        "widen": max(2, nights * 8 // 30),
        "choice": max(3, nights * 12 // 30),
        "together": max(4, nights * 17 // 30),
        "kill": max(5, nights * 22 // 30),
        "drop": max(6, nights * 23 // 30),
        "column": max(7, nights * 26 // 30),
    }


def checks(
    work: Path, results: list[list[dict[str, Any]]], schedule: dict[int, str]
) -> dict[str, Any]:
    """What must hold after the month; each entry ``name -> (ok, detail)``."""
    import optuna
    from mlflow.tracking import MlflowClient

    from tuning import lineage

    url = f"sqlite:///{work / 'optuna.db'}"
    chain = lineage.versions(url, "nightly")
    studies = {s.study_name: s for s in optuna.get_all_study_summaries(url)}
    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    (exp,) = [e for e in client.search_experiments() if e.name == "nightly"]
    runs = client.search_runs([exp.experiment_id], max_results=50_000)
    parents = [r for r in runs if r.data.tags.get("tuning.role") == "job"]
    trial_runs = [r for r in runs if r.data.tags.get("tuning.role") == "trial"]
    out: dict[str, Any] = {}

    bad_nights = [
        i + 1
        for i, jobs in enumerate(results)
        for job in jobs
        if job["rc"] != 0 and not (schedule.get(i + 1) == "kill" and job["killed"])
    ]
    out["every night but the killed one exited 0"] = (not bad_nights, bad_nights)
    killed = [i + 1 for i, jobs in enumerate(results) if any(j["killed"] for j in jobs)]
    out["the kill night was killed mid-trial"] = (
        "kill" not in schedule.values() or bool(killed),
        killed,
    )

    running: list[str] = []
    waiting: list[str] = []  # enqueued by a data version, for the next nights: not a loss
    by_version: dict[str, list[optuna.trial.FrozenTrial]] = {}
    for name in studies:
        trials = optuna.load_study(study_name=name, storage=url).trials
        by_version[name] = trials
        running += [f"{name}#{t.number}" for t in trials if t.state.name == "RUNNING"]
        waiting += [f"{name}#{t.number}" for t in trials if t.state.name == "WAITING"]
    open_runs = [r.info.run_id for r in runs if r.info.status == "RUNNING"]
    out["nothing RUNNING in Optuna"] = (not running, running)
    out["nothing RUNNING in MLflow"] = (not open_runs, open_runs)

    run_of = {(r.data.tags.get("study"), r.data.tags.get("trial_number")): r for r in trial_runs}
    missing, doubled = [], []
    for name, trials in by_version.items():
        for t in trials:
            if (name, str(t.number)) in run_of or t.state.name == "WAITING":
                continue
            if lineage.CARRIED_FROM in t.user_attrs and t.user_attrs.get("mlflow_run_id"):
                continue  # a copy of an earlier version's trial: its run is that trial's
            missing.append(f"{name}#{t.number} ({t.state.name})")
    keys = [(r.data.tags.get("study"), r.data.tags.get("trial_number")) for r in trial_runs]
    doubled = sorted({f"{k[0]}#{k[1]}" for k in keys if keys.count(k) > 1})
    orphans = [f"{s}#{n}" for s, n in keys if s not in by_version or int(n) >= len(by_version[s])]
    parent_ids = {r.info.run_id: r for r in parents}
    wrong_parent = [
        r.info.run_id
        for r in trial_runs
        if r.data.tags.get("mlflow.parentRunId") not in parent_ids
        or parent_ids[r.data.tags["mlflow.parentRunId"]].data.tags.get("study")
        != r.data.tags.get("study")
    ]
    out["every trial has its run, once, under its job's parent"] = (
        not (missing or doubled or orphans or wrong_parent),
        {"missing": missing, "doubled": doubled, "orphans": orphans, "wrong_parent": wrong_parent},
    )

    tags = ("lineage", "study_version", "space_digest", "data_digest", "data_rows")
    untagged = [r.info.run_id for r in parents if any(t not in r.data.tags for t in tags)]
    names = [v.name for v in chain]
    linked = all(chain[i].previous == names[i - 1] for i in range(1, len(chain)))
    stray = sorted(set(studies) - set(names))
    started = sorted({r.data.tags["study"] for r in parents if "version_reason" in r.data.tags})
    out["lineage complete"] = (
        not untagged and linked and not stray and started == sorted(names[1:]),
        {"versions": names, "untagged": untagged, "stray": stray, "started_by_parents": started},
    )

    versions = sorted(
        client.search_model_versions("name='nightly-mlp'"), key=lambda v: int(v.version)
    )
    moves, unjustified = [], []
    for v in versions:
        decision = v.tags.get("champion_decision", "")
        if v.version == "1" or not decision.startswith("moved"):
            continue
        moves.append(v.version)
        tested = v.tags.get("champion_test") not in (None, "", "none") and v.tags.get(
            "champion_p_value"
        )
        if not tested and "cannot score today's data" not in decision:
            unjustified.append(v.version)
    out["champion moved only with a recorded paired test"] = (not unjustified, unjustified)
    out["_figures"] = {
        "versions": [
            {
                "name": v.name,
                "version": v.version,
                "reason": v.reason,
                "trials": len(by_version.get(v.name, [])),
            }
            for v in chain
        ],
        "trial_runs": len(trial_runs),
        "waiting": waiting,
        "trials_by_state": {
            state: sum(1 for r in trial_runs if r.data.tags.get("state") == state)
            for state in ("complete", "pruned", "not_learning", "failed", "killed")
        },
        "carried_copies": sum(
            1
            for name, trials in by_version.items()
            for t in trials
            if lineage.CARRIED_FROM in t.user_attrs and (name, str(t.number)) not in run_of
        ),
        "parents": len(parents),
        "model_versions": len(versions),
        "champion_moves": moves,
    }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nights", type=int, default=30)
    parser.add_argument("--trials", type=int, default=2, help="trials per night")
    parser.add_argument("--epochs", type=int, default=6, help="max epochs per trial")
    parser.add_argument("--start-rows", type=int, default=200)
    parser.add_argument("--rows-per-night", type=int, default=12)
    parser.add_argument(
        "--event",
        action="append",
        default=[],
        metavar="NAME=NIGHT",
        help="widen, choice, together, kill (default: spread over the month)",
    )
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    events = default_events(args.nights)
    for item in args.event:
        name, _, n = item.partition("=")
        events[name] = int(n)
    schedule = plan(args.nights, events)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="month-"))
    work.mkdir(parents=True, exist_ok=True)
    space = json.loads(json.dumps(SPACE))
    (work / "space.yaml").write_text(yaml.safe_dump(space))
    (work / "exp.yaml").write_text(yaml.safe_dump(experiment(args.trials, args.epochs)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}"

    results: list[list[dict[str, Any]]] = []
    t_start = time.perf_counter()
    dropped: tuple[str, ...] = ()
    for n in range(1, args.nights + 1):
        event = schedule.get(n)
        if event == "column":
            dropped = ("mean smoothness",)
        write_rows(work, min(569, args.start_rows + (n - 1) * args.rows_per_night), dropped)
        if event == "widen":
            space["learning_rate"]["low"] = 3e-4
            (work / "space.yaml").write_text(yaml.safe_dump(space))
        elif event == "choice":
            space["activation"]["choices"].append("gelu")
            (work / "space.yaml").write_text(yaml.safe_dump(space))
        elif event == "drop":
            space["activation"]["choices"].remove("elu")
            (work / "space.yaml").write_text(yaml.safe_dump(space))
        jobs = night(work, env, event)
        results.append(jobs)
        codes = ",".join(str(j["rc"]) for j in jobs)
        notes = "; ".join(c[:140] for j in jobs for c in j["changes"][:1])
        print(
            f"night {n:2d} {event or '':8s} rc={codes:5s} {jobs[-1]['seconds']:6.1f}s {notes}",
            flush=True,
        )
        for j in jobs:
            for line in j["tail"]:
                print(f"    | {line}", flush=True)
    total = time.perf_counter() - t_start

    found = checks(work, results, schedule)
    figures = found.pop("_figures")
    seconds = [j["seconds"] for jobs in results for j in jobs[-1:]]
    summary = {
        "nights": args.nights,
        "schedule": {str(k): v for k, v in schedule.items()},
        "seconds_total": round(total, 1),
        "seconds_per_night_median": round(statistics.median(seconds), 1),
        "seconds_per_night_range": [min(seconds), max(seconds)],
        **figures,
        "checks": {k: {"ok": bool(ok), "detail": d} for k, (ok, d) in found.items()},
        "nights_detail": results,
        "workdir": str(work),
    }
    print()
    head = ["nights", "versions", "trial runs", "parent runs", "model versions"]
    head += ["champion moves", "s/night median (range)", "total"]
    print("| " + " | ".join(head) + " |")
    print("|---:|---:|---:|---:|---:|---:|---|---:|")
    cells = [args.nights, len(figures["versions"]), figures["trial_runs"], figures["parents"]]
    cells += [figures["model_versions"], len(figures["champion_moves"])]
    cells += [f"{summary['seconds_per_night_median']} ({min(seconds)}-{max(seconds)})"]
    print("| " + " | ".join(map(str, cells)) + f" | {total:.0f} s |")
    print()
    for name, (ok, detail) in found.items():
        print(f"- [{'x' if ok else ' '}] {name}" + ("" if ok else f": {detail}"))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=1, default=str))
    return 0 if all(ok for ok, _ in found.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
