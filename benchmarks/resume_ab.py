"""Resume instead of restart (issue 26), A/B: epochs trained per configuration and thrown away.

``job`` runs one tiny budgeted job on digits in a fresh temporary folder, with
``study.continue_trials`` on (``after``) or off (``before``), and prints one JSON line: the parent
run's epoch counts (``epochs_trained_total``, ``epochs_continued``, ``epochs_thrown_away``,
``epochs_rechecks``, ``configs_evaluated``, the state files' cost) and the job's best value::

    python benchmarks/resume_ab.py job after optuna        # 60 s budget, re-check of the top 2
    python benchmarks/resume_ab.py job before keras_tuner  # Hyperband, max_epochs 9

``save`` times saving one trial's state (last weights, Adam's variables, best weights) for a
Fashion-MNIST-sized MLP (784-300-100-10, 266 610 parameters), as the runner does after a cut
trial, and prints the seconds and bytes::

    python benchmarks/resume_ab.py save
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from experiment_files import TINY_SPACE  # noqa: E402

os.environ.setdefault("TUNING_OFFLINE", "1")

SPACE = TINY_SPACE  # the tests' tiny space (benchmarks/experiment_files.py)
COUNTS = (
    "epochs_trained_total", "epochs_continued", "epochs_thrown_away", "epochs_rechecks",
    "configs_evaluated", "states_saved", "state_save_seconds", "state_bytes", "job_best_value",
)  # fmt: skip


def job(arm: str, engine: str) -> dict[str, object]:
    """One job in a fresh folder; its parent run's counts."""
    from mlflow.tracking import MlflowClient

    from tuning.config import load_experiment
    from tuning.job import run_job

    study: dict[str, object] = {
        "storage": "sqlite:///optuna.db", "pruner": "none", "engine": engine,
        "continue_trials": arm == "after",
    }  # fmt: skip
    training: dict[str, object] = {"batch_size": 128}
    if engine == "optuna":
        study.update(n_trials=50, timeout=60, min_configs=3, recheck_top=2)
        training.update(max_epochs=5000, early_stopping={"patience": 5000})
    else:
        study.update(tuner="hyperband", n_trials=30, recheck_top=0)
        training.update(max_epochs=9, early_stopping={"patience": 20})
    exp = {
        "name": f"resume-{arm}", "dataset": {"name": "digits"}, "search_space": "space.yaml",
        "objective": {"metric": "val_accuracy", "direction": "maximize"}, "study": study,
        "training": training, "tracking": {"uri": "sqlite:///mlflow.db"},
    }  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        os.chdir(folder)
        Path("space.yaml").write_text(yaml.safe_dump(SPACE))
        Path("exp.yaml").write_text(yaml.safe_dump(exp))
        result = run_job(load_experiment("exp.yaml"), say=lambda _: None)
        metrics = MlflowClient(result.tracking_uri).get_run(result.parent_run_id).data.metrics
    counts = {k: metrics.get(k) for k in COUNTS}
    configs = counts["configs_evaluated"] or 1
    return {
        "arm": arm, "engine": engine, "seconds": round(result.seconds, 1), **counts,
        "epochs_per_config": round(float(counts["epochs_trained_total"] or 0) / configs, 1),
        "thrown_away_share": round(
            float(counts["epochs_thrown_away"] or 0)
            / max(float(counts["epochs_trained_total"] or 0), 1), 3
        ),
    }  # fmt: skip


def save_cost(repeats: int = 5) -> dict[str, object]:
    """Seconds and bytes of one saved state of a Fashion-MNIST-sized MLP."""
    import keras
    import numpy as np

    from tuning.config import load_experiment
    from tuning.data import Dataset
    from tuning.train import fit
    from tuning.trial import StateKeeper

    rng = np.random.default_rng(0)
    x = rng.random((2048, 784), dtype=np.float32)
    y = rng.integers(0, 10, 2048)
    data = Dataset(
        name="synthetic", task="multiclass", kind="tabular", x_train=x[:1536], y_train=y[:1536],
        x_valid=x[1536:1792], y_valid=y[1536:1792], x_test=x[1792:], y_test=y[1792:],
        n_classes=10,
    )  # fmt: skip
    model = keras.Sequential(
        [keras.Input((784,)), keras.layers.Dense(300, "relu"), keras.layers.Dense(100, "relu"),
         keras.layers.Dense(10, "softmax")]
    )  # fmt: skip
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    result = fit(
        model, data, monitor="val_accuracy", direction="maximize", batch_size=128,
        max_epochs=2, patience=5, keep_last=True,
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "space.yaml").write_text(yaml.safe_dump(SPACE))
        Path(folder, "exp.yaml").write_text(
            yaml.safe_dump({"name": "x", "dataset": {"name": "digits"},
                            "search_space": "space.yaml"})
        )  # fmt: skip
        keeper = StateKeeper(load_experiment(str(Path(folder, "exp.yaml"))), Path(folder, "s"))
        seconds = []
        for number in range(repeats):
            started = time.perf_counter()
            keeper.save(model, result, number=number, params={}, max_epochs=2, run_id="", top=None)
            seconds.append(time.perf_counter() - started)
        size = keeper.saved[0].path.stat().st_size
    return {
        "backend": keras.backend.backend(), "params": int(model.count_params()),
        "save_seconds_median": round(sorted(seconds)[len(seconds) // 2], 4),
        "bytes": size,
    }  # fmt: skip


if __name__ == "__main__":
    from tuning import backend

    backend.select("auto")
    if sys.argv[1] == "save":
        print(json.dumps(save_cost()))
    else:
        print(json.dumps(job(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "optuna")))
