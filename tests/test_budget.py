"""The job's time budget is a deadline: the trial in flight stops at its next epoch end."""

from __future__ import annotations

import time

import optuna
import pytest

from tuning.config import load_experiment
from tuning.study import run_job


def test_time_budget_stops_the_trial_in_flight_and_breaks_down_the_time(workdir, make_experiment):
    path = make_experiment(
        study__n_trials=50,
        study__timeout=12,
        training__max_epochs=5000,
        training__early_stopping={"patience": 5000},
    )
    exp = load_experiment(path)
    start = time.perf_counter()
    result = run_job(exp, say=lambda _: None)
    elapsed = time.perf_counter() - start
    study = optuna.load_study(study_name=exp.study_name, storage=exp.study.storage)
    cut = [t for t in study.trials if "time budget" in t.user_attrs.get("reason", "")]
    # 5000 epochs with patience 5000 cannot finish in 12 s: the one trial in flight is cut.
    assert len(cut) == 1 and cut[0].state == optuna.trial.TrialState.PRUNED
    assert len(study.trials) == 1 and 0 < cut[0].user_attrs["epochs_trained"] < 5000
    assert elapsed < 12 + 30  # the deadline, plus the last epoch and the job's report
    tm = result.timings
    assert set(tm) == {
        "setup", "build", "compile", "fit", "study_tracking", "finish", "fraction"
    }  # fmt: skip
    assert tm["fit"] > 0 and tm["build"] > 0 and tm["study_tracking"] > 0
    # The first epoch traces and compiles the model's steps: its excess over a typical epoch.
    assert 0 < tm["compile"] < tm["fit"] + tm["compile"]
    parts = tm["setup"] + tm["build"] + tm["compile"] + tm["fit"]
    parts += tm["study_tracking"] + tm["finish"]
    assert abs(parts - result.seconds) < 0.5  # the parts add up to the job
    assert 0 < tm["fraction"] < 1


def test_compile_seconds_is_the_first_epochs_excess_over_the_median() -> None:
    from tuning.study import compile_seconds

    # Epochs of 3.0, 1.0, 1.2, 0.9 s, each followed by a 0.1 s hook that is not the epoch's:
    # the first exceeds the median of the others (1.0) by 2.0.
    hooks = [(13.0, 13.1), (14.1, 14.2), (15.4, 15.5), (16.4, 16.5)]
    assert compile_seconds(10.0, hooks) == pytest.approx(2.0)
    assert compile_seconds(10.0, [(11.0, 11.1)]) == 0.0  # one epoch: nothing to compare with
    assert compile_seconds(10.0, [(10.5, 10.6), (11.6, 11.7)]) == 0.0  # first epoch faster


def test_validation_is_scored_in_as_few_equal_batches_as_fit() -> None:
    from tuning.train import MAX_VALIDATION_BATCH, validation_batch_size

    assert validation_batch_size(288) == 288 and validation_batch_size(5000) == 5000
    big = 3 * MAX_VALIDATION_BATCH - 7
    size = validation_batch_size(big)
    assert size <= MAX_VALIDATION_BATCH and -(-big // size) == 3
