"""Model building: layers, heads and losses per task, optimizers; training: early stopping, NaN."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tuning.config.params import OPTIMIZERS
from tuning.data import load_dataset
from tuning.errors import TrialFailed
from tuning.model import build_model, make_optimizer
from tuning.train import fit, fresh_session


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def diabetes():
    return load_dataset("diabetes")


@pytest.mark.parametrize("n_hidden", [0, 1, 3])
def test_classifier_layers_and_head(digits, n_hidden: int) -> None:
    model = build_model({"n_hidden": n_hidden, "n_neurons": 17, "dropout": 0.2}, data=digits)
    hidden = [layer for layer in model.layers if layer.name.startswith("hidden_")]
    assert len(hidden) == n_hidden
    assert all(layer.units == 17 for layer in hidden)
    assert len([layer for layer in model.layers if layer.name.startswith("dropout_")]) == n_hidden
    head = model.get_layer("output")
    assert head.units == 10 and head.activation.__name__ == "softmax"
    assert model.loss == "sparse_categorical_crossentropy"
    out = model.predict(digits.x_valid[:4], verbose=0)
    assert out.shape == (4, 10) and np.allclose(out.sum(axis=1), 1, atol=1e-5)
    # Scaling lives inside the model so it takes raw features.
    assert model.get_layer("encode") is not None


def test_regressor_has_one_linear_unit_and_mse(diabetes) -> None:
    model = build_model({"n_hidden": 2, "n_neurons": 8}, data=diabetes)
    head = model.get_layer("output")
    assert head.units == 1 and head.activation.__name__ == "linear"
    assert model.loss == "mse"
    assert model.predict(diabetes.x_valid[:3], verbose=0).shape == (3, 1)


def test_images_are_rescaled_and_flattened() -> None:
    from tuning.data import Dataset

    x = np.random.default_rng(0).integers(0, 256, size=(40, 28, 28)).astype(np.float32)
    y = np.arange(40) % 10
    data = Dataset(
        "img", "classification", "image", x, y, x[:8], y[:8], x[:8], y[:8], n_classes=10
    )
    model = build_model({"n_hidden": 1, "n_neurons": 5}, data=data)
    names = [layer.name for layer in model.layers]
    assert names.index("rescale") < names.index("flatten") < names.index("hidden_1")
    assert model.get_layer("hidden_1").kernel.shape == (784, 5)


@pytest.mark.parametrize(
    ("activation", "initializer", "dropout_layer"),
    [
        ("relu", "HeNormal", "Dropout"),
        ("selu", "LecunNormal", "AlphaDropout"),
        ("tanh", "GlorotUniform", "Dropout"),
    ],
)
def test_initializer_pairs_with_activation(digits, activation, initializer, dropout_layer) -> None:
    model = build_model({"n_hidden": 1, "activation": activation, "dropout": 0.1}, data=digits)
    assert type(model.get_layer("hidden_1").kernel_initializer).__name__ == initializer
    assert type(model.get_layer("dropout_1")).__name__ == dropout_layer


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_with_its_learning_rate(name: str) -> None:
    opt = make_optimizer(name, learning_rate=0.0123, momentum=0.77)
    assert float(opt.learning_rate) == pytest.approx(0.0123)
    if name in ("momentum", "nesterov"):
        assert type(opt).__name__ == "SGD" and opt.momentum == pytest.approx(0.77)
        assert opt.nesterov == (name == "nesterov")
    with pytest.raises(ValueError, match="unknown optimizer 'adamx'"):
        make_optimizer("adamx", learning_rate=0.1)


def test_fit_restores_best_weights_and_reports_every_epoch(digits) -> None:
    fresh_session()
    keras.utils.set_random_seed(0)
    model = build_model({"n_hidden": 1, "n_neurons": 32, "learning_rate": 0.01}, data=digits)
    seen: list[tuple[int, float]] = []
    result = fit(
        model, digits, monitor="val_loss", direction="minimize", batch_size=64,
        max_epochs=6, patience=2, on_epoch=lambda e, logs: seen.append((e, logs["val_loss"])),
    )  # fmt: skip
    assert [e for e, _ in seen] == list(range(result.epochs))
    assert result.value == pytest.approx(min(v for _, v in seen))
    assert result.history["val_loss"][result.best_epoch] == pytest.approx(result.value)
    # The model holds the best epoch's weights, not the last one's.
    val_loss = model.evaluate(digits.x_valid, digits.y_valid, verbose=0, return_dict=True)["loss"]
    assert val_loss == pytest.approx(result.value, rel=1e-3)
    assert result.n_params == model.count_params() > 0


def test_fit_turns_a_nan_loss_into_trial_failed(diabetes) -> None:
    fresh_session()
    keras.utils.set_random_seed(0)
    model = build_model({"optimizer": "sgd", "learning_rate": 10.0}, data=diabetes)
    with pytest.raises(
        TrialFailed, match=r"loss became (nan|inf) in epoch \d+ \(learning rate too high\?\)"
    ):
        fit(
            model,
            diabetes,
            monitor="val_loss",
            direction="minimize",
            batch_size=32,
            max_epochs=5,
            patience=3,
        )


def test_fit_rejects_a_missing_metric(digits) -> None:
    fresh_session()
    model = build_model({"n_hidden": 1}, data=digits)
    with pytest.raises(TrialFailed, match="no epoch produced 'val_rmse'"):
        fit(
            model,
            digits,
            monitor="val_rmse",
            direction="minimize",
            batch_size=256,
            max_epochs=1,
            patience=1,
        )
