"""The trial runner's parts: compile time measured the same way on every backend, the kept
models, and the one trial line every engine prints."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuning.config import load_experiment
from tuning.summary import trial_line
from tuning.trial import ModelKeeper, compile_seconds


def test_compile_seconds_is_the_first_epochs_excess_over_the_median() -> None:
    # Epochs of 3.0, 1.0, 1.2, 0.9 s, each followed by a 0.1 s hook that is not the epoch's:
    # the first exceeds the median of the others (1.0) by 2.0.
    hooks = [(13.0, 13.1), (14.1, 14.2), (15.4, 15.5), (16.4, 16.5)]
    assert compile_seconds(10.0, hooks) == pytest.approx(2.0)
    assert compile_seconds(10.0, [(11.0, 11.1)]) == 0.0  # one epoch: nothing to compare with
    assert compile_seconds(10.0, [(10.5, 10.6), (11.6, 11.7)]) == 0.0  # first epoch faster


class _Saved:
    """Stands in for a trained Keras model: ``save`` writes a file, as ``model.save`` does."""

    def save(self, path: object) -> None:
        Path(str(path)).write_bytes(b"weights")


def _keeper(make_experiment, **changes: object) -> ModelKeeper:
    exp = load_experiment(make_experiment(**changes))
    return ModelKeeper(exp, data=None)  # type: ignore[arg-type]  # offer/adopt read no data


def test_the_keeper_keeps_the_best_k_files_best_first_and_the_best_as_the_jobs(
    make_experiment,
) -> None:
    models = _keeper(make_experiment, study__ensemble_top=2)
    for number, value in enumerate([0.5, 0.9, 0.7, 0.6, 0.95]):
        models.offer(_Saved(), value, number)  # type: ignore[arg-type]
    assert [(k.number, k.value) for k in models.kept] == [(4, 0.95), (1, 0.9)]
    files = sorted(p.name for p in Path(models.tmp.name).iterdir())
    assert files == ["trial-1.keras", "trial-4.keras"]  # the dropped ones deleted
    assert (models.best_trial, models.best_value) == (4, 0.95) and models.has_best_model()
    ensemble = models.save(_Saved(), "ensemble.keras")  # type: ignore[arg-type]
    models.adopt(ensemble, 0.97, 4, members=["4", "1"])
    assert models.best_model_path == ensemble and models.members == ["4", "1"]
    models.cleanup()
    assert not models.has_best_model()


def test_the_keeper_minimizes_and_keeps_nothing_with_log_models_none(make_experiment) -> None:
    models = _keeper(make_experiment, objective={"metric": "val_loss", "direction": "minimize"})
    for number, value in enumerate([0.5, 0.2, 0.3]):
        models.offer(_Saved(), value, number)  # type: ignore[arg-type]
    assert [k.number for k in models.kept] == [1] and models.best_value == 0.2
    none = _keeper(make_experiment, name="none", tracking__log_models="none")
    none.offer(_Saved(), 0.9, 0)  # type: ignore[arg-type]
    assert none.kept == [] and not none.has_best_model()


def test_one_trial_line_for_every_engine() -> None:
    line = trial_line(
        3, "pruned", metric="val_accuracy", value=0.82991, epochs=4, seconds=1.46,
        best="best 0.9722 (#2)", reason="pruned after epoch 4",
    )  # fmt: skip
    assert line == (
        "trial   3 pruned   val_accuracy=0.8299 epochs=4 1.5s  best 0.9722 (#2)  "
        "[pruned after epoch 4]"
    )
    bare = trial_line(12, "failed", metric="val_loss", value=None, epochs=0, seconds=0.04)
    assert bare == "trial  12 failed    epochs=0 0.0s"


def test_a_cut_trial_continues_from_its_saved_state_in_its_own_run(
    make_experiment, workdir
) -> None:
    """Issue 26: a trial cut by a hook keeps its weights, optimizer state and early-stopping
    state; resumed, it trains on in its own MLflow run (steps on from where it stopped), its
    optimizer's iterations go on, its model replaces its kept one and the state is deleted."""
    import keras
    import numpy as np
    from conftest import mlflow_client

    from tuning.config import load_experiment
    from tuning.errors import StopTraining
    from tuning.job import open_parent, validate_job
    from tuning.trial import KeepState, TrialRunner

    exp = load_experiment(
        make_experiment(training__max_epochs=6, training__early_stopping={"patience": 100})
    )
    data, uri = validate_job(exp)
    tracker, parent = open_parent(exp, data, uri, {})
    runner = TrialRunner(exp, data=data, tracker=tracker, parent=parent)
    params = {"n_hidden": 1, "n_neurons": 16, "activation": "relu", "optimizer": "adam",
              "learning_rate": 3e-3, "batch_size": 128}  # fmt: skip

    def cut(epoch: int, logs: object) -> None:
        if epoch == 1:
            raise StopTraining("cut after epoch 2 at its share of the time budget")

    keep = KeepState(when=lambda fit: fit.stopped is not None, top=2)
    try:
        first = runner.run(params, number=0, hooks=[cut], keep_state=keep)
        assert first.epochs == 2 and runner.can_resume(0)
        saved = runner.states.saved[0]
        assert saved.path.exists() and saved.carry.epochs == 2
        # The state loads into a model built again from the configuration: the last weights
        # and the optimizer's variables, its iteration count included (1152 rows / 128 = 9).
        model = runner.trainer.build(params, number=0, max_epochs=6)
        carry = runner.states.load(model, saved)
        assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 2 * 9
        assert carry.best_weights is not None and carry.history == first.fit.history
        seen: list[int] = []
        cont = runner.resume(0, hooks=[lambda epoch, logs: seen.append(epoch)])
        assert seen == [2, 3, 4, 5] and cont.epochs == 6 and cont.initial_epoch == 2
        assert (
            cont.fit is not None
            and cont.fit.history["val_accuracy"][:2] == (first.fit.history["val_accuracy"])
        )
        assert not saved.path.exists() and not runner.can_resume(0)
        client = mlflow_client(workdir)
        run = client.get_run(first.run_id)
        assert run.info.status == "FINISHED" and run.data.tags["state"] == "complete"
        assert run.data.tags["continued"] == "4 epochs from epoch 3"
        assert run.data.tags["cut"] == "no" and run.data.metrics["epochs_trained"] == 6
        history = client.get_metric_history(first.run_id, "val_accuracy")
        assert sorted(m.step for m in history) == list(range(6))  # one curve
        assert run.data.metrics["objective"] == pytest.approx(max(m.value for m in history))
        assert run.data.metrics["objective"] == pytest.approx(cont.value)
        assert run.data.metrics["best_epoch"] == cont.fit.best_epoch
        kept = runner.models.kept
        assert [k.number for k in kept] == [0] and kept[0].value == cont.value
        assert runner.models.best_trial == 0 and runner.models.best_value == cont.value
        counts = runner.states.counts
        assert counts["epochs_trained_total"] == 6 and counts["epochs_continued"] == 4
        assert counts["configs_evaluated"] == 1 and counts["epochs_thrown_away"] == 0
        assert counts["states_saved"] == 1 and counts["state_bytes"] > 0
        assert np.isfinite(counts["state_save_seconds"])
    finally:
        runner.cleanup()
        parent.end("FINISHED")
    assert not runner.states.folder.exists()
