"""Image datasets: Fashion-MNIST and MNIST from IDX files, Keras's cache, or a Keras download.

Owns where image files are looked for (the Keras cache, Debian's ``dataset-fashion-mnist``
package, Keras's ``.npz``; a download last), the error that says how to get them offline, and the
book's split (the last training images validate, the official test set is held out). Keras is
imported only to download.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tuning.data.dataset import Dataset
from tuning.data.splits import count_rows
from tuning.errors import ConfigError

ImageArrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
"""``(x_train, y_train, x_test, y_test)``: raw pixels and class indices."""
ImageLoad = tuple[ImageArrays, None, None]
"""What an image loader returns: the arrays, then None for a tabular loader's target and names."""

# Where a copy of the IDX files may already be, searched in this order before any download.
DEBIAN_DIRS = {"fashion_mnist": Path("/usr/share/datasets/fashion-mnist")}
_IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip


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


def _keras_download(name: str) -> ImageArrays:
    """Let Keras fetch the dataset (and cache it under $KERAS_HOME/datasets)."""
    if os.environ.get("TUNING_OFFLINE", "").lower() in ("1", "true", "yes"):
        raise OSError("TUNING_OFFLINE is set")
    # Imported here only: importing keras fixes the backend, which tuning.backend chooses first.
    import keras

    (x_tr, y_tr), (x_te, y_te) = getattr(keras.datasets, name).load_data()
    return x_tr, y_tr, x_te, y_te


def idx_loader(name: str) -> Callable[[], ImageLoad]:
    """The registry's loader of ``name``: IDX files, then Keras's ``.npz``, then a download.

    The loader returns ``((x_train, y_train, x_test, y_test), None, None)``.
    """

    def load() -> ImageLoad:
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


def image_dataset(
    name: str,
    arrays: ImageArrays,
    *,
    validation: float | int | None,
    default_validation: float | int,
) -> Dataset:
    """A loader's images as a Dataset, with the book's split of the training images."""
    x_full, y_full, x_test, y_test = arrays
    k = count_rows(validation or default_validation, len(x_full), "validation")
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
