"""Fitting: every training batch full, validation in as few equal batches as fit allows; the
best epoch the first of equal best values."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest

from tuning.data import Dataset
from tuning.train import MAX_VALIDATION_BATCH, best_of, fit, full_batches, validation_batch_size


def test_validation_is_scored_in_as_few_equal_batches_as_fit() -> None:
    assert validation_batch_size(288) == 288 and validation_batch_size(5000) == 5000
    big = 3 * MAX_VALIDATION_BATCH - 7
    size = validation_batch_size(big)
    assert size <= MAX_VALIDATION_BATCH and -(-big // size) == 3


def test_full_batches_keeps_every_row_and_repeats_fewer_than_one_batch() -> None:
    x = np.arange(1150, dtype=np.float32).reshape(-1, 1)
    y = np.arange(1150)
    np.random.seed(1)
    px, py = full_batches(x, y, 64)
    assert len(px) == 1152 and len(px) % 64 == 0
    assert (px[:1150, 0] == x[:, 0]).all() and (py == px[:, 0]).all()  # rows stay paired
    assert len(set(py[1150:])) == 2  # two distinct rows repeated
    np.random.seed(1)
    assert (full_batches(x, y, 64)[1][1150:] == py[1150:]).all()  # seeded by the trial's seed
    for n, b in ((1152, 64), (50, 64), (64, 64)):  # already full, or one batch: unchanged
        assert len(full_batches(x[:n], y[:n], b)[0]) == n


class _Shapes(keras.layers.Layer):
    """Records the batch dimension of every input it is traced or run with."""

    seen: list[int | None] = []

    def call(self, inputs):  # type: ignore[no-untyped-def]
        _Shapes.seen.append(inputs.shape[0])
        return inputs


def test_fit_traces_one_training_batch_shape() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(230, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int64")
    data = Dataset(
        name="t",
        task="binary",
        kind="tabular",
        x_train=x[:150],
        y_train=y[:150],
        x_valid=x[150:200],
        y_valid=y[150:200],
        x_test=x[200:],
        y_test=y[200:],
        n_classes=2,
    )
    model = keras.Sequential([keras.Input((4,)), _Shapes(), keras.layers.Dense(1, "sigmoid")])
    model.compile(optimizer="sgd", loss="binary_crossentropy", metrics=["accuracy"])
    _Shapes.seen.clear()
    result = fit(
        model,
        data,
        monitor="val_accuracy",
        direction="maximize",
        batch_size=32,
        max_epochs=2,
        patience=5,
    )
    assert result.epochs == 2
    # 150 rows in batches of 32 would end each epoch with a batch of 22: a second shape, so a
    # second compiled train step. Padded to 160, training sees only 32; validation one batch of 50.
    assert set(_Shapes.seen) <= {32, 50, None}, _Shapes.seen
    assert 22 not in _Shapes.seen and 32 in _Shapes.seen


@pytest.mark.parametrize(("direction", "best"), [("maximize", (0.9, 1)), ("minimize", (0.1, 3))])
def test_best_of_takes_the_first_of_equal_best_epochs(
    direction: str, best: tuple[float, int]
) -> None:
    hist = {"loss": [1.0] * 5, "val_x": [0.5, 0.9, 0.9, 0.1, 0.1]}
    assert best_of(hist, monitor="val_x", direction=direction) == best


def _separable(seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(260, 4)).astype("float32")
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype("int64")
    return Dataset(
        name="t", task="binary", kind="tabular", x_train=x[:160], y_train=y[:160],
        x_valid=x[160:220], y_valid=y[160:220], x_test=x[220:], y_test=y[220:], n_classes=2,
    )  # fmt: skip


def test_a_continued_fit_numbers_epochs_on_and_keeps_the_best_over_the_whole_curve() -> None:
    """Issue 26: a fit continued from ``carry`` numbers its epochs on, its optimizer's
    iterations go on, early stopping goes on from the earlier best and wait counter, and the
    weights it ends with are the best over both parts."""
    data = _separable()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, "sigmoid")])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="binary_crossentropy")
    settings = {"monitor": "val_loss", "direction": "minimize", "batch_size": 32, "patience": 3}
    first = fit(model, data, max_epochs=4, keep_last=True, **settings)  # type: ignore[arg-type]
    assert first.carry is not None and first.carry.epochs == 4 and first.initial_epoch == 0
    assert first.carry.last_weights is not None and first.carry.best_weights is not None
    # One epoch already without improvement (the last may have improved): the count goes on.
    carry = dataclasses.replace(first.carry, wait=1)
    best_first = [w.copy() for w in model.get_weights()]  # restored: the best of part one
    iterations = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
    assert iterations == 4 * 5  # 160 rows, batches of 32
    # Part two from the last weights, climbing the loss (a negative rate): every epoch worse.
    model.set_weights(carry.last_weights)
    model.optimizer.learning_rate = -1.0
    seen: list[int] = []
    second = fit(
        model, data, max_epochs=40, carry=carry, keep_last=True,
        on_epoch=lambda epoch, logs: seen.append(epoch), **settings,  # type: ignore[arg-type]
    )  # fmt: skip
    # No epoch improved: early stopping counts on from the earlier wait (1), not from zero.
    added = settings["patience"] - 1
    assert seen == list(range(4, 4 + added)) and second.epochs == 4 + added
    assert second.initial_epoch == 4 and second.early_stopped
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == iterations + 5 * added
    assert len(second.history["val_loss"]) == second.epochs  # one curve: both parts
    assert second.history["val_loss"][:4] == first.history["val_loss"]
    assert second.value == first.value and second.best_epoch == first.best_epoch < 4
    for w, b in zip(model.get_weights(), best_first, strict=True):
        np.testing.assert_array_equal(w, b)  # the best over the whole curve, from part one
    assert second.carry is not None and second.carry.wait == settings["patience"]
