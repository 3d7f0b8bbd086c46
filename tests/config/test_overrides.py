"""--set overrides (tuning/config/overrides.py): parsing ``dotted.key=value``, applying the
pairs in order over the experiment file (string shorthands, missing sections), and
``search_space.*`` pairs merged into the space the experiment names."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml
from conftest import ROOT

from tuning.config import load_experiment, parse_set
from tuning.errors import ConfigError

QUICKSTART = ROOT / "experiments" / "quickstart.yaml"


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ("study.n_trials=5", ("study.n_trials", 5)),
        ("study.timeout=null", ("study.timeout", None)),
        ("study.timeout=90.5", ("study.timeout", 90.5)),
        ("study.sampler=random", ("study.sampler", "random")),
        ("training.early_stopping.patience=3", ("training.early_stopping.patience", 3)),
        ("study.storage=sqlite:///x.db", ("study.storage", "sqlite:///x.db")),
        ("description=a=b", ("description", "a=b")),
        (" study.seed = 7 ", ("study.seed", 7)),
        ("description=", ("description", "")),
    ],
)
def test_parse_set(item: str, expected: tuple[str, Any]) -> None:
    assert parse_set(item) == expected


@pytest.mark.parametrize("item", ["nokey", "=3", "a..b=1", ".a=1", "a.=1", " =1"])
def test_parse_set_rejects(item: str) -> None:
    phrase = f"expected dotted.key=value (got {item!r})"
    with pytest.raises(ConfigError, match=re.escape(phrase)) as info:
        parse_set(item)
    e = info.value
    assert e.source == "--set"
    assert str(e).startswith("--set: ")
    assert e.fix is not None and "--set study.n_trials=5" in e.fix


def test_overrides_apply_over_a_string_shorthand() -> None:
    path = ROOT / "experiments" / "california_housing.yaml"
    # precondition: the file gives the sampler and pruner as bare names
    raw = yaml.safe_load(path.read_text())
    assert raw["study"]["sampler"] == "tpe"
    assert raw["study"]["pruner"] == "median"

    exp = load_experiment(
        path,
        overrides=[
            ("study.n_trials", 3),
            ("study.sampler.type", "random"),
            ("training.max_epochs", 2),
        ],
    )
    assert exp.study.n_trials == 3
    assert exp.study.sampler.type == "random"
    assert exp.training.max_epochs == 2
    # everything else is what the file (or the defaults) say
    assert exp.study.pruner.type == "median"
    assert exp.study.sampler.n_startup_trials == 5
    assert exp.training.batch_size == 32
    assert exp.training.early_stopping.patience == 10
    assert exp.objective.metric == "val_rmse"

    exp = load_experiment(path, overrides=[("study.pruner.n_warmup_steps", 1)])
    assert exp.study.pruner.type == "median"
    assert exp.study.pruner.n_warmup_steps == 1


def test_overrides_apply_in_order_and_create_sections() -> None:
    exp = load_experiment(
        ROOT / "experiments" / "diabetes.yaml",
        overrides=[
            parse_set("study.n_trials=4"),
            parse_set("study.n_trials=6"),
            parse_set("tracking.experiment=other"),  # no tracking section in the file
            parse_set("study.timeout=null"),
            parse_set("study.sampler=random"),
        ],
    )
    assert exp.study.n_trials == 6
    assert exp.tracking.experiment == "other"
    assert exp.mlflow_experiment == "other"
    assert exp.study.timeout is None
    assert exp.study.sampler.type == "random"


def test_override_with_a_bad_value_is_validated() -> None:
    with pytest.raises(
        ConfigError, match=re.escape("Input should be greater than or equal to 1 (got 0)")
    ) as info:
        load_experiment(QUICKSTART, overrides=[parse_set("study.n_trials=0")])
    assert info.value.key == "study.n_trials"


def test_override_through_a_value_that_is_not_a_mapping() -> None:
    phrase = "cannot set name.x: name is not a mapping"
    with pytest.raises(ConfigError, match=re.escape(phrase)) as info:
        load_experiment(QUICKSTART, overrides=[("name.x", 1)])
    assert info.value.source == "--set"


def test_search_space_overrides_merge_into_the_space_file() -> None:
    exp = load_experiment(
        ROOT / "experiments" / "quickstart.yaml",
        overrides=[
            ("search_space.learning_rate", 0.01),
            ("search_space.n_hidden.high", 2),
        ],
    )
    specs = exp.space.specs
    assert specs["learning_rate"].kind == "fixed" and specs["learning_rate"].value == 0.01
    assert specs["n_hidden"].high == 2 and specs["n_hidden"].low == 1  # the rest of the file kept
    assert "momentum" in specs and "activation" in specs
    with pytest.raises(ConfigError, match="low must not be above high") as e:
        load_experiment(
            ROOT / "experiments" / "quickstart.yaml",
            overrides=[("search_space.n_hidden.high", 0)],
        )
    assert "(with --set search_space.*)" in str(e.value)
