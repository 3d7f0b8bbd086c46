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
