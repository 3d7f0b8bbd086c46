"""A top-k ensemble: the job's best trained models averaged into one Keras model.

Part of the trial layer (issue 14, point 5). The job keeps the ``study.ensemble_top`` best
models of its search, and the re-check adds its re-runs; :func:`choose` ranks them all by their
own validation score and picks the number n (1 to ``ensemble_top``) whose average scores best on
the validation rows: n = 1 (no ensemble) whenever averaging does not help. :func:`average` makes
the chosen members one functional model (``Average`` of the members' outputs: class
probabilities, sigmoid outputs or regression values), which saves as one ``.keras`` file, so the
logged pyfunc model, serving and the champion's paired test take it as they take a single MLP.

Every score here is computed the same way, from predictions (the data loss and the task's
metrics, as ``keras.Model.evaluate`` reports them), so a single member and an average compare
like with like (a member's own ``val_loss`` also holds its L2 penalty).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np

from tuning.data import Dataset
from tuning.data.encoding import load_keras
from tuning.model import compile_for_task
from tuning.train import best_first

__all__ = ["Choice", "Member", "average", "choose"]


@dataclasses.dataclass(frozen=True)
class Member:
    """One trained model the ensemble may take: whose it is, its own score, where it is saved."""

    label: str  # "7" for trial 7's own model, "7r1" for its first re-run
    number: int
    value: float
    path: Path


@dataclasses.dataclass(frozen=True)
class Choice:
    """The members scored (best first), the validation score of each top-n average, and the
    n chosen."""

    ranked: list[Member]
    scores: list[float]  # scores[n - 1]: the average of the best n members
    n: int

    @property
    def members(self) -> list[Member]:
        return self.ranked[: self.n]

    @property
    def value(self) -> float:
        return self.scores[self.n - 1]


def choose(
    members: Sequence[Member],
    *,
    data: Dataset,
    metric: str,
    direction: str,
    top: int,
    loss: str = "auto",
    output_activation: str = "auto",
) -> Choice:
    """Rank ``members`` by their own score and pick how many of the best to average.

    Args:
        members: At least one trained model.
        data: The dataset whose validation rows score the averages.
        metric: The objective, as Keras logs it (``val_accuracy``, ``val_loss``, ...).
        direction: ``maximize`` or ``minimize``.
        top: The most members an average may take.
        loss, output_activation: The experiment's training settings (regression heads).

    Returns:
        The best-scoring top-n average; ties go to the smaller n.
    """
    rank = best_first(direction)
    ranked = sorted(members, key=lambda m: rank(m.value))[: max(top, 1)]
    scorer = _scorer(data, loss=loss, output_activation=output_activation)
    key = metric.removeprefix("val_")
    total: np.ndarray | None = None
    scores: list[float] = []
    for n, m in enumerate(ranked, start=1):
        predicted = load_keras(str(m.path)).predict(data.x_valid, batch_size=1024, verbose=0)
        total = predicted.astype(np.float64) if total is None else total + predicted
        result = scorer.evaluate(
            (total / n).astype(np.float32), data.y_valid, batch_size=1024, verbose=0,
            return_dict=True,
        )  # fmt: skip
        scores.append(float(result[key]))
    best = min(range(len(scores)), key=lambda i: rank(scores[i]))  # ties: the smaller n
    return Choice(ranked=ranked, scores=scores, n=best + 1)


def average(
    paths: Sequence[Path], *, data: Dataset, loss: str, output_activation: str
) -> keras.Model:
    """One compiled model whose output is the mean of the saved models' outputs."""
    models = [load_keras(str(p)) for p in paths]
    inputs = keras.Input(shape=data.input_shape, name="features")
    for i, m in enumerate(models):
        m.name = f"member_{i}"  # nested models need unique names
    outputs = keras.layers.Average(name="average")([m(inputs) for m in models])
    model = keras.Model(inputs, outputs, name="ensemble")
    return compile_for_task(model, data, loss=loss, output_activation=output_activation)


def _scorer(data: Dataset, *, loss: str, output_activation: str) -> keras.Model:
    """Identity on predictions, compiled with the task's loss and metrics: scores an average."""
    shape = (data.n_outputs,)
    inputs = keras.Input(shape=shape, name="predictions")
    model = keras.Model(inputs, keras.layers.Identity(name="same")(inputs), name="scorer")
    return compile_for_task(model, data, loss=loss, output_activation=output_activation)
