"""The Optuna engine: a resumable study, named samplers and pruners, an objective pruned per epoch.

Owns the Optuna side of a job: the study in ``study.storage`` (always ``load_if_exists``, so the
same command resumes it; its sampler seeded apart per resume and per worker), dead trials failed
before new ones start, the sampler and pruner the experiment names, and the objective that ties
a trial to the parts: ``SearchSpace.suggest`` -> the job's ``TrialRunner.run``, with a hook that
reports every epoch to Optuna (pruning, the job's deadline, the trial's slice of the budget),
and the trial's records in the study (``tuning.records``). A trial's problem
(:class:`~tuning.errors.TrialFailed`) fails that trial and the study goes on.
"""

from __future__ import annotations

import heapq
import os
import time
from collections.abc import Mapping
from pathlib import Path

import optuna

from tuning import backend, lineage, process, records, report, storage
from tuning.config import Experiment, PrunerConfig, SamplerConfig, redact
from tuning.engines.base import Engine, JobContext, Outcome, Ranked, check_stop
from tuning.errors import ConfigError, StopTraining, TrialFailed
from tuning.summary import trial_line
from tuning.tracking import TrialRun
from tuning.train import EpochHook
from tuning.trial import TrialResult, is_finite

__all__ = [
    "BoundedTPESampler",
    "OptunaEngine",
    "PerTrialMedianPruner",
    "make_pruner",
    "make_sampler",
    "open_study",
]


TPE_BEST = 25  # Optuna's TPE models at most 25 trials as "good" (default_gamma's cap)


class _HistoryView:
    """A study as TPE sees it with a bounded history: every attribute the study's own, but its
    trials only the best :data:`TPE_BEST` complete ones and the most recent ``recent``."""

    def __init__(self, study: optuna.Study, recent: int) -> None:
        self._study = study
        self._recent = recent

    def __getattr__(self, name: str) -> object:
        return getattr(self._study, name)

    def _get_trials(
        self, deepcopy: bool = True, states: object = None, use_cache: bool = False
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

    def _sample(
        self,
        study: optuna.Study,
        trial: optuna.trial.FrozenTrial,
        search_space: dict[str, optuna.distributions.BaseDistribution],
    ) -> dict[str, object]:
        if study._is_multi_objective():
            return super()._sample(study, trial, search_space)
        view = _HistoryView(study, self.recent)
        return super()._sample(view, trial, search_space)  # type: ignore[arg-type]


def make_sampler(cfg: SamplerConfig, *, seed: int) -> optuna.samplers.BaseSampler:
    """The configured sampler with every option spelled out (Optuna 5 changed TPE's defaults)."""
    if cfg.type == "random":
        return optuna.samplers.RandomSampler(seed=seed)
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
    """Optuna's median pruner, reading the study's complete trials once per trial.

    Optuna's reads them at every ``should_prune`` (every epoch), and that read is O(trials):
    12 ms per call at 10,000 trials (benchmarks/RESULTS.md, "Growth: 10,000 trials"). Here a
    trial's later epochs compare with the complete trials as they were at its first report;
    in one process no trial completes meanwhile, so the decisions are Optuna's own. With
    several workers a trial completed elsewhere during this trial counts from the next one.
    """

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._for: tuple[int, int] | None = None  # (study id, trial number) read for
        self._complete: list[optuna.trial.FrozenTrial] = []

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        key = (study._study_id, trial.number)
        if key != self._for:
            states = (optuna.trial.TrialState.COMPLETE,)
            self._complete = study.get_trials(deepcopy=False, states=states)
            self._for = key
        return super().prune(_CompleteTrials(study, self._complete), trial)  # type: ignore[arg-type]


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
    study = optuna.create_study(
        storage=storage.open_storage(exp),
        study_name=exp.study_name,
        direction=exp.objective.direction,
        load_if_exists=True,
        sampler=optuna.samplers.RandomSampler(),  # replaced below, once the trial count is known
        pruner=make_pruner(exp.study.pruner, max_epochs=exp.training.max_epochs),
    )
    stored = study.direction.name.lower()
    if stored != exp.objective.direction:
        raise ConfigError(
            f"the stored study {exp.study_name!r} is {stored}d, this experiment "
            f"{exp.objective.direction}s",
            source=exp.source,
            key="objective.direction",
            fix=f"set direction: {stored}, or give a new study.name",
        )
    base = exp.study.sampler.seed if exp.study.sampler.seed is not None else exp.study.seed
    # Workers started together see the same trial count: their index keeps their seeds apart.
    worker = int(os.environ.get("TUNING_WORKER", "0") or 0)
    study.sampler = make_sampler(exp.study.sampler, seed=base + len(study.trials) + 7919 * worker)
    return study


class OptunaEngine(Engine):
    """One job's trials in an Optuna study (see :class:`~tuning.engines.base.Engine`)."""

    name = "optuna"

    def __init__(self, ctx: JobContext) -> None:
        super().__init__(ctx)
        self.study: optuna.Study | None = None
        self.numbers: set[int] = set()  # this job's trials (other workers add theirs)
        self.search_start = 0.0

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
        n = len(study.trials)
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
        dead = {
            t.number: t.state.name
            for t in study.get_trials(deepcopy=False)
            if t.state != optuna.trial.TrialState.RUNNING
        }
        tracker, name = self.ctx.tracker, study.study_name
        return tracker.close_orphans(dead, study=name) + tracker.close_dead_jobs(study=name)

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

        def opened(run: TrialRun) -> None:
            trial.set_user_attr(records.MLFLOW_RUN_ID, run.run_id)
            trial.set_user_attr(records.BACKEND, backend.current() or "")

        def ended(result: TrialResult) -> None:
            trial.set_user_attr(records.EPOCHS_TRAINED, result.epochs)
            trial.set_user_attr(records.TRAIN_SECONDS, round(result.seconds, 3))
            if result.n_params is not None:
                trial.set_user_attr(records.N_PARAMS, result.n_params)
            if result.fit is not None and result.fit.stopped:
                trial.set_user_attr(records.CUT, result.fit.stopped)

        try:
            result = self.ctx.runner.run(
                params,
                number=trial.number,
                hooks=[self._epoch_reporter(trial)],
                on_open=opened,
                on_end=ended,
            )
        except (optuna.TrialPruned, Exception, KeyboardInterrupt) as e:
            pruned = isinstance(e, optuna.TrialPruned)
            reason = str(e) if pruned else f"{type(e).__name__}: {e}"[:1000]
            trial.set_user_attr(records.REASON, reason)
            raise
        assert result.value is not None  # the fit returned
        return float(result.value)

    def _epoch_reporter(self, trial: optuna.Trial) -> EpochHook:
        """The epoch-end hook: report to Optuna, prune, stop at the deadline or the slice's end
        (the runner has logged the epoch to MLflow and checked for a stop)."""
        exp, deadline = self.ctx.exp, self.ctx.deadline
        monitor = exp.objective.metric
        slice_end = self._slice_end()

        def report_epoch(epoch: int, logs: Mapping[str, float]) -> None:
            value = logs.get(monitor)
            if value is None or not is_finite(value):
                return  # fit() turns a missing or NaN objective into TrialFailed
            trial.report(float(value), epoch)
            if trial.should_prune():
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
        state = trial.state.name.lower()
        attrs = trial.user_attrs
        try:
            best = f"best {study.best_value:.4f} (#{study.best_trial.number})"
        except ValueError:
            best = "no complete trial yet"
        line = trial_line(
            trial.number,
            state,
            metric=self.ctx.exp.objective.metric,
            value=trial.value,
            epochs=attrs.get(records.EPOCHS_TRAINED, 0),
            seconds=attrs.get(records.TRAIN_SECONDS, 0.0),
            best=best,
            reason=attrs.get(records.REASON if state != "complete" else records.CUT, ""),
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
                added[t.state.name.lower()] += 1
        try:
            best = study.best_trial
        except ValueError:
            return Outcome(counts=counts, added=added)
        return Outcome(
            counts=counts,
            added=added,
            best_trial=best.number,
            best_value=best.value,
            best_params=records.params(best),
            best_run_id=records.run_id(best),
        )

    def ranked(self, k: int) -> list[Ranked]:
        if self.study is None:
            return []
        done = self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        done = self.ctx.exp.objective.ranked(done, lambda t: float(t.value))  # type: ignore[arg-type]
        return [
            Ranked(t.number, float(t.value), records.params(t), records.run_id(t))  # type: ignore[arg-type]
            for t in done[:k]
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
