"""Where a budgeted job's epochs went (issue 26): per configuration, continued, restarted.

Reads jobs after the fact, from what a user has too:

- a job's working folder (``optuna.db`` and ``mlflow.db`` beside each other, as
  ``benchmarks/trade_offs.py`` and ``benchmarks/peers.py`` leave them): the Optuna trials (state,
  ``not_learning``, epochs, seconds) and the parent run's metrics (``epochs_trained_total``,
  ``epochs_continued``, ``epochs_rechecks``, ``configs_evaluated``, ``seconds_build``,
  ``seconds_compile``, ``job_seconds``);
- or a job's terminal output (``tuning run`` without ``--json``, as the issue-14 runs in
  ``results/seeds-600-logs/`` kept it), for jobs from before these metrics existed.

Reported per job: configurations evaluated, epochs the search trained and per configuration,
trials that ended as not learning and their seconds, trials that trained at chance to the end
(a best value under ``--chance``: what the not-learning rule now stops), and **restarted epochs**:
epochs of top trials cut by their slice of the budget that the re-check trained again from new
weights instead of continuing (before issue 26 every re-checked cut trial; after, none: the
re-check continues them). Build + compile seconds per new model come from the parent run.

    python benchmarks/budget_use.py /work/benchout/to600/seed*/single
    python benchmarks/budget_use.py benchmarks/results/seeds-600-logs/tool-seed*.log
"""

from __future__ import annotations

import argparse
import json
import re
import sqlite3
import sys
from pathlib import Path
from typing import Any

TRIAL = re.compile(
    r"^trial\s+(\d+)\s+(\w+)\s+\S+=(\S+)\s+epochs=(\d+)\s+([\d.]+)s.*?(?:\[(.*)\])?$"
)
RECHECK = re.compile(r"^recheck \([^)]*\): (.*); best by mean")
TIME = re.compile(r"^time: .*?build ([\d.]+)s, compile ([\d.]+)s")


def from_log(path: Path, chance: float) -> dict[str, Any]:
    """A job's figures from its terminal output (issue-14 runs: no parent-run counts)."""
    trials: dict[int, dict[str, Any]] = {}
    rechecked: list[int] = []
    build = compile_ = None
    for line in path.read_text().splitlines():
        if m := TRIAL.match(line):
            n, state, value, epochs, secs, note = m.groups()
            trials[int(n)] = {
                "state": state,
                "value": float(value),
                "epochs": int(epochs),
                "seconds": float(secs),
                "cut": bool(note and note.startswith("cut")),
            }
        elif m := RECHECK.match(line):
            rechecked = [int(x) for x in re.findall(r"#(\d+)", m.group(1))]
        elif m := TIME.match(line):
            build, compile_ = float(m.group(1)), float(m.group(2))
    restarted = sum(trials[n]["epochs"] for n in rechecked if n in trials and trials[n]["cut"])
    return _figures(path.name, trials, chance, restarted=restarted, build=build, compile_=compile_,
                    models=len(trials) + len(rechecked), parent={})  # fmt: skip


def from_folder(folder: Path, chance: float) -> dict[str, Any]:
    """A job's figures from its stores (``optuna.db``, ``mlflow.db``)."""
    trials: dict[int, dict[str, Any]] = {}
    with sqlite3.connect(folder / "optuna.db") as db:
        rows = db.execute("select trial_id, number, state from trials").fetchall()
        attrs: dict[int, dict[str, Any]] = {}
        for tid, key, value in db.execute(
            "select trial_id, key, value_json from trial_user_attributes"
        ):
            attrs.setdefault(tid, {})[key] = json.loads(value)
        values = dict(db.execute("select trial_id, value from trial_values where objective = 0"))
        curves: dict[int, list[float]] = {}
        for tid, value in db.execute(
            "select trial_id, intermediate_value from trial_intermediate_values order by step"
        ):
            curves.setdefault(tid, []).append(value)
    for tid, number, state in rows:
        a = attrs.get(tid, {})
        best = values.get(tid)
        if best is None and curves.get(tid):
            best = max(v for v in curves[tid] if v is not None)
        trials[number] = {
            "state": "not_learning" if "not_learning" in a else state.lower(),
            "value": best,
            "epochs": int(a.get("epochs_trained", 0)),
            "seconds": float(a.get("train_seconds", 0.0)),
            "cut": "cut" in a,
        }
    with sqlite3.connect(folder / "mlflow.db") as db:
        parent = dict(
            db.execute(
                "select m.key, m.value from latest_metrics m "
                "join tags t on t.run_uuid = m.run_uuid "
                "where t.key = 'tuning.role' and t.value = 'job'"
            ).fetchall()
        )
        continued = db.execute("select count(*) from tags where key = 'continued'").fetchone()[0]
    built = int(parent.get("configs_evaluated", len(trials))) + continued
    built += db_rechecks(folder)
    return _figures(
        folder.as_posix(),
        trials,
        chance,
        restarted=int(parent.get("epochs_thrown_away", 0)),
        build=parent.get("seconds_build"),
        compile_=parent.get("seconds_compile"),
        models=built,
        parent=parent,
    )


def db_rechecks(folder: Path) -> int:
    """The re-check's re-runs (each a new model) in a job's MLflow store."""
    with sqlite3.connect(folder / "mlflow.db") as db:
        return int(
            db.execute(
                "select count(*) from tags where key = 'tuning.role' and value = 'recheck'"
            ).fetchone()[0]
        )


def _figures(
    name: str,
    trials: dict[int, dict[str, Any]],
    chance: float,
    *,
    restarted: int,
    build: float | None,
    compile_: float | None,
    models: int,
    parent: dict[str, float],
) -> dict[str, Any]:
    search_epochs = sum(t["epochs"] for t in trials.values())
    at_chance = [
        t for t in trials.values()
        if t["value"] is not None and t["value"] < chance and t["state"] != "not_learning"
    ]  # fmt: skip
    stopped = [t for t in trials.values() if t["state"] == "not_learning"]
    out: dict[str, Any] = {
        "job": name,
        "configurations": len(trials),
        "states": {
            s: sum(t["state"] == s for t in trials.values())
            for s in sorted({t["state"] for t in trials.values()})
        },  # fmt: skip
        "search_epochs": search_epochs,
        "epochs_per_configuration": round(search_epochs / max(len(trials), 1), 1),
        "not_learning": len(stopped),
        "not_learning_seconds": round(sum(t["seconds"] for t in stopped), 1),
        "not_learning_epochs": sum(t["epochs"] for t in stopped),
        "at_chance_to_the_end": len(at_chance),
        "at_chance_seconds": round(sum(t["seconds"] for t in at_chance), 1),
        "restarted_epochs": restarted,
        "continued_epochs": int(parent.get("epochs_continued", 0)),
        "recheck_epochs": int(parent.get("epochs_rechecks", 0)),
        "epochs_trained_total": int(parent.get("epochs_trained_total", 0)) or None,
    }
    # Of the search's epochs (the logs of older jobs do not count the re-check's).
    out["restarted_share"] = round(restarted / search_epochs, 3) if search_epochs else None
    if build is not None and compile_ is not None:
        out["build_compile_s"] = round(build + compile_, 1)
        out["models_built"] = models
        out["build_compile_s_per_model"] = round((build + compile_) / max(models, 1), 2)
        if parent.get("job_seconds"):
            out["build_compile_share"] = round((build + compile_) / parent["job_seconds"], 3)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("jobs", nargs="+", type=Path, help="job folders or terminal logs")
    ap.add_argument("--chance", type=float, default=0.2, help="a best value under it: at chance")
    args = ap.parse_args(argv)
    for job in args.jobs:
        fig = from_folder(job, args.chance) if job.is_dir() else from_log(job, args.chance)
        json.dump(fig, sys.stdout)
        sys.stdout.write("\n")


if __name__ == "__main__":
    main()
