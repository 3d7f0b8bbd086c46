"""Experiment files (tuning/config/): the shipped files load, defaults are filled, one-line errors
name the file, the key and the fix (schema and cross-field checks), the inline search space, and
what the package must not import. --set overrides: test_overrides.py."""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import ROOT
from pydantic import BaseModel

from tuning.config import (
    EXPERIMENT_FIELDS,
    Experiment,
    load_experiment,
    load_search_space,
    redact,
)
from tuning.data import DATASETS
from tuning.errors import ConfigError

SHIPPED_EXPERIMENTS = sorted((ROOT / "experiments").glob("*.yaml"))
QUICKSTART = ROOT / "experiments" / "quickstart.yaml"
QUICKSTART_SPACE = ROOT / "search_spaces" / "quickstart.yaml"


def _base() -> dict[str, Any]:
    """experiments/quickstart.yaml as a dict, its search space named by absolute path."""
    data = yaml.safe_load(QUICKSTART.read_text())
    data["search_space"] = str(QUICKSTART_SPACE)
    return data


def _write(tmp_path: Path, content: dict[str, Any] | str, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    return path


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node = data
    for p in parents:
        node = node.setdefault(p, {})
    node[last] = value


# -- the shipped experiments --------------------------------------------------------------------


def test_experiments_are_shipped() -> None:
    assert QUICKSTART in SHIPPED_EXPERIMENTS
    assert len(SHIPPED_EXPERIMENTS) >= 4


@pytest.mark.parametrize("path", SHIPPED_EXPERIMENTS, ids=lambda p: p.name)
def test_shipped_experiment_loads(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # from an unrelated working folder: the search space is found relative to the experiment
    monkeypatch.chdir(tmp_path)
    exp = load_experiment(path)
    raw = yaml.safe_load(path.read_text())
    assert isinstance(exp, Experiment)
    assert exp.source == str(path)
    assert exp.name == raw["name"]
    assert exp.study_name == (raw.get("study", {}).get("name") or raw["name"])
    assert exp.dataset.name in DATASETS
    expected = load_search_space((path.parent / raw["search_space"]).resolve())
    assert exp.space.specs == expected.specs


@pytest.mark.parametrize("path", SHIPPED_EXPERIMENTS, ids=lambda p: p.name)
def test_resolved_experiment_loads_back_the_same(path: Path, tmp_path: Path) -> None:
    exp = load_experiment(path)
    again = load_experiment(_write(tmp_path, exp.resolved()))
    assert again.model_dump(exclude={"search_space"}) == exp.model_dump(exclude={"search_space"})
    assert again.space.specs == exp.space.specs


def test_defaults_are_filled() -> None:
    exp = load_experiment(ROOT / "experiments" / "diabetes.yaml")
    # the file names neither a seed, a timeout, nor anything under tracking
    assert exp.study.seed == 0
    assert exp.study.timeout is None
    assert exp.study.sampler.type == "tpe"
    assert exp.study.sampler.n_startup_trials == 5
    assert exp.tracking.log_models == "best"
    assert exp.mlflow_experiment == "diabetes"


# -- one-line errors naming the file, the key and the fix ---------------------------------------


def _storage_in_missing_folder(d: dict[str, Any], tmp: Path) -> None:
    d["study"]["storage"] = f"sqlite:///{tmp / 'missing' / 'optuna.db'}"


BAD = [
    # id, change(data, tmp_path) or YAML text, key, rule phrase, has fix, more text in the message
    (
        "unknown-top-level-key",
        lambda d, t: _set(d, "foo", 1),
        "foo",
        "unknown key",
        True,
        [
            "allowed keys here: dataset, description, limits, measures, name, objective, "
            "search_space, selection, study, tracking, training"
        ],
    ),
    (
        "unknown-nested-key",
        lambda d, t: _set(d, "study.n_trails", 5),
        "study.n_trails",
        "unknown key",
        True,
        ["n_trials"],
    ),
    (
        "unknown-sampler-key",
        lambda d, t: _set(d, "study.sampler.typ", "tpe"),
        "study.sampler.typ",
        "unknown key",
        True,
        ["n_startup_trials"],
    ),
    (
        "n-trials-zero",
        lambda d, t: _set(d, "study.n_trials", 0),
        "study.n_trials",
        "Input should be greater than or equal to 1 (got 0)",
        True,
        [],
    ),
    (
        "negative-timeout",
        lambda d, t: _set(d, "study.timeout", -1),
        "study.timeout",
        "Input should be greater than 0 (got -1)",
        True,
        [],
    ),
    (
        "bad-sampler-type",
        lambda d, t: _set(d, "study.sampler.type", "grid"),
        "study.sampler.type",
        "Input should be 'tpe', 'random' or 'nsga2' (got 'grid')",
        True,
        [],
    ),
    (
        "bad-sampler-shorthand",
        lambda d, t: _set(d, "study.sampler", "grid"),
        "study.sampler.type",
        "Input should be 'tpe', 'random' or 'nsga2' (got 'grid')",
        True,
        [],
    ),
    (
        "bad-pruner-shorthand",
        lambda d, t: _set(d, "study.pruner", "sometimes"),
        "study.pruner.type",
        "Input should be 'median', 'hyperband' or 'none' (got 'sometimes')",
        True,
        [],
    ),
    (
        "unknown-dataset",
        lambda d, t: _set(d, "dataset.name", "mnits"),
        "dataset.name",
        "unknown dataset 'mnits'",
        True,
        list(DATASETS),
    ),
    (
        "validation-fraction",
        lambda d, t: _set(d, "dataset.validation", 1.5),
        "dataset.validation",
        "a fraction must be between 0 and 1 (got 1.5)",
        True,
        [],
    ),
    (
        "bad-name",
        lambda d, t: _set(d, "name", "my study"),
        "name",
        "must be letters, digits, '.', '_' or '-' (got 'my study')",
        True,
        [],
    ),
    (
        "metric-not-of-task",
        lambda d, t: _set(d, "objective.metric", "val_rmse"),
        "objective.metric",
        "'val_rmse' is not a validation metric of a multiclass task",
        True,
        ["val_loss, val_accuracy"],
    ),
    (
        "maximize-val-loss",
        lambda d, t: d.update(objective={"metric": "val_loss", "direction": "maximize"}),
        "objective.direction",
        "val_loss should be minimized, not maximized",
        True,
        ["set direction: minimize"],
    ),
    (
        "minimize-accuracy",
        lambda d, t: d.update(objective={"metric": "val_accuracy", "direction": "minimize"}),
        "objective.direction",
        "val_accuracy should be maximized, not minimized",
        True,
        [],
    ),
    (
        "storage-scheme",
        lambda d, t: _set(d, "study.storage", "redis://localhost:6379/0"),
        "study.storage",
        "unsupported storage URL 'redis://localhost:6379/0'",
        True,
        [],
    ),
    (
        "storage-missing-folder",
        _storage_in_missing_folder,
        "study.storage",
        "of the storage file does not exist",
        True,
        ["missing"],
    ),
    (
        "missing-dataset",
        lambda d, t: d.pop("dataset"),
        "dataset",
        "required key is missing",
        True,
        ["add it ({name: ..., validation: ...})"],
    ),
    ("missing-name", lambda d, t: d.pop("name"), "name", "required key is missing", True, []),
    ("malformed-yaml", "name: [unclosed", None, "line 1, column 16: not valid YAML", True, []),
    (
        "malformed-yaml-line-2",
        "name: quickstart\ndataset: {name: digits]\n",
        None,
        "line 2, column 23: not valid YAML (expected ',' or '}', but got ']')",
        True,
        [],
    ),
    (
        "yaml-list",
        "- name: quickstart\n- dataset: digits\n",
        None,
        "an experiment must be a mapping of keys (got list)",
        True,
        [],
    ),
    (
        "empty-file",
        "# nothing here\n",
        None,
        "an experiment must be a mapping of keys (got NoneType)",
        True,
        [],
    ),
]


@pytest.mark.parametrize(
    ("change", "key", "phrase", "has_fix", "more"),
    [pytest.param(*case[1:], id=case[0]) for case in BAD],
)
def test_bad_experiment(
    tmp_path: Path, change: Any, key: str | None, phrase: str, has_fix: bool, more: list[str]
) -> None:
    if isinstance(change, str):
        path = _write(tmp_path, change)
    else:
        data = _base()
        change(data, tmp_path)
        path = _write(tmp_path, data)
    with pytest.raises(ConfigError, match=re.escape(phrase)) as info:
        load_experiment(path)
    e = info.value
    text = str(e)
    assert "\n" not in text
    assert e.source == str(path)
    assert text.startswith(f"{path}: ")
    assert e.key == key
    if key:
        assert f"{path}: {key}: " in text
    if has_fix:
        assert e.fix
        assert text.endswith(f". Fix: {e.fix}")
    for fragment in more:
        assert fragment in text


def test_storage_missing_folder_names_the_folder(tmp_path: Path) -> None:
    data = _base()
    _storage_in_missing_folder(data, tmp_path)
    folder = tmp_path / "missing"
    with pytest.raises(
        ConfigError,
        match=re.escape(f"the folder {str(folder)!r} of the storage file does not exist"),
    ):
        load_experiment(_write(tmp_path, data))
    folder.mkdir()
    assert load_experiment(_write(tmp_path, data)).study.storage.endswith("missing/optuna.db")


def test_missing_search_space_file(tmp_path: Path) -> None:
    data = _base()
    data["search_space"] = "nope.yaml"
    path = _write(tmp_path, data)
    with pytest.raises(
        ConfigError,
        match=re.escape(f"search space file {str(tmp_path / 'nope.yaml')!r} not found"),
    ) as info:
        load_experiment(path)
    text = str(info.value)
    assert "\n" not in text
    # the path that was looked for: relative to the experiment file, not the current folder
    assert ". Fix: give a path relative to the experiment file" in text


def test_missing_search_space_file_names_experiment_and_key(tmp_path: Path) -> None:
    data = _base()
    data["search_space"] = "nope.yaml"
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    assert str(path) in str(info.value)
    assert info.value.key == "search_space"


def test_storage_error_does_not_leak_password(tmp_path: Path) -> None:
    data = _base()
    data["study"]["storage"] = "postgres://alice:s3cr3t@db.example/optuna"  # postgres:// typo
    with pytest.raises(ConfigError, match=re.escape("unsupported storage URL")) as info:
        load_experiment(_write(tmp_path, data))
    assert "s3cr3t" not in str(info.value)


def test_error_in_a_referenced_space_names_that_file(tmp_path: Path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text("n_hidden: {type: int, low: 4, high: 2}\n")
    data = _base()
    data["search_space"] = "space.yaml"
    with pytest.raises(ConfigError, match=re.escape("low must not be above high")) as info:
        load_experiment(_write(tmp_path, data))
    assert info.value.source == str(tmp_path / "space.yaml")
    assert info.value.key == "n_hidden"


def test_relative_search_space_is_relative_to_the_experiment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "spaces").mkdir()
    (tmp_path / "exps").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "spaces" / "s.yaml").write_text("n_hidden: {type: int, low: 1, high: 2}\n")
    data = _base()
    data["search_space"] = "../spaces/s.yaml"
    path = _write(tmp_path / "exps", data)
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert list(load_experiment(path).space.specs) == ["n_hidden"]


# -- the inline search space --------------------------------------------------------------------


def test_inline_search_space(tmp_path: Path) -> None:
    data = _base()
    data["search_space"] = yaml.safe_load(QUICKSTART_SPACE.read_text())
    exp = load_experiment(_write(tmp_path, data))
    assert exp.space.specs == load_search_space(QUICKSTART_SPACE).specs
    assert exp.resolved()["search_space"] == exp.space.to_dict()


def test_bad_inline_search_space_names_the_experiment(tmp_path: Path) -> None:
    data = _base()
    data["search_space"] = {
        "n_hidden": {"type": "int", "low": 1, "high": 3},
        "optimizer": {"type": "categorical", "choices": ["adam", "adamx"]},
    }
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError, match=re.escape("unknown optimizer 'adamx'")) as info:
        load_experiment(path)
    e = info.value
    assert "\n" not in str(e)
    assert e.source is not None and e.source.startswith(str(path))
    assert str(e).startswith(f"{path}: search_space: optimizer.choices: ")


def test_empty_inline_search_space(tmp_path: Path) -> None:
    data = _base()
    data["search_space"] = {}
    path = _write(tmp_path, data)
    phrase = "a search space must be a non-empty mapping"
    with pytest.raises(ConfigError, match=re.escape(phrase)) as info:
        load_experiment(path)
    assert str(path) in str(info.value)


# -- contracts ----------------------------------------------------------------------------------


def _walk(model: type[BaseModel], prefix: str = "") -> dict[str, Any]:
    """Dotted key -> pydantic field, nested models included (independent of schema.py)."""
    out: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        out[prefix + name] = field
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            out.update(_walk(field.annotation, f"{prefix}{name}."))
    return out


def test_every_experiment_field_is_described() -> None:
    fields = _walk(Experiment)
    assert set(EXPERIMENT_FIELDS) == set(fields)
    for key in ("study.sampler.type", "training.early_stopping.patience", "dataset.name"):
        assert key in EXPERIMENT_FIELDS
    for key, field in fields.items():
        # the field itself carries a description: not the name filled in as a fallback
        assert isinstance(field.description, str) and field.description.strip(), key
        assert EXPERIMENT_FIELDS[key] == field.description


def test_config_error_pickles(tmp_path: Path) -> None:
    made = ConfigError("bad value (got 3)", source="exp.yaml", key="study.n_trials", fix="use 4")
    data = _base()
    data["study"]["n_trails"] = 3
    with pytest.raises(ConfigError) as info:
        load_experiment(_write(tmp_path, data))
    for e in (made, info.value, ConfigError("no source at all")):
        back = pickle.loads(pickle.dumps(e))
        assert type(back) is ConfigError
        assert str(back) == str(e)
        assert (back.rule, back.source, back.key, back.fix) == (e.rule, e.source, e.key, e.fix)
    assert str(made) == "exp.yaml: study.n_trials: bad value (got 3). Fix: use 4"


def test_config_error_is_one_line() -> None:
    e = ConfigError("first\nsecond", source="f.yaml", key="k", fix="do\nthis")
    assert str(e) == "f.yaml: k: first second. Fix: do this"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u:secret@h/db", "postgresql://u:***@h/db"),
        ("mysql+pymysql://user:p%40ss@host:3306/db", "mysql+pymysql://user:***@host:3306/db"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("sqlite:///optuna.db", "sqlite:///optuna.db"),
    ],
)
def test_redact(url: str, expected: str) -> None:
    assert redact(url) == expected
    assert "secret" not in redact(url)


def test_config_and_space_do_not_import_frameworks() -> None:
    code = (
        "import sys, tuning.config, tuning.config.space\n"
        f"tuning.config.load_experiment({str(QUICKSTART)!r})\n"
        "print(sorted({m.split('.')[0] for m in sys.modules}"
        " & {'keras', 'mlflow', 'tensorflow', 'optuna'}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
