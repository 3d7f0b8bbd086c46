"""The re-check: the search's top trials trained again from other initial weights, ranked by mean.

Owns what happens between the search and the job's model: one score per configuration is one
draw of the noise in its training (~0.01 accuracy on Fashion-MNIST between seeds), so the top
trial is often the luckiest, not the best. :func:`recheck` re-runs the top
``study.recheck_top`` through the job's :class:`~tuning.trial.TrialRunner` (each re-run an
MLflow run ``trial-<n>-recheck-<round>`` nested under its trial's run) and ranks them by the mean
of all their runs; the parent run gets ``recheck.json`` and the tag ``best_by_mean``.
``tuning.ensemble.settle_model`` then picks the job's model from what it returns.

Before its re-runs, a top trial the search cut short (its slice of the budget, the deadline)
trains further from where it stopped (``TrialRunner.resume``, issue 26: the epochs it paid for
are not thrown away), in its own run, for its share of the re-check's time; its continued value
is its first in the ranking (``recheck.json``: ``first``, ``continued`` epochs). The re-runs over
other seeds still start from new weights: they test the configuration, not the run.

Imports no Keras: the runner it is handed does the training.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from tuning.engines.base import Engine, JobContext, Ranked
from tuning.errors import StopTraining, TrialFailed

if TYPE_CHECKING:
    from tuning.trial import Params

__all__ = ["RECHECK_ROUNDS", "RECHECK_SEED", "RECHECK_SHARE", "Rechecked", "recheck"]

# The share of a time budget the search leaves to the re-check of its top trials (which trains
# them further than the search's 1/min_configs slices), and the offset that gives a re-run other
# initial weights than its trial's.
RECHECK_SHARE = 0.3
RECHECK_SEED = 104_729
# At most this many re-runs of each top trial: later rounds run only on time the first left.
RECHECK_ROUNDS = 3


@dataclasses.dataclass
class Rechecked:
    """One top trial and its re-runs: its first value, the re-runs' values, their mean."""

    number: int
    first: float
    values: list[float | None] = dataclasses.field(default_factory=list)
    continued: int = 0  # epochs the trial's own run trained further before the re-runs
    seeds: list[int] = dataclasses.field(default_factory=list)
    paths: list[Path | None] = dataclasses.field(default_factory=list)
    mean: float | None = None
    # With several objectives or limits: each re-run's figures (every objective, measure).
    figures: list[dict[str, float]] = dataclasses.field(default_factory=list)

    def add(
        self,
        value: float | None,
        seed: int,
        path: Path | None,
        figures: dict[str, float] | None = None,
    ) -> None:
        """One more re-run; a diverged one (``None``) ranks the configuration last."""
        self.values.append(value)
        self.seeds.append(seed)
        self.paths.append(path)
        self.figures.append(figures or {})
        finite = [v for v in self.values if v is not None]
        self.mean = (
            (self.first + sum(finite)) / (1 + len(finite)) if len(finite) == len(self.values)
            else None
        )  # fmt: skip

    def shown(self) -> str:
        return ",".join("-" if v is None else f"{v:.4f}" for v in self.values)


def recheck(engine: Engine, ctx: JobContext, *, deadline: float | None) -> list[Rechecked]:
    """Train the search's top ``study.recheck_top`` trials again from other initial weights,
    rank them by the mean of all their runs, the winner first.

    With a time budget, each re-run gets an equal share of what is left, and while a whole
    round's time is left after a round (the re-runs stopped early), another round runs, up to
    :data:`RECHECK_ROUNDS`, rather than leave the budget unspent. Nothing happens with fewer
    than two complete trials, and the re-runs stop at ``deadline``.
    """
    k = ctx.exp.study.recheck_top
    top = engine.ranked(k) if k else []
    if len(top) < 2:
        return []
    done = {r.number: Rechecked(r.number, r.value) for r in top}
    _train_further(engine, ctx, top, done, deadline=deadline)
    last_round = 0.0
    for round_ in range(1, RECHECK_ROUNDS + 1):
        started = time.perf_counter()
        if round_ > 1 and (deadline is None or deadline - started < last_round):
            break
        for i, r in enumerate(top):
            now = time.perf_counter()
            if deadline is not None and now >= deadline:
                if round_ == 1:
                    ctx.say(f"recheck: the time budget ended after {i} of {len(top)} trials")
                break
            # With a budget, each re-run gets an equal share of what is left.
            end = now + (deadline - now) / (len(top) - i) if deadline is not None else None
            done[r.number].add(*_rerun(ctx, r, round_, deadline=end))
        else:
            last_round = time.perf_counter() - started
            continue
        break
    checked = [c for c in done.values() if c.values]
    if len(checked) < 2:
        return checked
    objective = ctx.exp.objective
    winner = checked[0]
    for c in checked[1:]:
        if c.mean is not None and (winner.mean is None or objective.better(c.mean, winner.mean)):
            winner = c
    table = [dataclasses.asdict(c) | {"paths": None} for c in checked]
    ctx.parent.log_text(json.dumps(table, indent=2), "recheck.json")
    ctx.parent.set_tags({"best_by_mean": winner.number})
    shown = ", ".join(f"#{c.number} {c.first:.4f}/{c.shown()}" for c in checked)
    ctx.say(
        f"recheck ({objective.metric}, first/re-runs): {shown}; "
        f"best by mean: trial {winner.number}"
    )
    checked.sort(key=lambda c: c is not winner)  # the winner first, then the search's order
    return checked


def _train_further(
    engine: Engine,
    ctx: JobContext,
    top: list[Ranked],
    done: dict[int, Rechecked],
    *,
    deadline: float | None,
) -> None:
    """Continue each top trial that was cut and whose state was saved, in its own run: with a
    budget, each gets an equal share of the re-check's time, counting each re-run of the first
    round as one share too (the re-runs then share what is left)."""
    runner = ctx.runner
    resumable = [r for r in top if runner.can_resume(r.number)]
    for i, r in enumerate(resumable):
        now = time.perf_counter()
        if deadline is not None and now >= deadline:
            break
        shares = len(resumable) - i + len(top)
        end = now + (deadline - now) / shares if deadline is not None else None
        try:
            result = runner.resume(r.number, hooks=[_cut_at(end)])
        except TrialFailed as e:  # diverged: the trial keeps its first value and model
            ctx.say(f"recheck: trial {r.number} could not train further ({e})")
            continue
        if result.value is None:
            continue
        c = done[r.number]
        c.first, c.continued = float(result.value), result.epochs - result.initial_epoch
        engine.continued(r.number, result)
        ctx.say(
            f"recheck: trial {r.number} trained {c.continued} epochs further from epoch "
            f"{result.initial_epoch + 1}: {r.value:.4f} -> {c.first:.4f}"
        )


def _cut_at(deadline: float | None) -> Callable[[int, Mapping[str, float]], None]:
    """An epoch hook that ends the fit at ``deadline`` (its share of the time budget)."""

    def cut(epoch: int, logs: Mapping[str, float]) -> None:
        if deadline is not None and time.perf_counter() >= deadline:
            raise StopTraining(f"cut after epoch {epoch + 1} at its share of the time budget")

    return cut


def _rerun(
    ctx: JobContext, r: Ranked, round_: int, *, deadline: float | None
) -> tuple[float | None, int, Path | None, dict[str, float]]:
    """Train ``r``'s configuration from other initial weights, logged under its trial's run;
    a diverged re-run (its run FAILED) gives ``None``."""
    seed = ctx.exp.study.seed + r.number + RECHECK_SEED * round_
    params: Params = r.params  # type: ignore[assignment]
    try:
        result = ctx.runner.run(
            params, number=r.number, hooks=[_cut_at(deadline)], seed=seed,
            recheck=(round_, r.run_id),
        )  # fmt: skip
    except TrialFailed:  # this seed diverged: the configuration ranks last
        return None, seed, None, {}
    return result.value, seed, result.path, result.figures
