"""Encoding shared by training and serving: raw rows in, labels or values out.

Self-contained on purpose (keras, numpy and pandas only; no other module of this package):
``tracking.ParentRun.log_model`` ships this file with every logged model, so loading the model
needs no part of this package. It holds the pieces that must be identical at training and serving
time:

- :func:`encode_frame`: raw tabular rows (a DataFrame with the original columns) -> the float
  matrix the Keras model takes (numbers as they are, missing numbers filled with the training
  split's value, categories as codes ``1..k`` of the training vocabulary, ``0`` for unknown);
- :class:`TabularEncoder`: the Keras layer inside the model that standardizes the numeric columns
  and one-hot encodes the category codes (``keras.ops`` only, so every backend runs it);
- :func:`decode`: model outputs -> the original labels (or probabilities, or values).

It must not import mlflow (only ``tracking.py`` and the served model file do).
"""

from __future__ import annotations

import json
import zipfile
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
import pandas as pd
from keras import ops

if TYPE_CHECKING:
    import numpy.typing as npt


class TabularEncoder(keras.layers.Layer):
    """Standardize numeric columns and one-hot encode category codes, in one layer.

    Args:
        numeric: Indices of the numeric columns of the input matrix.
        categorical: ``[index, depth]`` per categorical column (codes ``0..depth-1``).
        mean: Training mean of each numeric column.
        std: Training standard deviation of each numeric column (0 is treated as 1).
    """

    def __init__(
        self,
        numeric: list[int],
        categorical: list[list[int]],
        mean: list[float],
        std: list[float],
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.numeric = [int(i) for i in numeric]
        self.categorical = [[int(i), int(d)] for i, d in categorical]
        self.mean = [float(m) for m in mean]
        self.std = [float(s) if s > 0 else 1.0 for s in std]

    def call(self, x: Any) -> Any:
        x = ops.cast(x, "float32")
        parts = []
        if self.numeric:
            num = ops.take(x, self.numeric, axis=1)
            mean = ops.convert_to_tensor(np.asarray(self.mean, dtype="float32"))
            std = ops.convert_to_tensor(np.asarray(self.std, dtype="float32"))
            parts.append((num - mean) / std)
        for index, depth in self.categorical:
            codes = ops.cast(x[:, index], "int32")
            parts.append(ops.one_hot(codes, depth))
        return parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=-1)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, int]:
        width = len(self.numeric) + sum(d for _, d in self.categorical)
        return (input_shape[0], width)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "numeric": self.numeric,
            "categorical": self.categorical,
            "mean": self.mean,
            "std": self.std,
        }


class _Unused(keras.initializers.Initializer):
    """Stands in for a saved layer's initializer while :func:`load_keras` builds the layer, whose
    weights the file then overwrites: zeros made on the host. The real initializer (``original``,
    its saved config) is put back after loading. Keras on JAX runs a random initializer as one
    compiled XLA program per weight shape: ~1 s a model on 2 cores, for values thrown away."""

    def __init__(self, original: Any = None) -> None:
        self.original = original

    def __call__(self, shape: tuple[int, ...], dtype: Any = None) -> np.ndarray:
        return np.zeros(shape, dtype=keras.backend.standardize_dtype(dtype))

    def get_config(self) -> dict[str, Any]:
        return {"original": self.original}


CUSTOM_OBJECTS = {"TabularEncoder": TabularEncoder}


def _stand_in(config: Any) -> Any:
    """``config`` with every layer's ``*_initializer`` replaced by :class:`_Unused`."""
    if isinstance(config, list):
        return [_stand_in(c) for c in config]
    if not isinstance(config, dict):
        return config
    out = {}
    for key, value in config.items():
        if key.endswith("_initializer") and isinstance(value, (dict, str)):
            value = {"module": None, "class_name": "_Unused", "registered_name": "_Unused",
                     "config": {"original": value}}  # fmt: skip
        out[key] = _stand_in(value)
    return out


def _put_back(layer: Any) -> None:
    """Give ``layer`` (and the layers inside it) their saved initializers again."""
    for attr, value in list(vars(layer).items()):
        if isinstance(value, _Unused):
            setattr(layer, attr, keras.initializers.get(value.original))
    for inner in getattr(layer, "layers", []):
        _put_back(inner)


def load_keras(path: str) -> keras.Model:
    """Load a saved MLP (with its custom encoder layer), uncompiled.

    The layers are built with stand-in initializers and the saved weights loaded into them
    (``keras.models.load_model`` would first draw every weight at random); the model that
    comes back is the saved one, initializers in its config included.
    """
    with zipfile.ZipFile(path) as archive:
        config = json.loads(archive.read("config.json"))
    config["compile_config"] = None
    model = keras.saving.deserialize_keras_object(
        _stand_in(config), custom_objects={**CUSTOM_OBJECTS, "_Unused": _Unused}
    )
    model.load_weights(path)
    _put_back(model)
    return model


def encode_frame(meta: dict[str, Any], frame: pd.DataFrame) -> np.ndarray:
    """Raw tabular rows -> the float32 matrix the model takes.

    Raises:
        ValueError: naming the columns that are missing, or a numeric column holding text.
    """
    columns = meta["columns"]
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(
            f"missing input columns {missing}; the model takes {columns} (extra ones are ignored)"
        )
    vocab = meta.get("vocabulary", {})
    fill = meta.get("fill", {})
    out = np.zeros((len(frame), len(columns)), dtype=np.float32)
    for j, col in enumerate(columns):
        values = frame[col]
        if col in vocab:
            lookup = {v: i + 1 for i, v in enumerate(vocab[col])}
            out[:, j] = [lookup.get(category_key(v), 0) for v in values]
        else:
            numbers = pd.to_numeric(values, errors="coerce")
            bad = numbers.isna() & values.notna()
            if bad.any():
                raise ValueError(
                    f"column {col!r} is numeric but holds {values[bad].iloc[0]!r}; send numbers"
                )
            out[:, j] = numbers.fillna(fill.get(col, 0.0)).to_numpy(dtype=np.float32)
    return out


def category_key(value: object) -> str | None:
    """A category as the vocabulary stores it: text, whole numbers without ``.0``; None if missing.

    ``75001``, ``75001.0`` and ``"75001"`` are one category: pandas reads an integer column with a
    gap as floats, and a served row may carry either.
    """
    if value is None or (isinstance(value, (float, np.floating)) and np.isnan(value)):
        return None
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return str(value)


def prepare(meta: dict[str, Any], model_input: pd.DataFrame | npt.ArrayLike) -> np.ndarray:
    """Any accepted input (DataFrame of raw rows, or an array) -> the model's input array."""
    if meta["kind"] == "tabular" and isinstance(model_input, pd.DataFrame):
        if all(isinstance(c, str) for c in model_input.columns) and set(meta["columns"]) <= set(
            model_input.columns
        ):
            return encode_frame(meta, model_input)
        model_input = model_input.to_numpy()
    x = np.asarray(model_input, dtype=np.float32)
    return x.reshape((-1, *meta["input_shape"]))


def decode(
    meta: dict[str, Any], raw: np.ndarray, output: str = "labels"
) -> pd.DataFrame | np.ndarray:
    """Model outputs -> labels (original values), probabilities, or regression values."""
    task = meta["task"]
    raw = np.asarray(raw, dtype=np.float32)
    names = [str(n) for n in meta.get("class_names") or meta.get("labels") or []]
    if task == "multiclass":
        if output == "probabilities":
            return pd.DataFrame(raw, columns=names)
        labels = np.asarray(meta["labels"], dtype=object)[raw.argmax(axis=-1)]
        return _tidy(labels)
    if task == "binary":
        p = raw.reshape(len(raw), -1)[:, 0]
        if output == "probabilities":
            return pd.DataFrame({names[0]: 1.0 - p, names[1]: p})
        labels = np.asarray(meta["labels"], dtype=object)[(p >= 0.5).astype(int)]
        return _tidy(labels)
    if task == "multilabel":
        targets = meta["targets"]
        if output == "probabilities":
            return pd.DataFrame(raw, columns=targets)
        return pd.DataFrame((raw >= 0.5).astype(np.int64), columns=targets)
    values = raw.reshape(len(raw), -1)
    if len(meta.get("targets") or []) > 1:
        return pd.DataFrame(values, columns=meta["targets"])
    return values[:, 0]


def _tidy(labels: np.ndarray) -> np.ndarray:
    """Labels as a plain typed array (ints stay ints, booleans booleans, text text)."""
    if all(isinstance(v, (bool, np.bool_)) for v in labels):
        return labels.astype(bool)
    if all(isinstance(v, (int, np.integer)) for v in labels):
        return labels.astype(np.int64)
    return labels.astype(str)


def predict_raw(
    keras_path: str, meta: dict[str, Any], model_input: pd.DataFrame | npt.ArrayLike
) -> pd.DataFrame | np.ndarray:
    """Load the Keras file and predict labels (used to infer the output schema at log time)."""
    model = load_keras(keras_path)
    return decode(meta, model.predict(prepare(meta, model_input), verbose=0), "labels")
