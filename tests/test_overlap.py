"""Jobs started at the same moment against stores that do not exist yet: created once, all succeed.

Each job is a real ``tuning run`` process; a gate holds them after their imports (the slow part
of starting) until every one is ready, so all of them open the fresh stores within milliseconds
of each other, where MLflow's and Optuna's table creation used to collide (``table experiments
already exists``, ``duplicate key value violates unique constraint "pg_type_typname_nsp_index"``).
Optuna's storage is also raced alone (in a job MLflow's store, opened first, spaces the jobs
out), and :func:`tuning.locks.store_lock` is checked on its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy
import yaml
from conftest import ROOT, mlflow_runs, parents_and_children
from test_postgres import PASSWORD, postgres  # noqa: F401 (the fixture)

from tuning.errors import ConfigError
from tuning.locks import lock_path, pg_lock_key, store_lock

QUICKSTART = ROOT / "experiments" / "quickstart.yaml"
SMALL = ["--set", "study.n_trials=1", "--set", "training.max_epochs=1",
         "--set", "study.recheck_top=0", "--set", "tracking.log_models=none"]  # fmt: skip

# Each process does its slow imports, says it is ready, and waits for the word go.
GATE = """
import os, pathlib, time
pathlib.Path(os.environ["OVERLAP_READY"]).touch()
go = pathlib.Path(os.environ["OVERLAP_GO"])
while not go.exists():
    time.sleep(0.002)
"""
# `python -m tuning ARGS`, released at the gate.
TUNING = (
    "import runpy, sys\n"
    "import tuning.cli, tuning.storage, tuning.tracking  # the slow imports\n"
    + GATE
    + "sys.argv = ['tuning', *sys.argv[1:]]\n"
    "runpy.run_module('tuning', run_name='__main__', alter_sys=True)\n"
)
# Open the study storage of the experiment file ARGV[1] (what a job's engine does first).
STORAGE = (
    "import sys, optuna\n"
    "from tuning.config import load_experiment\n"
    "from tuning.storage import open_storage\n"
    "exp = load_experiment(sys.argv[1])\n"
    + GATE
    + "optuna.create_study(storage=open_storage(exp), study_name=exp.study_name,"
    " direction=exp.objective.direction, load_if_exists=True)\n"
)


def _start_together(
    n: int, script: str, args: list[str], cwd: Path, gate: Path
) -> list[tuple[int, str]]:
    """Run ``python -c SCRIPT ARGS`` in ``n`` processes released at once from their gate;
    returns the exit code and output of each."""
    gate.mkdir()
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "OVERLAP_GO": str(gate / "go"),
    }
    procs, logs = [], []
    for i in range(n):
        log = (gate / f"out{i}").open("w+")
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", script, *args],
                cwd=cwd,
                env={**env, "OVERLAP_READY": str(gate / f"ready{i}")},
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
            )  # fmt: skip
        )
        logs.append(log)
    try:
        deadline = time.monotonic() + 180
        while not all((gate / f"ready{i}").exists() for i in range(n)):
            assert all(p.poll() is None for p in procs), "a process ended before the gate"
            assert time.monotonic() < deadline, "the processes did not reach the gate in 180 s"
            time.sleep(0.05)
        (gate / "go").touch()
        codes = [p.wait(timeout=600) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    outputs = []
    for log in logs:
        log.seek(0)
        outputs.append(log.read())
        log.close()
    return list(zip(codes, outputs, strict=True))


def _all_succeeded(results: list[tuple[int, str]]) -> None:
    for code, output in results:
        assert code == 0, output[-4000:]
        assert "Traceback" not in output and "already exists" not in output, output[-4000:]


def _one_trial_each(storage: str, tracking: Path | str, n: int) -> None:
    study = optuna.load_study(study_name="quickstart", storage=storage)
    assert sorted(t.number for t in study.trials) == list(range(n))  # each number once
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    runs = mlflow_runs(tracking, "quickstart")
    parents, children = parents_and_children(runs)
    assert len(parents) == n and len(children) == n  # one parent per job, one child per trial
    assert sorted(int(r.data.tags["trial_number"]) for r in children) == list(range(n))
    assert all(r.info.status == "FINISHED" for r in runs)  # nothing left RUNNING


def test_three_jobs_at_once_in_an_empty_folder(workdir: Path) -> None:
    """Three `tuning run experiments/quickstart.yaml` started in the same millisecond."""
    jobs = workdir / "jobs"
    jobs.mkdir()
    args = ["run", str(QUICKSTART), *SMALL]
    results = _start_together(3, TUNING, args, jobs, workdir / "gate")
    _all_succeeded(results)
    _one_trial_each("sqlite:///jobs/optuna.db", jobs, 3)


def _quickstart_copy(folder: Path, storage: str, tracking: str | None = None) -> Path:
    """experiments/quickstart.yaml in ``folder``, with these stores (URLs in the file, not on
    a command line: no password in a process list)."""
    exp = yaml.safe_load(QUICKSTART.read_text())
    exp["search_space"] = str(QUICKSTART.parent / exp["search_space"])
    exp["study"]["storage"] = storage
    if tracking is not None:
        exp["tracking"]["uri"] = tracking
    path = folder / "quickstart.yaml"
    path.write_text(yaml.safe_dump(exp))
    return path


def _storage_opened_once(url: str, folder: Path) -> None:
    """Six processes open a study storage that does not exist yet, at the same moment.

    In a job MLflow's store is opened first and its lock spaces the jobs out; this opens
    Optuna's alone, as a job with another order, or `prepare_stores`, would.
    """
    exp = _quickstart_copy(folder, url)
    results = _start_together(6, STORAGE, [str(exp)], folder, folder / "gate")
    _all_succeeded(results)
    assert [s.study_name for s in optuna.get_all_study_summaries(url)] == ["quickstart"]


def test_six_processes_open_a_fresh_study_storage(workdir: Path) -> None:
    _storage_opened_once(f"sqlite:///{workdir / 'optuna.db'}", workdir)


def test_three_jobs_at_once_on_a_fresh_postgresql(workdir: Path, postgres: str) -> None:  # noqa: F811
    """The same against fresh PostgreSQL databases, one for Optuna and one for MLflow."""
    engine = sqlalchemy.create_engine(postgres, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        for db in ("opened", "studies", "tracking"):
            conn.execute(sqlalchemy.text(f"CREATE DATABASE {db}"))
    engine.dispose()
    server = postgres.rsplit("/", 1)[0]
    storage, tracking = f"{server}/studies", f"{server}/tracking"
    (workdir / "open").mkdir()
    _storage_opened_once(f"{server}/opened", workdir / "open")

    exp = _quickstart_copy(workdir, storage, tracking)
    jobs = workdir / "jobs"
    jobs.mkdir()
    results = _start_together(3, TUNING, ["run", str(exp), *SMALL], jobs, workdir / "gate")
    _all_succeeded(results)
    assert all(PASSWORD not in output for _, output in results)
    _one_trial_each(storage, tracking, 3)

    # The lock is the database's, whichever URL names it; a peer's session waits for it.
    assert pg_lock_key(storage) == pg_lock_key(
        storage.replace("postgresql:", "postgresql+psycopg:")
    )
    assert pg_lock_key(storage) != pg_lock_key(tracking)
    peer = sqlalchemy.create_engine(storage, isolation_level="AUTOCOMMIT")
    try_lock = sqlalchemy.text("SELECT pg_try_advisory_lock(:k)")
    with peer.connect() as conn:
        with store_lock(storage), store_lock(storage):  # re-entrant in one process
            assert conn.execute(try_lock, {"k": pg_lock_key(storage)}).scalar() is False
        assert conn.execute(try_lock, {"k": pg_lock_key(storage)}).scalar() is True
    peer.dispose()
    with pytest.raises(ConfigError, match=r"waited 0\.5 s .*tuning:\*\*\*@") as e:
        with peer.connect() as conn:
            conn.execute(try_lock, {"k": pg_lock_key(storage)})
            with store_lock(storage, timeout=0.5):
                pass
    assert PASSWORD not in str(e.value)
    peer.dispose()


HOLD = """
import sys, time
from tuning.locks import store_lock
try:
    with store_lock(sys.argv[1], timeout=float(sys.argv[2])):
        print(time.time(), flush=True)
except Exception as e:
    print(type(e).__name__, e, flush=True)
"""


def test_store_lock_makes_a_second_process_wait(workdir: Path) -> None:
    url = "sqlite:///optuna.db"
    assert lock_path(url) == workdir / ".optuna.db.lock"
    assert lock_path("sqlite:///:memory:") is None and lock_path("http://h:5000") is None
    assert lock_path("sqlite:///no/such/folder/x.db") is None  # the store reports that
    with store_lock("http://127.0.0.1:1"), store_lock("sqlite:///:memory:"):
        pass  # nothing to lock

    def peer(timeout: float) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-c", HOLD, url, str(timeout)],
            cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    with store_lock(url), store_lock(url):  # re-entrant in one process
        impatient = peer(0.5)
        patient = peer(60)
        out, err = impatient.communicate(timeout=60)
        assert out.startswith("ConfigError waited 0.5 s for another process creating"), out + err
        assert str(lock_path(url)) in out
        time.sleep(1.0)  # the patient one is waiting
        assert patient.poll() is None
        released = time.time()
    out, err = patient.communicate(timeout=60)
    assert patient.returncode == 0, err
    assert float(out.split()[0]) >= released  # it got the lock only once this process let go
