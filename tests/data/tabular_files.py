"""Seeded tables written as CSV / Parquet files, shared by the tabular and encoding tests.

``load_dataset`` is cached on its arguments, so ``load_file`` clears the cache around every load
of a file a test wrote.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tuning.data import Dataset, load_dataset

FEATURES = ["id", "size", "weight", "city", "indoor"]
CITIES = ["paris", "lyon", "nice"]
RARE = [f"rare{i}" for i in range(6)]  # one row each: some of them miss the training split


def load_file(path: Path, **kwargs: Any) -> Dataset:
    """``load_dataset(path=...)`` with its cache cleared before and after."""
    load_dataset.cache_clear()
    try:
        return load_dataset(path=str(path), **kwargs)
    finally:
        load_dataset.cache_clear()


def write_file(frame: pd.DataFrame, path: Path) -> Path:
    """The rows as CSV or Parquet, by the suffix of ``path``."""
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return path


def animals(n: int = 150, seed: int = 0) -> pd.DataFrame:
    """Numbers, a text category (with single-row rarities), a bool and a 3-class text target."""
    rng = np.random.default_rng(seed)
    city = rng.choice(CITIES, n).astype(object)
    city[: len(RARE)] = RARE
    classes = np.array(["cat", "dog", "bird"])[np.arange(n) % 3]
    return pd.DataFrame(
        {
            "id": np.arange(n, dtype=np.int64),  # tells which raw row each matrix row is
            "size": rng.normal(10, 3, n).round(3),
            "weight": rng.uniform(1, 50, n).round(3),
            "city": city,
            "indoor": rng.choice([True, False], n),
            "y": classes[rng.permutation(n)],
        }
    )


def with_gaps(n: int = 150) -> pd.DataFrame:
    """``animals`` with missing sizes and cities."""
    raw = animals(n)
    raw.loc[10:19, "size"] = np.nan
    raw.loc[20:24, "city"] = np.nan
    return raw


def ids(x: np.ndarray) -> np.ndarray:
    """The raw row of each matrix row (its ``id`` column)."""
    return x[:, FEATURES.index("id")].astype(int)
