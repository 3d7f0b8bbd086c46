"""The Optuna engine's own part: the job's deadline stops the trial in flight at an epoch end.

What every engine must do (MLflow names, resume, budget, errors) is in test_contract.py.
"""

from __future__ import annotations

import time

import optuna

from tuning.config import load_experiment
from tuning.job import run_job


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
