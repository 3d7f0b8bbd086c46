"""Keeps benchmarks/trade_offs.py from rotting: its figures on known predictions, and its smoke
mode end to end (two `tuning run` jobs on the digits data, both models scored in one process).

No timing or accuracy goal is asserted: the benchmark's figures live in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT

SCRIPT = ROOT / "benchmarks" / "trade_offs.py"
_spec = importlib.util.spec_from_file_location("trade_offs", SCRIPT)
assert _spec and _spec.loader
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def _multi_objective_config() -> bool:
    """Whether this checkout's configuration takes several objectives (issue 25's config)."""
    from tuning.config import load_experiment
    from tuning.errors import ConfigError

    try:
        return len(load_experiment(bench.MULTI).objectives) == 2
    except (ConfigError, AttributeError):
        return False


def test_paired_figures_and_goal() -> None:
    truth = np.array([0, 1, 2, 3] * 25)
    single = truth.copy()
    multi = truth.copy()
    single[:6] = 9  # single wrong on rows 0-5
    multi[4:12] = 9  # multi wrong on rows 4-11: only single right on 6-11, only multi on 0-3
    test = bench.mcnemar(truth, single, multi)
    assert (test["only_single"], test["only_multi"]) == (6, 4)
    assert test["diff"] == pytest.approx(-0.02)
    assert test["p_value"] == pytest.approx(0.7539, abs=1e-4)  # binomial(6 of 10), two-sided

    def scored(pred: np.ndarray, n_params: int, latency: float) -> dict:
        return {
            "predictions": pred,
            "truth": truth,
            "test_accuracy": float(np.mean(pred == truth)),
            "n_params": n_params,
            "latency_ms": latency,
        }

    row = bench.compare(scored(single, 400_000, 0.04), scored(multi, 80_000, 0.01))
    assert row["n_params_ratio"] == 5 and row["latency_ratio"] == pytest.approx(4)
    assert row["test_accuracy_multi_minus_single"] == pytest.approx(-0.02)
    assert "predictions" not in row["single"] and row["multi"]["n_params"] == 80_000

    seeds = {"1": {**row, "front": {"front_size": 4}}, "2": {**row, "front": {"front_size": 6}}}
    summary = bench.summarize({**seeds, "3": {"error": "killed"}})
    assert summary["scored"] == 2 and summary["front_size"] == {"median": 5, "min": 4, "max": 6}
    goal = summary["goal"]
    # gap 0.02 against noise max(0, 2 x SE 0.0316) = 0.063: within noise, 5 x smaller
    assert goal["smaller_or_faster_ratio"] == 5 and goal["met"] is True
    assert goal["noise"] == pytest.approx(2 * test["se"])


def _smoke(tmp_path: Path, *extra: str) -> dict:
    out = tmp_path / "trade_offs.json"
    cmd = [sys.executable, str(SCRIPT), "--smoke", "--budget", "120", "--seeds", "1"]
    cmd += ["--max-trials", "2", "--workdir", str(tmp_path / "work"), "--out", str(out), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text())


def _check_seed(row: dict) -> None:
    assert "error" not in row, row
    for name in ("single", "multi"):
        assert 0 < row[name]["test_accuracy"] <= 1
        assert row[name]["n_params"] > 0 and row[name]["latency_ms"] > 0
        assert row["jobs"][name]["counts"]["complete"] >= 1
    assert 0 <= row["mcnemar"]["p_value"] <= 1


@pytest.mark.slow
def test_smoke_scores_two_jobs_models(tmp_path: Path) -> None:
    # Two single-objective jobs (the quickstart's space as the "multi"): the jobs, the loading
    # and the scoring of both models in one process, whatever the multi-objective job needs.
    # Slow (two jobs, ~3 min on a busy 2-core machine): the next test is the default suite's.
    result = _smoke(tmp_path, "--multi", str(ROOT / "experiments" / "quickstart.yaml"))
    row = result["per_seed"]["1"]
    _check_seed(row)
    assert row["front"]["front_size"] is None  # one objective: no front
    assert row["n_params_ratio"] == pytest.approx(
        row["single"]["n_params"] / row["multi"]["n_params"]
    )
    assert result["summary"]["scored"] == 1 and "goal" in result["summary"]


@pytest.mark.skipif(
    not _multi_objective_config(),
    reason="experiments/fashion_mnist_small.yaml needs the multi-objective config (issue 25)",
)
def test_smoke_single_against_multi_objective(tmp_path: Path) -> None:
    result = _smoke(tmp_path)
    row = result["per_seed"]["1"]
    _check_seed(row)
    assert row["front"]["front_size"] >= 1
    assert row["multi"]["n_params"] <= 100_000  # the experiment's limit
