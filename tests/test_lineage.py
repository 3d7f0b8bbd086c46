"""A study that lives for months: edited spaces and refreshed data continue it, never break it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import pytest
import yaml
from conftest import TINY_SPACE, mlflow_client, mlflow_runs, one_line_error
from typer.testing import CliRunner

from tuning import lineage
from tuning.cli import app
from tuning.config import load_search_space


def _run(exp: Path, *args: str, code: int = 0) -> str:
    result = CliRunner().invoke(app, ["run", str(exp), *args])
    assert result.exit_code == code, result.output
    return result.output


def _studies(workdir: Path) -> dict[str, optuna.study.StudySummary]:
    url = f"sqlite:///{workdir / 'optuna.db'}"
    return {s.study_name: s for s in optuna.get_all_study_summaries(url)}


def _trials(workdir: Path, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{workdir / 'optuna.db'}").trials


def _space(**changes: Any) -> dict[str, Any]:
    space = {**TINY_SPACE, **changes}
    return {k: v for k, v in space.items() if v is not None}


# -- which earlier trials lie inside a new space ---------------------------------------------


def _inside(params: dict[str, Any], space: dict[str, Any]) -> dict[str, Any] | None:
    defaults = {"batch_size": 128, "n_hidden": 2, "n_neurons": 100, "dropout": 0.0,
                "n_neurons_per_layer": False}  # fmt: skip
    return lineage.inside(params, load_search_space(data=space), defaults)


BASE = {"n_hidden": 1, "n_neurons": 16, "activation": "relu", "optimizer": "adam",
        "learning_rate": 0.005, "batch_size": 128}  # fmt: skip


def test_a_trial_lies_inside_a_space_that_can_produce_it() -> None:
    assert _inside(BASE, TINY_SPACE) == BASE
    # A choice added, a range widened: still inside.
    wider = _space(
        activation={"type": "categorical", "choices": ["relu", "elu", "gelu"]},
        learning_rate={"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
    )
    assert _inside(BASE, wider) == BASE
    # A fixed value made a choice: the trial's fixed value is one of them.
    assert _inside(BASE, _space(batch_size={"type": "categorical", "choices": [64, 128]})) == BASE
    # A parameter added: the trial trained with its default, inside the new range.
    added = _space(dropout={"type": "float", "low": 0.0, "high": 0.5})
    assert _inside(BASE, added) == {**BASE, "dropout": 0.0}


def test_a_trial_outside_the_new_space_is_left_behind() -> None:
    assert _inside(BASE, _space(activation={"type": "categorical", "choices": ["elu"]})) is None
    narrow = _space(learning_rate={"type": "float", "low": 1e-2, "high": 2e-2})
    assert _inside(BASE, narrow) is None
    assert _inside(BASE, _space(batch_size=64)) is None  # fixed at another value
    # A parameter removed: the trial is inside only if it had the value now used (the default).
    assert _inside(BASE, _space(n_hidden=None)) is None
    assert _inside({**BASE, "n_hidden": 2}, _space(n_hidden=None)) is not None
    # A conditional parameter the trial lacks but now needs, with no default to stand for it.
    extra = _space(extra={"seed_offset": {"type": "int", "low": 0, "high": 3}})
    assert _inside(BASE, extra) is None


def test_space_changes_are_described_per_parameter() -> None:
    new = _space(activation={"type": "categorical", "choices": ["relu", "gelu"]}, batch_size=None,
                 dropout={"type": "float", "low": 0.0, "high": 0.3})  # fmt: skip
    old_dict = load_search_space(data=TINY_SPACE).to_dict()
    new_dict = load_search_space(data=new).to_dict()
    assert lineage.space_changes(old_dict, new_dict) == [
        "activation: gelu added; elu removed",
        "batch_size removed (was fixed 128)",
        "dropout added (float 0.0..0.3)",
    ]
    assert lineage.space_changes(old_dict, old_dict) == []
    assert lineage.base_of("quick@v3") == ("quick", 3) and lineage.base_of("quick") == ("quick", 1)
    assert lineage.version_name("quick", 1) == "quick" and lineage.version_name("q", 2) == "q@v2"


# -- jobs on an edited space --------------------------------------------------------------------


def test_an_edited_space_continues_in_a_new_version(make_experiment, workdir: Path) -> None:
    """The issue's case: a choice added and a fixed value made a choice crashed every later job
    (CategoricalDistribution does not support dynamic value space)."""
    exp = make_experiment("lin", training__max_epochs=1)
    _run(exp)
    wider = _space(
        activation={"type": "categorical", "choices": ["relu", "elu", "gelu"]},
        batch_size={"type": "categorical", "choices": [64, 128]},
    )
    (workdir / "space.yaml").write_text(yaml.safe_dump(wider))
    out = _run(exp)
    changed = [line for line in out.splitlines() if "search space changed" in line]
    assert len(changed) == 1, out
    assert (
        "activation: gelu added" in changed[0] and "batch_size: fixed 128 -> one of" in changed[0]
    )
    assert "continuing in version 2 ('lin@v2') after version 1 ('lin')" in changed[0]
    assert "warm-started with 2 of its trials" in changed[0]
    assert "study 'lin@v2' (resumed with 2 trials" in out

    studies = _studies(workdir)
    assert set(studies) == {"lin", "lin@v2"}
    assert studies["lin"].user_attrs[lineage.NEXT] == "lin@v2"
    v2 = _trials(workdir, "lin@v2")
    carried = [t for t in v2 if lineage.CARRIED_FROM in t.user_attrs]
    assert [t.user_attrs[lineage.CARRIED_FROM] for t in carried] == ["lin#0", "lin#1"]
    old = _trials(workdir, "lin")
    assert [t.value for t in carried] == [t.value for t in old]
    assert [t.intermediate_values for t in carried] == [t.intermediate_values for t in old]
    assert all(t.params["batch_size"] == 128 for t in carried)  # the old fixed value, sampled now
    assert len(v2) == 4 and all(t.state.name == "COMPLETE" for t in v2)

    out = _run(exp)  # the same space again: the same version, nothing to say
    assert "changed" not in out and "study 'lin@v2' (resumed with 4 trials" in out
    parents = mlflow_runs(workdir, "lin", role="job")
    tags = sorted((r.data.tags["study"], r.data.tags["study_version"]) for r in parents)
    assert tags == [("lin", "1"), ("lin@v2", "2"), ("lin@v2", "2")]
    assert {r.data.tags["lineage"] for r in parents} == {"lin"}
    started = [r for r in parents if "version_reason" in r.data.tags]
    assert len(started) == 1 and started[0].data.tags["study_previous"] == "lin"
    assert "activation" in started[0].data.tags["version_reason"]


def test_a_space_change_can_be_refused_and_a_numeric_range_change_keeps_the_study(
    make_experiment, workdir: Path
) -> None:
    exp = make_experiment("rng", training__max_epochs=1, study__n_trials=1)
    _run(exp)
    (workdir / "space.yaml").write_text(yaml.safe_dump(_space(batch_size=64)))
    result = CliRunner().invoke(app, ["run", str(exp), "--set", "study.on_change.space=error"])
    one_line_error(result, "study.on_change.space", "batch_size: fixed 128 -> fixed 64")
    assert len(mlflow_runs(workdir, "rng", role="job")) == 1  # nothing created by the refusal
    assert set(_studies(workdir)) == {"rng"} and len(_trials(workdir, "rng")) == 1

    wider = _space(learning_rate={"type": "float", "low": 1e-4, "high": 3e-2, "log": True},
                   dropout={"type": "float", "low": 0.0, "high": 0.2})  # fmt: skip
    (workdir / "space.yaml").write_text(yaml.safe_dump(wider))
    out = _run(exp)
    (line,) = [x for x in out.splitlines() if "search space changed" in x]
    assert "learning_rate: float 0.001..0.01 log -> float 0.0001..0.03 log" in line
    assert "dropout added" in line and "continuing version 1 ('rng')" in line
    assert set(_studies(workdir)) == {"rng"} and len(_trials(workdir, "rng")) == 2


def test_a_half_made_version_is_made_again(make_experiment, workdir: Path) -> None:
    """A job killed while making a version leaves a study no version points at: removed."""
    exp = make_experiment("half", training__max_epochs=1, study__n_trials=1)
    _run(exp)
    url = f"sqlite:///{workdir / 'optuna.db'}"
    half = optuna.create_study(study_name="half@v2", storage=url, direction="maximize")
    half.add_trial(optuna.trial.create_trial(value=0.0, user_attrs={"left_by": "a dead job"}))
    (workdir / "space.yaml").write_text(
        yaml.safe_dump(_space(activation={"type": "categorical", "choices": ["relu", "selu"]}))
    )
    out = _run(exp)
    assert "continuing in version 2 ('half@v2')" in out
    trials = _trials(workdir, "half@v2")
    assert not any("left_by" in t.user_attrs for t in trials)  # the half-made one is gone
    carried = [t for t in trials if lineage.CARRIED_FROM in t.user_attrs]
    assert len(trials) == len(carried) + 1  # this job's one trial; carried ones never doubled
    assert _studies(workdir)["half"].user_attrs[lineage.NEXT] == "half@v2"


# -- refreshed data ---------------------------------------------------------------------------


def _csv(workdir: Path, rows: int, *, drop: tuple[str, ...] = ()) -> None:
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame.iloc[:rows, :8].copy()
    frame["target"] = load_breast_cancer().target[:rows]
    frame.drop(columns=list(drop)).to_csv(workdir / "rows.csv", index=False)


@pytest.fixture
def nightly(make_experiment, workdir: Path) -> Path:
    return make_experiment(
        "nightly",
        dataset={"path": "rows.csv", "target": "target"},
        objective={"metric": "val_accuracy", "direction": "maximize"},
        study__n_trials=1,
        study__on_change={"retrain_top": 1},
        training__max_epochs=4,
        space={"n_hidden": 1, "n_neurons": 16, "learning_rate": {
            "type": "float", "low": 1e-3, "high": 1e-2, "log": True}},
        tracking={"uri": "sqlite:///mlflow.db", "register_as": "nightly-mlp"},
    )  # fmt: skip


def _versions(workdir: Path) -> dict[str, dict[str, str]]:
    client = mlflow_client(workdir)
    found = client.search_model_versions("name='nightly-mlp'")
    return {str(v.version): v.tags for v in found}


def test_refreshed_data_moves_the_champion_on_todays_rows(nightly: Path, workdir: Path) -> None:
    """The issue's case: after the data changed, @champion could never move again."""
    _csv(workdir, 300)
    out = _run(nightly)
    assert "now @champion (first version" in out
    _csv(workdir, 380)  # rows appended: 27 % of the 300 the version began with
    out = _run(nightly)
    (line,) = [x for x in out.splitlines() if x.startswith("data changed")]
    assert "rows 300 -> 380" in line and "continuing version 1 ('nightly')" in line
    tags = _versions(workdir)["2"]
    assert tags["champion_test"] == "mcnemar_exact" and tags["champion_p_value"] != ""
    assert "data changed since champion v1 was scored (300 rows" in tags["champion_decision"]
    assert "380 rows now" in tags["champion_decision"]
    assert tags["data_rows"] == "380"
    assert set(_studies(workdir)) == {"nightly"}

    _csv(workdir, 380, drop=("mean area",))  # a column gone: a new version, a stale champion
    out = _run(nightly)
    (line,) = [x for x in out.splitlines() if x.startswith("data changed")]
    assert "the data's shape changed" in line and "version 2 ('nightly@v2')" in line
    assert "its 1 best configuration(s) are trained again first" in line
    v2 = _trials(workdir, "nightly@v2")
    assert v2[0].user_attrs[lineage.CARRIED_FROM].startswith("nightly#")
    best_v1 = max(_trials(workdir, "nightly"), key=lambda t: t.value or 0)
    assert v2[0].params["learning_rate"] == best_v1.params["learning_rate"]  # retrained first
    assert len(v2) == 1 and v2[0].value is not None  # measured again, today
    tags = _versions(workdir)["3"]
    assert tags["champion_decision"].startswith("moved: champion v")
    assert "cannot score today's data" in tags["champion_decision"]
    assert "tracking.stale_champion: replace" in tags["champion_decision"]
    client = mlflow_client(workdir)
    assert str(client.get_model_version_by_alias("nightly-mlp", "champion").version) == "3"


def test_a_data_change_can_be_refused_and_drift_beyond_the_share_starts_a_version(
    nightly: Path, workdir: Path
) -> None:
    _csv(workdir, 200)
    _run(nightly, "--set", "tracking.register_as=null")
    _csv(workdir, 210)
    result = CliRunner().invoke(app, ["run", str(nightly), "--set", "study.on_change.data=error"])
    one_line_error(result, "study.on_change.data", "rows 200 -> 210")
    assert len(mlflow_runs(workdir, "nightly", role="job")) == 1

    _csv(workdir, 320)  # +60 %: over study.on_change.rows 0.5
    out = _run(nightly, "--set", "tracking.register_as=null")
    (line,) = [x for x in out.splitlines() if x.startswith("data changed")]
    assert "the rows changed by 60% since the version began with 200" in line
    assert set(_studies(workdir)) == {"nightly", "nightly@v2"}
    data = _studies(workdir)["nightly@v2"].user_attrs[lineage.DATA]
    assert data["rows"] == 320


def test_the_keras_tuner_engine_records_digests(make_experiment, workdir: Path) -> None:
    exp = make_experiment("ktl", training__max_epochs=1, study__n_trials=1,
                          study__engine="keras_tuner")  # fmt: skip
    _run(exp)
    (parent,) = mlflow_runs(workdir, "ktl", role="job")
    assert parent.data.tags["lineage"] == "ktl" and len(parent.data.tags["space_digest"]) == 12
    assert pd.notna(parent.data.tags["data_rows"])
