"""Before a job names its best model, its top trials are trained again from other weights."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from conftest import by_trial_number, mlflow_runs, run_json
from typer.testing import CliRunner

from tuning.cli import app

runner = CliRunner()


def _recheck_table(workdir: Path, run_id: str) -> list[dict]:
    """The job's ``recheck.json``, as the parent run holds it."""
    return run_json(workdir, run_id, "recheck.json")


@pytest.mark.parametrize("engine", ["optuna", "keras_tuner"])
def test_top_trials_are_rechecked_and_ranked_by_the_mean(
    make_experiment, workdir: Path, engine: str
) -> None:
    exp = make_experiment(
        "recheck", study__n_trials=3, study__recheck_top=2, training__max_epochs=3
    )
    result = runner.invoke(app, ["run", str(exp), "--set", f"study.engine={engine}"])
    assert result.exit_code == 0, result.output
    line = next(x for x in result.stdout.splitlines() if x.startswith("recheck ("))

    parent = mlflow_runs(workdir, "recheck", role="job")[0]
    trials = by_trial_number(mlflow_runs(workdir, "recheck", role="trial"))
    rechecks = mlflow_runs(workdir, "recheck", role="recheck")
    assert len(trials) == 3 and len(rechecks) == 2
    for r in rechecks:  # each re-run sits under its trial's run, from other initial weights
        number = r.data.tags["trial_number"]
        assert r.info.run_name == f"trial-{number}-recheck-1"
        assert r.data.tags["mlflow.parentRunId"] == trials[int(number)].info.run_id
        assert r.info.status == "FINISHED" and r.data.tags["state"] == "complete"
        assert "objective" in r.data.metrics and r.data.tags["seed"]
    table = _recheck_table(workdir, parent.info.run_id)
    assert len(table) == 2
    for row in table:  # no time budget: one round, one re-run each
        assert len(row["values"]) == 1
        assert row["mean"] == pytest.approx((row["first"] + row["values"][0]) / 2)
    winner = max(table, key=lambda row: row["mean"])
    assert parent.data.tags["best_by_mean"] == str(winner["number"])
    assert parent.data.tags["model_trial"] == str(winner["number"])  # the job's best model
    assert f"best by mean: trial {winner['number']}" in line


def test_recheck_off_and_fewer_than_two_trials(make_experiment, workdir: Path) -> None:
    exp = make_experiment("off", study__n_trials=2, study__recheck_top=0)
    assert runner.invoke(app, ["run", str(exp)]).exit_code == 0
    one = make_experiment("one", study__n_trials=1, study__recheck_top=3)
    result = runner.invoke(app, ["run", str(one)])
    assert result.exit_code == 0 and "recheck (" not in result.stdout
    for name in ("off", "one"):
        assert mlflow_runs(workdir, name, role="recheck") == []
    assert len(optuna.load_study(study_name="one", storage="sqlite:///optuna.db").trials) == 1


def test_time_left_after_a_round_buys_more_rounds(make_experiment, workdir: Path) -> None:
    """Re-runs that stop early leave their budget share unspent: another round uses it (up to
    RECHECK_ROUNDS), each re-run from new weights, and the mean takes every run."""
    from tuning.recheck import RECHECK_ROUNDS

    exp = make_experiment(
        "rounds", study__n_trials=2, study__recheck_top=2, study__timeout=120,
        training__max_epochs=2,
    )  # fmt: skip
    result = runner.invoke(app, ["run", str(exp)])
    assert result.exit_code == 0, result.output
    runs = mlflow_runs(workdir, "rounds", role="recheck")
    names = sorted(r.info.run_name for r in runs)
    numbers = sorted({r.data.tags["trial_number"] for r in runs})
    assert names == sorted(
        f"trial-{n}-recheck-{k}" for n in numbers for k in range(1, RECHECK_ROUNDS + 1)
    )
    assert len({r.data.tags["seed"] for r in runs}) == len(runs)  # other weights every time
    parent = mlflow_runs(workdir, "rounds", role="job")[0]
    table = _recheck_table(workdir, parent.info.run_id)
    for row in table:
        assert len(row["values"]) == RECHECK_ROUNDS
        assert row["mean"] == pytest.approx((row["first"] + sum(row["values"])) / 4)


def test_a_cut_top_trial_trains_further_in_its_own_run(
    make_experiment, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 26: a top trial cut by its slice of the budget keeps its weights and optimizer
    state until the re-check, which continues it in its own run (one curve: steps on from
    where it stopped) before the re-runs over other seeds; the states are deleted at the end."""
    import mlflow

    from tuning.config import load_experiment
    from tuning.job import run_job
    from tuning.trial import StateKeeper

    saved_paths: list[Path] = []
    save = StateKeeper.save

    def recording(self: StateKeeper, *args: object, **kwargs: object) -> None:
        save(self, *args, **kwargs)  # type: ignore[arg-type]
        saved_paths.extend(s.path for s in self.saved.values())
        assert all(s.path.exists() for s in self.saved.values())

    monkeypatch.setattr(StateKeeper, "save", recording)
    path = make_experiment(
        "further", study__n_trials=50, study__timeout=60, study__min_configs=3,
        study__recheck_top=2, training__max_epochs=5000,
        training__early_stopping={"patience": 5000},
    )  # fmt: skip
    exp = load_experiment(path)
    lines: list[str] = []
    result = run_job(exp, say=lines.append)
    assert saved_paths and not any(p.exists() for p in saved_paths)  # cleaned at the job's end
    study = optuna.load_study(study_name="further", storage="sqlite:///optuna.db")
    further = [line for line in lines if "trained" in line and "further from epoch" in line]
    assert len(further) == 2, lines  # both top trials were cut: both trained further
    client = mlflow.MlflowClient(result.tracking_uri)
    parent = client.get_run(result.parent_run_id).data.metrics
    table = {row["number"]: row for row in _recheck_table(workdir, result.parent_run_id)}
    continued = 0
    for number, row in table.items():
        trial = study.trials[number]
        first_epochs = trial.user_attrs["epochs_trained"]
        run = client.get_run(trial.user_attrs["mlflow_run_id"])
        assert run.info.status == "FINISHED" and run.data.tags["state"] == "complete"
        assert run.data.tags["continued"].endswith(f"from epoch {first_epochs + 1}")
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")]
        epochs = int(run.data.metrics["epochs_trained"])
        assert sorted(steps) == list(range(epochs)) and epochs == first_epochs + row["continued"]
        values = [m.value for m in client.get_metric_history(run.info.run_id, "val_accuracy")]
        assert run.data.metrics["objective"] == pytest.approx(max(values))  # the whole curve
        assert row["first"] == pytest.approx(max(values)) and row["first"] >= trial.value
        assert study.user_attrs[f"trial_{number}_resumed_value"] == pytest.approx(row["first"])
        continued += row["continued"]
    assert parent["epochs_continued"] == continued > 0
    assert parent["epochs_thrown_away"] == 0
    assert parent["configs_evaluated"] == len(study.trials) == result.trials_run
    trained = sum(t.user_attrs["epochs_trained"] for t in study.trials) + continued
    assert parent["epochs_trained_total"] == trained + parent["epochs_rechecks"]
    assert parent["states_saved"] >= 2 and parent["state_bytes"] > 0
