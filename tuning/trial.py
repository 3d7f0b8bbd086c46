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
- :class:`StateKeeper`: the training state of fits that stopped short and that something may
  promote (issue 26): their last weights, optimizer variables and early-stopping state, in the
  same folder, so that a promoted trial continues (:meth:`TrialRunner.resume`, a KerasTuner
  Hyperband promotion) instead of training from new weights. It counts the epochs the job
  trained, continued and threw away (trained again from scratch).

It knows nothing of Optuna or KerasTuner.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import keras
import numpy as np
import pandas as pd

from tuning import backend, measures, train
from tuning.config import Experiment
from tuning.data import Dataset
from tuning.data.encoding import decode, load_keras
from tuning.errors import NotLearning
from tuning.learning import LearningRule
from tuning.model import build_model, compile_for_task
from tuning.process import check_stop
from tuning.tracking import ParentRun, Tracker, TrialRun
from tuning.train import Carry, EpochHook, FitResult

if TYPE_CHECKING:
    from tuning.ensemble import Member
    from tuning.selection import Selected

__all__ = [
    "KeepState",
    "Kept",
    "Saved",
    "StateKeeper",
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
    figures: Mapping[str, float] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class KeepState:
    """Which trials' training state the runner saves for a later promotion (an engine's
    choice: only what it can promote is saved, as saving costs time and disk).

    Attributes:
        when: Whether to save the state of a fit that returned (e.g. "it was cut").
        top: Keep only the states of the ``top`` best such trials (``None``: every one).
    """

    when: Callable[[FitResult], bool]
    top: int | None = None


@dataclasses.dataclass
class Saved:
    """One trial's training state, saved to continue it: its configuration, its run, where it
    stopped (``carry``, weights left out: they are in ``path``), its value and whether a hook
    cut it (its slice of the budget, the deadline)."""

    number: int
    params: Params
    max_epochs: int
    run_id: str
    path: Path
    carry: Carry
    value: float
    cut: bool
    train_seconds: float


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
        initial_epoch: Epochs it continued from (an earlier fit's; 0: trained from new weights).
    """

    number: int
    run_id: str
    epochs: int = 0
    initial_epoch: int = 0
    seconds: float = 0.0
    n_params: int | None = None
    fit: FitResult | None = None
    path: Path | None = None
    figures: dict[str, float] = dataclasses.field(default_factory=dict)
    over: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def value(self) -> float | None:
        """The objective value (the best epoch's), ``None`` before the fit returned."""
        return self.fit.value if self.fit is not None else None

    @property
    def feasible(self) -> bool:
        """Whether the trial meets every limit it has a figure for (``over``: value - limit)."""
        return measures.feasible(self.over)


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
        self,
        model: keras.Model,
        params: Params,
        *,
        max_epochs: int,
        on_epoch: EpochHook,
        carry: Carry | None = None,
        keep_last: bool = False,
    ) -> FitResult:
        """Fit with the experiment's early stopping (the params may override patience),
        calling ``on_epoch`` after each epoch; times the fit, the hooks and the compile.
        ``carry`` and ``keep_last``: continue an earlier fit, keep the state to continue
        (``train.fit``)."""
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
                carry=carry,
                keep_last=keep_last,
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
        self.selected: Selected | None = None  # the rule's choice (several objectives, limits)

    def save(self, model: keras.Model, name: str) -> Path:
        """Save ``model`` in the keeper's folder as ``name`` (``.keras``); returns its path."""
        path = Path(self.tmp.name) / name
        model.save(path)
        return path

    def offer(
        self,
        model: keras.Model,
        value: float,
        number: int,
        *,
        figures: Mapping[str, float] | None = None,
        feasible: bool = True,
    ) -> None:
        """Save ``model`` when it is among the job's ``keep_n`` best so far (the best of them
        is the job's best model); nothing with ``log_models: none``, nothing infeasible.
        With ``selection.prefer`` (several objectives or limits), the models on the front of
        the primary objective and the preferred measure are kept too, as candidates for
        ``tuning.selection``."""
        objective = self.exp.objective
        if not self.enabled or not feasible:
            return
        earlier = [k for k in self.kept if k.number == number]  # a continued trial's first model
        if earlier:
            self.kept = [k for k in self.kept if k.number != number]
            for k in earlier:
                k.path.unlink(missing_ok=True)
            if self.best_trial == number:
                self.best_value, self.best_trial, self.best_model_path = None, None, None
                if self.kept:
                    first = self.kept[0]
                    self.best_value, self.best_trial, self.best_model_path = (
                        first.value,
                        first.number,
                        first.path,
                    )
        prefer, figures = self.exp.prefer, dict(figures or {})
        new = Kept(value, number, Path(self.tmp.name) / f"trial-{number}.keras", figures)
        ranked = objective.ranked([*self.kept, new], lambda k: k.value)
        keep = ranked[: self.keep_n]
        if prefer is not None:
            from tuning.selection import front  # the front of (primary, prefer)

            keep += [k for k in front(ranked, objective, prefer) if k not in keep]
        if new not in keep:
            return
        self.save(model, new.path.name)
        for dropped in ranked:
            if dropped not in keep:
                dropped.path.unlink(missing_ok=True)
        self.kept = [k for k in ranked if k in keep]
        if objective.better(value, self.best_value):
            self.best_value, self.best_trial, self.best_model_path = value, number, new.path

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


class StateKeeper:
    """Training states saved for a later promotion, and the job's count of epochs.

    A state is three lists of arrays in one ``.npz`` file (the last epoch's weights, the
    optimizer's variables, iterations included, and early stopping's best weights) beside the
    kept models; the rest of :class:`~tuning.train.Carry` (history, best value, wait counter)
    stays in memory. To continue, the runner builds the configuration's model as for a new
    trial and :meth:`load` puts the weights and optimizer state back: no ``.keras``
    deserialization (the MLP's custom layers would need their stand-ins), and a bare array file
    saves faster than a ``.keras`` zip with its config.

    Attributes (read them; only this class and the runner change them):
        saved: Trial number -> its saved state.
        counts: ``epochs_trained_total`` (every epoch trained, re-checks included),
            ``epochs_continued`` (of those, epochs that continued a saved state),
            ``epochs_thrown_away`` (epochs of a configuration's earlier run that a later run of
            the same configuration trained again from new weights instead of continuing them;
            a re-check's re-runs over other seeds are deliberate and not counted),
            ``epochs_rechecks`` (the re-checks' re-runs), ``configs_evaluated`` (configurations
            trained: a Hyperband promotion is the same configuration), ``states_saved``,
            ``state_save_seconds``, ``state_bytes`` (the most on disk at once).
    """

    def __init__(self, exp: Experiment, folder: Path) -> None:
        self.exp = exp
        self.folder = folder
        self.saved: dict[int, Saved] = {}
        self.counts: dict[str, float] = dict.fromkeys(
            (
                "epochs_trained_total", "epochs_continued", "epochs_thrown_away",
                "epochs_rechecks", "configs_evaluated", "states_saved", "state_save_seconds",
                "state_bytes",
            ),
            0,
        )  # fmt: skip

    def save(
        self,
        model: keras.Model,
        fit: FitResult,
        *,
        number: int,
        params: Params,
        max_epochs: int,
        run_id: str,
        top: int | None,
    ) -> None:
        """Save ``fit``'s state (it needs ``fit.carry``), keeping only the ``top`` best states."""
        carry, objective = fit.carry, self.exp.objective
        assert carry is not None and carry.last_weights is not None, "fit(..., keep_last=True)"
        ranked = objective.ranked(list(self.saved.values()), lambda s: s.value)
        if (
            top is not None
            and len(ranked) >= top
            and not objective.better(fit.value, ranked[top - 1].value)
        ):
            return
        started = time.perf_counter()
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"state-{number}.npz"
        arrays: dict[str, np.ndarray] = {}
        for prefix, values in (
            ("w", carry.last_weights),
            ("o", [keras.ops.convert_to_numpy(v) for v in model.optimizer.variables]),
            ("b", carry.best_weights or []),
        ):
            arrays.update({f"{prefix}{i}": np.asarray(v) for i, v in enumerate(values)})
        with path.open("wb") as f:
            np.savez(f, **arrays)  # type: ignore[arg-type]  # numpy stubs: allow_pickle
        light = dataclasses.replace(carry, best_weights=None, last_weights=None)
        seconds = time.perf_counter() - started
        self.saved[number] = Saved(
            number, dict(params), max_epochs, run_id, path, light, fit.value,
            cut=fit.stopped is not None, train_seconds=fit.seconds,
        )  # fmt: skip
        self.counts["states_saved"] += 1
        self.counts["state_save_seconds"] += seconds
        if top is not None:
            for dropped in objective.ranked(list(self.saved.values()), lambda s: s.value)[top:]:
                self.drop(dropped.number)
        on_disk = sum(s.path.stat().st_size for s in self.saved.values() if s.path.exists())
        self.counts["state_bytes"] = max(self.counts["state_bytes"], on_disk)

    def load(self, model: keras.Model, saved: Saved) -> Carry:
        """Put ``saved``'s last weights and optimizer state into ``model`` (built and compiled
        from the same configuration); returns where its fit stopped, best weights included."""
        with np.load(saved.path) as z:

            def listed(prefix: str) -> list[np.ndarray]:
                return [
                    z[f"{prefix}{i}"] for i in range(sum(k.startswith(prefix) for k in z.files))
                ]

            last, optimizer, best = listed("w"), listed("o"), listed("b")
        model.set_weights(last)
        opt = model.optimizer
        opt.build(model.trainable_variables)
        if len(opt.variables) != len(optimizer):
            raise RuntimeError(
                f"trial {saved.number}'s saved optimizer has {len(optimizer)} variables, "
                f"its rebuilt one {len(opt.variables)}"
            )
        for variable, value in zip(opt.variables, optimizer, strict=True):
            variable.assign(value)
        return dataclasses.replace(saved.carry, best_weights=best or None)

    def drop(self, number: int) -> None:
        """Forget trial ``number``'s state and delete its file."""
        saved = self.saved.pop(number, None)
        if saved is not None:
            saved.path.unlink(missing_ok=True)

    def cleanup(self) -> None:
        """Delete every saved state."""
        self.saved.clear()
        shutil.rmtree(self.folder, ignore_errors=True)


class TrialRunner:
    """Runs one configuration, the same way for every engine and the re-check.

    Attributes (read them; only this class changes them):
        trainer: Builds and trains (Keras); its ``timings`` are the job's.
        models: The job's kept models.
        states: Training states saved for a promotion, and the job's epoch counts.
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
        self.states = StateKeeper(exp, Path(self.models.tmp.name) / "states")
        self.trials_run = 0
        self.histories: dict[int, dict[str, list[float]]] = {}
        self.learning = LearningRule.for_job(exp, data)
        if self.learning is not None and self.learning.baseline is not None:
            # Beside the trials' curves in the MLflow UI: the trivial predictor's value.
            parent.log_metrics({f"baseline_{exp.objective.metric}": self.learning.baseline.value})
        self.measured = measures.needed(exp)  # the measures objectives and limits name
        # Several objectives, limits or a preferred measure: figures, feasible tag, the rule.
        self.judged = exp.multi or bool(exp.limits) or exp.prefer is not None

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
        keep_state: KeepState | None = None,
        promoted_from: tuple[int, int] | None = None,
        on_built: Callable[[TrialResult], None] | None = None,
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
            keep_state: Save the fit's training state where it says so, for a later promotion.
            promoted_from: ``(trial, epochs)``: this trial continues that earlier trial of the
                same configuration, which trained ``epochs`` (a KerasTuner Hyperband
                promotion). With its state saved (and ``study.continue_trials``), the fit goes
                on from it and this run logs the earlier epochs first (tag ``continued_from``);
                else it trains from new weights and the earlier epochs count as thrown away.
            on_built: Called with the result once the model is built and counted
                (``n_params``), before it trains; may raise ``optuna.TrialPruned`` to refuse
                it (a configuration over an ``n_params`` limit).

        Returns:
            The trial's result.

        Raises:
            NotLearning: the learning rule ended it (a TrialFailed; the run ends FINISHED).
            TrialFailed: the fit diverged or produced no objective (the run ends FAILED).
            optuna.TrialPruned, KeyboardInterrupt: from a hook or the stop check.
        """
        max_epochs = max_epochs or self.exp.training.max_epochs
        counts = self.states.counts
        saved: Saved | None = None
        if recheck is None:
            self.trials_run += 1
            if promoted_from is None:
                counts["configs_evaluated"] += 1
            else:
                saved = self.states.saved.get(promoted_from[0])
                if saved is None:
                    counts["epochs_thrown_away"] += promoted_from[1]
        logged = self.trainer.logged_params(params, max_epochs=max_epochs)
        with self.tracker.trial_run(
            self.parent, number=number, params=logged, recheck=recheck
        ) as run:
            result = TrialResult(number, run.run_id)
            if seed is not None:
                run.set_tags({"seed": seed})
            if saved is not None:
                run.set_tags({"continued_from": saved.number})
                run.log_history(saved.carry.history)
                result.initial_epoch = saved.carry.epochs
            if on_open is not None:
                on_open(run)
            started = time.perf_counter()
            try:
                self._train(
                    run, result, params, max_epochs, hooks,
                    seed=seed, recheck=recheck, keep_state=keep_state, saved=saved,
                    on_built=on_built,
                )  # fmt: skip
                return result
            finally:
                result.epochs, result.seconds = run.epochs, time.perf_counter() - started
                self._count(result, recheck=recheck is not None)
                if saved is not None:
                    self.states.drop(saved.number)  # Hyperband promotes a trial once
                run.log_metrics(
                    {
                        "epochs_trained": result.epochs,
                        "n_params": result.n_params,
                        "train_seconds": result.seconds,
                    }
                )
                if on_end is not None:
                    on_end(result)

    def can_resume(self, number: int) -> bool:
        """Whether trial ``number`` was cut (its slice of the budget, the deadline) and its
        state saved with epochs left to train: what :meth:`resume` continues."""
        saved = self.states.saved.get(number)
        return saved is not None and saved.cut and saved.carry.epochs < saved.max_epochs

    def resume(self, number: int, *, hooks: Sequence[EpochHook] = ()) -> TrialResult:
        """Continue trial ``number`` from its saved state (:meth:`can_resume`), in its own
        MLflow run: epochs logged on from where it stopped, ``epochs_trained``, ``objective``,
        ``best_epoch`` and ``train_seconds`` updated over the whole curve, tags ``continued``
        (the epochs added) and ``cut`` (why it stopped again, or ``no``). The continued model
        replaces the trial's kept one; the state is dropped (nothing promotes a trial twice).

        Returns:
            The result over the whole curve (``initial_epoch``: where it continued from).

        Raises:
            TrialFailed: the continuation diverged (the run stays complete, with the tag
                ``continue_failed``; the trial's kept model is unchanged).
            KeyboardInterrupt: from the stop check (the run stays complete, with the tag
                ``continue_failed``; the job ends KILLED).
        """
        saved = self.states.saved[number]
        epochs = saved.carry.epochs
        result = TrialResult(number, saved.run_id, initial_epoch=epochs)
        started = time.perf_counter()
        try:
            with self.tracker.reopen_trial_run(saved.run_id, epochs=epochs) as run:
                try:
                    self._train(
                        run, result, saved.params, saved.max_epochs, hooks,
                        seed=None, recheck=None, keep_state=None, saved=saved,
                    )  # fmt: skip
                    added = result.fit.epochs - epochs if result.fit is not None else 0
                    run.set_tags({"continued": f"{added} epochs from epoch {epochs + 1}"})
                    if result.fit is not None and not result.fit.stopped:
                        run.set_tags({"cut": "no"})
                finally:
                    result.epochs = run.epochs
                    result.seconds = saved.train_seconds + time.perf_counter() - started
                    self._count(result, recheck=False)
                    run.log_metrics(
                        {"epochs_trained": result.epochs, "train_seconds": result.seconds}
                    )
        finally:
            self.states.drop(number)
        return result

    def _count(self, result: TrialResult, *, recheck: bool) -> None:
        """Add a run's newly trained epochs to the job's counts."""
        counts = self.states.counts
        new = max(result.epochs - result.initial_epoch, 0)
        counts["epochs_trained_total"] += new
        if recheck:
            counts["epochs_rechecks"] += new
        if result.initial_epoch:
            counts["epochs_continued"] += new

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
        keep_state: KeepState | None,
        saved: Saved | None,
        on_built: Callable[[TrialResult], None] | None = None,
    ) -> None:
        """The body of :meth:`run` inside its MLflow run: build (or continue ``saved``), fit,
        measure, log, keep, save the state where ``keep_state`` says so."""
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
        if on_built is not None:
            on_built(result)
        carry = self.states.load(model, saved) if saved is not None else None
        fit = trainer.train(
            model, params, max_epochs=max_epochs, on_epoch=on_epoch,
            carry=carry, keep_last=keep_state is not None,
        )  # fmt: skip
        result.fit = fit
        if fit.stopped:  # complete with the value it reached, tagged as cut
            run.set_tags({"cut": fit.stopped})
        run.log_metrics({"objective": fit.value, "best_epoch": fit.best_epoch})
        if self.judged:
            self._judge(run, result, model)
        if recheck is None:
            self.histories[number] = fit.history
            self.models.offer(
                model, fit.value, number, figures=result.figures, feasible=result.feasible
            )
            if keep_state is not None and keep_state.when(fit):
                self.states.save(
                    model, fit, number=number, params=params, max_epochs=max_epochs,
                    run_id=run.run_id, top=keep_state.top,
                )  # fmt: skip
        else:
            result.path = self.models.save(model, f"recheck-{number}-{recheck[0]}.keras")

    def _judge(self, run: TrialRun, result: TrialResult, model: keras.Model) -> None:
        """Several objectives or limits: the trial's figures (each objective's and limit's
        value: a logged metric's at the best epoch, whose weights the model keeps, and the
        measures), its limits met or not; logged, every objective under its name at the step
        after the last epoch (so the run's latest value of each is the trial's), ``feasible``
        tagged."""
        fit, exp = result.fit, self.exp
        assert fit is not None
        figures = measures.measure(
            model, self.measured, x=self.trainer.data.x_valid, cfg=exp.measures
        )
        for name in {o.metric for o in exp.objectives} | set(exp.limits):
            if name in fit.history and name not in figures:
                figures[name] = float(fit.history[name][fit.best_epoch])
        result.figures = figures
        result.over = measures.violations(exp.limits, figures)
        run.log_metrics(figures, step=fit.epochs)
        run.set_tags({"feasible": str(result.feasible).lower()})

    def cleanup(self) -> None:
        """Delete the kept models' folder and the saved states."""
        self.states.cleanup()
        self.models.cleanup()


def validation_truth(data: Dataset) -> np.ndarray | pd.DataFrame:
    """The validation rows' true labels (or values), spelled as the logged model answers:
    the targets decoded as if a model had predicted them with certainty."""
    y = np.asarray(data.y_valid)
    if data.task == "multiclass":
        y = np.eye(data.n_classes or int(y.max()) + 1, dtype=np.float32)[y.astype(int)]
    return decode(data.serving_meta(), y)
