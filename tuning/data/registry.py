"""The dataset registry and the entry point: what can be tuned on, and :func:`load_dataset`.

Owns the registered datasets (each declared with its task, kind and loader, offline first), the
task of a name without loading anything, and ``load_dataset``, which sends a name or a file to
the image or tabular loaders and caches the split result per process.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

from tuning.data.dataset import Dataset, Task
from tuning.data.images import ImageLoad, idx_loader, image_dataset
from tuning.data.tabular import (
    Table,
    TableLoad,
    california_housing,
    file_table,
    sklearn_loader,
    tabular_dataset,
)
from tuning.errors import ConfigError


@dataclass(frozen=True)
class DatasetInfo:
    """A registry entry: the task is known without loading anything."""

    task: Task
    kind: Literal["image", "tabular"]
    loader: Callable[[], ImageLoad | TableLoad]
    description: str
    has_test_split: bool = False
    default_validation: float | int = 0.2
    source: str = ""


DATASETS: dict[str, DatasetInfo] = {
    "digits": DatasetInfo(
        "multiclass",
        "tabular",
        sklearn_loader("load_digits"),
        "8x8 digits, 1,797 rows (shipped)",
        source="sklearn.datasets.load_digits",
    ),
    "iris": DatasetInfo(
        "multiclass",
        "tabular",
        sklearn_loader("load_iris"),
        "150 rows (shipped)",
        source="sklearn.datasets.load_iris",
    ),
    "wine": DatasetInfo(
        "multiclass",
        "tabular",
        sklearn_loader("load_wine"),
        "178 rows (shipped)",
        source="sklearn.datasets.load_wine",
    ),
    "breast_cancer": DatasetInfo(
        "binary",
        "tabular",
        sklearn_loader("load_breast_cancer"),
        "569 rows (shipped)",
        source="sklearn.datasets.load_breast_cancer",
    ),
    "diabetes": DatasetInfo(
        "regression",
        "tabular",
        sklearn_loader("load_diabetes"),
        "442 rows, regression (shipped)",
        source="sklearn.datasets.load_diabetes",
    ),
    "california_housing": DatasetInfo(
        "regression",
        "tabular",
        california_housing,
        "20,640 districts, regression (scikit-learn download, cached)",
        source="sklearn.datasets.fetch_california_housing",
    ),
    "fashion_mnist": DatasetInfo(
        "multiclass",
        "image",
        idx_loader("fashion_mnist"),
        "70,000 28x28 clothing images (Keras cache, Debian package or download)",
        has_test_split=True,
        default_validation=5000,
        source="keras.datasets.fashion_mnist",
    ),
    "mnist": DatasetInfo(
        "multiclass",
        "image",
        idx_loader("mnist"),
        "70,000 28x28 handwritten digits (Keras cache or download)",
        has_test_split=True,
        default_validation=5000,
        source="keras.datasets.mnist",
    ),
}


def task_of(name: str) -> Task:
    """The task of a registered dataset, without loading it.

    Raises:
        ConfigError: if ``name`` is not registered.
    """
    if name not in DATASETS:
        raise ConfigError(
            f"unknown dataset {name!r}",
            key="dataset.name",
            fix=f"use one of {', '.join(DATASETS)}",
        )
    return DATASETS[name].task


def load_dataset(name: str | None = None, **kwargs: Any) -> Dataset:
    """Load and split a registered dataset or a CSV / Parquet file (cached per process; a
    file is read again when its size or modification time changed). Arguments: see
    :func:`_load_dataset`."""
    path = kwargs.get("path")
    stamp = None
    if path is not None and Path(path).is_file():
        stat = Path(path).stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
    return _load_dataset(name, stamp=stamp, **kwargs)


@functools.lru_cache(maxsize=4)
def _load_dataset(
    name: str | None = None,
    *,
    stamp: tuple[int, int] | None = None,
    validation: float | int | None = None,
    test: float | None = None,
    seed: int = 42,
    path: str | None = None,
    target: str | tuple[str, ...] | None = None,
    features: tuple[str, ...] | None = None,
    drop: tuple[str, ...] = (),
    categorical: tuple[str, ...] = (),
    impute: str = "error",
    task: str = "auto",
) -> Dataset:
    """Load and split a registered dataset or a CSV / Parquet file (cached per process).

    Args:
        name: A key of :data:`DATASETS` (or ``None`` with ``path``).
        stamp: The file's modification time and size: part of the cache's key only.
        validation: Fraction or row count held out of the training data for validation.
        test: Fraction held out for test, for datasets without an official test split.
        seed: Seed of the shuffles.
        path: A CSV or Parquet file (absolute, or relative to the current folder).
        target: The target column, or several (multilabel or multi-output regression).
        features: Feature columns (default: every column but the target and ``drop``).
        drop: Columns to leave out.
        categorical: Columns to treat as categories even if they hold numbers.
        impute: Missing values: ``error`` (default), ``mean`` / ``median`` (training split's
            value; categories get the unknown code), or ``drop`` (rows).
        task: ``auto`` or one of :data:`TASKS`.

    Raises:
        ConfigError: naming the file, the column and the fix, for every problem of the data.
    """
    if path is not None:
        if target is None:
            raise ConfigError(
                "a data file needs a target", key="dataset.target", fix="name its target column"
            )
        table = file_table(
            Path(path),
            target=target,
            features=features,
            drop=drop,
            categorical=categorical,
            impute=impute,
            task=task,
        )
        data = tabular_dataset(
            table,
            name=Path(path).stem,
            task=None,
            validation=validation,
            test=test,
            default_validation=0.2,
            seed=seed,
        )
        return dataclasses.replace(data, source=str(Path(path).resolve()))
    if name is None:
        raise ConfigError("no dataset named", key="dataset", fix="give dataset.name or .path")
    return _load_registered(
        name,
        validation=validation,
        test=test,
        seed=seed,
        categorical=categorical,
        impute=impute,
    )


load_dataset.cache_clear = _load_dataset.cache_clear  # type: ignore[attr-defined]


def _load_registered(
    name: str,
    *,
    validation: float | int | None,
    test: float | None,
    seed: int,
    categorical: tuple[str, ...],
    impute: str,
) -> Dataset:
    """A registered dataset, loaded by its loader and split (the images the book's way)."""
    task_of(name)
    info = DATASETS[name]
    loaded = info.loader()
    if info.kind == "image":
        arrays, _, _ = cast("ImageLoad", loaded)
        data = image_dataset(
            name, arrays, validation=validation, default_validation=info.default_validation
        )
        return dataclasses.replace(data, source=info.source)
    frame, y, class_names = cast("TableLoad", loaded)
    table = Table(
        frame=frame,
        target=y.to_frame(),
        source=name,
        class_names=class_names,
        impute=impute,
        categorical=categorical,
    )
    data = tabular_dataset(
        table,
        name=name,
        task=info.task,
        validation=validation,
        test=test,
        default_validation=info.default_validation,
        seed=seed,
    )
    return dataclasses.replace(data, source=info.source)
