"""Datasets: the registry, loading (offline first), splits and what the model needs to know.

Owns every dataset the tool can tune on, each declared with its task and a loader, and the
train / validation / test split (the book's for Fashion-MNIST: the last 5,000 training images
for validation, the official test set held out; seeded and stratified fractions otherwise).
Arrays leave here raw (pixels 0-255, unscaled features): scaling lives inside the Keras model so
that the logged model takes raw inputs. Nothing here imports Keras at module level; the Keras
download is a last resort, tried only when no local copy exists.
"""

from __future__ import annotations

import functools
import gzip
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from tuning.errors import ConfigError

__all__ = ["DATASETS", "Dataset", "DatasetInfo", "load_dataset", "task_of"]

Task = Literal["classification", "regression"]

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
        name: Registry name.
        task: ``classification`` or ``regression``.
        kind: ``image`` (raw pixels, rescaled by 1/255 inside the model) or ``tabular``
            (features standardized by a Normalization layer adapted on ``x_train``).
        n_classes: Number of classes for classification, else ``None``.
        class_names: Label of each class index, when known.
        feature_names: Name of each tabular column, when known.
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
    class_names: list[str] | None = None
    feature_names: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

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


# -- loaders ----------------------------------------------------------------------------------


def _sklearn(fn_name: str) -> Callable[[], tuple[Any, ...]]:
    def load() -> tuple[Any, ...]:
        import sklearn.datasets

        bunch = getattr(sklearn.datasets, fn_name)()
        names = [str(n) for n in getattr(bunch, "target_names", [])] or None
        features = [str(n) for n in getattr(bunch, "feature_names", [])] or None
        return bunch.data, bunch.target, names, features

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
    return bunch.data, bunch.target, None, list(bunch.feature_names)


FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip

DATASETS: dict[str, DatasetInfo] = {
    "digits": DatasetInfo(
        "classification", "tabular", _sklearn("load_digits"), "8x8 digits, 1,797 rows (shipped)"
    ),
    "iris": DatasetInfo("classification", "tabular", _sklearn("load_iris"), "150 rows (shipped)"),
    "wine": DatasetInfo("classification", "tabular", _sklearn("load_wine"), "178 rows (shipped)"),
    "breast_cancer": DatasetInfo(
        "classification", "tabular", _sklearn("load_breast_cancer"), "569 rows (shipped)"
    ),
    "diabetes": DatasetInfo(
        "regression", "tabular", _sklearn("load_diabetes"), "442 rows, regression (shipped)"
    ),
    "california_housing": DatasetInfo(
        "regression",
        "tabular",
        _california_housing,
        "20,640 districts, regression (scikit-learn download, cached)",
    ),
    "fashion_mnist": DatasetInfo(
        "classification",
        "image",
        _idx_dataset("fashion_mnist"),
        "70,000 28x28 clothing images (Keras cache, Debian package or download)",
        has_test_split=True,
        default_validation=5000,
    ),
    "mnist": DatasetInfo(
        "classification",
        "image",
        _idx_dataset("mnist"),
        "70,000 28x28 handwritten digits (Keras cache or download)",
        has_test_split=True,
        default_validation=5000,
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


# -- splitting --------------------------------------------------------------------------------


def _count(size: float | int, n: int, what: str) -> int:
    k = int(round(size * n)) if isinstance(size, float) else int(size)
    if not 1 <= k < n:
        raise ConfigError(
            f"a {what} split of {size!r} leaves {n - k} of {n} rows for training",
            key=f"dataset.{'validation' if what == 'validation' else 'test'}",
            fix="use a smaller split",
        )
    return k


def _split(
    x: np.ndarray, y: np.ndarray, size: float | int, *, task: Task, seed: int, what: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    k = _count(size, len(x), what)
    stratify = y if task == "classification" and len(np.unique(y)) <= k else None
    x_a, x_b, y_a, y_b = train_test_split(
        x, y, test_size=k, random_state=seed, shuffle=True, stratify=stratify
    )
    return x_a, y_a, x_b, y_b


@functools.lru_cache(maxsize=4)
def load_dataset(
    name: str,
    *,
    validation: float | int | None = None,
    test: float | None = None,
    seed: int = 42,
) -> Dataset:
    """Load and split a registered dataset (cached per process: trials share one copy).

    Args:
        name: A key of :data:`DATASETS`.
        validation: Fraction or row count held out of the training data for validation.
        test: Fraction held out for test, for datasets without an official test split.
        seed: Seed of the shuffles.

    Raises:
        ConfigError: unknown name, data unavailable offline, splits too large, non-finite values.
    """
    task_of(name)
    info = DATASETS[name]
    loaded = info.loader()
    class_names = feature_names = None
    if info.has_test_split:
        (x_full, y_full, x_test, y_test), class_names, feature_names = loaded
        if name == "fashion_mnist":
            class_names = FASHION_MNIST_CLASSES
        k = _count(validation or info.default_validation, len(x_full), "validation")
        # The book's split: the last k training images validate, the test set stays apart.
        x_train, y_train = x_full[:-k], y_full[:-k]
        x_valid, y_valid = x_full[-k:], y_full[-k:]
    else:
        x, y, class_names, feature_names = loaded
        x = np.asarray(x)
        y = np.asarray(y)
        x_rest, y_rest, x_test, y_test = _split(
            x, y, test or 0.2, task=info.task, seed=seed, what="test"
        )
        x_train, y_train, x_valid, y_valid = _split(
            x_rest,
            y_rest,
            validation or info.default_validation,
            task=info.task,
            seed=seed + 1,
            what="validation",
        )
    x_train, x_valid, x_test = (
        np.asarray(a, dtype=np.float32) for a in (x_train, x_valid, x_test)
    )
    if info.task == "classification":
        y_train, y_valid, y_test = (
            np.asarray(a, dtype=np.int32) for a in (y_train, y_valid, y_test)
        )
        n_classes = int(max(y_train.max(), y_valid.max(), y_test.max())) + 1
    else:
        y_train, y_valid, y_test = (
            np.asarray(a, dtype=np.float32) for a in (y_train, y_valid, y_test)
        )
        n_classes = None
    for split, arr in (("train", x_train), ("validation", x_valid), ("test", x_test)):
        if not np.isfinite(arr).all():
            raise ConfigError(
                f"the {split} features of {name} hold NaN or infinite values",
                key="dataset.name",
                fix="clean the data before tuning",
            )
    return Dataset(
        name=name,
        task=info.task,
        kind=info.kind,
        x_train=x_train,
        y_train=y_train,
        x_valid=x_valid,
        y_valid=y_valid,
        x_test=x_test,
        y_test=y_test,
        n_classes=n_classes,
        class_names=class_names,
        feature_names=feature_names,
    )
