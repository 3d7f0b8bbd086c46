"""Fitting: every training batch full, validation in as few equal batches as fit allows; the
best epoch the first of equal best values."""

from __future__ import annotations

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
