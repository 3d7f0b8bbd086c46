"""Trials that do not learn: the data's trivial baseline (checked against Keras' own metrics), the
rule on made-up curves, the setting, and a real job where one configuration cannot learn."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import keras
import numpy as np
import optuna
import pytest
from conftest import mlflow_runs, one_line_error
from typer.testing import CliRunner

from tuning import records
from tuning.cli import app
from tuning.config import load_experiment
from tuning.data import Dataset
from tuning.errors import ConfigError, NotLearning, StopTraining
from tuning.learning import Baseline, LearningRule, baseline
from tuning.objective import Objective
from tuning.report import state_counts
from tuning.summary import trial_line

runner = CliRunner()


def _data(task: str, y_train: np.ndarray, y_valid: np.ndarray, n_classes: int | None = None):
    x = np.zeros((len(y_train), 2), dtype=np.float32)
    xv = np.zeros((len(y_valid), 2), dtype=np.float32)
    return Dataset(
        name="tiny",
        task=task,  # type: ignore[arg-type]
        kind="tabular",
        x_train=x,
        y_train=y_train,
        x_valid=xv,
        y_valid=y_valid,
        x_test=xv,
        y_test=y_valid,
        n_classes=n_classes,
    )


def _np(x: object) -> float:
    return float(np.mean(keras.ops.convert_to_numpy(x)))


def test_the_multiclass_baseline_is_the_best_constant_class_and_the_priors() -> None:
    y_train = np.array([0, 1, 1, 1, 2, 2, 0, 1], dtype=np.int32)  # class 1 most frequent
    y_valid = np.array([2, 2, 2, 0, 1], dtype=np.int32)  # class 2 here
    data = _data("multiclass", y_train, y_valid, n_classes=3)
    acc = baseline(data, "val_accuracy")
    assert acc is not None and acc.value == pytest.approx(3 / 5)  # always class 2, at best
    assert (acc.perfect, acc.direction, acc.what) == (1.0, "maximize", "always the same class")
    metric = keras.metrics.SparseCategoricalAccuracy()  # what Keras says of always class 2
    metric.update_state(y_valid, np.tile([0.1, 0.2, 0.7], (len(y_valid), 1)))
    assert acc.value == pytest.approx(_np(metric.result()))
    # ... and of a model that always answers the training priors.
    priors = np.bincount(y_train, minlength=3) / len(y_train)
    preds = np.tile(priors, (len(y_valid), 1)).astype(np.float32)
    loss = baseline(data, "val_loss")
    assert loss is not None and loss.direction == "minimize" and loss.what == "the class priors"
    assert loss.value == pytest.approx(
        _np(keras.losses.sparse_categorical_crossentropy(y_valid, preds)), rel=1e-5
    )
    # On the training rows for a metric without val_.
    assert baseline(data, "accuracy").value == pytest.approx(4 / 8)  # type: ignore[union-attr]


def test_the_binary_and_multilabel_baselines_match_keras() -> None:
    y_train = np.array([[1, 0], [1, 1], [1, 0], [0, 0]], dtype=np.float32)  # label 0 mostly 1
    y_valid = np.array([[1, 1], [0, 0], [1, 0]], dtype=np.float32)
    data = _data("multilabel", y_train, y_valid)
    preds = np.tile(y_train.mean(axis=0), (3, 1)).astype(np.float32)
    bacc = keras.metrics.BinaryAccuracy()  # always 1 for label 0, always 0 for label 1
    bacc.update_state(y_valid, np.tile([0.9, 0.1], (3, 1)))
    assert baseline(data, "val_accuracy").value == pytest.approx(_np(bacc.result()))  # type: ignore[union-attr]
    assert baseline(data, "val_loss").value == pytest.approx(  # type: ignore[union-attr]
        _np(keras.losses.binary_crossentropy(y_valid, preds)), rel=1e-5
    )
    auc = baseline(data, "val_auc")
    assert auc is not None and (auc.value, auc.perfect) == (0.5, 1.0)
    binary = _data("binary", np.array([0, 0, 0, 1]), np.array([1, 1, 0, 1, 1]))
    assert baseline(binary, "val_accuracy").value == pytest.approx(4 / 5)  # type: ignore[union-attr]
    # Nothing to learn: every validation row is of one class.
    assert baseline(_data("binary", np.array([0, 0, 1]), np.array([0, 0])), "val_accuracy") is None


def test_the_regression_baseline_is_the_training_mean_or_median() -> None:
    y_train = np.array([1.0, 2.0, 3.0, 10.0], dtype=np.float32)  # mean 4, median 2.5
    y_valid = np.array([0.0, 4.0, 8.0, 2.0], dtype=np.float32)
    data = _data("regression", y_train, y_valid)
    mean = np.full_like(y_valid, y_train.mean())
    mse = baseline(data, "val_loss")
    assert mse is not None and mse.what == "the training mean" and mse.direction == "minimize"
    assert mse.value == pytest.approx(_np(keras.losses.mean_squared_error(y_valid, mean)))
    rmse = keras.metrics.RootMeanSquaredError()
    rmse.update_state(y_valid, mean)
    assert baseline(data, "val_rmse").value == pytest.approx(_np(rmse.result()))  # type: ignore[union-attr]
    mae = baseline(data, "val_mae")
    assert mae is not None and mae.what == "the training median"
    assert mae.value == pytest.approx(np.mean(np.abs(y_valid - 2.5)))
    assert baseline(data, "val_loss", loss="mae").value == mae.value  # type: ignore[union-attr]
    huber = baseline(data, "val_loss", loss="huber")
    assert huber is not None
    assert huber.value == pytest.approx(_np(keras.losses.Huber()(y_valid, mean)), rel=1e-5)
    assert baseline(data, "val_r2") is None  # a metric it cannot compute


def _rule(
    value: float | None = 0.1, *, direction: str = "maximize", metric: str = "val_accuracy"
) -> LearningRule:
    perfect = 1.0 if direction == "maximize" else 0.0
    base = Baseline(metric, value, perfect, "always the same class") if value else None
    return LearningRule(Objective(metric, direction), after=3, margin=0.02, baseline=base)  # type: ignore[arg-type]


def _check(rule: LearningRule, curve: list[float], losses: list[float]) -> object:
    """The verdict after each epoch of ``curve`` (the objective) and ``losses`` (training)."""
    verdicts = []
    for n in range(1, len(curve) + 1):
        verdicts.append(rule.check({"loss": losses[:n], rule.objective.metric: curve[:n]}))
    return verdicts


def test_a_trial_at_chance_ends_after_its_first_epochs_and_a_learning_one_does_not() -> None:
    rule = _rule(0.1)
    assert rule.threshold == pytest.approx(0.118)  # 2 % of the way from 0.1 to 1
    first, second, third = _check(rule, [0.100, 0.104, 0.099], [2.31, 2.30, 2.30])  # type: ignore[misc]
    assert first is None and second is None  # judged after 3 epochs, not before
    assert isinstance(third, NotLearning)
    assert (third.value, third.epochs) == (0.104, 3)
    assert "best val_accuracy=0.1040 in 3 epochs" in str(third)
    assert "always the same class (0.1000; needs above 0.1180)" in str(third)
    assert _check(rule, [0.30, 0.50, 0.60, 0.62], [1.5, 1.0, 0.8, 0.7]) == [None] * 4
    # Still below the bar but not improving enough (0.012 < 0.018): not learning.
    assert isinstance(_check(rule, [0.100, 0.105, 0.112], [2.3, 2.3, 2.29])[-1], NotLearning)


def test_a_small_datasets_trial_is_judged_after_enough_steps() -> None:
    rule = dataclasses.replace(_rule(0.1), min_steps=200)
    assert rule.judged_after(860) == 3  # Fashion-MNIST in batches of 64: `after` decides
    assert rule.judged_after(9) == 23  # digits in batches of 128: 200 steps
    flat = {"loss": [2.3] * 22, "val_accuracy": [0.1] * 22}
    assert rule.check(flat, steps_per_epoch=9) is None
    flat = {"loss": [2.3] * 23, "val_accuracy": [0.1] * 23}
    assert isinstance(rule.check(flat, steps_per_epoch=9), NotLearning)


def test_a_regression_trial_far_from_the_mean_but_improving_goes_on_until_it_stalls() -> None:
    rule = _rule(6000.0, direction="minimize", metric="val_loss")
    assert rule.threshold == pytest.approx(5880.0)
    losses = [29000.0, 25000.0, 21000.0, 20900.0, 20850.0, 20800.0]
    verdicts = _check(rule, losses, losses)
    assert verdicts[:5] == [None] * 5  # 21000 -> 20850 over 3 epochs: 0.7 %, but ...
    # ... at epoch 6 the best of the last 3 (20800) is not 2 % below the best before (21000).
    assert isinstance(verdicts[5], NotLearning) and "and not improving" in str(verdicts[5])
    assert _check(rule, [29000.0, 6100.0, 5000.0], [29000.0, 6100.0, 5000.0])[-1] is None


def test_a_growing_training_loss_ends_a_trial_as_not_learning_or_cuts_one_that_learned() -> None:
    grew = _check(_rule(0.1), [0.5, 0.6, 0.55], [1.0, 0.9, 1.2])[-1]
    assert isinstance(grew, StopTraining) and not isinstance(grew, NotLearning)
    assert str(grew).startswith("cut after epoch 3: training loss grew from 1 in epoch 1 to 1.2")
    no_baseline = _rule(None)
    verdicts = _check(no_baseline, [0.5, 0.6, 0.55, 0.5], [1.0, 0.9, 0.95, 1.1])
    assert verdicts[:3] == [None] * 3 and isinstance(verdicts[3], NotLearning)
    assert "training loss grew from 1 in epoch 1 to 1.1 in epoch 4" in str(verdicts[3])
    # A NaN loss is the fit's to fail (with its own reason), not the rule's.
    assert _rule(0.1).check({"loss": [2.3, 2.3, float("nan")], "val_accuracy": [0.1] * 3}) is None


def test_the_setting_defaults_on_switches_off_and_rejects_bad_values(make_experiment) -> None:
    exp = load_experiment(make_experiment())
    cfg = exp.training.stop_not_learning
    assert (cfg.enabled, cfg.after, cfg.min_steps, cfg.margin) == (True, 3, 200, 0.02)
    off = load_experiment(make_experiment("off", training__stop_not_learning=False))
    assert not off.training.stop_not_learning.enabled
    assert LearningRule.for_job(off, None) is None  # type: ignore[arg-type]  # reads no data
    two = load_experiment(make_experiment("two", training__stop_not_learning={"after": 2}))
    assert two.training.stop_not_learning.after == 2
    with pytest.raises(ConfigError) as bad:
        load_experiment(make_experiment("bad", training__stop_not_learning=5))
    assert "training.stop_not_learning: must be true, false or {after: ..., margin: ...}" in str(
        bad.value
    )
    with pytest.raises(ConfigError, match=r"training.stop_not_learning.after: .*greater than or"):
        load_experiment(make_experiment("zero", training__stop_not_learning={"after": 0}))
    result = runner.invoke(
        app, ["run", str(make_experiment("cli")), "--set", "training.stop_not_learning.margin=1"]
    )
    one_line_error(result, "training.stop_not_learning.margin", "0 <= margin < 1")


# Diabetes' targets are near 150 and a fresh network answers near 0: at a learning rate of 1e-9
# it stays far above the training mean's error, flat; at 0.05 Adam falls fast.
NOT_LEARNING_SPACE = {
    "n_hidden": 1,
    "n_neurons": 16,
    "optimizer": "adam",
    "learning_rate": {"type": "categorical", "choices": [1e-9, 0.05]},
    "batch_size": 32,
}


def _job(make_experiment, engine: str) -> Path:
    return make_experiment(
        f"nolearn-{engine.replace('_', '-')}",
        space=NOT_LEARNING_SPACE,
        dataset={"name": "diabetes"},
        objective={"metric": "val_loss", "direction": "minimize"},
        study__engine=engine,
        study__n_trials=4,
        study__sampler={"type": "random"},
        training__max_epochs=8,
        training__early_stopping={"patience": 8},
        # Judged after 3 epochs of 9 steps (283 rows in batches of 32), not after 200 steps.
        training__stop_not_learning={"min_steps": 0},
    )


def test_a_job_ends_the_trials_that_cannot_learn_and_keeps_the_others(
    make_experiment, workdir: Path
) -> None:
    exp = _job(make_experiment, "optuna")
    result = runner.invoke(app, ["run", str(exp)])
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="nolearn-optuna", storage="sqlite:///optuna.db")
    by_lr = {
        lr: [t for t in study.trials if t.params["learning_rate"] == lr] for lr in (1e-9, 0.05)
    }
    assert by_lr[1e-9] and by_lr[0.05], "the seeded sampler drew both learning rates"
    runs = {
        int(r.data.tags["trial_number"]): r
        for r in mlflow_runs(workdir, "nolearn-optuna", role="trial")
    }
    for t in by_lr[1e-9]:
        # PRUNED in Optuna (TPE counts it among the bad), told apart by its attribute.
        assert t.state == optuna.trial.TrialState.PRUNED and records.state(t) == "not_learning"
        assert t.user_attrs[records.EPOCHS_TRAINED] == 3 and len(t.intermediate_values) == 3
        assert "no better than the training mean" in t.user_attrs[records.NOT_LEARNING]
        run = runs[t.number]
        assert run.info.status == "FINISHED" and run.data.tags["state"] == "not_learning"
        assert run.data.tags["reason"].startswith("not learning: best val_loss=")
        assert f"trial {t.number:>3} not_learning" in result.stdout
    for t in by_lr[0.05]:  # it learns: it runs on past the first 3 epochs, to the end
        assert t.state == optuna.trial.TrialState.COMPLETE
        assert t.user_attrs[records.EPOCHS_TRAINED] == 8
        assert runs[t.number].data.tags["state"] == "complete"
    counts = state_counts(study.trials)
    assert counts["not_learning"] == len(by_lr[1e-9]) and counts["pruned"] == 0
    assert f"{len(by_lr[1e-9])} not learning" in result.stdout
    # The job's model is a learning trial's, and the parent run holds the baseline.
    parent = mlflow_runs(workdir, "nolearn-optuna", role="job")[0]
    assert int(parent.data.tags["model_trial"]) in {t.number for t in by_lr[0.05]}
    assert parent.data.metrics["baseline_val_loss"] > 1000
    assert parent.data.metrics["n_not_learning"] == len(by_lr[1e-9])
    shown = runner.invoke(app, ["show", "nolearn-optuna", "--storage", "sqlite:///optuna.db"])
    assert f"{len(by_lr[1e-9])} not_learning" in shown.stdout, shown.output


def test_keras_tuner_records_a_trial_that_cannot_learn_with_its_value(
    make_experiment, workdir: Path
) -> None:
    exp = _job(make_experiment, "keras_tuner")
    result = runner.invoke(app, ["run", str(exp)])
    assert result.exit_code == 0, result.output
    runs = mlflow_runs(workdir, "nolearn-keras-tuner", role="trial")
    states = {r.data.tags["state"] for r in runs}
    assert states == {"not_learning", "complete"}, states
    for run in runs:
        lr = float(run.data.params["learning_rate"])
        assert run.data.tags["state"] == ("not_learning" if lr < 1e-6 else "complete")
        assert run.data.metrics["epochs_trained"] == (3 if lr < 1e-6 else 8)
    lines = [line for line in result.stdout.splitlines() if " not_learning " in line]
    assert lines and all("val_loss=" in line and "[not learning:" in line for line in lines)
    parent = mlflow_runs(workdir, "nolearn-keras-tuner", role="job")[0]
    not_learning = {
        r.data.tags["trial_number"] for r in runs if r.data.tags["state"] == "not_learning"
    }
    assert parent.data.tags["model_trial"] not in not_learning
    assert parent.data.metrics["n_not_learning"] == len(not_learning)


def test_the_trial_line_names_the_state() -> None:
    line = trial_line(
        4, "not_learning", metric="val_accuracy", value=None, epochs=3, seconds=2.0,
        reason="not learning: best val_accuracy=0.1000 in 3 epochs",
    )  # fmt: skip
    assert line.startswith("trial   4 not_learning  epochs=3 2.0s")
    assert line.endswith("[not learning: best val_accuracy=0.1000 in 3 epochs]")
