"""What a job tells a person in the terminal: its first line, each trial's line, its summary.

Owns the terminal text of a job, whichever engine runs it (as KerasTuner's ``Display`` is for
its oracles): the line that opens a job, one line per trial (:func:`trial_line`, used by every
engine), and the closing summary (trials and where the time went, the best trials, the job's
model with its test score, the champion, the MLflow link), plus the figures it is made of
(:func:`time_breakdown`, :func:`test_scores`). Text only: nothing here trains, reads a store or
decides anything.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tuning.config import redact

if TYPE_CHECKING:
    from tuning.engines.base import Engine, JobContext, Outcome
    from tuning.job import JobResult

__all__ = [
    "best_lines",
    "opened_lines",
    "summary_lines",
    "test_scores",
    "time_breakdown",
    "trial_line",
]


def trial_line(
    number: int,
    state: str,
    *,
    metric: str,
    value: float | None,
    epochs: int,
    seconds: float,
    best: str = "",
    reason: str = "",
) -> str:
    """One trial's line: ``trial   3 pruned   val_accuracy=0.8299 epochs=4 1.5s  best ...``."""
    shown = f"{metric}={value:.4f}" if value is not None else ""
    line = f"trial {number:>3} {state:<8} {shown} epochs={epochs} {seconds:.1f}s"
    if best:
        line += f"  {best}"
    if reason:
        line += f"  [{reason}]"
    return line


def opened_lines(ctx: JobContext, described: str) -> list[str]:
    """The job's first line (the search, the MLflow experiment and run, the data), and a note
    when ``mlflow run`` put the job in another MLflow experiment than the study's."""
    tracker, exp = ctx.tracker, ctx.exp
    lines = [
        f"{described}; MLflow experiment {tracker.experiment_name!r} ({redact(tracker.uri)}), "
        f"parent run {ctx.parent.run_id}; data {ctx.data.name} {ctx.data.sizes()}"
    ]
    if tracker.adopted_run_id and tracker.experiment_name != exp.mlflow_experiment:
        lines.append(
            f"note: `mlflow run` put this job in MLflow experiment "
            f"{tracker.experiment_name!r}; pass --experiment-name {exp.mlflow_experiment} "
            "to keep it with the study's other runs"
        )
    return lines


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
    from tuning import tracking  # MLflow: the job has long imported it by now

    added, breakdown = outcome.added, result.timings
    lines = [
        f"job {result.status.lower()}: {result.trials_run} trial(s) run "
        f"({added.get('complete', 0)} complete, {added.get('pruned', 0)} pruned, "
        + (f"{added['not_learning']} not learning, " if added.get("not_learning") else "")
        + f"{added.get('fail', 0)} failed) in {result.seconds:.1f}s; "
        f"{engine.noun} has {sum(outcome.counts.values())} trials",
        f"time: setup {breakdown['setup']:.1f}s, build {breakdown['build']:.1f}s, "
        f"compile {breakdown['compile']:.1f}s, fit {breakdown['fit']:.1f}s, "
        f"study+tracking {breakdown['study_tracking']:.1f}s "
        f"({100 * breakdown['fraction']:.1f}%), finish {breakdown['finish']:.1f}s",
    ]
    counts = ctx.runner.states.counts
    if counts["epochs_continued"] or counts["epochs_thrown_away"]:
        configs = int(counts["configs_evaluated"])
        trained = int(counts["epochs_trained_total"])
        lines.append(
            f"epochs: {trained} trained for {configs} configuration(s)"
            f"{f' ({trained / configs:.1f} each)' if configs else ''}, "
            f"{int(counts['epochs_continued'])} of them continuing a saved state, "
            f"{int(counts['epochs_thrown_away'])} thrown away (trained again from new weights)"
        )
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
    metric, models = ctx.exp.objective.metric, ctx.runner.models
    shown = ", ".join(f"{k}={v:.4f}" for k, v in result.test_scores.items())
    lines = []
    if result.best_trial is not None and result.best_value is not None:
        same = result.best_trial == models.best_trial and not models.members
        test = f" {shown}" if shown and same else ""
        lines.append(
            f"best: trial {result.best_trial} {metric}={result.best_value:.4f}{test} "
            f"{result.best_params}"
        )
    if result.model_uri:
        value = f"{metric}={models.best_value:.4f}" if models.best_value is not None else ""
        what = f"trial {models.best_trial}"
        if models.members:
            alone = ", ".join(f"{k}={v:.4f}" for k, v in result.single_test_scores.items())
            what = (
                f"an average of {len(models.members)}: "
                f"{', '.join('#' + m for m in models.members)}; the best alone: {alone}"
            )
        lines.append(
            f"this job's best model ({what}): "
            f"{', '.join(x for x in (value, shown) if x)}; {result.model_uri}"
        )
    return lines
