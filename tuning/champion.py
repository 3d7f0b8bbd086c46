"""Is a challenger better than the champion by more than noise? A paired test on the same rows.

Owns the statistics behind ``@champion``: both models predict the same validation rows, and the
challenger must beat the champion on them by more than chance would. Classification uses the
exact McNemar test (a one-sided binomial test on the rows exactly one of the two models gets
right); regression a paired bootstrap of the per-row errors (absolute errors for an ``mae``
objective, squared otherwise). Both answer with a one-sided p-value: small when the challenger is
really better. Plain NumPy/SciPy on arrays; MLflow and Keras stay out.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

__all__ = ["MCNEMAR", "PAIRED_BOOTSTRAP", "paired_test"]

MCNEMAR = "mcnemar_exact"
PAIRED_BOOTSTRAP = "paired_bootstrap"
Predictions = np.ndarray | pd.DataFrame | pd.Series


def _matrix(values: Predictions) -> np.ndarray:
    array = np.asarray(values.values if hasattr(values, "values") else values, dtype=object)
    return array.reshape(len(array), -1)


def _correct(predicted: Predictions, truth: Predictions) -> np.ndarray:
    """Rows predicted right: every label (or every output of a multilabel row) equal."""
    p, t = _matrix(predicted).astype(str), _matrix(truth).astype(str)
    return np.all(p == t, axis=1)


def paired_test(
    task: str,
    truth: Predictions,
    challenger: Predictions,
    champion: Predictions,
    *,
    metric: str,
    n_boot: int = 4000,
    seed: int = 0,
) -> tuple[str, float]:
    """One-sided p-value that ``challenger`` is no better than ``champion`` on these rows.

    Args:
        task: The dataset's task (``binary``, ``multiclass``, ``multilabel``, ``regression``).
        truth: The rows' true labels (or values), as the models' predictions spell them.
        challenger: The challenger's predictions for the same rows.
        champion: The champion's predictions for the same rows.
        metric: The objective metric: ``mae`` in it means absolute errors for regression.
        n_boot: Bootstrap resamples (regression).
        seed: Seed of the resampling, so a decision can be repeated.

    Returns:
        The test's name and its p-value.
    """
    if task != "regression":
        new_right, old_right = _correct(challenger, truth), _correct(champion, truth)
        wins = int(np.sum(new_right & ~old_right))
        losses = int(np.sum(~new_right & old_right))
        if wins + losses == 0:  # the same rows right: no evidence either way
            return MCNEMAR, 1.0
        p = stats.binomtest(wins, wins + losses, 0.5, alternative="greater").pvalue
        return MCNEMAR, float(p)
    t = _matrix(truth).astype(float)
    new_err = _matrix(challenger).astype(float) - t
    old_err = _matrix(champion).astype(float) - t
    loss = np.abs if "mae" in metric else np.square
    gain = (loss(old_err) - loss(new_err)).mean(axis=1)  # > 0 where the challenger is better
    rng = np.random.default_rng(seed)
    means = gain[rng.integers(0, len(gain), size=(n_boot, len(gain)))].mean(axis=1)
    return PAIRED_BOOTSTRAP, float((np.sum(means <= 0) + 1) / (n_boot + 1))
