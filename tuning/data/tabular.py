"""Tabular datasets: scikit-learn's tables and CSV / Parquet files, up to the float matrix.

Owns reading a table (``target``, ``features``, ``drop``, ``categorical``), deciding its task
from the target, telling numeric from categorical columns, the missing-value policy (training
split's mean or median, or dropped rows), and turning the rows into the matrix the model takes,
with the training split's fill values and category vocabularies (``encoding.py`` encodes).
Every problem of the data is a ConfigError naming the file, the column and the fix.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tuning.data.dataset import Dataset
from tuning.data.splits import train_valid_test
from tuning.errors import ConfigError

FILE_SUFFIXES = (".csv", ".parquet", ".pq")

TableLoad = tuple[pd.DataFrame, pd.Series, list[str] | None]
"""What a tabular loader of the registry returns: features, target, class names (or None)."""


def sklearn_loader(fn_name: str) -> Callable[[], TableLoad]:
    """The registry's loader of a table shipped with scikit-learn: ``(frame, target, names)``."""

    def load() -> TableLoad:
        # scikit-learn takes a second to import: the registry (read by config checks) goes without.
        import sklearn.datasets

        bunch = getattr(sklearn.datasets, fn_name)()
        names = [str(n) for n in getattr(bunch, "target_names", [])] or None
        features = [str(n) for n in getattr(bunch, "feature_names", [])] or [
            f"x{i}" for i in range(bunch.data.shape[1])
        ]
        frame = pd.DataFrame(bunch.data, columns=features)
        return frame, pd.Series(bunch.target, name="target"), names

    return load


def california_housing() -> TableLoad:
    """The registry's loader of California housing: scikit-learn's cache, or its download."""
    # scikit-learn takes a second to import: the registry (read by config checks) goes without.
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
    frame = pd.DataFrame(bunch.data, columns=list(bunch.feature_names))
    return frame, pd.Series(bunch.target, name="MedHouseVal"), None


@dataclass
class Table:
    """Raw rows of one dataset before splitting."""

    frame: pd.DataFrame  # feature columns
    target: pd.DataFrame  # target columns
    source: str
    class_names: list[str] | None = None
    task: str = "auto"
    categorical: tuple[str, ...] = ()
    impute: str = "error"
    is_file: bool = False


def _read_table(path: Path) -> pd.DataFrame:
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


def file_table(
    path: Path,
    *,
    target: str | tuple[str, ...],
    features: tuple[str, ...] | None,
    drop: tuple[str, ...],
    categorical: tuple[str, ...],
    impute: str,
    task: str,
) -> Table:
    """A file's rows, with the columns the experiment names checked against its header.

    Raises:
        ConfigError: naming the file, the key and its columns, for an unknown or clashing column
            or a file with a header and no rows.
    """
    frame = _read_table(path)
    src = str(path)
    if frame.empty and len(frame.columns):
        raise ConfigError(
            "the file has a header but no data rows",
            source=src,
            key="dataset.path",
            fix="add the data rows under the header, one row per example",
        )
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
    return Table(
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


def _check_target_present(table: Table) -> None:
    """Every target column holds values: one that is empty in every row cannot be learned.

    Raises:
        ConfigError: naming the file, the target column and how many rows it has.
    """
    for col in table.target.columns:
        if table.target[col].isna().all():
            n = len(table.target)
            raise ConfigError(
                f"the target column {col!r} holds no value (all {n} of its rows are empty)",
                source=table.source,
                key="dataset.target",
                fix="name the column that holds the labels, or fill this one",
            )


def _decide_task(table: Table) -> str:
    """The declared task, checked against the target; or the task the target implies."""
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


def _column_kinds(table: Table) -> tuple[list[str], list[str]]:
    """Split feature columns into numeric and categorical; reject text in a numeric column."""
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


def _handle_missing(table: Table) -> None:
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


def _encode_target(target: pd.DataFrame, task: str) -> tuple[np.ndarray, list[Any] | None]:
    """The target as the model takes it, and the original value of each class index.

    Classes are numbered in sorted order; a regression target of one column becomes a vector.
    """
    if task in ("binary", "multiclass"):
        y_raw = target.iloc[:, 0]
        uniques = sorted(y_raw.unique().tolist(), key=lambda v: (str(type(v)), v))
        labels = [v.item() if hasattr(v, "item") else v for v in uniques]
        index = {v: i for i, v in enumerate(uniques)}
        return y_raw.map(index).to_numpy(dtype=np.int32), labels
    y = target.to_numpy(dtype=np.float32)
    if task != "multilabel" and y.shape[1] == 1:
        y = y[:, 0]
    return y, None


def _fill_values(train: pd.DataFrame, numeric: list[str], impute: str) -> dict[str, float]:
    """The value missing entries of each numeric column get: the training rows' mean or median."""
    fill: dict[str, float] = {}
    for col in numeric:
        stat = train[col].median() if impute == "median" else train[col].mean()
        fill[col] = float(stat) if pd.notna(stat) else 0.0
    return fill


def _encode_features(
    frame: pd.DataFrame,
    *,
    train_idx: np.ndarray,
    fill: dict[str, float],
    categorical: list[str],
    splits: dict[str, np.ndarray],
    source: str,
) -> tuple[np.ndarray, dict[str, list[str]]]:
    """The float matrix of every row, and the category vocabularies of the training rows.

    Raises:
        ConfigError: if the rows of a split hold infinite values.
    """
    # encoding.py imports keras, which must wait until tuning.backend has chosen the backend.
    from tuning.data.encoding import category_key, encode_frame

    train = frame.iloc[train_idx]
    vocabulary = {
        col: sorted({str(category_key(v)) for v in train[col].dropna().unique()})
        for col in categorical
    }
    meta = {"columns": list(frame.columns), "vocabulary": vocabulary, "fill": fill}
    x_all = encode_frame(meta, frame)
    for split_name, idx in splits.items():
        if not np.isfinite(x_all[idx]).all():
            raise ConfigError(
                f"the {split_name} rows hold infinite values",
                source=source,
                key="dataset",
                fix="clean the data before tuning",
            )
    return x_all, vocabulary


def tabular_dataset(
    table: Table,
    *,
    name: str,
    task: str | None,
    validation: float | int | None,
    test: float | None,
    default_validation: float | int,
    seed: int,
) -> Dataset:
    """A table's rows split, and encoded with what the training split says (fills, categories).

    Args:
        task: The registry's task, or ``None`` to decide it from the target.

    Raises:
        ConfigError: naming the file, the column and the fix, for every problem of the data.
    """
    _check_target_present(table)
    used_rows = table.target.index
    if task is None:
        task = _decide_task(table)
    numeric, categorical = _column_kinds(table)
    _handle_missing(table)
    n_rows = len(table.frame)
    if n_rows < 3:  # training, validation and test take one row each at least
        dropped = table.impute == "drop" and n_rows < len(used_rows)
        raise ConfigError(
            f"{n_rows} data row(s) left once the rows missing a value are dropped"
            if dropped
            else f"the data has {n_rows} row(s): training, validation and test need one each",
            source=table.source,
            key="dataset.impute" if dropped else "dataset.path",
            fix="drop the columns with many missing values (dataset.drop), or impute: median"
            if dropped
            else "add rows: at least 3, and many more for a useful study",
        )
    frame = table.frame.reset_index(drop=True)
    y, labels = _encode_target(table.target.reset_index(drop=True), task)
    train_idx, valid_idx, test_idx = train_valid_test(
        len(frame),
        validation=validation or default_validation,
        test=test or 0.2,
        strata=y if labels is not None else None,
        seed=seed,
        # Registered datasets' split sizes are the experiment file's; a file's rows are its own.
        source=table.source if table.is_file else None,
        labels=labels,
    )
    fill = _fill_values(frame.iloc[train_idx], numeric, table.impute)
    x_all, vocabulary = _encode_features(
        frame,
        train_idx=train_idx,
        fill=fill,
        categorical=categorical,
        splits={"train": train_idx, "validation": valid_idx, "test": test_idx},
        source=table.source,
    )
    class_names = table.class_names
    if labels is not None and (class_names is None or len(class_names) != len(labels)):
        class_names = [str(v) for v in labels]
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
        targets=[str(c) for c in table.target.columns],
        vocabulary=vocabulary,
        fill=fill,
        extra={"raw_valid": frame.iloc[valid_idx]},
    )
