"""Keeps benchmarks/peers.py from rotting: its smoke mode runs every contestant on tiny data.

No timing is asserted: the benchmark's figures live in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, require_fashion_mnist

SCRIPT = ROOT / "benchmarks" / "peers.py"
# The smoke mode trains on a slice of Fashion-MNIST from Debian's files (no download here).


@pytest.fixture
def needs_fashion() -> None:
    require_fashion_mnist()


def _run(tmp_path: Path, only: str, budget: int, backends: tuple[str, ...] = ("jax",)) -> dict:
    """The smoke mode with each contestant ended after 2 trials: the harness runs end to end
    in seconds per contestant, rather than spending each one's whole budget."""
    out = tmp_path / "peers.json"
    cmd = [sys.executable, str(SCRIPT), "--smoke", "--budget", str(budget), "--only", only]
    cmd += ["--max-trials", "2"]
    for backend in backends:
        cmd += ["--backend", backend]
    cmd += ["--workdir", str(tmp_path / "work"), "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return json.loads(out.read_text())


def _check_contestant(r: dict, budget: int) -> None:
    assert "error" not in r, r
    assert r["finished"] + r["pruned"] >= 1
    assert 0 < r["best_val_accuracy"] <= 1 and 0 < r["test_accuracy"] <= 1
    assert r["epochs_trained"] >= 1 and 0 < r["fit_seconds"] < r["search_seconds"]
    assert 0 < r["not_fit_fraction"] < 1
    assert all(t["end"] <= budget for t in r["trials"])  # only trials within the budget count


@pytest.mark.usefixtures("needs_fashion")
@pytest.mark.slow
def test_smoke_every_contestant(tmp_path: Path) -> None:
    names = "kt_random,kt_hyperband,optuna_loop,tool_book,tool_stretch,throughput"
    # 90 s: on a slow 2-core machine a contestant's first trial ended after a 20 s budget
    # (imports and the first compile take most of it; seen running .ci/run on such a machine),
    # and `pytest -m slow` runs this beside the other slow tests (-n auto). --max-trials ends
    # each contestant long before its budget, so the budget costs nothing where it is not needed.
    summary = _run(tmp_path, names, budget=90, backends=("jax", "tensorflow"))
    for backend in ("jax", "tensorflow"):
        for name in names.split(",")[:-1]:
            _check_contestant(summary["results"][f"{name}@{backend}"], 90)
        throughput = summary["results"][f"throughput@{backend}"]
        assert throughput["backend"] == backend
        assert throughput["batch_32_jit_auto"]["samples_per_second"] > 0
        assert summary["goals"][backend]["best_tool_test_minus_best_peer_test"] is not None
        tool = summary["results"][f"tool_book@{backend}"]
        assert set(tool["tool_timings"]) >= {"setup", "build", "compile", "fit", "study_tracking"}
        assert "trials_per_hour_ratio_tool_book_vs_optuna_loop" in summary["goals"][backend]
    ratios = summary["goals"]["jax_vs_tensorflow"]
    assert ratios["tool_book_trials_per_hour_jax_over_tf"] > 0
    assert ratios["throughput_batch_32_jit_auto_jax_over_tf"] > 0
