"""The dataset registry: each shipped table loads and splits by its task; unknown or offline."""

from __future__ import annotations

import numpy as np
import pytest

from tuning.data import DATASETS, load_dataset, task_of
from tuning.errors import ConfigError


@pytest.mark.parametrize("name", ["digits", "iris", "wine", "breast_cancer", "diabetes"])
def test_shipped_datasets_split_without_overlap(name: str) -> None:
    data = load_dataset(name, seed=7)
    assert data.task == task_of(name) == DATASETS[name].task
    sizes = data.sizes()
    total = sum(sizes.values())
    assert sizes["test"] == round(0.2 * total)
    assert all(n > 0 for n in sizes.values())
    assert data.x_train.dtype == np.float32
    rows = {tuple(r) for r in data.x_train}
    assert not rows & {tuple(r) for r in data.x_test}, "train and test share rows"
    if data.is_classification:
        assert data.n_classes == len(np.unique(np.concatenate([data.y_train, data.y_test])))
        # Stratified: every class appears in every split.
        for split in (data.y_train, data.y_valid, data.y_test):
            assert len(np.unique(split)) == data.n_classes
    else:
        assert data.n_classes is None and data.y_train.dtype == np.float32


def test_unknown_dataset_lists_known() -> None:
    with pytest.raises(ConfigError, match="unknown dataset 'cifar'.*use one of digits"):
        load_dataset("cifar")


def test_california_housing_offline_error(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SCIKIT_LEARN_DATA", str(tmp_path))
    load_dataset.cache_clear()
    with pytest.raises(
        ConfigError, match="california_housing is not in scikit-learn's cache"
    ) as e:
        load_dataset("california_housing")
    assert "\n" not in str(e.value) and e.value.key == "dataset.name"
