"""Scheduled and parallel jobs: --workers, --time-budget, SIGTERM, `tuning status`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import ROOT, by_trial_number, mlflow_runs, parents_and_children, wait_for_trials
from typer.testing import CliRunner

from tuning.cli import _duration, app


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }


def test_two_workers_share_one_study(make_experiment, workdir: Path) -> None:
    exp = make_experiment(
        "pair", study__n_trials=2, study__sampler={"type": "random"}, training__max_epochs=1
    )
    proc = subprocess.run(
        [sys.executable, "-m", "tuning", "run", str(exp), "--workers", "2"],
        cwd=workdir, env=_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "[worker 0] " in proc.stdout and "[worker 1] " in proc.stdout
    study = optuna.load_study(study_name="pair", storage="sqlite:///optuna.db")
    assert sorted(t.number for t in study.trials) == [0, 1, 2, 3]  # unique numbers
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    # Workers started together must not sample the same points.
    assert len({tuple(sorted(t.params.items())) for t in study.trials}) == 4
    runs = mlflow_runs(workdir, "pair")
    parents, children = parents_and_children(runs)
    assert len(parents) == 2 and len(children) == 4  # one parent per worker
    assert all(r.data.tags["study"] == "pair" and r.info.status == "FINISHED" for r in runs)
    for parent in parents:  # each parent records only its own trials as this job's
        assert parent.data.metrics["job_trials"] == 2
        assert parent.data.metrics["n_trials"] >= 2


def test_four_synthetic_workers_record_every_trial_once(make_experiment, workdir: Path) -> None:
    """`tuning run --workers 4` on the default local storage, with trials that only sleep.

    Runs the real command line and `run_workers` through benchmarks/synthetic_worker.py, which
    puts a stand-in for Keras in every worker (see benchmarks/workers.py for the measurements).
    """
    exp = make_experiment(
        "four",
        study__n_trials=5,
        study__sampler={"type": "random"},
        tracking__log_models="none",  # the stand-in model is no Keras model
    )
    data = yaml.safe_load(exp.read_text())
    del data["study"]["storage"]  # the default, whatever it is
    exp.write_text(yaml.safe_dump(data))
    env = {**_env(), "TUNING_SYNTHETIC_EPOCH_S": "0.05"}
    script = ROOT / "benchmarks" / "synthetic_worker.py"
    proc = subprocess.run(
        [sys.executable, str(script), "run", str(exp), "--workers", "4"],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    assert "database is locked" not in output
    assert all(f"[worker {i}] " in proc.stdout for i in range(4))

    lines = proc.stdout.splitlines()
    assert lines[0] == "starting 4 workers on study 'four' in sqlite:///optuna.db", lines[0]
    first = [line for line in lines if "] study 'four' (" in line]  # each worker's first line
    assert len(first) == 4 and all("sqlite:///optuna.db" in line for line in first), first
    study = optuna.load_study(study_name="four", storage="sqlite:///optuna.db")
    trials = study.get_trials(deepcopy=False)
    assert sorted(t.number for t in trials) == list(range(20))  # all there, each number once
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)

    runs = mlflow_runs(workdir, "four")
    parents, kids = parents_and_children(runs)
    children = by_trial_number(kids)
    assert len(parents) == 4 and len(kids) == len(children) == 20  # one child per trial
    for t in trials:
        assert children[t.number].info.run_id == t.user_attrs["mlflow_run_id"]
    per_parent = [
        sum(r.data.tags["mlflow.parentRunId"] == p.info.run_id for r in children.values())
        for p in parents
    ]
    assert per_parent == [5, 5, 5, 5]
    assert all(r.info.status == "FINISHED" for r in runs)


def test_sigterm_ends_the_trial_killed_and_the_job_130(make_experiment, workdir: Path) -> None:
    exp = make_experiment("term", study__n_trials=1, training__max_epochs=100_000)
    exp.write_text(exp.read_text().replace("patience: 2", "patience: 100000"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "tuning", "run", str(exp)],
        cwd=workdir, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    wait_for_trials("term", proc, lambda ts: bool(ts) and len(ts[0].intermediate_values) >= 2)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out[-3000:]
    runs = mlflow_runs(workdir, "term")
    statuses = sorted(r.info.status for r in runs)
    assert statuses == ["KILLED", "KILLED"], statuses  # the trial in flight and the parent
    study = optuna.load_study(study_name="term", storage="sqlite:///optuna.db")
    assert [t.state.name for t in study.trials] == ["FAIL"]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("3600", 3600.0),
        ("90s", 90.0),
        ("45m", 2700.0),
        ("2h", 7200.0),
        ("1h30m", 5400.0),
        ("", None),
    ],
)
def test_time_budget_durations(text: str, seconds: float | None) -> None:
    assert _duration(text) == seconds


def test_bad_time_budget_is_a_user_error(make_experiment, workdir: Path) -> None:
    result = CliRunner().invoke(
        app, ["run", str(make_experiment("tb")), "--time-budget", "2 days"]
    )
    assert result.exit_code == 2
    assert "--timeout: expected a duration (got '2 days')" in result.stderr


def test_status_lists_studies_with_their_champion(make_experiment, workdir: Path) -> None:
    exp = make_experiment(
        "stat",
        study__n_trials=1,
        training__max_epochs=1,
        tracking={"uri": "sqlite:///mlflow.db", "register_as": "m"},
    )
    assert CliRunner().invoke(app, ["run", str(exp), "-q"]).exit_code == 0
    result = CliRunner().invoke(
        app, ["status", "--tracking-uri", f"sqlite:///{workdir / 'mlflow.db'}"]
    )
    assert result.exit_code == 0, result.output
    line = result.stdout.strip()
    assert line.startswith("stat: 1 trials (1 complete); best ")
    assert line.endswith("champion m v1")
