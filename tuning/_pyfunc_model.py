"""The MLflow pyfunc wrapper of a tuned Keras MLP, logged as code next to the model.

Part of the tracking layer: ``tracking.ParentRun.log_model`` logs this file as the model's code, so
loading the model needs mlflow, numpy and Keras only, never this package. ``predict`` takes raw
inputs (the model holds its own scaling) as a numpy array or a DataFrame of flattened features,
and returns class labels for classification (probabilities with ``params={"output":
"probabilities"}``) or one value per row for regression.
"""

from __future__ import annotations

import json
from typing import Any

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel


def _prepare(meta: dict[str, Any], model_input: Any) -> np.ndarray:
    values = model_input.to_numpy() if hasattr(model_input, "to_numpy") else model_input
    x = np.asarray(values, dtype=np.float32)
    shape = tuple(meta["input_shape"])
    return x.reshape((-1, *shape))


def _postprocess(meta: dict[str, Any], raw: np.ndarray, output: str) -> np.ndarray:
    if meta["task"] == "classification":
        if output == "probabilities":
            return raw.astype(np.float32)
        return raw.argmax(axis=-1).astype(np.int64)
    return raw.reshape(len(raw), -1)[:, 0].astype(np.float32)


def predict_raw(keras_path: str, meta: dict[str, Any], model_input: Any) -> np.ndarray:
    """Load the Keras file and predict labels (used to infer the output schema at log time)."""
    import keras

    model = keras.models.load_model(keras_path, compile=False)
    raw = np.asarray(model.predict(_prepare(meta, model_input), verbose=0))
    return _postprocess(meta, raw, "labels")


class KerasMLP(PythonModel):
    """A Keras MLP saved as ``.keras`` with a JSON of what it predicts."""

    # No type hints on these two: MLflow would read them as a schema of its own.
    def load_context(self, context):  # type: ignore[no-untyped-def]
        import keras

        self.model = keras.models.load_model(context.artifacts["keras_model"], compile=False)
        with open(context.artifacts["meta"], encoding="utf-8") as f:
            self.meta = json.load(f)

    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        output = (params or {}).get("output", "labels")
        if output not in ("labels", "probabilities"):
            raise ValueError(f"params.output must be 'labels' or 'probabilities', got {output!r}")
        raw = np.asarray(self.model.predict(_prepare(self.meta, model_input), verbose=0))
        return _postprocess(self.meta, raw, output)


mlflow.models.set_model(KerasMLP())
