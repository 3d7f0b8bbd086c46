"""Side by side on Fashion-MNIST: this tool against KerasTuner and a hand-written Optuna loop.

Every contestant gets the same data (the book's split: 55,000 / 5,000 / 10,000), the same seed
(42) and the same wall-clock budget, counted from the start of its own fresh Python process, so
imports, data loading and setup are paid from the budget by everyone. They run one after another
in one invocation, on an otherwise idle machine:

- ``kt_random``, ``kt_hyperband``: KerasTuner as Hands-On ML (3rd ed., ch. 10) uses it: the book's
  ``build_model`` (0-8 hidden layers, 16-256 neurons, learning rate 1e-4-1e-2 log, SGD or Adam),
  ``RandomSearch(max_trials=...)`` with ``epochs=10``, and ``Hyperband(max_epochs=10, factor=3)``
  with ``EarlyStopping(patience=2)``. Both are left to run until the budget.
- ``optuna_loop``: the documented Optuna + optuna-integration loop (optuna-examples'
  ``keras_integration.py`` plus ``MLflowCallback``): TPE, ``MedianPruner(n_startup_trials=2)``,
  ``KerasPruningCallback``, data loaded and ``clear_session`` in the objective, 10 epochs, the
  validation score of the last epoch returned, an MLflow run per trial in SQLite.
- ``tool``: this tool as a user runs it: the shipped ``experiments/fashion_mnist.yaml``.
- ``tool_book``: this tool with the same space (``benchmarks/spaces/book.yaml``).
- ``tool_stretch``: this tool with the stretch-pants space.
- ``throughput``: the raw training speed of ``model.fit`` (the book's 300-100 MLP), the physical
  limit on trials per hour.

The budget is a deadline: at the first epoch end past it, the harness stops a peer's training (a
Keras callback), and the tool stops its own (``study.timeout``). Only trials that ended within the
budget count. Reported per contestant: trials finished and pruned, best validation accuracy, the
test accuracy of that trial's model, the time to reach 88 % validation accuracy, trials per hour,
and time not spent in ``model.fit`` as a fraction of the budget (plus, for the tool, its own study
and tracking time).

Run (about 6 x the budget per backend)::

    python benchmarks/peers.py --budget 600 --out benchmarks/results/peers-600.json
    python benchmarks/peers.py --budget 300 --backend jax --backend tensorflow \
        --only tool_book,tool_stretch,throughput --out benchmarks/results/backends-300.json

Each ``--backend`` (default: jax and tensorflow) runs every contestant again with
``KERAS_BACKEND`` set, in the same invocation; results are keyed ``name@backend`` and the goals
include the ratio of trials per hour and the difference in test accuracy, JAX against TensorFlow.

``--seeds 1 2 3`` runs every contestant once per seed (seed by seed, each contestant in turn)
and reports, per contestant, the median and range of test accuracy, with issue 14's goals (the
tool's median >= 0.895, its worst seed above every peer's median)::

    python benchmarks/peers.py --budget 600 --backend jax --seeds 1 2 3 \
        --only kt_random,optuna_loop,tool --out benchmarks/results/seeds-600.json

``--smoke`` shrinks everything (a 500-image subset, 2 epochs) to check the harness in seconds;
``--max-trials N`` also ends each contestant after N trials (the tests use both: a smoke run
then takes seconds per contestant rather than its whole budget).
"""

from __future__ import annotations

import time

PROCESS_START = time.time()  # before any import: the budget counts the imports

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
FILES = (
    "train-labels-idx1-ubyte.gz",
    "train-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
)
CONTESTANTS = ("kt_random", "kt_hyperband", "optuna_loop", "tool", "tool_book", "tool_stretch")
PEERS = ("kt_random", "kt_hyperband", "optuna_loop")
SEED = 42  # set per run by ``--seeds``: the peers' sampler and weights, the tool's study.seed
MAX_TRIALS: int | None = None  # set by ``--max-trials``: each contestant's trials at most
TARGET = 0.88  # validation accuracy whose first arrival is timed


# --- shared by the peers: data, the book's model, the clock -------------------------------------


def keras_home(workdir: Path) -> Path:
    """A Keras cache holding Debian's Fashion-MNIST files, so ``load_data()`` needs no download."""
    home = workdir / "keras_home"
    target = home / "datasets" / "fashion-mnist"
    target.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        link = target / name
        if not link.exists():
            link.symlink_to(DEBIAN_FASHION / name)
    return home


def book_data(smoke: bool) -> tuple[Any, ...]:
    """The book's split and scaling, as its notebook writes it (``load_data`` then /255)."""
    import keras

    (x_full, y_full), (x_test, y_test) = keras.datasets.fashion_mnist.load_data()
    x_train, y_train = x_full[:-5000], y_full[:-5000]
    x_valid, y_valid = x_full[-5000:], y_full[-5000:]
    if smoke:
        x_train, y_train, x_valid, y_valid = (
            x_train[:500],
            y_train[:500],
            x_valid[:200],
            y_valid[:200],
        )
        x_test, y_test = x_test[:200], y_test[:200]
    return x_train / 255.0, y_train, x_valid / 255.0, y_valid, x_test / 255.0, y_test


def book_model(n_hidden: int, n_neurons: int, learning_rate: float, optimizer: str) -> Any:
    """The book's ``build_model`` body: Flatten, n_hidden x Dense(relu), softmax."""
    import keras

    opt = (
        keras.optimizers.SGD(learning_rate=learning_rate)
        if optimizer == "sgd"
        else keras.optimizers.Adam(learning_rate=learning_rate)
    )
    model = keras.Sequential()
    model.add(keras.layers.Flatten())
    for _ in range(n_hidden):
        model.add(keras.layers.Dense(n_neurons, activation="relu"))
    model.add(keras.layers.Dense(10, activation="softmax"))
    model.compile(loss="sparse_categorical_crossentropy", optimizer=opt, metrics=["accuracy"])
    return model


class Clock:
    """Seconds spent in ``model.fit`` and epochs trained; stops training at the deadline."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.fit_seconds = 0.0
        self.epochs = 0

    def callback(self) -> Any:
        import keras

        clock = self

        class _Cb(keras.callbacks.Callback):
            def on_train_begin(self, logs: Any = None) -> None:
                self._start = time.perf_counter()

            def on_train_end(self, logs: Any = None) -> None:
                clock.fit_seconds += time.perf_counter() - self._start

            def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
                clock.epochs += 1
                if time.time() >= clock.deadline:
                    self.model.stop_training = True

        return _Cb()


def since_start(t: float) -> float:
    """Seconds from this process's start (when its budget began) to ``t``."""
    return round(t - PROCESS_START, 2)


# --- the contestants ---------------------------------------------------------------------------


def run_kt(kind: str, budget: float, workdir: Path, smoke: bool) -> dict[str, Any]:
    import keras
    import keras_tuner as kt

    deadline = PROCESS_START + budget
    x_train, y_train, x_valid, y_valid, x_test, y_test = book_data(smoke)
    clock = Clock(deadline)
    events: dict[str, dict[str, float]] = {}

    def build_model(hp: Any) -> Any:
        n_hidden = hp.Int("n_hidden", min_value=0, max_value=8, default=2)
        n_neurons = hp.Int("n_neurons", min_value=16, max_value=256)
        learning_rate = hp.Float("learning_rate", min_value=1e-4, max_value=1e-2, sampling="log")
        optimizer = hp.Choice("optimizer", values=["sgd", "adam"])
        return book_model(n_hidden, n_neurons, learning_rate, optimizer)

    base = kt.RandomSearch if kind == "random" else kt.Hyperband

    class Timed(base):  # type: ignore[misc, valid-type]
        def run_trial(self, trial: Any, *args: Any, **kwargs: Any) -> Any:
            start = time.time()
            try:
                return super().run_trial(trial, *args, **kwargs)
            finally:
                events[trial.trial_id] = {"start": start, "end": time.time()}

        def pre_create_trial(self) -> None:
            # The budget is spent (or --max-trials reached): start no more trials.
            if time.time() >= deadline or len(self.oracle.trials) >= (MAX_TRIALS or 10**9):
                self.oracle.max_trials = len(self.oracle.trials)
            super().pre_create_trial()

    common = {
        "objective": "val_accuracy",
        "overwrite": True,
        "directory": str(workdir / "kt"),
        "seed": SEED,
    }
    epochs = 2 if smoke else 10
    callbacks = [clock.callback()]
    if kind == "random":
        tuner = Timed(build_model, max_trials=100_000, project_name="rnd", **common)
    else:
        tuner = Timed(
            build_model,
            max_epochs=epochs,
            factor=3,
            hyperband_iterations=1000,  # run until the budget
            project_name="hyperband",
            **common,
        )
        callbacks.append(keras.callbacks.EarlyStopping(patience=2))

    tuner.search(
        x_train,
        y_train,
        epochs=epochs,
        validation_data=(x_valid, y_valid),
        callbacks=callbacks,
        verbose=0,
    )
    search_end = time.time()
    trials = []
    for tid, trial in tuner.oracle.trials.items():
        ev = events.get(tid)
        if ev is None or trial.score is None:
            continue
        trials.append(
            {
                "id": tid,
                "state": "complete",
                "value": float(trial.score),
                "end": since_start(ev["end"]),
                "in_budget": ev["end"] <= deadline,
            }
        )
    kept = [t for t in trials if t["in_budget"]]
    best = max(kept, key=lambda t: t["value"]) if kept else None
    test_accuracy = None
    if best is not None:
        model = tuner.load_model(tuner.oracle.trials[best["id"]])
        test_accuracy = float(model.evaluate(x_test, y_test, verbose=0)[1])
    return summarize(trials, best, test_accuracy, clock, search_end)


def run_optuna_loop(budget: float, workdir: Path, smoke: bool) -> dict[str, Any]:
    import keras
    import optuna
    from optuna_integration import KerasPruningCallback
    from optuna_integration.mlflow import MLflowCallback

    deadline = PROCESS_START + budget
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    clock = Clock(deadline)
    ends: dict[int, float] = {}
    best: dict[str, Any] = {"value": -1.0, "model": None, "number": None}
    epochs = 2 if smoke else 10

    def objective(trial: optuna.Trial) -> float:
        keras.backend.clear_session()
        x_train, y_train, x_valid, y_valid, _, _ = book_data(smoke)
        n_hidden = trial.suggest_int("n_hidden", 0, 8)
        n_neurons = trial.suggest_int("n_neurons", 16, 256)
        learning_rate = trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True)
        optimizer = trial.suggest_categorical("optimizer", ["sgd", "adam"])
        model = book_model(n_hidden, n_neurons, learning_rate, optimizer)
        try:
            model.fit(
                x_train,
                y_train,
                batch_size=32,
                epochs=epochs,
                validation_data=(x_valid, y_valid),
                callbacks=[KerasPruningCallback(trial, "val_accuracy"), clock.callback()],
                verbose=0,
            )
            score = model.evaluate(x_valid, y_valid, verbose=0)
        finally:
            ends[trial.number] = time.time()
        if score[1] > best["value"] and ends[trial.number] <= deadline:
            best.update(value=score[1], model=model, number=trial.number)
        return float(score[1])

    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=SEED),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2),
    )
    mlflc = MLflowCallback(
        tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}", metric_name="val_accuracy"
    )
    study.optimize(
        objective,
        n_trials=MAX_TRIALS,
        timeout=max(deadline - time.time(), 1e-3),
        callbacks=[mlflc],
    )
    search_end = time.time()
    trials = []
    for t in study.trials:
        if t.number not in ends:
            continue
        state = t.state.name.lower()
        trials.append(
            {
                "id": t.number,
                "state": state,
                "value": t.value if state == "complete" else None,
                "end": since_start(ends[t.number]),
                "in_budget": ends[t.number] <= deadline + 1e-6,
            }
        )
    test_accuracy = None
    pick = None
    if best["model"] is not None:
        _, _, _, _, x_test, y_test = book_data(smoke)
        test_accuracy = float(best["model"].evaluate(x_test, y_test, verbose=0)[1])
        pick = next(t for t in trials if t["id"] == best["number"])
    return summarize(trials, pick, test_accuracy, clock, search_end)


def run_tool(exp_path: Path, budget: float, workdir: Path, smoke: bool) -> dict[str, Any]:
    import mlflow
    import optuna

    from tuning.config import load_experiment
    from tuning.job import run_job

    overrides: list[tuple[str, Any]] = [
        ("study.storage", f"sqlite:///{workdir / 'optuna.db'}"),
        ("tracking.uri", f"sqlite:///{workdir / 'mlflow.db'}"),
        ("study.seed", SEED),
    ]
    if smoke:
        overrides += [("dataset.name", "digits"), ("dataset.validation", 0.2)]
        overrides += [("training.max_epochs", 2)]
    if MAX_TRIALS:
        overrides += [("study.n_trials", MAX_TRIALS)]
    # The tool's budget counts from this process's start, like every contestant's.
    overrides.append(("study.timeout", max(PROCESS_START + budget - time.time(), 1.0)))
    exp = load_experiment(exp_path, overrides=overrides)
    lines: list[str] = []
    result = run_job(exp, say=lines.append)
    # The search ends where the job's own report (test score, model logging, plots) begins.
    search_end = time.time() - result.timings["finish"]
    (workdir / "job.log").write_text("\n".join(lines) + "\n")
    study = optuna.load_study(study_name=exp.study_name, storage=exp.study.storage)
    deadline = PROCESS_START + budget
    trials = []
    for t in study.trials:
        if t.datetime_complete is None:
            continue
        end = t.datetime_complete.timestamp()
        state = t.state.name.lower()
        trials.append(
            {
                "id": t.number,
                "state": state,
                "value": t.value if state == "complete" else None,
                "end": since_start(end),
                "in_budget": end <= deadline + 1e-6,
                "epochs": t.user_attrs.get("epochs_trained", 0),
            }
        )
    client = mlflow.MlflowClient(tracking_uri=result.tracking_uri)
    metrics = client.get_run(result.parent_run_id).data.metrics
    pick = next((t for t in trials if t["id"] == result.best_trial), None)
    clock = Clock(deadline)
    clock.fit_seconds = result.timings["fit"]
    clock.epochs = sum(t.get("epochs", 0) for t in trials)
    out = summarize(trials, pick, metrics.get("test_accuracy"), clock, search_end)
    out["tool_timings"] = {k: round(v, 3) for k, v in result.timings.items()}
    out["study_tracking_fraction"] = round(result.timings["fraction"], 4)
    # The job's own model (an ensemble where it chose one) and, beside an ensemble, its best
    # member alone on the same test rows: a paired figure for the ensemble's gain.
    out["job_model_value"] = metrics.get("job_best_value")
    out["single_test_accuracy"] = metrics.get("single_test_accuracy")
    tags = client.get_run(result.parent_run_id).data.tags
    out["model_members"] = tags.get("model_members")
    return out


def run_throughput(smoke: bool) -> dict[str, Any]:
    """Samples per second of ``model.fit`` alone, after the first (compiling) epoch."""
    import keras

    x_train, y_train, x_valid, y_valid, _, _ = book_data(smoke)
    out: dict[str, Any] = {"backend": keras.backend.backend()}
    configs = [(32, "auto"), (128, "auto")]
    if keras.backend.backend() == "tensorflow":  # elsewhere jit off means op-by-op dispatch
        configs += [(32, False), (128, False)]
    for batch_size, jit in configs:
        keras.backend.clear_session()
        keras.utils.set_random_seed(SEED)
        model = keras.Sequential(
            [
                keras.Input((28, 28)),
                keras.layers.Flatten(),
                keras.layers.Dense(300, activation="relu"),
                keras.layers.Dense(100, activation="relu"),
                keras.layers.Dense(10, activation="softmax"),
            ]
        )
        model.compile(
            loss="sparse_categorical_crossentropy",
            optimizer="sgd",
            metrics=["accuracy"],
            jit_compile=jit,
        )
        kw = {"batch_size": batch_size, "validation_data": (x_valid, y_valid), "verbose": 0}
        model.fit(x_train, y_train, epochs=1, **kw)
        n = 1 if smoke else 3
        start = time.perf_counter()
        model.fit(x_train, y_train, epochs=n, **kw)
        seconds = (time.perf_counter() - start) / n
        out[f"batch_{batch_size}_jit_{str(jit).lower()}"] = {
            "seconds_per_epoch": round(seconds, 3),
            "samples_per_second": round(len(x_train) / seconds),
            # The physical limit: 10-epoch trials of this model per hour, with no overhead at all.
            "max_trials_per_hour_10_epochs": round(3600 / (10 * seconds), 1),
        }
    return out


def summarize(
    trials: list[dict[str, Any]],
    best: dict[str, Any] | None,
    test_accuracy: float | None,
    clock: Clock,
    search_end: float,
) -> dict[str, Any]:
    """The figures of one contestant from its trials (only those that ended within the budget)."""
    kept = sorted((t for t in trials if t["in_budget"]), key=lambda t: t["end"])
    reach = next((t["end"] for t in kept if t["value"] is not None and t["value"] >= TARGET), None)
    wall = search_end - PROCESS_START
    return {
        "finished": sum(t["state"] == "complete" for t in kept),
        "pruned": sum(t["state"] == "pruned" for t in kept),
        "failed": sum(t["state"] == "fail" for t in kept),
        "cut_at_budget": len(trials) - len(kept),
        "best_val_accuracy": best["value"] if best else None,
        "best_trial": best["id"] if best else None,
        "test_accuracy": test_accuracy,
        "seconds_to_88": reach,
        "epochs_trained": clock.epochs,
        "fit_seconds": round(clock.fit_seconds, 1),
        "search_seconds": round(wall, 1),
        "not_fit_fraction": round(1 - clock.fit_seconds / wall, 4) if wall > 0 else None,
        "trials": kept,
    }


# --- the harness -------------------------------------------------------------------------------


def child(
    name: str, budget: float, workdir: Path, smoke: bool, seed: int, max_trials: int | None = None
) -> dict[str, Any]:
    global SEED, MAX_TRIALS
    SEED, MAX_TRIALS = seed, max_trials
    os.environ["KERAS_HOME"] = str(keras_home(workdir))
    if name in PEERS:  # the weights too, as a careful notebook would
        import keras

        keras.utils.set_random_seed(seed)
    if name == "kt_random":
        return run_kt("random", budget, workdir, smoke)
    if name == "kt_hyperband":
        return run_kt("hyperband", budget, workdir, smoke)
    if name == "optuna_loop":
        return run_optuna_loop(budget, workdir, smoke)
    if name == "tool":  # the shipped experiment, as a user runs it
        return run_tool(ROOT / "experiments" / "fashion_mnist.yaml", budget, workdir, smoke)
    if name in ("tool_book", "tool_stretch"):
        return run_tool(HERE / "experiments" / f"{name}.yaml", budget, workdir, smoke)
    if name == "throughput":
        return run_throughput(smoke)
    raise SystemExit(f"unknown contestant {name!r}; choose from {CONTESTANTS} or throughput")


def fmt(v: Any, spec: str = "") -> str:
    return "-" if v is None else format(v, spec)


def table(results: dict[str, Any], budget: float) -> list[str]:
    """The markdown table of the contestants and the goals as ratios."""
    hours = budget / 3600
    lines = [
        "| contestant | finished | pruned | trials/h | best val acc | test acc | s to 88 % "
        "| epochs | not in fit |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        if name.split("@")[0] not in CONTESTANTS:
            continue
        if "error" in r:
            lines.append(f"| {name} | error: {r['error'][:80]} |||||||| ")
            continue
        tph = (r["finished"] + r["pruned"]) / hours
        lines.append(
            f"| {name} | {r['finished']} | {r['pruned']} | {tph:.0f} "
            f"| {fmt(r['best_val_accuracy'], '.4f')} | {fmt(r['test_accuracy'], '.4f')} "
            f"| {fmt(r['seconds_to_88'], '.0f')} | {r['epochs_trained']} "
            f"| {100 * r['not_fit_fraction']:.1f} % |"
        )
    return lines


def backend_goals(results: dict[str, Any]) -> dict[str, Any]:
    """JAX against TensorFlow for each contestant run on both: trials/h ratio, test accuracy."""
    out: dict[str, Any] = {}
    for key, jax_r in results.items():
        name, _, backend = key.partition("@")
        tf_r = results.get(f"{name}@tensorflow")
        if backend != "jax" or not tf_r or "error" in jax_r or "error" in tf_r:
            continue
        if name == "throughput":
            for config, v in jax_r.items():
                if isinstance(v, dict) and config in tf_r:
                    out[f"throughput_{config}_jax_over_tf"] = round(
                        v["samples_per_second"] / tf_r[config]["samples_per_second"], 2
                    )
            continue
        n_jax = jax_r["finished"] + jax_r["pruned"]
        n_tf = tf_r["finished"] + tf_r["pruned"]
        out[f"{name}_trials_per_hour_jax_over_tf"] = round(n_jax / n_tf, 2) if n_tf else None
        if jax_r["test_accuracy"] is not None and tf_r["test_accuracy"] is not None:
            out[f"{name}_test_accuracy_jax_minus_tf"] = round(
                jax_r["test_accuracy"] - tf_r["test_accuracy"], 4
            )
    return out


def goals(results: dict[str, Any], budget: float) -> dict[str, Any]:
    """The issue's goals, as ratios measured in this run (keys without ``@backend``)."""
    ok = {k: v for k, v in results.items() if isinstance(v, dict) and "error" not in v}
    out: dict[str, Any] = {}
    peers = [ok[k] for k in PEERS if k in ok]
    tools = {k: ok[k] for k in ("tool", "tool_book", "tool_stretch") if k in ok}
    if peers and tools:
        best_peer = max((p["test_accuracy"] or 0.0) for p in peers)
        best_tool = max((t["test_accuracy"] or 0.0) for t in tools.values())
        out["best_tool_test_minus_best_peer_test"] = round(best_tool - best_peer, 4)
    if "optuna_loop" in ok and "tool_book" in ok:
        loop, tool = ok["optuna_loop"], ok["tool_book"]
        n_loop = loop["finished"] + loop["pruned"]
        n_tool = tool["finished"] + tool["pruned"]
        out["trials_per_hour_ratio_tool_book_vs_optuna_loop"] = (
            round(n_tool / n_loop, 2) if n_loop else None
        )
    for k, t in tools.items():
        out[f"{k}_study_tracking_fraction"] = t.get("study_tracking_fraction")
    if "throughput" in ok:
        out["raw_fit"] = ok["throughput"]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=600, help="seconds per contestant")
    parser.add_argument("--only", default=",".join((*CONTESTANTS, "throughput")))
    parser.add_argument("--out", type=Path, default=None, help="JSON file for the results")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--smoke", action="store_true", help="tiny data, to test the harness")
    parser.add_argument(
        "--backend", action="append", help="Keras backend to run every contestant on (repeat)"
    )
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[SEED],
        help="run every contestant once per seed (results keyed name@backend#seed when > 1)",
    )
    parser.add_argument(
        "--max-trials", type=int, default=None, help="end each contestant after N trials"
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        workdir = args.workdir.resolve()
        os.chdir(workdir)
        try:
            res = child(
                args.child, args.budget, workdir, args.smoke, args.seeds[0], args.max_trials
            )
        except Exception as e:  # reported in the table, the other contestants still run
            res = {"error": f"{type(e).__name__}: {e}"}
        (workdir / "result.json").write_text(json.dumps(res, default=str))
        return 0 if "error" not in res else 1

    import tempfile

    base = Path(args.workdir or tempfile.mkdtemp(prefix="bench-peers-")).resolve()
    results: dict[str, Any] = {}
    backends = args.backend or ["jax", "tensorflow"]
    # Seed by seed, every contestant in turn: a drift of the machine over the hours touches all.
    runs = [
        (name, b, seed) for seed in args.seeds for b in backends for name in args.only.split(",")
    ]
    many = len(args.seeds) > 1
    for name, backend, seed in runs:
        key = f"{name}@{backend}" + (f"#{seed}" if many else "")
        workdir = base / key
        workdir.mkdir(parents=True, exist_ok=True)
        print(f"== {key} (budget {args.budget:g}s) ...", flush=True)
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", name]
        cmd += ["--budget", str(args.budget), "--workdir", str(workdir), "--seeds", str(seed)]
        cmd += ["--smoke"] if args.smoke else []
        cmd += ["--max-trials", str(args.max_trials)] if args.max_trials else []
        env = {**os.environ, "KERAS_BACKEND": backend, "TUNING_CACHE_DIR": str(workdir / "cache")}
        started = time.time()
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
        name = key
        (workdir / "log.txt").write_text(proc.stdout + proc.stderr)
        result_file = workdir / "result.json"
        if result_file.exists():
            results[name] = json.loads(result_file.read_text())
        else:
            results[name] = {"error": f"exit {proc.returncode}: {proc.stderr.strip()[-300:]}"}
        results[name]["process_seconds"] = round(time.time() - started, 1)
        print(f"   done in {time.time() - started:.0f}s", flush=True)
        if args.out:  # after every contestant: a cut-off run keeps what it measured
            write_summary(args, backends, results, partial=True)
    summary = write_summary(args, backends, results, partial=False)
    for line in table(results, args.budget):
        print(line)
    print(json.dumps(summary["goals"], indent=1))
    if many:
        for line in seeds_table(summary["over_seeds"]):
            print(line)
    failed = [k for k, v in results.items() if "error" in v]
    return 1 if failed else 0


def write_summary(
    args: argparse.Namespace, backends: list[str], results: dict[str, Any], partial: bool
) -> dict[str, Any]:
    """The JSON summary (also written after each contestant when ``--out`` is given)."""
    many = len(args.seeds) > 1
    summary = {
        "budget_seconds": args.budget,
        "seeds": args.seeds,
        "partial": partial,
        "smoke": args.smoke,
        "max_trials": args.max_trials,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "results": results,
        "over_seeds": over_seeds(results) if many else None,
        "goals": {},
    }
    if not many:  # one seed: the goals of each backend and JAX against TensorFlow
        for backend in backends:
            mine = {
                k.partition("@")[0]: v for k, v in results.items() if k.endswith(f"@{backend}")
            }
            summary["goals"][backend] = goals(mine, args.budget)
        summary["goals"]["jax_vs_tensorflow"] = backend_goals(results)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=1, default=str))
    return summary


def median_or_none(values: list[Any]) -> float | None:
    """The median of the values that are not ``None`` (a contestant that failed has none)."""
    import statistics

    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def over_seeds(results: dict[str, Any]) -> dict[str, Any]:
    """Per contestant@backend: test accuracy over the seeds (median, range), and issue 14's goals.

    Goals, for each backend: the tool's median test accuracy >= 0.895, and its worst seed above
    every peer's median.
    """
    groups: dict[str, dict[int, dict[str, Any]]] = {}
    for key, r in results.items():
        name, _, seed = key.partition("#")
        groups.setdefault(name, {})[int(seed)] = r
    out: dict[str, Any] = {}
    for name, by_seed in groups.items():
        if name.startswith("throughput"):
            continue
        tests = {s: r.get("test_accuracy") for s, r in by_seed.items()}
        vals = [v for v in tests.values() if v is not None]
        configs = [r["finished"] + r["pruned"] for r in by_seed.values() if "error" not in r]
        out[name] = {
            "test_accuracy_by_seed": tests,
            "median": median_or_none(vals),
            "min": min(vals) if vals else None,
            "max": max(vals) if vals else None,
            "configurations_median": median_or_none(configs),
            "best_val_accuracy_median": median_or_none(
                [r.get("best_val_accuracy") for r in by_seed.values()]
            ),
        }
    goals: dict[str, Any] = {}
    for name, g in out.items():
        contestant, _, backend = name.partition("@")
        if contestant != "tool" or g["median"] is None:
            continue
        peer_medians = {
            p: out[f"{p}@{backend}"]["median"] for p in PEERS if f"{p}@{backend}" in out
        }
        goals[backend] = {
            "tool_median": g["median"],
            "tool_median_at_least_0.895": g["median"] >= 0.895,
            "tool_worst_seed": g["min"],
            "peer_medians": peer_medians,
            "tool_worst_above_every_peer_median": all(
                m is None or g["min"] > m for m in peer_medians.values()
            ),
        }
    return {"contestants": out, "goals": goals}


def seeds_table(over: dict[str, Any]) -> list[str]:
    lines = [
        "| contestant | test acc by seed | median | range | configurations (median) |",
        "|---|---|---:|---:|---:|",
    ]
    for name, g in over["contestants"].items():
        by_seed = ", ".join(f"{s}: {fmt(v, '.4f')}" for s, v in g["test_accuracy_by_seed"].items())
        lines.append(
            f"| {name} | {by_seed} | {fmt(g['median'], '.4f')} "
            f"| {fmt(g['min'], '.4f')}-{fmt(g['max'], '.4f')} "
            f"| {fmt(g['configurations_median'])} |"
        )
    lines.append("")
    lines.append(json.dumps(over["goals"], indent=1))
    return lines


if __name__ == "__main__":
    sys.exit(main())
