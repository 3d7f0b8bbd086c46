"""What a person reads: parent-run plots and summary, the results table, show / best / --json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import mlflow_client
from typer.testing import CliRunner

from tuning.cli import app

runner = CliRunner()


def test_parent_run_reports_and_terminal_views(make_experiment, workdir: Path) -> None:
    exp = make_experiment("report", study__n_trials=4, study__sampler={"type": "random"})
    result = runner.invoke(app, ["run", str(exp), "--json"])
    assert result.exit_code == 0, result.output
    job = json.loads(result.stdout)  # --json prints only the JSON summary
    assert job["study_name"] == "report" and job["trials_run"] == 4
    assert job["counts"]["complete"] == 4 and job["status"] == "FINISHED"

    client = mlflow_client(workdir)
    parent = client.get_run(job["parent_run_id"])
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    for name in ("optimization_history", "param_importances", "parallel_coordinate", "slice"):
        assert f"{name}.html" in artifacts, name
    for name in ("optimization_history", "param_importances", "parallel_coordinate", "slice"):
        assert f"{name}.png" in artifacts, name
    assert {"learning_curves.png", "trials.csv", "summary.md", "config.yaml"} <= artifacts
    summary = client.download_artifacts(parent.info.run_id, "summary.md", str(workdir))
    text = Path(summary).read_text()
    assert f"**Winner: trial {job['best_trial']}**" in text
    assert "parameters and trained for" in text and "test_accuracy" in text
    assert parent.data.metrics["job_seconds"] > 0
    assert parent.data.metrics["n_complete"] == 4

    shown = runner.invoke(app, ["show", "report"])
    assert shown.exit_code == 0, shown.output
    assert "'report' (maximize): 4 trials: 4 complete" in shown.stdout
    table = [line for line in shown.stdout.splitlines() if line.strip()[:1].isdigit()]
    values = [float(line.split()[1]) for line in table]
    assert len(values) == 4 and values == sorted(values, reverse=True)  # best first

    best = runner.invoke(app, ["best", "report", "--json"])
    found = json.loads(best.stdout)
    assert found["number"] == job["best_trial"] and found["value"] == job["best_value"]
    assert found["params"]["batch_size"] == 128  # fixed values are part of the answer
    assert found["mlflow_run_id"] and found["n_params"] > 0

    quiet = runner.invoke(app, ["run", str(exp), "--quiet", "--n-trials", "1"])
    assert quiet.exit_code == 0 and quiet.stdout == ""


def test_show_unknown_study_lists_the_known_ones(make_experiment, workdir: Path) -> None:
    exp = make_experiment("known", study__n_trials=1)
    assert runner.invoke(app, ["run", str(exp), "-q"]).exit_code == 0
    result = runner.invoke(app, ["show", "nope"])
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: STUDY: no study 'nope' in sqlite:///optuna.db. Fix: use one of known"
    )
    missing = runner.invoke(app, ["best", "x", "--storage", "sqlite:///no/such/dir/x.db"])
    assert missing.exit_code == 2 and "cannot open the storage" in missing.stderr


def test_optunas_plots_read_the_trials_once_and_copy_none(tmp_path: Path, monkeypatch) -> None:
    """Optuna's plots ask for every trial many times, deep-copied (plot_param_importances six
    times): on a 10,000-trial study that was 15 of the parent run's 39 s of reports. They get
    one uncopied read now, and draw the same plots."""
    import copy

    import optuna

    from tuning import report

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(
        lambda t: (t.suggest_float("x", -1, 1) - 0.2) ** 2 + 0.1 * t.suggest_int("n", 1, 4),
        n_trials=30,
    )
    study.enqueue_trial({"x": 0.0, "n": 1})
    study.ask()  # one left running: the snapshot filters states as Optuna does

    view = report._Snapshot(study)
    assert [t.number for t in view.trials] == [t.number for t in study.trials]
    done = (optuna.trial.TrialState.COMPLETE,)
    assert len(view.get_trials(states=done)) == 30 == len(study.get_trials(states=done))

    reads = []
    all_trials = study._storage.get_all_trials
    monkeypatch.setattr(
        study._storage, "get_all_trials", lambda *a, **k: reads.append(1) or all_trials(*a, **k)
    )
    copies = []
    deepcopy = copy.deepcopy
    monkeypatch.setattr(
        copy,
        "deepcopy",
        lambda x, *a, **k: (
            copies.append(1) if type(x).__name__ == "FrozenTrial" else None or deepcopy(x, *a, **k)
        ),
    )
    paths = report._optuna_plots(study, tmp_path)
    names = {p.name for p in paths}
    for kind in ("param_importances", "parallel_coordinate", "slice"):
        assert {f"{kind}.png", f"{kind}.html"} <= names
    assert "optimization_history.html" in names
    assert all(p.stat().st_size > 1000 for p in paths)
    assert len(reads) == 1
    assert copies == []


@pytest.mark.parametrize("direction", ["minimize", "maximize"])
def test_per_trial_plots_draw_the_latest_trials_and_the_best_before_them(
    tmp_path: Path, monkeypatch, direction: str
) -> None:
    """A long study's parallel-coordinate and slice plots draw its latest complete trials and
    the best before them (and say so); the history and the importances draw every trial."""
    import optuna

    from tuning import report

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction=direction, sampler=optuna.samplers.RandomSampler(1))
    study.optimize(lambda t: t.suggest_float("x", 0, 1) + 0.1 * t.suggest_int("n", 1, 4), 45)
    for _ in range(3):  # pruned and failed trials are not drawn, and stay out of the count
        study.tell(study.ask(), state=optuna.trial.TrialState.PRUNED)
    monkeypatch.setattr(report, "PLOT_TRIALS", 20)
    monkeypatch.setattr(report, "PLOT_BEST", 4)

    drawn: dict[str, list[int]] = {}
    for module in (optuna.visualization, optuna.visualization.matplotlib):
        for fn in ("plot_parallel_coordinate", "plot_slice", "plot_param_importances"):
            real = getattr(module, fn)

            def spy(s, *a, _real=real, _key=f"{module.__name__}.{fn}", **k):
                done = s.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                drawn[_key] = [t.number for t in done]
                return _real(s, *a, **k)

            monkeypatch.setattr(module, fn, spy)

    paths = {p.name: p for p in report._optuna_plots(study, tmp_path)}
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    older = sorted(complete[:-20], key=lambda t: t.value, reverse=direction == "maximize")
    expected = sorted([t.number for t in older[:4]] + [t.number for t in complete[-20:]])
    for fn in ("plot_parallel_coordinate", "plot_slice"):
        assert drawn[f"optuna.visualization.{fn}"] == expected
        assert drawn[f"optuna.visualization.matplotlib.{fn}"] == expected
    every = [t.number for t in complete]
    assert drawn["optuna.visualization.plot_param_importances"] == every
    note = "the latest 20 complete trials and the best 4 before them, of 45"
    assert note in paths["parallel_coordinate.html"].read_text()
    assert note in paths["slice.html"].read_text()
    assert note not in paths["param_importances.html"].read_text()

    monkeypatch.setattr(report, "PLOT_TRIALS", 1000)  # a study of fewer: every trial, no note
    drawn.clear()
    paths = {p.name: p for p in report._optuna_plots(study, tmp_path)}
    assert drawn["optuna.visualization.plot_parallel_coordinate"] == every
    assert "complete trials and the best" not in paths["slice.html"].read_text()
