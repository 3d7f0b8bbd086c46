"""Experiment files for the tests and the benchmarks: one skeleton, changed key by key.

:func:`experiment` is a tiny digits experiment (2 TPE trials of at most 3 epochs, local SQLite
stores, no re-check): tests/conftest.py's ``make_experiment`` writes it as it is or with a few
keys changed, and the benchmarks (month.py, machines.py, workers.py) change what they measure.
:func:`write_experiment` writes it and its search space. The benchmarks run as scripts from the
repository root, so this folder is on their ``sys.path``; tests/conftest.py puts it there for
the tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

# The tiny experiment's search space (tests/conftest.py's ``TINY_SPACE``, resume_ab.py's).
TINY_SPACE: dict[str, Any] = {
    "n_hidden": {"type": "int", "low": 1, "high": 2},
    "n_neurons": {"type": "int", "low": 8, "high": 32, "log": True},
    "activation": {"type": "categorical", "choices": ["relu", "elu"]},
    "optimizer": {"type": "categorical", "choices": ["adam", "nesterov"]},
    "learning_rate": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
    "momentum": {"type": "float", "low": 0.8, "high": 0.95, "when": {"optimizer": ["nesterov"]}},
    "batch_size": 128,
}


def experiment(name: str, **changes: Any) -> dict[str, Any]:
    """The tiny experiment named ``name`` with ``changes``: each sets one key, a double
    underscore going one level down (``study__n_trials=1`` sets ``study.n_trials``;
    ``training={...}`` replaces the whole section)."""
    exp: dict[str, Any] = {
        "name": name,
        "dataset": {"name": "digits"},
        "search_space": "space.yaml",
        "objective": {"metric": "val_accuracy", "direction": "maximize"},
        "study": {
            "storage": "sqlite:///optuna.db",
            "sampler": {"type": "tpe", "n_startup_trials": 2},
            "pruner": "none",
            "n_trials": 2,
            "recheck_top": 0,  # tests/engines/test_recheck.py turns it on
        },
        "training": {"max_epochs": 3, "batch_size": 128, "early_stopping": {"patience": 2}},
        "tracking": {"uri": "sqlite:///mlflow.db"},
    }
    for key, value in changes.items():
        node = exp
        parts = key.split("__")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return exp


def write_experiment(
    folder: Path,
    exp: dict[str, Any],
    space: dict[str, Any],
    *,
    file: str | None = None,
    sort_keys: bool = False,
) -> Path:
    """Write ``exp`` as ``folder/FILE`` (``NAME.yaml`` by default) and ``space`` as the
    ``search_space`` it names (``space.yaml`` beside a space written inline), keys in the order
    given (``sort_keys``: sorted, as the tests have always written them: the order of a space's
    keys is the order Optuna samples them in, so it changes a seeded study's trials); return
    the experiment's path."""
    named = exp["search_space"] if isinstance(exp["search_space"], str) else "space.yaml"
    (folder / named).write_text(yaml.safe_dump(space, sort_keys=sort_keys))
    path = folder / (file or f"{exp['name']}.yaml")
    path.write_text(yaml.safe_dump(exp, sort_keys=sort_keys))
    return path
