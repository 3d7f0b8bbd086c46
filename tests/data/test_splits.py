"""Splits: seeded shuffles, a validation size as a count, a split that leaves no training rows."""

from __future__ import annotations

import numpy as np
import pytest

from tuning.data import load_dataset
from tuning.errors import ConfigError


def test_splits_are_seeded() -> None:
    a = load_dataset("wine", seed=1)
    b = load_dataset("wine", seed=1, validation=0.2)  # same split, different cache key
    c = load_dataset("wine", seed=2)
    assert np.array_equal(a.y_valid, b.y_valid)
    assert not np.array_equal(a.x_valid, c.x_valid)


def test_validation_count_and_too_large_split() -> None:
    data = load_dataset("iris", validation=10)
    assert len(data.x_valid) == 10
    with pytest.raises(ConfigError, match=r"a validation split of 200 leaves -80 of 120 rows"):
        load_dataset("iris", validation=200)
