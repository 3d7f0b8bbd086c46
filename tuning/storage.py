"""The Optuna storage: opening it, checking it answers, reading it, and failing dead trials.

Owns the storage URL's side of a study: ``sqlite:///FILE`` (one machine) or a database server
(``postgresql://``, ``mysql://``) with Optuna's heartbeat (``study.heartbeat_interval``) and retry
of a dead worker's trial (``study.max_retries``); a check that a server answers, made before
anything is created; reading studies without creating a storage (``tuning show``/``status``);
and failing, at once, the RUNNING trials whose process on this host is gone
(:mod:`tuning.process`). The sampler, the pruner and the objective are the Optuna engine's
(``tuning.engines.optuna``).
"""

from __future__ import annotations

import re
import sqlite3
import warnings
from pathlib import Path

import optuna
import sqlalchemy

from tuning import process, records
from tuning.config import Experiment, redact
from tuning.errors import ConfigError
from tuning.locks import store_lock

__all__ = [
    "check_study_storage",
    "db_error_reason",
    "fail_dead_trials",
    "load_study",
    "open_storage",
    "storage_has_studies",
    "study_summaries",
]

# Heartbeats are experimental in Optuna 5 but are what marks a dead worker's trial FAIL.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def db_error_reason(error: BaseException) -> str:
    """A database error in one line: the driver's own message, without SQLAlchemy's wrapper."""
    orig = getattr(error, "orig", None) or error
    text = " ".join(str(orig).split())
    text = re.sub(r"\s*\(Background on this error at:[^)]*\)", "", text)
    text = re.sub(r"^\([\w.]+\)\s*", "", text)  # "(psycopg.OperationalError) ..."
    return f"{type(orig).__name__}: {text[:300]}"


def _rdb_engine(url: str) -> sqlalchemy.engine.Engine:
    connect_args = {"connect_timeout": 10} if url.startswith(("postgresql", "mysql")) else {}
    return sqlalchemy.create_engine(url, connect_args=connect_args)


def check_study_storage(
    url: str, *, source: str | None = None, key: str | None = "study.storage"
) -> None:
    """Fail before anything is created when the study storage does not answer.

    A SQLite file is made on first use (its folder is checked with the config); a database
    server is connected to, and nothing is written to it.

    Raises:
        ConfigError: naming the URL (password masked), the driver's reason and the fix.
    """
    if url.startswith("sqlite"):
        return
    engine = None
    try:
        engine = _rdb_engine(url)
        with engine.connect():
            pass
    except Exception as e:  # driver missing, server down, bad credentials, no such database
        raise ConfigError(
            f"cannot open the study storage {redact(url)} ({db_error_reason(e)})",
            source=source,
            key=key,
            fix="check the URL, that the database server runs and its driver is installed",
        ) from e
    finally:
        if engine is not None:
            engine.dispose()


def storage_has_studies(url: str) -> bool:
    """Whether ``url`` holds an Optuna storage already; looks without creating one.

    Raises:
        ConfigError: when a database server does not answer.
    """
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if not path.parent.is_dir():
            raise ConfigError(
                f"cannot open the storage {redact(url)} (no folder {str(path.parent)!r})",
                source="--storage",
                fix="give the storage URL the studies were run with, e.g. sqlite:///optuna.db",
            )
        return path.is_file() and path.stat().st_size > 0
    check_study_storage(url, source="--storage", key=None)
    engine = _rdb_engine(url)
    try:
        return sqlalchemy.inspect(engine).has_table("studies")
    finally:
        engine.dispose()


class SharedSQLite(sqlite3.Connection):
    """A connection to a SQLite study file that several jobs or workers write at once.

    WAL journal: readers do not wait for the writer, and each commit appends to one log file;
    ``synchronous=NORMAL``: the log is synced at checkpoints, not at every commit (a power cut
    may undo the last commits, never corrupt the file). Measured with 8 workers on one study:
    benchmarks/RESULTS.md, "Workers". WAL needs every process on the same machine, as SQLite
    does anyway.
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.execute("PRAGMA journal_mode=WAL")  # kept in the file; cheap once it is set
        self.execute("PRAGMA synchronous=NORMAL")


def open_storage(exp: Experiment) -> optuna.storages.BaseStorage:
    """The experiment's storage, with the heartbeat and retry its settings ask for.

    A storage not there yet is created here (its tables), under :func:`tuning.locks.store_lock`:
    jobs that start at the same moment create it once.

    Raises:
        ConfigError: when the storage cannot be opened (driver missing, server down).
    """
    url = exp.study.storage
    kwargs: dict[str, object] = {}
    if url.startswith("sqlite"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60, "factory": SharedSQLite}}
    hb = exp.study.heartbeat_interval
    try:
        retry = (
            optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=exp.study.max_retries)
            if hb and exp.study.max_retries
            else None
        )
        # Opening a fresh storage creates its tables: once, whatever number of jobs start now.
        with store_lock(url):
            return optuna.storages.RDBStorage(
                url,
                heartbeat_interval=hb,
                grace_period=2 * hb if hb else None,
                heartbeat_stale_trial_callback=retry,
                **kwargs,  # type: ignore[arg-type]
            )
    except ConfigError:
        raise
    except Exception as e:  # driver missing, server down, bad credentials
        raise ConfigError(
            f"cannot open the study storage {redact(url)} ({db_error_reason(e)})",
            source=exp.source,
            key="study.storage",
            fix="check the URL, that the database server runs and its driver is installed",
        ) from e


def study_summaries(
    url: str, *, include_best_trial: bool = False
) -> list[optuna.study.StudySummary]:
    """The studies in a storage, read without creating one where there is none.

    Raises:
        ConfigError: when the storage cannot be read (``--storage`` names it).
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        if not storage_has_studies(url):
            return []  # nothing there yet: looking must not create a storage
        return optuna.get_all_study_summaries(url, include_best_trial=include_best_trial)
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(
            f"cannot open the storage {redact(url)} ({db_error_reason(e)})",
            source="--storage",
            fix="give the storage URL the studies were run with, e.g. sqlite:///optuna.db",
        ) from e


def load_study(name: str, url: str) -> optuna.Study:
    """A stored study, for reading; a missing one is a user error naming the others."""
    names = [s.study_name for s in study_summaries(url)]
    if name not in names:
        raise ConfigError(
            f"no study {name!r} in {redact(url)}",
            source="STUDY",
            fix=f"use one of {', '.join(names) or '(none yet: run `tuning run` first)'}",
        )
    return optuna.load_study(study_name=name, storage=url)


def fail_dead_trials(study: optuna.Study, *, max_retries: int) -> list[int]:
    """Mark FAIL, at once, the RUNNING trials whose process on this host is gone.

    Each trial records its process (:func:`tuning.process.identity`, with its own number, so a
    retried copy of a dead trial is not mistaken for it). A job started right after ``kill -9``
    finds the dead process here instead of waiting for its heartbeat to go stale; trials of
    other hosts are left to the heartbeat. With ``max_retries`` a failed trial is queued again
    with the same parameters, exactly as Optuna's heartbeat retry does.

    Returns:
        The numbers of the trials marked FAIL.
    """
    storage = study._storage  # as optuna.storages.fail_stale_trials reaches it
    retry = (
        optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retries)
        if max_retries
        else None
    )
    failed = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        recorded = records.process_of(t)
        if recorded is None or process.is_dead(recorded) is not True:
            continue
        reason = f"its process {recorded['pid']} on {recorded['host']} died"
        try:  # the reason first: a finished trial cannot be changed
            storage.set_trial_user_attr(t._trial_id, records.REASON, reason)
            if not storage.set_trial_state_values(t._trial_id, state=optuna.trial.TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:  # another job failed it first
            continue
        failed.append(t.number)
        if retry is not None:
            retry(study, storage.get_trial(t._trial_id))
    return failed
