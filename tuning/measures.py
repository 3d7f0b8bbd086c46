"""A trained model's size and speed, the figures several objectives and limits are made of.

Owns the three measures an experiment may name besides its validation metrics, as objectives
(``objective: [{metric: val_accuracy, ...}, {metric: latency_ms, direction: minimize}]``), as
``limits`` or as ``selection.prefer``, and how a trial's figures meet its limits:

- ``n_params``: the model's parameter count (``keras.Model.count_params``), known as soon as it
  is built, so a configuration over an ``n_params`` limit is refused before it trains;
- ``model_bytes``: the size in bytes of the model saved as a ``.keras`` file (what the logged
  model holds); the model is saved for it only when something needs it;
- ``latency_ms``: the trained model's prediction time per row, in milliseconds. The method, the
  same for every trial and every model of a job: a fixed batch of ``measures.latency_batch``
  rows (default 256: the first rows of the validation split, repeated where there are fewer),
  ``model.predict_on_batch`` on it ``measures.latency_warmup`` times untimed (default 2: the
  first call compiles the prediction step), then ``measures.latency_repeats`` times timed
  (default 5, ``time.perf_counter``), the median batch time divided by the batch's rows. On a
  shared or busy CPU it moves by some percent between runs; a limit on it should leave room.
  With ``latency_batch: 1`` it is the time of one request of one row.

A limit is an upper bound: a trial is feasible when every figure it has is at most its limit
(:func:`violations`: ``value - limit``, feasible where all are <= 0, Optuna's convention for
constraints). Measured only for trials that trained, and only what an objective, a limit or
``selection.prefer`` names (:func:`needed`). Keras only: no Optuna, no MLflow.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import keras
import numpy as np

from tuning.config.schema import MEASURES, MeasuresConfig

if TYPE_CHECKING:
    from tuning.config import Experiment

__all__ = [
    "MEASURES",
    "feasible",
    "latency_ms",
    "measure",
    "model_bytes",
    "needed",
    "violations",
]


def needed(exp: Experiment) -> tuple[str, ...]:
    """The measures ``exp`` names (objectives, limits, ``selection.prefer``), in a fixed order."""
    named = {o.metric for o in exp.objectives} | set(exp.limits) | {exp.prefer}
    return tuple(m for m in MEASURES if m in named)


def model_bytes(model: keras.Model) -> int:
    """The size of ``model`` saved as a ``.keras`` file, in bytes."""
    with tempfile.TemporaryDirectory(prefix="tuning-measure-") as tmp:
        path = Path(tmp) / "model.keras"
        model.save(path)
        return path.stat().st_size


def latency_ms(
    model: keras.Model,
    x: np.ndarray,
    *,
    batch_size: int = 256,
    repeats: int = 5,
    warmup: int = 2,
) -> float:
    """Prediction time per row in milliseconds: the median of ``repeats`` timed
    ``predict_on_batch`` calls on ``batch_size`` rows of ``x`` (repeated where fewer), after
    ``warmup`` untimed ones, divided by ``batch_size``."""
    rows = np.asarray(x)
    if len(rows) == 0:
        raise ValueError("latency_ms needs at least one row")
    batch = rows[np.arange(batch_size) % len(rows)]
    for _ in range(warmup):
        model.predict_on_batch(batch)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        np.asarray(model.predict_on_batch(batch))  # on the host: the work is done
        times.append(time.perf_counter() - started)
    return statistics.median(times) / batch_size * 1000.0


def measure(
    model: keras.Model, names: Iterable[str], *, x: np.ndarray, cfg: MeasuresConfig
) -> dict[str, float]:
    """The measures ``names`` of a trained ``model`` (``x``: rows to time predictions on)."""
    out: dict[str, float] = {}
    for name in names:
        if name == "n_params":
            out[name] = float(model.count_params())
        elif name == "model_bytes":
            out[name] = float(model_bytes(model))
        elif name == "latency_ms":
            out[name] = latency_ms(
                model,
                x,
                batch_size=cfg.latency_batch,
                repeats=cfg.latency_repeats,
                warmup=cfg.latency_warmup,
            )
        else:
            raise ValueError(f"unknown measure {name!r} (known: {', '.join(MEASURES)})")
    return out


def violations(limits: Mapping[str, float], figures: Mapping[str, float]) -> dict[str, float]:
    """``value - limit`` for every limit whose figure is known, in ``sorted(limits)`` order
    (<= 0: met)."""
    return {k: float(figures[k]) - float(limits[k]) for k in sorted(limits) if k in figures}


def feasible(over: Mapping[str, float]) -> bool:
    """Whether every limit is met (every violation <= 0)."""
    return all(v <= 0 for v in over.values())
