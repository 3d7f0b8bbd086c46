"""Four workers on one study in a real PostgreSQL (started by the test on 127.0.0.1)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import servers  # benchmarks/servers.py: the throwaway PostgreSQL (conftest puts it on sys.path)
from conftest import mlflow_client, mlflow_runs, parents_and_children, require

PASSWORD = "s3cret-pw-42"


@pytest.fixture
def postgres() -> Iterator[str]:
    """A throwaway PostgreSQL server with a password-protected user; yields its URL."""
    require(
        servers.postgres_available(), "PostgreSQL (initdb, pg_ctl)", "apt-get install postgresql"
    )
    pg = servers.Postgres(password=PASSWORD, max_connections=60)
    try:
        yield pg.url()
    finally:
        pg.stop()


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


@pytest.mark.slow
def test_a_tracking_server_on_postgres_keeps_the_password_off_its_command_line(
    workdir: Path, postgres: str
) -> None:
    """benchmarks/servers.py's ``mlflow server`` gets its store's URL (with the password) from
    the environment: no process's command line shows the password, and the server works."""
    pg_url = postgres
    with servers.mlflow_server(workdir, backend_store_uri=pg_url) as url:
        lines = []
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                lines.append(cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace"))
            except OSError:  # a process that ended meanwhile
                continue
        assert any("mlflow" in line and "server" in line for line in lines)
        assert not [line for line in lines if PASSWORD in line]
        client = mlflow_client(url)
        exp_id = client.create_experiment("on-postgres")
        assert client.get_experiment(exp_id).name == "on-postgres"
