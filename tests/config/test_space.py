"""Search spaces (tuning/config/space.py): spec kinds, the rules each spec and space must
satisfy, and sampling from real in-memory Optuna studies (no mocks), including conditional
parameters."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import optuna
import pytest
from conftest import ROOT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tuning.config import load_search_space
from tuning.config.params import ACTIVATIONS, KERNEL_INITIALIZERS, OPTIMIZERS, PARAMETERS
from tuning.config.space import CategoricalSpec, FixedSpec, FloatSpec, IntSpec, SearchSpace
from tuning.errors import ConfigError

SHIPPED_SPACES = sorted((ROOT / "search_spaces").glob("*.yaml"))
SOURCE = "space.yaml"

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _trial(sampler: optuna.samplers.BaseSampler | None = None) -> optuna.Trial:
    return optuna.create_study(sampler=sampler).ask()


def _sample(
    space: SearchSpace, n: int, sampler: optuna.samplers.BaseSampler
) -> list[tuple[dict[str, Any], optuna.Trial]]:
    """Ask a real in-memory study ``n`` times; tell it a value so that TPE has history to model."""
    study = optuna.create_study(sampler=sampler)
    out = []
    for i in range(n):
        trial = study.ask()
        params = space.suggest(trial)
        study.tell(trial, float(i % 7))
        out.append((params, trial))
    return out


def _raises(raw: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        SearchSpace.from_dict(raw, source=SOURCE)
    return info.value


# -- every spec kind ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "spec_cls", "check"),
    [
        pytest.param(
            {"n_hidden": {"type": "int", "low": 1, "high": 4}},
            IntSpec,
            lambda v: type(v) is int and 1 <= v <= 4,
            id="int",
        ),
        pytest.param(
            {"n_neurons": {"type": "int", "low": 8, "high": 64, "step": 8}},
            IntSpec,
            lambda v: type(v) is int and 8 <= v <= 64 and v % 8 == 0,
            id="int-step",
        ),
        pytest.param(
            {"learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}},
            FloatSpec,
            lambda v: type(v) is float and 1e-4 <= v <= 1e-2,
            id="float-log",
        ),
        pytest.param(
            {"dropout": {"type": "float", "low": 0.0, "high": 0.5, "step": 0.1}},
            FloatSpec,
            lambda v: 0.0 <= v <= 0.5 and math.isclose(v * 10, round(v * 10), abs_tol=1e-9),
            id="float-step",
        ),
        pytest.param(
            {"activation": {"type": "categorical", "choices": ["relu", "elu"]}},
            CategoricalSpec,
            lambda v: v in ("relu", "elu"),
            id="categorical",
        ),
        pytest.param(
            {"batch_size": {"type": "fixed", "value": 64}},
            FixedSpec,
            lambda v: v == 64,
            id="fixed",
        ),
        pytest.param(
            {"batch_size": 64}, FixedSpec, lambda v: v == 64, id="fixed-shorthand-number"
        ),
        pytest.param(
            {"activation": "selu"}, FixedSpec, lambda v: v == "selu", id="fixed-shorthand-name"
        ),
    ],
)
def test_every_spec_kind_builds_and_suggests(raw: dict, spec_cls: type, check: Any) -> None:
    space = SearchSpace.from_dict(raw, source=SOURCE)
    (name,) = raw
    assert isinstance(space.specs[name], spec_cls)
    for seed in range(5):
        trial = _trial(optuna.samplers.RandomSampler(seed=seed))
        params = space.suggest(trial)
        assert set(params) == {name}
        assert check(params[name]), params
        if spec_cls is FixedSpec:
            # a constant is not a searched dimension of the study
            assert name not in trial.params
            assert space.searched() == []
        else:
            assert trial.params[name] == params[name]
            assert space.searched() == [name]


def test_unknown_spec_kind_is_rejected() -> None:
    e = _raises({"n_hidden": {"type": "bogus", "low": 1, "high": 2}})
    assert re.search(re.escape("unknown parameter type 'bogus'"), str(e))
    assert e.key == "n_hidden.type"
    assert e.source == SOURCE
    assert e.fix is not None and all(k in e.fix for k in ("int", "float", "categorical", "fixed"))


def test_spec_without_type_is_rejected() -> None:
    e = _raises({"n_hidden": {"low": 1, "high": 2}})
    assert "unknown parameter type None" in str(e)
    assert e.key == "n_hidden.type"


# -- one test per rule --------------------------------------------------------------------------

MOMENTUM_ON_OPTIMIZER = {
    "optimizer": {"type": "categorical", "choices": ["sgd", "adam"]},
    "momentum": {"type": "float", "low": 0.8, "high": 0.9, "when": {"optimizer": ["nesterov"]}},
}

RULES = [
    pytest.param(
        {"n_hidden": {"type": "int", "low": 3, "high": 1}},
        "n_hidden",
        "low must not be above high (got low=3, high=1); swap them",
        id="low-above-high",
    ),
    pytest.param(
        {"learning_rate": {"type": "float", "low": 0.0, "high": 0.1, "log": True}},
        "learning_rate",
        "log: true needs low > 0 (got low=0.0); raise low or set log: false",
        id="log-low-zero",
    ),
    pytest.param(
        {"l2": {"type": "float", "low": -1.0, "high": 0.1, "log": True}},
        "l2",
        "log: true needs low > 0 (got low=-1.0)",
        id="log-low-negative",
    ),
    pytest.param(
        {"n_neurons": {"type": "int", "low": 1, "high": 9, "step": 2, "log": True}},
        "n_neurons",
        "step and log: true cannot be used together (got step=2); drop one of them",
        id="step-with-log",
    ),
    pytest.param(
        {"n_neurons": {"type": "int", "low": 1, "high": 10, "step": 2}},
        "n_neurons",
        "step must divide high - low (got low=1, high=10, step=2); change high to 9",
        id="int-step-not-dividing",
    ),
    pytest.param(
        {"dropout": {"type": "float", "low": 0.0, "high": 0.5, "step": 0.2}},
        "dropout",
        "step must divide high - low (got low=0.0, high=0.5, step=0.2)",
        id="float-step-not-dividing",
    ),
    pytest.param(
        {"n_neurons": {"type": "int", "low": 1, "high": 10, "step": 0}},
        "n_neurons",
        "step must be positive (got step=0)",
        id="step-zero",
    ),
    pytest.param(
        {"dropout": {"type": "float", "low": 0.0, "high": 0.5, "step": -0.1}},
        "dropout",
        "step must be positive (got step=-0.1)",
        id="step-negative",
    ),
    pytest.param(
        {"activation": {"type": "categorical", "choices": []}},
        "activation.choices",
        "choices must not be empty; list at least one value",
        id="empty-choices",
    ),
    pytest.param(
        {"activation": {"type": "categorical", "choices": ["relu", "elu", "relu"]}},
        "activation.choices",
        "choices must be distinct (got 'relu' twice)",
        id="duplicate-choices",
    ),
    pytest.param(
        {"optimizer": {"type": "categorical", "choices": ["adam", "adamx"]}},
        "optimizer.choices",
        "unknown optimizer 'adamx'",
        id="unknown-optimizer",
    ),
    pytest.param(
        {"activation": {"type": "categorical", "choices": ["relu", "relux"]}},
        "activation.choices",
        "unknown activation 'relux'",
        id="unknown-activation",
    ),
    pytest.param(
        {"activation": "relux"},
        "activation.value",
        "unknown activation 'relux'",
        id="unknown-activation-fixed",
    ),
    pytest.param(
        {"activation": {"type": "int", "low": 1, "high": 3}},
        "activation",
        "activation takes names, not numbers (int 1 .. 3)",
        id="str-param-given-int-range",
    ),
    pytest.param(
        {"optimizer": {"type": "categorical", "choices": [1, 2]}},
        "optimizer",
        "optimizer takes names, not numbers (one of [1, 2])",
        id="str-param-given-number-choices",
    ),
    pytest.param(
        {"batch_size": {"type": "categorical", "choices": [32, "big"]}},
        "batch_size",
        "batch_size takes numbers (one of [32, 'big'])",
        id="number-param-given-name",
    ),
    pytest.param(
        {"n_hidden": {"type": "float", "low": 1.0, "high": 3.0}},
        "n_hidden.type",
        "n_hidden is an integer parameter but its type is float",
        id="int-param-type-float",
    ),
    pytest.param(
        {"batch_size": {"type": "categorical", "choices": [32, 64.5]}},
        "batch_size",
        "batch_size takes whole numbers (got [32, 64.5])",
        id="int-param-fractional-choice",
    ),
    pytest.param(
        {"n_hidden": {"type": "int", "low": -1, "high": 3}},
        "n_hidden",
        "n_hidden must be at least 0 (got -1",
        id="below-minimum",
    ),
    pytest.param(
        {"dropout": {"type": "float", "low": 0.0, "high": 0.99}},
        "dropout",
        "dropout must be at most 0.95 (got 0.99)",
        id="above-maximum",
    ),
    pytest.param(
        {"momentum": {"type": "float", "low": 0.8, "high": 0.9, "when": {"optimizer": ["sgd"]}}},
        "momentum.when.optimizer",
        "condition names 'optimizer', which is not in this space",
        id="when-missing-parameter",
    ),
    pytest.param(
        MOMENTUM_ON_OPTIMIZER,
        "momentum.when.optimizer",
        "optimizer can never be 'nesterov' (one of ['sgd', 'adam'])",
        id="when-impossible-value",
    ),
    pytest.param(
        {
            "n_hidden": {"type": "int", "low": 1, "high": 3},
            "n_neurons": {"type": "int", "low": 16, "high": 64, "when": {"n_hidden": [7]}},
        },
        "n_neurons.when.n_hidden",
        "n_hidden can never be 7 (int 1 .. 3)",
        id="when-value-outside-range",
    ),
    pytest.param(
        {
            "optimizer": {"type": "categorical", "choices": ["sgd", "adam"]},
            "momentum": {"type": "float", "low": 0.8, "high": 0.9, "when": {"optimizer": []}},
        },
        "momentum.when.optimizer",
        "condition lists no values, so it can never hold",
        id="when-no-values",
    ),
    pytest.param(
        {"momentum": {"type": "float", "low": 0.8, "high": 0.9, "when": {"momentum": [0.85]}}},
        "momentum.when.momentum",
        "momentum cannot depend on itself",
        id="when-on-itself",
    ),
    pytest.param(
        {
            "n_hidden": {"type": "int", "low": 1, "high": 3, "when": {"n_neurons": [16]}},
            "n_neurons": {"type": "int", "low": 16, "high": 32, "when": {"n_hidden": [1]}},
        },
        "n_hidden.when",
        "conditions form a cycle: n_hidden -> n_neurons -> n_hidden",
        id="cycle",
    ),
    pytest.param(
        {"activation": ["relu", "elu"]},
        "activation",
        "a bare list is ambiguous (got ['relu', 'elu'])",
        id="bare-list",
    ),
    pytest.param(
        {"n_hidden": {"type": "int", "low": 1, "high": 3, "lo": 2}},
        "n_hidden.lo",
        "unknown key",
        id="unknown-key-in-spec",
    ),
    pytest.param(
        {"n_hidden": {"type": "int", "low": 1.5, "high": 3}},
        "n_hidden.low",
        "Input should be a valid integer",
        id="int-bound-fractional",
    ),
    pytest.param(
        {"learning_rate": {"type": "float", "low": float("nan"), "high": 0.1}},
        "learning_rate.low",
        "must be a finite number (got nan)",
        id="float-bound-nan",
    ),
]


@pytest.mark.parametrize(("raw", "key", "phrase"), RULES)
def test_rule(raw: dict, key: str, phrase: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(phrase)) as info:
        SearchSpace.from_dict(raw, source=SOURCE)
    e = info.value
    assert e.source == SOURCE
    assert e.key == key
    assert str(e).startswith(f"{SOURCE}: {key}: ")
    assert "\n" not in str(e)
    assert phrase in e.rule


def test_unknown_parameter_lists_known_names() -> None:
    e = _raises({"nhidden": {"type": "int", "low": 1, "high": 3}})
    assert re.search(re.escape("unknown parameter 'nhidden'"), str(e))
    assert e.key == "nhidden"
    assert e.source == SOURCE
    assert e.fix is not None
    for name in PARAMETERS:
        assert name in e.fix


def test_unknown_choice_fix_lists_allowed_values() -> None:
    e = _raises({"optimizer": {"type": "categorical", "choices": ["adamx"]}})
    assert e.fix is not None
    assert all(o in e.fix for o in OPTIMIZERS)
    assert str(e).endswith(f". Fix: {e.fix}")


def test_unknown_key_fix_lists_allowed_keys() -> None:
    e = _raises({"n_hidden": {"type": "int", "low": 1, "high": 3, "lo": 2}})
    assert e.fix is not None
    for k in ("low", "high", "step", "log", "when", "description", "type"):
        assert k in e.fix


def test_bare_list_fix_suggests_categorical() -> None:
    e = _raises({"activation": ["relu", "elu"]})
    assert e.fix == "write {type: categorical, choices: ['relu', 'elu']}"


@pytest.mark.parametrize("raw", [{}, [], None, ["n_hidden"], "n_hidden: 3", 3], ids=repr)
def test_space_must_be_a_non_empty_mapping(raw: Any) -> None:
    e = _raises(raw)
    assert re.search(
        re.escape("a search space must be a non-empty mapping of parameter name to spec"), str(e)
    )
    assert e.source == SOURCE
    assert e.key is None
    assert e.fix is not None


def test_parameter_names_must_be_strings() -> None:
    e = _raises({1: {"type": "int", "low": 1, "high": 3}})
    assert "parameter names must be strings (got 1)" in str(e)


def test_error_from_a_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad_space.yaml"
    path.write_text(
        "n_hidden: {type: int, low: 1, high: 3}\ndropout: {type: float, low: 0, high: 2}\n"
    )
    with pytest.raises(ConfigError, match=re.escape("dropout must be at most 0.95")) as info:
        load_search_space(path)
    assert info.value.source == str(path)
    assert info.value.key == "dropout"
    assert str(info.value).startswith(f"{path}: dropout: ")


def test_missing_space_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=re.escape("search space file not found")) as info:
        load_search_space(path)
    assert info.value.source == str(path)


# -- property tests: sampled values always respect the spec -------------------------------------


@st.composite
def int_specs(draw: st.DrawFn, minimum: int) -> dict[str, Any]:
    low = draw(st.integers(minimum, minimum + 300))
    if draw(st.booleans()):
        step = draw(st.integers(1, 16))
        return {
            "type": "int",
            "low": low,
            "high": low + step * draw(st.integers(0, 20)),
            "step": step,
        }
    spec = {"type": "int", "low": low, "high": low + draw(st.integers(0, 1000))}
    if low > 0 and draw(st.booleans()):
        spec["log"] = True
    return spec


@st.composite
def float_specs(draw: st.DrawFn, minimum: float, maximum: float) -> dict[str, Any]:
    bound = st.floats(minimum, maximum, allow_nan=False, allow_subnormal=False)
    low, high = sorted((draw(bound), draw(bound)))
    spec: dict[str, Any] = {"type": "float", "low": low, "high": high}
    if low > 0 and draw(st.booleans()):
        spec["log"] = True
    return spec


@st.composite
def grid_float_specs(draw: st.DrawFn, maximum: float) -> dict[str, Any]:
    step = draw(st.sampled_from([0.05, 0.1, 0.25]))
    n = int(maximum / step + 1e-9)
    i = draw(st.integers(0, n))
    j = draw(st.integers(i, n))
    return {"type": "float", "low": round(i * step, 10), "high": round(j * step, 10), "step": step}


@st.composite
def spaces(draw: st.DrawFn) -> dict[str, Any]:
    space = {
        "n_hidden": draw(int_specs(0)),
        "n_neurons": draw(int_specs(1)),
        "learning_rate": draw(float_specs(1e-12, 10.0)),
        "momentum": draw(float_specs(0.0, 1.0)),
        "dropout": draw(st.one_of(float_specs(0.0, 0.95), grid_float_specs(0.95))),
        "l2": draw(float_specs(0.0, 1e3)),
        "activation": {
            "type": "categorical",
            "choices": draw(st.lists(st.sampled_from(ACTIVATIONS), min_size=1, unique=True)),
        },
        "batch_size": {
            "type": "categorical",
            "choices": draw(st.lists(st.integers(1, 1024), min_size=1, max_size=6, unique=True)),
        },
        "optimizer": draw(st.sampled_from(OPTIMIZERS)),
        "kernel_initializer": {
            "type": "fixed",
            "value": draw(st.sampled_from(KERNEL_INITIALIZERS)),
        },
    }
    return space


def _assert_within(raw: dict[str, Any], params: dict[str, Any]) -> None:
    assert set(params) == set(raw)
    for name, value in params.items():
        spec = raw[name]
        if not isinstance(spec, dict):
            assert value == spec
        elif spec["type"] == "fixed":
            assert value == spec["value"]
        elif spec["type"] == "categorical":
            assert value in spec["choices"]
            assert type(value) is type(spec["choices"][0])
        else:
            assert spec["low"] <= value <= spec["high"], (name, spec, value)
            if spec["type"] == "int":
                assert type(value) is int, (name, value)
                step = spec.get("step", 1)
                assert (value - spec["low"]) % step == 0
            else:
                assert isinstance(value, float)
                if "step" in spec:
                    k = (value - spec["low"]) / spec["step"]
                    assert math.isclose(k, round(k), abs_tol=1e-6), (name, spec, value)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=spaces(), seed=st.integers(0, 2**16))
def test_sampled_values_respect_specs(raw: dict[str, Any], seed: int) -> None:
    space = SearchSpace.from_dict(raw, source=SOURCE)
    samplers = [
        optuna.samplers.TPESampler(seed=seed, n_startup_trials=5),
        optuna.samplers.RandomSampler(seed=seed),
    ]
    for sampler in samplers:
        for params, trial in _sample(space, 20, sampler):
            _assert_within(raw, params)
            # what Optuna recorded is what the model gets, for every searched parameter
            assert {k: params[k] for k in space.searched()} == trial.params


@settings(max_examples=25, deadline=None)
@given(raw=spaces())
def test_valid_spaces_round_trip_through_to_dict(raw: dict[str, Any]) -> None:
    space = SearchSpace.from_dict(raw, source=SOURCE)
    again = SearchSpace.from_dict(space.to_dict(), source=SOURCE)
    assert again.specs == space.specs
    assert again.order == space.order


# -- conditional parameters ---------------------------------------------------------------------


def test_momentum_present_exactly_for_momentum_optimizers() -> None:
    space = SearchSpace.from_dict(
        {
            "optimizer": {
                "type": "categorical",
                "choices": ["sgd", "momentum", "nesterov", "adam"],
            },
            "momentum": {
                "type": "float",
                "low": 0.8,
                "high": 0.99,
                "when": {"optimizer": ["momentum", "nesterov"]},
            },
        },
        source=SOURCE,
    )
    seen = set()
    for params, trial in _sample(space, 40, optuna.samplers.RandomSampler(seed=1)):
        with_momentum = params["optimizer"] in ("momentum", "nesterov")
        assert ("momentum" in params) is with_momentum, params
        # an inactive parameter is not suggested to Optuna either
        assert ("momentum" in trial.params) is with_momentum
        if with_momentum:
            assert 0.8 <= params["momentum"] <= 0.99
        seen.add(with_momentum)
    assert seen == {True, False}, "both branches must be exercised"


def test_nested_condition_needs_every_ancestor() -> None:
    # declared child-first: the space must still decide parents before children
    space = SearchSpace.from_dict(
        {
            "kernel_initializer": {
                "type": "categorical",
                "choices": ["he_normal", "lecun_normal"],
                "when": {"activation": ["selu", "elu"]},
            },
            "activation": {
                "type": "categorical",
                "choices": ["relu", "elu", "selu"],
                "when": {"optimizer": ["nesterov", "adam"]},
            },
            "optimizer": {"type": "categorical", "choices": ["sgd", "nesterov", "adam"]},
        },
        source=SOURCE,
    )
    assert space.order == ["optimizer", "activation", "kernel_initializer"]
    cases = set()
    for params, _ in _sample(space, 80, optuna.samplers.RandomSampler(seed=3)):
        a_holds = params["optimizer"] in ("nesterov", "adam")
        b_holds = a_holds and params["activation"] in ("selu", "elu")
        assert ("activation" in params) is a_holds, params
        assert ("kernel_initializer" in params) is b_holds, params
        cases.add((a_holds, b_holds))
    assert cases == {(False, False), (True, False), (True, True)}


def test_condition_with_several_parents_needs_all_of_them() -> None:
    space = SearchSpace.from_dict(
        {
            "optimizer": {"type": "categorical", "choices": ["sgd", "nesterov"]},
            "activation": {"type": "categorical", "choices": ["relu", "selu"]},
            "momentum": {
                "type": "float",
                "low": 0.8,
                "high": 0.9,
                # a scalar is shorthand for a one-element list
                "when": {"optimizer": "nesterov", "activation": ["selu"]},
            },
        },
        source=SOURCE,
    )
    cases = set()
    for params, _ in _sample(space, 60, optuna.samplers.RandomSampler(seed=5)):
        holds = params["optimizer"] == "nesterov" and params["activation"] == "selu"
        assert ("momentum" in params) is holds, params
        cases.add(holds)
    assert cases == {True, False}


def test_condition_on_numeric_parent() -> None:
    space = SearchSpace.from_dict(
        {
            "n_hidden": {"type": "int", "low": 0, "high": 2},
            "n_neurons": {"type": "int", "low": 8, "high": 16, "when": {"n_hidden": [1, 2]}},
        },
        source=SOURCE,
    )
    cases = set()
    for params, _ in _sample(space, 30, optuna.samplers.RandomSampler(seed=7)):
        assert ("n_neurons" in params) is (params["n_hidden"] > 0), params
        cases.add(params["n_hidden"] > 0)
    assert cases == {True, False}


# -- the shipped spaces -------------------------------------------------------------------------


def test_spaces_are_shipped() -> None:
    assert len(SHIPPED_SPACES) >= 4


@pytest.mark.parametrize("path", SHIPPED_SPACES, ids=lambda p: p.name)
def test_shipped_space_loads_and_samples(path: Path) -> None:
    space = load_search_space(path)
    assert space.source == str(path)
    assert space.specs and set(space.specs) <= set(PARAMETERS)
    for params, _ in _sample(space, 10, optuna.samplers.RandomSampler(seed=0)):
        for name, value in params.items():
            info = PARAMETERS[name]
            if info.kind == "str":
                assert value in (info.choices or ())
            else:
                if info.kind == "int":
                    assert type(value) is int
                if info.minimum is not None:
                    assert value >= info.minimum
                if info.maximum is not None:
                    assert value <= info.maximum
