"""Datasets: the registry, tabular files, tasks, splits and what the model needs to know.

Owns every dataset the tool can tune on: the registry (each entry declared with its task and a
loader, offline first) and CSV / Parquet files read with pandas (``target``, ``features``,
``drop``, ``categorical``, a missing-value policy). It decides the task (binary, multiclass,
multilabel, regression), splits train / validation / test (the book's for Fashion-MNIST: the last
5,000 training images validate, the official test set held out; seeded and stratified fractions
otherwise) and turns tabular rows into the float matrix the model takes, with the training
split's fill values and category vocabularies (see ``encoding.py``). Arrays leave here unscaled:
scaling lives inside the Keras model so that the logged model takes raw inputs. Nothing here
imports Keras at module level; the Keras download is a last resort.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from tuning.errors import ConfigError

__all__ = [
    "DATASETS",
    "TASKS",
    "Dataset",
    "DatasetInfo",
    "load_dataset",
    "task_of",
]

Task = Literal["binary", "multiclass", "multilabel", "regression"]
TASKS: tuple[str, ...] = ("binary", "multiclass", "multilabel", "regression")
CLASSIFICATION = ("binary", "multiclass", "multilabel")

# Where a copy of the IDX files may already be, searched in this order before any download.
DEBIAN_DIRS = {"fashion_mnist": Path("/usr/share/datasets/fashion-mnist")}
_IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


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

    def example_rows(self, n: int = 5) -> Any:
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


@dataclass(frozen=True)
class DatasetInfo:
    """A registry entry: the task is known without loading anything."""

    task: Task
    kind: Literal["image", "tabular"]
    loader: Callable[[], tuple[Any, ...]]
    description: str
    has_test_split: bool = False
    default_validation: float | int = 0.2
    source: str = ""


# -- loaders ----------------------------------------------------------------------------------


def _sklearn(fn_name: str) -> Callable[[], tuple[Any, ...]]:
    def load() -> tuple[Any, ...]:
        import pandas as pd
        import sklearn.datasets

        bunch = getattr(sklearn.datasets, fn_name)()
        names = [str(n) for n in getattr(bunch, "target_names", [])] or None
        features = [str(n) for n in getattr(bunch, "feature_names", [])] or [
            f"x{i}" for i in range(bunch.data.shape[1])
        ]
        frame = pd.DataFrame(bunch.data, columns=features)
        return frame, pd.Series(bunch.target, name="target"), names

    return load


def _read_idx(path: Path, offset: int) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), np.uint8, offset=offset)


def _keras_home() -> Path:
    return Path(os.environ.get("KERAS_HOME", "~/.keras")).expanduser()


def _download_hint(name: str) -> str:
    deb = DEBIAN_DIRS.get(name)
    hints = []
    if deb is not None:
        hints.append(f"apt-get install dataset-{name.replace('_', '-')}")
    hints.append(f"copy its files to {_keras_home() / 'datasets' / name.replace('_', '-')}/")
    hints.append("or run once with network access so Keras can download it")
    return ", ".join(hints)


def _keras_download(name: str) -> tuple[np.ndarray, ...]:
    """Let Keras fetch the dataset (and cache it under $KERAS_HOME/datasets)."""
    if os.environ.get("TUNING_OFFLINE", "").lower() in ("1", "true", "yes"):
        raise OSError("TUNING_OFFLINE is set")
    import keras

    (x_tr, y_tr), (x_te, y_te) = getattr(keras.datasets, name).load_data()
    return x_tr, y_tr, x_te, y_te


def _idx_dataset(name: str) -> Callable[[], tuple[Any, ...]]:
    def load() -> tuple[Any, ...]:
        dirs = [_keras_home() / "datasets" / name.replace("_", "-")]
        if name in DEBIAN_DIRS:
            dirs.append(DEBIAN_DIRS[name])
        for d in dirs:
            if all((d / f).is_file() for f in _IDX_FILES):
                x_tr = _read_idx(d / _IDX_FILES[0], 16).reshape(-1, 28, 28)
                y_tr = _read_idx(d / _IDX_FILES[1], 8)
                x_te = _read_idx(d / _IDX_FILES[2], 16).reshape(-1, 28, 28)
                y_te = _read_idx(d / _IDX_FILES[3], 8)
                return (x_tr, y_tr, x_te, y_te), None, None
        npz = _keras_home() / "datasets" / f"{name}.npz"  # where keras caches mnist
        if npz.is_file():
            with np.load(npz) as f:
                return (f["x_train"], f["y_train"], f["x_test"], f["y_test"]), None, None
        try:
            return _keras_download(name), None, None
        except Exception as e:  # offline: any network or file error ends here
            reason = " ".join(str(e).split())[:160] or type(e).__name__
            raise ConfigError(
                f"{name} is not on this machine (looked in {', '.join(map(str, dirs))}) and "
                f"could not be downloaded ({reason})",
                key="dataset.name",
                fix=_download_hint(name),
            ) from e

    return load


def _california_housing() -> tuple[Any, ...]:
    from sklearn.datasets import fetch_california_housing

    try:
        bunch = fetch_california_housing(download_if_missing=False)
    except OSError:
        if os.environ.get("TUNING_OFFLINE", "").lower() in ("1", "true", "yes"):
            raise ConfigError(
                "california_housing is not in scikit-learn's cache and TUNING_OFFLINE is set",
                key="dataset.name",
                fix="run once with network access (it is cached in ~/scikit_learn_data)",
            ) from None
        try:
            bunch = fetch_california_housing(download_if_missing=True)
        except Exception as e:
            reason = " ".join(str(e).split())[:160] or type(e).__name__
            raise ConfigError(
                f"california_housing is not in scikit-learn's cache and could not be downloaded "
                f"({reason})",
                key="dataset.name",
                fix="run once with network access (scikit-learn caches it in ~/scikit_learn_data),"
                " or tune on a shipped dataset such as diabetes",
            ) from e
    import pandas as pd

    frame = pd.DataFrame(bunch.data, columns=list(bunch.feature_names))
    return frame, pd.Series(bunch.target, name="MedHouseVal"), None


FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip

DATASETS: dict[str, DatasetInfo] = {
    "digits": DatasetInfo(
        "multiclass",
        "tabular",
        _sklearn("load_digits"),
        "8x8 digits, 1,797 rows (shipped)",
        source="sklearn.datasets.load_digits",
    ),
    "iris": DatasetInfo(
        "multiclass",
        "tabular",
        _sklearn("load_iris"),
        "150 rows (shipped)",
        source="sklearn.datasets.load_iris",
    ),
    "wine": DatasetInfo(
        "multiclass",
        "tabular",
        _sklearn("load_wine"),
        "178 rows (shipped)",
        source="sklearn.datasets.load_wine",
    ),
    "breast_cancer": DatasetInfo(
        "binary",
        "tabular",
        _sklearn("load_breast_cancer"),
        "569 rows (shipped)",
        source="sklearn.datasets.load_breast_cancer",
    ),
    "diabetes": DatasetInfo(
        "regression",
        "tabular",
        _sklearn("load_diabetes"),
        "442 rows, regression (shipped)",
        source="sklearn.datasets.load_diabetes",
    ),
    "california_housing": DatasetInfo(
        "regression",
        "tabular",
        _california_housing,
        "20,640 districts, regression (scikit-learn download, cached)",
        source="sklearn.datasets.fetch_california_housing",
    ),
    "fashion_mnist": DatasetInfo(
        "multiclass",
        "image",
        _idx_dataset("fashion_mnist"),
        "70,000 28x28 clothing images (Keras cache, Debian package or download)",
        has_test_split=True,
        default_validation=5000,
        source="keras.datasets.fashion_mnist",
    ),
    "mnist": DatasetInfo(
        "multiclass",
        "image",
        _idx_dataset("mnist"),
        "70,000 28x28 handwritten digits (Keras cache or download)",
        has_test_split=True,
        default_validation=5000,
        source="keras.datasets.mnist",
    ),
}


FILE_SUFFIXES = (".csv", ".parquet", ".pq")


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


# -- splitting --------------------------------------------------------------------------------


def _count(size: float | int, n: int, what: str, source: str | None = None) -> int:
    k = int(round(size * n)) if isinstance(size, float) else int(size)
    if not 1 <= k < n:
        raise ConfigError(
            f"a {what} split of {size!r} leaves {n - k} of {n} rows for training",
            source=source,
            key=f"dataset.{'validation' if what == 'validation' else 'test'}",
            fix="use a smaller split, or more rows",
        )
    return k


def _split_index(
    n: int,
    size: float | int,
    *,
    strata: np.ndarray | None,
    seed: int,
    what: str,
    source: str | None = None,
    labels: list[Any] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Row positions of the part kept and of the part held out (stratified when possible)."""
    from sklearn.model_selection import train_test_split

    k = _count(size, n, what, source)
    if strata is not None:
        values, counts = np.unique(strata, return_counts=True)
        if len(values) > k or len(values) > n - k or counts.min() < 2:
            rare = values[counts.argmin()]
            rare = labels[int(rare)] if labels is not None else rare.item()
            raise ConfigError(
                f"a stratified {what} split of {k} of {n} rows needs at least 2 rows of every "
                f"class and no more classes than rows on each side (class {rare!r} has "
                f"{counts.min()} row(s), {len(values)} classes)",
                source=source,
                key="dataset.target",
                fix="add rows, merge or remove rare classes, or change the split sizes",
            )
    keep, held = train_test_split(
        np.arange(n), test_size=k, random_state=seed, shuffle=True, stratify=strata
    )
    return np.sort(keep), np.sort(held)


# -- tabular rows -> task, targets, float matrix -----------------------------------------------


@dataclass
class _Table:
    """Raw rows of one dataset before splitting."""

    frame: Any  # pandas DataFrame of feature columns
    target: Any  # pandas DataFrame of target columns
    source: str
    class_names: list[str] | None = None
    task: str = "auto"
    categorical: tuple[str, ...] = ()
    impute: str = "error"
    is_file: bool = False


def _read_table(path: Path) -> Any:
    import pandas as pd

    if not path.is_file():
        raise ConfigError(
            "data file not found",
            source=str(path),
            key="dataset.path",
            fix="check the path (relative to the experiment file)",
        )
    try:
        if path.suffix.lower() == ".csv":
            return pd.read_csv(path)
        return pd.read_parquet(path)
    except Exception as e:  # pandas raises many kinds for a bad file
        reason = " ".join(str(e).split())[:200] or type(e).__name__
        raise ConfigError(
            f"cannot read the file ({type(e).__name__}: {reason})",
            source=str(path),
            key="dataset.path",
            fix="give a readable CSV (with a header row) or Parquet file",
        ) from e


def _file_table(
    path: Path,
    *,
    target: str | tuple[str, ...],
    features: tuple[str, ...] | None,
    drop: tuple[str, ...],
    categorical: tuple[str, ...],
    impute: str,
    task: str,
) -> _Table:
    frame = _read_table(path)
    src = str(path)
    columns = [str(c) for c in frame.columns]
    frame.columns = columns
    targets = [target] if isinstance(target, str) else list(target)
    for key, names in (
        ("dataset.target", targets),
        ("dataset.features", list(features or ())),
        ("dataset.drop", list(drop)),
        ("dataset.categorical", list(categorical)),
    ):
        unknown = [c for c in names if c not in columns]
        if unknown:
            raise ConfigError(
                f"no column {unknown[0]!r} in the file",
                source=src,
                key=key,
                fix=f"use one of its columns: {', '.join(columns)}",
            )
    chosen = list(features) if features else [c for c in columns if c not in targets + list(drop)]
    clash = [c for c in chosen if c in targets]
    if clash:
        raise ConfigError(
            f"column {clash[0]!r} is both a feature and the target",
            source=src,
            key="dataset.features",
            fix="remove it from features",
        )
    if not chosen:
        raise ConfigError(
            "no feature column is left", source=src, key="dataset.features", fix="list features"
        )
    return _Table(
        frame=frame[chosen].copy(),
        target=frame[targets].copy(),
        source=src,
        task=task,
        categorical=categorical,
        impute=impute,
        is_file=True,
    )


def _is_integral(values: np.ndarray) -> bool:
    return bool(np.all(np.isfinite(values)) and np.all(np.mod(values, 1) == 0))


def _decide_task(table: _Table) -> str:
    """The declared task, checked against the target; or the task the target implies."""
    import pandas as pd

    target = table.target
    declared = table.task
    numeric = all(pd.api.types.is_numeric_dtype(target[c]) for c in target.columns)
    numeric = numeric and not any(pd.api.types.is_bool_dtype(target[c]) for c in target.columns)
    if target.shape[1] > 1:
        binary01 = numeric and all(
            set(np.unique(target[c].dropna())) <= {0, 1} for c in target.columns
        )
        task = declared if declared != "auto" else ("multilabel" if binary01 else "regression")
        if task == "multilabel" and not binary01:
            raise ConfigError(
                "a multilabel target needs 0/1 columns",
                source=table.source,
                key="dataset.target",
                fix="encode each label as 0/1, or set task: regression",
            )
        if task in ("binary", "multiclass"):
            raise ConfigError(
                f"task {task} takes one target column, not {list(target.columns)}",
                source=table.source,
                key="dataset.task",
                fix="name one target column, or set task: multilabel",
            )
        if task == "regression" and not numeric:
            raise ConfigError(
                "a regression target must be numeric",
                source=table.source,
                key="dataset.target",
                fix="set task: multilabel",
            )
        return task
    y = target.iloc[:, 0]
    n_classes = y.nunique(dropna=True)
    if declared == "auto":
        if not numeric:
            task = "binary" if n_classes == 2 else "multiclass"
        elif _is_integral(y.dropna().to_numpy(dtype=float)) and n_classes <= 20:
            task = "binary" if n_classes == 2 else "multiclass"
        else:
            task = "regression"
    else:
        task = declared
    if task == "regression" and not numeric:
        raise ConfigError(
            f"target {y.name!r} is not numeric, so it cannot be a regression target",
            source=table.source,
            key="dataset.task",
            fix="set task: multiclass (or binary)",
        )
    if task == "multilabel":
        raise ConfigError(
            "a multilabel task needs several 0/1 target columns",
            source=table.source,
            key="dataset.target",
            fix="list them: target: [label_a, label_b, ...]",
        )
    if task in ("binary", "multiclass") and n_classes < 2:
        raise ConfigError(
            f"target {y.name!r} has a single class ({y.dropna().iloc[0]!r})",
            source=table.source,
            key="dataset.target",
            fix="a classifier needs at least two classes: check the target column",
        )
    if task == "binary" and n_classes != 2:
        raise ConfigError(
            f"task binary needs exactly 2 classes; target {y.name!r} has {n_classes}",
            source=table.source,
            key="dataset.task",
            fix="set task: multiclass",
        )
    return task


def _column_kinds(table: _Table) -> tuple[list[str], list[str]]:
    """Split feature columns into numeric and categorical; reject text in a numeric column."""
    import pandas as pd

    numeric, categorical = [], []
    for col in table.frame.columns:
        values = table.frame[col]
        if values.isna().all():
            raise ConfigError(
                "the column holds no value at all (every row is missing)",
                source=table.source,
                key=f"column {col!r}",
                fix=f"add it to dataset.drop: [{col}]",
            )
        if col in table.categorical or pd.api.types.is_bool_dtype(values):
            categorical.append(col)
        elif pd.api.types.is_numeric_dtype(values):
            numeric.append(col)
        else:
            parsed = pd.to_numeric(values, errors="coerce")
            present = values.notna()
            bad = present & parsed.isna()
            share = 1 - bad.sum() / max(present.sum(), 1)
            if not bad.any():
                table.frame[col] = parsed
                numeric.append(col)
            elif share >= 0.5:
                raise ConfigError(
                    f"the column is numeric but {int(bad.sum())} row(s) hold text such as "
                    f"{values[bad].iloc[0]!r}",
                    source=table.source,
                    key=f"column {col!r}",
                    fix=f"clean those rows, or treat it as a category: categorical: [{col}]",
                )
            else:
                categorical.append(col)
    return numeric, categorical


def _handle_missing(table: _Table) -> None:
    """Apply the missing-value policy (targets must be complete unless rows are dropped)."""
    used = table.frame.join(table.target, rsuffix="__target")
    counts = used.isna().sum()
    counts = counts[counts > 0]
    if counts.empty:
        return
    target_cols = [c for c in counts.index if c in table.target.columns or c.endswith("__target")]
    if table.impute == "drop":
        keep = ~used.isna().any(axis=1)
        table.frame = table.frame[keep]
        table.target = table.target[keep]
        return
    listed = ", ".join(f"{c} ({n} rows)" for c, n in counts.items())
    if table.impute == "error" or target_cols:
        what = "the target" if target_cols and table.impute != "error" else "columns"
        raise ConfigError(
            f"missing values in {what}: {listed}",
            source=table.source,
            key="dataset.impute",
            fix="set dataset.impute to mean, median (features) or drop (rows)"
            if not target_cols or table.impute == "error"
            else "set dataset.impute: drop, or fill the target",
        )
    # mean / median: applied per split after splitting, from the training rows only.


def _tabular(
    table: _Table,
    *,
    name: str,
    task: str | None,
    validation: float | int | None,
    test: float | None,
    default_validation: float | int,
    seed: int,
) -> Dataset:
    import pandas as pd

    if task is None:
        task = _decide_task(table)
    numeric, categorical = _column_kinds(table)
    _handle_missing(table)
    frame = table.frame.reset_index(drop=True)
    target = table.target.reset_index(drop=True)
    targets = [str(c) for c in target.columns]

    labels: list[Any] | None = None
    class_names = table.class_names
    if task in ("binary", "multiclass"):
        y_raw = target.iloc[:, 0]
        uniques = sorted(y_raw.unique().tolist(), key=lambda v: (str(type(v)), v))
        labels = [v.item() if hasattr(v, "item") else v for v in uniques]
        index = {v: i for i, v in enumerate(uniques)}
        y = y_raw.map(index).to_numpy(dtype=np.int32)
        if class_names is None or len(class_names) != len(labels):
            class_names = [str(v) for v in labels]
        strata: np.ndarray | None = y
    elif task == "multilabel":
        y = target.to_numpy(dtype=np.float32)
        strata = None
    else:
        y = target.to_numpy(dtype=np.float32)
        y = y[:, 0] if y.shape[1] == 1 else y
        strata = None

    n = len(frame)
    # Registered datasets' split sizes are the experiment file's; a file's rows are its own.
    src = table.source if table.is_file else None
    rest, test_idx = _split_index(
        n, test or 0.2, strata=strata, seed=seed, what="test", source=src, labels=labels
    )
    rest_strata = strata[rest] if strata is not None else None
    train_pos, valid_pos = _split_index(
        len(rest), validation or default_validation, strata=rest_strata, seed=seed + 1,
        what="validation", source=src, labels=labels,
    )  # fmt: skip
    train_idx, valid_idx = rest[train_pos], rest[valid_pos]

    train = frame.iloc[train_idx]
    fill: dict[str, float] = {}
    for col in numeric:
        stat = train[col].median() if table.impute == "median" else train[col].mean()
        fill[col] = float(stat) if pd.notna(stat) else 0.0
    from tuning.data.encoding import category_key, encode_frame

    vocabulary = {
        col: sorted({str(category_key(v)) for v in train[col].dropna().unique()})
        for col in categorical
    }

    meta = {"columns": list(frame.columns), "vocabulary": vocabulary, "fill": fill}
    x_all = encode_frame(meta, frame)
    for split_name, idx in (("train", train_idx), ("validation", valid_idx), ("test", test_idx)):
        if not np.isfinite(x_all[idx]).all():
            raise ConfigError(
                f"the {split_name} rows hold infinite values",
                source=table.source,
                key="dataset",
                fix="clean the data before tuning",
            )
    return Dataset(
        name=name,
        task=task,  # type: ignore[arg-type]
        kind="tabular",
        x_train=x_all[train_idx],
        y_train=y[train_idx],
        x_valid=x_all[valid_idx],
        y_valid=y[valid_idx],
        x_test=x_all[test_idx],
        y_test=y[test_idx],
        n_classes=len(labels) if labels is not None else None,
        labels=labels,
        class_names=class_names,
        feature_names=list(frame.columns),
        targets=targets,
        vocabulary=vocabulary,
        fill=fill,
        extra={"raw_valid": frame.iloc[valid_idx]},
    )


def _images(
    name: str, loaded: tuple[Any, ...], *, validation: float | int | None, info: DatasetInfo
) -> Dataset:
    (x_full, y_full, x_test, y_test), _, _ = loaded
    k = _count(validation or info.default_validation, len(x_full), "validation")
    # The book's split: the last k training images validate, the test set stays apart.
    x_train, y_train = x_full[:-k], y_full[:-k]
    x_valid, y_valid = x_full[-k:], y_full[-k:]
    x_train, x_valid, x_test = (
        np.asarray(a, dtype=np.float32) for a in (x_train, x_valid, x_test)
    )
    y_train, y_valid, y_test = (np.asarray(a, dtype=np.int32) for a in (y_train, y_valid, y_test))
    n_classes = int(max(y_train.max(), y_valid.max(), y_test.max())) + 1
    class_names = FASHION_MNIST_CLASSES if name == "fashion_mnist" else None
    return Dataset(
        name=name,
        task="multiclass",
        kind="image",
        x_train=x_train,
        y_train=y_train,
        x_valid=x_valid,
        y_valid=y_valid,
        x_test=x_test,
        y_test=y_test,
        n_classes=n_classes,
        labels=list(range(n_classes)),
        class_names=class_names or [str(i) for i in range(n_classes)],
    )


@functools.lru_cache(maxsize=4)
def load_dataset(
    name: str | None = None,
    *,
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
        table = _file_table(
            Path(path),
            target=target,
            features=features,
            drop=drop,
            categorical=categorical,
            impute=impute,
            task=task,
        )
        data = _tabular(
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
    task_of(name)
    info = DATASETS[name]
    loaded = info.loader()
    if info.kind == "image":
        data = _images(name, loaded, validation=validation, info=info)
        return dataclasses.replace(data, source=info.source)
    frame, y, class_names = loaded
    table = _Table(
        frame=frame,
        target=y.to_frame(),
        source=name,
        class_names=class_names,
        impute=impute,
        categorical=categorical,
    )
    data = _tabular(
        table,
        name=name,
        task=info.task,
        validation=validation,
        test=test,
        default_validation=info.default_validation,
        seed=seed,
    )
    return dataclasses.replace(data, source=info.source)
