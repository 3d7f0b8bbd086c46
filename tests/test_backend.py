"""The Keras backend: chosen before keras is imported, recorded on the parent run, served on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tuning import backend
from tuning.cli import app
from tuning.errors import ConfigError

CHOOSE = (
    "import sys; from tuning import backend; print(backend.select(sys.argv[1])); "
    "import keras; print(keras.backend.backend())"
)


def _choose(requested: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run backend.select in a fresh process (keras not yet imported) with ``env``."""
    clean = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    return subprocess.run(
        [sys.executable, "-c", CHOOSE, requested],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_auto_picks_the_fastest_installed_and_keras_follows() -> None:
    expected = next(b for b in backend.FASTEST_FIRST if backend.installed(b))
    out = _choose("auto")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [expected, expected]


def test_keras_backend_set_by_the_user_wins_over_auto() -> None:
    out = _choose("auto", KERAS_BACKEND="tensorflow")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["tensorflow", "tensorflow"]


def test_training_backend_by_name_wins_over_the_environment() -> None:
    out = _choose("tensorflow", KERAS_BACKEND="jax")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["tensorflow", "tensorflow"]


def test_live_keras_keeps_its_backend_and_refuses_another() -> None:
    import keras

    live = keras.backend.backend()
    assert backend.select("auto") == live
    other = next(b for b in backend.BACKENDS if b != live)
    with pytest.raises(ConfigError, match=rf"Keras already runs on '{live}'.*not '{other}'"):
        backend.select(other, source="x.yaml")


def test_a_backend_not_installed_is_one_line_naming_what_to_install(
    make_experiment, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = backend.installed
    monkeypatch.setattr(backend, "installed", lambda name: name != "torch" and real(name))
    monkeypatch.setattr(backend, "current", lambda: None)  # as before keras is imported
    path = make_experiment(training__backend="torch")
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "training.backend" in lines[0] and "'torch' is not installed" in lines[0]
    assert "pip install torch" in lines[0] and str(path) in lines[0]
    assert not Path("optuna.db").exists() and not Path("mlflow.db").exists()


def test_an_unknown_keras_backend_in_the_environment_is_a_user_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(backend, "current", lambda: None)
    monkeypatch.setenv("KERAS_BACKEND", "theano")
    with pytest.raises(ConfigError, match=r"KERAS_BACKEND.*'theano'.*expected one of jax"):
        backend.select("auto")


def test_pip_requirements_name_the_live_backend() -> None:
    import keras

    reqs = backend.pip_requirements()
    names = [r.split("==")[0] for r in reqs]
    assert names == ["keras", "numpy", "pandas", keras.backend.backend()]


def test_the_job_records_and_shows_its_backend(make_experiment) -> None:
    import keras
    import mlflow

    path = make_experiment()
    result = CliRunner().invoke(app, ["run", str(path), "--json"])
    assert result.exit_code == 0, result.output
    job = json.loads(result.stdout)
    live = keras.backend.backend()
    client = mlflow.MlflowClient(job["tracking_uri"])
    tags = client.get_run(job["parent_run_id"]).data.tags
    assert tags["backend"] == live
    assert tags["backend_version"] not in ("", "unknown")
    assert tags["devices"]
    shown = CliRunner().invoke(app, ["show", "tiny"])
    assert f"backend: {live} (2 trials)" in shown.stdout
    best = CliRunner().invoke(app, ["best", "tiny"])
    assert any(line.split() == ["backend", live] for line in best.stdout.splitlines())
    # The logged model serves on the backend it was trained on.
    model_dir = Path(
        mlflow.artifacts.download_artifacts(job["model_uri"], tracking_uri=job["tracking_uri"])
    )
    assert (model_dir / "code" / "keras_backend.py").read_text().strip() == f"BACKEND = {live!r}"
    reqs = (model_dir / "requirements.txt").read_text()
    assert f"{live}==" in reqs


def test_custom_gradients_of_finished_models_are_dropped() -> None:
    """TensorFlow's leak: each traced tf.custom_gradient stays in a global registry, holding
    its graph, until release() drops it between trials."""
    tf = pytest.importorskip("tensorflow")
    from tensorflow.python.framework import ops

    @tf.custom_gradient
    def double(x):  # noqa: ANN001, ANN202
        return 2 * x, lambda dy: 2 * dy

    registry = ops._gradient_registry._registry
    before = {k for k in registry if str(k).startswith("CustomGradient-")}
    for width in (3, 4, 5):  # three traces, as three models' train steps would make
        tf.function(double).get_concrete_function(tf.TensorSpec([width]))
    traced = {k for k in registry if str(k).startswith("CustomGradient-")} - before
    assert len(traced) == 3
    assert backend._drop_custom_gradients() >= 3
    assert not any(str(k).startswith("CustomGradient-") for k in registry)


KEEP_TF_OUT = """
import sys, tempfile
from tuning import backend
backend.select("jax")
backend.import_tensorflow_quietly()
import keras
keras.utils.set_random_seed(1)
model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
model.compile(loss="mse")
import numpy as np
model.fit(np.ones((4, 3)), np.zeros((4, 2)), verbose=0)
path = tempfile.mkdtemp() + "/m.keras"
model.save(path)
keras.models.load_model(path)
print("tensorflow" in sys.modules)
"""


def test_on_jax_keras_seeds_and_saves_without_importing_tensorflow() -> None:
    """Keras imports TensorFlow wherever it is installed only to seed it and to check objects
    when saving: 4-6 s and 460 MB a process on JAX, for nothing."""
    pytest.importorskip("jax")
    clean = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    out = subprocess.run(
        [sys.executable, "-c", KEEP_TF_OUT],
        env=clean,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "False", out.stdout


def test_the_job_layer_imports_no_framework_before_the_backend_is_chosen() -> None:
    """``tuning.job`` picks the backend from the experiment, so nothing it imports at module
    level may import Keras (which fixes its backend, and loads TensorFlow outside the quiet
    import, at import)."""
    code = (
        "import sys, tuning.cli, tuning.job, tuning.workers\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'keras', 'tensorflow', 'jax'}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
