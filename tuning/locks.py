"""Creating a store once, whatever number of processes open it at the same moment.

Owns :func:`store_lock`, which serializes among processes the first opening of a store (the
moment Optuna's ``RDBStorage`` or MLflow's SQL store creates its tables and runs its migrations)
and anything else that must happen once per store. Without it, jobs started in the same second
against a fresh store crash in each other's table creation (``table ... already exists``,
``duplicate key value violates unique constraint "pg_type_typname_nsp_index"``).

- ``sqlite:///PATH``: a file lock (:mod:`filelock`) on the hidden sibling ``.NAME.lock``.
- ``postgresql…``: a session-level ``pg_advisory_lock`` on a connection of its own, keyed by the
  database's name (not the host, port, user or driver: every URL of one database shares the
  lock, whichever address a machine reaches the server by).
- anything else (an MLflow server, MySQL, ...): no lock.

The lock is re-entrant within a process (per file, per database), so code holding it may call
code that takes it again. URLs in messages are redacted (:func:`tuning.config.redact`).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import filelock
import sqlalchemy
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from tuning.config import redact
from tuning.errors import ConfigError

__all__ = ["lock_path", "pg_lock_key", "store_lock"]

_GUARD = threading.Lock()  # guards the two caches below
_FILE_LOCKS: dict[Path, filelock.FileLock] = {}
_PG_LOCKS: dict[int, _AdvisoryLock] = {}


def lock_path(url: str) -> Path | None:
    """The lock file of a ``sqlite:///PATH`` URL (``.NAME.lock`` next to the database), or
    ``None`` where there is no file to lock (in memory, not SQLite, no such folder)."""
    if not url.startswith("sqlite"):
        return None
    try:
        database = make_url(url).database
    except sqlalchemy.exc.ArgumentError:
        return None
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    path = Path(database).resolve()
    if not path.parent.is_dir():  # the store itself reports the missing folder
        return None
    return path.with_name(f".{path.name}.lock")


def pg_lock_key(url: str) -> int:
    """A stable signed 64-bit advisory-lock key for the database a PostgreSQL URL names.

    The database's name alone: an advisory lock lives in its server and database already, and
    machines name one server differently (an address each, a DNS name, a port-forward).
    """
    parsed = make_url(url)
    where = f"tuning-store:{parsed.database or ''}"
    return int.from_bytes(hashlib.sha256(where.encode()).digest()[:8], "big", signed=True)


def _timed_out(url: str, timeout: float, where: str) -> ConfigError:
    return ConfigError(
        f"waited {timeout:g} s for another process creating the store {redact(url)} ({where})",
        fix="let that process finish, or stop it if it hangs, then run again",
    )


@contextmanager
def store_lock(url: str, *, timeout: float = 300.0) -> Iterator[None]:
    """Hold the store's creation lock (see the module's docstring) for the ``with`` body.

    Args:
        url: The store's URL (an Optuna storage or an MLflow tracking URI).
        timeout: Seconds to wait for a peer holding it.

    Raises:
        ConfigError: when a peer held the lock longer than ``timeout``.
    """
    if url.startswith("postgresql"):
        lock = _advisory_lock(url)
        lock.acquire(url, timeout)
        try:
            yield
        finally:
            lock.release()
        return
    path = lock_path(url)
    if path is None:
        yield
        return
    file_lock = _file_lock(path)
    try:
        file_lock.acquire(timeout=timeout)
    except filelock.Timeout:
        raise _timed_out(url, timeout, f"lock file {path}") from None
    try:
        yield
    finally:
        file_lock.release()


def _file_lock(path: Path) -> filelock.FileLock:
    with _GUARD:
        lock = _FILE_LOCKS.get(path)
        if lock is None:
            lock = _FILE_LOCKS[path] = filelock.FileLock(path)
        return lock


def _advisory_lock(url: str) -> _AdvisoryLock:
    key = pg_lock_key(url)
    with _GUARD:
        lock = _PG_LOCKS.get(key)
        if lock is None:
            lock = _PG_LOCKS[key] = _AdvisoryLock(key)
        return lock


class _AdvisoryLock:
    """One database's session-level advisory lock, re-entrant within this process: the first
    holder opens a connection and locks; the last one out unlocks and closes it (a process that
    dies loses its connection, and the server releases the lock)."""

    def __init__(self, key: int) -> None:
        self.key = key
        self.local = threading.RLock()  # threads of this process wait here, not on the server
        self.depth = 0
        self.engine: sqlalchemy.engine.Engine | None = None
        self.conn: sqlalchemy.engine.Connection | None = None

    def acquire(self, url: str, timeout: float) -> None:
        if not self.local.acquire(timeout=timeout):
            raise _timed_out(url, timeout, "held by another thread of this process")
        try:
            if self.depth == 0:
                self.engine, self.conn = self._lock_on_server(url, timeout)
            self.depth += 1
        except BaseException:
            self.local.release()
            raise

    def _lock_on_server(
        self, url: str, timeout: float
    ) -> tuple[sqlalchemy.engine.Engine, sqlalchemy.engine.Connection]:
        engine = sqlalchemy.create_engine(
            url, poolclass=NullPool, connect_args={"connect_timeout": 10}
        )
        conn = None
        try:
            conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            # lock_timeout bounds the wait for a peer; 0 (no limit) again once it is held.
            conn.execute(sqlalchemy.text(f"SET lock_timeout = {max(1, int(timeout * 1000))}"))
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": self.key})
            conn.execute(sqlalchemy.text("SET lock_timeout = 0"))
            return engine, conn
        except BaseException as e:
            if conn is not None:
                conn.close()
            engine.dispose()
            if getattr(getattr(e, "orig", None), "sqlstate", None) == "55P03":  # lock_timeout
                raise _timed_out(url, timeout, f"advisory lock {self.key}") from None
            raise

    def release(self) -> None:
        try:
            self.depth -= 1
            if self.depth == 0:
                conn, engine, self.conn, self.engine = self.conn, self.engine, None, None
                if conn is not None:
                    try:
                        conn.execute(
                            sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": self.key}
                        )
                    except sqlalchemy.exc.SQLAlchemyError:
                        pass  # the connection is gone: the server released the lock with it
                    finally:
                        conn.close()
                if engine is not None:
                    engine.dispose()
        finally:
            self.local.release()
