"""The hyperparameters that model building and training understand, with their defaults.

Owns the vocabulary shared by search spaces (which may only name these parameters) and by model
building (which fills in a default for every parameter a space leaves out). Plain data only: no
Keras, no Optuna, no MLflow here, so the config layer can validate names and choices without
importing a framework.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ACTIVATIONS",
    "DEFAULTS",
    "KERNEL_INITIALIZERS",
    "OPTIMIZERS",
    "PARAMETERS",
    "ParameterInfo",
    "resolve",
]

ACTIVATIONS: tuple[str, ...] = (
    "relu",
    "leaky_relu",
    "elu",
    "selu",
    "gelu",
    "swish",
    "tanh",
    "sigmoid",
)
OPTIMIZERS: tuple[str, ...] = (
    "sgd",
    "momentum",
    "nesterov",
    "adagrad",
    "rmsprop",
    "adam",
    "nadam",
    "adamw",
)
LR_SCHEDULES: tuple[str, ...] = ("none", "exponential", "cosine", "reduce_on_plateau")
KERNEL_INITIALIZERS: tuple[str, ...] = (
    "auto",
    "glorot_uniform",
    "glorot_normal",
    "he_uniform",
    "he_normal",
    "lecun_normal",
    "lecun_uniform",
)


@dataclass(frozen=True)
class ParameterInfo:
    """What one hyperparameter means to the model and the trainer.

    Attributes:
        kind: ``int``, ``float``, ``str`` or ``bool``; a search space's values must be of it.
        default: Value used when a search space does not mention the parameter.
        description: One line for ``tuning spaces`` and error messages.
        choices: For ``str`` parameters, the values the model understands.
        minimum: Smallest value the model accepts (inclusive), when there is one.
        maximum: Largest value the model accepts (inclusive), when there is one.
    """

    kind: str
    default: Any
    description: str
    choices: tuple[str, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None


PARAMETERS: dict[str, ParameterInfo] = {
    "n_hidden": ParameterInfo("int", 2, "number of hidden Dense layers", minimum=0),
    "n_neurons": ParameterInfo("int", 100, "neurons in every hidden layer", minimum=1),
    "activation": ParameterInfo(
        "str", "relu", "activation of the hidden layers", choices=ACTIVATIONS
    ),
    "kernel_initializer": ParameterInfo(
        "str",
        "auto",
        "weight initializer of the hidden layers (auto: he_normal for the ReLU family, "
        "lecun_normal for SELU, glorot_uniform otherwise)",
        choices=KERNEL_INITIALIZERS,
    ),
    "optimizer": ParameterInfo("str", "adam", "optimizer", choices=OPTIMIZERS),
    "learning_rate": ParameterInfo(
        "float", 1e-3, "learning rate of the optimizer", minimum=1e-12, maximum=10.0
    ),
    "momentum": ParameterInfo(
        "float", 0.9, "momentum of the momentum and nesterov optimizers", minimum=0.0, maximum=1.0
    ),
    "batch_size": ParameterInfo("int", 32, "mini-batch size", minimum=1),
    "dropout": ParameterInfo(
        "float", 0.0, "dropout rate after each hidden layer", minimum=0.0, maximum=0.95
    ),
    "l2": ParameterInfo("float", 0.0, "L2 penalty on hidden-layer weights", minimum=0.0),
    "l1": ParameterInfo("float", 0.0, "L1 penalty on hidden-layer weights", minimum=0.0),
    "beta_1": ParameterInfo(
        "float", 0.9, "first-moment decay of adam, nadam, adamw", minimum=0.0, maximum=0.9999
    ),
    "beta_2": ParameterInfo(
        "float", 0.999, "second-moment decay of adam, nadam, adamw", minimum=0.0, maximum=0.99999
    ),
    "weight_decay": ParameterInfo(
        "float", 0.004, "decoupled weight decay of adamw", minimum=0.0, maximum=1.0
    ),
    "batch_norm": ParameterInfo(
        "bool", False, "BatchNormalization after each hidden Dense layer, before its activation"
    ),
    "lr_schedule": ParameterInfo(
        "str",
        "none",
        "learning-rate schedule: none, exponential (x0.1 every lr_decay_epochs), cosine (to 0 "
        "at max_epochs), reduce_on_plateau (x0.5 after 5 flat epochs)",
        choices=LR_SCHEDULES,
    ),
    "lr_decay_epochs": ParameterInfo(
        "int", 20, "epochs for the exponential schedule to divide the rate by 10", minimum=1
    ),
    "patience": ParameterInfo(
        "int", 10, "early-stopping patience, overriding training.early_stopping", minimum=1
    ),
    "n_neurons_per_layer": ParameterInfo(
        "bool",
        False,
        "true: one n_neurons_<i> per hidden layer, each searched over n_neurons' range (the "
        "book's shrinking 300-100); false: one width for all (stretch pants)",
    ),
}
# Per-layer widths, created by the space when n_neurons_per_layer is true (n_neurons_1, ...).
PER_LAYER_PREFIX = "n_neurons_"

DEFAULTS: dict[str, Any] = {name: info.default for name, info in PARAMETERS.items()}


def resolve(params: Mapping[str, object]) -> dict[str, Any]:
    """Return every known parameter: the given values over the defaults.

    Args:
        params: Values chosen for one trial (a subset of :data:`PARAMETERS`).

    Returns:
        A new dict with one entry per known parameter.

    Raises:
        KeyError: If ``params`` names a parameter the model does not know.
    """
    unknown = sorted(
        k
        for k in set(params) - set(PARAMETERS)
        if not (k.startswith(PER_LAYER_PREFIX) and k[len(PER_LAYER_PREFIX) :].isdigit())
    )
    if unknown:
        raise KeyError(f"unknown hyperparameters {unknown}; known: {sorted(PARAMETERS)}")
    return {**DEFAULTS, **params}
