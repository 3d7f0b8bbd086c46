"""Smoke test of benchmarks/growth.py: it runs, reports its windows, and logs every trial.

A benchmark is not a test: nothing here is timed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import ROOT, mlflow_runs, parents_and_children

SCRIPT = ROOT / "benchmarks" / "growth.py"


def _growth(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    """Run growth.py with ``args`` into ``tmp_path``; its process and JSON report."""
    out = tmp_path / "growth.json"
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID")
    }
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *args]
        + ["--workdir", str(tmp_path / "work"), "--out", str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc, json.loads(out.read_text())


def test_growth_benchmark_smoke(tmp_path: Path) -> None:
    proc, report = _growth(tmp_path, "--trials", "12", "--epochs", "3")
    assert "| trial |" in proc.stdout

    assert report["status"] == "FINISHED"
    assert report["trials_run"] == 12
    assert sum(report["counts"].values()) == 12
    assert set(report["counts"]) <= {"complete", "pruned", "not_learning"}
    assert report["counts"].get("complete", 0) >= 1
    assert len(report["per_trial_s"]) == 12
    windows = report["windows"]
    assert windows and windows[0]["trial"] == 10
    for w in windows:
        first, last = w["trials"]
        assert 1 <= first <= last <= 12
        assert w["median_s"] > 0
        assert set(w["parts_mean_s"]) == {"sampler", "pruner", "storage", "mlflow", "other"}
    assert report["ratio_last_to_first"] is not None
    assert set(report["timings"]) >= {"setup", "build", "fit", "study_tracking", "finish"}

    parents, children = parents_and_children(mlflow_runs(tmp_path / "work", "growth"))
    assert len(parents) == 1
    assert len(children) == 12
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    assert all(c.data.tags["tuning.role"] == "trial" for c in children)
    assert sorted(int(c.data.tags["trial_number"]) for c in children) == list(range(12))
    for child in children:
        assert child.info.status == "FINISHED"
        assert child.data.tags["state"] in ("complete", "pruned", "not_learning")
        assert "learning_rate" in child.data.params
        assert "val_accuracy" in child.data.metrics


def test_growth_benchmark_preloaded(tmp_path: Path) -> None:
    """``--preload N``: the job resumes a study of N synthetic trials and adds its own."""
    proc, report = _growth(tmp_path, "--preload", "60", "--trials", "4", "--epochs", "3")
    assert "preloaded 60 synthetic trials" in proc.stdout
    assert report["preload"] == 60 and report["trials_run"] == 4
    # 60 finished and one enqueued (synthetic_study's WAITING trial, which the job runs first)
    assert "resumed with 61 trials" in " ".join(report["job_lines"])
    assert sum(report["counts"].values()) == 64  # the study's trials: 60 + this job's 4
