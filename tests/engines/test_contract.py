"""One contract, every engine: the same MLflow names, resume, budget and errors.

As Optuna runs one storage test suite against every storage, these tests run against each
engine in ``tuning.engines.ENGINES``; an engine added there is held to the same contract.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import TINY_SPACE, nothing_created, one_line_error
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from tuning.cli import app
from tuning.engines import ENGINES, load
from tuning.engines.base import Engine

runner = CliRunner()
TRAINING = {"max_epochs", "patience", "batch_size"}
TRIAL_METRICS = {"objective", "best_epoch", "epochs_trained", "n_params", "train_seconds"}
SEARCH_FOLDER = {"optuna": "optuna.db", "keras_tuner": "kt_studies"}

pytestmark = pytest.mark.parametrize("engine", sorted(ENGINES))


def _runs(workdir: Path, experiment: str) -> tuple[list, list]:
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no MLflow experiment {experiment!r}"
    runs = list(client.search_runs([exp.experiment_id], max_results=1000))
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, children


def _contexts(run) -> set[str]:  # noqa: ANN001
    return {
        {t.key: t.value for t in i.tags}["mlflow.data.context"] for i in run.inputs.dataset_inputs
    }


def _run(exp: Path, engine: str, *args: str):  # noqa: ANN202
    return runner.invoke(app, ["run", str(exp), "--set", f"study.engine={engine}", *args])


def test_is_an_engine(engine: str) -> None:
    cls = load(engine)
    assert issubclass(cls, Engine) and cls.name == engine and not cls.__abstractmethods__


def test_same_mlflow_names_and_resume(make_experiment, workdir: Path, engine: str) -> None:
    exp = make_experiment("contract", training__max_epochs=2)
    result = _run(exp, engine)
    assert result.exit_code == 0, result.output
    assert "job finished: 2 trial(s) run (2 complete, 0 pruned, 0 failed)" in result.stdout
    assert "test_accuracy=" in result.stdout and "this job's best model (trial" in result.stdout

    parents, children = _runs(workdir, "contract")
    assert len(parents) == 1 and len(children) == 2
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["study"] == "contract" and parent.data.tags["engine"] == engine
    assert {"backend", "devices", "host", "pid"} <= set(parent.data.tags)
    assert {"best_value", "test_accuracy", "n_complete", "job_seconds"} <= set(parent.data.metrics)
    assert "best_trial" in parent.data.params and "model_trial" in parent.data.tags
    assert _contexts(parent) == {"train", "validation", "test"}
    conditional = {n for n, s in TINY_SPACE.items() if isinstance(s, dict) and "when" in s}
    for child in children:
        names = set(child.data.params)
        assert (set(TINY_SPACE) - conditional) | TRAINING <= names <= set(TINY_SPACE) | TRAINING
        assert child.info.run_name == f"trial-{child.data.tags['trial_number']}"
        assert child.info.status == "FINISHED" and child.data.tags["state"] == "complete"
        assert child.data.tags["study"] == "contract"
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert TRIAL_METRICS <= set(child.data.metrics)
        assert _contexts(child) == {"train", "validation"}
    assert sorted(int(c.data.tags["trial_number"]) for c in children) == [0, 1]

    # The same command again resumes the same search and adds its trials.
    again = _run(exp, engine, "--n-trials", "1")
    assert again.exit_code == 0, again.output
    assert "resumed with 2 trials" in again.stdout
    parents, children = _runs(workdir, "contract")
    assert len(parents) == 2 and len(children) == 3
    assert sorted(int(c.data.tags["trial_number"]) for c in children) == [0, 1, 2]
    assert all(r.info.status == "FINISHED" for r in parents + children)
    assert _stored_trials(engine, workdir, "contract") == 3


def _stored_trials(engine: str, workdir: Path, name: str) -> int:
    """Trials in the engine's own store: the Optuna study, or the KerasTuner project folder."""
    if engine == "optuna":
        import optuna

        return len(optuna.load_study(study_name=name, storage="sqlite:///optuna.db").trials)
    return len(list((workdir / "kt_studies" / name).glob("trial_*/trial.json")))


def test_budget_is_this_jobs(make_experiment, workdir: Path, engine: str) -> None:
    exp = make_experiment("budget", study__n_trials=3, training__max_epochs=1)
    result = _run(exp, engine, "--n-trials", "1")
    assert result.exit_code == 0, result.output
    _, children = _runs(workdir, "budget")
    assert len(children) == 1


def test_a_failing_trial_fails_alone(make_experiment, workdir: Path, engine: str) -> None:
    # A learning rate of 10 diverges whatever the width (KerasTuner runs no config twice).
    space = {
        "n_hidden": 2,
        "n_neurons": {"type": "int", "low": 32, "high": 64},
        "optimizer": "sgd",
        "learning_rate": 10.0,
    }
    exp = make_experiment(
        "diverge",
        space=space,
        dataset={"name": "diabetes"},
        objective={"metric": "val_loss", "direction": "minimize"},
        study__n_trials=2,
        training__max_epochs=5,
    )
    result = _run(exp, engine)
    assert result.exit_code == 1 and "no trial completed" in result.stderr
    parents, children = _runs(workdir, "diverge")
    assert [r.info.status for r in children] == ["FAILED", "FAILED"]  # the search went on
    assert all("learning rate too high" in r.data.tags["reason"] for r in children)
    assert parents[0].info.status == "FINISHED"


def test_bad_input_creates_nothing(make_experiment, workdir: Path, engine: str) -> None:
    exp = make_experiment("bad")
    result = _run(exp, engine, "--tracking-uri", "http://127.0.0.1:9")
    one_line_error(result, "tracking.uri", "does not answer", "Fix:")
    nothing_created(workdir)
    assert not (workdir / SEARCH_FOLDER[engine]).exists()
