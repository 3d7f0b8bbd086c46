"""How a trial is stored in Optuna: the user-attribute keys, fixed values, the process record.

Owns the layout of what this tool writes on an Optuna trial besides its parameters and value,
so that the engine that writes it and the reports, ``tuning show``/``best`` and the dead-trial
sweep that read it agree on one spelling:

- ``fixed.<name>``: a search space's fixed value (Optuna stores only what it sampled);
- ``process``: the identity of the process running the trial (:mod:`tuning.process`), with the
  trial's own number, so a later job can tell that the trial's process died;
- ``mlflow_run_id``, ``backend``, ``epochs_trained``, ``train_seconds``, ``n_params``, ``reason``
  (why a trial failed or was pruned), ``cut`` (why a complete trial stopped early),
  ``not_learning`` (why the learning rule ended it: Optuna keeps it PRUNED, so that TPE counts
  it among the bad trials; :func:`state` names it ``not_learning``).

It reads and writes through the trial's ``params``, ``user_attrs`` and ``set_user_attr`` only:
no Optuna import, so it fits any layer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

__all__ = [
    "BACKEND",
    "CUT",
    "EPOCHS_TRAINED",
    "FIGURES",
    "MLFLOW_RUN_ID",
    "NOT_LEARNING",
    "N_PARAMS",
    "PROCESS",
    "REASON",
    "TRAIN_SECONDS",
    "figures",
    "params",
    "process_of",
    "record_fixed",
    "record_process",
    "run_id",
    "state",
]

FIXED_PREFIX = "fixed."
PROCESS = "process"
MLFLOW_RUN_ID = "mlflow_run_id"
BACKEND = "backend"
EPOCHS_TRAINED = "epochs_trained"
TRAIN_SECONDS = "train_seconds"
N_PARAMS = "n_params"
REASON = "reason"
CUT = "cut"
NOT_LEARNING = "not_learning"
# What `tuning best` prints of a trial beside its parameters, in this order.
FIGURES = (EPOCHS_TRAINED, N_PARAMS, TRAIN_SECONDS, BACKEND, MLFLOW_RUN_ID)


class _Stored(Protocol):  # an optuna FrozenTrial, or a live Trial (whose attrs are read back)
    @property
    def number(self) -> int: ...

    @property
    def params(self) -> dict[str, Any]: ...

    @property
    def user_attrs(self) -> dict[str, Any]: ...


class _WithState(_Stored, Protocol):  # an optuna FrozenTrial
    @property
    def state(self) -> Any: ...


class _Writable(Protocol):
    @property
    def number(self) -> int: ...

    @property
    def params(self) -> dict[str, Any]: ...

    def set_user_attr(self, key: str, value: Any) -> None: ...


def params(trial: _Stored) -> dict[str, Any]:
    """The trial's hyperparameters: what Optuna sampled, then the space's fixed values."""
    out: dict[str, Any] = {**trial.params}
    out.update(
        {
            k.removeprefix(FIXED_PREFIX): v
            for k, v in trial.user_attrs.items()
            if k.startswith(FIXED_PREFIX)
        }
    )
    return out


def record_fixed(trial: _Writable, values: Mapping[str, Any], names: Iterable[str]) -> None:
    """Keep on ``trial`` the values of ``names`` that it did not sample (the space's fixed
    values), so :func:`params` gives the whole configuration back."""
    for name in names:
        if name in values and name not in trial.params:
            trial.set_user_attr(f"{FIXED_PREFIX}{name}", values[name])


def record_process(trial: _Writable, identity: Mapping[str, Any]) -> None:
    """Record the process that runs ``trial`` (first thing in a trial: see :func:`process_of`)."""
    trial.set_user_attr(PROCESS, {**identity, "trial": trial.number})


def process_of(trial: _Stored) -> dict[str, Any] | None:
    """The process recorded as running ``trial``; ``None`` when none is, or the record is not
    this trial's (a retried trial copies its original's attributes)."""
    recorded = trial.user_attrs.get(PROCESS)
    if isinstance(recorded, dict) and recorded.get("trial") == trial.number:
        return recorded
    return None


def run_id(trial: _Stored) -> str:
    """The trial's MLflow run (``""`` when it has none)."""
    return str(trial.user_attrs.get(MLFLOW_RUN_ID, ""))


def figures(trial: _Stored) -> dict[str, Any]:
    """The trial's recorded figures (:data:`FIGURES`), ``None`` where one is missing."""
    return {key: trial.user_attrs.get(key) for key in FIGURES}


def state(trial: _WithState) -> str:
    """The trial's state as this tool names it: Optuna's, lower case (``complete``, ``pruned``,
    ``fail``, ``running``, ``waiting``), or ``not_learning`` for a pruned trial that the
    learning rule ended (``tuning.learning``)."""
    name = str(getattr(trial.state, "name", trial.state)).lower()
    return NOT_LEARNING if name == "pruned" and NOT_LEARNING in trial.user_attrs else name
