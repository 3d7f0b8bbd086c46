"""Several objectives and limits through a real job: Optuna directions and constraints, a
configuration over the n_params limit refused before it trains, the job's model chosen by the
stated rule among feasible ones, and every objective and ``feasible`` on each MLflow run."""

from __future__ import annotations

import mlflow
import optuna
import pytest
from conftest import by_trial_number, mlflow_runs, run_json

from tuning.config import load_experiment
from tuning.job import run_job

SPACE = {
    "n_hidden": {"type": "int", "low": 1, "high": 2},
    "n_neurons": {"type": "int", "low": 8, "high": 256, "log": True},
    "learning_rate": {"type": "float", "low": 3e-3, "high": 1e-2, "log": True},
    "batch_size": 128,
}
LIMIT = 3000  # digits: 64 inputs, 10 classes; one layer of n neurons has 75n + 10 parameters


def _job(make_experiment, sampler, second, **changes):
    path = make_experiment(
        space=SPACE,
        objective=[
            {"metric": "val_accuracy", "direction": "maximize"},
            {"metric": second, "direction": "minimize"},
        ],
        limits={"n_params": LIMIT},
        study__sampler=sampler,
        study__n_trials=7,
        study__pruner={"type": "median", "n_startup_trials": 2, "n_warmup_steps": 1},
        tracking__register_as="mo-mlp",
        **changes,
    )
    exp = load_experiment(path)
    lines: list[str] = []
    result = run_job(exp, say=lines.append)
    study = optuna.load_study(study_name=exp.study_name, storage=exp.study.storage)
    return exp, result, study, lines


def _check_job(exp, result, study, workdir, second: str) -> None:
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert study.user_attrs["tuning.objectives"] == [
        {"metric": "val_accuracy", "direction": "maximize"},
        {"metric": second, "direction": "minimize"},
    ]
    assert study.user_attrs["tuning.limits"] == {"n_params": LIMIT}
    trials = study.trials
    refused = [t for t in trials if "refused before training" in t.user_attrs.get("reason", "")]
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert refused and done, [(t.state, t.user_attrs.get("reason")) for t in trials]
    for t in refused:  # PRUNED, untrained, with its violation for the sampler to learn from
        assert t.state == optuna.trial.TrialState.PRUNED
        assert t.user_attrs["epochs_trained"] == 0 and t.user_attrs["feasible"] is False
        assert t.constraints == {"n_params": t.user_attrs["n_params"] - LIMIT}
        assert t.constraints["n_params"] > 0
    for t in done:  # trained within the limit: values in the objectives' order
        assert len(t.values) == 2 and t.user_attrs["feasible"] is True
        assert t.user_attrs["n_params"] <= LIMIT and t.constraints["n_params"] <= 0
        assert t.values[1] == pytest.approx(t.user_attrs[second])
    # MLflow: every objective under its name, and feasible, on each trial's run
    runs = by_trial_number(mlflow_runs(workdir, exp.mlflow_experiment, role="trial"))
    for t in done:
        run = runs[t.number]
        assert run.data.tags["feasible"] == "true"
        assert run.data.metrics["val_accuracy"] == pytest.approx(t.values[0])
        assert run.data.metrics[second] == pytest.approx(t.values[1])
        assert run.data.metrics["n_params"] == t.user_attrs["n_params"]
    for t in refused:
        run = runs[t.number]
        assert run.data.tags["feasible"] == "false" and run.data.tags["state"] == "pruned"
        assert "refused before training" in run.data.tags["reason"]
    # The job's model: feasible, chosen by the stated rule (selection.json, tags, registry)
    parent = mlflow.MlflowClient(result.tracking_uri).get_run(result.parent_run_id)
    assert parent.data.tags["selection_rule"].startswith(f"lowest {exp.prefer} among feasible")
    picked = run_json(workdir, result.parent_run_id, "selection.json")
    chosen = next(c for c in picked["candidates"] if c["label"] == picked["chosen"])
    ref = next(c for c in picked["candidates"] if c["label"] == picked["reference"])
    assert chosen["figures"]["n_params"] <= LIMIT
    assert chosen["figures"][exp.prefer] <= ref["figures"][exp.prefer]
    lower = [c for c in picked["candidates"]
             if c["figures"][exp.prefer] < chosen["figures"][exp.prefer]]  # fmt: skip
    # every candidate lower on the preferred measure was tested and found worse beyond noise:
    # the paired test (p < alpha) or a shortfall over one standard error (selection.within_se)
    for c in lower:
        assert c["p_value"] is not None and c["gap_se"] is not None, picked
        assert c["p_value"] < 0.05 or c["gap"] > c["gap_se"], picked
    if chosen is not ref:
        assert chosen["p_value"] >= 0.05 and chosen["gap"] <= chosen["gap_se"], picked
    version = mlflow.MlflowClient(result.tracking_uri).get_model_version("mo-mlp", "1")
    assert float(version.tags["n_params"]) <= LIMIT and "selection_rule" in version.tags
    assert result.champion is not None and result.champion.promoted


def test_tpe_job_with_two_objectives_and_a_limit(workdir, make_experiment) -> None:
    exp, result, study, lines = _job(
        make_experiment, {"type": "tpe", "n_startup_trials": 3}, "n_params",
        study__recheck_top=2,
    )  # fmt: skip
    _check_job(exp, result, study, workdir, "n_params")
    assert any(line.startswith("recheck (val_accuracy") for line in lines), lines
    # the re-check records every objective of each re-run, not only the primary
    for row in run_json(workdir, result.parent_run_id, "recheck.json"):
        for figures in row["figures"]:
            assert {"val_accuracy", "n_params"} <= set(figures)
            assert figures["n_params"] <= LIMIT
    assert any(line.startswith("model: ") for line in lines), lines


def test_nsga2_job_on_latency_with_an_ensemble_that_must_meet_the_limit(
    workdir, make_experiment
) -> None:
    exp, result, study, lines = _job(
        make_experiment, {"type": "nsga2", "population_size": 4}, "latency_ms",
        study__ensemble_top=3,
    )  # fmt: skip
    parent = mlflow.MlflowClient(result.tracking_uri).get_run(result.parent_run_id)
    assert parent.data.params["study.sampler.type"] == "nsga2"
    _check_job(exp, result, study, workdir, "latency_ms")
    for t in study.trials:
        if t.state == optuna.trial.TrialState.COMPLETE:
            assert 0 < t.user_attrs["latency_ms"] < 100
    # an average counts as one model: it is the job's model only where it meets the limit
    version = mlflow.MlflowClient(result.tracking_uri).get_model_version("mo-mlp", "1")
    assert float(version.tags["n_params"]) <= LIMIT


def test_the_average_within_the_limit_is_a_candidate_of_the_rule(workdir, make_experiment) -> None:
    """The best average within the limit (counted as one model) is one more candidate of the
    selection rule: where it scores better than the best single model, it is the reference
    that smaller models must not fall short of; with ``within_se: 0`` a smaller one is kept only
    where it is at least as good on the validation rows."""
    exp, result, study, lines = _job(
        make_experiment, {"type": "tpe", "n_startup_trials": 3}, "n_params",
        study__ensemble_top=3, selection__within_se=0,
        training__max_epochs=2,
    )  # fmt: skip
    ens = run_json(workdir, result.parent_run_id, "ensemble.json")
    picked = run_json(workdir, result.parent_run_id, "selection.json")
    parent = mlflow.MlflowClient(result.tracking_uri).get_run(result.parent_run_id)
    # Two-epoch models on digits are weak and diverse: an average beats the best alone.
    assert len(ens["chosen"]) > 1, ens
    label = "+".join(ens["chosen"])
    mean = next(c for c in picked["candidates"] if c["label"] == label)
    assert mean["figures"]["n_params"] <= LIMIT  # measured on the average: the members' sum
    single = [c for c in picked["candidates"] if "+" not in c["label"]]
    best_single = max(c["value"] for c in single)
    assert mean["value"] > best_single, picked  # the average beats every single model...
    assert picked["reference"] == label, picked  # ...so it is the rule's reference
    chosen = next(c for c in picked["candidates"] if c["label"] == picked["chosen"])
    if chosen is not mean:  # a smaller single model, no worse on the validation rows
        assert chosen["figures"]["n_params"] < mean["figures"]["n_params"]
        assert chosen["gap"] <= 0 and chosen["p_value"] >= 0.05, picked
        assert not parent.data.tags.get("model_members"), parent.data.tags
    else:
        assert parent.data.tags["model_members"] == ",".join(ens["chosen"])
        assert parent.data.metrics["job_best_value"] == pytest.approx(mean["value"])
    assert parent.data.tags["model_label"] == picked["chosen"]
    version = mlflow.MlflowClient(result.tracking_uri).get_model_version("mo-mlp", "1")
    assert float(version.tags["n_params"]) <= LIMIT


def test_nsga2_sampler_is_named_with_its_population() -> None:
    from tuning.config.schema import SamplerConfig
    from tuning.engines.optuna import make_sampler

    sampler = make_sampler(SamplerConfig(type="nsga2", population_size=6), seed=3)
    assert isinstance(sampler, optuna.samplers.NSGAIISampler)
    assert sampler._population_size == 6


def test_median_rule_on_the_primary_prunes_a_multi_objective_trial(make_experiment) -> None:
    """Optuna's pruners refuse several objectives (``trial.report`` raises): the engine's own
    median rule compares the trial's best primary value so far with the median of finished
    trials' at the same epoch."""
    import types

    from tuning.engines.optuna import CURVE, OptunaEngine

    exp = load_experiment(
        make_experiment(
            objective=[
                {"metric": "val_accuracy", "direction": "maximize"},
                {"metric": "n_params", "direction": "minimize"},
            ],
            study__pruner={"type": "median", "n_startup_trials": 3, "n_warmup_steps": 1},
        )
    )
    study = optuna.create_study(directions=["maximize", "minimize"])
    with pytest.raises(NotImplementedError):  # why the rule exists
        study.ask().report(0.5, 0)
    engine = OptunaEngine(types.SimpleNamespace(exp=exp))  # type: ignore[arg-type]
    engine.study = study
    trial = study.ask()
    for curve in ([0.5, 0.7, 0.8], [0.6, 0.8], [0.4, 0.9, 0.95]):
        study.add_trial(
            optuna.trial.create_trial(values=[curve[-1], 100], user_attrs={CURVE: curve})
        )
    rule = engine._median_rule
    assert not rule(trial, [0.1])  # warm-up: epoch 0 never prunes
    assert rule(trial, [0.1, 0.75])  # best 0.75 < median of (0.7, 0.8, 0.9) at epoch 1
    assert not rule(trial, [0.1, 0.85])  # 0.85 beats the median 0.8
    assert not rule(trial, [0.1, 0.2, 0.3])  # epoch 2: only two trials reached it (< 3)
    exp.study.pruner.type = "none"
    assert not rule(trial, [0.1, 0.75])


def test_one_objective_with_a_limit(workdir, make_experiment) -> None:
    """A limit alone: a single-direction study whose best (Optuna's too) is feasible."""
    path = make_experiment(
        space=SPACE,
        limits={"n_params": LIMIT},
        study__n_trials=5,
        study__sampler={"type": "tpe", "n_startup_trials": 2},
    )
    exp = load_experiment(path)
    result = run_job(exp, say=lambda _: None)
    study = optuna.load_study(study_name=exp.study_name, storage=exp.study.storage)
    assert len(study.directions) == 1
    refused = [t for t in study.trials if t.constraints.get("n_params", 0) > 0]
    assert refused and all(t.state == optuna.trial.TrialState.PRUNED for t in refused)
    best = study.best_trial  # Optuna's best among feasible trials (its constraints)
    assert best.number == result.best_trial and best.user_attrs["feasible"] is True
    assert best.user_attrs["n_params"] <= LIMIT
    parent = mlflow.MlflowClient(result.tracking_uri).get_run(result.parent_run_id)
    assert parent.data.tags["selection_rule"] == "best feasible by val_accuracy"
