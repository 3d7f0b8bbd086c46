"""Image datasets: the Keras cache before Debian's files, the book's Fashion-MNIST split."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
from conftest import require_fashion_mnist

from tuning.data import images, load_dataset


def _write_idx(folder: Path, n_train: int, n_test: int) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        pixels = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        with gzip.open(folder / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
            f.write(b"\0" * 16 + pixels.tobytes())
        with gzip.open(folder / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(b"\0" * 8 + labels.tobytes())


def test_fashion_mnist_reads_the_keras_cache_first(tmp_path, monkeypatch) -> None:
    _write_idx(tmp_path / "datasets" / "fashion-mnist", n_train=300, n_test=50)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(images, "DEBIAN_DIRS", {"fashion_mnist": tmp_path / "absent"})
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
