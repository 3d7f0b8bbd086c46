"""The KerasTuner engine: the same job run by a KerasTuner tuner, recorded exactly like Optuna's.

Owns the KerasTuner side of a job: the tuner (random, bayesian or hyperband) over the same search
space (``SearchSpace.to_keras_tuner``), its project folder ``kt_studies/<study name>`` in the
current folder (next to the default Optuna storage file), resumed on the next run
(``overwrite=False``), and a ``run_trial`` that runs each configuration through the job's
:class:`~tuning.trial.TrialRunner`, so its runs carry the same parameter, metric and tag names as
the Optuna engine's. It does not touch the Optuna study
(``study.storage`` is validated but unused) and does not prune: the pruner settings are ignored.
Hyperband's ``tuner/epochs`` is the trial's ``max_epochs``. A Hyperband trial below the top
rung keeps its training state (``study.continue_trials``, issue 26), and the trial that promotes
it (``tuner/trial_id``, ``tuner/initial_epoch``) continues from there in its own run, which logs
the earlier epochs first (tag ``continued_from``), instead of training from new weights
(KerasTuner's own warm start loads the earlier trial's checkpoint the same way). The search does
not stop at the time budget mid-trial, so no trial is cut for the re-check to continue.
A trial that is not learning (:class:`~tuning.errors.NotLearning`) ends COMPLETED
with the value it reached and the extra metric ``not_learning`` = 1 in its trial: KerasTuner's
Bayesian oracle skips FAILED trials (it would sample the region again) but learns from a low
score; the engine counts it as ``not_learning`` and never ranks it (no re-check, not the best).
"""

from __future__ import annotations

import time
from pathlib import Path

import keras_tuner as kt

from tuning.config import Experiment
from tuning.engines.base import Engine, JobContext, Outcome, Ranked
from tuning.errors import NotLearning, TrialFailed
from tuning.summary import trial_line
from tuning.tracking import TrialRun
from tuning.trial import KeepState, TrialResult

__all__ = ["KT_DIRECTORY", "NOT_LEARNING_METRIC", "KerasTunerEngine"]

KT_DIRECTORY = "kt_studies"
# The metric a KerasTuner trial that did not learn carries (1.0) beside its objective.
NOT_LEARNING_METRIC = "not_learning"
_TUNERS: dict[str, type[kt.Tuner]] = {
    "random": kt.RandomSearch,
    "bayesian": kt.BayesianOptimization,
    "hyperband": kt.Hyperband,
}


def _make_tuner(exp: Experiment, *, engine: KerasTunerEngine) -> kt.Tuner:
    """The configured KerasTuner tuner, its ``run_trial`` delegated to ``engine``."""
    base = _TUNERS[exp.study.tuner]

    class _HyperModel(kt.HyperModel):  # type: ignore[misc]
        def build(self, hp: kt.HyperParameters) -> None:  # declares the space only
            exp.space.to_keras_tuner(hp)

    def run_trial(self: kt.Tuner, trial: kt.engine.trial.Trial, *args: object, **kwargs: object):  # noqa: ANN202
        return engine.run_trial(trial)

    tuner_cls = type(f"Tuning{base.__name__}", (base,), {"run_trial": run_trial})
    kwargs: dict[str, object] = {
        "hypermodel": _HyperModel(),
        "objective": kt.Objective(exp.objective.metric, direction=exp.objective.keras_mode),
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


class KerasTunerEngine(Engine):
    """One job's trials in a KerasTuner project (see :class:`~tuning.engines.base.Engine`)."""

    name = "keras_tuner"
    noun = "KerasTuner project"

    def __init__(self, ctx: JobContext) -> None:
        super().__init__(ctx)
        self.tuner: kt.Tuner | None = None
        self.run_ids: dict[int, str] = {}
        self.numbers: set[int] = set()
        self.not_learning: set[int] = set()  # this job's; earlier jobs' carry the metric

    @classmethod
    def parent_tags(cls, exp: Experiment) -> dict[str, str]:
        return {"engine": cls.name, "tuner": exp.study.tuner}

    def open(self) -> str:
        exp = self.ctx.exp
        self.tuner = _make_tuner(exp, engine=self)
        n = len(self.tuner.oracle.trials)
        return (
            f"KerasTuner {exp.study.tuner} project {exp.study_name!r} "
            f"({f'resumed with {n} trials' if n else 'new'}, {KT_DIRECTORY}/)"
        )

    def search(self) -> None:
        assert self.tuner is not None, "open() first"
        self.tuner.search(verbose=0)

    def run_trial(self, trial: kt.engine.trial.Trial) -> dict[str, float]:
        """Train one KerasTuner trial and return its objective (KerasTuner's ``run_trial``)."""
        ctx, exp = self.ctx, self.ctx.exp
        number = int(trial.trial_id)
        params = exp.space.to_keras_tuner(trial.hyperparameters)
        values = trial.hyperparameters.values
        max_epochs = int(values.get("tuner/epochs") or exp.training.max_epochs)
        earlier = values.get("tuner/trial_id")
        promoted = (int(earlier), int(values.get("tuner/initial_epoch") or 0)) if earlier else None
        keep = None
        if exp.study.continue_trials and exp.study.tuner == "hyperband":
            if max_epochs < exp.training.max_epochs:  # a lower rung: it may be promoted
                keep = KeepState(when=lambda fit: True)
        self.numbers.add(number)
        started = time.perf_counter()
        ended: list[TrialResult] = []  # the runner's result, also of a failed trial

        def opened(run: TrialRun) -> None:
            self.run_ids[number] = run.run_id

        state, reason = "failed", ""
        value: float | None = None
        try:
            result = ctx.runner.run(
                params, number=number, max_epochs=max_epochs, on_open=opened,
                on_end=ended.append, keep_state=keep, promoted_from=promoted,
            )  # fmt: skip
            assert result.value is not None  # the fit returned
            state, value = "complete", result.value
            return {exp.objective.metric: result.value}
        except NotLearning as e:
            if e.value is None:  # no finite value to tell the oracle: failed
                raise kt.errors.FailedTrialError(str(e)) from e
            self.not_learning.add(number)
            state, value, reason = "not_learning", e.value, str(e)
            return {exp.objective.metric: e.value, NOT_LEARNING_METRIC: 1.0}
        except TrialFailed as e:
            # FAILED in KerasTuner (no retry); the search goes on, as with Optuna's catch=.
            raise kt.errors.FailedTrialError(str(e)) from e
        finally:
            ctx.say(
                trial_line(
                    number,
                    state,
                    metric=exp.objective.metric,
                    value=value,
                    epochs=ended[0].epochs if ended else 0,
                    seconds=time.perf_counter() - started,
                    reason=reason,
                )
            )

    def _learned(self, trial: kt.engine.trial.Trial) -> bool:
        """Whether ``trial`` was not ended as not learning (this job's, or an earlier one's)."""
        return int(trial.trial_id) not in self.not_learning and not trial.metrics.exists(
            NOT_LEARNING_METRIC
        )

    def _best(self, k: int) -> list[kt.engine.trial.Trial]:
        """The ``k`` best scored trials that learned, best first."""
        assert self.tuner is not None
        oracle = self.tuner.oracle
        best = oracle.get_best_trials(len(oracle.trials))
        return [t for t in best if t.score is not None and self._learned(t)][:k]

    def ranked(self, k: int) -> list[Ranked]:
        if self.tuner is None:
            return []
        space = self.ctx.exp.space
        return [
            Ranked(
                int(t.trial_id),
                float(t.score),
                dict(space.to_keras_tuner(t.hyperparameters.copy())),
                self.run_ids.get(int(t.trial_id), ""),
            )
            for t in self._best(k)
        ]

    def outcome(self) -> Outcome:
        tuner = self.tuner
        trials = list(tuner.oracle.trials.values()) if tuner is not None else []
        counts = {"complete": 0, "pruned": 0, "fail": 0, "running": 0, "not_learning": 0}
        added = dict(counts)
        for t in trials:
            key = {"COMPLETED": "complete", "RUNNING": "running"}.get(str(t.status), "fail")
            if key == "complete" and not self._learned(t):
                key = "not_learning"
            counts[key] += 1
            if int(t.trial_id) in self.numbers:
                added[key] += 1
        best = self._best(1) if tuner is not None else []
        if not best:
            return Outcome(counts=counts, added=added)
        number = int(best[0].trial_id)
        return Outcome(
            counts=counts,
            added=added,
            best_trial=number,
            best_value=float(best[0].score),
            best_params=dict(self.ctx.exp.space.to_keras_tuner(best[0].hyperparameters.copy())),
            best_run_id=self.run_ids.get(number, ""),
        )
