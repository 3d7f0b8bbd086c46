"""One job's life, the same for every engine: validate, open the stores, run, finish.

Owns what happens around the search: everything that can be checked is checked before anything
is created (data, objective, the tracking store and the study storage answer); then the MLflow
experiment and the job's parent run (tags: study, backend, devices, engine; the data as dataset
inputs; the resolved config), then the engine the experiment names (``tuning.engines``) runs its
trials within the budget, the re-check (``tuning.recheck``) and the choice of the job's model
(``tuning.ensemble.settle_model``) follow; and whatever happened, the job finishes: the best
trial on the parent, this job's model scored on test and logged (and registered as champion
where the paired test says so: ``tuning.champion.decide``), the reports, the metrics and the
terminal summary (``tuning.summary``), and the parent run ended FINISHED, KILLED or FAILED. A
tracking server that stops answering ends the job with :class:`TrackingLost`, the study keeping
every finished trial; an artifact store that fails while the job records its end (disk full, its
folder gone) ends it with :class:`~tuning.errors.ArtifactStoreFailed`, the parent run FAILED.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import yaml

from tuning import backend, champion, engines, lineage, storage, summary, tracking
from tuning.config import Experiment, check_objective_for, redact
from tuning.data import Dataset, load_dataset
from tuning.engines.base import STOP, Engine, JobContext, Outcome, Say
from tuning.errors import ArtifactStoreFailed, ConfigError, StorageLost, TrackingLost
from tuning.recheck import RECHECK_SHARE, recheck
from tuning.storage import check_study_storage, db_error_reason, lost_server
from tuning.tracking import Champion, ParentRun, Tracker

__all__ = ["JobResult", "open_parent", "prepare_stores", "run_job", "validate_job"]

# The share of a time budget left to choosing and building an ensemble (study.ensemble_top):
# measured at 9-10 s for 8 candidates on a slow 2-core machine, about 2 % of a 10-minute job.
ENSEMBLE_SHARE = 0.02


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
    best_params: dict[str, object]
    model_uri: str | None
    seconds: float
    status: str
    champion: Champion | None = None
    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    # With an ensemble as the job's model: the best member alone, on test (for the record).
    single_test_scores: dict[str, float] = dataclasses.field(default_factory=dict)
    test_scores: dict[str, float] = dataclasses.field(default_factory=dict)


def validate_job(exp: Experiment) -> tuple[Dataset, str]:
    """Everything that can be checked before creating anything: data, objective, both stores.

    Returns:
        The loaded dataset and the tracking URI to use.

    Raises:
        ConfigError: naming the file, key and fix of the first problem.
    """
    backend.prepare_environment()
    backend.select(exp.training.backend, source=exp.source)
    backend.import_tensorflow_quietly()  # before anything imports keras, which imports it
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
    if exp.study.engine == "optuna":
        check_study_storage(exp.study.storage, source=exp.source)
    return data, uri


def settle_heap() -> None:
    """Collect garbage once, then freeze what is alive (modules, data, stores) out of the GC.

    Called once per job before the first trial. Without it, the collection in each trial's
    ``train.fresh_session`` walks every object TensorFlow, MLflow and the data hold: about
    0.5 s per trial on 2 cores, measured. Frozen objects are never freed, so only long-lived
    ones should exist at this point; the job unfreezes them when it ends.
    """
    gc.collect()
    gc.freeze()


def open_parent(
    exp: Experiment, data: Dataset, uri: str, tags: dict[str, str]
) -> tuple[Tracker, ParentRun]:
    """Open the MLflow experiment and this job's parent run, after :func:`validate_job`.

    The parent run gets the job's tags (study, objective, storage, backend and devices, and
    ``tags``), the data as dataset inputs and the resolved config (``config.yaml``).
    """
    device = backend.configure()
    settle_heap()
    tracker = Tracker(uri=uri, experiment=exp.mlflow_experiment, study=exp.study_name)
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
    parent.log_inputs(tracking.dataset_inputs(data))
    from tuning.secrets import redact_data  # every URL-valued setting, passwords hidden

    resolved = redact_data(exp.resolved())
    parent.log_params({k: v for k, v in resolved.items() if k != "search_space"})
    parent.log_text(yaml.safe_dump(resolved, sort_keys=False), "config.yaml")
    return tracker, parent


def prepare_stores(exp: Experiment, data: Dataset, uri: str, say: Say = print) -> None:
    """Create the study storage, the study's current version and the MLflow experiment once,
    before parallel workers open them (each worker then finds the same version)."""
    if exp.study.engine == "optuna":
        lineage.resolve(exp, data, say)
    Tracker(uri=uri, experiment=exp.mlflow_experiment, study=exp.study_name)


def lineage_tags(exp: Experiment, data: Dataset, say: Say) -> dict[str, str]:
    """Choose the study's version for this job (:func:`tuning.lineage.resolve`); its tags.

    The KerasTuner engine keeps one project per study: its jobs record the digests only.
    """
    if exp.study.engine == "optuna":
        return lineage.resolve(exp, data, say).tags()
    found = lineage.data_print(exp, data)
    return {
        "lineage": exp.study_base,
        "space_digest": lineage.digest(exp.space.to_dict()),
        "data_digest": found.digest,
        "data_schema": found.schema,
        "data_rows": str(found.rows),
    }


def run_job(
    exp: Experiment, *, say: Say = print, progress: bool = False, report_table: bool = True
) -> JobResult:
    """Run one job of ``exp`` with the engine it names: its trials, their runs, the summary.

    Args:
        exp: A validated experiment (``config.load_experiment``).
        say: Where progress lines go.
        progress: Show the engine's progress bar (trials done / budget, best so far, elapsed).
        report_table: End with a table of the study's best trials.

    Returns:
        A summary of the job.

    Raises:
        ConfigError: data unavailable, tracking store or study storage unusable.
        TrackingLost: the tracking server stopped answering mid-job.
        ArtifactStoreFailed: the artifact store failed while the job recorded its model and
            reports (the parent run ends FAILED; the study and the trials' runs are kept).
        KeyboardInterrupt: after ending the trial in flight as KILLED and the parent run too.
    """
    with storage.one_storage_per_job():  # the lineage check and the engine read the trials once
        return _run_job(exp, say=say, progress=progress, report_table=report_table)


def _run_job(exp: Experiment, *, say: Say, progress: bool, report_table: bool) -> JobResult:
    t0 = time.perf_counter()
    STOP.clear()
    data, uri = validate_job(exp)
    # The lazy boundary: the engine and the trainer import Keras, which may happen only now
    # that validate_job chose the backend (and nothing is imported for `tuning --help`).
    engine_cls = engines.load(exp.study.engine)
    from tuning.ensemble import settle_model
    from tuning.trial import TrialRunner

    tags = {**engine_cls.parent_tags(exp), **lineage_tags(exp, data, say)}
    tracker, parent = open_parent(exp, data, uri, tags)
    search_deadline, recheck_deadline = _deadlines(exp, t0)
    runner = TrialRunner(exp, data=data, tracker=tracker, parent=parent)
    ctx = JobContext(exp, data, tracker, parent, say, runner, t0, search_deadline, progress)
    engine = engine_cls(ctx)
    timings = {"setup": 0.0, "loop": 0.0, "finish": 0.0}
    status, lost = "FAILED", False
    try:
        for line in summary.opened_lines(ctx, engine.open()):
            say(line)
        timings["setup"] = time.perf_counter() - t0
        try:
            engine.search()
            settle_model(ctx, recheck(engine, ctx, deadline=recheck_deadline))
            status = "FINISHED"
        except KeyboardInterrupt:
            status = "KILLED"
            say("interrupted: the trial in flight is ended KILLED; recording the best so far")
            raise
        except Exception as e:
            server = lost_server(e, exp.study.storage)
            if server is not None and not tracking.is_unreachable(e):
                lost = True
                raise StorageLost(
                    f"the study storage {redact(exp.study.storage)} stopped answering "
                    f"({db_error_reason(server)}); it keeps every finished trial, and the "
                    "trial in flight is failed by its heartbeat: run the same command again "
                    "once the server answers"
                ) from e
            if not tracking.is_unreachable(e):
                raise
            lost = True
            raise TrackingLost(
                f"the MLflow tracking server {redact(tracker.uri)} stopped answering "
                f"({type(e).__name__}); the Optuna study keeps every finished trial: run the "
                "same command again once the server is back"
            ) from e
        finally:
            timings["loop"] = time.perf_counter() - t0 - timings["setup"]
            if not lost:
                try:
                    result = _finish(
                        engine, ctx, timings, status=status, report_table=report_table
                    )
                except BaseException:
                    # The search went well but its end was not recorded: the job failed.
                    status = "FAILED" if status == "FINISHED" else status
                    raise
    finally:
        runner.cleanup()
        engine.close()
        gc.unfreeze()  # frozen by open_job: let this job's objects be collected afterwards
        if not lost:
            parent.end(status)
        elif not tracking.is_unreachable(sys.exc_info()[1] or Exception()):
            with contextlib.suppress(Exception):  # the study storage is gone, MLflow may not be
                parent.end("FAILED")
    return result


# -- finishing a job: the steps, in order --------------------------------------------------


def _deadlines(exp: Experiment, t0: float) -> tuple[float | None, float | None]:
    """When the search and the re-check must end (``perf_counter`` times; ``None``: never).

    The time budget counts from the start of the job (``t0``), and it is a deadline: no trial
    starts after it, and the trial in flight stops at its next epoch end. With a re-check, the
    search leaves the last 30 % of the budget to it; choosing an ensemble loads and scores its
    candidates: it gets the budget's last 2 %.
    """
    timeout = exp.study.timeout
    if not timeout:
        return None, None
    deadline = t0 + timeout
    search = t0 + timeout * (1 - RECHECK_SHARE) if exp.study.recheck_top else deadline
    recheck = deadline - timeout * ENSEMBLE_SHARE if exp.study.ensemble_top >= 2 else deadline
    return search, recheck


def _finish(
    engine: Engine,
    ctx: JobContext,
    timings: dict[str, float],
    *,
    status: str,
    report_table: bool,
) -> JobResult:
    """Record the search's best so far on the parent run, with this job's best model."""
    finish_start = time.perf_counter()
    outcome = engine.outcome()
    metrics = _outcome_metrics(outcome, ctx)
    model_uri: str | None = None
    champion: Champion | None = None
    models = ctx.runner.models
    failed = True
    try:
        _record_best_trial(outcome, ctx.parent)
        with _artifact_store(ctx):
            if models.has_best_model():
                model_uri = models.log_best(ctx.parent, metrics)
                champion = _register_champion(ctx, model_uri)
            _log_reports(engine, ctx, metrics)
        failed = False
    finally:
        now = time.perf_counter()
        metrics["job_seconds"] = now - ctx.t0
        timings["finish"] = now - finish_start
        breakdown = summary.time_breakdown(ctx.runner.trainer.timings, timings, now - ctx.t0)
        metrics.update({f"seconds_{k}": v for k, v in breakdown.items() if k != "fraction"})
        metrics["study_tracking_fraction"] = breakdown["fraction"]
        try:
            ctx.parent.log_metrics(metrics)
        except Exception:
            if not failed:
                raise  # else the first failure is the one to report
    result = JobResult(
        study_name=ctx.exp.study_name,
        parent_run_id=ctx.parent.run_id,
        experiment_id=ctx.tracker.experiment_id,
        tracking_uri=ctx.tracker.uri,
        trials_run=ctx.runner.trials_run,
        counts=outcome.counts,
        best_value=outcome.best_value,
        best_trial=outcome.best_trial,
        best_params=outcome.best_params,
        model_uri=model_uri,
        seconds=time.perf_counter() - ctx.t0,
        status=status,
        champion=champion,
        timings=breakdown,
        test_scores=summary.test_scores(metrics),
        single_test_scores=summary.test_scores(metrics, "single_test_"),
    )
    for line in summary.summary_lines(engine, ctx, result, outcome, report_table=report_table):
        ctx.say(line)
    return result


def _os_error(error: BaseException) -> OSError | None:
    """The operating system's error behind ``error`` (itself, or what caused it), if any."""
    seen: BaseException | None = error
    visited: set[int] = set()
    while seen is not None and id(seen) not in visited:
        if isinstance(seen, OSError):
            return seen
        visited.add(id(seen))
        seen = seen.__cause__ or seen.__context__
    return None


@contextlib.contextmanager
def _artifact_store(ctx: JobContext) -> Iterator[None]:
    """Turn the artifact store failing at the job's end (disk full, its folder gone, permission
    denied) into one :class:`ArtifactStoreFailed` naming the store and the OS's reason; the
    parent run is tagged with it (``reason``) and ``run_job`` ends it FAILED.

    A tracking server that does not answer, and errors that are not the OS's, pass unchanged.
    """
    try:
        yield
    except Exception as e:
        os_error = _os_error(e)
        if os_error is None or tracking.is_unreachable(e):
            raise
        reason = " ".join(f"{type(os_error).__name__}: {os_error}".split())[:300]
        message = (
            f"the MLflow artifact store {ctx.tracker.artifact_location()} failed while recording "
            f"the job's model and reports ({reason}); the parent run ends FAILED, the study keeps "
            "every trial and the trials' runs are kept: free or repair the store, then run the "
            "same command again"
        )
        with contextlib.suppress(Exception):  # the tracking store may fail as well
            ctx.parent.set_tags({"reason": message})
        raise ArtifactStoreFailed(message) from e


def _outcome_metrics(outcome: Outcome, ctx: JobContext) -> dict[str, float | None]:
    counts = outcome.counts
    metrics: dict[str, float | None] = {
        f"n_{k}": v
        for k, v in counts.items()
        if k in ("complete", "pruned", "fail", "not_learning")
    }
    metrics["n_trials"] = sum(counts.values())
    metrics["job_trials"] = ctx.runner.trials_run
    # Epochs trained per configuration evaluated, and those trained again from scratch (#26).
    metrics.update(ctx.runner.states.counts)
    if outcome.best_value is not None:
        metrics["best_value"] = outcome.best_value
    return metrics


def _record_best_trial(outcome: Outcome, parent: ParentRun) -> None:
    if outcome.best_trial is None:
        return
    best = {f"best_{k}": v for k, v in outcome.best_params.items()}
    parent.log_params({"best_trial": outcome.best_trial, **best})
    parent.set_tags({"best_trial": outcome.best_trial, "best_trial_run_id": outcome.best_run_id})


def _register_champion(ctx: JobContext, model_uri: str) -> Champion | None:
    """Register the job's model; ``@champion`` moves to it only where it is better than the
    champion beyond noise (:func:`tuning.champion.decide`, on a paired test of both models on
    this job's validation rows, run where the two were scored on the same metric and data)."""
    exp, models, parent = ctx.exp, ctx.runner.models, ctx.parent
    name, value = exp.tracking.register_as, models.best_value
    if not name or value is None:
        return None
    metric, data = exp.objective.metric, lineage.data_print(exp, ctx.data)
    figures = _model_figures(ctx)
    version = parent.register_model(
        name=name, model_uri=model_uri, value=value, metric=metric,
        direction=exp.objective.direction, data_key=data.digest, trial=models.best_trial,
        data_tags={"data_inputs": data.inputs, "data_rows": str(data.rows),
                   "data_schema": data.schema, **_rule_tags(ctx)},
        figures=figures,
    )  # fmt: skip
    current = parent.champion_standing(name)
    test, stale, reverse, gap = None, None, None, None
    if current is not None and current.comparable(metric=metric):
        if current.can_score(data.inputs):
            uri = f"models:/{name}/{current.version}"
            test, stale, reverse, gap = _paired_test(ctx, model_uri, uri, both=bool(exp.prefer))
        else:
            stale = "it was trained on other columns, targets or classes"
    decision = champion.decide(
        objective=exp.objective, metric=metric, value=value, data_key=data.digest,
        current=current, test=test, alpha=exp.tracking.champion_alpha, stale=stale,
        stale_rule=exp.tracking.stale_champion, rows=data.rows, prefer=exp.prefer,
        figures=figures, reverse=reverse, limits=dict(exp.limits), gap=gap,
        within_se=exp.selection.within_se,
    )  # fmt: skip
    return parent.record_champion(name, version, decision)


def _model_figures(ctx: JobContext) -> dict[str, float]:
    """The job's model's measures, with several objectives or limits (else none)."""
    from tuning import measures
    from tuning.data.encoding import load_keras

    models, names = ctx.runner.models, measures.needed(ctx.exp)
    if not ctx.runner.judged or not names or models.best_model_path is None:
        return {}
    model = load_keras(str(models.best_model_path))
    return measures.measure(model, names, x=ctx.data.x_valid, cfg=ctx.exp.measures)


def _rule_tags(ctx: JobContext) -> dict[str, str]:
    """The registered version's ``selection_rule`` and ``selection`` (which rule chose it)."""
    picked = ctx.runner.models.selected
    if picked is None:
        return {}
    return {"selection_rule": picked.rule, "selection": picked.reason[:5000]}


def _paired_test(
    ctx: JobContext, challenger_uri: str, champion_uri: str, *, both: bool = False
) -> tuple[
    tuple[str, float] | None, str | None, tuple[str, float] | None, tuple[float, float] | None
]:
    """Both logged models predict this job's validation rows (raw, as served); paired test.

    Returns:
        The test (name, p-value) that the challenger is better, or ``None`` and why the
        champion cannot score these rows; with ``both``, the reverse test too (is the
        champion better?) and the challenger's shortfall with its standard error
        (:func:`tuning.champion.paired_gap`), for the rule that prefers a smaller or faster
        model.
    """
    rows = ctx.data.validation_rows()
    from tuning.trial import validation_truth  # Keras: imported once the backend is fixed

    challenger = tracking.predict(challenger_uri, rows)
    try:
        held = tracking.predict(champion_uri, rows)
    except Exception as e:  # a column gone, a model that cannot load these rows
        if tracking.is_unreachable(e):
            raise
        return None, f"{type(e).__name__}: {' '.join(str(e).split())[:200]}", None, None
    truth, task, metric = validation_truth(ctx.data), ctx.data.task, ctx.exp.objective.metric
    test = champion.paired_test(task, truth, challenger, held, metric=metric)
    if not both:
        return test, None, None, None
    reverse = champion.paired_test(task, truth, held, challenger, metric=metric)
    gap = champion.paired_gap(task, truth, held, challenger, metric=metric)
    return test, None, reverse, gap


def _log_reports(engine: Engine, ctx: JobContext, metrics: dict[str, float | None]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for path in engine.reports(Path(tmp)):
            ctx.parent.log_artifact(path)
    text = engine.summary_markdown(
        test_scores=summary.test_scores(metrics), seconds=time.perf_counter() - ctx.t0
    )
    if text is not None:
        ctx.parent.log_text(text, "summary.md")
