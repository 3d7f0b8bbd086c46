"""The Dataset: split arrays and what model building and serving need to know about them.

Owns the tasks (binary, multiclass, multilabel, regression) and the :class:`Dataset` every loader
of this package returns. Its arrays are unscaled: scaling lives inside the Keras model, so that the
logged model takes raw inputs. It loads nothing and imports neither Keras nor pandas.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

Task = Literal["binary", "multiclass", "multilabel", "regression"]
TASKS: tuple[str, ...] = ("binary", "multiclass", "multilabel", "regression")
CLASSIFICATION = ("binary", "multiclass", "multilabel")


@dataclass
class Dataset:
    """Split arrays and what model building needs to know about them.

    Attributes:
        name: Registry name, or the file's name.
        task: ``binary``, ``multiclass``, ``multilabel`` or ``regression``.
        kind: ``image`` (raw pixels, rescaled by 1/255 inside the model) or ``tabular``
            (a float matrix: numbers, and category codes ``1..k``; see ``encoding.py``).
        n_classes: Number of classes (binary, multiclass), else ``None``.
        labels: The original target value of each class index (what predictions return).
        class_names: A readable name of each class index (probability column headers).
        feature_names: Name of each column of a tabular matrix.
        targets: Names of the target columns (several for multilabel / multi-output regression).
        vocabulary: Categorical column -> its categories as text, in code order (code = index+1).
        fill: Numeric column -> the value its missing entries get (training mean or median).
        source: Where the rows came from: the file's absolute path, or the loader that made
            them (``sklearn.datasets.load_digits``), for the runs' dataset inputs.
    """

    name: str
    task: Task
    kind: Literal["image", "tabular"]
    x_train: np.ndarray
    y_train: np.ndarray
    x_valid: np.ndarray
    y_valid: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int | None = None
    labels: list[Any] | None = None
    class_names: list[str] | None = None
    feature_names: list[str] | None = None
    targets: list[str] | None = None
    vocabulary: dict[str, list[str]] = field(default_factory=dict)
    fill: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    @property
    def is_classification(self) -> bool:
        """Binary, multiclass or multilabel."""
        return self.task in CLASSIFICATION

    @property
    def n_outputs(self) -> int:
        """Units of the output layer."""
        if self.task == "multiclass":
            return int(self.n_classes or 0)
        if self.task in ("multilabel", "regression"):
            return len(self.targets or []) or 1
        return 1

    def serving_meta(self) -> dict[str, Any]:
        """What the logged model needs to turn raw rows into inputs and outputs into labels."""
        return {
            "task": self.task,
            "kind": self.kind,
            "input_shape": list(self.input_shape),
            "columns": self.feature_names,
            "vocabulary": self.vocabulary,
            "fill": self.fill,
            "labels": self.labels,
            "class_names": self.class_names,
            "targets": self.targets,
        }

    def validation_rows(self) -> pd.DataFrame | np.ndarray:
        """Every raw validation row, as the logged model takes them."""
        return self.example_rows(len(self.x_valid))

    def example_rows(self, n: int = 5) -> pd.DataFrame | np.ndarray:
        """A few raw validation rows: a DataFrame with the original columns for tabular data."""
        if self.kind == "tabular" and "raw_valid" in self.extra:
            return self.extra["raw_valid"].head(n).reset_index(drop=True)
        return self.x_valid[:n]

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example."""
        return tuple(self.x_train.shape[1:])

    def sizes(self) -> dict[str, int]:
        """Rows in each split."""
        return {"train": len(self.x_train), "valid": len(self.x_valid), "test": len(self.x_test)}
