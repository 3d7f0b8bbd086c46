"""Fitting one model: early stopping with the best weights restored, a NaN guard, epoch hooks.

Owns ``model.fit`` for one trial: EarlyStopping on the objective metric with
``restore_best_weights=True`` in every trial (the stretch-pants guard against overfitting),
TerminateOnNaN, and a hook called after every epoch with the epoch's logs (the study layer uses it
to report to Optuna and MLflow, and may raise from it to prune). It returns plain values and knows
nothing of Optuna or MLflow. A NaN or infinite loss ends the fit with :class:`TrialFailed`.

A fit can continue an earlier one (``carry``, issue 26): the epochs are numbered on from where it
stopped, and early stopping starts from the earlier fit's state (the best value, its epoch and
weights, the wait counter), so ``restore_best_weights`` returns the best over the whole curve.
With ``keep_last``, the fit also returns that state (:class:`Carry`) with the last epoch's
weights, taken before the best ones are restored: what the next fit continues from.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import keras
import numpy as np

from tuning.data import Dataset
from tuning.errors import StopTraining, TrialFailed
from tuning.objective import Objective

__all__ = ["Carry", "EpochHook", "FitResult", "StopTraining", "fit", "fresh_session"]

EpochHook = Callable[[int, Mapping[str, float]], None]


@dataclass
class Carry:
    """Where a fit stopped, for a later fit to continue from it.

    Attributes:
        epochs: Epochs trained so far (the next one is numbered ``epochs``, 0-based).
        best: Early stopping's best value of the monitored metric (``None``: none yet).
        best_epoch: Its epoch.
        wait: Epochs since the last improvement, as early stopping counts them.
        history: Metric name -> value per epoch, over every epoch so far.
        best_weights: The model's weights at ``best_epoch``.
        last_weights: The model's weights after the last epoch (where training goes on from);
            the optimizer's own state is the model's, saved beside them by the caller.
    """

    epochs: int
    best: float | None
    best_epoch: int
    wait: int
    history: dict[str, list[float]]
    best_weights: list[np.ndarray] | None = None
    last_weights: list[np.ndarray] | None = None


@dataclass
class FitResult:
    """What one fit produced.

    Attributes:
        value: Best value of the monitored metric over the epochs (the trial's objective).
        best_epoch: Epoch (0-based, over the whole curve) of that value; the model holds its
            weights.
        epochs: Epochs trained, over the whole curve (a continued fit counts the earlier ones).
        seconds: Wall time of ``model.fit``.
        history: Metric name -> value per epoch.
        n_params: Parameters of the model.
        stopped: Why an epoch hook ended the fit early (:class:`StopTraining`), else ``None``.
        initial_epoch: Epochs an earlier fit trained before this one continued it (0: none).
        early_stopped: Whether early stopping ended the fit (patience ran out).
        carry: The state to continue from (only with ``fit(..., keep_last=True)``).
    """

    value: float
    best_epoch: int
    epochs: int
    seconds: float
    history: dict[str, list[float]]
    n_params: int
    stopped: str | None = None
    initial_epoch: int = 0
    early_stopped: bool = False
    carry: Carry | None = None


class _CarriedEarlyStopping(keras.callbacks.EarlyStopping):
    """Keras's EarlyStopping, started from an earlier fit's state, which keeps the last epoch's
    weights before it restores the best ones."""

    def __init__(self, *, carry: Carry | None, keep_last: bool, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.carry = carry
        self.keep_last = keep_last
        self.last_weights: list[np.ndarray] | None = None

    def on_train_begin(self, logs: Mapping[str, object] | None = None) -> None:
        super().on_train_begin(logs)
        carry = self.carry
        if carry is not None and carry.best is not None:
            self.best, self.best_epoch, self.wait = carry.best, carry.best_epoch, carry.wait
            self.best_weights = carry.best_weights

    def on_train_end(self, logs: Mapping[str, object] | None = None) -> None:
        if self.keep_last:
            self.last_weights = [np.array(w) for w in self.model.get_weights()]
        super().on_train_end(logs)


class _EpochHookCallback(keras.callbacks.Callback):
    def __init__(self, hook: EpochHook) -> None:
        super().__init__()
        self._hook = hook
        self.stopped: str | None = None

    def on_epoch_end(self, epoch: int, logs: Mapping[str, object] | None = None) -> None:
        clean = {k: float(v) for k, v in (logs or {}).items() if _is_number(v)}
        try:
            self._hook(epoch, clean)
        except StopTraining as e:  # after EarlyStopping saw this epoch: its best is current
            self.stopped = str(e) or "stopped"
            self.model.stop_training = True


def _is_number(v: object) -> bool:
    try:
        float(v)
    except (TypeError, ValueError):
        return False
    return True


def fresh_session() -> None:
    """Free the previous trial's graph and memory before building the next model.

    ``clear_session`` runs a full garbage collection; after ``job.settle_heap`` that only walks
    what the trials made, not the libraries and data the job holds.
    """
    keras.backend.clear_session()


# Validation rows scored in one batch, up to this many: one shape, so one compiled test step per
# model (a last, smaller batch costs JAX a second compilation: ~0.2 s a trial, measured).
MAX_VALIDATION_BATCH = 10_000


def validation_batch_size(n_rows: int) -> int:
    """The whole validation split in one batch when it is small enough, else in equal parts."""
    if n_rows <= MAX_VALIDATION_BATCH:
        return max(n_rows, 1)
    parts = -(-n_rows // MAX_VALIDATION_BATCH)
    return -(-n_rows // parts)


def full_batches(x: np.ndarray, y: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Train rows padded with a few random repeats so that every batch of an epoch is full.

    A last, smaller batch is a second input shape, and each shape costs its own compiled train
    step (JAX and TensorFlow's XLA alike: ~0.5 s a model on 2 cores, measured). Keras has no
    ``drop_remainder`` for arrays; repeating ``batch_size - n % batch_size`` random rows (fewer
    than one batch; drawn from NumPy's seeded global generator, so each trial repeats other rows)
    keeps every row in every epoch. Fewer rows than one batch stay as they are: one batch.
    """
    n = len(x)
    missing = -n % batch_size
    if n <= batch_size or missing == 0:
        return x, y
    extra = np.random.choice(n, size=missing, replace=False)
    return np.concatenate([x, x[extra]]), np.concatenate([y, y[extra]])


def best_of(hist: Mapping[str, list[float]], *, monitor: str, direction: str) -> tuple[float, int]:
    """The best finite value of ``monitor`` in a fit's history, and its (first) epoch.

    Raises:
        TrialFailed: if the last loss is NaN or infinite, or ``monitor`` was never logged or
            never finite.
    """
    losses = hist.get("loss", [])
    if losses and not math.isfinite(losses[-1]):
        raise TrialFailed(
            f"loss became {losses[-1]} in epoch {len(losses)} (learning rate too high?); "
            "training stopped"
        )
    values = hist.get(monitor)
    if not values:
        raise TrialFailed(
            f"no epoch produced {monitor!r}; Keras logged {sorted(hist)} (check objective.metric)"
        )
    finite = [(v, i) for i, v in enumerate(values) if math.isfinite(v)]
    if not finite:
        raise TrialFailed(f"{monitor} was never finite; training diverged")
    # The first of equal best values, as Keras reports it (min() keeps the first it meets).
    objective = Objective(monitor, direction)  # type: ignore[arg-type]
    value, best_epoch = min(finite, key=lambda vi: objective.sort_key(vi[0]))
    return value, best_epoch


def fit(
    model: keras.Model,
    data: Dataset,
    *,
    monitor: str,
    direction: str,
    batch_size: int,
    max_epochs: int,
    patience: int,
    min_delta: float = 0.0,
    on_epoch: EpochHook | None = None,
    reduce_on_plateau: bool = False,
    carry: Carry | None = None,
    keep_last: bool = False,
) -> FitResult:
    """Train ``model`` on ``data`` with early stopping, restoring its best weights.

    Args:
        model: A compiled Keras model.
        data: Train and validation arrays.
        monitor: Metric in the Keras logs to early-stop on and to return (e.g. ``val_accuracy``).
        direction: ``minimize`` or ``maximize``.
        batch_size: Mini-batch size.
        max_epochs: Upper bound on epochs.
        patience: Epochs without improvement before stopping.
        min_delta: Smallest change that counts as an improvement.
        on_epoch: Called after every epoch with ``(epoch, logs)``; may raise to stop the fit
            (e.g. ``optuna.TrialPruned``), and the exception propagates.
        reduce_on_plateau: Halve the learning rate after 5 epochs without improvement.
        carry: An earlier fit of this model to continue (its weights and optimizer state are
            the model's already): epochs are numbered from ``carry.epochs`` up to
            ``max_epochs``, and early stopping goes on from ``carry``'s best and wait counter.
        keep_last: Return the state to continue from in :attr:`FitResult.carry`.

    Returns:
        The best value of ``monitor`` and what led to it.

    Raises:
        TrialFailed: if the loss or the monitored metric became NaN or infinite, or no epoch
            produced ``monitor``.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"Expected a keras.Model. Received: {model!r} of type {type(model)}")
    mode = Objective(monitor, direction).keras_mode  # type: ignore[arg-type]
    stopping = _CarriedEarlyStopping(
        carry=carry,
        keep_last=keep_last,
        monitor=monitor,
        mode=mode,
        patience=patience,
        min_delta=min_delta,
        restore_best_weights=True,
    )
    callbacks: list[keras.callbacks.Callback] = [keras.callbacks.TerminateOnNaN(), stopping]
    initial_epoch = carry.epochs if carry is not None else 0
    if reduce_on_plateau:
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(monitor=monitor, mode=mode, factor=0.5, patience=5)
        )
    hook = _EpochHookCallback(on_epoch) if on_epoch is not None else None
    if hook is not None:
        callbacks.append(hook)  # last: EarlyStopping has seen each epoch before the hook
    start = time.perf_counter()
    x_train, y_train = full_batches(data.x_train, data.y_train, batch_size)
    history = model.fit(
        x_train,
        y_train,
        validation_data=(data.x_valid, data.y_valid),
        batch_size=batch_size,
        validation_batch_size=validation_batch_size(len(data.x_valid)),
        epochs=max_epochs,
        initial_epoch=initial_epoch,
        callbacks=callbacks,
        verbose=0,
    )
    seconds = time.perf_counter() - start
    new = {
        k: [float(v) for v in vs] for k, vs in history.history.items() if vs and _is_number(vs[0])
    }
    earlier = carry.history if carry is not None else {}
    hist = {k: [*earlier.get(k, []), *new.get(k, [])] for k in {**earlier, **new}}
    value, best_epoch = best_of(hist, monitor=monitor, direction=direction)
    epochs = initial_epoch + len(new.get("loss", []))
    kept: Carry | None = None
    if keep_last:
        best = None if stopping.best is None else float(stopping.best)
        kept = Carry(
            epochs=epochs,
            best=best,
            best_epoch=int(stopping.best_epoch),
            wait=int(stopping.wait),
            history=hist,
            best_weights=stopping.best_weights,
            last_weights=stopping.last_weights,
        )
    return FitResult(
        value=value,
        best_epoch=best_epoch,
        epochs=epochs,
        seconds=seconds,
        history=hist,
        n_params=int(model.count_params()),
        stopped=hook.stopped if hook is not None else None,
        initial_epoch=initial_epoch,
        early_stopped=stopping.stopped_epoch > 0,
        carry=kept,
    )
