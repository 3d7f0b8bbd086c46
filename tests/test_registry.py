"""The registry: each job's best model becomes a version; @champion moves only to a better one."""

from __future__ import annotations

from pathlib import Path

import mlflow
from conftest import mlflow_client
from typer.testing import CliRunner

from tuning.cli import app


def _run(exp: Path, *args: str) -> str:
    result = CliRunner().invoke(app, ["run", str(exp), *args])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_champion_moves_only_to_a_better_model(make_experiment, workdir: Path) -> None:
    exp = make_experiment(
        "champ",
        study__n_trials=1,
        training__max_epochs=1,
        tracking={"uri": "sqlite:///mlflow.db", "register_as": "digits-mlp"},
        space={"n_hidden": 1, "n_neurons": 16, "learning_rate": 0.001},
    )
    out = _run(exp)
    assert "registered digits-mlp v1, now @champion (first version of this model)" in out
    out = _run(exp, "--set", "training.max_epochs=30", "--set", "search_space.learning_rate=0.01")
    assert "registered digits-mlp v2, now @champion (val_accuracy" in out
    out = _run(exp)  # a weak model again: it stays a challenger
    assert "registered digits-mlp v3 as a challenger (val_accuracy" in out
    # Other validation rows: both models are scored on today's rows by the paired test.
    out = _run(exp, "--set", "dataset.seed=7", "--set", "training.max_epochs=30")
    assert "digits-mlp v4" in out and "data changed since champion v2 was scored" in out

    client = mlflow_client(workdir)
    moved = client.get_model_version("digits-mlp", "4").tags["champion_decision"]
    moved_to_4 = moved.startswith("moved")
    champion = client.get_model_version_by_alias("digits-mlp", "champion")
    assert str(champion.version) == ("4" if moved_to_4 else "2")
    roles = {
        str(v.version): v.tags["role"] for v in client.search_model_versions("name='digits-mlp'")
    }
    assert roles["1"] == "former champion" and roles["3"] == "challenger"
    assert roles["2"] == ("former champion" if moved_to_4 else "champion")
    # Every version after the first says how it was compared with the champion of its time.
    tags = {str(v.version): v.tags for v in client.search_model_versions("name='digits-mlp'")}
    assert "champion_test" not in tags["1"]
    assert tags["2"]["champion_test"] == "mcnemar_exact"  # a trained model vs an untrained one
    assert float(tags["2"]["champion_p_value"]) < 0.05
    assert tags["2"]["champion_decision"].startswith("moved: val_accuracy")
    assert tags["3"]["champion_decision"].startswith("stayed: ")
    assert tags["4"]["champion_test"] == "mcnemar_exact" and tags["4"]["champion_p_value"] != ""
    assert "both scored on today's validation rows" in tags["4"]["champion_decision"]
    assert champion.tags["metric"] == "val_accuracy"
    # Another split is another data version of the study (tuning.lineage).
    assert champion.tags["study"] == ("champ@v2" if moved_to_4 else "champ")
    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model("models:/digits-mlp@champion")
    from sklearn.datasets import load_digits

    digits = load_digits(as_frame=True)
    assert model.predict(digits.data.iloc[:10]).shape == (10,)


def test_register_as_without_a_logged_model_is_refused(make_experiment, workdir: Path) -> None:
    exp = make_experiment(
        "noreg", tracking={"uri": "sqlite:///mlflow.db", "register_as": "x", "log_models": "none"}
    )
    result = CliRunner().invoke(app, ["run", str(exp)])
    assert result.exit_code == 2
    assert "tracking.register_as: register_as needs a logged model" in result.stderr


def test_a_rerun_with_other_weights_leaves_the_champion(make_experiment, workdir: Path) -> None:
    """The same configuration trained from other initial weights scores differently by
    noise alone: the paired test keeps @champion where it was."""
    exp = make_experiment(
        "noise",
        study__n_trials=1,
        training__max_epochs=30,
        tracking={"uri": "sqlite:///mlflow.db", "register_as": "noisy"},
        space={"n_hidden": 1, "n_neurons": 32, "learning_rate": 0.01},
    )
    _run(exp)
    outs = [_run(exp, "--set", f"study.seed={seed}") for seed in (1, 2, 3)]
    # At least one rerun scored higher by chance: its value alone would have moved @champion.
    assert any("(within noise)" in out for out in outs), outs
    client = mlflow_client(workdir)
    assert str(client.get_model_version_by_alias("noisy", "champion").version) == "1"
    for version in ("2", "3", "4"):
        tags = client.get_model_version("noisy", version).tags
        assert tags["champion_test"] == "mcnemar_exact"
        assert 0 < float(tags["champion_p_value"]) <= 1
        assert tags["champion_decision"].startswith("stayed: val_accuracy"), tags
