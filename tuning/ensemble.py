"""A top-k ensemble: the job's best trained models averaged into one Keras model.

Part of the trial layer (issue 14, point 5). The job keeps the ``study.ensemble_top`` best
models of its search, and the re-check adds its re-runs; :func:`choose` ranks them all by their
own validation score and picks the number n (1 to ``ensemble_top``) whose average scores best on
the validation rows: n = 1 (no ensemble) whenever averaging does not help. :func:`average` makes
the chosen members one functional model (``Average`` of the members' outputs: class
probabilities, sigmoid outputs or regression values), which saves as one ``.keras`` file, so the
logged pyfunc model, serving and the champion's paired test take it as they take a single MLP.

:func:`settle_model` makes the job's model: the re-check's winner, or the chosen average.

Every score here is computed the same way, from predictions (the data loss and the task's
metrics, as ``keras.Model.evaluate`` reports them), so a single member and an average compare
like with like (a member's own ``val_loss`` also holds its L2 penalty).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import keras
import numpy as np

from tuning import measures
from tuning.data import Dataset
from tuning.data.encoding import load_keras
from tuning.model import compile_for_task
from tuning.objective import Objective
from tuning.selection import Candidate, select

if TYPE_CHECKING:
    from tuning.config import Experiment
    from tuning.engines.base import JobContext
    from tuning.recheck import Rechecked
    from tuning.trial import Kept, ModelKeeper

__all__ = ["Choice", "Member", "average", "choose", "settle_model"]


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
    n chosen; with limits, also the other groups tried (:func:`choose`)."""

    ranked: list[Member]
    scores: list[float]  # scores[n - 1]: the average of the best n members
    n: int
    skipped: int = 0  # how many of the best members the chosen group leaves out
    tried: tuple[tuple[tuple[str, ...], tuple[float, ...]], ...] = ()  # (labels, scores) per group

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
    fits: Callable[[Sequence[Member]], bool] | None = None,
) -> Choice:
    """Rank ``members`` by their own score and pick how many of the best to average.

    Args:
        members: At least one trained model.
        data: The dataset whose validation rows score the averages.
        metric: The objective, as Keras logs it (``val_accuracy``, ``val_loss``, ...).
        direction: ``maximize`` or ``minimize``.
        top: The most members an average may take.
        loss, output_activation: The experiment's training settings (regression heads).
        fits: Whether a group of members may be averaged (the experiment's limits): members
            are then taken best first, each one only where the group still fits with it, so
            an average within the limits takes the best members that fit together. Where the
            limits cut that group short (a member passed over), the group that starts one
            member further down is tried too (and so on, at most ``top`` groups): a best
            model that fills the limit alone leaves no room beside it, and several smaller
            ones that fit together may score better averaged. Only averages of two or more
            count from a group that leaves the best out (the best alone is the other choice).

    Returns:
        The best-scoring average on the validation rows; ties go to the smaller n, then to the
        group that leaves fewer of the best out. n = 1: the best alone.
    """
    objective = Objective(metric, direction)  # type: ignore[arg-type]
    pool = objective.ranked(members, lambda m: m.value)
    groups = _groups(pool, max(top, 1), fits)
    scorer = _scorer(data, loss=loss, output_activation=output_activation)
    key = metric.removeprefix("val_")
    predicted: dict[Path, np.ndarray] = {}  # each member predicts the rows once
    tried: list[tuple[list[Member], list[float]]] = []
    for group in groups:
        total: np.ndarray | None = None
        scores: list[float] = []
        for n, m in enumerate(group, start=1):
            if m.path not in predicted:
                model = load_keras(str(m.path))
                predicted[m.path] = model.predict(data.x_valid, batch_size=1024, verbose=0)
            p = predicted[m.path].astype(np.float64)
            total = p if total is None else total + p
            result = scorer.evaluate(
                (total / n).astype(np.float32), data.y_valid, batch_size=1024, verbose=0,
                return_dict=True,
            )  # fmt: skip
            scores.append(float(result[key]))
        tried.append((group, scores))
    options = [
        (objective.sort_key(scores[n]), n, g)
        for g, (_, scores) in enumerate(tried)
        for n in range(len(scores))
        if g == 0 or n >= 1  # a group without the best: averages only
    ]
    _, best_n, g = min(options)  # ties: the smaller n, then the earlier group
    group, scores = tried[g]
    shown = tuple((tuple(m.label for m in gr), tuple(sc)) for gr, sc in tried)
    return Choice(ranked=group, scores=scores, n=best_n + 1, skipped=pool.index(group[0]),
                  tried=shown)  # fmt: skip


def _groups(
    pool: Sequence[Member], top: int, fits: Callable[[Sequence[Member]], bool] | None
) -> list[list[Member]]:
    """The groups :func:`choose` scores: the best members that fit together, taken best
    first; and, while the limits cut a group short, the group that starts one further down."""
    groups: list[list[Member]] = []
    for start in range(len(pool)):
        group: list[Member] = []
        cut = False
        for m in pool[start:]:
            if len(group) >= top:
                break
            if fits is None or not group or fits([*group, m]):
                group.append(m)
            else:
                cut = True
        groups.append(group)
        if fits is None or not cut or len(groups) >= top or start + 1 >= len(pool):
            break
    return groups


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


def settle_model(ctx: JobContext, checked: list[Rechecked]) -> None:
    """Make the job's model the re-check's winner (the best of its runs), or, with
    ``study.ensemble_top`` of 2 or more, an average of the job's best models where it scores
    better on the validation rows than the best alone.

    The candidates: the search's kept models (its ``ensemble_top`` best) and every re-run,
    ranked by their own validation value (:func:`choose`). Where no average beats the best
    alone, the model stays the re-check's winner. With several objectives or limits, the
    average (within the limits, counted as one model) is one more candidate of the stated rule
    (:func:`tuning.selection.select`): where it scores best, it is the reference that smaller
    or faster models must not fall short of beyond noise, and the rule keeps the lowest on the
    preferred measure among them, the average itself where none is close enough.
    """
    models = ctx.runner.models
    winner = _winner(models, checked)
    if winner is None:
        return
    models.adopt(winner.path, winner.value, winner.number)
    candidates = [_kept_member(k) for k in models.kept]
    for c in checked:
        candidates += _run_members(c)
    averaged = _ensemble(ctx, winner, candidates, checked)
    if ctx.runner.judged and models.enabled:
        pick = _select(ctx, winner, candidates, checked, averaged[0] if averaged else None)
        if averaged is None or pick.path != averaged[0].path:
            return  # the rule kept one model (adopted)
    if averaged is not None:
        mean, labels = averaged
        models.adopt(mean.path, mean.value, mean.number, single=winner, members=labels)


def _ensemble(
    ctx: JobContext, winner: Member, candidates: list[Member], checked: list[Rechecked]
) -> tuple[Member, list[str]] | None:
    """The best average of the job's models within its limits, saved (``ensemble.json``, one
    line said), labelled ``27r1+27`` by its members, and its members' labels; None where none
    beats the best alone."""
    models, exp = ctx.runner.models, ctx.exp
    top = exp.study.ensemble_top
    if top < 2 or len(candidates) < 2 or not models.enabled:
        return None
    started = time.perf_counter()
    settings = {"loss": exp.training.loss, "output_activation": exp.training.output_activation}
    metric = exp.objective.metric
    choice = choose(
        candidates, data=ctx.data, metric=metric, direction=exp.objective.direction, top=top,
        fits=_fits(exp, _figures_by_path(models, checked)) if exp.limits else None,
        **settings,
    )  # fmt: skip
    labels = [m.label for m in choice.members] if choice.n > 1 else [winner.label]
    table = {
        "ranked": [dataclasses.asdict(m) | {"path": None} for m in choice.ranked],
        "scores": choice.scores,
        "chosen": labels,
        "skipped": choice.skipped,
        "groups": [{"labels": list(g), "scores": list(sc)} for g, sc in choice.tried],
    }
    ctx.parent.log_text(json.dumps(table, indent=2), "ensemble.json")
    shown = ", ".join(f"{s:.4f}" for s in choice.scores)
    if choice.n == 1:
        ctx.say(f"ensemble: no average beats the best alone ({metric} of the top 1..n: {shown})")
        return None
    model = average([m.path for m in choice.members], data=ctx.data, **settings)
    if exp.limits:  # the average counts as one model: it must meet the limits itself
        names = [m for m in measures.needed(exp) if m in exp.limits]
        figures = measures.measure(model, names, x=ctx.data.x_valid, cfg=exp.measures)
        over = measures.violations(exp.limits, figures)
        if not measures.feasible(over):
            shown = ", ".join(f"{k} {figures[k]:.4g} > {exp.limits[k]:g}" for k, v in
                              over.items() if v > 0)  # fmt: skip
            ctx.say(f"ensemble: the average of {len(labels)} models is over the limits "
                    f"({shown}); the single model is kept")  # fmt: skip
            return None
    path = models.save(model, "ensemble.keras")
    skipped = (
        f"; the best {choice.skipped} left out: over the limits beside the others"
        if choice.skipped else ""
    )  # fmt: skip
    ctx.say(
        f"ensemble: {len(labels)} models ({', '.join('#' + x for x in labels)}) score {metric} "
        f"{choice.value:.4f} together (top 1..n: {shown}{skipped}) in "
        f"{time.perf_counter() - started:.1f} s"
    )
    return Member("+".join(labels), choice.members[0].number, choice.value, path), labels


def _select(
    ctx: JobContext,
    winner: Member,
    candidates: list[Member],
    checked: list[Rechecked],
    averaged: Member | None = None,
) -> Member:
    """Several objectives or limits: the job's model by the stated rule
    (:func:`tuning.selection.select`), adopted; logged as ``selection.json`` and the parent's
    tags ``selection_rule``, ``selection``; one line said. ``averaged`` (the best average
    within the limits) is a candidate too, the reference where it scores better than
    ``winner``."""
    from tuning.trial import validation_truth

    models, exp = ctx.runner.models, ctx.exp
    figures = _figures_by_path(models, checked)

    def cand(m: Member) -> Candidate:
        return Candidate(m.label, m.number, m.value, m.path, dict(figures.get(m.path, {})))

    reference, others = cand(winner), [cand(m) for m in candidates if m.path != winner.path]
    if averaged is not None:
        mean = Candidate(averaged.label, averaged.number, averaged.value, averaged.path,
                         {exp.objective.metric: averaged.value})  # fmt: skip
        if exp.objective.better(averaged.value, winner.value):
            reference, others = mean, [reference, *others]
        else:
            others.append(mean)
    picked = select(exp, ctx.data, reference, others, truth=validation_truth(ctx.data))
    ctx.parent.log_text(json.dumps(picked.table(), indent=2, default=str), "selection.json")
    ctx.parent.set_tags({
        "selection_rule": picked.rule, "selection": picked.reason[:5000],
        "selection_reference": picked.reference.label, "model_label": picked.chosen.label,
    })  # fmt: skip
    ctx.say(f"model: {picked.reason}")
    models.selected = picked  # the champion's rule reads it
    pick = picked.chosen
    models.adopt(pick.path, pick.value, pick.number)
    return Member(pick.label, pick.number, pick.value, pick.path)


def _figures_by_path(
    models: ModelKeeper, checked: list[Rechecked]
) -> dict[Path, dict[str, float]]:
    """Saved model -> its recorded figures (the search's kept models and the re-runs')."""
    figures = {k.path: dict(k.figures) for k in models.kept}
    for c in checked:  # the re-runs' own figures (a limit on a logged metric, val_loss...)
        figures.update({p: f for p, f in zip(c.paths, c.figures, strict=False) if p is not None})
    return figures


# Measures of an average that are about the sum of its members' (each member runs in full).
ADDITIVE = ("n_params", "model_bytes", "latency_ms")


def _fits(
    exp: Experiment, figures: Mapping[Path, Mapping[str, float]]
) -> Callable[[Sequence[Member]], bool]:
    """Whether a group's average is expected to meet ``exp``'s limits on the additive measures
    (the sum of its members' recorded figures); a member without a figure fits alone only.
    The average that is built is measured again before it is kept."""
    limited = [k for k in ADDITIVE if k in exp.limits]

    def fits(group: Sequence[Member]) -> bool:
        for k in limited:
            values = [figures.get(m.path, {}).get(k) for m in group]
            known = [float(v) for v in values if v is not None]
            if len(known) < len(values) or sum(known) > exp.limits[k]:
                return False
        return True

    return fits


def _winner(models: ModelKeeper, checked: list[Rechecked]) -> Member | None:
    """The model the job keeps without an ensemble: the best run of the re-check's winner
    (``checked[0]``), else the search's best."""
    kept = {k.number: k for k in models.kept}
    if checked:
        c = checked[0]
        runs = _run_members(c)
        if c.number in kept:
            runs.append(_kept_member(kept[c.number]))
        if runs:
            return models.exp.objective.ranked(runs, lambda m: m.value)[0]
    return _kept_member(models.kept[0]) if models.kept else None


def _kept_member(k: Kept) -> Member:
    """One of the search's kept models as an ensemble candidate (labelled by its trial)."""
    return Member(str(k.number), k.number, k.value, k.path)


def _run_members(c: Rechecked) -> list[Member]:
    """``c``'s re-runs that trained, as ensemble candidates (``7r1``: trial 7's first re-run)."""
    return [
        Member(f"{c.number}r{i}", c.number, v, p)
        for i, (v, p) in enumerate(zip(c.values, c.paths, strict=True), start=1)
        if v is not None and p is not None
    ]
