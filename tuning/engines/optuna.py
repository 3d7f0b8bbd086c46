"""The Optuna engine: a resumable study, named samplers and pruners, an objective pruned per epoch.

Owns the Optuna side of a job: the study in ``study.storage`` (always ``load_if_exists``, so the
same command resumes it; its sampler seeded apart per resume and per worker), dead trials failed
before new ones start, the sampler and pruner the experiment names, and the objective that ties
a trial to the parts: ``SearchSpace.suggest`` -> ``Trainer.build`` -> ``Trainer.train``, with
every epoch reported to Optuna (pruning, the job's deadline) and to the trial's MLflow run. A
trial's problem (:class:`~tuning.errors.TrialFailed`) fails that trial and the study goes on.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path

import optuna

from tuning import backend, process, report, storage
from tuning.config import Experiment, PrunerConfig, SamplerConfig, redact
from tuning.engines.base import Engine, JobContext, Outcome, Ranked, check_stop
from tuning.errors import ConfigError, StopTraining, TrialFailed
from tuning.tracking import TrialRun
from tuning.train import EpochHook
from tuning.trial import Params, is_finite

__all__ = ["OptunaEngine", "make_pruner", "make_sampler", "open_study"]


def make_sampler(cfg: SamplerConfig, *, seed: int) -> optuna.samplers.BaseSampler:
    """The configured sampler with every option spelled out (Optuna 5 changed TPE's defaults)."""
    if cfg.type == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(
        seed=seed,
        n_startup_trials=cfg.n_startup_trials,
        multivariate=cfg.multivariate,
        constant_liar=cfg.constant_liar,
    )


def make_pruner(cfg: PrunerConfig, *, max_epochs: int) -> optuna.pruners.BasePruner:
    """The configured pruner; steps are epochs."""
    if cfg.type == "median":
        return optuna.pruners.MedianPruner(
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


def _params(trial: optuna.trial.FrozenTrial) -> dict[str, object]:
    """A trial's hyperparameters with the fixed values of its space (kept as user attrs)."""
    params: dict[str, object] = {**trial.params}
    params.update(
        {
            k.removeprefix("fixed."): v
            for k, v in trial.user_attrs.items()
            if k.startswith("fixed.")
        }
    )
    return params


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
        died = storage.fail_dead_trials(study, max_retries=exp.study.max_retries)
        if died:
            numbers = ", ".join(map(str, died))
            ctx.say(f"marked trial(s) {numbers} FAIL: their process on this host died")
        if exp.study.heartbeat_interval:
            optuna.storages.fail_stale_trials(study)
        dead = {
            t.number: t.state.name
            for t in study.get_trials(deepcopy=False)
            if t.state != optuna.trial.TrialState.RUNNING
        }
        closed = ctx.tracker.close_orphans(dead) + ctx.tracker.close_dead_jobs()
        if closed:
            ctx.say(f"ended {closed} MLflow run(s) left RUNNING by a process that died")
        n = len(study.trials)
        return (
            f"study {exp.study_name!r} ({f'resumed with {n} trials' if n else 'new'}, "
            f"{redact(exp.study.storage)})"
        )

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
        """Suggest, build, train with per-epoch reports; the trial's value is its best epoch's."""
        # First: so a job started after this process dies can tell the trial is dead.
        trial.set_user_attr("process", {**process.identity(), "trial": trial.number})
        ctx, exp = self.ctx, self.ctx.exp
        params = exp.space.suggest(trial)
        for name in exp.space.specs:
            if name in params and name not in trial.params:  # fixed values: keep them on the trial
                trial.set_user_attr(f"fixed.{name}", params[name])
        trainer = ctx.trainer
        trainer.trials_run += 1
        self.numbers.add(trial.number)
        logged = trainer.logged_params(params)
        with ctx.tracker.trial_run(ctx.parent, number=trial.number, params=logged) as run:
            trial.set_user_attr("mlflow_run_id", run.run_id)
            trial.set_user_attr("backend", backend.current() or "")
            return self._train(trial, params, run)

    def _train(self, trial: optuna.Trial, params: Params, run: TrialRun) -> float:
        trainer, exp = self.ctx.trainer, self.ctx.exp
        started = time.perf_counter()
        n_params = None
        try:
            max_epochs = exp.training.max_epochs
            model = trainer.build(params, number=trial.number, max_epochs=max_epochs)
            n_params = int(model.count_params())
            on_epoch = self._epoch_reporter(trial, run)
            result = trainer.train(model, params, max_epochs=max_epochs, on_epoch=on_epoch)
            trainer.histories[trial.number] = result.history
            if result.stopped:  # COMPLETE with the value it reached, tagged as cut
                trial.set_user_attr("cut", result.stopped)
                run.set_tags({"cut": result.stopped})
            run.log_metrics({"objective": result.value, "best_epoch": result.best_epoch})
            trainer.keep_if_best(model, result.value, trial.number)
            return float(result.value)
        except (optuna.TrialPruned, Exception, KeyboardInterrupt) as e:
            pruned = isinstance(e, optuna.TrialPruned)
            reason = str(e) if pruned else f"{type(e).__name__}: {e}"[:1000]
            trial.set_user_attr("reason", reason)
            raise
        finally:
            seconds = time.perf_counter() - started
            trial.set_user_attr("epochs_trained", run.epochs)
            trial.set_user_attr("train_seconds", round(seconds, 3))
            if n_params is not None:
                trial.set_user_attr("n_params", n_params)
            run.log_metrics(
                {"epochs_trained": run.epochs, "n_params": n_params, "train_seconds": seconds}
            )

    def _epoch_reporter(self, trial: optuna.Trial, run: TrialRun) -> EpochHook:
        """The epoch-end hook: log to MLflow, report to Optuna, prune, stop at the deadline."""
        exp, deadline = self.ctx.exp, self.ctx.deadline
        monitor = exp.objective.metric
        slice_end = self._slice_end()

        def report_epoch(epoch: int, logs: Mapping[str, float]) -> None:
            check_stop()
            run.log_epoch(epoch, logs)
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
        metric = self.ctx.exp.objective.metric
        value = f"{metric}={trial.value:.4f}" if trial.value is not None else ""
        reason = trial.user_attrs.get("reason" if state != "complete" else "cut", "")
        try:
            best = f"best {study.best_value:.4f} (#{study.best_trial.number})"
        except ValueError:
            best = "no complete trial yet"
        epochs = trial.user_attrs.get("epochs_trained", 0)
        secs = trial.user_attrs.get("train_seconds", 0.0)
        self.ctx.say(
            f"trial {trial.number:>3} {state:<8} {value} epochs={epochs} {secs:.1f}s  {best}"
            + (f"  [{reason}]" if reason else "")
        )
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
            best_params=_params(best),
            best_run_id=str(best.user_attrs.get("mlflow_run_id", "")),
        )

    def ranked(self, k: int) -> list[Ranked]:
        if self.study is None:
            return []
        done = self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        minimize = self.study.direction == optuna.study.StudyDirection.MINIMIZE
        done = sorted(done, key=lambda t: t.value if minimize else -t.value)  # type: ignore[operator]
        return [
            Ranked(
                t.number, float(t.value), _params(t), str(t.user_attrs.get("mlflow_run_id", ""))
            )  # type: ignore[arg-type]
            for t in done[:k]
        ]

    def reports(self, out_dir: Path) -> list[Path]:
        if self.study is None:
            return []
        return report.write_job_reports(
            self.study,
            histories=self.ctx.trainer.histories,
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
            job_trials=self.ctx.trainer.trials_run,
            test_scores=test_scores,
            seconds=seconds,
        )
