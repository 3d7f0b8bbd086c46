"""A job killed with SIGKILL mid-trial: the next job keeps every finished trial, ends its runs."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import optuna
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from tuning.cli import app


def _wait_for_running_trial(storage: str, study: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else "job ended early"
        try:
            trials = optuna.load_study(study_name=study, storage=storage).trials
        except KeyError:  # the study does not exist yet
            trials = []
        if any(
            t.state == optuna.trial.TrialState.RUNNING and len(t.intermediate_values) >= 2
            for t in trials
        ):
            return
        time.sleep(0.5)
    raise AssertionError("no trial started within 180 s")


def test_kill_9_mid_trial_then_rerun(make_experiment, workdir: Path) -> None:
    exp = make_experiment(
        "killed",
        study__heartbeat_interval=1,
        study__n_trials=2,
        training__max_epochs=2,
    )
    storage = "sqlite:///optuna.db"
    # A first job finishes two trials, then a second one is killed in the middle of a long trial.
    assert CliRunner().invoke(app, ["run", str(exp)]).exit_code == 0
    proc = subprocess.Popen(
        [sys.executable, "-m", "tuning", "run", str(exp), "--n-trials", "1",
         "--set", "training.max_epochs=1000", "--set", "training.early_stopping.patience=1000"],
        cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        _wait_for_running_trial(storage, "killed", proc)
    finally:
        proc.kill()
        proc.wait()
    time.sleep(3)  # past the heartbeat's grace period (2 x 1 s)

    result = CliRunner().invoke(app, ["run", str(exp), "--n-trials", "1"])
    assert result.exit_code == 0, result.output
    assert "ended 2 MLflow run(s) left RUNNING by a process that died" in result.stdout

    study = optuna.load_study(study_name="killed", storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE", "FAIL", "COMPLETE"]
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    exp_id = client.get_experiment_by_name("killed").experiment_id
    runs = client.search_runs([exp_id])
    assert all(r.info.status != "RUNNING" for r in runs)
    trial_runs = {
        int(r.data.tags["trial_number"]): r for r in runs if "mlflow.parentRunId" in r.data.tags
    }
    assert sorted(trial_runs) == [0, 1, 2, 3]
    assert trial_runs[2].info.status == "KILLED" and trial_runs[2].data.tags["state"] == "failed"
    assert [trial_runs[n].info.status for n in (0, 1, 3)] == ["FINISHED"] * 3
    jobs = sorted(
        (r for r in runs if "mlflow.parentRunId" not in r.data.tags),
        key=lambda r: r.info.start_time,
    )
    assert [j.info.status for j in jobs] == ["FINISHED", "KILLED", "FINISHED"]
    assert "died" in jobs[1].data.tags["reason"]
