"""Issue 25, point 6: does a search for accuracy *and* size find a much smaller model that is as
good as the single-objective search's?

Per seed, two jobs of this tool, each as a user runs it (``tuning run``, a fresh process, its own
working folder, its stores there), with the same wall-clock budget (``--set study.timeout=``):

- ``single``: the shipped ``experiments/fashion_mnist.yaml`` (validation accuracy, the
  stretch-pants space: 3-5 layers of 256-512, its model possibly an average of its best five);
- ``multi``: ``experiments/fashion_mnist_small.yaml`` (validation accuracy up and ``n_params``
  down, at most 100,000 parameters, a space of 1-4 layers of 16-512), its model the one the job
  chose on its feasible front.

Then, in this one process, both jobs' logged models (``mlflow.pyfunc``, as a user loads them) are
scored on the same test rows by the same functions: test accuracy, ``n_params`` (Keras'
``count_params``), ``latency_ms`` (:func:`latency_ms`: per row, a batch of 256 test rows, two
untimed calls then the median of 20 timed ``predict_on_batch``, the definition of
``tuning.measures``), and the paired test on the test rows (exact two-sided McNemar on the rows
exactly one model gets right: reported, never used to choose a model), plus the multi job's front
size. Per seed and then the median and range over seeds; the goal: a model at least 3 x smaller
or faster (median ratio) within noise of the single's test accuracy (the median gap is no larger
than the larger of the single's half range over seeds and the median paired standard error x 2).

Run (about 2 x budget per seed, on an otherwise idle machine)::

    python benchmarks/trade_offs.py --budget 600 --seeds 1 2 3 \
        --out benchmarks/results/trade_offs-600.json

``--multi EXP`` runs another multi-objective experiment; ``--reuse-single W`` takes the single
jobs of an earlier run's workdir ``W`` (same seeds, same conditions wanted) instead of rerunning
them.

``--smoke``: the ``digits`` data (1,797 8x8 images), 2 epochs, ``--max-trials`` trials per job
(default 3 there), to check the harness in seconds per job; ``--jobs-only`` / ``--score-only``
split the two halves (the scoring reads the jobs' JSON in ``--workdir``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SINGLE = ROOT / "experiments" / "fashion_mnist.yaml"
MULTI = ROOT / "experiments" / "fashion_mnist_small.yaml"
LATENCY_BATCH, LATENCY_WARMUP, LATENCY_REPEATS = 256, 2, 20
GOAL_RATIO = 3.0


# --- the jobs ----------------------------------------------------------------------------------


def job_command(
    exp: Path, *, budget: float, seed: int, smoke: bool, max_trials: int | None
) -> list[str]:
    """``tuning run`` as a user types it, the budget and seed given with ``--set``."""
    sets = [f"study.timeout={budget:g}", f"study.seed={seed}"]
    if smoke:
        sets += ["dataset.name=digits", "dataset.validation=0.2", "training.max_epochs=2"]
        sets += ["study.sampler.n_startup_trials=2"]
    if max_trials:
        sets.append(f"study.n_trials={max_trials}")
    cmd = [sys.executable, "-m", "tuning", "run", str(exp), "--json"]
    cmd += ["--storage", "sqlite:///optuna.db", "--tracking-uri", "sqlite:///mlflow.db"]
    for s in sets:
        cmd += ["--set", s]
    return cmd


def run_job(name: str, exp: Path, folder: Path, *, budget: float, seed: int, args: Any) -> dict:
    """One job in its own process and folder; its JSON summary, the command and wall seconds.
    A job that overruns its budget by far (2 x + 5 min: the job's end, model logging, test
    scores come after the budget) is killed and recorded as such."""
    folder.mkdir(parents=True, exist_ok=True)
    cmd = job_command(exp, budget=budget, seed=seed, smoke=args.smoke, max_trials=args.max_trials)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "TUNING_STORAGE"):
        env.pop(var, None)  # the job's stores are the folder's, whatever the shell says
    started = time.perf_counter()
    out: dict[str, Any] = {"name": name, "experiment": str(exp.relative_to(ROOT)), "command": cmd}
    try:
        proc = subprocess.run(
            cmd, cwd=folder, env=env, capture_output=True, text=True,
            timeout=2 * budget + 300, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired as e:
        out.update(error=f"killed after {e.timeout:.0f} s", wall_seconds=e.timeout)
        return out
    out["wall_seconds"] = round(time.perf_counter() - started, 1)
    (folder / "job.out").write_text(proc.stdout)
    (folder / "job.err").write_text(proc.stderr)
    if proc.returncode != 0:
        out["error"] = f"exit {proc.returncode}: {proc.stderr.strip()[-600:]}"
        return out
    job = json.loads(proc.stdout)
    out.update(
        {
            k: job.get(k)
            for k in ("model_uri", "tracking_uri", "study_name", "best_trial", "best_value")
        }
    )
    out["counts"] = job.get("counts")
    out["trials_run"] = job.get("trials_run")
    out["job_test_scores"] = job.get("test_scores")
    return out


# --- scoring both models in one process --------------------------------------------------------


def latency_ms(model: Any, x: Any) -> float:
    """Prediction time per row in ms: a batch of ``LATENCY_BATCH`` rows (repeated when fewer),
    ``LATENCY_WARMUP`` untimed ``predict_on_batch`` calls, then the median of
    ``LATENCY_REPEATS`` timed ones, divided by the rows. The same function for both models."""
    import numpy as np

    reps = -(-LATENCY_BATCH // len(x))
    batch = np.concatenate([x] * reps)[:LATENCY_BATCH]
    for _ in range(LATENCY_WARMUP):
        model.predict_on_batch(batch)
    times = []
    for _ in range(LATENCY_REPEATS):
        t0 = time.perf_counter()
        model.predict_on_batch(batch)
        times.append(time.perf_counter() - t0)
    return 1000.0 * statistics.median(times) / LATENCY_BATCH


def mcnemar(truth: Any, a: Any, b: Any) -> dict[str, float]:
    """Exact two-sided McNemar of models ``a`` and ``b`` on the same rows: the rows only ``a``
    gets right, only ``b``, the p-value, and the paired accuracy difference ``b - a`` with its
    standard error. Reported, never used to choose a model."""
    import numpy as np
    from scipy import stats

    ra, rb = np.asarray(a) == np.asarray(truth), np.asarray(b) == np.asarray(truth)
    only_a, only_b, n = int(np.sum(ra & ~rb)), int(np.sum(~ra & rb)), len(ra)
    p = stats.binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    diff = (only_b - only_a) / n
    se = float(np.sqrt(max(only_a + only_b - (only_b - only_a) ** 2 / n, 0.0)) / n)
    return {
        "only_single": only_a,
        "only_multi": only_b,
        "p_value": float(p),
        "diff": diff,
        "se": se,
    }


def test_rows(smoke: bool) -> tuple[Any, Any]:
    """The test split both experiments use (the same dataset settings, so the same rows)."""
    from tuning.config import load_experiment
    from tuning.data import load_dataset

    overrides: list[tuple[str, Any]] = []
    if smoke:
        overrides = [("dataset.name", "digits"), ("dataset.validation", 0.2)]
    ds = load_experiment(SINGLE, overrides=overrides).dataset
    data = load_dataset(ds.name, validation=ds.validation, test=ds.test, seed=ds.seed)
    if data.kind == "tabular":  # raw rows as the logged model takes them: named columns
        import pandas as pd

        return pd.DataFrame(data.x_test, columns=data.feature_names), data.y_test
    return data.x_test, data.y_test


def score_model(model_uri: str, tracking_uri: str, x: Any, y: Any) -> dict[str, Any]:
    """A job's logged model as a user loads it: its test predictions (labels), accuracy,
    parameters and latency."""
    import mlflow
    import numpy as np

    from tuning.data.encoding import prepare

    mlflow.set_tracking_uri(tracking_uri)
    loaded = mlflow.pyfunc.load_model(model_uri)
    labels = np.asarray(loaded.predict(x)).reshape(-1)
    inner = loaded.unwrap_python_model()
    keras_model, meta = inner.model, inner.meta
    truth = np.asarray(y).reshape(-1)
    if meta.get("labels"):  # class index -> the label value the model predicts
        truth = np.asarray(meta["labels"])[truth.astype(int)]
    return {
        "predictions": labels,
        "truth": truth,
        "test_accuracy": float(np.mean(labels == truth)),
        "n_params": int(keras_model.count_params()),
        "latency_ms": latency_ms(keras_model, prepare(meta, x)),
    }


def front_size(folder: Path, study_name: str) -> dict[str, Any]:
    """The multi job's front: its size and feasible trials."""
    import optuna

    from tuning import pareto

    study = optuna.load_study(study_name=study_name, storage=f"sqlite:///{folder / 'optuna.db'}")
    if not pareto.is_multi(study):
        return {"front_size": None, "feasible": None}
    front = pareto.Front.of(study)
    return {"front_size": len(front.front), "feasible": front.feasible, "trials": len(front.rows)}


def compare(single: dict[str, Any], multi: dict[str, Any]) -> dict[str, Any]:
    """One seed's figures from the two scored models (``score_model``'s dicts)."""
    test = mcnemar(single["truth"], single["predictions"], multi["predictions"])
    arrays = ("predictions", "truth")
    return {
        "single": {k: v for k, v in single.items() if k not in arrays},
        "multi": {k: v for k, v in multi.items() if k not in arrays},
        "test_accuracy_multi_minus_single": multi["test_accuracy"] - single["test_accuracy"],
        "n_params_ratio": single["n_params"] / max(multi["n_params"], 1),
        "latency_ratio": single["latency_ms"] / max(multi["latency_ms"], 1e-12),
        "mcnemar": test,
    }


def median_range(values: list[float]) -> dict[str, float] | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarize(seeds: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Medians and ranges over seeds, and the goal."""
    done = [s for s in seeds.values() if "error" not in s]

    def col(*path: str) -> list[float]:
        out = []
        for s in done:
            v: Any = s
            for p in path:
                v = v.get(p) if isinstance(v, dict) else None
            out.append(v)
        return out

    summary: dict[str, Any] = {
        "seeds": len(seeds),
        "scored": len(done),
        "single_test_accuracy": median_range(col("single", "test_accuracy")),
        "multi_test_accuracy": median_range(col("multi", "test_accuracy")),
        "single_n_params": median_range(col("single", "n_params")),
        "multi_n_params": median_range(col("multi", "n_params")),
        "single_latency_ms": median_range(col("single", "latency_ms")),
        "multi_latency_ms": median_range(col("multi", "latency_ms")),
        "n_params_ratio": median_range(col("n_params_ratio")),
        "latency_ratio": median_range(col("latency_ratio")),
        "test_accuracy_multi_minus_single": median_range(col("test_accuracy_multi_minus_single")),
        "mcnemar_p": median_range(col("mcnemar", "p_value")),
        "front_size": median_range(col("front", "front_size")),
    }
    if not done:
        return summary
    single_acc = summary["single_test_accuracy"]
    gap = -summary["test_accuracy_multi_minus_single"]["median"]
    noise = max(
        (single_acc["max"] - single_acc["min"]) / 2,
        2 * statistics.median(col("mcnemar", "se")),
    )
    ratio = max(summary["n_params_ratio"]["median"], summary["latency_ratio"]["median"])
    summary["goal"] = {
        "smaller_or_faster_ratio": ratio,
        "accuracy_gap": gap,
        "noise": noise,
        "met": bool(ratio >= GOAL_RATIO and gap <= noise),
        "rule": f"median n_params or latency ratio >= {GOAL_RATIO:g} and the median test "
        "accuracy gap <= max(half the single's range over seeds, 2 x median paired SE)",
    }
    return summary


# --- the harness -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=600, help="seconds per job")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--smoke", action="store_true", help="digits, 2 epochs, 3 trials")
    parser.add_argument("--max-trials", type=int, default=None, help="trials per job at most")
    parser.add_argument("--workdir", type=Path, default=ROOT / ".bench" / "trade_offs")
    parser.add_argument("--out", type=Path, default=None, help="the JSON summary")
    parser.add_argument("--single", type=Path, default=SINGLE)
    parser.add_argument("--multi", type=Path, default=MULTI)
    parser.add_argument(
        "--reuse-single",
        type=Path,
        default=None,
        help="an earlier run's WORKDIR: its single jobs (same seeds) are scored, not rerun",
    )
    parser.add_argument("--jobs-only", action="store_true")
    parser.add_argument("--score-only", action="store_true")
    args = parser.parse_args(argv)
    if args.smoke and args.max_trials is None:
        args.max_trials = 3
    args.workdir.mkdir(parents=True, exist_ok=True)

    jobs_file = args.workdir / "jobs.json"
    jobs: dict[str, dict[str, Any]] = {}
    if args.score_only:
        jobs = json.loads(jobs_file.read_text())
    else:
        if args.reuse_single is not None:
            earlier = json.loads((args.reuse_single / "jobs.json").read_text())
            jobs.update({f"{s}/single": earlier[f"{s}/single"] for s in args.seeds})
        for seed in args.seeds:
            for name, exp in (("single", args.single.resolve()), ("multi", args.multi.resolve())):
                if f"{seed}/{name}" in jobs:
                    continue
                folder = args.workdir / f"seed{seed}" / name
                print(f"seed {seed}: {name} job ({exp.name}, {args.budget:g} s) ...", flush=True)
                jobs[f"{seed}/{name}"] = r = run_job(
                    name, exp, folder, budget=args.budget, seed=seed, args=args
                )
                print(f"  {r.get('error') or 'done'} in {r.get('wall_seconds')} s", flush=True)
                jobs_file.write_text(json.dumps(jobs, indent=2, default=str))
    if args.jobs_only:
        return 0

    x_test, y_test = test_rows(args.smoke)
    seeds: dict[str, dict[str, Any]] = {}
    for seed in args.seeds:
        single, multi = jobs.get(f"{seed}/single", {}), jobs.get(f"{seed}/multi", {})
        errors = [f"{j['name']}: {j['error']}" for j in (single, multi) if j.get("error")]
        missing = [n for n, j in (("single", single), ("multi", multi)) if not j.get("model_uri")]
        if errors or missing:
            seeds[str(seed)] = {"error": "; ".join(errors) or f"no model from {missing}"}
            continue
        a = score_model(single["model_uri"], single["tracking_uri"], x_test, y_test)
        b = score_model(multi["model_uri"], multi["tracking_uri"], x_test, y_test)
        row = compare(a, b)
        row["front"] = front_size(args.workdir / f"seed{seed}" / "multi", multi["study_name"])
        row["jobs"] = {n: {k: j.get(k) for k in ("wall_seconds", "counts", "best_trial")}
                       for n, j in (("single", single), ("multi", multi))}  # fmt: skip
        seeds[str(seed)] = row
        print(
            f"seed {seed}: single {row['single']['test_accuracy']:.4f} "
            f"({row['single']['n_params']:,} params, {row['single']['latency_ms']:.4f} ms/row); "
            f"multi {row['multi']['test_accuracy']:.4f} ({row['multi']['n_params']:,} params, "
            f"{row['multi']['latency_ms']:.4f} ms/row); x{row['n_params_ratio']:.1f} smaller, "
            f"x{row['latency_ratio']:.1f} faster; McNemar p={row['mcnemar']['p_value']:.3g}; "
            f"front {row['front'].get('front_size')}",
            flush=True,
        )
    result = {
        "budget": args.budget,
        "smoke": args.smoke,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "latency": {"batch": LATENCY_BATCH, "warmup": LATENCY_WARMUP, "repeats": LATENCY_REPEATS},
        "per_seed": seeds,
        "summary": summarize(seeds),
    }
    text = json.dumps(result, indent=2, default=str)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(json.dumps(result["summary"], indent=2, default=str))
    return 0 if all("error" not in s for s in seeds.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
