"""Four workers on one study in a real PostgreSQL (started by the test on 127.0.0.1)."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from conftest import mlflow_client, mlflow_runs, parents_and_children, require

PASSWORD = "s3cret-pw-42"


def _bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def postgres() -> Iterator[str]:
    """A throwaway PostgreSQL server with a password-protected user; yields its URL."""
    initdb, pg_ctl = _bin("initdb"), _bin("pg_ctl")
    require(initdb and pg_ctl, "PostgreSQL (initdb, pg_ctl)", "apt-get install postgresql")
    # Not under pytest's tmp_path: that is private to root, and the server runs as postgres.
    tmp_path = Path(tempfile.mkdtemp(prefix="tuning-pg-"))
    data = tmp_path / "pg"
    data.mkdir()
    pwfile = tmp_path / "pw"
    pwfile.write_text(PASSWORD + "\n")
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root: use Debian's postgres user
        for p in (tmp_path, data, pwfile):
            shutil.chown(p, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    subprocess.run(
        [*as_user, initdb, "-D", str(data), "-U", "tuning", "--auth=scram-sha-256",
         f"--pwfile={pwfile}"],
        check=True, capture_output=True,
    )  # fmt: skip
    subprocess.run(
        [*as_user, pg_ctl, "-D", str(data), "-l", str(tmp_path / "pg.log"), "-w", "start", "-o",
         f"-c listen_addresses=127.0.0.1 -p {port} -k {tmp_path} -c max_connections=60"],
        check=True, capture_output=True,
    )  # fmt: skip
    try:
        yield f"postgresql://tuning:{PASSWORD}@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*as_user, pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"], capture_output=True
        )
        shutil.rmtree(tmp_path, ignore_errors=True)


@pytest.mark.slow
def test_four_workers_ten_trials_each(make_experiment, workdir: Path, postgres: str) -> None:
    exp = make_experiment(
        "pg", study__n_trials=10, training__max_epochs=1, study__sampler={"type": "random"}
    )
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "tuning", "run", str(exp), "--workers", "4", "--storage", postgres],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]

    study = optuna.load_study(study_name="pg", storage=postgres)
    assert len(study.trials) == 40
    assert sorted(t.number for t in study.trials) == list(range(40))  # no duplicate numbers
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)

    runs = mlflow_runs(workdir, "pg")
    parents, children = parents_and_children(runs)
    assert len(parents) == 4 and len(children) == 40
    assert sorted(int(r.data.tags["trial_number"]) for r in children) == list(range(40))
    assert all(r.data.tags["study"] == "pg" for r in runs)
    assert all(r.info.status == "FINISHED" for r in runs)

    # The password appears nowhere: output, params, tags, artifacts.
    assert PASSWORD not in output
    assert "tuning:***@127.0.0.1" in output
    for run in runs:
        assert PASSWORD not in repr(run.data.params) and PASSWORD not in repr(run.data.tags)
    for parent in parents:
        local = mlflow_client(workdir).download_artifacts(
            parent.info.run_id, "", str(workdir / parent.info.run_id)
        )
        for path in Path(local).rglob("*"):
            if path.is_file() and path.suffix in (".yaml", ".csv", ".md", ".json", ".html"):
                assert PASSWORD not in path.read_text(errors="ignore"), path
