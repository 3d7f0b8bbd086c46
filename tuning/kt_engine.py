"""Running a job with KerasTuner instead of Optuna, recorded in MLflow exactly like an Optuna job.

Owns the KerasTuner side of a job: the tuner (random, bayesian or hyperband) over the same search
space (``space.to_keras_tuner``), its project folder ``kt_studies/<study name>`` in the current
folder (next to the default Optuna storage file), resumed on the next run (``overwrite=False``),
and a ``run_trial`` that trains with ``model.build_model`` / ``train.fit`` (same early stopping,
same NaN guard) and records the trial through ``tracking.Tracker.trial_run`` under the same
parameter, metric and tag names as the Optuna engine. It must not touch the Optuna study
(``study.storage`` is validated but unused), import mlflow (``tracking.py`` does), or prune: the
pruner settings are ignored. Hyperband's ``tuner/epochs`` is used as the trial's ``max_epochs`` and
every trial trains from scratch (no warm start from ``tuner/trial_id``'s checkpoint): a
simplification that costs time, not correctness.
"""

from __future__ import annotations

import gc
import time
from pathlib import Path
from typing import Any

from tuning.config import Experiment, redact
from tuning.errors import TrialFailed
from tuning.study import JobResult, Say, TrialRunnerBase, best_lines, open_job, test_scores

__all__ = ["KT_DIRECTORY", "run_kt_job"]

KT_DIRECTORY = "kt_studies"


def _make_tuner(exp: Experiment, *, runner: _KTRunner) -> Any:
    """The configured KerasTuner tuner, its ``run_trial`` delegated to ``runner``."""
    import keras_tuner as kt

    bases = {
        "random": kt.RandomSearch,
        "bayesian": kt.BayesianOptimization,
        "hyperband": kt.Hyperband,
    }
    base = bases[exp.study.tuner]

    class _HyperModel(kt.HyperModel):  # type: ignore[misc]
        def build(self, hp: Any) -> None:  # declares the space; run_trial builds the model
            exp.space.to_keras_tuner(hp)

    def run_trial(self: Any, trial: Any, *args: Any, **kwargs: Any) -> dict[str, float]:
        return runner.run_trial(trial)

    tuner_cls = type(f"Tuning{base.__name__}", (base,), {"run_trial": run_trial})
    kwargs: dict[str, Any] = {
        "hypermodel": _HyperModel(),
        "objective": kt.Objective(
            exp.objective.metric,
            direction="min" if exp.objective.direction == "minimize" else "max",
        ),
        "seed": exp.study.seed + 1,  # KerasTuner treats seed 0 as "no seed"
        "directory": str(Path.cwd() / KT_DIRECTORY),
        "project_name": exp.study_name,
        "overwrite": False,
    }
    if exp.study.tuner == "hyperband":
        kwargs["max_epochs"] = exp.training.max_epochs
    else:
        kwargs["max_trials"] = exp.study.n_trials
    tuner = tuner_cls(**kwargs)
    done = len(tuner.oracle.trials)
    # max_trials is not part of the saved oracle: count the reloaded trials and add this job's.
    tuner.oracle.max_trials = done + int(exp.study.n_trials or 0)
    return tuner


class _KTRunner(TrialRunnerBase):
    """``run_trial`` and its bookkeeping for one job (KerasTuner's twin of study._TrialRunner)."""

    def __init__(self, exp: Experiment, *, data: Any, tracker: Any, parent: Any, say: Say):
        super().__init__(exp, data=data, tracker=tracker, parent=parent, say=say)
        self.params: dict[int, dict[str, Any]] = {}
        self.run_ids: dict[int, str] = {}

    def run_trial(self, trial: Any) -> dict[str, float]:
        import keras_tuner as kt

        exp = self.exp
        number = int(trial.trial_id)
        params = exp.space.to_keras_tuner(trial.hyperparameters)
        max_epochs = int(
            trial.hyperparameters.values.get("tuner/epochs") or exp.training.max_epochs
        )
        logged = {**self.fixed, "max_epochs": max_epochs, **params}
        logged.setdefault("batch_size", int(params.get("batch_size", exp.training.batch_size)))
        self.params[number] = params
        monitor = exp.objective.metric
        self.trials_run += 1
        started = time.perf_counter()
        state, value, epochs = "failed", None, 0
        try:
            with self.tracker.trial_run(self.parent, number=number, params=logged) as run:
                self.run_ids[number] = run.run_id
                n_params = None
                try:
                    model = self.build(params, number=number, max_epochs=max_epochs)
                    n_params = int(model.count_params())
                    result = self.train(
                        model, params, max_epochs=max_epochs, on_epoch=run.log_epoch
                    )
                    run.log_metrics({"objective": result.value, "best_epoch": result.best_epoch})
                    self.keep_if_best(model, result.value, number)
                    state, value = "complete", result.value
                    return {monitor: result.value}
                finally:
                    epochs = run.epochs
                    run.log_metrics(
                        {
                            "epochs_trained": run.epochs,
                            "n_params": n_params,
                            "train_seconds": time.perf_counter() - started,
                        }
                    )
        except TrialFailed as e:
            # FAILED in KerasTuner (no retry); the search goes on, as with Optuna's catch=.
            raise kt.errors.FailedTrialError(str(e)) from e
        finally:
            shown = f"{monitor}={value:.4f}" if value is not None else ""
            self.say(
                f"trial {number:>3} {state:<8} {shown} epochs={epochs} "
                f"{time.perf_counter() - started:.1f}s"
            )


def run_kt_job(exp: Experiment, *, say: Say = print) -> JobResult:
    """Run one job of ``exp`` with KerasTuner: its trials, their runs, and the parent's summary.

    Validation comes first (``study.validate_job``), then the MLflow experiment and parent run
    (tagged ``engine=keras_tuner``), then the tuner, which reloads its project if it exists.

    Raises:
        ConfigError: data unavailable or tracking store unusable.
        KeyboardInterrupt: after ending the trial in flight and the parent run as KILLED.
    """

    t0 = time.perf_counter()
    data, uri, tracker, parent = open_job(exp, engine="keras_tuner", tuner=exp.study.tuner)
    status = "FAILED"
    runner = _KTRunner(exp, data=data, tracker=tracker, parent=parent, say=say)
    tuner = None
    try:
        resolved = exp.resolved()
        resolved["study"]["storage"] = redact(resolved["study"]["storage"])
        parent.log_params({k: v for k, v in resolved.items() if k != "search_space"})
        tuner = _make_tuner(exp, runner=runner)
        n_before = len(tuner.oracle.trials)
        say(
            f"KerasTuner {exp.study.tuner} project {exp.study_name!r} "
            f"({f'resumed with {n_before} trials' if n_before else 'new'}, {KT_DIRECTORY}/); "
            f"MLflow experiment {tracker.experiment_name!r} ({redact(uri)}), parent run "
            f"{parent.run_id}; data {data.name} {data.sizes()}"
        )
        try:
            tuner.search(verbose=0)
            status = "FINISHED"
        except KeyboardInterrupt:
            status = "KILLED"
            say("interrupted: the trial in flight is ended KILLED; recording the best so far")
            raise
    finally:
        try:
            result = _finish(exp, tuner, runner, t0=t0, status=status)
        finally:
            runner.tmp.cleanup()
            parent.end(status)
            gc.unfreeze()  # frozen by open_job: let the next job's leftovers be collected
    return result


def _finish(
    exp: Experiment, tuner: Any, runner: _KTRunner, *, t0: float, status: str
) -> JobResult:
    """Record the project's best trial so far on the parent run, with this job's best model."""
    parent = runner.parent
    trials = list(tuner.oracle.trials.values()) if tuner is not None else []
    counts = {"complete": 0, "fail": 0, "running": 0}
    for t in trials:
        key = {"COMPLETED": "complete", "RUNNING": "running"}.get(str(t.status), "fail")
        counts[key] += 1
    best = tuner.oracle.get_best_trials(1) if tuner is not None else []
    best_trial = best[0] if best and best[0].score is not None else None
    best_params: dict[str, Any] = {}
    metrics: dict[str, float | None] = {
        "n_complete": counts["complete"],
        "n_fail": counts["fail"],
        "n_trials": len(trials),
        "job_trials": runner.trials_run,
    }
    model_uri = None
    best_number = int(best_trial.trial_id) if best_trial is not None else None
    if best_trial is not None:
        best_params = exp.space.to_keras_tuner(best_trial.hyperparameters.copy())
        metrics["best_value"] = float(best_trial.score)
        parent.log_params(
            {"best_trial": best_number, **{f"best_{k}": v for k, v in best_params.items()}}
        )
        parent.set_tags(
            {
                "best_trial": best_number,
                "best_trial_run_id": runner.run_ids.get(best_number or 0, ""),
            }
        )
    try:
        if runner.best_trial is not None and runner.best_model_path.exists():
            model_uri = runner.log_best_model(metrics)
    finally:
        metrics["job_seconds"] = time.perf_counter() - t0
        parent.log_metrics(metrics)
    result = JobResult(
        study_name=exp.study_name,
        parent_run_id=parent.run_id,
        experiment_id=runner.tracker.experiment_id,
        tracking_uri=runner.tracker.uri,
        trials_run=runner.trials_run,
        counts=counts,
        best_value=float(best_trial.score) if best_trial is not None else None,
        best_trial=best_number,
        best_params=best_params,
        model_uri=model_uri,
        seconds=time.perf_counter() - t0,
        status=status,
        test_scores=test_scores(metrics),
    )
    say = runner.say
    say(
        f"job {status.lower()}: {runner.trials_run} trial(s) run in {result.seconds:.1f}s; "
        f"KerasTuner project has {len(trials)} trials"
    )
    for line in best_lines(
        runner,
        best_number=result.best_trial,
        best_value=result.best_value,
        best_params=best_params,
        scores=result.test_scores,
        model_uri=model_uri,
    ):
        say(line)
    from tuning.tracking import ui_link

    say(f"MLflow: {ui_link(runner.tracker.uri, runner.tracker.experiment_id)}")
    return result
