"""`tuning compare`: the table a person reads, and the run it leaves in MLflow."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
from conftest import mlflow_client, mlflow_runs
from typer.testing import CliRunner

from tuning.cli import app

runner = CliRunner()


def test_compare_two_studies(make_experiment, workdir: Path) -> None:
    narrow = make_experiment(  # its own space inline (space.yaml is the wide one)
        "narrow", study__n_trials=2, search_space={"n_hidden": 1, "n_neurons": 4}
    )
    wide = make_experiment("wide", study__n_trials=3, space={"n_hidden": 1, "n_neurons": 64})
    for exp in (wide, narrow):
        assert runner.invoke(app, ["run", str(exp), "-q"]).exit_code == 0

    result = runner.invoke(app, ["compare", str(wide), str(narrow), "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["study"]: r for r in json.loads(result.stdout)}
    assert set(rows) == {"wide", "narrow"}
    for name, n in (("wide", 3), ("narrow", 2)):
        study = optuna.load_study(study_name=name, storage="sqlite:///optuna.db")
        row = rows[name]
        assert row["complete"] == n and row["pruned"] == 0 and row["fail"] == 0
        assert (
            row["best_value"] == study.best_value and row["best_trial"] == study.best_trial.number
        )
        assert row["best_n_params"] == study.best_trial.user_attrs["n_params"]
        assert 1 <= row["trials_to_within"] <= n and row["seconds_to_within"] >= 0
        (parent,) = mlflow_runs(
            workdir, name, filter_string=f"tags.model_trial = '{study.best_trial.number}'"
        )
        assert row["test_score"] == parent.data.metrics["test_accuracy"]
    assert rows["wide"]["best_n_params"] > rows["narrow"]["best_n_params"]

    compare_runs = mlflow_runs(workdir, "wide", role="compare")
    assert len(compare_runs) == 1 and compare_runs[0].info.run_name == "compare-wide-vs-narrow"
    artifacts = {
        a.path for a in mlflow_client(workdir).list_artifacts(compare_runs[0].info.run_id)
    }
    assert artifacts == {"compare.csv", "compare.md", "best_so_far.png"}
    assert compare_runs[0].data.metrics["best_value.wide"] == rows["wide"]["best_value"]

    text = runner.invoke(app, ["compare", "wide", "narrow", "--no-log"])
    assert text.exit_code == 0
    lines = text.stdout.splitlines()
    assert lines[0].split()[:2] == ["study", "complete/pruned/failed"]
    assert lines[1].split()[:2] == ["wide", "3/0/0"] and lines[2].split()[:2] == [
        "narrow",
        "2/0/0",
    ]

    missing = runner.invoke(app, ["compare", "wide", "ghost"])
    assert missing.exit_code == 2 and "no study 'ghost'" in missing.stderr
