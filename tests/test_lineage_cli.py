"""Lineage you can see: `tuning status`, `show`, `best` and `compare` know a study's versions."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import TINY_SPACE, enter, write_experiment
from typer.testing import CliRunner

from tuning.cli import app

runner = CliRunner()

REASON = "search space changed in a way Optuna cannot sample in one study (activation)"


def _ok(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.fixture(scope="module")
def _two_versions_built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Study 'lin': version 1 ran one trial; a choice added to the space started 'lin@v2', which
    got v1's trial (copied) and ran one of its own. Built once for the module (two jobs)."""
    folder = tmp_path_factory.mktemp("two_versions")
    with pytest.MonkeyPatch.context() as monkeypatch:
        enter(folder, monkeypatch)
        random.seed(0)
        np.random.seed(0)
        exp = write_experiment(folder, "lin", training__max_epochs=1, study__n_trials=1)
        _ok("run", str(exp), "-q")
        wider = {
            **TINY_SPACE,
            "activation": {"type": "categorical", "choices": ["relu", "elu", "gelu"]},
        }
        (folder / "space.yaml").write_text(yaml.safe_dump(wider))
        _ok("run", str(exp), "-q")
    return folder


@pytest.fixture
def two_versions(_two_versions_built: Path, workdir: Path) -> Path:
    """A copy of the built stores in this test's working folder (a test may add runs to it; the
    artifacts stay where the jobs wrote them); returns the experiment's path."""
    shutil.copytree(_two_versions_built, workdir, dirs_exist_ok=True)
    return workdir / "lin.yaml"


def test_status_shows_a_study_once_with_its_versions(two_versions: Path) -> None:
    lines = _ok("status").splitlines()
    assert len(lines) == 3, lines  # the study, then one line per version: no 'lin@v2' study
    assert lines[0].startswith("lin: version 2 of 2 ('lin@v2'): 2 trials (2 complete); best ")
    v1, v2 = (line.strip() for line in lines[1:])
    assert lines[1].startswith("    v1 'lin': 1 trials; best ")
    assert "data 1797 rows (" in v1 and v1.endswith("the first version")
    assert v2.startswith("v2 'lin@v2': 2 trials (1 carried); best ")
    assert "data 1797 rows (" in v2 and v2.endswith(f"started because: {REASON}")

    (row,) = json.loads(_ok("status", "--json"))
    assert (row["study"], row["current"], row["version"], row["trials"]) == ("lin", "lin@v2", 2, 2)
    assert [v["study"] for v in row["versions"]] == ["lin", "lin@v2"]
    assert [v["trials"] for v in row["versions"]] == [1, 2]
    assert [v["carried"] for v in row["versions"]] == [0, 1]
    assert row["versions"][1]["reason"] == REASON and row["versions"][1]["previous"] == "lin"
    assert all(v["data_rows"] == 1797 and len(v["data_digest"]) >= 8 for v in row["versions"])


def test_show_says_which_version_and_lists_the_others(two_versions: Path) -> None:
    out = _ok("show", "lin")
    lines = out.splitlines()
    assert lines[0] == f"study 'lin' version 2 of 2 ('lin@v2', started because: {REASON})"
    assert lines[1] == (
        "study 'lin@v2' (maximize): 2 trials: 2 complete; 1 carried from earlier versions"
    )
    assert lines[2].startswith("data: 1797 rows (digest ")
    listed = [line for line in lines if line.lstrip().startswith(("v1 ", "* v"))]
    assert [line.split()[:2] for line in listed] == [["v1", "'lin':"], ["*", "v2"]]
    assert "(copied from lin#0)" in out  # the carried trial in the table

    assert _ok("show", "lin@v2") == out  # the version's name: the same version
    older = _ok("show", "lin", "--version", "1").splitlines()
    assert (
        older[0]
        == "study 'lin' version 1 of 2 ('lin', the first version; current: version 2 'lin@v2')"
    )
    assert older[1] == "study 'lin' (maximize): 1 trials: 1 complete"
    assert _ok("show", "lin@v1").splitlines()[:2] == older[:2]

    shown = json.loads(_ok("show", "lin", "--json"))
    assert (shown["study"], shown["base"], shown["version"], shown["trials"]) == (
        "lin@v2",
        "lin",
        2,
        2,
    )
    assert [v["version"] for v in shown["versions"]] == [1, 2]

    missing = runner.invoke(app, ["show", "lin", "--version", "3"])
    assert missing.exit_code == 2 and "study 'lin' has no version 3" in missing.stderr
    assert "use one of versions 1, 2" in missing.stderr
    clash = runner.invoke(app, ["best", "lin@v2", "--version", "1"])
    assert clash.exit_code == 2 and "'lin@v2' is version 2 of study 'lin'" in clash.stderr


def test_best_is_the_shown_versions_and_says_where_a_carried_trial_came_from(
    two_versions: Path,
) -> None:
    import optuna

    v1 = optuna.load_study(study_name="lin", storage="sqlite:///optuna.db")
    v2 = optuna.load_study(study_name="lin@v2", storage="sqlite:///optuna.db")
    lines = _ok("best", "lin").splitlines()
    assert lines[0] == f"study 'lin' version 2 of 2 ('lin@v2', started because: {REASON})"
    head = f"trial {v2.best_trial.number}: value {v2.best_value:.6g}"
    if v2.best_trial.number == 0:  # v1's trial, copied
        assert lines[1] == head + " (copied from lin#0)"
    else:
        assert lines[1] == head
    found = json.loads(_ok("best", "lin", "--json"))
    assert (found["study"], found["version"], found["number"]) == (
        "lin@v2",
        2,
        v2.best_trial.number,
    )
    assert found["carried_from"] == v2.best_trial.user_attrs.get("carried_from")

    first = json.loads(_ok("best", "lin", "--version", "1", "--json"))
    assert (first["study"], first["version"], first["value"]) == ("lin", 1, v1.best_value)
    assert first["carried_from"] is None


def test_compare_takes_the_current_version_or_the_one_named(two_versions: Path) -> None:
    out = _ok("compare", str(two_versions), "lin@v1", "--no-log")
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["study", "complete/pruned/failed"]
    assert lines[1].split()[:2] == ["lin@v2", "2/0/0"] and lines[2].split()[:2] == ["lin", "1/0/0"]
    assert "lin@v2: version 2 of 2 of study 'lin' (the current one)" in lines
    assert "lin: version 1 of 2 of study 'lin' (current: 'lin@v2')" in lines

    rows = json.loads(_ok("compare", "lin", "lin@v1", "--json"))  # logs the comparison too
    assert [(r["study"], r["version"], r["versions"]) for r in rows] == [
        ("lin@v2", 2, 2),
        ("lin", 1, 2),
    ]
    assert all(r["test_score"] is not None for r in rows)  # a copied best: its original's score
