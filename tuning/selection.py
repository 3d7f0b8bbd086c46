"""Which model a job keeps when it has several objectives or limits: the stated rule.

Owns the rule, written once, that ``tuning.ensemble.settle_model`` applies to the job's kept
models (and, through the decision text, that ``@champion`` reports):

1. only feasible models count (every limit met; the measured limits are measured again here, on
   the saved model, the same way for every candidate);
2. the reference is the best feasible model by the primary objective (the re-check's winner);
3. among the feasible models, the one lowest on the preferred measure (``selection.prefer``,
   default: the second objective when it is a measure) whose primary metric is not worse than
   the reference's beyond noise is kept: the paired test of ``tuning.champion`` on the same
   validation rows (exact McNemar for classification, a paired bootstrap for regression) must
   not say, at ``tracking.champion_alpha``, that the reference is better, and (by default) its
   shortfall on those rows must be at most ``selection.within_se`` standard errors of the paired
   difference: the one-standard-error rule (Breiman et al. 1984). A test that merely fails to
   reject is weak on a few thousand rows (on Fashion-MNIST's 5,000 it let through models
   0.7 % less accurate, which lost 1-2 % on the test rows); the bound keeps "within noise"
   meaning within one standard error.

Without ``prefer`` the reference is kept. ``tuning.ensemble`` passes the best average of the
job's models within the limits as one more candidate (one model, measured as a whole), the
reference where it scores better than the best single model. :func:`front` gives the models
worth keeping during the search for this rule: the non-dominated ones on (primary, preferred
measure).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

import numpy as np

from tuning import champion, measures
from tuning.data.encoding import decode, load_keras

if TYPE_CHECKING:
    from tuning.config import Experiment
    from tuning.data import Dataset
    from tuning.objective import Ranking

__all__ = ["Candidate", "Selected", "front", "select"]


class _Figured(Protocol):
    @property
    def value(self) -> float: ...

    @property
    def figures(self) -> Mapping[str, float]: ...


F = TypeVar("F", bound=_Figured)


def front(items: Sequence[F], objective: Ranking, prefer: str) -> list[F]:
    """The items no other item beats on both the primary value and ``prefer`` (lower is
    better), in ``items``' order; items without a ``prefer`` figure are left out."""

    def fig(x: F) -> float | None:
        v = x.figures.get(prefer)
        return None if v is None else float(v)

    known = [x for x in items if fig(x) is not None]
    out = []
    for a in known:
        fa = fig(a)
        assert fa is not None
        dominated = False
        for b in known:
            fb = fig(b)
            assert fb is not None
            if b is a:
                continue
            no_worse = not objective.better(a.value, b.value) and fb <= fa
            strictly = objective.better(b.value, a.value) or fb < fa
            if no_worse and strictly:
                dominated = True
                break
        if not dominated:
            out.append(a)
    return out


@dataclasses.dataclass
class Candidate:
    """A saved model the rule may keep: its label (``7``, ``7r1``), trial, value, file."""

    label: str
    number: int
    value: float
    path: Path
    figures: dict[str, float] = dataclasses.field(default_factory=dict)
    p_value: float | None = None  # the paired test against the reference, where one ran
    gap: float | None = None  # how far it falls short of the reference on the same rows
    gap_se: float | None = None  # the standard error of that paired difference


@dataclasses.dataclass
class Selected:
    """What the rule chose, and why (the figures of every candidate)."""

    chosen: Candidate
    reference: Candidate
    rule: str
    reason: str
    candidates: list[Candidate]

    def table(self) -> dict[str, object]:
        """Plain data for ``selection.json``."""
        return {
            "rule": self.rule,
            "reason": self.reason,
            "chosen": self.chosen.label,
            "reference": self.reference.label,
            "candidates": [dataclasses.asdict(c) | {"path": None} for c in self.candidates],
        }


def rule_text(exp: Experiment) -> str:
    """The rule in words (the ``selection_rule`` tag)."""
    if exp.prefer is None:
        return f"best feasible by {exp.objective.metric}"
    within = exp.selection.within_se
    se = "" if within is None else f", short of it by at most {within:g} standard error(s)"
    return (
        f"lowest {exp.prefer} among feasible models whose {exp.objective.metric} is not worse "
        f"than the best feasible's beyond noise (paired test, alpha "
        f"{exp.tracking.champion_alpha:g}{se})"
    )


def select(
    exp: Experiment,
    data: Dataset,
    reference: Candidate,
    others: Sequence[Candidate],
    *,
    truth: object,
    predict: Callable[[Path], object] | None = None,
) -> Selected:
    """Apply the rule to ``reference`` (the best feasible by the primary) and ``others``.

    Every candidate's measured figures are measured again on its saved model; a candidate
    over a measured limit is dropped (the reference too, if it is: then the next best
    feasible by primary value becomes the reference).

    Args:
        exp: The experiment (objectives, limits, ``selection.prefer``, alpha).
        data: The dataset (validation rows).
        reference: The best feasible model by the primary objective.
        others: Other feasible candidates.
        truth: The validation rows' true labels as a model's decoded predictions spell them.
        predict: Decoded predictions of a saved model on the validation rows (default:
            load it with Keras and decode its outputs).
    """
    objective, prefer, alpha = exp.objective, exp.prefer, exp.tracking.champion_alpha
    within = exp.selection.within_se
    meta = data.serving_meta()

    def default_predict(path: Path) -> object:
        raw = load_keras(str(path)).predict(data.x_valid, batch_size=1024, verbose=0)
        return decode(meta, np.asarray(raw))

    predict = predict or default_predict
    seen: dict[Path, Candidate] = {}
    for c in (reference, *others):
        seen.setdefault(c.path, c)
    pool = list(seen.values())
    names = [m for m in measures.needed(exp) if m in exp.limits or m == prefer]
    for c in pool:
        model = load_keras(str(c.path))
        c.figures.update(measures.measure(model, names, x=data.x_valid, cfg=exp.measures))
    feasible = [c for c in pool if measures.feasible(measures.violations(exp.limits, c.figures))]
    if not feasible:  # every kept model is over a measured limit now: keep the reference
        return Selected(reference, reference, rule_text(exp), "no candidate met the limits "
                        "when measured again; the best by the primary is kept", pool)  # fmt: skip
    feasible = objective.ranked(feasible, lambda c: c.value)
    # The re-check's winner (ranked by its mean over seeds), unless over a limit now.
    first = seen[reference.path]
    ref = first if first in feasible else feasible[0]
    feasible = [ref, *(c for c in feasible if c is not ref)]
    if prefer is None:
        reason = f"best feasible by {objective.metric}: #{ref.label} {ref.value:.4f}"
        return Selected(ref, ref, rule_text(exp), reason, pool)
    ref_pred = predict(ref.path)
    chosen = ref
    for c in sorted(feasible[1:], key=lambda c: c.figures[prefer]):
        if c.figures[prefer] >= ref.figures[prefer]:
            break
        c_pred = predict(c.path)
        name, p = champion.paired_test(
            data.task,
            truth,
            ref_pred,
            c_pred,
            metric=objective.metric,  # type: ignore[arg-type]
        )
        c.p_value = p
        short = ""
        if within is not None:
            gap, se = champion.paired_gap(
                data.task, truth, ref_pred, c_pred, metric=objective.metric
            )
            c.gap, c.gap_se = gap, se
            if gap > within * se:
                continue
            short = f", short by {gap:.4g} <= {within:g} x SE {se:.3g}"
        if p >= alpha:
            chosen = c
            reason = (
                f"#{c.label} {prefer} {c.figures[prefer]:,.6g} vs the best feasible "
                f"#{ref.label} {ref.figures[prefer]:,.6g}; {objective.metric} {c.value:.4f} vs "
                f"{ref.value:.4f}, "
                f"{name} p={p:.3g} not below alpha {alpha:g}{short} (not worse beyond noise)"
            )
            break
    else:
        chosen = ref
    if chosen is ref:
        reason = (
            f"the best feasible #{ref.label} ({objective.metric} {ref.value:.4f}, {prefer} "
            f"{ref.figures[prefer]:,.6g}): every model lower on {prefer} is worse beyond noise"
        )
    return Selected(chosen, ref, rule_text(exp), reason, pool)
