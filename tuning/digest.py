"""A study's figures for the reading commands, from SQL where the storage is a database.

Owns what ``tuning status``, ``show`` and ``best`` (and :func:`tuning.report.version_summaries`)
count of a study: its trials by state (``not_learning`` apart, :func:`tuning.records.state`),
the last trial's time, the Keras backends, the trials carried from an earlier version, the
primary value of every trial that has one (to rank them), and its RUNNING trials.

Why: reading every trial through Optuna's ORM costs 6-8 s of CPU on a study of 10,000 trials
(with their per-epoch values and attributes), and Optuna's cache sorts and filters all of them
on each read. On an RDB storage (SQLite, PostgreSQL: Optuna's ``RDBStorage``, behind its cache)
:func:`digest` asks the database for aggregates over Optuna's tables instead, and loads only the
``FrozenTrial`` s a command prints (:func:`top_trials`, the running ones). Any other storage
(journal, in-memory) goes through :func:`digest_of_trials`, which reads every trial; both give
the same figures (a test compares them).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
from collections.abc import Sequence
from typing import Any

import optuna
import sqlalchemy
from optuna.trial import FrozenTrial, TrialState

from tuning import records
from tuning.objective import Objective

__all__ = [
    "Digest",
    "digest",
    "digest_of_study",
    "digest_of_trials",
    "rdb_backend",
    "top_trials",
]

CARRIED_FROM = "carried_from"  # tuning.lineage.CARRIED_FROM (lineage imports the storage layer)
# Optuna's system attributes of a trial's constraint values: "constraints" (a list, before
# Optuna 4.x) or "constraints:<name>" each.
_CONSTRAINTS = "constraints"


@dataclasses.dataclass
class Digest:
    """What the reading commands print of a study, without its trials.

    Attributes:
        trials: How many trials.
        states: Trials per state, every state present (as :func:`tuning.report.state_counts`).
        last: When the latest trial ended (or started, if it still runs); None without trials.
        backends: Trials per Keras backend, in the order of each backend's first trial.
        carried: Trials carried from an earlier version (``carried_from``).
        values: ``(number, state, primary value)`` of every trial with a value (complete ones,
            and pruned ones with an intermediate value), in trial order.
        running: The RUNNING trials.
        constrained: Whether any trial has constraint values (limits).
    """

    trials: int
    states: dict[str, int]
    last: datetime.datetime | None
    backends: dict[str, int]
    carried: int
    values: list[tuple[int, str, float]]
    running: list[FrozenTrial]
    constrained: bool


def _empty_states() -> dict[str, int]:
    counts = {state.name.lower(): 0 for state in TrialState}
    counts[records.NOT_LEARNING] = 0
    return counts


def digest_of_trials(trials: Sequence[FrozenTrial]) -> Digest:
    """The digest of trials already read (any storage: the generic, slow way)."""
    states = _empty_states()
    backends: dict[str, int] = {}
    for t in trials:
        states[records.state(t)] += 1
        name = t.user_attrs.get(records.BACKEND)
        if name:
            backends[name] = backends.get(name, 0) + 1
    times = [t.datetime_complete or t.datetime_start for t in trials]
    return Digest(
        trials=len(trials),
        states=states,
        last=max((x for x in times if x is not None), default=None),
        backends=backends,
        carried=sum(1 for t in trials if CARRIED_FROM in t.user_attrs),
        values=[(t.number, t.state.name, float(t.values[0])) for t in trials if t.values],
        running=[t for t in trials if t.state == TrialState.RUNNING],
        constrained=any(t.constraints for t in trials),
    )


def rdb_backend(storage: optuna.storages.BaseStorage) -> optuna.storages.RDBStorage | None:
    """The ``RDBStorage`` behind ``storage`` (itself, or behind Optuna's cache); None for
    another kind."""
    backend = getattr(storage, "_backend", storage)
    return backend if isinstance(backend, optuna.storages.RDBStorage) else None


def digest(storage: optuna.storages.BaseStorage, study_id: int) -> Digest:
    """The digest of study ``study_id``: from SQL on an RDB storage, else from every trial."""
    rdb = rdb_backend(storage)
    if rdb is None:
        return digest_of_trials(storage.get_all_trials(study_id, deepcopy=False))
    sid = {"sid": study_id}
    with rdb.engine.connect() as conn:

        def rows(sql: str) -> list[Any]:
            return list(conn.execute(sqlalchemy.text(sql), sid))

        states = _empty_states()
        total = 0
        for state, n in rows(
            "SELECT state, COUNT(*) FROM trials WHERE study_id = :sid GROUP BY state"
        ):
            states[_state_name(state)] += n
            total += n
        not_learning = rows(
            "SELECT COUNT(*) FROM trials t JOIN trial_user_attributes a ON a.trial_id = t.trial_id"
            f" WHERE t.study_id = :sid AND t.state = 'PRUNED' AND a.key = '{records.NOT_LEARNING}'"
        )[0][0]
        states["pruned"] -= not_learning
        states[records.NOT_LEARNING] += not_learning
        last = rows(
            "SELECT MAX(COALESCE(datetime_complete, datetime_start)) FROM trials"
            " WHERE study_id = :sid"
        )[0][0]
        backends: dict[str, int] = {}
        for value, n in rows(
            "SELECT a.value_json, COUNT(*) FROM trials t JOIN trial_user_attributes a"
            f" ON a.trial_id = t.trial_id WHERE t.study_id = :sid AND a.key = '{records.BACKEND}'"
            " GROUP BY a.value_json ORDER BY MIN(t.number)"
        ):
            name = json.loads(value)
            if name:
                backends[name] = backends.get(name, 0) + n
        carried = rows(
            "SELECT COUNT(*) FROM trials t JOIN trial_user_attributes a ON a.trial_id = t.trial_id"
            f" WHERE t.study_id = :sid AND a.key = '{CARRIED_FROM}'"
        )[0][0]
        values = [
            (number, _state_name(state).upper(), _stored_value(value, kind))
            for number, state, value, kind in rows(
                "SELECT t.number, t.state, v.value, v.value_type FROM trials t"
                " JOIN trial_values v ON v.trial_id = t.trial_id"
                " WHERE t.study_id = :sid AND v.objective = 0 ORDER BY t.number"
            )
        ]
        running_ids = [
            r[0]
            for r in rows(
                "SELECT trial_id FROM trials WHERE study_id = :sid AND state = 'RUNNING'"
                " ORDER BY number"
            )
        ]
        constrained = bool(
            rows(
                "SELECT COUNT(*) FROM trials t JOIN trial_system_attributes a"
                " ON a.trial_id = t.trial_id"
                f" WHERE t.study_id = :sid AND ((a.key = '{_CONSTRAINTS}'"
                " AND a.value_json NOT IN ('[]', 'null'))"
                f" OR a.key LIKE '{_CONSTRAINTS}:%')"
            )[0][0]
        )
    return Digest(
        trials=total,
        states=states,
        last=_datetime(last),
        backends=backends,
        carried=carried,
        values=values,
        running=[rdb.get_trial(i) for i in running_ids],
        constrained=constrained,
    )


def digest_of_study(study: optuna.Study) -> Digest:
    """The digest of a loaded study (:func:`digest` on its storage)."""
    return digest(study._storage, study._study_id)  # noqa: SLF001 (Optuna keeps them private)


def top_trials(
    storage: optuna.storages.BaseStorage,
    study_id: int,
    found: Digest,
    objective: Objective,
    k: int,
    *,
    complete_only: bool = False,
) -> list[FrozenTrial]:
    """The ``k`` best trials by their primary value (ties: the earliest first), as Optuna's
    ``FrozenTrial`` s: only those are loaded. ``complete_only`` leaves pruned trials out."""
    ranked = objective.ranked(
        (v for v in found.values if not complete_only or v[1] == "COMPLETE"),
        lambda v: v[2],
    )[:k]
    return [
        storage.get_trial(storage.get_trial_id_from_study_id_trial_number(study_id, n))
        for n, _, _ in ranked
    ]


def _state_name(stored: object) -> str:
    """A state column's value (``'COMPLETE'``, or the enum) as :func:`records.state` names it."""
    return str(getattr(stored, "name", stored)).lower()


def _stored_value(value: float | None, kind: object) -> float:
    """A ``trial_values`` row as the float Optuna gives back (infinities are stored apart)."""
    name = str(getattr(kind, "name", kind))
    if name == "INF_POS":
        return math.inf
    if name == "INF_NEG":
        return -math.inf
    return float(value)  # type: ignore[arg-type]


def _datetime(stored: object) -> datetime.datetime | None:
    """``MAX(...)`` of a datetime column: a datetime (PostgreSQL) or its text (SQLite)."""
    if stored is None or isinstance(stored, datetime.datetime):
        return stored
    return datetime.datetime.fromisoformat(str(stored))
