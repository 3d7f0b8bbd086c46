"""A top-k ensemble: the job's best models averaged into one model, where it scores better."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import mlflow
import numpy as np
import pytest
from conftest import mlflow_runs, run_json
from typer.testing import CliRunner

from tuning.cli import app
from tuning.data import load_dataset
from tuning.data.encoding import load_keras
from tuning.ensemble import Member, average, choose
from tuning.model import build_model
from tuning.train import fit

runner = CliRunner()


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _trained(data, tmp: Path, name: str, seed: int, epochs: int, wrong: bool = False) -> Path:
    import keras

    if wrong:  # learns every label shifted by one: confident and wrong
        data = dataclasses.replace(
            data, y_train=(data.y_train + 1) % 10, y_valid=(data.y_valid + 1) % 10
        )
    keras.utils.set_random_seed(seed)
    model = build_model({"n_hidden": 1, "n_neurons": 16, "learning_rate": 0.01}, data=data)
    if epochs:
        fit(model, data, monitor="val_accuracy", direction="maximize", batch_size=64,
            max_epochs=epochs, patience=epochs)  # fmt: skip
    path = tmp / f"{name}.keras"
    model.save(path)
    return path


def _accuracy(probabilities: np.ndarray, y: np.ndarray) -> float:
    return float((probabilities.argmax(axis=1) == y).mean())


def test_average_is_one_model_predicting_the_members_mean(digits, tmp_path: Path) -> None:
    paths = [_trained(digits, tmp_path, f"m{i}", seed=i, epochs=2) for i in range(3)]
    model = average(paths, data=digits, loss="auto", output_activation="auto")
    model.save(tmp_path / "ensemble.keras")
    loaded = load_keras(str(tmp_path / "ensemble.keras"))  # one file, as the pyfunc loads it
    x = digits.x_valid
    mean = np.mean([load_keras(str(p)).predict(x, verbose=0) for p in paths], axis=0)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), mean, atol=1e-6)


def test_choose_scores_each_top_n_and_keeps_one_when_averaging_hurts(
    digits, tmp_path: Path
) -> None:
    good = _trained(digits, tmp_path, "good", seed=0, epochs=8)
    wrong = _trained(digits, tmp_path, "wrong", seed=1, epochs=8, wrong=True)
    members = [Member("1", 1, 0.95, good), Member("2", 2, 0.10, wrong)]
    choice = choose(members, data=digits, metric="val_accuracy", direction="maximize", top=5)
    probabilities = [load_keras(str(p)).predict(digits.x_valid, verbose=0) for p in (good, wrong)]
    expected = [
        _accuracy(probabilities[0], digits.y_valid),
        _accuracy((probabilities[0] + probabilities[1]) / 2, digits.y_valid),
    ]
    assert choice.scores == pytest.approx(expected, abs=1e-6)  # recomputed from predictions
    assert expected[1] < expected[0]  # the wrong model drags the average down...
    assert [m.label for m in choice.members] == ["1"]  # ...so the best alone is kept
    assert choice.value == pytest.approx(expected[0])
    # top=1: no average is even scored
    assert len(choose(members, data=digits, metric="val_accuracy", direction="maximize",
                      top=1).scores) == 1  # fmt: skip


def test_a_job_logs_the_ensemble_it_chose_and_it_serves_raw_rows(
    make_experiment, workdir: Path
) -> None:
    exp = make_experiment(
        "ens", study__n_trials=4, study__recheck_top=2, study__ensemble_top=4,
        training__max_epochs=2,
    )  # fmt: skip
    result = runner.invoke(app, ["run", str(exp)])
    assert result.exit_code == 0, result.output
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    parent = mlflow_runs(workdir, "ens", role="job")[0]
    table = run_json(workdir, parent.info.run_id, "ensemble.json")
    chosen = table["chosen"]
    # Two-epoch models on digits are weak and diverse: averaging them helps here.
    assert len(chosen) > 1, table
    assert parent.data.tags["model_members"] == ",".join(chosen)
    assert table["scores"][len(chosen) - 1] == max(table["scores"])
    assert [m["label"] for m in table["ranked"]][: len(chosen)] == chosen
    # The logged model is that average: served on raw rows, it scores what the job chose by.
    mlflow.set_tracking_uri(uri)
    model_uri = parent.data.tags.get("model_uri") or next(
        line.rsplit("; ", 1)[1] for line in result.stdout.splitlines()
        if line.startswith("this job's best model")
    )  # fmt: skip
    served = mlflow.pyfunc.load_model(model_uri)
    data = load_dataset("digits")
    labels = np.asarray(served.predict(data.validation_rows())).ravel().astype(int)
    assert float((labels == data.y_valid).mean()) == pytest.approx(
        table["scores"][len(chosen) - 1]
    )
    assert parent.data.metrics["job_best_value"] == pytest.approx(table["scores"][len(chosen) - 1])
    assert "single_test_accuracy" in parent.data.metrics and "test_accuracy" in parent.data.metrics
    assert f"an average of {len(chosen)}" in result.stdout


def test_choose_takes_the_best_members_that_fit_together(digits, tmp_path: Path) -> None:
    """With limits, members are taken best first, each only where the group still fits: a
    member that would put the average over a limit is passed over for the next best."""
    paths = [_trained(digits, tmp_path, f"m{i}", seed=i, epochs=2) for i in range(3)]
    members = [Member(str(i), i, 0.9 - i / 100, p) for i, p in enumerate(paths)]
    size = {"0": 600, "1": 500, "2": 300}  # n_params, say; the limit: 1,000 together

    def fits(group) -> bool:
        return sum(size[m.label] for m in group) <= 1000

    choice = choose(members, data=digits, metric="val_accuracy", direction="maximize", top=5,
                    fits=fits)  # fmt: skip
    assert [m.label for m in choice.ranked] == ["0", "2"]  # 0 + 1 would be 1,100
    assert len(choice.scores) == 2
    unlimited = choose(members, data=digits, metric="val_accuracy", direction="maximize", top=5)
    assert [m.label for m in unlimited.ranked] == ["0", "1", "2"]


def test_choose_tries_the_smaller_members_when_the_best_fills_the_limit(
    digits, tmp_path: Path
) -> None:
    """A best model that fills a limit alone leaves no room beside it: the group that leaves it
    out is scored too, and its average is kept where it scores better on the validation rows."""
    weak = _trained(digits, tmp_path, "big", seed=0, epochs=0)  # untrained: near chance
    small = [_trained(digits, tmp_path, f"s{i}", seed=i + 1, epochs=8) for i in range(3)]
    members = [Member("big", 0, 0.99, weak)] + [
        Member(f"s{i}", i + 1, 0.9 - i / 100, p) for i, p in enumerate(small)
    ]
    size = {"big": 1000, "s0": 300, "s1": 300, "s2": 300}

    def fits(group) -> bool:
        return sum(size[m.label] for m in group) <= 1000

    choice = choose(members, data=digits, metric="val_accuracy", direction="maximize", top=5,
                    fits=fits)  # fmt: skip
    assert [list(g) for g, _ in choice.tried] == [["big"], ["s0", "s1", "s2"]]
    assert choice.skipped == 1 and choice.n >= 2
    assert [m.label for m in choice.members] == ["s0", "s1", "s2"][: choice.n]
    assert choice.value > choice.tried[0][1][0]  # better than the best alone, recomputed
    assert fits(choice.members)
    # Where the limits cut nothing, only the best-first group is scored (as without limits).
    roomy = choose(members, data=digits, metric="val_accuracy", direction="maximize", top=5,
                   fits=lambda group: True)  # fmt: skip
    assert len(roomy.tried) == 1 and roomy.skipped == 0
    # The best alone stays the choice where the smaller ones do not beat it averaged.
    strong = _trained(digits, tmp_path, "strong", seed=9, epochs=30)
    members[0] = Member("big", 0, 0.99, strong)
    weak_small = [Member(f"w{i}", i + 1, 0.5, weak) for i in range(3)]
    size.update({f"w{i}": 300 for i in range(3)})
    kept = choose([members[0], *weak_small], data=digits, metric="val_accuracy",
                  direction="maximize", top=5, fits=fits)  # fmt: skip
    assert kept.n == 1 and kept.skipped == 0 and kept.members[0].label == "big"
