"""Splits: how many rows a validation or test size (a fraction or a count) takes, and which.

Owns the seeded, stratified-when-possible row selection and its errors (a split that leaves no
training rows, a class too rare to stratify). It works on row positions and knows no loader.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tuning.errors import ConfigError


def count_rows(size: float | int, n: int, what: str, source: str | None = None) -> int:
    """Rows a split of ``size`` (a fraction of ``n``, or a count) takes; at least one row is left.

    Raises:
        ConfigError: if the split would take no row, or every row.
    """
    k = int(round(size * n)) if isinstance(size, float) else int(size)
    if not 1 <= k < n:
        raise ConfigError(
            f"a {what} split of {size!r} leaves {n - k} of {n} rows for training",
            source=source,
            key=f"dataset.{'validation' if what == 'validation' else 'test'}",
            fix="use a smaller split, or more rows",
        )
    return k


def split_index(
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
    # scikit-learn takes a second to import: the registry (read by config checks) goes without.
    from sklearn.model_selection import train_test_split

    k = count_rows(size, n, what, source)
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
