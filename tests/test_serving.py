"""The logged model serves raw rows: `mlflow models predict` on a CSV equals pyfunc's predict."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
from conftest import experiment_id
from typer.testing import CliRunner

from tuning.cli import app


def test_mlflow_models_predict_on_a_csv_of_raw_rows(make_experiment, workdir: Path) -> None:
    exp = make_experiment("serve", dataset={"name": "wine"}, study__n_trials=1)
    assert CliRunner().invoke(app, ["run", str(exp)]).exit_code == 0
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    exp_id = experiment_id(workdir, "serve")
    (model,) = mlflow.search_logged_models(experiment_ids=[exp_id], output_format="list")
    from sklearn.datasets import load_wine

    wine = load_wine(as_frame=True)
    rows = wine.data.iloc[::30].reset_index(drop=True)  # raw, unscaled, original column names
    rows.to_csv(workdir / "rows.csv", index=False)
    expected = mlflow.pyfunc.load_model(f"models:/{model.model_id}").predict(rows)
    assert expected.shape == (len(rows),) and set(expected) <= {0, 1, 2}

    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": uri,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "mlflow", "models", "predict", "-m", f"models:/{model.model_id}",
         "-i", "rows.csv", "-t", "csv", "-o", "out.json", "--env-manager", "local"],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    served = json.loads((workdir / "out.json").read_text())["predictions"]
    assert np.array_equal(np.asarray(served), expected)
    assert "type hint" not in proc.stderr.lower()  # MLflow's advice is kept out of the way
