"""Running a job: open or resume the Optuna study, run trials, record everything, end cleanly.

Owns the Optuna side (storage with heartbeat, named samplers and pruners, ``load_if_exists``
always, the ``n_trials`` / ``timeout`` budget of one job) and the objective that ties a trial to
the parts: ``space.suggest`` -> ``model.build_model`` -> ``train.fit``, with every epoch
reported to Optuna (pruning) and to the trial's MLflow run. Trial-level problems
(:class:`TrialFailed`) fail the trial and the study goes on; anything else stops the job, and
every run is still ended.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import os
import sqlite3
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna

from tuning import backend
from tuning.config import Experiment, PrunerConfig, SamplerConfig, check_objective_for, redact
from tuning.errors import ConfigError, TrackingLost, TrialFailed

__all__ = ["JobResult", "make_pruner", "make_sampler", "open_study", "run_job"]

Say = Callable[[str], None]

# Set by the command line's SIGTERM handler. The handler also raises KeyboardInterrupt at once;
# this flag makes the job stop at the next epoch or trial end even where a library swallowed it.
STOP = threading.Event()


def _check_stop() -> None:
    if STOP.is_set():
        raise KeyboardInterrupt("stop requested (SIGTERM)")


# Heartbeats are experimental in Optuna 5 but are what marks a dead worker's trial FAIL.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


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


class SharedSQLite(sqlite3.Connection):
    """A connection to a SQLite study file that several jobs or workers write at once.

    WAL journal: readers do not wait for the writer, and each commit appends to one log file;
    ``synchronous=NORMAL``: the log is synced at checkpoints, not at every commit (a power cut
    may undo the last commits, never corrupt the file). Measured with 8 workers on one study:
    benchmarks/RESULTS.md, "Workers". WAL needs every process on the same machine, as SQLite
    does anyway.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.execute("PRAGMA journal_mode=WAL")  # kept in the file; cheap once it is set
        self.execute("PRAGMA synchronous=NORMAL")


def open_study(exp: Experiment) -> optuna.Study:
    """Create the study, or load it if it exists (so the same command resumes it).

    The sampler's seed is offset by the number of trials already in the study, so a resumed
    study does not replay the same random start-up trials, and by the worker index
    ($TUNING_WORKER), so workers started together do not sample the same points.

    Raises:
        ConfigError: if the storage cannot be opened, or the stored study optimizes in the
            other direction.
    """
    url = exp.study.storage
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60, "factory": SharedSQLite}}
    hb = exp.study.heartbeat_interval
    try:
        retry = (
            optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=exp.study.max_retries)
            if hb and exp.study.max_retries
            else None
        )
        storage = optuna.storages.RDBStorage(
            url,
            heartbeat_interval=hb,
            grace_period=2 * hb if hb else None,
            heartbeat_stale_trial_callback=retry,
            **kwargs,
        )
    except Exception as e:  # driver missing, server down, bad credentials
        raise ConfigError(
            f"cannot open the study storage {redact(url)} ({type(e).__name__}: "
            f"{' '.join(str(e).split())[:200]})",
            source=exp.source,
            key="study.storage",
            fix="check the URL, that the database server runs and its driver is installed",
        ) from e
    study = optuna.create_study(
        storage=storage,
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


@dataclasses.dataclass
class JobResult:
    """What one job did."""

    study_name: str
    parent_run_id: str
    experiment_id: str
    tracking_uri: str
    trials_run: int
    counts: dict[str, int]
    best_value: float | None
    best_trial: int | None
    best_params: dict[str, Any]
    model_uri: str | None
    seconds: float
    status: str
    champion: Any = None
    timings: dict[str, float] = dataclasses.field(default_factory=dict)


def compile_seconds(fit_start: float, hooks: list[tuple[float, float]]) -> float:
    """Seconds the first epoch took above the median epoch: tracing and compiling the model.

    Both backends compile a new model's train and test steps during its first epoch (XLA on
    JAX, ``tf.function`` on TensorFlow), so the first epoch's excess over a typical epoch is
    the compile time, measured the same way on every backend. ``hooks`` holds the start and
    end of each epoch-end hook, whose time is not the epochs'. Needs two epochs; else 0.
    """
    if len(hooks) < 2:
        return 0.0
    ends = [fit_start, *(end for _, end in hooks)]
    durations = [start - end for (start, _), end in zip(hooks, ends, strict=False)]
    rest = sorted(durations[1:])
    return max(durations[0] - rest[len(rest) // 2], 0.0)


def _finite(v: Any) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def _counts(study: optuna.Study) -> dict[str, int]:
    from tuning.report import state_counts

    return state_counts(study.get_trials(deepcopy=False))


def validate_job(exp: Experiment) -> tuple[Any, str]:
    """Everything that can be checked before creating anything: data, objective, tracking store.

    Returns:
        The loaded dataset and the tracking URI to use.

    Raises:
        ConfigError: naming the file, key and fix of the first problem.
    """
    backend.prepare_environment()
    backend.select(exp.training.backend, source=exp.source)
    from tuning import tracking
    from tuning.data import load_dataset

    ds = exp.dataset
    try:
        data = load_dataset(
            ds.name,
            validation=ds.validation,
            test=ds.test,
            seed=ds.seed,
            path=ds.path,
            target=tuple(ds.target) if isinstance(ds.target, list) else ds.target,
            features=tuple(ds.features) if ds.features is not None else None,
            drop=tuple(ds.drop),
            categorical=tuple(ds.categorical),
            impute=ds.impute,
            task=ds.task,
        )
    except ConfigError as e:
        raise e.with_source(exp.source) from e
    check_objective_for(exp, data.task)
    uri = tracking.resolve_tracking_uri(exp.tracking.uri)
    tracking.check_tracking_uri(uri, source=exp.source)
    return data, uri


def open_job(exp: Experiment, **tags: Any) -> tuple[Any, str, Any, Any]:
    """Validate, then open the MLflow experiment and this job's parent run (either engine).

    Returns:
        The dataset, the tracking URI, the Tracker and the parent run.
    """
    from tuning import tracking

    data, uri = validate_job(exp)
    device = backend.configure()
    from tuning.train import settle_heap

    settle_heap()
    tracker = tracking.Tracker(uri=uri, experiment=exp.mlflow_experiment, study=exp.study_name)
    parent = tracker.start_parent(
        run_name=f"{exp.study_name}-{time.strftime('%Y%m%d-%H%M%S')}",
        tags={
            "objective_metric": exp.objective.metric,
            "direction": exp.objective.direction,
            "storage": redact(exp.study.storage),
            "experiment_file": exp.source,
            **device,
            **tags,
        },
    )
    return data, uri, tracker, parent


def prepare_stores(exp: Experiment, uri: str) -> None:
    """Create the study and the MLflow experiment once, before parallel workers open them."""
    from tuning import tracking

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    open_study(exp)
    tracking.Tracker(uri=uri, experiment=exp.mlflow_experiment, study=exp.study_name)


def run_job(
    exp: Experiment, *, say: Say = print, progress: bool = False, report_table: bool = True
) -> JobResult:
    """Run one job of ``exp``: its trials, their runs, and the parent's summary.

    Validation happens first (data available, tracking store reachable); only then are the
    MLflow experiment, the parent run and the study created or opened.

    Args:
        exp: A validated experiment (``config.load_experiment``).
        say: Where progress lines go.
        progress: Show Optuna's progress bar (trials done / budget, best so far, elapsed).
        report_table: End with a table of the study's best trials.

    Returns:
        A summary of the job.

    Raises:
        ConfigError: data unavailable, tracking store or study storage unusable.
        KeyboardInterrupt: after ending the trial in flight as KILLED and the parent run too.
    """
    if exp.study.engine == "keras_tuner":
        from tuning.kt_engine import run_kt_job

        return run_kt_job(exp, say=say)
    from tuning import tracking

    t0 = time.perf_counter()
    STOP.clear()
    data, uri, tracker, parent = open_job(exp)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    status = "FAILED"
    lost: Exception | None = None  # set when the tracking server stops answering
    try:
        study = open_study(exp)
        if exp.study.heartbeat_interval:
            optuna.storages.fail_stale_trials(study)
        dead = {
            t.number: t.state.name
            for t in study.get_trials(deepcopy=False)
            if t.state != optuna.trial.TrialState.RUNNING
        }
        closed = tracker.close_orphans(dead) + tracker.close_dead_jobs()
        if closed:
            say(f"ended {closed} MLflow run(s) left RUNNING by a process that died")
        resolved = exp.resolved()
        resolved["study"]["storage"] = redact(resolved["study"]["storage"])
        parent.log_params({k: v for k, v in resolved.items() if k != "search_space"})
        import yaml

        parent.log_text(yaml.safe_dump(resolved, sort_keys=False), "config.yaml")
        n_before = len(study.trials)
        say(
            f"study {exp.study_name!r} ({f'resumed with {n_before} trials' if n_before else 'new'}"
            f", {redact(exp.study.storage)}); MLflow experiment {tracker.experiment_name!r} "
            f"({redact(uri)}), parent run {parent.run_id}; data {data.name} {data.sizes()}"
        )
        if tracker.adopted_run_id and tracker.experiment_name != exp.mlflow_experiment:
            say(
                f"note: `mlflow run` put this job in MLflow experiment "
                f"{tracker.experiment_name!r}; pass --experiment-name {exp.mlflow_experiment} "
                "to keep it with the study's other runs"
            )
        # The time budget counts from the start of the job, and it is a deadline: no trial
        # starts after it, and the trial in flight stops at its next epoch end.
        deadline = t0 + exp.study.timeout if exp.study.timeout else None
        runner = _TrialRunner(
            exp,
            data=data,
            tracker=tracker,
            parent=parent,
            say=say,
            report_table=report_table,
            deadline=deadline,
        )
        runner.timings["setup"] = time.perf_counter() - t0
        try:
            study.optimize(
                runner.objective,
                n_trials=exp.study.n_trials,
                timeout=max(deadline - time.perf_counter(), 1e-3) if deadline else None,
                catch=(TrialFailed,),
                callbacks=[runner.after_trial],
                gc_after_trial=False,  # the runner frees the Keras session before each build
                show_progress_bar=progress,
            )
            status = "FINISHED"
        except KeyboardInterrupt:
            status = "KILLED"
            say("interrupted: the trial in flight is ended KILLED; recording the best so far")
            raise
        except Exception as e:
            if tracking.is_unreachable(e):
                lost = e
                raise TrackingLost(
                    f"the MLflow tracking server {redact(uri)} stopped answering "
                    f"({type(e).__name__}); the Optuna study keeps every finished trial: run the "
                    "same command again once the server is back"
                ) from e
            raise
        finally:
            runner.timings["loop"] = time.perf_counter() - t0 - runner.timings["setup"]
            if lost is None:
                result = runner.finish(study, t0=t0, status=status)
    finally:
        gc.unfreeze()  # frozen by open_job: let this job's objects be collected afterwards
        if lost is None:
            parent.end(status)
    return result


class TrialRunnerBase:
    """What both engines' trial loops share: the job's best model and how a trial trains.

    Holds the experiment, the data, the MLflow parent run, the job's best model so far (saved to
    a temporary ``.keras`` file), and the training settings logged with every trial.
    """

    def __init__(self, exp: Experiment, *, data: Any, tracker: Any, parent: Any, say: Say) -> None:
        self.exp = exp
        self.data = data
        self.tracker = tracker
        self.parent = parent
        self.say = say
        self.tmp = tempfile.TemporaryDirectory(prefix="tuning-")
        self.best_value: float | None = None
        self.best_trial: int | None = None
        self.best_model_path = Path(self.tmp.name) / "best.keras"
        self.trials_run = 0
        self.fixed = {
            "max_epochs": exp.training.max_epochs,
            "patience": exp.training.early_stopping.patience,
        }

    def build(self, params: dict[str, Any], *, number: int, max_epochs: int) -> Any:
        """A fresh session, the trial's seed, and the compiled model."""
        import keras

        from tuning.model import build_model
        from tuning.train import fresh_session

        exp = self.exp
        fresh_session()
        backend.release()
        keras.utils.set_random_seed(exp.study.seed + number)
        return build_model(
            params,
            data=self.data,
            loss=exp.training.loss,
            output_activation=exp.training.output_activation,
            max_epochs=max_epochs,
        )

    def train(self, model: Any, params: dict[str, Any], *, max_epochs: int, on_epoch: Any) -> Any:
        """Fit with the experiment's early stopping; the params may override patience."""
        from tuning.train import fit

        exp = self.exp
        return fit(
            model,
            self.data,
            monitor=exp.objective.metric,
            direction=exp.objective.direction,
            batch_size=int(params.get("batch_size", exp.training.batch_size)),
            max_epochs=max_epochs,
            patience=int(params.get("patience", exp.training.early_stopping.patience)),
            min_delta=exp.training.early_stopping.min_delta,
            on_epoch=on_epoch,
            reduce_on_plateau=params.get("lr_schedule") == "reduce_on_plateau",
        )

    def keep_if_best(self, model: Any, value: float, number: int) -> None:
        """Save ``model`` as the job's best when it beats the best so far."""
        if self.exp.tracking.log_models == "none":
            return
        better = self.best_value is None or (
            value < self.best_value
            if self.exp.objective.direction == "minimize"
            else value > self.best_value
        )
        if better:
            model.save(self.best_model_path)
            self.best_value, self.best_trial = value, number

    def log_best_model(self, metrics: dict[str, float | None]) -> str:
        """Score the job's best model on the test split and log it on the parent run."""
        import keras

        from tuning.encoding import CUSTOM_OBJECTS

        data = self.data
        model = keras.models.load_model(self.best_model_path, custom_objects=CUSTOM_OBJECTS)
        # The test split is touched here only: to score the job's best model.
        scores = model.evaluate(data.x_test, data.y_test, verbose=0, return_dict=True)
        for k, v in scores.items():
            metrics[f"test_{k}"] = float(v)
        metrics["job_best_value"] = self.best_value
        self.parent.set_tags({"model_trial": self.best_trial})
        meta = {
            **data.serving_meta(),
            "trial": self.best_trial,
            "study": self.exp.study_name,
            "backend": keras.backend.backend(),
        }
        return str(
            self.parent.log_model(
                keras_path=self.best_model_path,
                meta=meta,
                input_example=data.example_rows(5),
                pip_requirements=backend.pip_requirements(),
            )
        )


class _TrialRunner(TrialRunnerBase):
    """The Optuna objective and its bookkeeping for one job."""

    def __init__(
        self,
        exp: Experiment,
        *,
        data: Any,
        tracker: Any,
        parent: Any,
        say: Say,
        report_table: bool = True,
        deadline: float | None = None,
    ) -> None:
        super().__init__(exp, data=data, tracker=tracker, parent=parent, say=say)
        self.report_table = report_table
        self.deadline = deadline
        # Seconds: build and fit (hooks included) summed over trials, and the per-epoch hooks
        # alone; run_job adds setup and loop, finish() adds finish.
        self.timings: dict[str, float] = {"build": 0.0, "fit": 0.0, "hooks": 0.0, "compile": 0.0}
        self.histories: dict[int, dict[str, list[float]]] = {}
        self.numbers: set[int] = set()
        self.champion: Any = None

    def objective(self, trial: optuna.Trial) -> float:
        exp = self.exp
        params = exp.space.suggest(trial)
        logged = {**self.fixed, **params}
        logged.setdefault("batch_size", int(params.get("batch_size", exp.training.batch_size)))
        for name in exp.space.specs:
            if name in params and name not in trial.params:  # fixed values: keep them on the trial
                trial.set_user_attr(f"fixed.{name}", params[name])
        monitor = exp.objective.metric
        self.trials_run += 1
        self.numbers.add(trial.number)
        with self.tracker.trial_run(self.parent, number=trial.number, params=logged) as run:
            trial.set_user_attr("mlflow_run_id", run.run_id)
            trial.set_user_attr("backend", backend.current() or "")
            started = time.perf_counter()
            n_params = None
            try:
                max_epochs = exp.training.max_epochs
                model = self.build(params, number=trial.number, max_epochs=max_epochs)
                n_params = int(model.count_params())
                self.timings["build"] += time.perf_counter() - started

                hooks: list[tuple[float, float]] = []  # (start, end) of each epoch's hook

                def on_epoch(epoch: int, logs: Any) -> None:
                    hook_start = time.perf_counter()
                    try:
                        report_epoch(epoch, logs)
                    finally:
                        hook_end = time.perf_counter()
                        hooks.append((hook_start, hook_end))
                        self.timings["hooks"] += hook_end - hook_start

                def report_epoch(epoch: int, logs: Any) -> None:
                    _check_stop()
                    run.log_epoch(epoch, logs)
                    value = logs.get(monitor)
                    if value is None or not _finite(value):
                        return  # fit() turns a missing or NaN objective into TrialFailed
                    trial.report(float(value), epoch)
                    if trial.should_prune():
                        raise optuna.TrialPruned(
                            f"pruned after epoch {epoch + 1} with {monitor}={value:.4g}"
                        )
                    if self.deadline is not None and time.perf_counter() >= self.deadline:
                        raise optuna.TrialPruned(
                            f"stopped after epoch {epoch + 1} at the job's time budget "
                            f"({exp.study.timeout:g}s) with {monitor}={value:.4g}"
                        )

                fit_start = time.perf_counter()
                try:
                    result = self.train(model, params, max_epochs=max_epochs, on_epoch=on_epoch)
                finally:
                    self.timings["fit"] += time.perf_counter() - fit_start
                    self.timings["compile"] += compile_seconds(fit_start, hooks)
                self.histories[trial.number] = result.history
                run.log_metrics({"objective": result.value, "best_epoch": result.best_epoch})
                self.keep_if_best(model, result.value, trial.number)
                return float(result.value)
            except (optuna.TrialPruned, TrialFailed, Exception, KeyboardInterrupt) as e:
                if not isinstance(e, optuna.TrialPruned):
                    trial.set_user_attr("reason", f"{type(e).__name__}: {e}"[:1000])
                else:
                    trial.set_user_attr("reason", str(e))
                raise
            finally:
                seconds = time.perf_counter() - started
                trial.set_user_attr("epochs_trained", run.epochs)
                trial.set_user_attr("train_seconds", round(seconds, 3))
                if n_params is not None:
                    trial.set_user_attr("n_params", n_params)
                run.log_metrics(
                    {
                        "epochs_trained": run.epochs,
                        "n_params": n_params,
                        "train_seconds": seconds,
                    }
                )

    def time_breakdown(self, job_seconds: float) -> dict[str, float]:
        """Where the job's time went, in seconds, and study + tracking as a fraction of it.

        ``compile`` is the first epochs' time above a typical epoch (:func:`compile_seconds`);
        ``fit`` is ``model.fit`` without it and the per-epoch hooks; ``study_tracking`` is the
        rest of the trial loop: sampling, the Optuna storage, MLflow logging, callbacks and the
        hooks.
        """
        tm = self.timings
        fit = tm["fit"] - tm["hooks"]
        study_tracking = max(tm["loop"] - tm["build"] - fit, 0.0)
        return {
            "setup": tm["setup"],
            "build": tm["build"],
            "compile": tm["compile"],
            "fit": fit - tm["compile"],
            "study_tracking": study_tracking,
            "finish": tm["finish"],
            "fraction": study_tracking / job_seconds if job_seconds > 0 else 0.0,
        }

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.say_trial(study, trial)
        _check_stop()

    def say_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        state = trial.state.name.lower()
        value = f"{self.exp.objective.metric}={trial.value:.4f}" if trial.value is not None else ""
        reason = trial.user_attrs.get("reason", "") if state != "complete" else ""
        try:
            best = f"best {study.best_value:.4f} (#{study.best_trial.number})"
        except ValueError:
            best = "no complete trial yet"
        epochs = trial.user_attrs.get("epochs_trained", 0)
        secs = trial.user_attrs.get("train_seconds", 0.0)
        self.say(
            f"trial {trial.number:>3} {state:<8} {value} epochs={epochs} {secs:.1f}s  {best}"
            + (f"  [{reason}]" if reason else "")
        )

    def finish(
        self,
        study: optuna.Study,
        *,
        t0: float,
        status: str,
    ) -> JobResult:
        """Record the study's best so far on the parent run, with this job's best model."""
        from tuning import report

        exp = self.exp
        parent = self.parent
        finish_start = time.perf_counter()
        counts = _counts(study)
        best_trial = None
        try:
            best_trial = study.best_trial
        except ValueError:
            pass
        metrics: dict[str, float | None] = {
            f"n_{k}": v for k, v in counts.items() if k in ("complete", "pruned", "fail")
        }
        metrics["n_trials"] = sum(counts.values())
        metrics["job_trials"] = self.trials_run
        model_uri = None
        best_params: dict[str, Any] = {}
        try:
            if best_trial is not None:
                best_params = {**best_trial.params}
                best_params.update(
                    {
                        k.removeprefix("fixed."): v
                        for k, v in best_trial.user_attrs.items()
                        if k.startswith("fixed.")
                    }
                )
                metrics["best_value"] = best_trial.value
                parent.log_params(
                    {
                        "best_trial": best_trial.number,
                        **{f"best_{k}": v for k, v in best_params.items()},
                    }
                )
                parent.set_tags(
                    {
                        "best_trial": best_trial.number,
                        "best_trial_run_id": best_trial.user_attrs.get("mlflow_run_id", ""),
                    }
                )
            if self.best_trial is not None and self.best_model_path.exists():
                model_uri = self.log_best_model(metrics)
                if exp.tracking.register_as and self.best_value is not None:
                    self.champion = parent.register_champion(
                        name=exp.tracking.register_as,
                        model_uri=model_uri,
                        value=self.best_value,
                        metric=exp.objective.metric,
                        direction=exp.objective.direction,
                        data_key=exp.data_key(),
                        trial=self.best_trial,
                    )
            with tempfile.TemporaryDirectory() as tmp:
                for path in report.write_job_reports(
                    study,
                    histories=self.histories,
                    metric=exp.objective.metric,
                    out_dir=Path(tmp),
                ):
                    parent.log_artifact(path)
            parent.log_text(
                report.summary_markdown(
                    study,
                    metric=exp.objective.metric,
                    job_trials=self.trials_run,
                    test_scores={
                        k: float(v) for k, v in metrics.items() if k.startswith("test_") and v
                    },
                    seconds=time.perf_counter() - t0,
                ),
                "summary.md",
            )
        finally:
            now = time.perf_counter()
            job_seconds = metrics["job_seconds"] = now - t0
            self.timings["finish"] = now - finish_start
            breakdown = self.time_breakdown(job_seconds)
            metrics.update({f"seconds_{k}": v for k, v in breakdown.items() if k != "fraction"})
            metrics["study_tracking_fraction"] = breakdown["fraction"]
            parent.log_metrics(metrics)
            self.tmp.cleanup()
        result = JobResult(
            study_name=exp.study_name,
            parent_run_id=parent.run_id,
            experiment_id=self.tracker.experiment_id,
            tracking_uri=self.tracker.uri,
            trials_run=self.trials_run,
            counts=counts,
            best_value=best_trial.value if best_trial else None,
            best_trial=best_trial.number if best_trial else None,
            best_params=best_params,
            model_uri=model_uri,
            seconds=time.perf_counter() - t0,
            status=status,
            champion=self.champion,
            timings=breakdown,
        )
        added = {k: 0 for k in counts}
        for t in study.get_trials(deepcopy=False):  # this job's own trials, not other workers'
            if t.number in self.numbers and t.state.name.lower() in added:
                added[t.state.name.lower()] += 1
        self.say(
            f"job {status.lower()}: {self.trials_run} trial(s) run "
            f"({added['complete']} complete, {added['pruned']} pruned, {added['fail']} failed) "
            f"in {result.seconds:.1f}s; study has {sum(counts.values())} trials"
        )
        self.say(
            f"time: setup {breakdown['setup']:.1f}s, build {breakdown['build']:.1f}s, "
            f"compile {breakdown['compile']:.1f}s, fit {breakdown['fit']:.1f}s, "
            f"study+tracking {breakdown['study_tracking']:.1f}s "
            f"({100 * breakdown['fraction']:.1f}%), finish {breakdown['finish']:.1f}s"
        )
        if self.report_table:
            for line in report.results_table(study, top=5):
                self.say(line)
        if best_trial is not None:
            self.say(
                f"best: trial {best_trial.number} {exp.objective.metric}={best_trial.value:.4f} "
                f"{best_params}"
            )
        if model_uri:
            self.say(f"this job's best model (trial {self.best_trial}): {model_uri}")
        if self.champion is not None:
            self.say(self.champion.describe())
        from tuning.tracking import ui_link

        self.say(f"MLflow: {ui_link(self.tracker.uri, self.tracker.experiment_id)}")
        return result
