"""The KerasTuner engine: same experiment, same MLflow layout as the Optuna engine, resumable."""

from __future__ import annotations

from pathlib import Path

import keras_tuner as kt
from conftest import TINY_SPACE
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from tuning.cli import app
from tuning.config.space import SearchSpace

runner = CliRunner()
TRAINING = {"max_epochs", "patience", "batch_size"}


def _runs(uri: str, experiment: str) -> tuple[list, list]:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no MLflow experiment {experiment!r}"
    runs = list(client.search_runs([exp.experiment_id], max_results=1000))
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, children


def test_both_engines_record_the_same_layout_and_kt_resumes(
    make_experiment, workdir: Path
) -> None:
    optuna_exp = make_experiment("opt", training__max_epochs=2)
    kt_exp = make_experiment("ktune", training__max_epochs=2)
    result = runner.invoke(app, ["run", str(optuna_exp)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["run", str(kt_exp), "--set", "study.engine=keras_tuner"])
    assert result.exit_code == 0, result.output

    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    _, opt_children = _runs(uri, "opt")
    kt_parents, kt_children = _runs(uri, "ktune")
    assert len(opt_children) == 2 and len(kt_children) == 2
    space_names = set(TINY_SPACE)
    conditional = {n for n, s in TINY_SPACE.items() if isinstance(s, dict) and "when" in s}
    always = (space_names - conditional) | TRAINING
    for child in opt_children + kt_children:
        names = set(child.data.params)
        assert always <= names, sorted(always - names)
        assert names <= space_names | TRAINING, sorted(names - space_names - TRAINING)
        assert ("momentum" in names) == (child.data.params["optimizer"] == "nesterov")
        assert child.data.tags["state"] == "complete"
        assert child.info.status == "FINISHED"
        assert child.info.run_name == f"trial-{child.data.tags['trial_number']}"
    opt_metrics = {frozenset(c.data.metrics) for c in opt_children}
    kt_metrics = {frozenset(c.data.metrics) for c in kt_children}
    assert opt_metrics == kt_metrics
    assert {"objective", "best_epoch", "epochs_trained", "n_params", "train_seconds"} <= set(
        next(iter(kt_metrics))
    )
    assert {c.data.tags["study"] for c in kt_children} == {"ktune"}
    assert sorted(int(c.data.tags["trial_number"]) for c in kt_children) == [0, 1]

    assert len(kt_parents) == 1
    parent = kt_parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["study"] == "ktune"
    assert parent.data.tags["engine"] == "keras_tuner"
    assert "best_value" in parent.data.metrics and "best_trial" in parent.data.params
    assert all(c.data.tags["mlflow.parentRunId"] == parent.info.run_id for c in kt_children)

    # Again with one more trial: KerasTuner reloads its project and continues.
    again = runner.invoke(
        app, ["run", str(kt_exp), "--set", "study.engine=keras_tuner", "--n-trials", "1"]
    )
    assert again.exit_code == 0, again.output
    assert "resumed with 2 trials" in again.stdout
    oracle_dir = workdir / "kt_studies" / "ktune"
    assert len(list(oracle_dir.glob("trial_*/trial.json"))) == 3
    kt_parents, kt_children = _runs(uri, "ktune")
    assert len(kt_parents) == 2 and len(kt_children) == 3
    assert sorted(int(c.data.tags["trial_number"]) for c in kt_children) == [0, 1, 2]
    assert all(r.info.status == "FINISHED" for r in kt_parents + kt_children)


def test_to_keras_tuner_declares_nested_conditions() -> None:
    space = SearchSpace.from_dict(
        {
            "n_hidden": {"type": "int", "low": 1, "high": 3},
            "n_neurons": {"type": "int", "low": 8, "high": 32, "log": True},
            "n_neurons_per_layer": True,
            "optimizer": {"type": "categorical", "choices": ["adam", "nesterov", "momentum"]},
            "momentum": {
                "type": "float",
                "low": 0.8,
                "high": 0.95,
                "when": {"optimizer": ["nesterov", "momentum"]},
            },
            "lr_schedule": {
                "type": "categorical",
                "choices": ["none", "exponential"],
                "when": {"optimizer": ["momentum"]},
            },
            "dropout": {  # chained (via lr_schedule) and a second, independent parent
                "type": "float",
                "low": 0.0,
                "high": 0.5,
                "when": {"lr_schedule": ["exponential"], "n_hidden": [2, 3]},
            },
            "batch_size": 64,
        }
    )
    hp = kt.HyperParameters()
    first = space.to_keras_tuner(hp)  # defaults: the first choice, the lowest values
    assert first == {
        "n_hidden": 1,
        "n_neurons_per_layer": True,
        "n_neurons_1": 8,
        "optimizer": "adam",
        "batch_size": 64,
    }
    declared = {h.name for h in hp.space}
    assert {"momentum", "lr_schedule", "dropout", "n_neurons_1", "n_neurons_3"} <= declared
    conditions = {
        h.name: [(c.name, list(c.values)) for c in h.conditions]
        for h in hp.space
        if h.name in ("momentum", "dropout", "n_neurons_2")
    }
    assert conditions["momentum"] == [("optimizer", ["nesterov", "momentum"])]
    assert conditions["dropout"] == [
        ("optimizer", ["momentum"]),
        ("lr_schedule", ["exponential"]),
        ("n_hidden", [2, 3]),
    ]
    assert conditions["n_neurons_2"] == [("n_hidden", [2, 3])]

    chosen = hp.copy()
    values = {
        "n_hidden": 2,
        "n_neurons_per_layer": True,
        "n_neurons_1": 16,
        "n_neurons_2": 9,
        "optimizer": "momentum",
        "momentum": 0.9,
        "lr_schedule": "exponential",
        "dropout": 0.25,
    }
    chosen.values = dict(values)
    # Active values come back as suggest() returns them, fixed values (batch_size) included.
    assert space.to_keras_tuner(chosen) == {**values, "batch_size": 64}
    chosen.values = {**chosen.values, "lr_schedule": "none", "optimizer": "momentum"}
    assert "dropout" not in space.to_keras_tuner(chosen)

    # A random trial from a real oracle gives a valid, active-only parameter set.
    oracle = kt.oracles.RandomSearchOracle(objective="val_accuracy", max_trials=5, seed=3)
    oracle.hyperparameters = hp.copy()
    values = oracle._random_values()
    sample = hp.copy()
    sample.values = values
    params = space.to_keras_tuner(sample)
    assert ("momentum" in params) == (params["optimizer"] != "adam")
    assert sum(k.removeprefix("n_neurons_").isdigit() for k in params) == params["n_hidden"]


def test_to_keras_tuner_fixed_width_per_layer() -> None:
    # A fixed n_neurons with per-layer widths: every layer gets the constant, as suggest() gives.
    space = SearchSpace.from_dict(
        {
            "n_hidden": {"type": "int", "low": 1, "high": 3},
            "n_neurons": 64,
            "n_neurons_per_layer": True,
        }
    )
    hp = kt.HyperParameters()
    assert space.to_keras_tuner(hp) == {
        "n_hidden": 1,
        "n_neurons_per_layer": True,
        "n_neurons_1": 64,
    }
    chosen = hp.copy()
    chosen.values = {**hp.values, "n_hidden": 3}
    assert space.to_keras_tuner(chosen) == {
        "n_hidden": 3,
        "n_neurons_per_layer": True,
        "n_neurons_1": 64,
        "n_neurons_2": 64,
        "n_neurons_3": 64,
    }
