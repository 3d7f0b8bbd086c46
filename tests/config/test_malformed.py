"""200 generated malformed experiment and space files: one line each, exit 2, nothing created."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tuning.cli import app

EXPERIMENT: dict[str, Any] = {
    "name": "gen",
    "dataset": {"name": "digits", "validation": 0.2},
    "search_space": "space.yaml",
    "objective": {"metric": "val_accuracy", "direction": "maximize"},
    "study": {
        "storage": "sqlite:///optuna.db",
        "sampler": "tpe",
        "pruner": "median",
        "n_trials": 1,
    },
    "training": {"max_epochs": 1, "batch_size": 32, "early_stopping": {"patience": 1}},
    "tracking": {"uri": "sqlite:///mlflow.db"},
}
SPACE: dict[str, Any] = {
    "n_hidden": {"type": "int", "low": 1, "high": 2},
    "learning_rate": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
    "optimizer": {"type": "categorical", "choices": ["adam", "momentum"]},
    "momentum": {"type": "float", "low": 0.8, "high": 0.9, "when": {"optimizer": ["momentum"]}},
}

# (file, dotted key, bad value, key expected in the message)
EXPERIMENT_BREAKS = [
    ("name", "has space"), ("name", 5), ("dataset.name", "cifar99"), ("dataset.validation", 1.5),
    ("dataset.validation", -3), ("dataset.test", 0), ("dataset.impute", "guess"),
    ("dataset.task", "ranking"), ("dataset.path", "x.csv"), ("objective.metric", "val_rmse"),
    ("objective.direction", "sideways"), ("objective.direction", "minimize"),
    ("study.storage", "redis://x"), ("study.sampler", "grid"), ("study.pruner", "magic"),
    ("study.n_trials", 0), ("study.n_trials", "many"), ("study.timeout", -1),
    ("study.heartbeat_interval", 0), ("study.max_retries", -1), ("study.extra", 1),
    ("training.max_epochs", 0), ("training.batch_size", -8), ("training.loss", "huber"),
    ("training.early_stopping.patience", 0), ("training.early_stopping.min_delta", -1.0),
    ("tracking.log_models", "all"), ("tracking.uri", "sqlite:///no/such/dir/m.db"),
    ("tracking.uri", "./mlruns"), ("unknown_key", True), ("search_space", "missing.yaml"),
]  # fmt: skip
SPACE_BREAKS = [
    ("n_hidden.low", 5), ("n_hidden.type", "integer"), ("n_hidden.step", 0),
    ("n_hidden.low", -1), ("learning_rate.low", 0.0), ("learning_rate.step", 0.001),
    ("learning_rate.high", 1e-5), ("optimizer.choices", []), ("optimizer.choices", ["adamz"]),
    ("optimizer.choices", ["adam", "adam"]), ("momentum.when", {"optimizer": ["sgdx"]}),
    ("momentum.when", {"ghost": [1]}), ("momentum.when", {"momentum": [0.8]}),
    ("n_layers", {"type": "int", "low": 1, "high": 2}),
    ("dropout", {"type": "float", "low": 0.7, "high": 0.99}),
    ("activation", [1, 2]), ("learning_rate.extra", 1), ("n_hidden.low", "one"),
]  # fmt: skip


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {} if not isinstance(node.get(part), str) else {"type": node[part]}
        node = node[part]
    node[parts[-1]] = value


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    where=st.sampled_from(["experiment", "space"]),
    exp_break=st.sampled_from(EXPERIMENT_BREAKS),
    space_break=st.sampled_from(SPACE_BREAKS),
    second=st.booleans(),
    exp_break2=st.sampled_from(EXPERIMENT_BREAKS),
    drop=st.sampled_from([None, "name", "dataset", "search_space"]),
)
def test_malformed_files(
    tmp_path_factory, where, exp_break, space_break, second, exp_break2, drop
) -> None:
    folder: Path = tmp_path_factory.mktemp("gen")
    exp = copy.deepcopy(EXPERIMENT)
    exp["study"]["storage"] = f"sqlite:///{folder / 'optuna.db'}"
    exp["tracking"]["uri"] = f"sqlite:///{folder / 'mlflow.db'}"
    space = copy.deepcopy(SPACE)
    if where == "experiment":
        _set(exp, *exp_break)
        keys = {exp_break[0].split(".")[0]}
        if second:
            _set(exp, *exp_break2)
            keys.add(exp_break2[0].split(".")[0])
        if drop:
            exp.pop(drop, None)
            keys.add(drop)
        bad_file = "exp.yaml"
    else:
        _set(space, *space_break)
        keys = {space_break[0].split(".")[0]}
        bad_file = "space.yaml"
    (folder / "exp.yaml").write_text(yaml.safe_dump(exp))
    (folder / "space.yaml").write_text(yaml.safe_dump(space))

    result = CliRunner().invoke(app, ["run", str(folder / "exp.yaml")])
    assert result.exit_code == 2, (exp, space, result.output[-2000:])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith(f"error: {folder / bad_file}"), line  # names the file
    rest = line.removeprefix(f"error: {folder / bad_file}")
    assert any(f": {key}" in rest for key in keys), (keys, line)  # and the key that is wrong
    for created in ("optuna.db", "mlflow.db", "mlruns"):
        assert not (folder / created).exists(), (created, line)
