"""The Optuna engine's own part: the job's deadline stops the trial in flight at an epoch end.

What every engine must do (MLflow names, resume, budget, errors) is in test_contract.py.
"""

from __future__ import annotations

import math
import time

import mlflow
import optuna
import pytest
import scipy.special
from optuna.samplers._tpe import _truncnorm

from tuning.config import load_experiment
from tuning.engines.optuna import fast_log_ndtr
from tuning.job import run_job


def test_time_budget_cuts_the_trial_in_flight_which_counts_and_the_time_adds_up(
    workdir, make_experiment
):
    path = make_experiment(
        study__n_trials=50,
        study__timeout=12,
        study__min_configs=None,  # the deadline alone cuts the one trial in flight
        training__max_epochs=5000,
        training__early_stopping={"patience": 5000},
    )
    exp = load_experiment(path)
    start = time.perf_counter()
    result = run_job(exp, say=lambda _: None)
    elapsed = time.perf_counter() - start
    study = optuna.load_study(study_name=exp.study_name, storage=exp.study.storage)
    cut = [t for t in study.trials if "time budget" in t.user_attrs.get("cut", "")]
    # 5000 epochs with patience 5000 cannot finish in 12 s: the one trial in flight is cut...
    assert len(study.trials) == 1 and len(cut) == 1
    assert 0 < cut[0].user_attrs["epochs_trained"] < 5000
    # ...and it is a trained model with the score it reached (its best epoch's weights), not
    # a pruned one: COMPLETE, and the job's best model, scored on test and logged.
    assert cut[0].state == optuna.trial.TrialState.COMPLETE
    assert cut[0].value == max(cut[0].intermediate_values.values())
    assert result.best_trial == cut[0].number and result.model_uri
    assert 0 < result.test_scores["test_accuracy"] <= 1
    run = mlflow.MlflowClient(result.tracking_uri).get_run(cut[0].user_attrs["mlflow_run_id"])
    assert "time budget" in run.data.tags["cut"] and run.data.tags["state"] == "complete"
    assert elapsed < 12 + 30  # the deadline, plus the last epoch and the job's report
    tm = result.timings
    assert set(tm) == {
        "setup", "build", "compile", "fit", "study_tracking", "finish", "fraction"
    }  # fmt: skip
    assert tm["fit"] > 0 and tm["build"] > 0 and tm["study_tracking"] > 0
    # The first epoch traces and compiles the model's steps: its excess over a typical epoch
    # (0 when XLA's persistent cache already holds this model's programs).
    assert 0 <= tm["compile"] < tm["fit"] + tm["compile"]
    parts = tm["setup"] + tm["build"] + tm["compile"] + tm["fit"]
    parts += tm["study_tracking"] + tm["finish"]
    assert abs(parts - result.seconds) < 0.5  # the parts add up to the job
    assert 0 < tm["fraction"] < 1


def test_a_budget_buys_at_least_min_configs_configurations(workdir, make_experiment) -> None:
    path = make_experiment(
        study__n_trials=50,
        study__timeout=24,  # slices of 4.2 s: room for a slow first compile
        study__min_configs=4,
        training__max_epochs=5000,
        training__early_stopping={"patience": 5000},
    )
    exp = load_experiment(path)
    result = run_job(exp, say=lambda _: None)
    study = optuna.load_study(study_name=exp.study_name, storage=exp.study.storage)
    # No trial could end by itself: each was cut at its quarter of the search's time, and counts.
    assert len(study.trials) >= 4
    cut = [t for t in study.trials if "share of the time budget" in t.user_attrs.get("cut", "")]
    assert len(cut) >= 3 and all(t.state == optuna.trial.TrialState.COMPLETE for t in cut)
    assert result.best_value == max(t.value for t in study.trials if t.value is not None)


def test_bounded_tpe_models_the_best_and_the_recent_trials(tmp_path) -> None:
    """``sampler.history``: TPE's view of a long study is its best 25 complete trials and the
    most recent N; its "good" trials are those of the whole history; it still samples."""
    from tuning.config.schema import SamplerConfig
    from tuning.engines.optuna import TPE_BEST, BoundedTPESampler, _HistoryView, make_sampler

    storage = f"sqlite:///{tmp_path / 'o.db'}"
    study = optuna.create_study(storage=storage, direction="maximize")
    dist = optuna.distributions.FloatDistribution(0.0, 1.0)
    trials = []
    for i in range(400):
        x = (i * 0.6180339887) % 1.0
        if i % 3 == 0:  # pruned trials have no value
            trials.append(
                optuna.trial.create_trial(
                    state=optuna.trial.TrialState.PRUNED,
                    params={"x": x},
                    distributions={"x": dist},
                    intermediate_values={0: x / 2},
                )
            )
        else:
            trials.append(
                optuna.trial.create_trial(value=x, params={"x": x}, distributions={"x": dist})
            )
    study.add_trials(trials)

    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    seen = _HistoryView(study, 100)._get_trials(deepcopy=False, states=states)
    numbers = [t.number for t in seen]
    assert numbers == sorted(numbers) and len(numbers) == TPE_BEST + 100
    assert numbers[-100:] == list(range(300, 400))
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    top = sorted(complete, key=lambda t: -float(t.value))[:TPE_BEST]  # type: ignore[arg-type]
    older = {t.number for t in top if t.number < 300}
    assert older and older <= set(numbers[:TPE_BEST])  # the best of the old ones are kept
    short = _HistoryView(study, 1000)._get_trials(deepcopy=False, states=states)
    assert len(short) == 400  # a study shorter than the window: every trial

    sampler = make_sampler(SamplerConfig(history=100, n_startup_trials=5), seed=0)
    assert isinstance(sampler, BoundedTPESampler) and sampler.recent == 100
    study.sampler = sampler
    study.optimize(lambda t: t.suggest_float("x", 0.0, 1.0), n_trials=3)
    assert len(study.trials) == 403
    assert all(0.0 <= t.params["x"] <= 1.0 for t in study.trials[-3:])
    plain = make_sampler(SamplerConfig(history=None), seed=0)
    assert type(plain) is optuna.samplers.TPESampler


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_bounded_views_kept_best_equals_ranking_every_time(tmp_path, direction) -> None:
    """Behind tuning's trial cache the view keeps its best old trials from call to call; what
    it returns equals ranking the whole history again, with tied values, trials that complete
    long after they started (below the cut) and a window that slides on."""
    import random

    from tuning import trial_cache
    from tuning.engines.optuna import _BestOld, _HistoryView

    url = f"sqlite:///{tmp_path / 'o.db'}"
    ours = optuna.create_study(
        storage=trial_cache.cached(optuna.storages.RDBStorage(url)),
        study_name="s",
        direction=direction,
    )
    plain = optuna.load_study(study_name="s", storage=url)  # Optuna's own cache
    assert hasattr(ours._storage, "kept_trials") and not hasattr(plain._storage, "kept_trials")
    rng = random.Random(3)
    kept = _BestOld()
    long_running = []
    S = optuna.trial.TrialState
    state_sets = [(S.COMPLETE, S.PRUNED), (S.COMPLETE, S.PRUNED, S.RUNNING), (S.PRUNED,)]
    compared = 0
    for i in range(260):
        trial = ours.ask()
        trial.suggest_float("x", 0, 1)
        if rng.random() < 0.08:
            long_running.append(trial)  # finishes much later, below the cut by then
        elif rng.random() < 0.6:
            ours.tell(trial, round(rng.random(), 1))  # one decimal: many ties
        else:
            ours.tell(trial, state=S.PRUNED)
        if long_running and rng.random() < 0.05:
            ours.tell(long_running.pop(0), round(rng.random(), 1))
        if i % 7 == 0:
            states = rng.choice(state_sets)
            ours._storage.get_all_trials(ours._study_id, deepcopy=False)  # TPE's read first
            got = _HistoryView(ours, 40, kept)._get_trials(deepcopy=False, states=states)
            want = _HistoryView(plain, 40)._ranked_here(False, states, False)
            assert [t.number for t in got] == [t.number for t in want], (i, states)
            compared += 1
    assert compared > 30 and len(ours.trials) == 260


@pytest.mark.parametrize("seed", [0, 1])
def test_median_pruner_decides_as_optunas_over_a_random_history(tmp_path, seed) -> None:
    """Kept medians (per epoch, until a trial completes) give Optuna's decision at every epoch:
    trials complete between others, curves have gaps and NaNs, some trials are pruned."""
    import random

    from tuning.engines.optuna import PerTrialMedianPruner

    rng = random.Random(seed)
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'o.db'}", direction="minimize")
    ours = PerTrialMedianPruner(n_startup_trials=3, n_warmup_steps=2)
    theirs = optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2)
    decisions = []
    for _ in range(60):
        trial = study.ask()
        level = rng.uniform(0.2, 1.0)
        steps = rng.randint(1, 8)
        for step in range(steps):
            if rng.random() < 0.1:
                continue  # a gap: this epoch not reported
            value = float("nan") if rng.random() < 0.05 else level / (step + 1)
            trial.report(value, step)
            frozen = study._storage.get_trial(trial._trial_id)
            mine = ours.prune(study, frozen)
            assert mine == theirs.prune(study, frozen), (trial.number, step)
            decisions.append(mine)
        if rng.random() < 0.5:
            study.tell(trial, level / steps)
        else:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    assert True in decisions and False in decisions


def test_median_pruner_reads_the_complete_trials_once_per_trial_and_decides_as_optunas(
    tmp_path,
) -> None:
    from tuning.engines.optuna import PerTrialMedianPruner

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'o.db'}", direction="maximize")
    study.add_trials(
        [
            optuna.trial.create_trial(
                value=0.5 + i / 100,
                intermediate_values={s: (0.1 + i / 100) * (s + 1) / 6 for s in range(6)},
            )
            for i in range(30)
        ]
    )
    ours = PerTrialMedianPruner(n_startup_trials=5, n_warmup_steps=1)
    theirs = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
    reads = 0
    original = study.get_trials

    def counted(*args, **kwargs):
        nonlocal reads
        reads += 1
        return original(*args, **kwargs)

    study.get_trials = counted  # type: ignore[method-assign]
    decisions = []
    for level in (0.05, 0.15, 0.3):  # below, around and above the median
        trial = study.ask()
        for step in range(6):
            trial.report(level * (step + 1) / 6 * 2, step)
            frozen = study._storage.get_trial(trial._trial_id)
            before = reads
            mine = ours.prune(study, frozen)
            assert reads - before == (1 if step == 0 else 0)  # read at its first report only
            assert mine == theirs.prune(study, frozen)
            decisions.append(mine)
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    assert True in decisions and False in decisions


_OPTUNAS_LOG_NDTR = getattr(_truncnorm, "_log_ndtr", None)  # as imported, before any sampler


def _tpe_proposals(n: int) -> list[dict[str, object]]:
    """Parameters TPE proposes over ``n`` trials of a space with every kind of parameter (its
    log Phi serves the integer ones), as the engine's sampler is made (multivariate)."""
    sampler = optuna.samplers.TPESampler(seed=7, n_startup_trials=5, multivariate=True)
    study = optuna.create_study(sampler=sampler, direction="maximize")

    def objective(trial: optuna.Trial) -> float:
        layers = trial.suggest_int("n_hidden", 1, 4)
        neurons = trial.suggest_int("n_neurons", 8, 256, log=True)
        lr = trial.suggest_float("learning_rate", 1e-4, 1e-1, log=True)
        drop = trial.suggest_float("dropout", 0.0, 0.5, step=0.1)
        act = trial.suggest_categorical("activation", ["relu", "elu", "selu"])
        return (
            -abs(layers - 2)
            - abs(math.log(neurons / 90))
            - abs(math.log(lr / 3e-3))
            - drop
            + (act == "elu")
        )

    study.optimize(objective, n_trials=n)
    return [t.params for t in study.trials]


@pytest.mark.skipif(
    _OPTUNAS_LOG_NDTR is None or _OPTUNAS_LOG_NDTR is scipy.special.log_ndtr,
    reason="Optuna's own log_ndtr is not there to compare with",
)
def test_fast_log_ndtr_makes_tpe_propose_what_optunas_own_does(monkeypatch) -> None:
    monkeypatch.setattr(_truncnorm, "_log_ndtr", _OPTUNAS_LOG_NDTR)
    optunas = _tpe_proposals(60)
    assert fast_log_ndtr() is True
    assert _truncnorm._log_ndtr is scipy.special.log_ndtr  # installed: SciPy's, in C
    assert fast_log_ndtr() is True  # and again: nothing to do
    # 55 modelled samples: the same integers and choices, and the same floats but for their last
    # digits (TPE draws floats through log Phi too, and SciPy's differs from Optuna's there)
    assert _tpe_proposals(60) == [
        {k: pytest.approx(v, rel=1e-12) if isinstance(v, float) else v for k, v in p.items()}
        for p in optunas
    ]


def test_fast_log_ndtr_leaves_a_function_that_computes_something_else(monkeypatch) -> None:
    def other(a):  # a later Optuna whose _log_ndtr meant something else
        return scipy.special.log_ndtr(a) * 2.0

    monkeypatch.setattr(_truncnorm, "_log_ndtr", other)
    assert fast_log_ndtr() is False
    assert _truncnorm._log_ndtr is other
