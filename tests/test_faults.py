"""A job killed with SIGKILL mid-trial: the next job keeps every finished trial, ends its runs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from conftest import by_trial_number, mlflow_runs, parents_and_children, wait_for_trials
from typer.testing import CliRunner

from tuning.cli import app


def test_kill_9_mid_trial_then_rerun(make_experiment, workdir: Path) -> None:
    # Default heartbeat (60 s): the rerun starts at once, long before the heartbeat goes stale.
    exp = make_experiment(
        "killed",
        study__max_retries=1,
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
        wait_for_trials(
            "killed",
            proc,
            lambda ts: any(
                t.state == optuna.trial.TrialState.RUNNING and len(t.intermediate_values) >= 2
                for t in ts
            ),
        )
    finally:
        proc.kill()
        proc.wait()
    status = CliRunner().invoke(app, ["status"])
    assert "1 running (dead: 1)" in status.stdout, status.stdout

    result = CliRunner().invoke(app, ["run", str(exp), "--n-trials", "1"])
    assert result.exit_code == 0, result.output
    assert "marked trial(s) 2 FAIL: their process on this host died" in result.stdout
    assert "ended 2 MLflow run(s) left RUNNING by a process that died" in result.stdout

    study = optuna.load_study(study_name="killed", storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE", "FAIL", "COMPLETE"]
    assert "died" in study.trials[2].user_attrs["reason"]
    # study.max_retries: the dead trial was run again, with the same parameters.
    assert study.trials[3].params == study.trials[2].params
    assert study.trials[3].system_attrs.get("failed_trial") == 2
    runs = mlflow_runs(workdir, "killed")
    assert all(r.info.status != "RUNNING" for r in runs)
    parents, children = parents_and_children(runs)
    trial_runs = by_trial_number(children)
    assert sorted(trial_runs) == [0, 1, 2, 3]
    assert trial_runs[2].info.status == "KILLED" and trial_runs[2].data.tags["state"] == "failed"
    assert [trial_runs[n].info.status for n in (0, 1, 3)] == ["FINISHED"] * 3
    jobs = sorted(parents, key=lambda r: r.info.start_time)
    assert [j.info.status for j in jobs] == ["FINISHED", "KILLED", "FINISHED"]
    assert "died" in jobs[1].data.tags["reason"]


def test_a_trial_failed_after_its_run_finished_is_set_killed_by_the_next_job(
    make_experiment, workdir: Path
) -> None:
    """A process ended trial 2's run FINISHED, then died before Optuna heard the result
    (Optuna failed the trial). The next job's sweep sets that run KILLED, ``state=failed``,
    and remembers where it looked, so later jobs look up only newer failed trials."""
    from conftest import mlflow_client

    exp = make_experiment("late", study__n_trials=2, training__max_epochs=1)
    assert CliRunner().invoke(app, ["run", str(exp)]).exit_code == 0
    study = optuna.load_study(study_name="late", storage="sqlite:///optuna.db")
    lost = study.ask()
    study.tell(lost, state=optuna.trial.TrialState.FAIL)  # as the heartbeat does
    runs = mlflow_runs(workdir, "late", role="trial")
    client = mlflow_client(workdir)
    done = runs[0]
    tags = {**done.data.tags, "trial_number": str(lost.number), "state": "complete"}
    tags = {
        k: v for k, v in tags.items() if not k.startswith("mlflow.") or k == "mlflow.parentRunId"
    }
    copy = client.create_run(done.info.experiment_id, tags=tags).info.run_id
    client.set_terminated(copy, status="FINISHED")

    result = CliRunner().invoke(app, ["run", str(exp), "--n-trials", "1"])
    assert result.exit_code == 0, result.output
    assert "ended 1 MLflow run(s)" in result.stdout, result.stdout
    run = client.get_run(copy)
    assert (run.info.status, run.data.tags["state"]) == ("KILLED", "failed")
    assert "never got the result" in run.data.tags["reason"]
    seen = study._storage.get_study_system_attrs(study._study_id)
    assert seen["tuning:reconciled_from"] == 3  # trials 0-2 were finished at that sweep


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_mlflow_server(workdir: Path, port: int) -> subprocess.Popen:
    import urllib.request

    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server",
         "--backend-store-uri", f"sqlite:///{workdir / 'server.db'}",
         "--artifacts-destination", str(workdir / "artifacts"),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return proc
        except OSError:
            time.sleep(0.5)
    _stop(proc)
    raise AssertionError("mlflow server did not start within 90 s")


def _stop(proc: subprocess.Popen) -> None:
    import signal

    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.mark.slow
def test_tracking_server_goes_away_mid_study(make_experiment, workdir: Path) -> None:
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    exp = make_experiment("away", study__n_trials=200, training__max_epochs=3)
    server = _start_mlflow_server(workdir, port)
    try:
        job = subprocess.Popen(
            [sys.executable, "-m", "tuning", "run", str(exp), "--tracking-uri", uri],
            cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        wait_for_trials(
            "away",
            job,
            lambda ts: sum(t.state == optuna.trial.TrialState.COMPLETE for t in ts) >= 2,
        )
    finally:
        _stop(server)
    out, err = job.communicate(timeout=180)
    assert job.returncode == 3, out[-2000:] + err[-2000:]
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and f"the MLflow tracking server {uri} stopped answering" in lines[0]
    assert "View run" not in out  # MLflow's own two lines per ended run: off (tracking.py)
    study = optuna.load_study(study_name="away", storage="sqlite:///optuna.db")
    finished = [t.number for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(finished) >= 2  # every finished trial is kept

    server = _start_mlflow_server(workdir, port)  # back again: the same command carries on
    try:
        again = CliRunner().invoke(
            app, ["run", str(exp), "--tracking-uri", uri, "--n-trials", "1"]
        )
        assert again.exit_code == 0, again.output
        assert "left RUNNING by a process that died" in again.stdout
        assert "View run" not in again.stdout and "View experiment" not in again.stdout
        runs = mlflow_runs(uri, "away")  # the server's store
        assert all(r.info.status != "RUNNING" for r in runs)
        study = optuna.load_study(study_name="away", storage="sqlite:///optuna.db")
        assert [t.number for t in study.trials if t.number in finished] == finished
        assert study.trials[-1].state == optuna.trial.TrialState.COMPLETE
    finally:
        _stop(server)
