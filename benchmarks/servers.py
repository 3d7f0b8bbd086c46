"""Throwaway servers for the benchmarks and the tests: a PostgreSQL and a local ``mlflow server``.

One copy of how to start them, for ``tests/test_postgres.py``, ``benchmarks/workers.py``,
``benchmarks/machines.py`` and ``benchmarks/growth.py`` (they import this file with
``benchmarks/`` on ``sys.path``). Every server listens on 127.0.0.1 on a free port (PostgreSQL
also on the ``addresses`` it is given), lives in a temporary folder, and is stopped and removed
by ``stop()`` (or on leaving ``mlflow_server``'s ``with``).

PostgreSQL comes from ``initdb``/``pg_ctl`` of the installed packages (``/usr/lib/postgresql``);
``initdb`` refuses to run as root, so as root the server runs as Debian's ``postgres`` user.
Its one user, ``tuning``, has a password (scram-sha-256), so a URL holds a secret as a user's
would: what the tests check never leaks.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pg_bin(name: str) -> str | None:
    """The newest installed PostgreSQL's ``name`` (initdb, pg_ctl), or None."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def postgres_available() -> bool:
    return bool(pg_bin("initdb") and pg_bin("pg_ctl"))


class Postgres:
    """A throwaway PostgreSQL: ``url()``, ``new_database()`` per run, ``stop()``.

    Args:
        password: the ``tuning`` user's password.
        addresses: more addresses to listen on (besides 127.0.0.1).
        hba: a network (``10.200.0.0/16``) allowed in with the password, besides localhost.
        max_connections: PostgreSQL's ``max_connections``.
    """

    def __init__(
        self,
        *,
        password: str = "bench-pw",
        addresses: Sequence[str] = (),
        hba: str | None = None,
        max_connections: int = 200,
        prefix: str = "tuning-pg-",
    ) -> None:
        initdb, pg_ctl = pg_bin("initdb"), pg_bin("pg_ctl")
        if not (initdb and pg_ctl):
            raise RuntimeError("PostgreSQL (initdb, pg_ctl) is not installed")
        self.password = password
        self.pg_ctl = pg_ctl
        # Not under pytest's tmp_path: that is private to root, and the server runs as postgres.
        self.tmp = Path(tempfile.mkdtemp(prefix=prefix))
        self.data = self.tmp / "pg"
        self.data.mkdir()
        pwfile = self.tmp / "pw"
        pwfile.write_text(password + "\n")
        self.as_user: list[str] = []
        if os.geteuid() == 0:  # initdb refuses to run as root: use Debian's postgres user
            for p in (self.tmp, self.data, pwfile):
                shutil.chown(p, "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.port = free_port()
        self.count = 0
        self.started = False
        try:
            subprocess.run(
                [*self.as_user, initdb, "-D", str(self.data), "-U", "tuning",
                 "--auth=scram-sha-256", f"--pwfile={pwfile}"],
                check=True, capture_output=True, timeout=120,
            )  # fmt: skip
            if hba:
                with (self.data / "pg_hba.conf").open("a") as f:
                    f.write(f"host all all {hba} scram-sha-256\n")
            listen = ",".join(["127.0.0.1", *addresses])
            self.started = True
            subprocess.run(
                [*self.as_user, pg_ctl, "-D", str(self.data), "-l", str(self.tmp / "pg.log"),
                 "-w", "start", "-o",
                 f"-c listen_addresses={listen} -p {self.port} -k {self.tmp} "
                 f"-c max_connections={max_connections}"],
                check=True, capture_output=True, timeout=120,
            )  # fmt: skip
        except BaseException:
            self.stop()
            raise

    def url(self, db: str = "postgres", host: str = "127.0.0.1") -> str:
        return f"postgresql://tuning:{self.password}@{host}:{self.port}/{db}"

    def new_database(self, prefix: str = "bench") -> str:
        """A fresh, empty database; returns its name."""
        import sqlalchemy

        self.count += 1
        name = f"{prefix}{self.count}"
        engine = sqlalchemy.create_engine(self.url(), isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
        engine.dispose()
        return name

    def stop(self) -> None:
        if self.started:
            subprocess.run(
                [*self.as_user, self.pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "stop"],
                capture_output=True, timeout=60,
            )  # fmt: skip
            self.started = False
        shutil.rmtree(self.tmp, ignore_errors=True)


@contextlib.contextmanager
def mlflow_server(folder: Path, *, backend_store_uri: str | None = None) -> Iterator[str]:
    """A local ``mlflow server`` on ``backend_store_uri`` (default: a SQLite file in ``folder``),
    artifacts in ``folder``; yields its URL, stops it (its whole process group) after."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    store = backend_store_uri or f"sqlite:///{folder / 'mlflow-server.db'}"
    log = (folder / "mlflow-server.log").open("w")
    # The store's URL holds the database password: it goes in the environment (MLflow's
    # MLFLOW_BACKEND_STORE_URI), never on the command line, where `ps` shows it to anyone.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
           "MLFLOW_BACKEND_STORE_URI": store}  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--artifacts-destination", str(folder / "mlartifacts")],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as r:  # noqa: S310
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not start: see {log.name}")
            time.sleep(0.5)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
