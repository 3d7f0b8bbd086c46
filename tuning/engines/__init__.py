"""Search engines behind one contract: Optuna's study and KerasTuner's tuners.

``base`` holds the contract (:class:`~tuning.engines.base.Engine`); :func:`load` imports the
engine an experiment names. That import is the package's one lazy boundary: an engine imports
Keras (through ``tuning.trial``), and Keras must be imported only after ``tuning.backend`` chose
the backend, so ``tuning.job`` calls :func:`load` once validation has done so.
"""

from __future__ import annotations

import importlib

from tuning.engines.base import Engine

__all__ = ["ENGINES", "load"]

# study.engine -> "module:class"
ENGINES = {
    "optuna": "tuning.engines.optuna:OptunaEngine",
    "keras_tuner": "tuning.engines.keras_tuner:KerasTunerEngine",
}


def load(name: str) -> type[Engine]:
    """The engine class named ``name`` (a key of :data:`ENGINES`)."""
    module, cls = ENGINES[name].split(":")
    engine: type[Engine] = getattr(importlib.import_module(module), cls)
    return engine
