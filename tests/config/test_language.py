"""The full search-space language: per-layer widths, your own params, booleans, schedules, BN."""

from __future__ import annotations

import keras
import optuna
import pytest
from conftest import ROOT
from hypothesis import given, settings
from hypothesis import strategies as st

from tuning.config import load_search_space
from tuning.config.space import SearchSpace
from tuning.data import load_dataset
from tuning.errors import ConfigError
from tuning.model import build_model, layer_widths
from tuning.train import fit, fresh_session


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _trials(space: SearchSpace, n: int, seed: int = 0) -> list[dict]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        trial = study.ask()
        out.append(space.suggest(trial))
        study.tell(trial, 0.0)
    return out


def test_one_width_per_layer_when_asked() -> None:
    space = SearchSpace.from_dict(
        {
            "n_hidden": {"type": "int", "low": 1, "high": 4},
            "n_neurons": {"type": "int", "low": 8, "high": 64},
            "n_neurons_per_layer": True,
        }
    )
    for params in _trials(space, 30):
        n = params["n_hidden"]
        assert "n_neurons" not in params
        assert sorted(k for k in params if k.startswith("n_neurons_")) == sorted(
            ["n_neurons_per_layer", *(f"n_neurons_{i}" for i in range(1, n + 1))]
        )
        assert all(8 <= params[f"n_neurons_{i}"] <= 64 for i in range(1, n + 1))
        assert layer_widths(params) == [params[f"n_neurons_{i}"] for i in range(1, n + 1)]


def test_per_layer_can_itself_be_searched() -> None:
    space = SearchSpace.from_dict(
        {
            "n_hidden": 2,
            "n_neurons": {"type": "int", "low": 8, "high": 64},
            "n_neurons_per_layer": {"type": "categorical", "choices": [True, False]},
        }
    )
    seen = set()
    for params in _trials(space, 30):
        per_layer = params["n_neurons_per_layer"]
        seen.add(per_layer)
        assert ("n_neurons" in params) != per_layer
        assert ("n_neurons_2" in params) == per_layer
    assert seen == {True, False}


def test_per_layer_needs_a_range() -> None:
    with pytest.raises(ConfigError, match="n_neurons_per_layer needs n_neurons: its range"):
        SearchSpace.from_dict({"n_hidden": 2, "n_neurons_per_layer": True})


def test_your_own_parameters_live_under_extra() -> None:
    space = SearchSpace.from_dict(
        {"n_hidden": 1, "extra": {"augment": {"type": "categorical", "choices": ["a", "b"]}}}
    )
    (params,) = _trials(space, 1)
    assert params["extra.augment"] in ("a", "b")
    assert space.to_dict()["extra"]["augment"]["choices"] == ["a", "b"]
    assert layer_widths(params) == [100]  # the model ignores them
    with pytest.raises(ConfigError, match="unknown parameter 'augment'.*under `extra:`"):
        SearchSpace.from_dict({"augment": 1})


def test_booleans_are_checked() -> None:
    SearchSpace.from_dict({"batch_norm": {"type": "categorical", "choices": [True, False]}})
    with pytest.raises(ConfigError, match=r"batch_norm takes true or false \(fixed 1\)"):
        SearchSpace.from_dict({"batch_norm": 1})


def test_shipped_spaces_cover_the_language() -> None:
    for path in sorted((ROOT / "search_spaces").glob("*.yaml")):
        load_search_space(path)


def test_batch_norm_regularizers_and_adamw(digits) -> None:
    model = build_model(
        {
            "n_hidden": 2,
            "n_neurons": 16,
            "batch_norm": True,
            "l1": 1e-5,
            "l2": 1e-4,
            "optimizer": "adamw",
            "weight_decay": 0.01,
            "beta_1": 0.8,
            "beta_2": 0.99,
        },
        data=digits,
    )
    names = [layer.name for layer in model.layers]
    assert names.index("hidden_1") < names.index("batch_norm_1") < names.index("activation_1")
    hidden = model.get_layer("hidden_1")
    assert hidden.use_bias is False
    reg = hidden.kernel_regularizer.get_config()
    assert reg["l1"] == pytest.approx(1e-5) and reg["l2"] == pytest.approx(1e-4)
    opt = model.optimizer
    assert type(opt).__name__ == "AdamW" and opt.weight_decay == pytest.approx(0.01)
    assert opt.beta_1 == pytest.approx(0.8) and opt.beta_2 == pytest.approx(0.99)


@pytest.mark.parametrize(
    ("schedule", "kind"), [("exponential", "ExponentialDecay"), ("cosine", "CosineDecay")]
)
def test_learning_rate_schedules(digits, schedule: str, kind: str) -> None:
    model = build_model({"lr_schedule": schedule, "learning_rate": 0.01}, data=digits)
    config = model.optimizer.get_config()["learning_rate"]
    assert config["class_name"] == kind
    assert config["config"]["initial_learning_rate"] == pytest.approx(0.01)


def test_reduce_on_plateau_lowers_the_rate(digits) -> None:
    fresh_session()
    keras.utils.set_random_seed(0)
    model = build_model({"n_hidden": 1, "n_neurons": 8, "learning_rate": 0.5}, data=digits)
    result = fit(
        model, digits, monitor="val_loss", direction="minimize", batch_size=256,
        max_epochs=12, patience=12, reduce_on_plateau=True,
    )  # fmt: skip
    rates = result.history.get("learning_rate")
    assert rates, result.history.keys()
    assert rates[-1] <= rates[0]


@settings(max_examples=25, deadline=None)
@given(
    low=st.integers(0, 3),
    span=st.integers(0, 2),
    width=st.integers(1, 32),
    per_layer=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_built_models_have_the_requested_layers(digits, low, span, width, per_layer, seed):
    space = SearchSpace.from_dict(
        {
            "n_hidden": {"type": "int", "low": low, "high": low + span},
            "n_neurons": {"type": "int", "low": width, "high": width + 16},
            "n_neurons_per_layer": per_layer,
        }
    )
    (params,) = _trials(space, 1, seed=seed)
    model = build_model(params, data=digits)
    dense = [layer.units for layer in model.layers if layer.name.startswith("hidden_")]
    assert len(dense) == params["n_hidden"]
    assert dense == layer_widths(params)
