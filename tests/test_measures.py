"""The measures (n_params, model_bytes, latency_ms) on a real tiny Keras model, and limits."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tuning import measures
from tuning.config import load_experiment
from tuning.config.schema import MeasuresConfig


def _tiny(width: int) -> keras.Model:
    inputs = keras.Input(shape=(8,))
    hidden = keras.layers.Dense(width, activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(hidden))


def test_measures_of_a_tiny_model(tmp_path) -> None:
    x = np.random.default_rng(0).normal(size=(40, 8)).astype("float32")
    small, big = _tiny(4), _tiny(400)
    cfg = MeasuresConfig(latency_batch=64, latency_repeats=3, latency_warmup=1)
    got = measures.measure(small, measures.MEASURES, x=x, cfg=cfg)
    assert got["n_params"] == 8 * 4 + 4 + 4 * 3 + 3 == small.count_params()
    # model_bytes is the saved .keras file's size, as model.save writes it
    small.save(tmp_path / "m.keras")
    assert got["model_bytes"] == (tmp_path / "m.keras").stat().st_size
    assert measures.model_bytes(big) > got["model_bytes"]  # 100x the weights, a larger file
    assert 0 < got["latency_ms"] < 1000 and np.isfinite(got["latency_ms"])
    # per row: the batch's median time over its rows (40 rows repeated up to 64)
    one = measures.latency_ms(small, x, batch_size=1, repeats=3, warmup=1)
    assert one > 0
    with pytest.raises(ValueError, match="unknown measure 'speed'"):
        measures.measure(small, ["speed"], x=x, cfg=cfg)
    with pytest.raises(ValueError, match="at least one row"):
        measures.latency_ms(small, x[:0])


def test_violations_are_value_minus_limit_in_sorted_order() -> None:
    over = measures.violations(
        {"n_params": 100, "latency_ms": 2.0, "val_loss": 0.5},
        {"n_params": 150, "latency_ms": 1.5},
    )
    assert list(over) == ["latency_ms", "n_params"]  # sorted(limits); unknown figures left out
    assert over == {"latency_ms": -0.5, "n_params": 50.0}
    assert not measures.feasible(over)
    assert measures.feasible({"latency_ms": -0.5, "n_params": 0.0})  # at the limit: met
    assert measures.feasible({})


def test_needed_names_only_what_objectives_limits_and_prefer_use(make_experiment) -> None:
    assert measures.needed(load_experiment(make_experiment())) == ()
    exp = load_experiment(
        make_experiment(
            objective=[
                {"metric": "val_accuracy", "direction": "maximize"},
                {"metric": "latency_ms", "direction": "minimize"},
            ],
            limits={"n_params": 1000},
            selection={"prefer": "model_bytes"},
        )
    )
    assert measures.needed(exp) == ("n_params", "model_bytes", "latency_ms")
