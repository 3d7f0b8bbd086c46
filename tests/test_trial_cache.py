"""tuning.trial_cache: the same answers as Optuna's own cache, whatever the history."""

from __future__ import annotations

import random

import optuna
import pytest
from optuna.storages._cached_storage import _CachedStorage
from optuna.trial import TrialState

from tuning import storage as storage_mod
from tuning import trial_cache

STATE_SETS = [
    None,
    (TrialState.COMPLETE,),
    (TrialState.WAITING,),
    (TrialState.RUNNING,),
    (TrialState.COMPLETE, TrialState.PRUNED),
    (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING),
    [TrialState.FAIL, TrialState.PRUNED],
]


def _seen(trials: list[optuna.trial.FrozenTrial]) -> list[tuple[object, ...]]:
    return [
        (t.number, t.state, t.values, t.params, t.intermediate_values, t.user_attrs)
        for t in trials
    ]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_read_equals_optunas_own_cache_over_a_random_history(tmp_path, seed) -> None:
    """Two workers (each its own cache over one SQLite file) ask, report, finish in any order,
    enqueue and fail trials; after every step each state set reads the same from this cache as
    from a fresh Optuna cache over the same database."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ours = trial_cache.cached(optuna.storages.RDBStorage(url))
    assert type(ours) is trial_cache.SortedTrialsCache
    other = optuna.storages.get_storage(url)  # a second worker, on Optuna's cache
    study = optuna.create_study(storage=ours, study_name="s", direction="maximize")
    elsewhere = optuna.load_study(storage=other, study_name="s")
    sid = study._study_id
    rng = random.Random(seed)
    open_trials: list[tuple[optuna.Study, optuna.Trial]] = []
    for step in range(160):
        roll = rng.random()
        if roll < 0.35 or not open_trials:
            where = study if rng.random() < 0.7 else elsewhere
            trial = where.ask()
            trial.suggest_float("x", 0, 1)
            open_trials.append((where, trial))
        elif roll < 0.45:
            (study if rng.random() < 0.5 else elsewhere).enqueue_trial({"x": rng.random()})
        elif roll < 0.55:
            _, trial = rng.choice(open_trials)
            trial.report(rng.random(), step)
            trial.set_user_attr("step", step)
        else:
            where, trial = open_trials.pop(rng.randrange(len(open_trials)))
            state = rng.choice([TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL])
            value = rng.random() if state == TrialState.COMPLETE else None
            where.tell(trial, value, state=state)
        states = rng.choice(STATE_SETS)
        got = ours.get_all_trials(sid, deepcopy=False, states=states)
        fresh = _CachedStorage(optuna.storages.RDBStorage(url))
        assert _seen(got) == _seen(fresh.get_all_trials(sid, deepcopy=False, states=states)), (
            step,
            states,
        )
    for states in STATE_SETS:  # every kept list, at the end
        fresh = _CachedStorage(optuna.storages.RDBStorage(url))
        expected = _seen(fresh.get_all_trials(sid, deepcopy=False, states=states))
        assert _seen(ours.get_all_trials(sid, deepcopy=False, states=states)) == expected
        assert _seen(ours.get_all_trials(sid, deepcopy=True, states=states)) == expected
    assert len(ours.get_all_trials(sid, deepcopy=False)) == len(study.trials) >= 40


def test_a_callers_list_is_its_own(tmp_path) -> None:
    """A caller that changes the list it got does not change what the next caller reads."""
    ours = trial_cache.cached(optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 's.db'}"))
    study = optuna.create_study(storage=ours)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=5)
    first = ours.get_all_trials(study._study_id, deepcopy=False)
    first.clear()
    assert [t.number for t in ours.get_all_trials(study._study_id, deepcopy=False)] == [
        0,
        1,
        2,
        3,
        4,
    ]


def test_a_deleted_study_leaves_no_list_behind(tmp_path) -> None:
    ours = trial_cache.cached(optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 's.db'}"))
    study = optuna.create_study(storage=ours, study_name="gone")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    assert len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) == 3
    optuna.delete_study(study_name="gone", storage=ours)
    again = optuna.create_study(storage=ours, study_name="gone")
    assert again.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) == []


def test_without_the_private_class_it_falls_back_to_optunas_cache(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(trial_cache, "SortedTrialsCache", None)
    storage = trial_cache.cached(optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 's.db'}"))
    assert type(storage) is _CachedStorage


def test_a_jobs_storage_is_behind_it(make_experiment) -> None:
    from tuning.config import load_experiment

    exp = load_experiment(make_experiment())
    assert type(storage_mod.open_storage(exp)) is trial_cache.SortedTrialsCache


def test_a_job_opens_its_storage_once_and_reads_the_trials_once(
    workdir, make_experiment, monkeypatch
) -> None:
    """The lineage check and the engine share one storage in a job: the study's trials come
    from the database once (each full read takes seconds at 10,000 trials); outside a job,
    each open_storage is a storage of its own."""
    from tuning.config import load_experiment
    from tuning.job import run_job

    path = make_experiment(study__n_trials=2, training__max_epochs=2)
    run_job(load_experiment(path), say=lambda _: None)  # a study with trials to read

    opened: list[object] = []
    real_init = optuna.storages.RDBStorage.__init__

    def counting_init(self, *args, **kwargs) -> None:
        opened.append(self)
        real_init(self, *args, **kwargs)

    read: list[int] = []  # trials built from the database by each read
    real_read = optuna.storages.RDBStorage._get_trials

    def counting_read(self, *args, **kwargs):
        trials = real_read(self, *args, **kwargs)
        read.append(len(trials))
        return trials

    monkeypatch.setattr(optuna.storages.RDBStorage, "__init__", counting_init)
    monkeypatch.setattr(optuna.storages.RDBStorage, "_get_trials", counting_read)
    result = run_job(load_experiment(path), say=lambda _: None)
    assert result.trials_run == 2
    assert len(opened) == 1
    assert read.count(2) == 1  # the first job's two trials, read once (then only what is new)

    exp = load_experiment(path)
    assert storage_mod.open_storage(exp) is not storage_mod.open_storage(exp)
    with storage_mod.one_storage_per_job():
        assert storage_mod.open_storage(exp) is storage_mod.open_storage(exp)
