"""Encoding shared by training and serving: raw rows -> the training matrix, outputs -> labels;
a saved model loaded as saved."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from tabular_files import FEATURES, animals, load_file, with_gaps, write_file

from tuning.data.encoding import CUSTOM_OBJECTS, decode, encode_frame, load_keras
from tuning.ensemble import average
from tuning.model import build_model
from tuning.train import fit


def test_encode_frame_matches_training_and_handles_serving_rows(tmp_path: Path) -> None:
    data = load_file(write_file(with_gaps(), tmp_path / "gaps.csv"), target="y", impute="mean")
    meta = data.serving_meta()
    raw_valid = data.extra["raw_valid"]
    assert list(raw_valid.columns) == FEATURES and len(raw_valid) == len(data.x_valid)
    np.testing.assert_array_equal(encode_frame(meta, raw_valid), data.x_valid)
    # Column order does not matter and extra columns are ignored.
    shuffled = raw_valid[FEATURES[::-1]].assign(extra="ignored")
    np.testing.assert_array_equal(encode_frame(meta, shuffled), data.x_valid)
    assert list(data.example_rows(3).columns) == FEATURES

    row = pd.DataFrame(
        {"id": [1], "size": [np.nan], "weight": [2.5], "city": ["tokyo"], "indoor": [True]}
    )
    x = encode_frame(meta, row)
    assert x.dtype == np.float32 and x.shape == (1, 5)
    assert x[0, FEATURES.index("size")] == np.float32(data.fill["size"])  # missing -> fill
    assert x[0, FEATURES.index("weight")] == np.float32(2.5)
    assert x[0, FEATURES.index("city")] == 0  # unknown category -> 0
    assert x[0, FEATURES.index("indoor")] == data.vocabulary["indoor"].index("True") + 1
    known = row.assign(city=data.vocabulary["city"][0])
    assert encode_frame(meta, known)[0, FEATURES.index("city")] == 1

    with pytest.raises(ValueError, match=r"missing input columns \['weight'\]"):
        encode_frame(meta, row.drop(columns="weight"))
    with pytest.raises(ValueError, match=r"column 'size' is numeric but holds 'big'"):
        encode_frame(meta, row.assign(size=["big"]))


def test_decode_labels_and_probabilities(tmp_path: Path) -> None:
    data = load_file(write_file(animals(), tmp_path / "animals.csv"), target="y")
    meta = data.serving_meta()
    probs = np.array([[0.1, 0.7, 0.2], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5]], dtype=np.float32)
    assert decode(meta, probs).tolist() == ["cat", "bird", "dog"]
    table = decode(meta, probs, output="probabilities")
    assert isinstance(table, pd.DataFrame) and list(table.columns) == ["bird", "cat", "dog"]
    np.testing.assert_allclose(table.to_numpy(), probs)

    binary = {"task": "binary", "labels": ["no", "yes"], "class_names": ["no", "yes"]}
    p = np.array([[0.2], [0.5], [0.49], [0.9]], dtype=np.float32)
    assert decode(binary, p).tolist() == ["no", "yes", "no", "yes"]  # threshold 0.5, inclusive
    two = decode(binary, p, output="probabilities")
    assert list(two.columns) == ["no", "yes"]
    np.testing.assert_allclose(two["yes"], p[:, 0])
    np.testing.assert_allclose(two.sum(axis=1), 1.0, atol=1e-6)

    ints = {"task": "multiclass", "labels": [3, 5, 7], "class_names": ["3", "5", "7"]}
    labels = decode(ints, probs)
    assert labels.dtype == np.int64 and labels.tolist() == [5, 3, 7]


def test_load_keras_builds_no_random_weights_and_returns_the_saved_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = load_file(write_file(animals(), tmp_path / "animals.csv"), target="y")
    params = {"n_hidden": 2, "n_neurons": 16, "batch_norm": True, "activation": "selu"}
    model = build_model(params, data=data, max_epochs=1)
    fit(model, data, monitor="val_loss", direction="minimize", batch_size=32, max_epochs=2,
        patience=2)  # fmt: skip
    path = tmp_path / "m.keras"
    model.save(path)
    members = average([path, path], data=data, loss="auto", output_activation="auto")
    members.save(tmp_path / "two.keras")

    def drawn(self: object, shape: object, dtype: object = None) -> None:
        raise AssertionError(f"{type(self).__name__} drew weights that loading overwrites")

    with monkeypatch.context() as patched:
        for name in ("LecunNormal", "HeNormal", "GlorotUniform", "Zeros", "Ones"):
            patched.setattr(getattr(keras.initializers, name), "__call__", drawn)
        loaded = load_keras(str(path))
        nested = load_keras(str(tmp_path / "two.keras"))
    expected = model.predict(data.x_valid, verbose=0)
    np.testing.assert_array_equal(loaded.predict(data.x_valid, verbose=0), expected)
    np.testing.assert_allclose(nested.predict(data.x_valid, verbose=0), expected, atol=1e-6)
    # The saved initializers are back: the same model as Keras's own loader makes.
    for got, file in ((loaded, path), (nested, tmp_path / "two.keras")):
        with keras.saving.custom_object_scope(CUSTOM_OBJECTS):
            keras_own = keras.models.load_model(file, compile=False)
        assert got.get_config() == keras_own.get_config()
    loaded.save(tmp_path / "again.keras")
    again = keras.models.load_model(
        tmp_path / "again.keras", custom_objects=CUSTOM_OBJECTS, compile=False
    )
    np.testing.assert_array_equal(again.predict(data.x_valid, verbose=0), expected)
