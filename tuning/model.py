"""Keras MLPs built from a plain dict of hyperparameters.

Owns the network (input -> rescale or normalize -> flatten -> n_hidden x Dense -> head), the heads
and losses of the book's tables (softmax + sparse categorical cross-entropy for classes, one linear
unit + MSE for regression) and the optimizer factory. It takes plain values (a parameter dict and a
:class:`~tuning.data.Dataset`), never an Optuna trial or an MLflow run, and uses only the ``keras``
API so any Keras 3 backend runs it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras
import numpy as np

from tuning.data import Dataset
from tuning.params import resolve

__all__ = ["build_model", "make_optimizer", "metric_names"]

_HE = {"relu", "leaky_relu", "elu", "gelu", "swish"}


def make_optimizer(name: str, *, learning_rate: float, momentum: float = 0.9) -> Any:
    """A Keras optimizer by the names used in search spaces.

    ``momentum`` and ``nesterov`` are SGD with momentum (plain and Nesterov), as in the book.

    Raises:
        ValueError: for an unknown name (search spaces are validated before this is reached).
    """
    opt = keras.optimizers
    factories = {
        "sgd": lambda: opt.SGD(learning_rate=learning_rate),
        "momentum": lambda: opt.SGD(learning_rate=learning_rate, momentum=momentum),
        "nesterov": lambda: opt.SGD(learning_rate=learning_rate, momentum=momentum, nesterov=True),
        "adagrad": lambda: opt.Adagrad(learning_rate=learning_rate),
        "rmsprop": lambda: opt.RMSprop(learning_rate=learning_rate),
        "adam": lambda: opt.Adam(learning_rate=learning_rate),
        "nadam": lambda: opt.Nadam(learning_rate=learning_rate),
    }
    if name not in factories:
        raise ValueError(f"unknown optimizer {name!r}; expected one of {sorted(factories)}")
    return factories[name]()


def _initializer(activation: str, chosen: str) -> str:
    if chosen != "auto":
        return chosen
    if activation in _HE:
        return "he_normal"
    if activation == "selu":
        return "lecun_normal"
    return "glorot_uniform"


def metric_names(task: str) -> list[str]:
    """The metrics compiled for a task, as they appear in Keras logs (plus ``loss``)."""
    return ["accuracy"] if task == "classification" else ["rmse", "mae"]


def _feature_stats(data: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of the training features, computed once per dataset."""
    if "feature_stats" not in data.extra:
        x = data.x_train.reshape(len(data.x_train), -1).astype(np.float64)
        data.extra["feature_stats"] = (
            x.mean(axis=0).astype(np.float32),
            x.var(axis=0).astype(np.float32),
        )
    return data.extra["feature_stats"]  # type: ignore[no-any-return]


def build_model(params: Mapping[str, Any], *, data: Dataset) -> keras.Model:
    """Build and compile an MLP for ``data`` from hyperparameters.

    Args:
        params: Hyperparameters (names from :data:`tuning.params.PARAMETERS`); missing ones take
            their defaults.
        data: The dataset, for the input shape, the task, the number of classes and the scaling.

    Returns:
        A compiled ``keras.Model`` that takes raw inputs (scaling is inside it).
    """
    p = resolve(dict(params))
    inputs = keras.Input(shape=data.input_shape, name="features")
    x = inputs
    if data.kind == "image":
        x = keras.layers.Rescaling(1.0 / 255.0, name="rescale")(x)
    if len(data.input_shape) > 1:
        x = keras.layers.Flatten(name="flatten")(x)
    if data.kind == "tabular":
        mean, var = _feature_stats(data)
        x = keras.layers.Normalization(mean=mean, variance=var, name="standardize")(x)
    activation = p["activation"]
    init = _initializer(activation, p["kernel_initializer"])
    reg = keras.regularizers.L2(p["l2"]) if p["l2"] > 0 else None
    dropout = float(p["dropout"])
    for i in range(int(p["n_hidden"])):
        x = keras.layers.Dense(
            int(p["n_neurons"]),
            activation=activation,
            kernel_initializer=init,
            kernel_regularizer=reg,
            name=f"hidden_{i + 1}",
        )(x)
        if dropout > 0:
            drop = keras.layers.AlphaDropout if activation == "selu" else keras.layers.Dropout
            x = drop(dropout, name=f"dropout_{i + 1}")(x)
    if data.task == "classification":
        outputs = keras.layers.Dense(data.n_classes, activation="softmax", name="output")(x)
        loss: Any = "sparse_categorical_crossentropy"
        metrics: list[Any] = ["accuracy"]
    else:
        outputs = keras.layers.Dense(1, name="output")(x)
        loss = "mse"
        metrics = [
            keras.metrics.RootMeanSquaredError(name="rmse"),
            keras.metrics.MeanAbsoluteError(name="mae"),
        ]
    model = keras.Model(inputs, outputs, name="mlp")
    optimizer = make_optimizer(
        p["optimizer"], learning_rate=float(p["learning_rate"]), momentum=float(p["momentum"])
    )
    model.compile(optimizer=optimizer, loss=loss, metrics=metrics)
    return model
