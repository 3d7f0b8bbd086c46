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

from tuning.config.params import PER_LAYER_PREFIX, resolve
from tuning.data import Dataset
from tuning.data.encoding import TabularEncoder

__all__ = ["METRICS", "build_model", "compile_for_task", "layer_widths", "make_optimizer"]

# Metrics compiled per task, as named in the Keras logs (plus loss; val_ for validation).
METRICS: dict[str, tuple[str, ...]] = {
    "binary": ("accuracy", "auc"),
    "multiclass": ("accuracy",),
    "multilabel": ("accuracy", "auc"),
    "regression": ("rmse", "mae"),
}

_HE = {"relu", "leaky_relu", "elu", "gelu", "swish"}


def make_optimizer(
    name: str,
    *,
    learning_rate: float | keras.optimizers.schedules.LearningRateSchedule,
    momentum: float = 0.9,
    beta_1: float = 0.9,
    beta_2: float = 0.999,
    weight_decay: float = 0.004,
) -> Any:
    """A Keras optimizer by the names used in search spaces.

    ``momentum`` and ``nesterov`` are SGD with momentum (plain and Nesterov), as in the book;
    ``beta_1`` / ``beta_2`` apply to adam, nadam and adamw, ``weight_decay`` to adamw.
    ``learning_rate`` may be a number or a Keras schedule.

    Raises:
        ValueError: for an unknown name (search spaces are validated before this is reached).
    """
    opt = keras.optimizers
    lr = learning_rate
    betas = {"beta_1": beta_1, "beta_2": beta_2}
    factories = {
        "sgd": lambda: opt.SGD(learning_rate=lr),
        "momentum": lambda: opt.SGD(learning_rate=lr, momentum=momentum),
        "nesterov": lambda: opt.SGD(learning_rate=lr, momentum=momentum, nesterov=True),
        "adagrad": lambda: opt.Adagrad(learning_rate=lr),
        "rmsprop": lambda: opt.RMSprop(learning_rate=lr),
        "adam": lambda: opt.Adam(learning_rate=lr, **betas),
        "nadam": lambda: opt.Nadam(learning_rate=lr, **betas),
        "adamw": lambda: opt.AdamW(learning_rate=lr, weight_decay=weight_decay, **betas),
    }
    if name not in factories:
        raise ValueError(f"unknown optimizer {name!r}; expected one of {sorted(factories)}")
    return factories[name]()


def _learning_rate(
    p: Mapping[str, object], *, steps_per_epoch: int, max_epochs: int
) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """The learning rate, or a schedule of it (reduce_on_plateau is a callback in train.py)."""
    lr = float(p["learning_rate"])
    if p["lr_schedule"] == "exponential":
        # The book's exponential scheduling: lr0 * 0.1 ** (epoch / s), stepped per batch.
        return keras.optimizers.schedules.ExponentialDecay(
            lr, decay_steps=steps_per_epoch * int(p["lr_decay_epochs"]), decay_rate=0.1
        )
    if p["lr_schedule"] == "cosine":
        return keras.optimizers.schedules.CosineDecay(
            lr, decay_steps=max(1, steps_per_epoch * max_epochs)
        )
    return lr


def layer_widths(params: Mapping[str, object]) -> list[int]:
    """Neurons of each hidden layer: n_neurons_1, n_neurons_2, ... or n_neurons for all."""
    p = resolve({k: v for k, v in params.items() if not k.startswith("extra.")})
    n = int(p["n_hidden"])
    return [int(p.get(f"{PER_LAYER_PREFIX}{i}", p["n_neurons"])) for i in range(1, n + 1)]


def _initializer(activation: str, chosen: str) -> str:
    if chosen != "auto":
        return chosen
    if activation in _HE:
        return "he_normal"
    if activation == "selu":
        return "lecun_normal"
    return "glorot_uniform"


# name -> (scale, mode, distribution) of keras.initializers.VarianceScaling.
_VARIANCE_SCALING = {
    "glorot_uniform": (1.0, "fan_avg", "uniform"),
    "glorot_normal": (1.0, "fan_avg", "truncated_normal"),
    "he_uniform": (2.0, "fan_in", "uniform"),
    "he_normal": (2.0, "fan_in", "truncated_normal"),
    "lecun_normal": (1.0, "fan_in", "truncated_normal"),
    "lecun_uniform": (1.0, "fan_in", "uniform"),
}


class _HostInitializer(keras.initializers.Initializer):
    """Keras's variance-scaling initializers computed with NumPy on the host.

    The same distributions as ``keras.initializers.get(name)``, drawn from NumPy's generator
    (seeded by ``keras.utils.set_random_seed``). On JAX each backend random op compiles an XLA
    program per new weight shape: about 0.15 s per layer, more than a small trial trains.
    NumPy needs no compilation. :func:`build_model` puts the standard initializer back on the
    layers once their weights exist, so a saved model names only Keras's own classes.
    """

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, shape: tuple[int, ...], dtype: str | None = None) -> np.ndarray:
        scale, mode, distribution = _VARIANCE_SCALING[self.name]
        fan_in, fan_out = (shape[0], shape[-1]) if len(shape) > 1 else (shape[0], shape[0])
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}[mode]
        rng = np.random.default_rng(np.random.randint(0, 2**31 - 1))
        if distribution == "uniform":
            limit = np.sqrt(3.0 * scale / max(1.0, n))
            values = rng.uniform(-limit, limit, size=shape)
        else:
            # Keras's truncated normal: redraw beyond 2 stddev; 0.8796... corrects the variance.
            stddev = np.sqrt(scale / max(1.0, n)) / 0.87962566103423978
            values = rng.standard_normal(size=shape)
            out = np.abs(values) > 2.0
            while out.any():
                values[out] = rng.standard_normal(size=int(out.sum()))
                out = np.abs(values) > 2.0
            values *= stddev
        return values.astype(dtype or keras.backend.floatx())

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name}


def _feature_stats(data: Dataset) -> tuple[list[int], list[float], list[float]]:
    """Mean and standard deviation of the numeric training columns, computed once."""
    if "feature_stats" not in data.extra:
        numeric = [i for i, c in enumerate(data.feature_names or []) if c not in data.vocabulary]
        x = data.x_train[:, numeric].astype(np.float64)
        data.extra["feature_stats"] = (numeric, x.mean(axis=0).tolist(), x.std(axis=0).tolist())
    return data.extra["feature_stats"]  # type: ignore[no-any-return]


def _head(data: Dataset, *, loss: str, output_activation: str) -> tuple[Any, Any, list[Any]]:
    """Output layer, loss and metrics for the task (the book's tables); Glorot-uniform weights."""
    units = data.n_outputs
    init = _HostInitializer("glorot_uniform")
    if data.task == "multiclass":
        dense = keras.layers.Dense(
            units, activation="softmax", kernel_initializer=init, name="output"
        )
        return dense, "sparse_categorical_crossentropy", ["accuracy"]
    if data.task in ("binary", "multilabel"):
        dense = keras.layers.Dense(
            units, activation="sigmoid", kernel_initializer=init, name="output"
        )
        auc = keras.metrics.AUC(name="auc", multi_label=data.task == "multilabel")
        return dense, "binary_crossentropy", [keras.metrics.BinaryAccuracy(name="accuracy"), auc]
    activation = None if output_activation in ("auto", "linear") else output_activation
    dense = keras.layers.Dense(
        units, activation=activation, kernel_initializer=init, name="output"
    )
    losses = {"auto": "mse", "mse": "mse", "mae": "mae", "huber": keras.losses.Huber()}
    metrics = [
        keras.metrics.RootMeanSquaredError(name="rmse"),
        keras.metrics.MeanAbsoluteError(name="mae"),
    ]
    return dense, losses[loss], metrics


def compile_for_task(
    model: keras.Model, data: Dataset, *, loss: str = "auto", output_activation: str = "auto"
) -> keras.Model:
    """Compile ``model`` (not trained here: an ensemble, a scorer) with the task's loss and
    metrics, as :func:`build_model` compiles an MLP; returns it."""
    _, loss_fn, metrics = _head(data, loss=loss, output_activation=output_activation)
    model.compile(loss=loss_fn, metrics=metrics)
    return model


def build_model(
    params: Mapping[str, object],
    *,
    data: Dataset,
    loss: str = "auto",
    output_activation: str = "auto",
    max_epochs: int = 100,
) -> keras.Model:
    """Build and compile an MLP for ``data`` from hyperparameters.

    Args:
        params: Hyperparameters (names from :data:`tuning.config.params.PARAMETERS`); missing
            ones take their defaults.
        data: The dataset, for the input shape, the task, the outputs and the encoding.
        loss: Regression loss: ``auto`` (MSE), ``mse``, ``mae`` or ``huber``.
        output_activation: Regression output: ``auto`` / ``linear``, or ``softplus`` / ``relu``
            for a positive output.
        max_epochs: Length of training, for the cosine schedule.

    Returns:
        A compiled ``keras.Model`` that takes raw inputs (scaling is inside it).
    """
    p = resolve({k: v for k, v in params.items() if not k.startswith("extra.")})
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
    l1, l2 = float(p["l1"]), float(p["l2"])
    reg = keras.regularizers.L1L2(l1=l1, l2=l2) if l1 > 0 or l2 > 0 else None
    dropout = float(p["dropout"])
    for i, width in enumerate(layer_widths(p), start=1):
        # With batch norm, the book's "BN before the activation": Dense (no bias) -> BN -> act.
        bn = bool(p["batch_norm"])
        x = keras.layers.Dense(
            width,
            activation=None if bn else activation,
            use_bias=not bn,
            kernel_initializer=_HostInitializer(init),
            kernel_regularizer=reg,
            name=f"hidden_{i}",
        )(x)
        if bn:
            x = keras.layers.BatchNormalization(name=f"batch_norm_{i}")(x)
            x = keras.layers.Activation(activation, name=f"activation_{i}")(x)
        if dropout > 0:
            drop = keras.layers.AlphaDropout if activation == "selu" else keras.layers.Dropout
            x = drop(dropout, name=f"dropout_{i}")(x)
    head, loss_fn, metrics = _head(data, loss=loss, output_activation=output_activation)
    outputs = head(x)
    model = keras.Model(inputs, outputs, name="mlp")
    for layer in model.layers:  # weights exist: the saved config names Keras's own initializer
        if isinstance(getattr(layer, "kernel_initializer", None), _HostInitializer):
            layer.kernel_initializer = keras.initializers.get(layer.kernel_initializer.name)
    batch = int(p["batch_size"])
    steps = max(1, -(-len(data.x_train) // batch))
    optimizer = make_optimizer(
        p["optimizer"],
        learning_rate=_learning_rate(p, steps_per_epoch=steps, max_epochs=max_epochs),
        momentum=float(p["momentum"]),
        beta_1=float(p["beta_1"]),
        beta_2=float(p["beta_2"]),
        weight_decay=float(p["weight_decay"]),
    )
    model.compile(optimizer=optimizer, loss=loss_fn, metrics=metrics)
    return model
