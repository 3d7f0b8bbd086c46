"""tuning: find good hyperparameters for Keras MLPs with Optuna, every trial recorded in MLflow.

Public entry points: :func:`tuning.config.load_experiment` to read and validate an experiment,
:func:`tuning.job.run_job` to run one job of it, and the ``tuning`` command line.
"""

from __future__ import annotations

from tuning.errors import ConfigError, TrialFailed

__all__ = ["ConfigError", "TrialFailed", "__version__"]
__version__ = "0.1.0"
