"""Whether a trial learns: the data's trivial baseline, and the rule that ends one that does not.

Owns :class:`Baseline`, the objective metric's value for a predictor that learned nothing from
the inputs (always the same class, the training class priors, the training mean or median),
computed once per job from the data with NumPy the way Keras computes the metric, and
:class:`LearningRule` (``training.stop_not_learning``), which the trial runner asks after every
epoch of every trial, whichever engine runs it and in the re-check:

- after ``after`` epochs (and ``min_steps`` optimizer steps), a trial whose best objective value
  is not better than the baseline by ``margin`` of the way to a perfect score (accuracy, AUC: 1;
  losses, MAE, RMSE: 0), and did not go ``margin`` of the way either over its last ``after``
  epochs (it is not improving), is not learning: :class:`~tuning.errors.NotLearning`, the fit
  ends at once and no model is kept;
- after as many epochs, a trial whose training loss grew above its first epoch's is diverging:
  not learning if it never beat the baseline (or the metric has none), else cut
  (:class:`~tuning.errors.StopTraining`: it ends with its best epoch's weights and value).

Why: a configuration that sits at chance after its first epochs stays there (the issue's
Fashion-MNIST jobs: 7 of 41 trials at val_accuracy 0.090-0.104 for 41-71 s each, one for 11
epochs), and early stopping waits ``patience`` epochs for it to improve. A pruner cannot tell:
it compares a trial with the others, and has nothing to compare with before it has seen a few.

Imports NumPy only: no Keras, no Optuna, no MLflow.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from tuning.errors import NotLearning, StopTraining
from tuning.objective import Direction, Objective

if TYPE_CHECKING:
    from tuning.config import Experiment
    from tuning.data import Dataset

__all__ = ["Baseline", "LearningRule", "baseline"]

# Keras clips predicted probabilities to [EPSILON, 1 - EPSILON] in its cross-entropies.
EPSILON = 1e-7


@dataclasses.dataclass(frozen=True)
class Baseline:
    """A metric's value for a predictor that ignores its inputs, and the metric's perfect value.

    Attributes:
        metric: The metric as Keras logs it (``val_accuracy``).
        value: Its value for the trivial predictor, on the rows the metric is measured on.
        perfect: Its best possible value (1 for accuracy and AUC, 0 for losses and errors).
        what: The trivial predictor, in words (``always the same class``).
    """

    metric: str
    value: float
    perfect: float
    what: str

    @property
    def direction(self) -> Direction:
        """Which way the metric improves."""
        return "maximize" if self.perfect > self.value else "minimize"

    def threshold(self, margin: float) -> float:
        """The value a learning trial must beat: ``margin`` of the way to a perfect score."""
        return self.value + margin * (self.perfect - self.value)


def _crossentropy(y: np.ndarray, p: np.ndarray) -> float:
    """Binary cross-entropy of predicting probabilities ``p`` (per column) for labels ``y``."""
    p = np.clip(p, EPSILON, 1 - EPSILON)
    return float(np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p))))


def baseline(data: Dataset, metric: str, *, loss: str = "auto") -> Baseline | None:
    """The trivial predictor's value of ``metric`` (``val_*``: on the validation rows, else on
    the training rows); ``None`` for a metric it cannot compute, or when no row or no spread
    leaves room to learn.

    Classification: the accuracy of always answering the same class, the best one on the rows
    scored (per label for multilabel): a network that collapsed answers one class, not always
    the most frequent training one (Fashion-MNIST's validation rows: 0.090 to 0.105 by class);
    the cross-entropy (``loss``) of the training class priors; AUC 0.5. Regression: the training
    mean for MSE, RMSE and the Huber loss, the training median for MAE (the best constant for
    each). A ``loss`` also counts the model's regularization, which only adds to it.

    Args:
        data: The job's dataset.
        metric: The objective metric as Keras logs it.
        loss: ``training.loss`` (regression's loss: auto/mse, mae or huber).
    """
    name = metric.removeprefix("val_")
    y_train = np.asarray(data.y_train)
    y = np.asarray(data.y_valid if metric.startswith("val_") else data.y_train)
    if not len(y_train) or not len(y):
        return None
    found: tuple[float, float, str] | None = None
    if data.task == "multiclass":
        n = max(int(data.n_classes or 0), int(y_train.max()) + 1, int(y.max()) + 1)
        counts = np.bincount(y_train.astype(int).ravel(), minlength=n)
        labels = y.astype(int).ravel()
        if name == "accuracy":
            best = np.bincount(labels, minlength=n).max() / len(labels)
            found = float(best), 1.0, "always the same class"
        elif name == "loss":
            priors = np.clip(counts / counts.sum(), EPSILON, 1 - EPSILON)
            found = float(np.mean(-np.log(priors[labels]))), 0.0, "the class priors"
    elif data.task in ("binary", "multilabel"):
        yt = y_train.reshape(len(y_train), -1).astype(np.float64)
        yv = y.reshape(len(y), -1).astype(np.float64)
        priors = yt.mean(axis=0)
        if name == "accuracy":  # per label, the better of always 0 and always 1
            ones = yv.mean(axis=0)
            found = float(np.mean(np.maximum(ones, 1 - ones))), 1.0, "always the same class"
        elif name == "loss":
            found = _crossentropy(yv, priors), 0.0, "the class priors"
        elif name == "auc":
            found = 0.5, 1.0, "a constant score"
    elif data.task == "regression":
        yt = y_train.reshape(len(y_train), -1).astype(np.float64)
        yv = y.reshape(len(y), -1).astype(np.float64)
        error = yv - yt.mean(axis=0)
        median_error = yv - np.median(yt, axis=0)
        if name == "rmse":
            found = float(np.sqrt(np.mean(error**2))), 0.0, "the training mean"
        elif name == "mae" or (name == "loss" and loss == "mae"):
            found = float(np.mean(np.abs(median_error))), 0.0, "the training median"
        elif name == "loss" and loss in ("auto", "mse"):
            found = float(np.mean(error**2)), 0.0, "the training mean"
        elif name == "loss" and loss == "huber":  # Keras' Huber, delta 1
            a = np.abs(error)
            huber = np.where(a <= 1.0, 0.5 * error**2, a - 0.5)
            found = float(np.mean(huber)), 0.0, "the training mean"
    if found is None or not math.isfinite(found[0]):
        return None
    value, perfect, what = found
    if math.isclose(value, perfect, abs_tol=1e-12):
        return None  # the trivial predictor is already perfect: nothing to learn
    return Baseline(metric, value, perfect, what)


@dataclasses.dataclass(frozen=True)
class LearningRule:
    """When a trial is not learning (``training.stop_not_learning``).

    Attributes:
        objective: The objective metric and its direction.
        after: Epochs a trial trains before it is judged.
        min_steps: Optimizer steps it takes before it is judged: on a small dataset an epoch
            is a few steps (digits in batches of 128: 9), too few to tell.
        margin: The share of the way from the baseline to a perfect score that the best epoch
            must have gone.
        baseline: The trivial predictor's value of the objective metric; ``None`` when it has
            none, or the objective's direction is not the metric's (then only the loss rule).
    """

    objective: Objective
    after: int
    margin: float
    baseline: Baseline | None
    min_steps: int = 0

    @classmethod
    def for_job(cls, exp: Experiment, data: Dataset) -> LearningRule | None:
        """The experiment's rule with the data's baseline (computed once, here); ``None`` when
        ``training.stop_not_learning`` is off."""
        cfg = exp.training.stop_not_learning
        if not cfg.enabled:
            return None
        metric, direction = exp.objective.metric, exp.objective.direction
        found = baseline(data, metric, loss=exp.training.loss)
        if found is not None and found.direction != direction:
            found = None  # e.g. val_loss maximized: the baseline says nothing about it
        return cls(Objective(metric, direction), cfg.after, cfg.margin, found, cfg.min_steps)

    def judged_after(self, steps_per_epoch: int | None = None) -> int:
        """Epochs a trial trains before it is judged: ``after``, or enough epochs of
        ``steps_per_epoch`` steps for ``min_steps``."""
        if not steps_per_epoch or self.min_steps <= 0:
            return self.after
        return max(self.after, -(-self.min_steps // steps_per_epoch))

    @property
    def threshold(self) -> float | None:
        """The value the best epoch must beat (``None`` without a baseline)."""
        return self.baseline.threshold(self.margin) if self.baseline is not None else None

    def improving(self, values: Sequence[float], window: int | None = None) -> bool:
        """Whether the best of ``values`` (the objective per epoch) went ``margin`` of the way to
        a perfect score over the last ``window`` epochs (default ``after``): from the best before
        them (the first epoch's value, when there are no more than ``window``).

        Why: a regression network starts far worse than the training mean (its outputs near 0,
        the targets maybe near 150) and needs epochs to reach it, but its loss falls fast; a
        trial at chance stays flat.
        """
        if self.baseline is None or len(values) < 2:
            return False
        window = window or self.after
        before = self.objective.best(values[: max(len(values) - window, 1)])
        target = before + self.margin * (self.baseline.perfect - before)
        return self.objective.better(self.objective.best(values), target)

    def check(
        self, history: Mapping[str, Sequence[float]], *, steps_per_epoch: int | None = None
    ) -> NotLearning | StopTraining | None:
        """The verdict on a trial's epochs so far (metric name -> value per epoch, as Keras
        logs them; an epoch is ``steps_per_epoch`` optimizer steps): :class:`NotLearning` (end
        it, keep nothing), :class:`StopTraining` (it learned, but its training loss grew: end it
        with its best epoch) or ``None`` (go on).

        A NaN or infinite loss is left to the fit, which fails the trial with its own reason.
        """
        metric = self.objective.metric
        losses = list(history.get("loss", ()))
        epochs = len(losses) or len(history.get(metric, ()))
        after = self.judged_after(steps_per_epoch)
        if epochs < after or (losses and not math.isfinite(losses[-1])):
            return None
        values = [v for v in history.get(metric, ()) if math.isfinite(v)]
        best = self.objective.best(values) if values else None
        threshold = self.threshold
        learned: bool | None = None
        if self.baseline is not None and threshold is not None:
            learned = best is not None and self.objective.better(best, threshold)
            if not learned and not self.improving(values, after):
                shown = f"{best:.4f}" if best is not None else "never finite"
                side = "above" if self.objective.maximize else "below"
                return NotLearning(
                    f"not learning: best {metric}={shown} in {epochs} epochs, no better than "
                    f"{self.baseline.what} ({self.baseline.value:.4f}; needs {side} "
                    f"{threshold:.4f}) and not improving",
                    value=best,
                    epochs=epochs,
                )
        if len(losses) >= 2 and losses[-1] > losses[0]:
            grew = (
                f"training loss grew from {losses[0]:.4g} in epoch 1 to {losses[-1]:.4g} in "
                f"epoch {epochs}"
            )
            if learned:
                return StopTraining(f"cut after epoch {epochs}: {grew} (diverging)")
            return NotLearning(f"not learning: {grew}", value=best, epochs=epochs)
        return None
