"""A multi-objective study's front: feasibility, Optuna's non-dominated sort, the table, the plot,
the hypervolume, and the parent run's front reports, on a real SQLite-stored Optuna study."""

from __future__ import annotations

from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.study._constrained_optimization import _CONSTRAINTS_KEY

from tuning import pareto, report
from tuning.objective import Objective

ACC = Objective("val_accuracy", "maximize")
LAT = Objective("latency_ms", "minimize")
LIMITS = {"n_params": 100_000.0}

# trial: (val_accuracy, latency_ms, n_params); n_params over 100k is infeasible
POINTS = [
    (0.90, 10.0, 90_000),  # 0 front
    (0.80, 5.0, 20_000),  # 1 front
    (0.85, 12.0, 50_000),  # 2 dominated by 0
    (0.95, 30.0, 400_000),  # 3 best accuracy but infeasible
    (0.70, 2.0, 5_000),  # 4 front (fastest)
    (0.70, 6.0, 6_000),  # 5 dominated by 1 and 4
]


def make_study(storage: str, name: str = "mo", points=POINTS) -> optuna.Study:
    """A two-objective study as the job writes it (the contract): values, figures, feasible,
    constraints in sorted(limits) order, objectives and limits in the study's user attrs."""
    study = optuna.create_study(
        storage=storage, study_name=name, directions=["maximize", "minimize"]
    )
    study.set_user_attr(
        pareto.OBJECTIVES_ATTR,
        [{"metric": o.metric, "direction": o.direction} for o in (ACC, LAT)],
    )
    study.set_user_attr(pareto.LIMITS_ATTR, LIMITS)
    for acc, lat, n in points:
        constraints = [n - LIMITS[k] for k in sorted(LIMITS)]
        study.add_trial(
            optuna.trial.create_trial(
                values=[acc, lat],
                params={"units": n // 1000},
                distributions={"units": optuna.distributions.IntDistribution(1, 1000)},
                user_attrs={"n_params": n, "latency_ms": lat, "feasible": constraints[0] <= 0},
                system_attrs={_CONSTRAINTS_KEY: constraints},
            )
        )
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL))
    study.add_trial(  # refused before training: over the n_params limit once built
        optuna.trial.create_trial(
            state=optuna.trial.TrialState.PRUNED, system_attrs={_CONSTRAINTS_KEY: [50_000.0]}
        )
    )
    return study


@pytest.fixture
def study(tmp_path: Path) -> optuna.Study:
    return make_study(f"sqlite:///{tmp_path / 'optuna.db'}")


def test_front_feasible_and_best_primary(study: optuna.Study) -> None:
    assert pareto.is_multi(study)
    assert pareto.objectives_of(study) == (ACC, LAT)
    assert pareto.limits_of(study) == LIMITS
    trials = study.get_trials()
    assert [t.number for t in pareto.front_of(trials, (ACC, LAT))] == [0, 1, 4]
    assert not pareto.is_feasible(trials[3]) and pareto.is_feasible(trials[2])
    # Optuna's own best_trials also drops the infeasible trial (the constraints system attr)
    assert sorted(t.number for t in study.best_trials) == [0, 1, 4]
    # the front's top: best primary among the feasible, not the infeasible 0.95
    assert pareto.best_primary(trials, (ACC, LAT)).number == 0  # type: ignore[union-attr]
    # the same trials with no limits: trial 3 is on the front and its top
    loose = [
        optuna.trial.create_trial(values=t.values, user_attrs={"feasible": True})
        for t in trials
        if t.values
    ]
    for i, t in enumerate(loose):
        t.number = i
    assert [t.number for t in pareto.front_of(loose, (ACC, LAT))] == [0, 1, 3, 4]
    assert pareto.best_primary(loose, (ACC, LAT)).number == 3  # type: ignore[union-attr]


def test_feasible_attr_alone_marks_infeasible(tmp_path: Path) -> None:
    study = optuna.create_study(
        storage=f"sqlite:///{tmp_path / 'o.db'}", directions=["maximize", "minimize"]
    )
    study.add_trial(optuna.trial.create_trial(values=[0.9, 1.0], user_attrs={"feasible": False}))
    study.add_trial(optuna.trial.create_trial(values=[0.5, 2.0]))
    objectives = pareto.objectives_of(study)  # no user attrs: value_0, value_1
    assert [o.metric for o in objectives] == ["value_0", "value_1"]
    assert [t.number for t in pareto.front_of(study.trials, objectives)] == [1]


def test_table_lines_and_best_feasible(study: optuna.Study) -> None:
    front = pareto.Front.of(study)
    assert front.front == [0, 1, 4] and front.best_primary == 0 and front.feasible == 5
    assert len(front.rows) == 6  # the failed and the refused trial have no row
    assert front.refused == 1
    row3 = next(r for r in front.rows if r["trial"] == 3)
    assert row3 == {
        "trial": 3,
        "val_accuracy": 0.95,
        "latency_ms": 30.0,
        "n_params": 400_000,
        "feasible": False,
        "on_front": False,
    }
    assert front.best_feasible() == {"val_accuracy": 0.90, "latency_ms": 2.0}
    lines = front.lines()
    assert "limits: n_params <= 100,000" in lines[0]
    body = [line for line in lines[2:-1]]
    assert [line.split()[1] if line.startswith("*") else line.split()[0] for line in body] == [
        "0",
        "1",
        "4",
    ]
    assert body[0].startswith("*")
    assert lines[-1] == (
        "3 on the front (* its best val_accuracy), 2 feasible off it, 1 infeasible, "
        "1 refused before training (over a limit)"
    )


def test_hypervolume_known_value_and_shared_reference(study: optuna.Study) -> None:
    # boxes to (0.5, 20): 0.4*10 + 0.3*15 - 0.3*10 = 5.5
    hv = pareto.hypervolume([(0.9, 10.0), (0.8, 5.0)], (ACC, LAT), [0.5, 20.0])
    assert hv == pytest.approx(5.5)
    # a point beyond the reference adds nothing; an empty front has none
    assert pareto.hypervolume([(0.9, 10.0), (0.8, 5.0), (0.4, 1.0)], (ACC, LAT), [0.5, 20.0]) == (
        pytest.approx(5.5)
    )
    assert pareto.hypervolume([], (ACC, LAT), [0.5, 20.0]) == 0.0
    # shared reference: worst values over both fronts pushed 10 % of the spread further
    ref = pareto.reference_point([[(0.9, 10.0)], [(0.7, 2.0)]], (ACC, LAT))
    assert ref == pytest.approx([0.68, 10.8])
    # a limit on an objective is its reference coordinate
    assert pareto.reference_point([[(0.9, 10.0)]], (ACC, LAT), {"latency_ms": 50})[1] == 50
    with pytest.raises(ValueError, match="no front"):
        pareto.reference_point([[], []], (ACC, LAT))


def test_front_reports_and_multi_safe_readers(study: optuna.Study, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    paths = report.write_job_reports(study, histories={}, metric="val_accuracy", out_dir=out)
    names = {p.name for p in paths}
    assert {"trials.csv", "pareto_front.csv", "pareto_front.png", "pareto_front.html"} <= names
    assert "optimization_history.png" not in names  # a single-objective plot
    front = pd.read_csv(out / "pareto_front.csv")
    assert sorted(front[front.on_front].trial) == [0, 1, 4]
    assert list(front[~front.feasible].trial) == [3]
    assert (out / "pareto_front.png").stat().st_size > 10_000
    trials = pd.read_csv(out / "trials.csv")
    assert list(trials.columns[:5]) == ["number", "state", "value", "val_accuracy", "latency_ms"]

    text = report.summary_markdown(
        study, metric="val_accuracy", job_trials=7, test_scores={}, seconds=3
    )
    assert "**Front: 3 trial(s)**" in text and "best val_accuracy: **trial 0**" in text
    assert report.results_table(study)[1].split()[0] == "0"  # feasible, by the primary
    (version,) = report.version_summaries(study._storage, "mo")
    assert version["best_trial"] == 0 and version["best_value"] == 0.9


def test_show_best_compare_status_print_fronts(workdir: Path) -> None:
    import json

    from conftest import mlflow_client
    from typer.testing import CliRunner

    from tuning.cli import app

    cli = CliRunner()
    storage = "sqlite:///optuna.db"
    make_study(storage, "mo")
    # a second study: one point that beats trial 4 on accuracy at the same latency
    make_study(storage, "mo2", [*POINTS[:3], (0.75, 2.0, 4_000)])
    shown = cli.invoke(app, ["show", "mo"])
    assert shown.exit_code == 0, shown.output
    assert "(maximize val_accuracy, minimize latency_ms)" in shown.output
    assert "3 on the front" in shown.output and "1 infeasible" in shown.output
    data = json.loads(cli.invoke(app, ["show", "mo", "--json"]).stdout)
    assert data["front"]["trials"] == [0, 1, 4] and data["limits"] == LIMITS
    assert data["best"]["number"] == 0 and data["best"]["values"]["latency_ms"] == 10.0

    best = cli.invoke(app, ["best", "mo"])
    assert best.exit_code == 0, best.output
    assert (
        "best val_accuracy on the front: trial 0: val_accuracy 0.9, latency_ms 10" in best.output
    )
    assert "units" in best.output  # its hyperparameters

    status = cli.invoke(app, ["status"])
    assert status.exit_code == 0, status.output
    assert "mo: " in status.output and "best 0.9000 (#0)" in status.output

    compared = cli.invoke(app, ["compare", "mo", "mo2", "--json", "--no-log"])
    assert compared.exit_code == 0, compared.output
    a, b = json.loads(compared.stdout)
    assert (a["front_size"], b["front_size"]) == (3, 3)
    assert a["best_latency_ms"] == b["best_latency_ms"] == 2.0
    assert a["reference"] == b["reference"]
    assert b["hypervolume"] > a["hypervolume"] > 0  # mo2's last point dominates mo's trial 4

    # logged as an MLflow run, like the single-objective comparison
    (workdir / "mlflow.db").touch()
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    mlflow_client(workdir).search_experiments()  # creates the store's tables
    logged = cli.invoke(app, ["compare", "mo", "mo2", "--tracking-uri", uri])
    assert logged.exit_code == 0, logged.output
    assert "hypervolume" in logged.output and "fronts.png" in logged.output
    run_id = logged.output.split("logged to MLflow run ")[1].split()[0]
    run = mlflow_client(workdir).get_run(run_id)
    assert run.data.metrics["front_size.mo"] == 3
    assert run.data.metrics["hypervolume.mo2"] == pytest.approx(b["hypervolume"])

    # fronts and one objective do not compare
    optuna.create_study(storage=storage, study_name="one").add_trial(
        optuna.trial.create_trial(value=0.5)
    )
    mixed = cli.invoke(app, ["compare", "mo", "one", "--no-log"])
    assert mixed.exit_code != 0 and "do not compare" in mixed.output
