"""Splits: how many rows a validation or test size (a fraction or a count) takes, and which.

Owns the seeded, stratified-when-possible row selection and its errors (a split that leaves no
training rows, a class too rare to stratify). It works on row positions and knows no loader.
"""

from __future__ import annotations

from collections.abc import Sequence

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


def _split_index(
    n: int,
    size: float | int,
    *,
    strata: np.ndarray | None,
    seed: int,
    what: str,
    source: str | None = None,
    labels: Sequence[object] | None = None,
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


def train_valid_test(
    n: int,
    *,
    validation: float | int,
    test: float | int,
    strata: np.ndarray | None,
    seed: int,
    source: str | None = None,
    labels: Sequence[object] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row positions of the training, validation and test splits of ``n`` rows.

    The test rows are held out first (shuffled by ``seed``), then the validation rows out of the
    rest (by ``seed + 1``); both stratified on ``strata`` when given.

    Raises:
        ConfigError: if a split leaves no training row or a class is too rare to stratify.
    """
    rest, test_idx = _split_index(
        n, test, strata=strata, seed=seed, what="test", source=source, labels=labels
    )
    rest_strata = strata[rest] if strata is not None else None
    train_pos, valid_pos = _split_index(
        len(rest), validation, strata=rest_strata, seed=seed + 1,
        what="validation", source=source, labels=labels,
    )  # fmt: skip
    return rest[train_pos], rest[valid_pos], test_idx
