"""End to end: `tuning run` on digits with tiny trials, checked against DESIGN.md's layout."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import optuna
import pytest
from conftest import TINY_SPACE
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from tuning import records
from tuning.cli import app

runner = CliRunner()


def _runs(uri: str, experiment: str) -> list[mlflow.entities.Run]:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no MLflow experiment {experiment!r}"
    return list(client.search_runs([exp.experiment_id], max_results=1000))


def _split(runs: list[mlflow.entities.Run]) -> tuple[list, list]:
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, children


def test_run_records_the_mlflow_layout_and_resumes(make_experiment, workdir: Path) -> None:
    exp = make_experiment("layout")
    result = runner.invoke(app, ["run", str(exp)])
    assert result.exit_code == 0, result.output
    assert "trial   0" in result.stdout and "trial   1" in result.stdout

    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    client = MlflowClient(uri)
    mexp = client.get_experiment_by_name("layout")
    # The UI must open on the training-runs table, not the GenAI overview.
    assert mexp.tags["mlflow.experimentKind"] == "custom_model_development"
    parents, children = _split(_runs(uri, "layout"))
    assert len(parents) == 1 and len(children) == 2
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["study"] == "layout"

    study = optuna.load_study(study_name="layout", storage="sqlite:///optuna.db")
    assert len(study.trials) == 2
    for child in children:
        tags = child.data.tags
        number = int(tags["trial_number"])
        assert child.info.run_name == f"trial-{number}"
        assert tags["mlflow.parentRunId"] == parent.info.run_id
        assert tags["study"] == "layout"
        assert tags["state"] == "complete"
        assert child.info.status == "FINISHED"
        trial = study.trials[number]
        # Params under the search-space names, plus fixed values and training settings.
        for name, value in trial.params.items():
            assert child.data.params[name] == str(value)
        assert child.data.params["batch_size"] == "128"
        assert child.data.params["max_epochs"] == "3"
        assert ("momentum" in child.data.params) == (trial.params["optimizer"] == "nesterov")
        metrics = child.data.metrics
        for key in ("epochs_trained", "n_params", "train_seconds", "objective"):
            assert key in metrics, key
        assert metrics["objective"] == pytest.approx(trial.value)
        epochs = int(metrics["epochs_trained"])
        assert 1 <= epochs <= 3
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            history = client.get_metric_history(child.info.run_id, key)
            assert sorted(m.step for m in history) == list(range(epochs)), key
        assert trial.user_attrs["mlflow_run_id"] == child.info.run_id

    # The data is every run's dataset input: name, source, digest, the split as context.
    def inputs(run: mlflow.entities.Run) -> dict[str, tuple[str, str, str]]:
        return {
            {t.key: t.value for t in i.tags}["mlflow.data.context"]: (
                i.dataset.name, i.dataset.digest, i.dataset.source
            )
            for i in run.inputs.dataset_inputs
        }  # fmt: skip

    job_inputs = inputs(parent)
    assert sorted(job_inputs) == ["test", "train", "validation"]
    assert all(
        v[0] == "digits" and "sklearn.datasets.load_digits" in v[2] for v in job_inputs.values()
    )
    assert len({v[1] for v in job_inputs.values()}) == 3  # a digest per split
    for child in children:
        assert inputs(child) == {k: job_inputs[k] for k in ("train", "validation")}

    # The parent holds the best trial and the best model, loadable as pyfunc.
    assert parent.data.metrics["best_value"] == pytest.approx(study.best_value)
    assert parent.data.params["best_trial"] == str(study.best_trial.number)
    assert parent.data.params["best_learning_rate"] == str(study.best_params["learning_rate"])
    assert 0 <= parent.data.metrics["test_accuracy"] <= 1
    # The summary prints the best model's test score beside its validation value.
    test = f"test_accuracy={parent.data.metrics['test_accuracy']:.4f}"
    job_best = parent.data.tags["model_trial"]
    line = next(x for x in result.stdout.splitlines() if x.startswith("this job's best model"))
    assert f"(trial {job_best}): val_accuracy=" in line and test in line, line
    best_line = next(x for x in result.stdout.splitlines() if x.startswith("best: trial"))
    assert f"best: trial {study.best_trial.number} val_accuracy=" in best_line
    assert test in best_line, best_line
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"trials.csv", "config.yaml", "optimization_history.png"} <= artifacts
    models = mlflow.search_logged_models(experiment_ids=[mexp.experiment_id], output_format="list")
    assert len(models) == 1 and models[0].source_run_id == parent.info.run_id
    mlflow.set_tracking_uri(uri)
    loaded = mlflow.pyfunc.load_model(f"models:/{models[0].model_id}")
    assert loaded.metadata.signature is not None
    assert loaded.metadata.saved_input_example_info is not None
    from sklearn.datasets import load_digits

    digits = load_digits(as_frame=True)
    rows = digits.data.iloc[:20]  # raw rows, original column names: scaling is in the model
    labels = loaded.predict(rows)
    assert labels.shape == (20,) and set(labels) <= set(range(10))
    # A trained model, not noise: on all 1,797 rows (most of them its training rows) it does at
    # least about as well as the job says it does on its test rows, and far above chance (0.1).
    right = (loaded.predict(digits.data) == digits.target.to_numpy()).mean()
    assert right > max(0.2, parent.data.metrics["test_accuracy"] - 0.1), right
    probs = loaded.predict(rows.iloc[:3], params={"output": "probabilities"})
    assert probs.shape == (3, 10) and list(probs.columns) == [str(i) for i in range(10)]
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-4)

    # Same command again: the same study gains trials, MLflow gets a second parent.
    again = runner.invoke(app, ["run", str(exp), "--n-trials", "1"])
    assert again.exit_code == 0, again.output
    assert "resumed with 2 trials" in again.stdout
    study = optuna.load_study(study_name="layout", storage="sqlite:///optuna.db")
    assert [t.number for t in study.trials] == [0, 1, 2]
    parents, children = _split(_runs(uri, "layout"))
    assert len(parents) == 2 and len(children) == 3
    assert all(r.data.tags["study"] == "layout" for r in parents + children)
    assert all(r.info.status != "RUNNING" for r in parents + children)
    newest = max(parents, key=lambda r: r.info.start_time)
    assert inputs(newest) == job_inputs  # the same rows: the same digests
    # Each parent records the study's best so far, not only its own trials'.
    assert newest.data.metrics["best_value"] == pytest.approx(study.best_value)
    assert newest.data.metrics["n_trials"] == 3


def test_pruned_trials_are_tagged_and_finished(make_experiment, workdir: Path) -> None:
    exp = make_experiment(
        "pruning",
        study__pruner={"type": "median", "n_startup_trials": 1, "n_warmup_steps": 0},
        study__n_trials=5,
        study__sampler={"type": "random"},
        training__max_epochs=4,
        space={
            **TINY_SPACE,
            "learning_rate": {"type": "float", "low": 1e-5, "high": 3e-2, "log": True},
        },
    )
    result = runner.invoke(app, ["run", str(exp)])
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="pruning", storage="sqlite:///optuna.db")
    _, children = _split(_runs(f"sqlite:///{workdir / 'mlflow.db'}", "pruning"))
    by_number = {int(r.data.tags["trial_number"]): r for r in children}
    for t in study.trials:
        run = by_number[t.number]
        assert run.data.tags["state"] == records.state(t)  # pruned, or not_learning
        assert run.info.status == "FINISHED"
        # Intermediate values reach Optuna every epoch, so pruners can work.
        assert len(t.intermediate_values) == run.data.metrics["epochs_trained"]
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    for t in pruned:
        assert "pruned after epoch" in by_number[t.number].data.tags["reason"]


def test_a_crashing_trial_leaves_its_run_failed(make_experiment, workdir, monkeypatch) -> None:
    import tuning.train

    real_fit = tuning.train.fit
    calls = {"n": 0}

    def flaky_fit(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("disk on fire")
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(tuning.train, "fit", flaky_fit)
    exp = make_experiment("crash", study__n_trials=3)
    result = runner.invoke(app, ["run", str(exp)])
    assert result.exit_code != 0
    assert isinstance(result.exception, RuntimeError)  # an internal error keeps its traceback
    parents, children = _split(_runs(f"sqlite:///{workdir / 'mlflow.db'}", "crash"))
    assert len(children) == 2
    states = {int(r.data.tags["trial_number"]): r for r in children}
    assert states[0].info.status == "FINISHED"
    assert states[1].info.status == "FAILED"
    assert states[1].data.tags["state"] == "failed"
    assert "disk on fire" in states[1].data.tags["reason"]
    assert parents[0].info.status == "FAILED"
    # The finished trial is kept and the parent still records the best so far.
    assert parents[0].data.metrics["best_value"] > 0
    study = optuna.load_study(study_name="crash", storage="sqlite:///optuna.db")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL"]


def test_ctrl_c_ends_every_run_killed(make_experiment, workdir, monkeypatch) -> None:
    import tuning.train

    real_fit = tuning.train.fit

    def interrupted_fit(*args, **kwargs):
        on_epoch = kwargs["on_epoch"]

        def hook(epoch, logs):
            on_epoch(epoch, logs)
            if "second" in calls:
                raise KeyboardInterrupt
            calls.add("second")

        return real_fit(*args, **{**kwargs, "on_epoch": hook})

    calls: set[str] = set()
    monkeypatch.setattr(tuning.train, "fit", interrupted_fit)
    exp = make_experiment("interrupt", study__n_trials=3, training__max_epochs=1)
    result = runner.invoke(app, ["run", str(exp)])
    assert result.exit_code == 130, result.output
    parents, children = _split(_runs(f"sqlite:///{workdir / 'mlflow.db'}", "interrupt"))
    assert all(r.info.status != "RUNNING" for r in parents + children)
    by_number = {int(r.data.tags["trial_number"]): r for r in children}
    assert by_number[0].info.status == "FINISHED"
    assert by_number[1].info.status == "KILLED"
    assert by_number[1].data.tags["state"] == "killed"
    assert parents[0].info.status == "KILLED"
    assert "best_value" in parents[0].data.metrics  # the best so far was recorded


def test_quiet_prints_nothing_on_success(make_experiment, workdir: Path) -> None:
    """A fresh process, as a user runs it: no library start-up or INFO lines either."""
    exp = make_experiment("hush", study__n_trials=1, training__max_epochs=2)
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL",)}
    proc = subprocess.run(
        [sys.executable, "-m", "tuning", "run", str(exp), "--quiet"],
        cwd=workdir, capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and proc.stderr == "", (proc.stdout, proc.stderr)
    assert len(optuna.load_study(study_name="hush", storage="sqlite:///optuna.db").trials) == 1
