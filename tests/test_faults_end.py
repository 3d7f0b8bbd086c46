"""Faults that must end in one line with nothing created, or nothing lost (issue 23, part 5).

A study storage that is not one (a text file, another program's database), a table with no rows
or an empty target: one line, exit 2, before any store is made. The artifact store failing at
the end of a job (its folder gone, disk full, permission denied): one line naming the store and
the OS's reason, the parent run FAILED, every trial and trial run kept.
"""

from __future__ import annotations

import errno
import hashlib
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from conftest import mlflow_client, mlflow_runs, nothing_created, one_line_error
from conftest import parents_and_children as split_runs
from typer.testing import CliRunner

from tuning.cli import app
from tuning.errors import ConfigError
from tuning.storage import check_study_storage

runner = CliRunner()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- a file that is not a study storage ------------------------------------------------------


def _other_database(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE people (name TEXT)")
        conn.execute("INSERT INTO people VALUES ('ada')")
    conn.close()


@pytest.mark.parametrize(
    ("make", "fragments"),
    [
        (lambda p: p.write_text("name,age\nada,36\n"), ["SQLite cannot read it", "DatabaseError"]),
        (_other_database, ["a SQLite database with other tables: people"]),
        (lambda p: p.mkdir(), ["is a folder"]),
    ],
    ids=["text", "other-database", "folder"],
)
def test_a_file_that_is_no_study_storage_stops_before_anything(
    make_experiment, workdir: Path, make, fragments
) -> None:
    exp = make_experiment("nostore")
    make(workdir / "store.db")
    before = None if (workdir / "store.db").is_dir() else _digest(workdir / "store.db")
    result = runner.invoke(app, ["run", str(exp), "--storage", "sqlite:///store.db"])
    line = one_line_error(result, "nostore.yaml", "study.storage", "'store.db'", *fragments)
    assert "Fix:" in line and "database server" not in line, line
    if before is not None:
        assert "is not an Optuna study storage" in line, line
        assert "move 'store.db' away" in line, line
        assert _digest(workdir / "store.db") == before, "the file was written"
    nothing_created(workdir)


def test_the_tracking_store_as_study_storage_stops_before_any_run(
    make_experiment, workdir: Path
) -> None:
    exp = make_experiment("mixed")
    client = mlflow_client(workdir)  # the tracking store the experiment names: ./mlflow.db
    client.create_experiment("earlier")
    tables = _tables(workdir / "mlflow.db")
    before = _digest(workdir / "mlflow.db")
    result = runner.invoke(app, ["run", str(exp), "--set", "study.storage=sqlite:///mlflow.db"])
    one_line_error(
        result,
        "study.storage",
        "the study storage 'mlflow.db' is not an Optuna study storage",
        "MLflow tracking store",
        "Fix: give the study another file",
    )
    assert _digest(workdir / "mlflow.db") == before and _tables(workdir / "mlflow.db") == tables
    assert client.get_experiment_by_name("mixed") is None, "an MLflow experiment was created"
    assert not client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert not (workdir / "mlruns").exists() and not (workdir / "optuna.db").exists()


def _tables(path: Path) -> set[str]:
    with sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    conn.close()
    return {name for (name,) in rows}


def test_missing_empty_and_real_study_storages_pass(workdir: Path) -> None:
    check_study_storage("sqlite:///absent.db")
    (workdir / "empty.db").touch()
    check_study_storage("sqlite:///empty.db")
    optuna.create_study(study_name="s", storage=f"sqlite:///{workdir / 'real.db'}")
    check_study_storage(f"sqlite:///{workdir / 'real.db'}")
    with sqlite3.connect(workdir / "blank.db") as conn:  # a database with no table yet
        conn.execute("PRAGMA user_version = 1")
    conn.close()
    check_study_storage("sqlite:///blank.db")
    assert not (workdir / "absent.db").exists()
    (workdir / "junk.db").write_bytes(b"\x00" * 4096)
    with pytest.raises(ConfigError, match="'junk.db' is not an Optuna study storage"):
        check_study_storage("sqlite:///junk.db", source="e.yaml")


# -- a table that cannot be learned ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("a,b,y\n", ["data.csv", "dataset.path", "has a header but no data rows"]),
        (
            "a,b,y\n1,2,\n3,4,\n5,6,\n",
            ["data.csv", "dataset.target", "'y' holds no value (all 3 of its rows are empty)"],
        ),
        ("a,b,y\n1,2,0.5\n", ["data.csv", "dataset.path", "the data has 1 row(s)"]),
        ("a,b,y\n1,2,1\n3,4,1\n5,6,1\n7,8,1\n", ["data.csv", "dataset.target", "single class"]),
    ],
    ids=["header-only", "empty-target", "one-row", "one-class"],
)
def test_a_table_with_nothing_to_learn_is_one_line(
    make_experiment, workdir: Path, text: str, fragments: list[str]
) -> None:
    (workdir / "data.csv").write_text(text)
    exp = make_experiment("rows", dataset={"path": "data.csv", "target": "y"})
    result = runner.invoke(app, ["run", str(exp)])
    one_line_error(result, *fragments)
    nothing_created(workdir)


# -- the artifact store failing at the end of a job --------------------------------------------

# Runs `tuning run`, breaking the artifact store once the search is over: after the trials,
# before the job records its model and reports. A folder replaced by a file fails every write
# below it, for root too (a read-only folder would not stop root).
DRIVER = """
import shutil, sys
from pathlib import Path
from urllib.parse import urlparse

import tuning.job as job

search_done = job.recheck


def break_store(engine, ctx, **kwargs):
    location = ctx.tracker.client.get_experiment(ctx.tracker.experiment_id).artifact_location
    folder = Path(urlparse(location).path if "://" in location else location)
    shutil.move(folder, folder.with_name(folder.name + ".moved"))
    folder.write_text("not a folder")
    return search_done(engine, ctx, **kwargs)


job.recheck = break_store
from tuning.cli import app

app(["run", sys.argv[1], *sys.argv[2:]], prog_name="tuning")
"""


def test_the_artifact_store_failing_at_the_end_keeps_every_trial(
    make_experiment, workdir: Path
) -> None:
    """In a process of its own (the real stderr: one line, no traceback), the artifact folder
    replaced by a file; a full disk and refused writes: in this process, below."""
    reason = "NotADirectoryError: [Errno 20] Not a directory"
    exp = make_experiment("endfail", tracking__log_models="best", training__max_epochs=1)
    (workdir / "driver.py").write_text(DRIVER)
    proc = subprocess.run(
        [sys.executable, "driver.py", str(exp), "--quiet"],
        cwd=workdir, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 3, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    line = lines[0]
    location = mlflow_client(workdir).get_experiment_by_name("endfail").artifact_location
    for fragment in ("error: the MLflow artifact store", location, reason, "ends FAILED"):
        assert fragment in line, (fragment, line)
    assert "Traceback" not in proc.stdout + proc.stderr

    study = optuna.load_study(study_name="endfail", storage="sqlite:///optuna.db")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    parents, children = split_runs(mlflow_runs(workdir, "endfail"))
    assert [p.info.status for p in parents] == ["FAILED"]
    assert parents[0].data.tags["reason"] in line
    assert sorted(c.info.run_name for c in children) == ["trial-0", "trial-1"]
    assert [c.info.status for c in children] == ["FINISHED", "FINISHED"]
    assert parents[0].data.tags["best_trial"] in ("0", "1")  # recorded before the failure
    assert "n_trials" in parents[0].data.metrics


@pytest.mark.parametrize(
    ("code", "log_models", "reason"),
    [
        (errno.EACCES, "best", "PermissionError: [Errno 13] Permission denied"),
        (errno.ENOSPC, "none", "OSError: [Errno 28] No space left on device"),
    ],
    ids=["permission-denied", "disk-full"],
)
def test_an_artifact_store_refusing_writes_in_process(
    make_experiment,
    workdir: Path,
    monkeypatch: pytest.MonkeyPatch,
    code: int,
    log_models: str,
    reason: str,
) -> None:
    """The same through the CLI in this process: permission denied on the model, or the disk
    full with no model to log (only the reports are left to write)."""
    from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

    import tuning.job as job

    exp = make_experiment("denied", training__max_epochs=1, tracking__log_models=log_models)
    search_done = job.recheck

    def refuse(self, artifact_path=None):
        raise OSError(code, os.strerror(code), self.artifact_dir)

    def break_store(engine, ctx, **kwargs):
        monkeypatch.setattr(LocalArtifactRepository, "_get_or_create_artifact_dir", refuse)
        return search_done(engine, ctx, **kwargs)

    monkeypatch.setattr(job, "recheck", break_store)
    result = runner.invoke(app, ["run", str(exp)])
    assert result.exit_code == 3, result.output
    # MLflow's own INFO lines (store created, input example checked) are not the job's words.
    lines = [line for line in result.stderr.splitlines() if line.strip() and " INFO " not in line]
    assert len(lines) == 1 and reason in lines[0], lines
    assert lines[0].startswith("error: the MLflow artifact store "), lines
    parents, children = split_runs(mlflow_runs(workdir, "denied"))
    assert [p.info.status for p in parents] == ["FAILED"]
    assert [c.info.status for c in children] == ["FINISHED", "FINISHED"]
    study = optuna.load_study(study_name="denied", storage="sqlite:///optuna.db")
    assert len(study.trials) == 2
