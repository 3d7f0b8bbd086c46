"""Keras MLPs built from a plain dict of hyperparameters.

Owns the network (input -> rescale or encode -> flatten -> n_hidden x Dense -> head), the heads
and losses of the book's tables (binary: 1 sigmoid unit + binary cross-entropy; multiclass:
softmax + sparse categorical cross-entropy; multilabel: 1 sigmoid unit per label; regression:
1 linear unit per target + MSE, or MAE / Huber, optionally a positive output) and the optimizer
factory. It takes plain values (a parameter dict and a
:class:`~tuning.data.Dataset`), never an Optuna trial or an MLflow run, and uses only the ``keras``
API so any Keras 3 backend runs it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras
import numpy as np

from tuning.data import Dataset
from tuning.encoding import TabularEncoder
from tuning.params import resolve

__all__ = ["METRICS", "build_model", "make_optimizer"]

# Metrics compiled per task, as named in the Keras logs (plus loss; val_ for validation).
METRICS: dict[str, tuple[str, ...]] = {
    "binary": ("accuracy", "auc"),
    "multiclass": ("accuracy",),
    "multilabel": ("accuracy", "auc"),
    "regression": ("rmse", "mae"),
}

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


def _feature_stats(data: Dataset) -> tuple[list[int], list[float], list[float]]:
    """Mean and standard deviation of the numeric training columns, computed once."""
    if "feature_stats" not in data.extra:
        numeric = [i for i, c in enumerate(data.feature_names or []) if c not in data.vocabulary]
        x = data.x_train[:, numeric].astype(np.float64)
        data.extra["feature_stats"] = (numeric, x.mean(axis=0).tolist(), x.std(axis=0).tolist())
    return data.extra["feature_stats"]  # type: ignore[no-any-return]


def _head(data: Dataset, *, loss: str, output_activation: str) -> tuple[Any, Any, list[Any]]:
    """Output layer, loss and metrics for the task (the book's tables)."""
    units = data.n_outputs
    if data.task == "multiclass":
        dense = keras.layers.Dense(units, activation="softmax", name="output")
        return dense, "sparse_categorical_crossentropy", ["accuracy"]
    if data.task in ("binary", "multilabel"):
        dense = keras.layers.Dense(units, activation="sigmoid", name="output")
        auc = keras.metrics.AUC(name="auc", multi_label=data.task == "multilabel")
        return dense, "binary_crossentropy", [keras.metrics.BinaryAccuracy(name="accuracy"), auc]
    activation = None if output_activation in ("auto", "linear") else output_activation
    dense = keras.layers.Dense(units, activation=activation, name="output")
    losses = {"auto": "mse", "mse": "mse", "mae": "mae", "huber": keras.losses.Huber()}
    metrics = [
        keras.metrics.RootMeanSquaredError(name="rmse"),
        keras.metrics.MeanAbsoluteError(name="mae"),
    ]
    return dense, losses[loss], metrics


def build_model(
    params: Mapping[str, Any],
    *,
    data: Dataset,
    loss: str = "auto",
    output_activation: str = "auto",
) -> keras.Model:
    """Build and compile an MLP for ``data`` from hyperparameters.

    Args:
        params: Hyperparameters (names from :data:`tuning.params.PARAMETERS`); missing ones take
            their defaults.
        data: The dataset, for the input shape, the task, the outputs and the encoding.
        loss: Regression loss: ``auto`` (MSE), ``mse``, ``mae`` or ``huber``.
        output_activation: Regression output: ``auto`` / ``linear``, or ``softplus`` / ``relu``
            for a positive output.

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
        numeric, mean, std = _feature_stats(data)
        columns = data.feature_names or []
        categorical = [
            [i, len(data.vocabulary[c]) + 1] for i, c in enumerate(columns) if c in data.vocabulary
        ]
        x = TabularEncoder(numeric, categorical, mean, std, name="encode")(x)
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
    head, loss_fn, metrics = _head(data, loss=loss, output_activation=output_activation)
    outputs = head(x)
    model = keras.Model(inputs, outputs, name="mlp")
    optimizer = make_optimizer(
        p["optimizer"], learning_rate=float(p["learning_rate"]), momentum=float(p["momentum"])
    )
    model.compile(optimizer=optimizer, loss=loss_fn, metrics=metrics)
    return model
