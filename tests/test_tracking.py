"""Tracking settings: which store a job uses, and how a person is pointed at it."""

from __future__ import annotations

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
