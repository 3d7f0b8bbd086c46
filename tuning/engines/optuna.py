"""The Optuna engine: a resumable study, named samplers and pruners, an objective pruned per epoch.

Owns the Optuna side of a job: the study in ``study.storage`` (always ``load_if_exists``, so the
same command resumes it; its sampler seeded apart per resume and per worker), dead trials failed
before new ones start, the sampler and pruner the experiment names, and the objective that ties
a trial to the parts: ``SearchSpace.suggest`` -> the job's ``TrialRunner.run``, with a hook that
reports every epoch to Optuna (pruning, the job's deadline, the trial's slice of the budget),
and the trial's records in the study (``tuning.records``). A trial's problem
(:class:`~tuning.errors.TrialFailed`) fails that trial and the study goes on. A trial that is not
learning (:class:`~tuning.errors.NotLearning`, from the runner) ends PRUNED with the user
attribute ``not_learning``: FAIL would hide it from TPE, which would sample the same region
again, while TPE ranks a pruned trial below every complete one (by the epochs it reached and its
last reported value, reported before it ended), and a pruned trial has no value, so it is never
the study's best nor re-checked.

With several objectives (``Experiment.objectives``) the study has one direction per objective
and a trial's values are theirs, in order; with ``limits`` each trial gets one constraint per
limit (``Trial.set_constraint``: value - limit), a configuration over an ``n_params`` limit is
refused before it trains, and "best" means the best feasible by the primary objective. Optuna's
pruners refuse several objectives, so those are pruned by this engine's median rule on the
primary (:meth:`OptunaEngine._median_rule`).
"""

from __future__ import annotations

import bisect
import heapq
import math
import operator
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import optuna

from tuning import backend, lineage, pareto, process, records, report, storage
from tuning.config import Experiment, PrunerConfig, SamplerConfig, redact
from tuning.engines.base import Engine, JobContext, Outcome, Ranked, check_stop
from tuning.errors import ConfigError, NotLearning, StopTraining, TrialFailed
from tuning.summary import trial_line
from tuning.tracking import TrialRun
from tuning.train import EpochHook
from tuning.trial import KeepState, TrialResult, is_finite

try:  # Optuna's percentile rule, private: PerTrialMedianPruner uses Optuna's own without them
    from optuna.pruners._percentile import (
        _get_best_intermediate_result_over_steps as _best_over_steps,
    )
    from optuna.pruners._percentile import (
        _get_percentile_intermediate_result_over_trials as _percentile_over,
    )
    from optuna.pruners._percentile import _is_first_in_interval_step as _first_in_interval
except ImportError:  # pragma: no cover - a later Optuna
    _percentile_over = None  # type: ignore[assignment]

__all__ = [
    "BoundedTPESampler",
    "fast_log_ndtr",
    "OptunaEngine",
    "PerTrialMedianPruner",
    "make_pruner",
    "make_sampler",
    "open_study",
]


# Study system attribute: trials below this number were all finished at a sweep that looked
# up their runs (:meth:`OptunaEngine._sweep`).
_RECONCILED_FROM = "tuning:reconciled_from"

TPE_BEST = 25  # Optuna's TPE models at most 25 trials as "good" (default_gamma's cap)
_number = operator.attrgetter("number")


class _BestOld:
    """The best :data:`TPE_BEST` complete trials numbered below a cut, kept from one call to
    the next: complete trials never change and are only ever added, so when the cut moves on
    only the trials it passed are ranked, not the whole history. Ranking is by value, ties to
    the earlier trial (as a stable sort of the trials in number order)."""

    def __init__(self) -> None:
        self._of: tuple[int, int, int] | None = None  # (study id, cut, complete trials below)
        self._best: list[optuna.trial.FrozenTrial] = []

    def below(
        self, study_id: int, complete: list[optuna.trial.FrozenTrial], cut: int, maximize: bool
    ) -> list[optuna.trial.FrozenTrial]:
        """The best of ``complete`` (sorted by number) numbered below ``cut``, by number."""
        n = bisect.bisect_left(complete, cut, key=_number)
        of = self._of
        if (
            of is not None
            and of[0] == study_id
            and of[1] <= cut
            and bisect.bisect_left(complete, of[1], key=_number) == of[2]
        ):
            pool = self._best + complete[of[2] : n]  # only trials the cut has passed since
        else:
            pool = complete[:n]  # first call, or a trial completed below the cut meanwhile

        def rank(t: optuna.trial.FrozenTrial) -> tuple[float, int]:
            return (float(t.value), -t.number) if maximize else (-float(t.value), -t.number)  # type: ignore[arg-type]

        self._best = heapq.nlargest(TPE_BEST, pool, key=rank)
        self._of = (study_id, cut, n)
        return sorted(self._best, key=_number)


class _HistoryView:
    """A study as TPE sees it with a bounded history: every attribute the study's own, but its
    trials only the best :data:`TPE_BEST` complete ones and the most recent ``recent``.

    Behind :class:`tuning.trial_cache.SortedTrialsCache` the trials come from its kept lists
    (as of the read TPE has just made) and the best old ones from ``best_old``, so a read costs
    the same at trial 10,000 as at trial 1,000; elsewhere from the study, ranked each time."""

    def __init__(self, study: optuna.Study, recent: int, best_old: _BestOld | None = None) -> None:
        self._study = study
        self._recent = recent
        self._best_old = best_old or _BestOld()

    def __getattr__(self, name: str) -> object:
        return getattr(self._study, name)

    def _get_trials(
        self, deepcopy: bool = True, states: object = None, use_cache: bool = False
    ) -> list[optuna.trial.FrozenTrial]:
        study, storage = self._study, self._study._storage
        kept = getattr(storage, "kept_trials", None)
        if kept is None or deepcopy:
            return self._ranked_here(deepcopy, states, use_cache)
        trials = kept(study._study_id, states)
        if len(trials) <= self._recent + TPE_BEST:
            return trials
        recent = trials[-self._recent :]
        COMPLETE = optuna.trial.TrialState.COMPLETE
        if states is not None and COMPLETE not in states:  # type: ignore[operator]
            return recent
        best = self._best_old.below(
            study._study_id,
            kept(study._study_id, (COMPLETE,)),
            recent[0].number,
            maximize=study.direction.name == "MAXIMIZE",
        )
        return best + recent

    def _ranked_here(
        self, deepcopy: bool, states: object, use_cache: bool
    ) -> list[optuna.trial.FrozenTrial]:
        trials = self._study._get_trials(deepcopy=deepcopy, states=states, use_cache=use_cache)  # type: ignore[arg-type]
        if len(trials) <= self._recent + TPE_BEST:
            return trials
        recent = trials[-self._recent :]  # Optuna returns the trials sorted by number
        complete = [
            t for t in trials[: -self._recent] if t.state == optuna.trial.TrialState.COMPLETE
        ]
        pick = heapq.nsmallest if self._study.direction.name == "MINIMIZE" else heapq.nlargest
        best = pick(TPE_BEST, complete, key=lambda t: float(t.value))  # type: ignore[arg-type]
        return sorted(best, key=lambda t: t.number) + recent


class BoundedTPESampler(optuna.samplers.TPESampler):
    """TPE that models the best :data:`TPE_BEST` complete trials and the ``recent`` latest.

    Optuna's TPE fits its Parzen estimators to every finished trial and scores each of its 24
    candidates against all of them, so a sample costs O(trials): 11 ms of CPU at trial 30 and
    87 ms at trial 10,000, 30 ms with this view (benchmarks/RESULTS.md, "Growth: 10,000
    trials").
    With a bounded view the "good" density l(x) is the same as over the whole history (TPE takes
    at most the best 25 as good, and the best 25 are always in the view); only the "bad"
    density g(x) is fitted to the recent trials instead of all of them (Optuna already weights
    old trials down in it). The trade-off: regions explored long ago and found poor are
    forgotten, and may be proposed again about once a ``recent`` trials.
    """

    def __init__(self, *, recent: int, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.recent = recent
        self._best_old = _BestOld()

    def _sample(
        self,
        study: optuna.Study,
        trial: optuna.trial.FrozenTrial,
        search_space: dict[str, optuna.distributions.BaseDistribution],
    ) -> dict[str, object]:
        if study._is_multi_objective():
            return super()._sample(study, trial, search_space)
        view = _HistoryView(study, self.recent, self._best_old)
        return super()._sample(view, trial, search_space)  # type: ignore[arg-type]


def fast_log_ndtr() -> bool:
    """Give Optuna's TPE SciPy's ``log_ndtr`` (in C) for its own, element by element in Python.

    TPE's densities need log Phi(x) of every candidate against every observation of an integer
    or stepped parameter; Optuna computes it with ``np.frompyfunc`` over a scalar Python function
    (behind an ``lru_cache`` of 1,000 that a big history overflows): ~5,000 calls per sample at
    a history of 1,000 trials, a quarter of a trial's CPU there (benchmarks/RESULTS.md, "Growth:
    10,000 trials"). SciPy's is the reference Optuna's ports (same series, same cut-offs, within
    1e-7 relative and closer at a=6 where Optuna's takes the log of 1 - 1e-9), so the samples are
    the same (``tests/engines/test_optuna.py``). Installed once per process, on Optuna's private
    ``_truncnorm`` module; left as Optuna's where that module lacks the function, or where the
    two disagree on a grid (a later Optuna that changed what it computes). True when installed.
    """
    try:
        import numpy as np
        import scipy.special
        from optuna.samplers._tpe import _truncnorm
    except ImportError:  # pragma: no cover - no SciPy, or a later Optuna
        return False
    mine = scipy.special.log_ndtr
    theirs = getattr(_truncnorm, "_log_ndtr", None)
    if theirs is mine:
        return True
    if theirs is None:  # pragma: no cover - a later Optuna
        return False
    grid = np.linspace(-45.0, 45.0, 181)  # both tails, both series, the cut-offs' sides
    try:
        same = np.allclose(theirs(grid), mine(grid), rtol=1e-6, atol=1e-300)  # 0 or subnormal
    except Exception:  # pragma: no cover - a later Optuna's signature
        return False
    if same:
        _truncnorm._log_ndtr = mine
    return bool(same)


def make_sampler(cfg: SamplerConfig, *, seed: int) -> optuna.samplers.BaseSampler:
    """The configured sampler with every option spelled out (Optuna 5 changed TPE's defaults).

    TPE and NSGA-II take several objectives; both read each trial's constraints (Optuna 5's
    ``Trial.set_constraint``, which the engine sets for every limit, so no ``constraints_func``:
    deprecated in Optuna 5): TPE ranks infeasible trials (complete or refused before training)
    by their total violation, below every feasible one; NSGA-II's constrained domination puts
    feasible trials first.
    """
    if cfg.type == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if cfg.type == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=cfg.population_size)
    fast_log_ndtr()
    options = {
        "seed": seed,
        "n_startup_trials": cfg.n_startup_trials,
        "multivariate": cfg.multivariate,
        "constant_liar": cfg.constant_liar,
    }
    if cfg.history is None:
        return optuna.samplers.TPESampler(**options)  # type: ignore[arg-type]
    return BoundedTPESampler(recent=cfg.history, **options)


class _CompleteTrials:
    """A study whose complete trials are a list read before (every other attribute its own)."""

    def __init__(self, study: optuna.Study, complete: list[optuna.trial.FrozenTrial]) -> None:
        self._study = study
        self._complete = complete

    def __getattr__(self, name: str) -> object:
        return getattr(self._study, name)

    def get_trials(
        self, deepcopy: bool = True, states: object = None
    ) -> list[optuna.trial.FrozenTrial]:
        if states == (optuna.trial.TrialState.COMPLETE,) and not deepcopy:
            return self._complete
        return self._study.get_trials(deepcopy=deepcopy, states=states)  # type: ignore[arg-type]


class PerTrialMedianPruner(optuna.pruners.MedianPruner):
    """Optuna's median pruner, with what it reads of the study kept while it is the same.

    Optuna's reads the complete trials at every ``should_prune`` (every epoch) and computes the
    median at this epoch over all of them: both O(complete trials), ~3 ms per epoch at 10,000
    trials (benchmarks/RESULTS.md, "Growth: 10,000 trials"). Here the complete trials are read
    once per trial, and each epoch's median is kept until a trial completes: complete trials
    never change, so the median of the same complete trials at the same epoch is the same.
    The decisions are Optuna's (``tests/engines/test_optuna.py`` checks them against
    its pruner), except that with several workers a trial completed elsewhere while this trial
    runs counts from the next trial on.
    """

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._for: tuple[int, int] | None = None  # (study id, trial number) read for
        self._complete: list[optuna.trial.FrozenTrial] = []
        self._medians_of: tuple[int, int, int] | None = None  # (study, count, last number)
        self._medians: dict[int, float] = {}  # epoch -> median of the complete trials

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        key = (study._study_id, trial.number)
        if key != self._for:
            states = (optuna.trial.TrialState.COMPLETE,)
            self._complete = study.get_trials(deepcopy=False, states=states)
            self._for = key
            last = self._complete[-1].number if self._complete else -1
            if self._medians_of != (study._study_id, len(self._complete), last):
                self._medians_of = (study._study_id, len(self._complete), last)
                self._medians = {}
        if _percentile_over is None:  # pragma: no cover - a later Optuna: its own rule
            return super().prune(_CompleteTrials(study, self._complete), trial)  # type: ignore[arg-type]
        return self._prune(study, trial)

    def _prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        """Optuna's ``PercentilePruner.prune`` (5.x), with the median at an epoch kept."""
        n_trials = len(self._complete)
        if n_trials == 0 or n_trials < self._n_startup_trials:
            return False
        step = trial.last_step
        if step is None or step < self._n_warmup_steps:
            return False
        if not _first_in_interval(
            step, trial.intermediate_values.keys(), self._n_warmup_steps, self._interval_steps
        ):
            return False
        direction = study.direction
        best = _best_over_steps(trial, direction)
        if math.isnan(best):
            return True
        if step not in self._medians:
            self._medians[step] = _percentile_over(
                self._complete, direction, step, self._percentile, self._n_min_trials
            )
        p = self._medians[step]
        if math.isnan(p):
            return False
        if direction == optuna.study.StudyDirection.MAXIMIZE:
            return bool(best < p)
        return bool(best > p)


def make_pruner(cfg: PrunerConfig, *, max_epochs: int) -> optuna.pruners.BasePruner:
    """The configured pruner; steps are epochs."""
    if cfg.type == "median":
        return PerTrialMedianPruner(
            n_startup_trials=cfg.n_startup_trials, n_warmup_steps=cfg.n_warmup_steps
        )
    if cfg.type == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=cfg.min_resource,
            max_resource=max_epochs,
            reduction_factor=cfg.reduction_factor,
        )
    return optuna.pruners.NopPruner()


def open_study(exp: Experiment) -> optuna.Study:
    """Create the study, or load it if it exists (so the same command resumes it).

    The sampler's seed is offset by the number of trials already in the study, so a resumed
    study does not replay the same random start-up trials, and by the worker index
    ($TUNING_WORKER), so workers started together do not sample the same points.

    Raises:
        ConfigError: if the storage cannot be opened, or the stored study optimizes in the
            other direction.
    """
    directions = [o.direction for o in exp.objectives]
    study = optuna.create_study(
        storage=storage.open_storage(exp),
        study_name=exp.study_name,
        directions=directions,
        load_if_exists=True,
        sampler=optuna.samplers.RandomSampler(),  # replaced below, once the trial count is known
        # Optuna's pruners refuse several objectives (trial.report raises): the engine's own
        # median rule on the primary prunes those (OptunaEngine._epoch_reporter).
        pruner=make_pruner(
            exp.study.pruner if not exp.multi else PrunerConfig(type="none"),
            max_epochs=exp.training.max_epochs,
        ),
    )
    stored = [d.name.lower() for d in study.directions]
    if stored != directions:
        raise ConfigError(
            f"the stored study {exp.study_name!r} has directions {stored}, this experiment's "
            f"objectives {directions}",
            source=exp.source,
            key="objective.direction" if len(stored) == len(directions) == 1 else "objective",
            fix=f"give objectives with directions {stored}, or a new study.name",
        )
    _record_objectives(study, exp)
    base = exp.study.sampler.seed if exp.study.sampler.seed is not None else exp.study.seed
    # Workers started together see the same trial count: their index keeps their seeds apart.
    worker = int(os.environ.get("TUNING_WORKER", "0") or 0)
    n = len(study.get_trials(deepcopy=False))  # study.trials would copy every trial
    study.sampler = make_sampler(exp.study.sampler, seed=base + n + 7919 * worker)
    return study


OBJECTIVES = "tuning.objectives"  # study user attrs: the objectives and limits, for readers
LIMITS = "tuning.limits"
FEASIBLE = "feasible"  # trial user attr: every limit met
CURVE = "primary_curve"  # trial user attr (several objectives): the primary per epoch


def _record_objectives(study: optuna.Study, exp: Experiment) -> None:
    """The study's objectives and limits as study user attrs (readers without the experiment:
    ``tuning show``, the Pareto views); written when they differ from what is stored."""
    objectives = [{"metric": o.metric, "direction": o.direction} for o in exp.objectives]
    attrs = study.user_attrs
    if attrs.get(OBJECTIVES) != objectives:
        study.set_user_attr(OBJECTIVES, objectives)
    if attrs.get(LIMITS, {}) != dict(exp.limits) or (exp.limits and LIMITS not in attrs):
        study.set_user_attr(LIMITS, dict(exp.limits))


def _fmt(value: float) -> str:
    """A figure for a terminal line: whole numbers with separators, others to 4 digits."""
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:.4g}"


def feasible_trial(t: optuna.trial.FrozenTrial) -> bool:
    """Whether a trial met every limit (its constraints <= 0; no limits: always)."""
    return all(v <= 0 for v in t.constraints.values())


class OptunaEngine(Engine):
    """One job's trials in an Optuna study (see :class:`~tuning.engines.base.Engine`)."""

    name = "optuna"

    def __init__(self, ctx: JobContext) -> None:
        super().__init__(ctx)
        self.study: optuna.Study | None = None
        self.numbers: set[int] = set()  # this job's trials (other workers add theirs)
        self.search_start = 0.0
        self._best_of: tuple[int, int, int] | None = None  # what _best_kept was found among
        self._best_kept: optuna.trial.FrozenTrial | None = None

    def open(self) -> str:
        exp, ctx = self.ctx.exp, self.ctx
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.study = study = open_study(exp)
        closed = self._sweep(study, max_retries=exp.study.max_retries)
        for name in lineage.earlier_versions(study._storage, exp.study_base, study.study_name):
            # A job killed in a version that a later job replaced: no job runs it any more.
            earlier = optuna.load_study(study_name=name, storage=study._storage)
            closed += self._sweep(earlier, max_retries=0)
        if closed:
            ctx.say(f"ended {closed} MLflow run(s) left RUNNING by a process that died")
        n = len(study.get_trials(deepcopy=False))  # study.trials copies every trial
        return (
            f"study {exp.study_name!r} ({f'resumed with {n} trials' if n else 'new'}, "
            f"{redact(exp.study.storage)})"
        )

    def _sweep(self, study: optuna.Study, *, max_retries: int) -> int:
        """Fail the trials of ``study`` whose process died (at once on this host; by heartbeat
        elsewhere), and end their MLflow runs and their jobs' parent runs KILLED.

        Returns:
            How many MLflow runs were ended.
        """
        died = storage.fail_dead_trials(study, max_retries=max_retries)
        if died:
            numbers = ", ".join(map(str, died))
            of = f" of {study.study_name!r}" if study is not self.study else ""
            self.ctx.say(f"marked trial(s) {numbers}{of} FAIL: their process on this host died")
        if self.ctx.exp.study.heartbeat_interval:
            optuna.storages.fail_stale_trials(study)
        TrialState = optuna.trial.TrialState
        trials = study.get_trials(deepcopy=False)
        dead = {t.number: t.state.name for t in trials if t.state != TrialState.RUNNING}
        # A process can end a trial's run FINISHED and die (or lose the study storage) before
        # Optuna hears the result; Optuna then fails the trial. Those runs are looked up once:
        # for FAIL trials from the lowest number that was unfinished at the last sweep on.
        seen = study._storage.get_study_system_attrs(study._study_id)
        mark = int(seen.get(_RECONCILED_FROM, 0))
        failed = [t.number for t in trials if t.state == TrialState.FAIL and t.number >= mark]
        unfinished = [t.number for t in trials if not t.state.is_finished()]
        tracker, name = self.ctx.tracker, study.study_name
        closed = tracker.close_orphans(dead, study=name, finished_but_failed=failed)
        closed += tracker.close_dead_jobs(study=name)
        study._storage.set_study_system_attr(
            study._study_id, _RECONCILED_FROM, min(unfinished, default=len(trials))
        )
        return closed

    def search(self) -> None:
        assert self.study is not None, "open() first"
        ctx = self.ctx
        deadline = ctx.deadline
        self.search_start = time.perf_counter()
        self.study.optimize(
            self.objective,
            n_trials=ctx.exp.study.n_trials,
            timeout=max(deadline - time.perf_counter(), 1e-3) if deadline else None,
            catch=(TrialFailed,),
            callbacks=[self.after_trial],
            gc_after_trial=False,  # the trainer frees the Keras session before each build
            show_progress_bar=ctx.progress,
        )

    def objective(self, trial: optuna.Trial) -> float:
        """Suggest, then run the configuration with per-epoch reports; the trial's value is its
        best epoch's. The trial records its process, fixed values, run, backend and figures."""
        # First: so a job started after this process dies can tell the trial is dead.
        records.record_process(trial, process.identity())
        params = self.ctx.exp.space.suggest(trial)
        records.record_fixed(trial, params, self.ctx.exp.space.specs)
        self.numbers.add(trial.number)

        opened_run: list[TrialRun] = []

        def opened(run: TrialRun) -> None:
            opened_run.append(run)
            trial.set_user_attr(records.MLFLOW_RUN_ID, run.run_id)
            trial.set_user_attr(records.BACKEND, backend.current() or "")

        def ended(result: TrialResult) -> None:
            trial.set_user_attr(records.EPOCHS_TRAINED, result.epochs)
            trial.set_user_attr(records.TRAIN_SECONDS, round(result.seconds, 3))
            if result.n_params is not None:
                trial.set_user_attr(records.N_PARAMS, result.n_params)
            if result.fit is not None and result.fit.stopped:
                trial.set_user_attr(records.CUT, result.fit.stopped)
            if result.fit is not None and self.ctx.runner.judged:
                self._judged(trial, result)

        try:
            result = self.ctx.runner.run(
                params,
                number=trial.number,
                hooks=[self._epoch_reporter(trial)],
                on_open=opened,
                on_end=ended,
                keep_state=self._keep_state(),
                on_built=self._refuse_over(trial, opened_run),
            )
        except NotLearning as e:  # PRUNED, told apart by its attribute (see the module's doc)
            trial.set_user_attr(records.NOT_LEARNING, str(e))
            trial.set_user_attr(records.REASON, str(e))
            raise optuna.TrialPruned(str(e)) from e
        except (optuna.TrialPruned, Exception, KeyboardInterrupt) as e:
            pruned = isinstance(e, optuna.TrialPruned)
            reason = str(e) if pruned else f"{type(e).__name__}: {e}"[:1000]
            trial.set_user_attr(records.REASON, reason)
            raise
        assert result.value is not None  # the fit returned
        if not self.ctx.exp.multi:
            return float(result.value)
        values = [float(result.value)]
        values += [float(result.figures[o.metric]) for o in self.ctx.exp.objectives[1:]]
        return values  # type: ignore[return-value]  # optuna takes a sequence with directions

    def _refuse_over(
        self, trial: optuna.Trial, opened_run: list[TrialRun]
    ) -> Callable[[TrialResult], None] | None:
        """The hook that refuses a built model over an ``n_params`` limit before it trains.

        The trial ends PRUNED, its reason says by how much it was over, and its constraint
        (``n_params - limit`` > 0) is set: TPE counts it among the infeasible trials, ranked by
        how far over they are, which steers it away from such sizes (a PRUNED trial without a
        constraint would weigh nothing in a multi-objective TPE); NSGA-II ignores it.
        """
        limit = self.ctx.exp.limits.get("n_params")
        if limit is None:
            return None

        def refuse(result: TrialResult) -> None:
            n = result.n_params
            assert n is not None
            if n <= limit:
                return
            trial.set_user_attr(records.N_PARAMS, n)
            trial.set_user_attr(FEASIBLE, False)
            trial.set_constraint("n_params", n - limit)
            if opened_run:
                opened_run[0].set_tags({"feasible": "false"})
            raise optuna.TrialPruned(
                f"refused before training: n_params {n:,} over the limit {limit:,.0f}"
            )

        return refuse

    def _judged(self, trial: optuna.Trial, result: TrialResult) -> None:
        """A trained trial's measures and limits on the study: user attrs (``n_params``,
        ``model_bytes``, ``latency_ms``, ``feasible``), a constraint per limit."""
        for name in ("model_bytes", "latency_ms"):
            if name in result.figures:
                trial.set_user_attr(name, result.figures[name])
        trial.set_user_attr(FEASIBLE, result.feasible)
        for name, over in result.over.items():
            trial.set_constraint(name, over)

    def _keep_state(self) -> KeepState | None:
        """What the runner saves to continue later: a trial cut by its slice of the budget or
        the deadline, when the re-check can continue it (``study.recheck_top`` of 2 or more,
        ``study.continue_trials``), only while it is among the ``recheck_top`` best cut ones.
        A pruned trial keeps nothing: Optuna's pruners never promote a pruned trial (Optuna's
        ``HyperbandPruner`` only stops trials at rungs; no trial resumes)."""
        study = self.ctx.exp.study
        if not study.continue_trials or study.recheck_top < 2:
            return None
        return KeepState(when=lambda fit: fit.stopped is not None, top=study.recheck_top)

    def continued(self, number: int, result: TrialResult) -> None:
        """Record a continued trial's new value on the study (a finished trial's value cannot
        change in Optuna): the study's user attribute ``trial_<n>_resumed_value``, and
        ``trial_<n>_resumed_epochs``."""
        if self.study is None or result.value is None:
            return
        self.study.set_user_attr(f"trial_{number}_resumed_value", float(result.value))
        self.study.set_user_attr(f"trial_{number}_resumed_epochs", result.epochs)

    def _epoch_reporter(self, trial: optuna.Trial) -> EpochHook:
        """The epoch-end hook: report to Optuna, prune, stop at the deadline or the slice's end
        (the runner has logged the epoch to MLflow and checked for a stop)."""
        exp, deadline = self.ctx.exp, self.ctx.deadline
        monitor = exp.objective.metric
        slice_end = self._slice_end()

        curve: list[float] = []

        def report_epoch(epoch: int, logs: Mapping[str, float]) -> None:
            value = logs.get(monitor)
            if value is None or not is_finite(value):
                return  # fit() turns a missing or NaN objective into TrialFailed
            if exp.multi:
                curve.append(float(value))
                trial.set_user_attr(CURVE, curve)
                prune = self._median_rule(trial, curve)
            else:
                trial.report(float(value), epoch)
                prune = trial.should_prune()
            if prune:
                raise optuna.TrialPruned(
                    f"pruned after epoch {epoch + 1} with {monitor}={value:.4g}"
                )
            if deadline is not None and time.perf_counter() >= deadline:
                # A trained model with a real score: the fit ends with its best weights.
                # With a re-check, the search's deadline is before the job's (RECHECK_SHARE).
                search = " (the search's share)" if exp.study.recheck_top else ""
                raise StopTraining(
                    f"cut after epoch {epoch + 1} at the job's time budget "
                    f"({exp.study.timeout:g}s){search}"
                )
            if slice_end is not None and time.perf_counter() >= slice_end:
                raise StopTraining(
                    f"cut after epoch {epoch + 1} at its share of the time budget "
                    f"(1/{exp.study.min_configs})"
                )

        return report_epoch

    def _median_rule(self, trial: optuna.Trial, curve: list[float]) -> bool:
        """The pruning rule with several objectives (Optuna's pruners refuse them): Optuna's
        median rule, on the primary objective alone. After ``pruner.n_warmup_steps`` epochs,
        once ``pruner.n_startup_trials`` trials have finished (complete or pruned) with a
        recorded curve reaching this epoch, the trial is pruned when its best primary value so
        far is worse than the median of theirs at the same epoch. ``pruner: none`` never
        prunes."""
        cfg, objective = self.ctx.exp.study.pruner, self.ctx.exp.objective
        epoch = len(curve) - 1
        if cfg.type != "median" or epoch < cfg.n_warmup_steps:
            return False
        assert self.study is not None
        finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        others = [
            objective.best(c[: epoch + 1])
            for t in self.study.get_trials(deepcopy=False, states=finished)
            if t.number != trial.number
            and isinstance(c := t.user_attrs.get(CURVE), list)
            and len(c) > epoch
        ]
        if len(others) < max(cfg.n_startup_trials, 1):
            return False
        ranked = sorted(others, key=objective.sort_key)
        median = ranked[(len(ranked) - 1) // 2] if len(ranked) % 2 else (
            (ranked[len(ranked) // 2 - 1] + ranked[len(ranked) // 2]) / 2
        )  # fmt: skip
        return objective.better(median, objective.best(curve))

    def _slice_end(self) -> float | None:
        """When this trial's share of a time budget ends: ``1/min_configs`` of the search's
        time, so a budgeted job compares at least ``min_configs`` configurations (the pruner
        and early stopping end many sooner); ``None`` without a budget."""
        ctx, n = self.ctx, self.ctx.exp.study.min_configs
        if ctx.deadline is None or not n:
            return None
        return time.perf_counter() + (ctx.deadline - self.search_start) / n

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """Optuna's trial-end callback: the trial's terminal line, then a requested stop."""
        state = records.state(trial)
        attrs = trial.user_attrs
        top = self._best()
        if top is None:
            best = "no feasible complete trial yet" if self.ctx.exp.limits else (
                "no complete trial yet"
            )  # fmt: skip
        else:
            best = f"best {top.values[0]:.4f} (#{top.number})"
        reason = attrs.get(records.REASON if state != "complete" else records.CUT, "")
        if self.ctx.runner.judged and state == "complete":
            shown = ", ".join(
                f"{o.metric}={_fmt(trial.values[i])}"
                for i, o in enumerate(self.ctx.exp.objectives)
                if i > 0
            )
            feasible = "feasible" if feasible_trial(trial) else "over " + ", ".join(
                k for k, v in trial.constraints.items() if v > 0
            )  # fmt: skip
            reason = "; ".join(x for x in (shown, feasible, reason) if x)
        line = trial_line(
            trial.number,
            state,
            metric=self.ctx.exp.objective.metric,
            value=trial.values[0] if trial.values else None,
            epochs=attrs.get(records.EPOCHS_TRAINED, 0),
            seconds=attrs.get(records.TRAIN_SECONDS, 0.0),
            best=best,
            reason=reason,
        )
        self.ctx.say(line)
        check_stop()

    def outcome(self) -> Outcome:
        study = self.study
        if study is None:
            return Outcome(counts={}, added={})
        trials = study.get_trials(deepcopy=False)
        counts = report.state_counts(trials)
        added = {k: 0 for k in counts}
        for t in trials:  # this job's own trials, not other workers'
            if t.number in self.numbers:
                added[records.state(t)] += 1
        best = self._best()
        if best is None:
            return Outcome(counts=counts, added=added)
        return Outcome(
            counts=counts,
            added=added,
            best_trial=best.number,
            best_value=best.values[0],
            best_params=records.params(best),
            best_run_id=records.run_id(best),
        )

    def _feasible_ranked(
        self, done: list[optuna.trial.FrozenTrial] | None = None
    ) -> list[optuna.trial.FrozenTrial]:
        """Complete trials meeting every limit (of ``done``, the complete trials read before,
        if given), best first by the primary objective."""
        if self.study is None:
            return []
        if done is None:
            states = (optuna.trial.TrialState.COMPLETE,)
            done = self.study.get_trials(deepcopy=False, states=states)
        done = [t for t in done if feasible_trial(t)]
        return self.ctx.exp.objective.ranked(done, lambda t: float(t.values[0]))

    def _best(self) -> optuna.trial.FrozenTrial | None:
        """The best feasible complete trial by the primary objective (Optuna's ``best_trial``
        with one objective, where ties keep the earliest).

        Asked after every trial: kept while the complete trials are the same ones (complete
        trials never change; most trials of a long study are pruned), so a trial that adds
        none costs one read, not a pass over thousands."""
        if self.study is None:
            return None
        done = self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        key = (self.study._study_id, len(done), done[-1].number if done else -1)
        if key != self._best_of:
            ranked = self._feasible_ranked(done)
            self._best_kept = ranked[0] if ranked else None
            self._best_of = key
        return self._best_kept

    def ranked(self, k: int) -> list[Ranked]:
        return [
            Ranked(t.number, float(t.values[0]), records.params(t), records.run_id(t))
            for t in self._feasible_ranked()[:k]
        ]

    def reports(self, out_dir: Path) -> list[Path]:
        if self.study is None:
            return []
        return report.write_job_reports(
            self.study,
            histories=self.ctx.runner.histories,
            metric=self.ctx.exp.objective.metric,
            out_dir=out_dir,
        )

    def summary_lines(self) -> list[str]:
        if self.study is not None and pareto.is_multi(self.study):  # several objectives
            return pareto.Front.of(self.study).lines(top=10)
        return report.results_table(self.study, top=5) if self.study is not None else []

    def summary_markdown(self, *, test_scores: dict[str, float], seconds: float) -> str | None:
        if self.study is None:
            return None
        return report.summary_markdown(
            self.study,
            metric=self.ctx.exp.objective.metric,
            job_trials=self.ctx.runner.trials_run,
            test_scores=test_scores,
            seconds=seconds,
        )
