"""One job's life, the same for every engine: validate, open the stores, run, finish, summarize.

Owns what happens around the search: everything that can be checked is checked before anything
is created (data, objective, the tracking store and the study storage answer); then the MLflow
experiment and the job's parent run (tags: study, backend, devices, engine; the data as dataset
inputs; the resolved config), then the engine the experiment names (``tuning.engines``) runs its
trials within the budget; and whatever happened, the job finishes: the best trial on the parent,
this job's best model scored on test and logged (and registered as champion where asked), the
reports, the metrics and the terminal summary, and the parent run ended FINISHED, KILLED or
FAILED. A tracking server that stops answering ends the job with :class:`TrackingLost`, the
study keeping every finished trial.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
import yaml

from tuning import backend, champion, engines, tracking
from tuning.config import Experiment, check_objective_for, redact
from tuning.data import Dataset, load_dataset
from tuning.engines.base import STOP, Engine, JobContext, Outcome, Ranked, Say, check_stop
from tuning.errors import ConfigError, StopTraining, TrackingLost, TrialFailed
from tuning.storage import check_study_storage, open_storage
from tuning.tracking import Champion, ParentRun, Tracker

if TYPE_CHECKING:
    from tuning import ensemble
    from tuning.trial import Kept, Trainer

__all__ = ["JobResult", "open_parent", "prepare_stores", "recheck", "run_job", "validate_job"]

# The share of a time budget the search leaves to the re-check of its top trials (which trains
# them further than the search's 1/min_configs slices), and the offset that gives a re-run other
# initial weights than its trial's.
RECHECK_SHARE = 0.3
RECHECK_SEED = 104_729
# The share of a time budget left to choosing and building an ensemble (study.ensemble_top):
# measured at 9-10 s for 8 candidates on a slow 2-core machine, about 2 % of a 10-minute job.
ENSEMBLE_SHARE = 0.02
# At most this many re-runs of each top trial: later rounds run only on time the first left.
RECHECK_ROUNDS = 3


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
    resolved = exp.resolved()
    resolved["study"]["storage"] = redact(resolved["study"]["storage"])
    parent.log_params({k: v for k, v in resolved.items() if k != "search_space"})
    parent.log_text(yaml.safe_dump(resolved, sort_keys=False), "config.yaml")
    return tracker, parent


def prepare_stores(exp: Experiment, uri: str) -> None:
    """Create the study storage and the MLflow experiment once, before parallel workers open
    them (each worker's engine then creates or loads the study itself)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.create_study(
        storage=open_storage(exp),
        study_name=exp.study_name,
        direction=exp.objective.direction,
        load_if_exists=True,
    )
    Tracker(uri=uri, experiment=exp.mlflow_experiment, study=exp.study_name)


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
        KeyboardInterrupt: after ending the trial in flight as KILLED and the parent run too.
    """
    t0 = time.perf_counter()
    STOP.clear()
    data, uri = validate_job(exp)
    # The lazy boundary: the engine and the trainer import Keras, which may happen only now
    # that validate_job chose the backend (and nothing is imported for `tuning --help`).
    engine_cls = engines.load(exp.study.engine)
    from tuning.trial import Trainer

    tracker, parent = open_parent(exp, data, uri, engine_cls.parent_tags(exp))
    # The time budget counts from the start of the job, and it is a deadline: no trial starts
    # after it, and the trial in flight stops at its next epoch end.
    deadline = t0 + exp.study.timeout if exp.study.timeout else None
    # With a re-check, the search leaves the last 30 % of the budget to it.
    search_deadline = (
        t0 + exp.study.timeout * (1 - RECHECK_SHARE)
        if exp.study.timeout and exp.study.recheck_top
        else deadline
    )
    # Choosing an ensemble loads and scores its candidates: it gets the budget's last 2 %.
    recheck_deadline = (
        deadline - exp.study.timeout * ENSEMBLE_SHARE
        if deadline is not None and exp.study.timeout and exp.study.ensemble_top >= 2
        else deadline
    )
    trainer = Trainer(exp, data=data, parent=parent)
    ctx = JobContext(exp, data, tracker, parent, say, trainer, t0, search_deadline, progress)
    engine = engine_cls(ctx)
    timings = {"setup": 0.0, "loop": 0.0, "finish": 0.0}
    status, lost = "FAILED", False
    try:
        described = engine.open()
        _say_opened(ctx, described)
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
                result = _finish(engine, ctx, timings, status=status, report_table=report_table)
    finally:
        trainer.cleanup()
        engine.close()
        gc.unfreeze()  # frozen by open_job: let this job's objects be collected afterwards
        if not lost:
            parent.end(status)
    return result


def _say_opened(ctx: JobContext, described: str) -> None:
    tracker, exp = ctx.tracker, ctx.exp
    ctx.say(
        f"{described}; MLflow experiment {tracker.experiment_name!r} ({redact(tracker.uri)}), "
        f"parent run {ctx.parent.run_id}; data {ctx.data.name} {ctx.data.sizes()}"
    )
    if tracker.adopted_run_id and tracker.experiment_name != exp.mlflow_experiment:
        ctx.say(
            f"note: `mlflow run` put this job in MLflow experiment "
            f"{tracker.experiment_name!r}; pass --experiment-name {exp.mlflow_experiment} "
            "to keep it with the study's other runs"
        )


# -- re-checking the top trials from other initial weights --------------------------------


def recheck(engine: Engine, ctx: JobContext, *, deadline: float | None) -> list[Rechecked]:
    """Train the search's top ``study.recheck_top`` trials again from other initial weights,
    rank them by the mean of all their runs, and make the winner this job's best model.

    One score per configuration is one draw of the noise in its training (~0.01 accuracy on
    Fashion-MNIST between seeds): the top trial is often the luckiest, not the best. Each
    re-run is an MLflow run ``trial-<n>-recheck-<round>`` nested under its trial's run; the
    parent run gets ``recheck.json`` and the tag ``best_by_mean``. With a time budget, each
    re-run gets an equal share of what is left, and while a whole round's time is left after a
    round (the re-runs stopped early), another round runs, up to ``RECHECK_ROUNDS``, rather
    than leave the budget unspent. Nothing happens with fewer than two complete trials, and
    the re-runs stop at ``deadline``. :func:`settle_model` then picks the model.
    """
    k = ctx.exp.study.recheck_top
    top = engine.ranked(k) if k else []
    if len(top) < 2:
        return []
    done = {r.number: Rechecked(r.number, r.value) for r in top}
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
            done[r.number].add(*_retrain(ctx, r, round_, deadline=end))
        else:
            last_round = time.perf_counter() - started
            continue
        break
    checked = [c for c in done.values() if c.values]
    if len(checked) < 2:
        return checked
    trainer = ctx.trainer
    winner = checked[0]
    for c in checked[1:]:
        if c.mean is not None and (winner.mean is None or trainer.better(c.mean, winner.mean)):
            winner = c
    table = [dataclasses.asdict(c) | {"paths": None} for c in checked]
    ctx.parent.log_text(json.dumps(table, indent=2), "recheck.json")
    ctx.parent.set_tags({"best_by_mean": winner.number})
    metric = ctx.exp.objective.metric
    shown = ", ".join(f"#{c.number} {c.first:.4f}/{c.shown()}" for c in checked)
    ctx.say(f"recheck ({metric}, first/re-runs): {shown}; best by mean: trial {winner.number}")
    checked.sort(key=lambda c: c is not winner)  # the winner first, then the search's order
    return checked


@dataclasses.dataclass
class Rechecked:
    """One top trial and its re-runs: its first value, the re-runs' values, their mean."""

    number: int
    first: float
    values: list[float | None] = dataclasses.field(default_factory=list)
    seeds: list[int] = dataclasses.field(default_factory=list)
    paths: list[Path | None] = dataclasses.field(default_factory=list)
    mean: float | None = None

    def add(self, value: float | None, seed: int, path: Path | None) -> None:
        """One more re-run; a diverged one (``None``) ranks the configuration last."""
        self.values.append(value)
        self.seeds.append(seed)
        self.paths.append(path)
        finite = [v for v in self.values if v is not None]
        self.mean = (
            (self.first + sum(finite)) / (1 + len(finite)) if len(finite) == len(self.values)
            else None
        )  # fmt: skip

    def shown(self) -> str:
        return ",".join("-" if v is None else f"{v:.4f}" for v in self.values)


def _retrain(
    ctx: JobContext, r: Ranked, round_: int, *, deadline: float | None
) -> tuple[float | None, int, Path | None]:
    """Train ``r``'s configuration from other initial weights, logged under its trial's run."""
    exp, trainer = ctx.exp, ctx.trainer
    seed = exp.study.seed + r.number + RECHECK_SEED * round_
    max_epochs = exp.training.max_epochs
    logged = trainer.logged_params(r.params)  # type: ignore[arg-type]
    with ctx.tracker.trial_run(
        ctx.parent, number=r.number, params=logged, recheck=(round_, r.run_id)
    ) as run:
        run.set_tags({"seed": seed})

        def on_epoch(epoch: int, logs: dict[str, float]) -> None:
            check_stop()
            run.log_epoch(epoch, logs)
            if deadline is not None and time.perf_counter() >= deadline:
                raise StopTraining(f"cut after epoch {epoch + 1} at its share of the time budget")

        try:
            model = trainer.build(r.params, number=r.number, max_epochs=max_epochs, seed=seed)  # type: ignore[arg-type]
            result = trainer.train(model, r.params, max_epochs=max_epochs, on_epoch=on_epoch)  # type: ignore[arg-type]
        except TrialFailed as e:  # this seed diverged: the configuration ranks last
            run.set_tags({"reason": str(e)})
            return None, seed, None
        path = Path(trainer.tmp.name) / f"recheck-{r.number}-{round_}.keras"
        model.save(path)
        run.log_metrics(
            {
                "objective": result.value,
                "best_epoch": result.best_epoch,
                "epochs_trained": run.epochs,
            }
        )
    return result.value, seed, path


# -- the job's model: the best by the re-check, or an ensemble -----------------------------


def settle_model(ctx: JobContext, checked: list[Rechecked]) -> None:
    """Make the job's model the re-check's winner (the best of its runs), or, with
    ``study.ensemble_top`` of 2 or more, an average of the job's best models where it scores
    better on the validation rows than the best alone.

    The candidates: the search's kept models (its ``ensemble_top`` best) and every re-run,
    ranked by their own validation value (:func:`tuning.ensemble.choose`). Where no average
    beats the best alone, the model stays the re-check's winner.
    """
    from tuning import ensemble  # imports Keras: only once the job chose the backend

    trainer, exp = ctx.trainer, ctx.exp
    winner = _winner(trainer, checked)
    if winner is None:
        return
    trainer.adopt(winner.path, winner.value, winner.number)
    candidates = [_kept_member(k) for k in trainer.kept]
    for c in checked:
        candidates += _run_members(c)
    top = exp.study.ensemble_top
    if top < 2 or len(candidates) < 2 or exp.tracking.log_models == "none":
        return
    started = time.perf_counter()
    settings = {"loss": exp.training.loss, "output_activation": exp.training.output_activation}
    choice = ensemble.choose(
        candidates, data=ctx.data, metric=exp.objective.metric,
        direction=exp.objective.direction, top=top, **settings,
    )  # fmt: skip
    labels = [m.label for m in choice.members] if choice.n > 1 else [winner.label]
    table = {
        "ranked": [dataclasses.asdict(m) | {"path": None} for m in choice.ranked],
        "scores": choice.scores,
        "chosen": labels,
    }
    ctx.parent.log_text(json.dumps(table, indent=2), "ensemble.json")
    metric, shown = exp.objective.metric, ", ".join(f"{s:.4f}" for s in choice.scores)
    if choice.n == 1:
        ctx.say(f"ensemble: no average beats the best alone ({metric} of the top 1..n: {shown})")
        return
    model = ensemble.average([m.path for m in choice.members], data=ctx.data, **settings)
    path = Path(trainer.tmp.name) / "ensemble.keras"
    model.save(path)
    trainer.adopt(path, choice.value, choice.members[0].number)
    trainer.single, trainer.members = winner, labels
    ctx.say(
        f"ensemble: {len(labels)} models ({', '.join('#' + x for x in labels)}) score {metric} "
        f"{choice.value:.4f} together (top 1..n: {shown}) in {time.perf_counter() - started:.1f} s"
    )


def _winner(trainer: Trainer, checked: list[Rechecked]) -> ensemble.Member | None:
    """The model the job keeps without an ensemble: the best run of the re-check's winner
    (``checked[0]``), else the search's best."""
    kept = {k.number: k for k in trainer.kept}
    if checked:
        c = checked[0]
        runs = _run_members(c)
        if c.number in kept:
            runs.append(_kept_member(kept[c.number]))
        if runs:
            from tuning.train import best_first  # Keras: imported once the backend is fixed

            rank = best_first(trainer.exp.objective.direction)
            return min(runs, key=lambda m: rank(m.value))
    return _kept_member(trainer.kept[0]) if trainer.kept else None


def _kept_member(k: Kept) -> ensemble.Member:
    """One of the search's kept models as an ensemble candidate (labelled by its trial)."""
    from tuning import ensemble

    return ensemble.Member(str(k.number), k.number, k.value, k.path)


def _run_members(c: Rechecked) -> list[ensemble.Member]:
    """``c``'s re-runs that trained, as ensemble candidates (``7r1``: trial 7's first re-run)."""
    from tuning import ensemble

    return [
        ensemble.Member(f"{c.number}r{i}", c.number, v, p)
        for i, (v, p) in enumerate(zip(c.values, c.paths, strict=True), start=1)
        if v is not None and p is not None
    ]


# -- finishing a job: the steps, in order --------------------------------------------------


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
    try:
        _record_best_trial(outcome, ctx.parent)
        if ctx.trainer.has_best_model():
            model_uri = ctx.trainer.log_best_model(metrics)
            champion = _register_champion(ctx, model_uri)
        _log_reports(engine, ctx, metrics)
    finally:
        now = time.perf_counter()
        metrics["job_seconds"] = now - ctx.t0
        timings["finish"] = now - finish_start
        breakdown = time_breakdown(ctx.trainer.timings, timings, now - ctx.t0)
        metrics.update({f"seconds_{k}": v for k, v in breakdown.items() if k != "fraction"})
        metrics["study_tracking_fraction"] = breakdown["fraction"]
        ctx.parent.log_metrics(metrics)
    result = JobResult(
        study_name=ctx.exp.study_name,
        parent_run_id=ctx.parent.run_id,
        experiment_id=ctx.tracker.experiment_id,
        tracking_uri=ctx.tracker.uri,
        trials_run=ctx.trainer.trials_run,
        counts=outcome.counts,
        best_value=outcome.best_value,
        best_trial=outcome.best_trial,
        best_params=outcome.best_params,
        model_uri=model_uri,
        seconds=time.perf_counter() - ctx.t0,
        status=status,
        champion=champion,
        timings=breakdown,
        test_scores=test_scores(metrics),
        single_test_scores=test_scores(metrics, "single_test_"),
    )
    for line in summary_lines(engine, ctx, result, outcome, report_table=report_table):
        ctx.say(line)
    return result


def _outcome_metrics(outcome: Outcome, ctx: JobContext) -> dict[str, float | None]:
    counts = outcome.counts
    metrics: dict[str, float | None] = {
        f"n_{k}": v for k, v in counts.items() if k in ("complete", "pruned", "fail")
    }
    metrics["n_trials"] = sum(counts.values())
    metrics["job_trials"] = ctx.trainer.trials_run
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
    exp, trainer = ctx.exp, ctx.trainer
    if not exp.tracking.register_as or trainer.best_value is None:
        return None
    return ctx.parent.register_champion(
        name=exp.tracking.register_as,
        model_uri=model_uri,
        value=trainer.best_value,
        metric=exp.objective.metric,
        direction=exp.objective.direction,
        data_key=exp.data_key(),
        trial=trainer.best_trial,
        compare=lambda new, old: _paired_test(ctx, new, old),
        alpha=exp.tracking.champion_alpha,
    )


def _paired_test(ctx: JobContext, challenger_uri: str, champion_uri: str) -> tuple[str, float]:
    """Both logged models predict this job's validation rows (raw, as served); paired test."""
    rows = ctx.data.validation_rows()
    return champion.paired_test(
        ctx.data.task,
        ctx.trainer.validation_truth(),
        tracking.predict(challenger_uri, rows),
        tracking.predict(champion_uri, rows),
        metric=ctx.exp.objective.metric,
    )


def _log_reports(engine: Engine, ctx: JobContext, metrics: dict[str, float | None]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for path in engine.reports(Path(tmp)):
            ctx.parent.log_artifact(path)
    text = engine.summary_markdown(
        test_scores=test_scores(metrics), seconds=time.perf_counter() - ctx.t0
    )
    if text is not None:
        ctx.parent.log_text(text, "summary.md")


def time_breakdown(
    trials: dict[str, float], job: dict[str, float], job_seconds: float
) -> dict[str, float]:
    """Where the job's time went, in seconds, and study + tracking as a fraction of it.

    ``compile`` is the first epochs' time above a typical epoch (``trial.compile_seconds``);
    ``fit`` is ``model.fit`` without it and the per-epoch hooks; ``study_tracking`` is the
    rest of the trial loop: sampling, the study's storage, MLflow logging, callbacks and the
    hooks.

    Args:
        trials: The trainer's sums: ``build``, ``fit``, ``hooks``, ``compile``.
        job: The job's phases: ``setup``, ``loop``, ``finish``.
        job_seconds: The whole job.
    """
    fit = trials["fit"] - trials["hooks"]
    study_tracking = max(job["loop"] - trials["build"] - fit, 0.0)
    return {
        "setup": job["setup"],
        "build": trials["build"],
        "compile": trials["compile"],
        "fit": fit - trials["compile"],
        "study_tracking": study_tracking,
        "finish": job["finish"],
        "fraction": study_tracking / job_seconds if job_seconds > 0 else 0.0,
    }


def test_scores(metrics: dict[str, float | None], prefix: str = "test_") -> dict[str, float]:
    """The job's best model's scores on the test split (``test_*`` metrics), loss left out;
    ``prefix="single_test_"``: the best alone beside an ensemble."""
    return {
        k.removeprefix("single_"): float(v)
        for k, v in metrics.items()
        if k.startswith(prefix) and k != f"{prefix}loss" and v is not None
    }


def summary_lines(
    engine: Engine, ctx: JobContext, result: JobResult, outcome: Outcome, *, report_table: bool
) -> list[str]:
    """The job's terminal summary: trials, time, best trials, best model, champion, UI link."""
    added, breakdown = outcome.added, result.timings
    lines = [
        f"job {result.status.lower()}: {result.trials_run} trial(s) run "
        f"({added.get('complete', 0)} complete, {added.get('pruned', 0)} pruned, "
        f"{added.get('fail', 0)} failed) in {result.seconds:.1f}s; "
        f"{engine.noun} has {sum(outcome.counts.values())} trials",
        f"time: setup {breakdown['setup']:.1f}s, build {breakdown['build']:.1f}s, "
        f"compile {breakdown['compile']:.1f}s, fit {breakdown['fit']:.1f}s, "
        f"study+tracking {breakdown['study_tracking']:.1f}s "
        f"({100 * breakdown['fraction']:.1f}%), finish {breakdown['finish']:.1f}s",
    ]
    if report_table:
        lines += engine.summary_lines()
    lines += best_lines(ctx, result)
    if result.champion is not None:
        lines.append(result.champion.describe())
    lines.append(f"MLflow: {tracking.ui_link(ctx.tracker.uri, ctx.tracker.experiment_id)}")
    return lines


def best_lines(ctx: JobContext, result: JobResult) -> list[str]:
    """The study's best trial, and this job's best model with its test score beside its
    validation value."""
    metric, trainer = ctx.exp.objective.metric, ctx.trainer
    shown = ", ".join(f"{k}={v:.4f}" for k, v in result.test_scores.items())
    lines = []
    if result.best_trial is not None and result.best_value is not None:
        same = result.best_trial == trainer.best_trial and not trainer.members
        test = f" {shown}" if shown and same else ""
        lines.append(
            f"best: trial {result.best_trial} {metric}={result.best_value:.4f}{test} "
            f"{result.best_params}"
        )
    if result.model_uri:
        value = f"{metric}={trainer.best_value:.4f}" if trainer.best_value is not None else ""
        what = f"trial {trainer.best_trial}"
        if trainer.members:
            alone = ", ".join(f"{k}={v:.4f}" for k, v in result.single_test_scores.items())
            what = (
                f"an average of {len(trainer.members)}: "
                f"{', '.join('#' + m for m in trainer.members)}; the best alone: {alone}"
            )
        lines.append(
            f"this job's best model ({what}): "
            f"{', '.join(x for x in (value, shown) if x)}; {result.model_uri}"
        )
    return lines
