"""Is a challenger better than the champion by more than noise? A paired test on the same rows.

Owns the statistics behind ``@champion``: both models predict the same validation rows, and the
challenger must beat the champion on them by more than chance would. Classification uses the
exact McNemar test (a one-sided binomial test on the rows exactly one of the two models gets
right); regression a paired bootstrap of the per-row errors (absolute errors for an ``mae``
objective, squared otherwise). Both answer with a one-sided p-value: small when the challenger is
really better; and :func:`decide`, the decision itself: a pure function of the new model's
value, what the registry says of the champion, and the test's p-value (``tracking.py`` records
it, ``job.py`` runs the test). Plain NumPy/SciPy on arrays; MLflow and Keras stay out.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
from scipy import stats

from tuning.objective import Ranking

__all__ = [
    "MCNEMAR",
    "PAIRED_BOOTSTRAP",
    "Decision",
    "Standing",
    "decide",
    "paired_gap",
    "paired_test",
]

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
    gain = _row_losses(truth, champion, metric) - _row_losses(truth, challenger, metric)
    means = _bootstrap_means(gain, n_boot, seed)  # gain > 0 where the challenger is better
    return PAIRED_BOOTSTRAP, float((np.sum(means <= 0) + 1) / (n_boot + 1))


def _row_losses(truth: Predictions, predicted: Predictions, metric: str) -> np.ndarray:
    """Each row's regression loss: absolute error where ``metric`` has ``mae``, else squared
    (averaged over the targets of a row)."""
    loss = np.abs if "mae" in metric else np.square
    return loss(_matrix(predicted).astype(float) - _matrix(truth).astype(float)).mean(axis=1)


def _bootstrap_means(per_row: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """The means of ``n_boot`` resamples of ``per_row`` (rows drawn with replacement)."""
    rng = np.random.default_rng(seed)
    return per_row[rng.integers(0, len(per_row), size=(n_boot, len(per_row)))].mean(axis=1)


def paired_gap(
    task: str,
    truth: Predictions,
    better: Predictions,
    other: Predictions,
    *,
    metric: str,
    n_boot: int = 4000,
    seed: int = 0,
) -> tuple[float, float]:
    """How far ``other`` falls short of ``better`` on these rows, and its standard error.

    Classification: the mean over rows of (``better`` right) - (``other`` right), an accuracy
    difference, with the standard error of that mean. Regression: the mean per-row loss
    (absolute error where ``metric`` has ``mae``, else squared) of ``other`` minus that of
    ``better``, with the standard deviation of its paired bootstrap (``n_boot``, ``seed``).
    """
    if task != "regression":
        d = _correct(better, truth).astype(float) - _correct(other, truth).astype(float)
        se = d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else 0.0
        return float(d.mean()), float(se)
    gap = _row_losses(truth, other, metric) - _row_losses(truth, better, metric)
    return float(gap.mean()), float(_bootstrap_means(gap, n_boot, seed).std(ddof=1))


@dataclasses.dataclass(frozen=True)
class Standing:
    """The current ``@champion`` as the registry records it (its version's tags).

    Attributes:
        version: Its version number.
        metric: The objective it was scored on.
        data: The key of the data it was scored on (``Experiment.data_key``).
        value: Its validation value.
        inputs: The digest of what it takes and gives (columns, targets, classes;
            ``tuning.lineage.DataPrint.inputs``), ``None`` when not recorded.
        rows: The rows of the data it was scored on, ``None`` when not recorded.
        figures: Its recorded measures (``n_params``, ``model_bytes``, ``latency_ms``), where
            the job had several objectives or limits.
    """

    version: str
    metric: str | None
    data: str | None
    value: float | None
    inputs: str | None = None
    rows: int | None = None
    figures: dict[str, float] = dataclasses.field(default_factory=dict)

    def comparable(self, *, metric: str) -> bool:
        """Whether a new model scored on ``metric`` can be held against it (on today's rows,
        by a paired test, where the data changed since it was scored)."""
        return self.metric == metric and self.value is not None

    def can_score(self, inputs: str) -> bool:
        """Whether it takes today's inputs and gives today's classes (unknown: assumed so)."""
        return not self.inputs or not inputs or self.inputs == inputs


@dataclasses.dataclass(frozen=True)
class Decision:
    """Whether a new version becomes ``@champion``, and why.

    Attributes:
        promote: Move ``@champion`` to the new version.
        reason: The figures behind it, for a person.
        test: The paired test run (``none`` when none was).
        p_value: Its p-value (NaN when none was run).
        against: The champion's version it was weighed against (``None``: there was none).
    """

    promote: bool
    reason: str
    test: str = "none"
    p_value: float = math.nan
    against: str | None = None

    @property
    def text(self) -> str:
        """The ``champion_decision`` tag: ``moved: ...`` or ``stayed: ...``."""
        return f"{'moved' if self.promote else 'stayed'}: {self.reason}"


def decide(
    *,
    objective: Ranking,
    metric: str,
    value: float,
    data_key: str,
    current: Standing | None,
    test: tuple[str, float] | None = None,
    alpha: float = 0.05,
    stale: str | None = None,
    stale_rule: str = "replace",
    rows: int | None = None,
    prefer: str | None = None,
    figures: dict[str, float] | None = None,
    reverse: tuple[str, float] | None = None,
    limits: dict[str, float] | None = None,
    gap: tuple[float, float] | None = None,
    within_se: float | None = None,
) -> Decision:
    """Whether a new model of validation ``value`` replaces the champion ``current``.

    The first version becomes the champion. A champion scored on another metric stays (not
    comparable). A champion that cannot score today's data (``stale``: why) is replaced or kept
    as ``stale_rule`` says (``tracking.stale_champion``). Where the data changed since the
    champion was scored, its recorded value means nothing today: the paired ``test`` of both
    models on today's validation rows decides alone (p below ``alpha``). Otherwise the new model
    must be better in ``objective``'s direction and, with a paired ``test`` (name, p-value) on
    the same validation rows, better by more than noise: p below ``alpha``.

    With several objectives or limits (``tuning.selection``'s rule): a champion whose recorded
    ``figures`` are over today's ``limits`` is replaced by the new (feasible) model; and with
    ``prefer``, a new model lower on that measure (``figures``) also moves ``@champion`` when
    the ``reverse`` paired test (is the champion better?) gives p not below ``alpha`` and, with
    ``within_se``, the new model falls short of the champion on those rows (``gap``: the
    shortfall and its standard error, :func:`paired_gap`) by at most that many standard
    errors: not worse beyond noise, and smaller or faster.

    .. code-block:: python

        >>> from tuning.objective import Objective
        >>> acc = Objective("val_accuracy", "maximize")
        >>> old = Standing("1", "val_accuracy", "d", 0.90)
        >>> d = decide(objective=acc, metric="val_accuracy", value=0.93, data_key="d",
        ...            current=old, test=("mcnemar_exact", 0.2))
        >>> d.promote, d.reason.endswith("p=0.2 not below alpha 0.05 (within noise)")
        (False, True)
    """
    if current is None:
        return Decision(promote=True, reason="first version of this model")
    if stale is not None:
        replace = stale_rule == "replace"
        return Decision(
            promote=replace,
            reason=f"champion v{current.version} cannot score today's data ({stale}): "
            f"{'replaced' if replace else 'kept'} (tracking.stale_champion: {stale_rule})",
            against=current.version,
        )
    if not current.comparable(metric=metric):
        return Decision(
            promote=False,
            reason=f"champion v{current.version} was scored on {current.metric!r}; not comparable",
            against=current.version,
        )
    assert current.value is not None  # comparable() checked it
    figures, limits = figures or {}, limits or {}
    over = {k: v for k, v in current.figures.items() if k in limits and v > limits[k]}
    if over:
        shown = ", ".join(f"{k} {v:,.6g} > {limits[k]:g}" for k, v in sorted(over.items()))
        return Decision(
            promote=True,
            reason=f"champion v{current.version} is over today's limits ({shown}); the new "
            f"model meets them ({metric} {value:.4f})",
            against=current.version,
        )
    changed = current.data != data_key
    better = True if changed else objective.better(value, current.value)
    if changed:
        before = f"{current.rows} rows" if current.rows is not None else "other rows"
        reason = (
            f"data changed since champion v{current.version} was scored ({before}, digest "
            f"{(current.data or '?')[:8]} -> {data_key[:8]}"
            + (f", {rows} rows now" if rows is not None else "")
            + f"); both scored on today's validation rows: {metric} {value:.4f} (new)"
        )
    else:
        reason = f"{metric} {value:.4f} vs champion v{current.version} {current.value:.4f}"
    if test is None:
        if changed:
            return Decision(
                promote=False, reason=reason + "; no paired test", against=current.version
            )
        return Decision(promote=better, reason=reason, against=current.version)
    name, p_value = test
    promote = better and p_value < alpha
    reason += f"; {name} p={p_value:.3g} {'below' if p_value < alpha else 'not below'} alpha "
    reason += f"{alpha:g}" + (" (within noise)" if better and not promote else "")
    mine, theirs = figures.get(prefer or ""), current.figures.get(prefer or "")
    if not promote and prefer and reverse is not None and mine is not None and theirs is not None:
        back_name, back_p = reverse
        lower = mine < theirs
        close = True
        short = ""
        if within_se is not None and gap is not None:
            close = gap[0] <= within_se * gap[1]
            short = (
                f", short by {gap[0]:.4g} {'<=' if close else '>'} {within_se:g} x SE {gap[1]:.3g}"
            )
        promote = lower and back_p >= alpha and close
        reason += (
            f"; rule: lowest {prefer} within noise: {prefer} {mine:,.6g} vs {theirs:,.6g}, "
            f"champion better: {back_name} p={back_p:.3g} "
            f"{'not below' if back_p >= alpha else 'below'} alpha {alpha:g}{short}"
            + (" (smaller or faster, not worse beyond noise)" if promote else "")
        )
    return Decision(
        promote=promote, reason=reason, test=name, p_value=p_value, against=current.version
    )
