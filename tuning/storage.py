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

import contextlib
import contextvars
import re
import sqlite3
import warnings
from collections.abc import Iterator
from pathlib import Path

import optuna
import sqlalchemy

from tuning import process, records, trial_cache
from tuning.config import Experiment, redact
from tuning.errors import ConfigError
from tuning.locks import store_lock

__all__ = [
    "check_study_storage",
    "db_error_reason",
    "fail_dead_trials",
    "lost_server",
    "load_study",
    "one_storage_per_job",
    "open_storage",
    "storage_has_studies",
    "reading_storage",
    "study_names",
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


# A PostgreSQL server that stops answering mid-statement (a network cut: no reset ever comes)
# fails the statement within about 30 s, not after TCP's 15 minutes of retransmissions; an idle
# pooled connection to it is found dead by keepalives. A setting in the URL's query wins.
_PG_CONNECT = {
    "connect_timeout": 10,
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30000,
}


def _connect_args(url: str) -> dict[str, object]:
    if url.startswith("postgresql"):
        query = sqlalchemy.engine.make_url(url).query
        return {k: v for k, v in _PG_CONNECT.items() if k not in query}
    return {"connect_timeout": 10} if url.startswith("mysql") else {}


def _rdb_engine(url: str) -> sqlalchemy.engine.Engine:
    return sqlalchemy.create_engine(url, connect_args=_connect_args(url))


def lost_server(error: BaseException, url: str) -> BaseException | None:
    """The driver's error in ``error`` (or what caused it) that says the database server behind
    ``url`` stopped answering, else ``None`` (a SQLite file's errors never say so)."""
    if url.startswith("sqlite"):
        return None
    seen: BaseException | None = error
    visited: set[int] = set()
    while seen is not None and id(seen) not in visited:
        if isinstance(seen, sqlalchemy.exc.OperationalError) or (
            type(seen).__name__ == "OperationalError"
            and type(seen).__module__.startswith(("psycopg", "pymysql", "MySQLdb"))
        ):
            return seen
        visited.add(id(seen))
        seen = seen.__cause__ or seen.__context__
    return None


def _quiet_heartbeat(storage: optuna.storages.RDBStorage) -> None:
    """A heartbeat that cannot be written is skipped, not raised: Optuna's heartbeat thread
    would die with a traceback (and the trial go stale while its job lives through a blip); a
    server gone for good is reported once, by the job's own next call."""
    record = storage.record_heartbeat

    def record_heartbeat(trial_id: int) -> None:
        try:
            record(trial_id)
        except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError):
            pass

    storage.record_heartbeat = record_heartbeat  # type: ignore[method-assign]


def check_study_storage(
    url: str, *, source: str | None = None, key: str | None = "study.storage"
) -> None:
    """Fail before anything is created when the study storage does not answer.

    A SQLite file is made on first use (its folder is checked with the config): a missing or
    empty one is fine, an existing one must hold an Optuna storage (:func:`_check_sqlite_file`,
    read-only). A database server is connected to, and nothing is written to it.

    Raises:
        ConfigError: naming the URL (password masked) or the file, the reason and the fix.
    """
    if url.startswith("sqlite"):
        _check_sqlite_file(url, source=source, key=key)
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


# Tables of an Optuna RDB storage: ``studies`` is created first (every other table refers to
# it), so a storage another job is creating at this moment already shows it.
_OPTUNA_TABLE = "studies"
_MLFLOW_TABLES = frozenset({"experiments", "runs", "metrics"})
# SQLITE_BUSY, SQLITE_LOCKED, SQLITE_READONLY (primary codes): the file may well be a storage.
_SQLITE_BUSY_OR_READONLY = (5, 6, 8)


def _sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///FILE`` URL, or ``None`` for an in-memory database."""
    try:
        database = sqlalchemy.engine.make_url(url).database
    except Exception:  # the config's check_storage reports a malformed URL
        return None
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def _check_sqlite_file(url: str, *, source: str | None, key: str | None) -> None:
    """A SQLite study file that exists must be an Optuna storage; read-only, nothing written.

    A missing or empty file is fine: Optuna creates its tables there on first use. Any other
    file (text, a damaged database, another program's database such as MLflow's ``mlflow.db``)
    would fail only once the job's MLflow parent run exists; here it fails first.

    Raises:
        ConfigError: naming the file, why it is not a study storage and the fix.
    """
    path = _sqlite_path(url)
    if path is None or not path.exists():
        return
    other = "study.db" if path.name == "optuna.db" else "optuna.db"
    fix = (
        f"give the study another file (e.g. --storage sqlite:///{other}), or move {str(path)!r}"
        " away if it is not your study storage"
    )
    if path.is_dir():
        raise ConfigError(
            f"the study storage {str(path)!r} is a folder, not an Optuna study storage",
            source=source,
            key=key,
            fix=f"give a file inside it, e.g. sqlite:///{path / 'optuna.db'}",
        )
    try:
        if path.stat().st_size == 0:
            return
        conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True, timeout=30)
        try:
            rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        finally:
            conn.close()
    except (sqlite3.Error, OSError) as e:  # not a database, damaged, unreadable
        if (getattr(e, "sqlite_errorcode", 0) or 0) & 0xFF in _SQLITE_BUSY_OR_READONLY:
            return  # in use, or a journal to roll back first: Optuna's own opening decides
        reason = " ".join(str(e).split())[:200] or type(e).__name__
        raise ConfigError(
            f"the study storage {str(path)!r} is not an Optuna study storage "
            f"(SQLite cannot read it: {type(e).__name__}: {reason})",
            source=source,
            key=key,
            fix=fix,
        ) from e
    tables = {str(name) for (name,) in rows}
    if not tables or _OPTUNA_TABLE in tables:
        return  # a database with no table yet (Optuna fills it), or a study storage
    if _MLFLOW_TABLES <= tables:
        what = "it holds MLflow's tables: an MLflow tracking store"
    else:
        shown = sorted(tables)
        what = f"it is a SQLite database with other tables: {', '.join(shown[:5])}"
        what += ", ..." if len(shown) > 5 else ""
    raise ConfigError(
        f"the study storage {str(path)!r} is not an Optuna study storage ({what})",
        source=source,
        key=key,
        fix=fix,
    )


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


_Shared = dict[tuple[object, ...], optuna.storages.BaseStorage]
_JOB_STORAGES: contextvars.ContextVar[_Shared | None] = contextvars.ContextVar(
    "tuning_job_storages", default=None
)


@contextlib.contextmanager
def one_storage_per_job() -> Iterator[None]:
    """Within it, :func:`open_storage` opens each storage (URL and settings) once: a job's
    lineage check and its engine then share one object, whose cache holds the trials the
    first read, and the study's trials are read from the database once, not twice (each read
    of every trial takes ~4 s at 10,000 trials: benchmarks/RESULTS.md, "Growth: 10,000
    trials"). Outside, each call opens its own, as a job's workers and tests expect."""
    token = _JOB_STORAGES.set(_JOB_STORAGES.get() or {})
    try:
        yield
    finally:
        _JOB_STORAGES.reset(token)


def open_storage(exp: Experiment) -> optuna.storages.BaseStorage:
    """The experiment's storage, with the heartbeat and retry its settings ask for, behind the
    trial cache of :mod:`tuning.trial_cache` (a database's; a study reads it many times a trial).
    Within :func:`one_storage_per_job`, the one opened before for the same settings.

    A storage not there yet is created here (its tables), under :func:`tuning.locks.store_lock`:
    jobs that start at the same moment create it once.

    Raises:
        ConfigError: when the storage cannot be opened (driver missing, server down).
    """
    url = exp.study.storage
    shared = _JOB_STORAGES.get()
    key = (url, exp.study.heartbeat_interval, exp.study.max_retries)
    if shared is not None and key in shared:
        return shared[key]
    opened = _open_storage(exp)
    if shared is not None:
        shared[key] = opened
    return opened


def _open_storage(exp: Experiment) -> optuna.storages.BaseStorage:
    url = exp.study.storage
    kwargs: dict[str, object] = {}
    if url.startswith("sqlite"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60, "factory": SharedSQLite}}
    elif _connect_args(url):
        kwargs["engine_kwargs"] = {"connect_args": _connect_args(url)}
    hb = exp.study.heartbeat_interval
    try:
        retry = (
            optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=exp.study.max_retries)
            if hb and exp.study.max_retries
            else None
        )
        # Opening a fresh storage creates its tables: once, whatever number of jobs start now.
        with store_lock(url):
            storage = optuna.storages.RDBStorage(
                url,
                heartbeat_interval=hb,
                grace_period=2 * hb if hb else None,
                heartbeat_stale_trial_callback=retry,
                **kwargs,  # type: ignore[arg-type]
            )
        if hasattr(storage, "record_heartbeat"):
            _quiet_heartbeat(storage)
        if isinstance(storage, optuna.storages.RDBStorage):
            # Optuna would put its own cache in front; this one keeps its sorted lists.
            return trial_cache.cached(storage)
        return storage
    except ConfigError:
        raise
    except Exception as e:  # driver missing, server down, bad credentials
        raise ConfigError(
            f"cannot open the study storage {redact(url)} ({db_error_reason(e)})",
            source=exp.source,
            key="study.storage",
            fix="check the URL, that the database server runs and its driver is installed",
        ) from e


def reading_storage(url: str) -> optuna.storages.BaseStorage | None:
    """The storage at ``url`` opened once for a reading command, or None where there is none
    yet (looking must not create one).

    A command reads every study through this one object: Optuna's cache in front of a database
    keeps the finished trials it has read, so a second look at a study reads only what is new.
    A fresh ``optuna.load_study(url)`` or ``get_all_study_summaries`` reads every trial again,
    and on a study of 10,000 trials each such read costs seconds.

    Raises:
        ConfigError: when the storage cannot be read (``--storage`` names it).
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        if not storage_has_studies(url):
            return None
        return optuna.storages.get_storage(url)
    except ConfigError:
        raise
    except Exception as e:
        raise _unreadable(url, e) from e


def _unreadable(url: str, e: Exception) -> ConfigError:
    return ConfigError(
        f"cannot open the storage {redact(url)} ({db_error_reason(e)})",
        source="--storage",
        fix="give the storage URL the studies were run with, e.g. sqlite:///optuna.db",
    )


def study_names(storage: optuna.storages.BaseStorage | None, url: str) -> list[str]:
    """The names of the studies in ``storage`` (from :func:`reading_storage`; None: none),
    without reading their trials."""
    if storage is None:
        return []
    try:
        return [s.study_name for s in storage.get_all_studies()]
    except Exception as e:
        raise _unreadable(url, e) from e


def study_summaries(
    url: str, *, include_best_trial: bool = False
) -> list[optuna.study.StudySummary]:
    """The studies in a storage, read without creating one where there is none.

    Reads every trial of every study: a reading command wants :func:`reading_storage` and
    :func:`study_names`.

    Raises:
        ConfigError: when the storage cannot be read (``--storage`` names it).
    """
    storage = reading_storage(url)
    if storage is None:
        return []  # nothing there yet: looking must not create a storage
    try:
        return optuna.get_all_study_summaries(storage, include_best_trial=include_best_trial)
    except Exception as e:
        raise _unreadable(url, e) from e


def load_study(
    name: str, url: str, storage: optuna.storages.BaseStorage | None = None
) -> optuna.Study:
    """A stored study, for reading; a missing one is a user error naming the others.

    ``storage``: the storage at ``url`` already opened (:func:`reading_storage`), to share its
    cache of trials; opened here when not given.
    """
    if storage is None:
        storage = reading_storage(url)
    names = study_names(storage, url)
    if name not in names:
        raise ConfigError(
            f"no study {name!r} in {redact(url)}",
            source="STUDY",
            fix=f"use one of {', '.join(names) or '(none yet: run `tuning run` first)'}",
        )
    assert storage is not None  # it holds the study
    return optuna.load_study(study_name=name, storage=storage)


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
