"""Datasets: the registry, the book's Fashion-MNIST split, seeded stratified splits, offline."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from conftest import require_fashion_mnist

import tuning.data.images
from tuning.data import DATASETS, load_dataset, task_of
from tuning.errors import ConfigError

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


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


def test_unknown_dataset_lists_known() -> None:
    with pytest.raises(ConfigError, match="unknown dataset 'cifar'.*use one of digits"):
        load_dataset("cifar")


def _write_idx(folder: Path, n_train: int, n_test: int) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        with gzip.open(folder / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
            f.write(b"\0" * 16 + images.tobytes())
        with gzip.open(folder / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(b"\0" * 8 + labels.tobytes())


def test_fashion_mnist_reads_the_keras_cache_first(tmp_path, monkeypatch) -> None:
    _write_idx(tmp_path / "datasets" / "fashion-mnist", n_train=300, n_test=50)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(tuning.data.images, "DEBIAN_DIRS", {"fashion_mnist": tmp_path / "absent"})
    load_dataset.cache_clear()
    data = load_dataset("fashion_mnist", validation=100)
    load_dataset.cache_clear()
    assert data.kind == "image" and data.input_shape == (28, 28)
    assert data.sizes() == {"train": 200, "valid": 100, "test": 50}
    assert data.class_names[0] == "T-shirt/top"


def test_fashion_mnist_book_split_from_debian_files(tmp_path, monkeypatch) -> None:
    require_fashion_mnist()
    monkeypatch.setenv(
        "KERAS_HOME", str(tmp_path)
    )  # an empty Keras cache: Debian's files are used
    load_dataset.cache_clear()
    data = load_dataset("fashion_mnist")
    load_dataset.cache_clear()
    # The book: X_train_full[:-5000] to train, the last 5,000 to validate, the test set apart.
    assert data.sizes() == {"train": 55_000, "valid": 5_000, "test": 10_000}
    assert data.x_train.shape[1:] == (28, 28) and data.x_train.max() == 255
    assert data.n_classes == 10


def test_california_housing_offline_error(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SCIKIT_LEARN_DATA", str(tmp_path))
    load_dataset.cache_clear()
    with pytest.raises(
        ConfigError, match="california_housing is not in scikit-learn's cache"
    ) as e:
        load_dataset("california_housing")
    assert "\n" not in str(e.value) and e.value.key == "dataset.name"
