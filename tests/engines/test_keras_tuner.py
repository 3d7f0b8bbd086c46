"""The KerasTuner engine's own part: the search space declared to KerasTuner.

What every engine must do (MLflow names, resume, budget, errors) is in test_contract.py.
"""

from __future__ import annotations

import keras_tuner as kt
import pytest

from tuning.config.space import SearchSpace


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


@pytest.mark.parametrize("continue_trials", [True, False])
def test_hyperband_promotions_continue_the_trial_they_promote(
    make_experiment, workdir, continue_trials: bool
) -> None:
    """Issue 26: a Hyperband trial below the top rung keeps its state, and the trial that
    promotes it (``tuner/trial_id``) continues it in its own run, which logs the earlier
    epochs first: one curve, no epoch trained twice. Without ``study.continue_trials`` the
    promoted trial trains from new weights and the earlier epochs count as thrown away."""
    from conftest import mlflow_client, mlflow_runs

    from tuning.config import load_experiment
    from tuning.job import run_job

    path = make_experiment(
        "hb", study__engine="keras_tuner", study__tuner="hyperband", study__n_trials=6,
        study__continue_trials=continue_trials, training__max_epochs=4,
        training__early_stopping={"patience": 10},
    )  # fmt: skip
    result = run_job(load_experiment(path), say=lambda _: None)
    client = mlflow_client(workdir)
    parent = client.get_run(result.parent_run_id).data.metrics
    runs = mlflow_runs(workdir, "hb", role="trial")
    promoted = [r for r in runs if int(r.data.params["max_epochs"]) == 4]
    lower = [r for r in runs if int(r.data.params["max_epochs"]) < 4]
    assert promoted and lower  # the test needs both rungs
    continued = [r for r in runs if "continued_from" in r.data.tags]
    trained = parent["epochs_trained_total"]
    if continue_trials:
        assert continued and parent["epochs_thrown_away"] == 0
        for r in continued:
            steps = [m.step for m in client.get_metric_history(r.info.run_id, "val_accuracy")]
            assert sorted(steps) == list(range(int(r.data.metrics["epochs_trained"])))
        assert parent["epochs_continued"] > 0
        assert parent["configs_evaluated"] == len(runs) - len(continued)
        # A continued run's epochs_trained counts its earlier trial's epochs too: those were
        # trained once, by that trial.
        firsts = {int(r.data.tags["trial_number"]): r for r in runs}
        earlier = [firsts[int(r.data.tags["continued_from"])] for r in continued]
        assert trained == sum(r.data.metrics["epochs_trained"] for r in runs) - sum(
            r.data.metrics["epochs_trained"] for r in earlier
        )
    else:
        assert not continued and parent["epochs_continued"] == 0
        assert parent["epochs_thrown_away"] > 0
        assert trained == sum(r.data.metrics["epochs_trained"] for r in runs)
