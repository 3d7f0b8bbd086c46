"""Tracking settings: which store a job uses, and how a person is pointed at it."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from tuning.errors import ConfigError
from tuning.tracking import absolute_sqlite, check_tracking_uri, resolve_tracking_uri, ui_link


def test_relative_sqlite_becomes_absolute(workdir: Path) -> None:
    assert absolute_sqlite("sqlite:///mlflow.db") == f"sqlite:///{workdir / 'mlflow.db'}"
    assert absolute_sqlite("sqlite:////abs/m.db") == "sqlite:////abs/m.db"
    assert absolute_sqlite("http://127.0.0.1:5000") == "http://127.0.0.1:5000"


def test_uri_precedence(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_tracking_uri(None) == f"sqlite:///{workdir / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5001")
    assert resolve_tracking_uri(None) == "http://127.0.0.1:5001"
    assert resolve_tracking_uri("http://127.0.0.1:5002") == "http://127.0.0.1:5002"
    # Under `mlflow run`, the launcher's store holds the run to adopt: it wins.
    monkeypatch.setenv("MLFLOW_RUN_ID", "abc")
    assert resolve_tracking_uri("http://127.0.0.1:5002") == "http://127.0.0.1:5001"


def test_file_store_is_refused_with_a_fix(workdir: Path, monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    with pytest.raises(ConfigError, match="MLflow 3 refuses the file store './mlruns'") as e:
        check_tracking_uri("./mlruns", source="x.yaml")
    assert e.value.key == "tracking.uri" and "sqlite:///mlflow.db" in e.value.fix


def test_ui_link_opens_the_runs_table() -> None:
    assert ui_link("http://h:5000/", "7") == (
        "http://h:5000/#/experiments/7?workflowType=machine_learning"
    )
    assert ui_link("sqlite:////a/m.db", "3").startswith(
        "mlflow ui --backend-store-uri sqlite:////a/m.db"
    )


@pytest.mark.parametrize("error", [None, RuntimeError("diverged"), KeyboardInterrupt()])
def test_a_reopened_trial_run_runs_again_and_ends_finished_whatever_happens(
    workdir: Path, error: BaseException | None
) -> None:
    """Issue 26: a finished trial's run is reopened while the trial trains further; its epochs
    go on from where it stopped and it ends FINISHED, complete as its trial is in the study,
    with ``continue_failed`` when the continuation failed or was interrupted."""
    from conftest import mlflow_client

    from tuning.tracking import Tracker

    tracker = Tracker(uri=f"sqlite:///{workdir / 'mlflow.db'}", experiment="e", study="s")
    parent = tracker.start_parent(run_name="job", tags={})
    with tracker.trial_run(parent, number=0, params={}) as run:
        run.log_epoch(0, {"val_accuracy": 0.5})
        run.log_epoch(1, {"val_accuracy": 0.6})
    client = mlflow_client(workdir)
    statuses: list[str] = []
    expected = pytest.raises(type(error)) if error is not None else contextlib.nullcontext()
    with expected:
        with tracker.reopen_trial_run(run.run_id, epochs=2) as again:
            statuses.append(client.get_run(run.run_id).info.status)
            again.log_epoch(2, {"val_accuracy": 0.7})
            if error is not None:
                raise error
    assert statuses == ["RUNNING"] and again.epochs == 3
    ended = client.get_run(run.run_id)
    assert ended.info.status == "FINISHED" and ended.data.tags["state"] == "complete"
    steps = [m.step for m in client.get_metric_history(run.run_id, "val_accuracy")]
    assert sorted(steps) == [0, 1, 2]
    failed = ended.data.tags.get("continue_failed")
    assert (failed is None) == (error is None)
    if isinstance(error, KeyboardInterrupt):
        assert failed == "interrupted (Ctrl-C or SIGTERM)"
    parent.end("FINISHED")
