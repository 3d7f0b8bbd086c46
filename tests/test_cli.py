"""The command line: user errors are one line, exit 2, nothing created; `mlflow run .` works."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import (
    ROOT,
    TINY_SPACE,
    mlflow_runs,
    nothing_created,
    one_line_error,
    parents_and_children,
)
from typer.testing import CliRunner

from tuning.cli import app

runner = CliRunner()


@pytest.mark.parametrize(
    ("space_change", "fragments"),
    [
        (
            {"learning_rate": {"type": "float", "low": 0.1, "high": 0.01}},
            ["space.yaml", "learning_rate", "low must not be above high"],
        ),
        (
            {"optimizer": {"type": "categorical", "choices": ["adam", "adamax"]}},
            ["space.yaml", "optimizer.choices", "unknown optimizer 'adamax'", "Fix: use one of"],
        ),
        (
            {"n_layers": {"type": "int", "low": 1, "high": 3}},
            ["space.yaml", "n_layers", "unknown parameter 'n_layers'", "n_hidden"],
        ),
    ],
)
def test_bad_search_space_exits_2_and_creates_nothing(
    make_experiment, workdir, space_change, fragments
) -> None:
    exp = make_experiment("bad", space={**TINY_SPACE, **space_change})
    result = runner.invoke(app, ["run", str(exp)])
    one_line_error(result, *fragments)
    nothing_created(workdir)


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--set", "dataset.name=cifar"], ["bad.yaml", "dataset.name", "unknown dataset 'cifar'"]),
        (["--set", "study.n_trails=3"], ["study.n_trails", "unknown key", "n_trials"]),
        (["--n-trials", "many"], ["--n-trials", "expected a whole number"]),
        (["--overrides", "study.seed=1 nokey"], ["--set", "expected dotted.key=value"]),
        (["--n-trials", "0"], ["study.n_trials", "greater than or equal to 1"]),
        (["--storage", "redis://localhost"], ["study.storage", "unsupported storage URL"]),
        (
            ["--tracking-uri", "http://127.0.0.1:9"],
            ["tracking.uri", "does not answer", "Fix: start it"],
        ),
        (["--tracking-uri", "sqlite:///nowhere/m.db"], ["tracking.uri", "does not exist"]),
        (
            ["--storage", "postgresql://u:PASSWORD@127.0.0.1:1/db"],
            ["study.storage", "postgresql://u:***@127.0.0.1:1/db", "refused", "Fix: check"],
        ),
    ],
)
def test_bad_options_exit_2_and_create_nothing(make_experiment, workdir, args, fragments) -> None:
    exp = make_experiment("bad")
    result = runner.invoke(app, ["run", str(exp), *args])
    line = one_line_error(result, *fragments)
    assert "PASSWORD" not in line and "(Background on" not in line, line
    nothing_created(workdir)


@pytest.mark.parametrize(
    "command",
    [["show", "s"], ["best", "s"], ["status"], ["compare", "s"], ["status", "--json"]],
)
def test_reading_commands_create_nothing(workdir, command) -> None:
    result = runner.invoke(app, command)
    assert result.exit_code in (0, 2), result.output
    if result.exit_code == 2:
        one_line_error(result, "no study 's'", "run `tuning run` first")
    nothing_created(workdir)


def test_reading_commands_on_a_dead_server_say_so(workdir) -> None:
    result = runner.invoke(app, ["status", "--storage", "postgresql://u:pw@127.0.0.1:1/db"])
    line = one_line_error(result, "--storage", "cannot open", "u:***@", "Fix:")
    assert "(Background on" not in line
    nothing_created(workdir)


def test_missing_experiment_file(workdir) -> None:
    result = runner.invoke(app, ["run", "experiments/nope.yaml"])
    one_line_error(result, "experiments/nope.yaml", "experiment file not found")
    nothing_created(workdir)


def test_malformed_yaml(workdir) -> None:
    (workdir / "broken.yaml").write_text("name: x\ndataset: {name: digits\n")
    result = runner.invoke(app, ["run", "broken.yaml"])
    one_line_error(result, "broken.yaml", "not valid YAML", "line 3")
    nothing_created(workdir)


def test_fashion_mnist_offline_and_absent_says_how_to_get_it(
    make_experiment, workdir, monkeypatch
) -> None:
    from tuning.data import images

    monkeypatch.setattr(images, "DEBIAN_DIRS", {"fashion_mnist": workdir / "no-such-dir"})
    monkeypatch.setenv("KERAS_HOME", str(workdir / "keras-home"))
    exp = make_experiment("fm", dataset={"name": "fashion_mnist"})
    result = runner.invoke(app, ["run", str(exp)])
    line = one_line_error(
        result, "fm.yaml", "dataset.name", "fashion_mnist is not on this machine"
    )
    assert "apt-get install dataset-fashion-mnist" in line
    nothing_created(workdir)


def test_spaces_lists_and_validates(workdir) -> None:
    result = runner.invoke(app, ["spaces", str(ROOT / "search_spaces" / "stretch_pants.yaml")])
    assert result.exit_code == 0, result.output
    assert (
        "momentum" in result.stdout
        and "when optimizer in ['momentum', 'nesterov']" in result.stdout
    )
    (workdir / "bad.yaml").write_text(
        yaml.safe_dump({"dropout": {"type": "float", "low": 0.6, "high": 0.2}})
    )
    bad = runner.invoke(app, ["spaces", "bad.yaml"])
    one_line_error(bad, "bad.yaml", "dropout", "low must not be above high")


def test_validate_prints_resolved_config_and_creates_nothing(workdir) -> None:
    result = runner.invoke(
        app,
        ["validate", str(ROOT / "experiments" / "quickstart.yaml"), "--set", "study.n_trials=2"],
    )
    assert result.exit_code == 0, result.output
    resolved = yaml.safe_load(result.stdout)
    assert resolved["study"]["n_trials"] == 2
    assert resolved["search_space"]["momentum"]["when"] == {"optimizer": ["nesterov"]}
    nothing_created(workdir)


def test_mlflow_run_entry_point(make_experiment, workdir: Path) -> None:
    """`mlflow run . --env-manager local -P ...` runs the job; MLflow's run becomes the parent."""
    exp = make_experiment("mlproject")
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}",
    }
    proc = subprocess.run(
        [
            sys.executable, "-m", "mlflow", "run", str(ROOT), "--env-manager", "local",
            "--experiment-name", "mlproject",
            "-P", f"experiment={exp}",
            "-P", "n_trials=2",
            "-P", f"storage=sqlite:///{workdir / 'x.db'}",
            "-P", "overrides=training.max_epochs=1 study.seed=5",
        ],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    import optuna

    study = optuna.load_study(study_name="mlproject", storage=f"sqlite:///{workdir / 'x.db'}")
    assert len(study.trials) == 2
    assert [t.user_attrs["epochs_trained"] for t in study.trials] == [1, 1]  # -P overrides
    parents, children = parents_and_children(mlflow_runs(env["MLFLOW_TRACKING_URI"], "mlproject"))
    assert len(parents) == 1 and len(children) == 2
    assert parents[0].data.tags.get("mlflow.project.entryPoint") == "main"  # MLflow's own run
    assert parents[0].data.tags["study"] == "mlproject"
    assert parents[0].data.params["study.seed"] == "5"
    assert parents[0].info.status == "FINISHED"
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
