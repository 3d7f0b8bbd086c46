"""A throwaway PostgreSQL server for the tests and the benchmarks: one place that starts it.

``initdb`` and ``pg_ctl`` come from Debian's ``postgresql`` package (/usr/lib/postgresql/N/bin,
the newest N) or the PATH. The server lives in a fresh folder under the system's temporary
folder (not pytest's ``tmp_path``, which is private to root while the server runs as
``postgres``: initdb refuses to run as root, so as root it runs through ``runuser``), listens on
127.0.0.1 and any ``listen`` addresses on a free port, with one password-protected superuser,
``tuning``. Used by tests/test_postgres.py's ``postgres`` fixture (and the tests that import
it), benchmarks/workers.py and benchmarks/machines.py; the benchmarks run as scripts from the
repository root, so their own folder is on ``sys.path``, and tests/conftest.py puts it there for
the tests.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

USER = "tuning"


def pg_bin(name: str) -> str | None:
    """The path of PostgreSQL's program ``name`` (``initdb``, ``pg_ctl``), or ``None``."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def missing() -> str | None:
    """What is missing to start a server here (with the command that installs it), or ``None``."""
    if pg_bin("initdb") and pg_bin("pg_ctl"):
        return None
    return "PostgreSQL (initdb, pg_ctl) is not installed: apt-get install postgresql"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 just now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    """A started server; :meth:`stop` (or leaving a ``with`` block) stops it and removes its
    folder. ``listen``: more addresses to listen on; ``hba``: more ``pg_hba.conf`` lines (for
    clients beyond 127.0.0.1); ``stop_mode``: ``fast`` (ends sessions cleanly) or
    ``immediate`` (no waiting on clients that went away)."""

    def __init__(
        self,
        password: str,
        *,
        listen: Sequence[str] = (),
        hba: Sequence[str] = (),
        max_connections: int = 60,
        stop_mode: str = "fast",
        prefix: str = "tuning-pg-",
    ) -> None:
        why = missing()
        if why:
            raise RuntimeError(why)
        self.password = password
        self.stop_mode = stop_mode
        self.pg_ctl = str(pg_bin("pg_ctl"))
        self.tmp = Path(tempfile.mkdtemp(prefix=prefix))
        self.data = self.tmp / "pg"
        self.data.mkdir()
        pwfile = self.tmp / "pw"
        pwfile.write_text(password + "\n")
        self.as_user: list[str] = []
        if os.geteuid() == 0:  # initdb refuses to run as root: Debian's postgres user
            for p in (self.tmp, self.data, pwfile):
                shutil.chown(p, "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.port = free_port()
        self.count = 0
        self.started = False
        try:
            subprocess.run(
                [*self.as_user, str(pg_bin("initdb")), "-D", str(self.data), "-U", USER,
                 "--auth=scram-sha-256", f"--pwfile={pwfile}"],
                check=True, capture_output=True, timeout=120,
            )  # fmt: skip
            if hba:
                with (self.data / "pg_hba.conf").open("a") as conf:
                    conf.writelines(f"{line}\n" for line in hba)
            addresses = ",".join(["127.0.0.1", *listen])
            self.started = True
            subprocess.run(
                [*self.as_user, self.pg_ctl, "-D", str(self.data), "-l", str(self.tmp / "pg.log"),
                 "-w", "start", "-o",
                 f"-c listen_addresses={addresses} -p {self.port} -k {self.tmp} "
                 f"-c max_connections={max_connections}"],
                check=True, capture_output=True, timeout=120,
            )  # fmt: skip
        except BaseException:
            self.stop()
            raise

    def url(self, db: str = "postgres", host: str = "127.0.0.1") -> str:
        """The URL of database ``db`` as the superuser, password included."""
        return f"postgresql://{USER}:{self.password}@{host}:{self.port}/{db}"

    def new_database(self, prefix: str = "db") -> str:
        """Create a fresh, empty database (``PREFIX1``, ``PREFIX2``, ...); returns its name."""
        import sqlalchemy

        self.count += 1
        name = f"{prefix}{self.count}"
        engine = sqlalchemy.create_engine(self.url(), isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
        engine.dispose()
        return name

    def stop(self) -> None:
        """Stop the server (if it was started) and remove its folder."""
        if self.started:
            subprocess.run(
                [*self.as_user, self.pg_ctl, "-D", str(self.data), "-m", self.stop_mode, "-w",
                 "stop"],
                capture_output=True, timeout=60,
            )  # fmt: skip
            self.started = False
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> PgServer:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
