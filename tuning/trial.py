"""One trial's training, the same for every engine: build -> train -> keep the job's best model.

Owns :class:`Trainer`: a fresh Keras session and the trial's seed before each build, the fit with
the experiment's early stopping (``train.fit``), the seconds spent building, compiling and
fitting, the job's best model so far (a ``.keras`` file in a temporary folder) and, at the end,
that model scored on the test split and logged on the parent run. It works in plain values
(parameters in, a :class:`~tuning.train.FitResult` out) and knows nothing of Optuna or KerasTuner.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import keras
import numpy as np
import pandas as pd

from tuning import backend, train
from tuning.config import Experiment
from tuning.data import Dataset
from tuning.data.encoding import decode, load_keras
from tuning.model import build_model, compile_for_task
from tuning.tracking import ParentRun
from tuning.train import EpochHook, FitResult, best_first

if TYPE_CHECKING:
    from tuning.ensemble import Member

__all__ = ["Kept", "ParamValue", "Params", "Trainer", "compile_seconds", "is_finite"]

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


class Trainer:
    """Builds and trains each trial's model and keeps the job's best one.

    Attributes:
        best_value: The best objective value among this job's trials (``None`` before one).
        best_trial: Its trial number.
        best_model_path: Where that model is saved (``None`` until one is).
        trials_run: Trials this job started.
        timings: Seconds summed over trials: ``build``, ``fit`` (hooks and compile included),
            ``hooks`` (the engine's per-epoch reporting) and ``compile``.
        histories: Trial number -> its per-epoch metrics.
    """

    def __init__(self, exp: Experiment, *, data: Dataset, parent: ParentRun) -> None:
        self.exp = exp
        self.data = data
        self.parent = parent
        self.tmp = tempfile.TemporaryDirectory(prefix="tuning-")
        self.best_value: float | None = None
        self.best_trial: int | None = None
        self.best_model_path: Path | None = None
        # The search's best models (best first): one, or study.ensemble_top for an ensemble.
        self.kept: list[Kept] = []
        self.keep_n = max(exp.study.ensemble_top, 1)
        # With an ensemble as the job's model: the best alone (scored on test beside it) and
        # the members' labels ("7", "7r1": trial 7 and its first re-run).
        self.single: Member | None = None
        self.members: list[str] = []
        self.trials_run = 0
        self.timings: dict[str, float] = {"build": 0.0, "fit": 0.0, "hooks": 0.0, "compile": 0.0}
        self.histories: dict[int, dict[str, list[float]]] = {}

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

    def keep_if_best(self, model: keras.Model, value: float, number: int) -> None:
        """Save ``model`` when it is among the job's ``keep_n`` best so far (the best of them
        is the job's best model)."""
        if self.exp.tracking.log_models == "none":
            return
        if len(self.kept) >= self.keep_n and not self.better(value, self.kept[-1].value):
            return
        path = Path(self.tmp.name) / f"trial-{number}.keras"
        model.save(path)
        self.kept.append(Kept(value, number, path))
        rank = best_first(self.exp.objective.direction)
        self.kept.sort(key=lambda k: rank(k.value))
        for dropped in self.kept[self.keep_n :]:
            dropped.path.unlink(missing_ok=True)
        del self.kept[self.keep_n :]
        if self.better(value, self.best_value):
            self.best_value, self.best_trial, self.best_model_path = value, number, path

    def adopt(self, path: Path, value: float, number: int) -> None:
        """Make the model saved at ``path`` the job's best (the re-check's, an ensemble)."""
        self.best_value, self.best_trial, self.best_model_path = value, number, path

    def better(self, a: float, b: float | None) -> bool:
        """Whether objective value ``a`` beats ``b`` (``None``: nothing yet)."""
        if b is None:
            return True
        return a < b if self.exp.objective.direction == "minimize" else a > b

    def has_best_model(self) -> bool:
        """Whether a model was kept (``log_models: none`` keeps none)."""
        return self.best_model_path is not None and self.best_model_path.exists()

    def log_best_model(self, metrics: dict[str, float | None]) -> str:
        """Score the job's best model on the test split and log it on the parent run.

        Adds ``test_<metric>`` and ``job_best_value`` to ``metrics``; returns the model's URI.
        """
        data = self.data
        # The test split is touched here only: to score the job's model (and, beside an
        # ensemble, the best alone, for the record: nothing is chosen by it).
        assert self.best_model_path is not None, "log_best_model needs has_best_model()"
        scored = {"test": self.best_model_path}
        if self.members and self.single is not None:
            scored["single_test"] = self.single.path
        for prefix, path in scored.items():
            model = compile_for_task(
                load_keras(str(path)),
                data,
                loss=self.exp.training.loss,
                output_activation=self.exp.training.output_activation,
            )
            scores = model.evaluate(data.x_test, data.y_test, verbose=0, return_dict=True)
            for k, v in scores.items():
                metrics[f"{prefix}_{k}"] = float(v)
        metrics["job_best_value"] = self.best_value
        tags: dict[str, object] = {"model_trial": self.best_trial}
        if self.members:
            tags["model_members"] = ",".join(self.members)
        self.parent.set_tags(tags)
        meta = {
            **data.serving_meta(),
            "trial": self.best_trial,
            "study": self.exp.study_name,
            "backend": keras.backend.backend(),
            **({"members": self.members} if self.members else {}),
        }
        return str(
            self.parent.log_model(
                keras_path=self.best_model_path,
                meta=meta,
                input_example=data.example_rows(5),
                pip_requirements=backend.pip_requirements(),
            )
        )

    def validation_truth(self) -> np.ndarray | pd.DataFrame:
        """The validation rows' true labels (or values), spelled as the logged model answers:
        the targets decoded as if a model had predicted them with certainty."""
        data = self.data
        y = np.asarray(data.y_valid)
        if data.task == "multiclass":
            y = np.eye(data.n_classes or int(y.max()) + 1, dtype=np.float32)[y.astype(int)]
        return decode(data.serving_meta(), y)

    def cleanup(self) -> None:
        """Delete the temporary folder of the best model."""
        self.tmp.cleanup()
