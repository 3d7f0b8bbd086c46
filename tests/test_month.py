"""A month in minutes: benchmarks/month.py's nights, with every check it makes, must pass.

Six nights of one scheduled experiment on a CSV that grows nightly: a range widened (night 2), a
choice added (night 3: a new version), two jobs at once (night 4), a job killed with ``kill -9``
mid-trial (night 5) and the next night started at once with a choice removed (night 6: a third
version, whose job must end the killed trial of the second). The script checks that every
night but the killed one exits 0, nothing is left RUNNING, every trial has its run once under its
own job's parent, the lineage is one chain, and @champion moved only with a recorded paired test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

SCRIPT = ROOT / "benchmarks" / "month.py"


@pytest.mark.slow
def test_a_month_of_nights_keeps_every_promise(tmp_path: Path) -> None:
    out = tmp_path / "month.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    events = ["widen=2", "choice=3", "together=4", "kill=5", "drop=6"]
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--nights", "6", "--workdir", str(tmp_path / "work")]
        + [f"--event={e}" for e in events]
        + ["--out", str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    report = json.loads(out.read_text())
    assert all(c["ok"] for c in report["checks"].values()), report["checks"]
    nights = report["nights_detail"]
    assert [j["rc"] for j in nights[3]] == [0, 0]  # two jobs started together
    assert nights[4][0]["killed"] and nights[4][0]["rc"] == -9
    assert "continuing version 1" in nights[1][0]["changes"][0]  # a range: the same study
    assert "continuing in version 2 ('nightly@v2')" in nights[2][0]["changes"][0]
    assert [v["name"] for v in report["versions"]] == ["nightly", "nightly@v2", "nightly@v3"]
    assert report["parents"] == 7 and report["model_versions"] >= 6
    # Night 1 was a smoke run (benchmarks/month.py's "weak" event): a paired test moved it on.
    assert report["champion_moves"], report["checks"]
