"""Several objectives and limits in an experiment file: parsing, defaults, one-line errors."""

from __future__ import annotations

import pytest
import yaml

from tuning.config import load_experiment
from tuning.errors import ConfigError
from tuning.objective import Objective

TWO = [
    {"metric": "val_accuracy", "direction": "maximize"},
    {"metric": "latency_ms", "direction": "minimize"},
]


def test_one_objective_stays_the_default_form(make_experiment) -> None:
    exp = load_experiment(make_experiment())
    assert exp.objectives == (Objective("val_accuracy", "maximize"),)
    assert not exp.multi and exp.limits == {} and exp.prefer is None
    assert exp.resolved()["objective"] == {"metric": "val_accuracy", "direction": "maximize"}


def test_a_list_makes_the_first_primary_and_round_trips(make_experiment, workdir) -> None:
    exp = load_experiment(
        make_experiment(objective=TWO, limits={"n_params": 300000, "latency_ms": 2.0})
    )
    assert exp.objective.metric == "val_accuracy" and exp.objective.better(0.9, 0.8)
    assert exp.objectives == (
        Objective("val_accuracy", "maximize"),
        Objective("latency_ms", "minimize"),
    )
    assert exp.multi and exp.limits == {"n_params": 300000.0, "latency_ms": 2.0}
    assert exp.prefer == "latency_ms"  # the second objective, a measure
    resolved = exp.resolved()
    assert resolved["objective"] == TWO
    (workdir / "again.yaml").write_text(yaml.safe_dump(resolved))
    again = load_experiment(workdir / "again.yaml")
    assert again.objectives == exp.objectives and again.limits == exp.limits


def test_prefer_defaults_to_none_when_the_second_is_a_metric(make_experiment) -> None:
    exp = load_experiment(
        make_experiment(
            objective=[TWO[0], {"metric": "val_loss", "direction": "minimize"}],
            selection={"prefer": "n_params"},
        )
    )
    assert exp.prefer == "n_params"
    exp = load_experiment(
        make_experiment(objective=[TWO[0], {"metric": "val_loss", "direction": "minimize"}])
    )
    assert exp.prefer is None


@pytest.mark.parametrize(
    ("changes", "key", "rule"),
    [
        ({"objective": [TWO[0], TWO[0]]}, "objective.1.metric", "listed twice"),
        (
            {"objective": [TWO[0], {"metric": "latency", "direction": "minimize"}]},
            "objective.1.metric",
            "neither a measure nor a validation metric",
        ),
        (
            {"objective": [TWO[0], {"metric": "n_params", "direction": "maximize"}]},
            "objective.1.direction",
            "n_params should be minimized",
        ),
        (
            {"objective": [{"metric": "n_params", "direction": "minimize"}, TWO[0]]},
            "objective.0.metric",
            "primary (first) objective must be a validation metric",
        ),
        ({"objective": [TWO[0], 3]}, "objective", "item 1 must be a mapping"),
        ({"objective": []}, "objective", "at least one"),
        ({"limits": {"n_params": -3}}, "limits", "a limit must be a positive number"),
        ({"limits": {"n_params": "many"}}, "limits", "a limit must be a positive number"),
        ({"limits": {"n_params": True}}, "limits", "a limit must be a positive number"),
        ({"limits": {"speed": 3}}, "limits.speed", "unknown limit 'speed'"),
        ({"limits": {"val_accuracy": 0.5}}, "limits.val_accuracy", "upper bound"),
        ({"selection": {"prefer": "speed"}}, "selection.prefer", "unknown measure"),
        (
            {"objective": TWO, "study__engine": "keras_tuner"},
            "objective",
            "engine keras_tuner lacks a Pareto front",
        ),
        (
            {"limits": {"n_params": 1000}, "study__engine": "keras_tuner"},
            "limits",
            "engine keras_tuner lacks constraints",
        ),
        (
            {"objective": TWO, "study__pruner": "hyperband"},
            "study.pruner.type",
            "Optuna's pruners refuse several objectives",
        ),
    ],
)
def test_bad_objectives_and_limits_are_one_line_errors(make_experiment, changes, key, rule):
    path = make_experiment(**changes)
    with pytest.raises(ConfigError) as err:
        load_experiment(path)
    line = str(err.value)
    assert "\n" not in line and str(path) in line and f": {key}: " in line and rule in line
    assert "Fix: " in line
