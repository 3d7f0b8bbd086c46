"""The logged model's code (MLflow "models from code"): a Keras MLP behind the pyfunc interface.

Part of the tracking layer. ``tracking.ParentRun.log_model`` logs this file with ``encoding.py``
and ``keras_backend.py`` (the backend it was trained on) beside it (``code_paths``), so loading
the model needs mlflow, numpy, pandas and Keras only, never this package. ``predict`` takes raw
rows (a DataFrame with the original columns, or raw pixel arrays) and returns class labels for
classification (a DataFrame of class probabilities with ``params={"output": "probabilities"}``)
and values for regression.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import warnings

import mlflow
from mlflow.pyfunc import PythonModel

try:  # as logged: keras_backend.py names the backend the model was trained on
    from keras_backend import BACKEND  # type: ignore[import-not-found]
except ImportError:
    BACKEND = ""
# Serve on the training backend unless the user chose one ($KERAS_BACKEND) or keras is live.
if (
    BACKEND
    and not os.environ.get("KERAS_BACKEND")
    and "keras" not in sys.modules
    and importlib.util.find_spec(BACKEND) is not None
):
    os.environ["KERAS_BACKEND"] = BACKEND

try:  # as logged: encoding.py sits in the model's code folder, on sys.path
    from encoding import decode, load_keras, prepare  # type: ignore[import-not-found]
except ImportError:  # inside this package (tests, development)
    from tuning.data.encoding import decode, load_keras, prepare


_show = warnings.showwarning


def _quiet(
    message: Warning | str, category: type[Warning], *args: object, **kwargs: object
) -> None:
    """Drop MLflow's advice to add type hints to predict: the logged signature is the schema.

    MLflow raises it inside its own ``catch_warnings`` with a "once" filter, so a warnings
    filter cannot reach it; replacing the display while the class is defined can.
    """
    if "type hint" not in str(message).lower():
        _show(message, category, *args, **kwargs)


with warnings.catch_warnings():
    warnings.showwarning = _quiet

    class KerasMLP(PythonModel):
        """A Keras MLP saved as ``.keras`` with a JSON of its inputs and outputs."""

        # No type hints on these two: MLflow would read them as a schema of its own.
        def load_context(self, context):  # type: ignore[no-untyped-def]
            self.model = load_keras(context.artifacts["keras_model"])
            with open(context.artifacts["meta"], encoding="utf-8") as f:
                self.meta = json.load(f)

        def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
            output = (params or {}).get("output", "labels")
            if output not in ("labels", "probabilities"):
                raise ValueError(
                    f"params.output must be 'labels' or 'probabilities', got {output!r}"
                )
            raw = self.model.predict(prepare(self.meta, model_input), verbose=0)
            return decode(self.meta, raw, output)


mlflow.models.set_model(KerasMLP())
