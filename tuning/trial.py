"""One configuration's trial, written once: build -> train -> record -> keep, for every engine.

Owns :class:`TrialRunner`, the one place that runs a configuration (as scikit-learn's
``_fit_and_score`` is for its searches): it opens the trial's MLflow run (``Tracker.trial_run``,
ended FINISHED/FAILED/KILLED whatever happens), builds and trains the model with the hooks an
engine gives it, logs every epoch and the trial's figures, keeps the model if it is among the
job's best, and returns a plain :class:`TrialResult`. Both engines and the re-check call it; an
engine only chooses configurations and adds its per-epoch hook (report and prune, its slice of
the budget). After every epoch it also asks the job's :class:`~tuning.learning.LearningRule`
(``training.stop_not_learning``, its baseline computed once here) and ends a trial that is not
learning (:class:`~tuning.errors.NotLearning`: its run tagged ``state=not_learning``, no model
kept). Its parts, each owning its own state:

- :class:`Trainer`: Keras. A fresh session and the trial's seed before each build, the fit with
  the experiment's early stopping (``train.fit``), the seconds spent building, compiling and
  fitting.
- :class:`ModelKeeper`: the job's kept models (the best, or the top ``study.ensemble_top`` for an
  ensemble) as ``.keras`` files in a temporary folder, the model the job adopts in the end (the
  re-check's winner, an ensemble), and that model scored on the test split and logged.

It knows nothing of Optuna or KerasTuner.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import keras
import numpy as np
import pandas as pd

from tuning import backend, train
from tuning.config import Experiment
from tuning.data import Dataset
from tuning.data.encoding import decode, load_keras
from tuning.errors import NotLearning
from tuning.learning import LearningRule
from tuning.model import build_model, compile_for_task
from tuning.process import check_stop
from tuning.tracking import ParentRun, Tracker, TrialRun
from tuning.train import EpochHook, FitResult

if TYPE_CHECKING:
    from tuning.ensemble import Member

__all__ = [
    "Kept",
    "ModelKeeper",
    "ParamValue",
    "Params",
    "Trainer",
    "TrialResult",
    "TrialRunner",
    "compile_seconds",
    "is_finite",
    "validation_truth",
]

ParamValue = bool | int | float | str | None
Params = Mapping[str, ParamValue]


def _whole(params: Params, key: str, default: int) -> int:
    """``params[key]`` as a whole number, ``default`` where the space does not set it."""
    value = params.get(key)
    return default if value is None else int(value)


def is_finite(value: object) -> bool:
    """Whether ``value`` is a finite number (a metric Optuna can take)."""
    try:
        return math.isfinite(float(value))  # type: ignore[arg-type]  # a TypeError is the answer
    except (TypeError, ValueError):
        return False


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


@dataclasses.dataclass(frozen=True)
class Kept:
    """One of the search's best models, saved: its objective value, its trial, its file."""

    value: float
    number: int
    path: Path


@dataclasses.dataclass
class TrialResult:
    """What running one configuration produced (:meth:`TrialRunner.run`).

    Attributes:
        number: The trial's number.
        run_id: Its MLflow run.
        epochs: Epochs trained (logged), also when the trial failed or was pruned.
        seconds: Wall time from the build to the end.
        n_params: The model's parameters (``None`` when the build failed).
        fit: The fit's result; ``None`` until it returned.
        path: Where a re-check's model was saved (``None`` for a search's trial: the
            :class:`ModelKeeper` decides whether that one is kept).
    """

    number: int
    run_id: str
    epochs: int = 0
    seconds: float = 0.0
    n_params: int | None = None
    fit: FitResult | None = None
    path: Path | None = None

    @property
    def value(self) -> float | None:
        """The objective value (the best epoch's), ``None`` before the fit returned."""
        return self.fit.value if self.fit is not None else None


class Trainer:
    """Builds and trains a configuration's model (Keras), summing where the seconds went.

    Attributes:
        timings: Seconds summed over trials: ``build``, ``fit`` (hooks and compile included),
            ``hooks`` (the engine's per-epoch reporting) and ``compile``.
    """

    def __init__(self, exp: Experiment, *, data: Dataset) -> None:
        self.exp = exp
        self.data = data
        self.timings: dict[str, float] = {"build": 0.0, "fit": 0.0, "hooks": 0.0, "compile": 0.0}

    def logged_params(
        self, params: Params, *, max_epochs: int | None = None
    ) -> dict[str, ParamValue]:
        """What a trial's run records: the training settings, then the trial's parameters."""
        training = self.exp.training
        logged: dict[str, ParamValue] = {
            "max_epochs": max_epochs or training.max_epochs,
            "patience": training.early_stopping.patience,
            **params,
        }
        logged.setdefault("batch_size", _whole(params, "batch_size", training.batch_size))
        return logged

    def build(
        self, params: Params, *, number: int, max_epochs: int, seed: int | None = None
    ) -> keras.Model:
        """A fresh session, the trial's seed (or ``seed``), and the compiled model."""
        started = time.perf_counter()
        exp = self.exp
        train.fresh_session()
        backend.release()
        keras.utils.set_random_seed(exp.study.seed + number if seed is None else seed)
        model = build_model(
            dict(params),
            data=self.data,
            loss=exp.training.loss,
            output_activation=exp.training.output_activation,
            max_epochs=max_epochs,
        )
        self.timings["build"] += time.perf_counter() - started
        return model

    def train(
        self, model: keras.Model, params: Params, *, max_epochs: int, on_epoch: EpochHook
    ) -> FitResult:
        """Fit with the experiment's early stopping (the params may override patience),
        calling ``on_epoch`` after each epoch; times the fit, the hooks and the compile."""
        exp = self.exp
        hooks: list[tuple[float, float]] = []  # (start, end) of each epoch's hook

        def timed(epoch: int, logs: Mapping[str, float]) -> None:
            start = time.perf_counter()
            try:
                on_epoch(epoch, logs)
            finally:
                end = time.perf_counter()
                hooks.append((start, end))
                self.timings["hooks"] += end - start

        fit_start = time.perf_counter()
        try:
            return train.fit(
                model,
                self.data,
                monitor=exp.objective.metric,
                direction=exp.objective.direction,
                batch_size=_whole(params, "batch_size", exp.training.batch_size),
                max_epochs=max_epochs,
                patience=_whole(params, "patience", exp.training.early_stopping.patience),
                min_delta=exp.training.early_stopping.min_delta,
                on_epoch=timed,
                reduce_on_plateau=params.get("lr_schedule") == "reduce_on_plateau",
            )
        finally:
            self.timings["fit"] += time.perf_counter() - fit_start
            self.timings["compile"] += compile_seconds(fit_start, hooks)


class ModelKeeper:
    """The job's kept models, and the one model the job ends with.

    During the search, :meth:`offer` keeps each trial's model that is among the job's
    ``keep_n`` best (``study.ensemble_top``, at least 1); afterwards the job may :meth:`adopt`
    another saved model (the re-check's winner, an ensemble) as its best, and :meth:`log_best`
    scores that one on the test split and logs it. Files live in one temporary folder,
    deleted by :meth:`cleanup`.

    Attributes (read them; only this class's methods change them):
        kept: The search's kept models, best first.
        best_value: The job's model's objective value (``None`` before one).
        best_trial: Its trial number.
        best_model_path: Where it is saved (``None`` until one is).
        single: With an ensemble as the job's model: the best member alone.
        members: The ensemble's members' labels (``7``, ``7r1``); empty without one.
    """

    def __init__(self, exp: Experiment, *, data: Dataset) -> None:
        self.exp = exp
        self.data = data
        self.tmp = tempfile.TemporaryDirectory(prefix="tuning-")
        self.keep_n = max(exp.study.ensemble_top, 1)
        self.enabled = exp.tracking.log_models != "none"
        self.kept: list[Kept] = []
        self.best_value: float | None = None
        self.best_trial: int | None = None
        self.best_model_path: Path | None = None
        self.single: Member | None = None
        self.members: list[str] = []

    def save(self, model: keras.Model, name: str) -> Path:
        """Save ``model`` in the keeper's folder as ``name`` (``.keras``); returns its path."""
        path = Path(self.tmp.name) / name
        model.save(path)
        return path

    def offer(self, model: keras.Model, value: float, number: int) -> None:
        """Save ``model`` when it is among the job's ``keep_n`` best so far (the best of them
        is the job's best model); nothing with ``log_models: none``."""
        objective = self.exp.objective
        if not self.enabled:
            return
        if len(self.kept) >= self.keep_n and not objective.better(value, self.kept[-1].value):
            return
        path = self.save(model, f"trial-{number}.keras")
        self.kept = objective.ranked([*self.kept, Kept(value, number, path)], lambda k: k.value)
        for dropped in self.kept[self.keep_n :]:
            dropped.path.unlink(missing_ok=True)
        del self.kept[self.keep_n :]
        if objective.better(value, self.best_value):
            self.best_value, self.best_trial, self.best_model_path = value, number, path

    def adopt(
        self,
        path: Path,
        value: float,
        number: int,
        *,
        single: Member | None = None,
        members: Sequence[str] = (),
    ) -> None:
        """Make the model saved at ``path`` the job's (the re-check's winner; an ensemble of
        ``members``, whose best alone is ``single``)."""
        self.best_value, self.best_trial, self.best_model_path = value, number, path
        self.single, self.members = single, list(members)

    def has_best_model(self) -> bool:
        """Whether a model was kept (``log_models: none`` keeps none)."""
        return self.best_model_path is not None and self.best_model_path.exists()

    def log_best(self, parent: ParentRun, metrics: dict[str, float | None]) -> str:
        """Score the job's model on the test split and log it on the parent run.

        Adds ``test_<metric>`` (and, beside an ensemble, ``single_test_<metric>``) and
        ``job_best_value`` to ``metrics``; returns the model's URI.
        """
        data, exp = self.data, self.exp
        # The test split is touched here only: to score the job's model (and, beside an
        # ensemble, the best alone, for the record: nothing is chosen by it).
        assert self.best_model_path is not None, "log_best needs has_best_model()"
        scored = {"test": self.best_model_path}
        if self.members and self.single is not None:
            scored["single_test"] = self.single.path
        for prefix, path in scored.items():
            model = compile_for_task(
                load_keras(str(path)),
                data,
                loss=exp.training.loss,
                output_activation=exp.training.output_activation,
            )
            scores = model.evaluate(data.x_test, data.y_test, verbose=0, return_dict=True)
            for k, v in scores.items():
                metrics[f"{prefix}_{k}"] = float(v)
        metrics["job_best_value"] = self.best_value
        tags: dict[str, object] = {"model_trial": self.best_trial}
        if self.members:
            tags["model_members"] = ",".join(self.members)
        parent.set_tags(tags)
        meta = {
            **data.serving_meta(),
            "trial": self.best_trial,
            "study": exp.study_name,
            "backend": keras.backend.backend(),
            **({"members": self.members} if self.members else {}),
        }
        return str(
            parent.log_model(
                keras_path=self.best_model_path,
                meta=meta,
                input_example=data.example_rows(5),
                pip_requirements=backend.pip_requirements(),
            )
        )

    def cleanup(self) -> None:
        """Delete the temporary folder of the kept models."""
        self.tmp.cleanup()


class TrialRunner:
    """Runs one configuration, the same way for every engine and the re-check.

    Attributes (read them; only this class changes them):
        trainer: Builds and trains (Keras); its ``timings`` are the job's.
        models: The job's kept models.
        trials_run: Trials this job ran (re-checks not counted).
        histories: Trial number -> its per-epoch metrics (this job's trials).
        learning: The job's rule for trials that do not learn (``None``: switched off).
    """

    def __init__(
        self, exp: Experiment, *, data: Dataset, tracker: Tracker, parent: ParentRun
    ) -> None:
        self.exp = exp
        self.tracker = tracker
        self.parent = parent
        self.trainer = Trainer(exp, data=data)
        self.models = ModelKeeper(exp, data=data)
        self.trials_run = 0
        self.histories: dict[int, dict[str, list[float]]] = {}
        self.learning = LearningRule.for_job(exp, data)
        if self.learning is not None and self.learning.baseline is not None:
            # Beside the trials' curves in the MLflow UI: the trivial predictor's value.
            parent.log_metrics({f"baseline_{exp.objective.metric}": self.learning.baseline.value})

    def run(
        self,
        params: Params,
        *,
        number: int,
        max_epochs: int | None = None,
        hooks: Sequence[EpochHook] = (),
        seed: int | None = None,
        recheck: tuple[int, str] | None = None,
        on_open: Callable[[TrialRun], None] | None = None,
        on_end: Callable[[TrialResult], None] | None = None,
    ) -> TrialResult:
        """Build, train, record and keep one configuration.

        The trial's MLflow run gets the logged params, every epoch's metrics (``step`` = epoch),
        ``objective`` and ``best_epoch``, a ``cut`` tag when a hook stopped the fit early, and,
        whatever happens, ``epochs_trained``, ``n_params`` and ``train_seconds``. A trial the
        learning rule ends raises :class:`~tuning.errors.NotLearning` after the engine's hooks
        saw its last epoch (its run: ``state=not_learning``); its model is not kept.

        Args:
            params: The configuration (the search space's names, fixed values included).
            number: The trial's number (its run's name and, without ``seed``, its seed).
            max_epochs: Epochs at most (default: ``training.max_epochs``).
            hooks: Called after each epoch with ``(epoch, logs)``, after the stop check and the
                epoch's logging; may raise ``optuna.TrialPruned`` (propagates) or
                :class:`~tuning.errors.StopTraining` (the fit ends with its best weights).
            seed: Other initial weights than the trial's (a re-check's re-run).
            recheck: ``(round, trial_run_id)``: this is a re-run of trial ``number``: its run
                is ``trial-<number>-recheck-<round>`` under the trial's run, its model saved in
                :attr:`TrialResult.path` and not offered to the keeper, and it is not counted
                as a trial.
            on_open: Called with the open run before the build (the engine's records).
            on_end: Called with the result at the end, also when the trial failed, was pruned
                or was interrupted (then ``fit`` is ``None``).

        Returns:
            The trial's result.

        Raises:
            NotLearning: the learning rule ended it (a TrialFailed; the run ends FINISHED).
            TrialFailed: the fit diverged or produced no objective (the run ends FAILED).
            optuna.TrialPruned, KeyboardInterrupt: from a hook or the stop check.
        """
        max_epochs = max_epochs or self.exp.training.max_epochs
        if recheck is None:
            self.trials_run += 1
        logged = self.trainer.logged_params(params, max_epochs=max_epochs)
        with self.tracker.trial_run(
            self.parent, number=number, params=logged, recheck=recheck
        ) as run:
            result = TrialResult(number, run.run_id)
            if seed is not None:
                run.set_tags({"seed": seed})
            if on_open is not None:
                on_open(run)
            started = time.perf_counter()
            try:
                self._train(run, result, params, max_epochs, hooks, seed=seed, recheck=recheck)
                return result
            finally:
                result.epochs, result.seconds = run.epochs, time.perf_counter() - started
                run.log_metrics(
                    {
                        "epochs_trained": result.epochs,
                        "n_params": result.n_params,
                        "train_seconds": result.seconds,
                    }
                )
                if on_end is not None:
                    on_end(result)

    def _train(
        self,
        run: TrialRun,
        result: TrialResult,
        params: Params,
        max_epochs: int,
        hooks: Sequence[EpochHook],
        *,
        seed: int | None,
        recheck: tuple[int, str] | None,
    ) -> None:
        """The body of :meth:`run` inside its MLflow run: build, fit, log, keep."""
        number, trainer, rule = result.number, self.trainer, self.learning
        seen: dict[str, list[float]] = {}  # the epochs so far, for the learning rule
        batch_size = _whole(params, "batch_size", self.exp.training.batch_size)
        steps = -(-len(trainer.data.x_train) // max(batch_size, 1))  # full batches (train.fit)

        def on_epoch(epoch: int, logs: Mapping[str, float]) -> None:
            check_stop()
            run.log_epoch(epoch, logs)
            for k, v in logs.items():
                seen.setdefault(k, []).append(float(v))
            verdict = rule.check(seen, steps_per_epoch=steps) if rule is not None else None
            try:  # the engine's hooks first: they report this epoch (Optuna's intermediate value)
                for hook in hooks:
                    hook(epoch, logs)
            except Exception as e:
                if isinstance(verdict, NotLearning):  # above a prune or a cut: it says more
                    raise verdict from e
                raise
            if verdict is not None:
                raise verdict

        model = trainer.build(params, number=number, max_epochs=max_epochs, seed=seed)
        result.n_params = int(model.count_params())
        fit = trainer.train(model, params, max_epochs=max_epochs, on_epoch=on_epoch)
        result.fit = fit
        if fit.stopped:  # complete with the value it reached, tagged as cut
            run.set_tags({"cut": fit.stopped})
        run.log_metrics({"objective": fit.value, "best_epoch": fit.best_epoch})
        if recheck is None:
            self.histories[number] = fit.history
            self.models.offer(model, fit.value, number)
        else:
            result.path = self.models.save(model, f"recheck-{number}-{recheck[0]}.keras")

    def cleanup(self) -> None:
        """Delete the kept models' folder."""
        self.models.cleanup()


def validation_truth(data: Dataset) -> np.ndarray | pd.DataFrame:
    """The validation rows' true labels (or values), spelled as the logged model answers:
    the targets decoded as if a model had predicted them with certainty."""
    y = np.asarray(data.y_valid)
    if data.task == "multiclass":
        y = np.eye(data.n_classes or int(y.max()) + 1, dtype=np.float32)[y.astype(int)]
    return decode(data.serving_meta(), y)
