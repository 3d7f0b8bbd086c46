"""Growth benchmark: does the per-trial overhead stay flat as a study grows to 10,000 trials?

What it measures: the cost of everything around training in one job of many trials — the
sampler, the Optuna SQLite storage (per-epoch ``trial.report``, ``should_prune``, user attrs,
heartbeats, ``tell``), the MLflow child run of every trial (params, per-epoch metrics, tags) and
the job's callbacks — at trials 10, 100, 1,000 and 10,000. The goal is flat: per-trial overhead
at the last trial within 1.5x of trial 10.

How: it writes an experiment (digits, a small search space with a conditional parameter, TPE
with 10 start-up trials, the median pruner, SQLite for Optuna and MLflow, ``log_models: none``)
into ``--workdir`` and runs the real :func:`tuning.job.run_job` on it, with only the Keras part
replaced: ``Trainer.build`` returns a stand-in model and ``Trainer.train`` makes
deterministic synthetic epochs (a smooth function of the parameters plus seeded noise) and calls
the same ``on_epoch`` hook Keras would, so pruning, reporting and logging happen as in a real job
while the fit itself costs about nothing. The gap between two consecutive ``trial N ...`` lines
of the job's output is then the whole cost of one trial. Wrappers around the sampler, the Optuna
storage, ``Trial.should_prune`` and ``MlflowClient`` split that cost into its parts (each call is
counted once, in the outermost wrapped part: the sampler's own storage reads count as sampler).

Run it (from the repository root; 1,000 trials take several minutes)::

    python benchmarks/growth.py --trials 1000 --epochs 10 --workdir /tmp/growth --out growth.json

``--store postgres`` puts the study in a throwaway PostgreSQL and tracks through a local
``mlflow server`` on PostgreSQL (``benchmarks/servers.py`` starts both on 127.0.0.1 and removes
them after). ``--history`` is TPE's ``study.sampler.history`` (0: Optuna's TPE over every trial).
``--after`` then times ``tuning status``, ``show`` and ``best`` (fresh processes, as a user runs
them) and the MLflow UI's runs page in headless Chromium. The parent run's reports
(``write_job_reports``) are timed in the job itself. A report is written every 500 trials, and
``kill -USR1`` ends the search after the trial in flight (the job and ``--after`` then finish as
usual): a long run cut short still leaves its figures. Each trial also records this process's
CPU seconds, a figure that a busy machine disturbs far less than wall time (with
``--store postgres`` the servers' CPU is not in it).

Issue 26 (10,000 trials, on SQLite and on PostgreSQL)::

    nice -n 10 python benchmarks/growth.py --trials 10000 --workdir /tmp/g10k-sqlite \
        --out benchmarks/results/growth-10000-sqlite.json --after
    nice -n 10 python benchmarks/growth.py --trials 10000 --store postgres \
        --workdir /tmp/g10k-pg --out benchmarks/results/growth-10000-postgres.json --after

``--workdir`` must not hold a study already (use a fresh folder). It prints a markdown table and
writes the numbers to ``--out`` as JSON. This is a benchmark, not a test: nothing is asserted.

The table has one row per window of twenty trials (11-30, 91-110, 981-1000, counted from 1;
the 10 random start-up trials are left out; fewer with fewer trials): the mean epochs trained,
the median and mean milliseconds per trial, and the mean milliseconds of each part ("other" is
the rest: the runner's own code, Optuna's loop, the synthetic fit). The median pruner prunes
most trials after a few epochs once the study has some history, so early windows may train more
epochs per trial than late ones; ``--pruner none`` trains every trial for the same epochs and
isolates growth in the fixed per-trial costs. The SQLite writes (storage, MLflow) dominate and
vary a lot on a busy machine; the JSON keeps every trial's seconds, epochs and parts
(``per_trial_*``) for a trend over wider bins.
"""

from __future__ import annotations

import argparse
import functools
import inspect
import json
import math
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from unittest import mock

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))  # servers.py

SPACE: dict[str, Any] = {
    "n_hidden": {"type": "int", "low": 1, "high": 3},
    "n_neurons": {"type": "int", "low": 8, "high": 128, "log": True},
    "activation": {"type": "categorical", "choices": ["relu", "elu"]},
    "optimizer": {"type": "categorical", "choices": ["adam", "nesterov"]},
    "learning_rate": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
    "momentum": {"type": "float", "low": 0.8, "high": 0.99, "when": {"optimizer": ["nesterov"]}},
    "batch_size": 64,
}
PARTS = ("sampler", "pruner", "storage", "mlflow")
N_FEATURES, N_CLASSES = 64, 10  # digits


STARTUP = 10  # random start-up trials of the TPE sampler
STOP_SEARCH = threading.Event()  # set by SIGUSR1: stop after the trial in flight


def write_experiment(
    workdir: Path,
    *,
    trials: int,
    epochs: int,
    sampler: str,
    pruner: str,
    storage: str | None = None,
    tracking: str | None = None,
    history: int | None = 1000,
) -> Path:
    """Write the experiment and its search space into ``workdir``; return the experiment path.

    ``storage`` and ``tracking`` default to SQLite files in ``workdir``; ``history`` is TPE's
    ``study.sampler.history`` (None: every trial, Optuna's own TPE).
    """
    db = workdir.resolve()
    exp: dict[str, Any] = {
        "name": "growth",
        "description": "growth benchmark: synthetic fits, real study and tracking",
        "dataset": {"name": "digits"},
        "search_space": "space.yaml",
        "objective": {"metric": "val_accuracy", "direction": "maximize"},
        "study": {
            "storage": storage or f"sqlite:///{db / 'optuna.db'}",
            "sampler": (
                {"type": sampler, "n_startup_trials": STARTUP, "seed": 0, "history": history}
                if sampler == "tpe"
                else {"type": sampler, "seed": 0}
            ),
            "pruner": (
                {"type": "median", "n_startup_trials": 5, "n_warmup_steps": 2}
                if pruner == "median"
                else "none"
            ),
            "n_trials": trials,
            "seed": 0,
            "recheck_top": 0,  # per-trial overhead is measured here, not the job's last step
        },
        "training": {
            "max_epochs": epochs,
            "batch_size": 64,
            "early_stopping": {"patience": 3},
        },
        "tracking": {"uri": tracking or f"sqlite:///{db / 'mlflow.db'}", "log_models": "none"},
    }
    (workdir / "space.yaml").write_text(yaml.safe_dump(SPACE, sort_keys=False))
    path = workdir / "growth.yaml"
    path.write_text(yaml.safe_dump(exp, sort_keys=False))
    return path


# --- the synthetic Keras part ---------------------------------------------------------------


class StandInModel:
    """What the runner needs of a model: its size and a way to save it. No Keras."""

    def __init__(self, params: Mapping[str, Any]) -> None:
        self.params = dict(params)

    def count_params(self) -> int:
        width, n_in, total = int(self.params["n_neurons"]), N_FEATURES, 0
        for _ in range(int(self.params["n_hidden"])):
            total += (n_in + 1) * width
            n_in = width
        return total + (n_in + 1) * N_CLASSES

    def save(self, path: str | os.PathLike[str]) -> None:
        Path(path).write_text(json.dumps(self.params))


def synthetic_build(
    self: Any,
    params: dict[str, Any],
    *,
    number: int,
    max_epochs: int,
    seed: int | None = None,
) -> StandInModel:
    """Stand-in for ``Trainer.build``."""
    return StandInModel(params)


def synthetic_curve(params: Mapping[str, Any], epochs: int) -> list[dict[str, float]]:
    """Deterministic per-epoch logs: best near lr=3e-3 and wide layers, rising with epochs."""
    rng = random.Random(json.dumps(dict(params), sort_keys=True, default=str))
    distance = math.log10(float(params["learning_rate"]) / 3e-3)
    width = math.log2(float(params["n_neurons"]) / 8) / 4  # 0 .. 1
    ceiling = 0.97 - 0.12 * distance**2 + 0.03 * width - 0.01 * (int(params["n_hidden"]) - 2) ** 2
    ceiling = min(max(ceiling, 0.15), 0.99)
    speed = 1.5 + 2.0 * max(0.0, -distance)  # small learning rates learn slowly
    logs = []
    for epoch in range(epochs):
        progress = 1.0 - math.exp(-(epoch + 1) / speed)
        acc = min(max(0.1 + (ceiling - 0.1) * progress + rng.gauss(0, 0.005), 0.0), 1.0)
        val = min(max(acc - 0.01 + rng.gauss(0, 0.01), 0.0), 1.0)
        logs.append(
            {
                "loss": -math.log(max(acc, 1e-3)),
                "accuracy": acc,
                "val_loss": -math.log(max(val, 1e-3)),
                "val_accuracy": val,
            }
        )
    return logs


def synthetic_train(
    self: Any,
    model: StandInModel,
    params: dict[str, Any],
    *,
    max_epochs: int,
    on_epoch: Callable[[int, Mapping[str, float]], None],
    carry: Any = None,
    keep_last: bool = False,
) -> Any:
    """Stand-in for ``Trainer.train``: the same hook per epoch, early stopping included.
    (``carry``/``keep_last``: a continued trial's state; growth's jobs have no time budget, so
    no trial is cut and none is continued.)

    ``optuna.TrialPruned`` raised by ``on_epoch`` propagates, as it does out of ``model.fit``.
    """
    from tuning.train import FitResult

    start = time.perf_counter()
    patience = int(params.get("patience", self.exp.training.early_stopping.patience))
    history: dict[str, list[float]] = defaultdict(list)
    best, best_epoch = -math.inf, 0
    for epoch, logs in enumerate(synthetic_curve(params, max_epochs)):
        for k, v in logs.items():
            history[k].append(v)
        on_epoch(epoch, logs)
        if logs["val_accuracy"] > best:
            best, best_epoch = logs["val_accuracy"], epoch
        elif epoch - best_epoch >= patience:
            break
    return FitResult(
        value=best,
        best_epoch=best_epoch,
        epochs=len(history["loss"]),
        seconds=time.perf_counter() - start,
        history=dict(history),
        n_params=model.count_params(),
    )


# --- timing -----------------------------------------------------------------------------------


class Meter:
    """Per-trial time of the wrapped parts, each call counted once in its outermost part.

    Only calls on the main thread count (Optuna's heartbeat thread writes on its own).
    """

    def __init__(self) -> None:
        self.depth = 0
        self.main = threading.main_thread().ident
        self.bucket: dict[str, float] = defaultdict(float)
        self.trials: list[dict[str, Any]] = []  # one per "trial ..." line, in order
        self.last: float | None = None
        self.last_cpu = 0.0  # this process's CPU seconds at the last trial line
        self.lines: list[str] = []
        self.checkpoint: Callable[[], None] | None = None  # called every 500 trials
        self.extra: dict[str, float] = {}  # seconds of single calls (the job's reports)

    def wrap(self, stack: ExitStack, owner: type, name: str, part: str) -> None:
        """Patch ``owner.name`` with a timed wrapper for the life of ``stack``."""
        original = getattr(owner, name)

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if self.depth or threading.get_ident() != self.main:
                return original(*args, **kwargs)
            self.depth += 1
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.depth -= 1
                elapsed = time.perf_counter() - start
                self.bucket[part] += elapsed
                self.bucket[f"{part}:{name}"] += elapsed

        stack.enter_context(mock.patch.object(owner, name, timed))

    def wrap_public(self, stack: ExitStack, owner: type, part: str) -> None:
        """Wrap every public method of ``owner`` (its own and inherited)."""
        for name in dir(owner):
            if name.startswith("_"):
                continue
            if inspect.isfunction(inspect.getattr_static(owner, name)):
                self.wrap(stack, owner, name, part)

    def say(self, line: str) -> None:
        """The job's ``say``: one ``trial`` line per finished trial closes that trial's bucket."""
        now, cpu = time.perf_counter(), time.process_time()
        if line.startswith("trial "):
            fields = line.split()
            entry: dict[str, Any] = {"number": int(fields[1]), "state": fields[2]}
            epochs = [f for f in fields if f.startswith("epochs=")]
            entry["epochs"] = int(epochs[0].removeprefix("epochs=")) if epochs else None
            entry["seconds"] = None if self.last is None else now - self.last
            entry["cpu"] = None if self.last is None else cpu - self.last_cpu
            entry["parts"] = dict(self.bucket)
            self.trials.append(entry)
            self.bucket.clear()
            self.last, self.last_cpu = now, cpu
            n = len(self.trials)
            if n % 100 == 0:
                print(f"  {n} trials, last {1000 * (entry['seconds'] or 0):.0f} ms", flush=True)
            if n % 500 == 0 and self.checkpoint is not None:
                self.checkpoint()
        else:
            self.lines.append(line)
            if line.startswith("study "):  # said once, just before the trial loop starts
                self.last, self.last_cpu = now, cpu


def instrument(stack: ExitStack, meter: Meter, sampler: str) -> None:
    """Swap the Keras part for the synthetic one and wrap the parts to be timed."""
    import optuna
    from mlflow.tracking import MlflowClient
    from optuna.storages._cached_storage import _CachedStorage

    from tuning.trial import Trainer

    # Every engine builds and trains through the job's Trainer.
    stack.enter_context(mock.patch.object(Trainer, "build", synthetic_build))
    stack.enter_context(mock.patch.object(Trainer, "train", synthetic_train))
    cls = optuna.samplers.TPESampler if sampler == "tpe" else optuna.samplers.RandomSampler
    for name in (
        "before_trial",
        "infer_relative_search_space",
        "sample_relative",
        "sample_independent",
        "after_trial",
    ):
        meter.wrap(stack, cls, name, "sampler")
    meter.wrap(stack, optuna.trial.Trial, "should_prune", "pruner")
    meter.wrap_public(stack, _CachedStorage, "storage")
    meter.wrap_public(stack, optuna.storages.RDBStorage, "storage")
    for name in ("create_run", "log_batch", "set_terminated", "set_tag", "get_run"):
        meter.wrap(stack, MlflowClient, name, "mlflow")

    import tuning.job
    import tuning.report
    from tuning.engines.optuna import OptunaEngine

    def timed_once(owner: Any, name: str) -> None:
        original = getattr(owner, name)

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                meter.extra[name] = time.perf_counter() - start

        stack.enter_context(mock.patch.object(owner, name, timed))

    # The parent run's reports: the files (trials table, plots), and with their upload.
    timed_once(tuning.report, "write_job_reports")
    timed_once(tuning.job, "_log_reports")

    # SIGUSR1 ends the search after the trial in flight; the job then finishes as usual.
    original_after = OptunaEngine.after_trial

    def after_trial(self: Any, study: Any, trial: Any) -> None:
        original_after(self, study, trial)
        if STOP_SEARCH.is_set():
            study.stop()

    stack.enter_context(mock.patch.object(OptunaEngine, "after_trial", after_trial))


# --- report -----------------------------------------------------------------------------------


def windows(n: int) -> list[tuple[int, int, int]]:
    """(centre, first, last) trial ordinals (1-based) of the windows: 10, 100, 1000, ..., n."""
    centres = []
    c = 10
    while c <= n:
        centres.append(c)
        c *= 10
    if n > 10 and n not in centres:
        centres.append(n)
    out: list[tuple[int, int, int]] = []
    for c in centres:
        # Twenty trials from the centre on, after the sampler's 10 random start-up trials (their
        # cheap sampling would flatter the first window), clipped to the study.
        first = max(c - 9, STARTUP + 1)
        last = first + 19
        if last > n:
            first, last = max(n - 19, min(STARTUP + 1, n)), n
        if not out or (first, last) != out[-1][1:]:
            out.append((c, first, last))
    return out


def summarize(meter: Meter, n: int) -> list[dict[str, Any]]:
    """Per window: median and mean seconds per trial, and the mean of each part."""
    rows = []
    for centre, first, last in windows(n):
        picked = [t for t in meter.trials[first - 1 : last] if t["seconds"] is not None]
        if not picked:
            continue
        secs = [t["seconds"] for t in picked]
        parts = {p: statistics.fmean(t["parts"].get(p, 0.0) for t in picked) for p in PARTS}
        parts["other"] = statistics.fmean(secs) - sum(parts.values())
        detail: dict[str, float] = defaultdict(float)
        for t in picked:
            for k, v in t["parts"].items():
                if ":" in k:
                    detail[k] += v / len(picked)
        top = dict(sorted(detail.items(), key=lambda kv: -kv[1])[:8])
        rows.append(
            {
                "trial": centre,
                "trials": [first, last],
                "epochs_mean": statistics.fmean(t["epochs"] or 0 for t in picked),
                "median_s": statistics.median(secs),
                "mean_s": statistics.fmean(secs),
                "cpu_median_s": statistics.median(t["cpu"] for t in picked),
                "parts_mean_s": parts,
                "top_calls_mean_s": top,
                "states": dict(sorted(_count(t["state"] for t in picked).items())),
            }
        )
    return rows


def _count(items: Any) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for item in items:
        out[item] += 1
    return out


def table(rows: list[dict[str, Any]]) -> str:
    """The windows as a markdown table, in milliseconds."""
    head = (
        "| trial | window | epochs | median ms | mean ms | CPU ms (median) | "
        + " | ".join(PARTS)
        + " | other |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        p = r["parts_mean_s"]
        cells = [
            str(r["trial"]),
            f"{r['trials'][0]}-{r['trials'][1]}",
            f"{r['epochs_mean']:.1f}",
            f"{1000 * r['median_s']:.1f}",
            f"{1000 * r['mean_s']:.1f}",
            f"{1000 * r['cpu_median_s']:.1f}",
            *(f"{1000 * p[k]:.1f}" for k in (*PARTS, "other")),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --- after the job: the commands, the UI --------------------------------------------------------


def time_commands(
    storage: str, *, cwd: Path, tracking: str, reps: int = 2
) -> dict[str, dict[str, Any]]:
    """Wall seconds of ``tuning status``, ``show growth`` and ``best growth`` as a user runs
    them (a fresh process each), and of ``tuning --help`` (the interpreter and the imports)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    commands = {
        "help": ["--help"],
        "status": ["status", "--storage", storage, "--tracking-uri", tracking],
        "show": ["show", "growth", "--storage", storage],
        "best": ["best", "growth", "--storage", storage],
    }
    out: dict[str, dict[str, Any]] = {}
    for name, args in commands.items():
        seconds = []
        for _ in range(reps):
            start = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, "-m", "tuning", *args],
                cwd=cwd, env=env, capture_output=True, text=True, timeout=900,
            )  # fmt: skip
            seconds.append(time.perf_counter() - start)
        lines = proc.stdout.splitlines()
        out[name] = {
            "seconds": seconds,
            "best_s": min(seconds),
            "rc": proc.returncode,
            "first_line": lines[0] if lines and name != "help" else "",
            "stderr_tail": proc.stderr[-500:] if proc.returncode else "",
        }
        print(f"  tuning {name}: {', '.join(f'{x:.2f}' for x in seconds)} s", flush=True)
    return out


def time_ui(server: str, *, folder: Path, reps: int = 2) -> dict[str, Any]:
    """Seconds until the MLflow UI's runs page of the experiment shows the job's parent run,
    in headless Chromium driven by Selenium (as tests/test_ui.py does), first and again."""
    import shutil

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_bin = shutil.which("chromedriver")
    if not (chromium and driver_bin):
        return {"skipped": "chromium or chromedriver is not installed"}
    try:
        from selenium import webdriver
        from selenium.common.exceptions import StaleElementReferenceException
        from selenium.webdriver.chrome.service import Service
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait
    except ImportError:
        return {"skipped": "selenium is not installed"}
    from mlflow.tracking import MlflowClient

    client = MlflowClient(server)
    exp_id = client.get_experiment_by_name("growth").experiment_id
    parents = client.search_runs([exp_id], "tags.`tuning.role` = 'job'", max_results=5)
    names = {r.info.run_name for r in parents}
    link = f"{server}/#/experiments/{exp_id}?workflowType=machine_learning"
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in (
        "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--window-size=1600,1000",
        f"--user-data-dir={folder / 'chromium-profile'}",
    ):  # fmt: skip
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_bin), options=opts)
    cell = '[col-id="attributes.`Run Name`"] a[href*="/runs/"]'
    loads: list[float] = []
    shown = 0
    try:
        wait = WebDriverWait(
            driver, 300, poll_frequency=0.1, ignored_exceptions=[StaleElementReferenceException]
        )
        for _ in range(reps):
            driver.get("about:blank")
            start = time.perf_counter()
            driver.get(link)
            wait.until(lambda d: names & {a.text for a in d.find_elements(By.CSS_SELECTOR, cell)})
            loads.append(time.perf_counter() - start)
            shown = len(driver.find_elements(By.CSS_SELECTOR, cell))
            print(f"  MLflow UI runs page: {loads[-1]:.2f} s", flush=True)
        driver.save_screenshot(str(folder / "ui-runs-page.png"))
    finally:
        driver.quit()
    return {"seconds": loads, "rows_shown": shown, "parent_runs": sorted(names)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--sampler", choices=("tpe", "random"), default="tpe")
    ap.add_argument("--pruner", choices=("median", "none"), default="median")
    ap.add_argument(
        "--store",
        choices=("sqlite", "postgres"),
        default="sqlite",
        help="sqlite: SQLite files for Optuna and MLflow; postgres: a throwaway PostgreSQL for "
        "Optuna and a local mlflow server on PostgreSQL",
    )
    ap.add_argument(
        "--history",
        type=int,
        default=1000,
        help="study.sampler.history (0: every trial, Optuna's own TPE)",
    )
    ap.add_argument(
        "--preload",
        type=int,
        default=0,
        help="start from a study of N synthetic finished trials (benchmarks/synthetic_study.py;"
        " SQLite only): the per-trial cost at a study's size N in minutes, for A/B of a change;"
        " the MLflow store is not preloaded",
    )
    ap.add_argument(
        "--after",
        action="store_true",
        help="after the job: time tuning status/show/best and the MLflow UI's runs page",
    )
    args = ap.parse_args(argv)

    workdir: Path = args.workdir.resolve()
    out: Path = args.out.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    for db in ("optuna.db", "mlflow.db"):
        if (workdir / db).exists():
            ap.error(f"{workdir / db} exists: give a fresh --workdir")
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID"):
        os.environ.pop(var, None)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TUNING_OFFLINE", "1")
    signal.signal(signal.SIGUSR1, lambda *_: STOP_SEARCH.set())
    os.chdir(workdir)  # MLflow's default artifact root is ./mlruns

    with ExitStack() as servers_stack:
        if args.store == "postgres":
            import servers

            pg = servers.Postgres(prefix="tuning-pg-growth-")
            servers_stack.callback(pg.stop)
            storage = pg.url(pg.new_database("optuna"))
            tracking = servers_stack.enter_context(
                servers.mlflow_server(workdir, backend_store_uri=pg.url(pg.new_database("mlflow")))
            )
            print(f"PostgreSQL on port {pg.port}, mlflow server at {tracking}", flush=True)
        else:
            storage = f"sqlite:///{workdir / 'optuna.db'}"
            tracking = f"sqlite:///{workdir / 'mlflow.db'}"
        if args.preload:
            if args.store != "sqlite":
                ap.error("--preload: SQLite only (synthetic_study copies trials in SQL)")
            import synthetic_study

            synthetic_study.make_study(storage, args.preload, name="growth", running=0)
            print(f"preloaded {args.preload} synthetic trials", flush=True)
        return run(args, workdir, out, storage=storage, tracking=tracking)


def run(args: argparse.Namespace, workdir: Path, out: Path, *, storage: str, tracking: str) -> int:
    """Grow the study, write the report (every 500 trials, and at the end), print the table."""
    path = write_experiment(
        workdir,
        trials=args.trials,
        epochs=args.epochs,
        sampler=args.sampler,
        pruner=args.pruner,
        storage=storage,
        tracking=tracking,
        history=args.history or None,
    )

    from tuning.config import load_experiment, redact
    from tuning.job import run_job

    exp = load_experiment(path)
    meter = Meter()
    report: dict[str, Any] = {
        "trials": args.trials,
        "epochs": args.epochs,
        "sampler": args.sampler,
        "history": args.history or None,
        "pruner": args.pruner,
        "store": args.store,
        "storage": redact(storage),
        "tracking": redact(tracking),
        "workdir": str(workdir),
        "preload": args.preload,
        "goal": "ratio <= 1.5",
    }

    def write(final: bool) -> list[dict[str, Any]]:
        rows = summarize(meter, len(meter.trials))
        report["windows"] = rows
        report["trials_done"] = len(meter.trials)
        report["final"] = final
        report["ratio_last_to_first"] = (
            rows[-1]["median_s"] / rows[0]["median_s"] if rows else None
        )
        report["per_trial_s"] = [t["seconds"] for t in meter.trials]
        report["per_trial_cpu_s"] = [t["cpu"] for t in meter.trials]
        report["ratio_cpu_last_to_first"] = (
            rows[-1]["cpu_median_s"] / rows[0]["cpu_median_s"] if rows else None
        )
        report["per_trial_epochs"] = [t["epochs"] for t in meter.trials]
        report["per_trial_parts_s"] = {
            p: [round(t["parts"].get(p, 0.0), 6) for t in meter.trials] for p in PARTS
        }
        report["job_lines"] = meter.lines
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1))
        return rows

    meter.checkpoint = lambda: write(final=False)
    print(f"growth: {args.trials} trials x {args.epochs} epochs in {workdir}", flush=True)
    with ExitStack() as stack:
        instrument(stack, meter, args.sampler)
        result = run_job(exp, say=meter.say, report_table=False)
    report.update(
        counts={k: v for k, v in result.counts.items() if v},
        trials_run=result.trials_run,
        seconds=result.seconds,
        timings=result.timings,
        status=result.status,
        reports_s={
            "write_job_reports": meter.extra.get("write_job_reports"),
            "with_upload_and_summary": meter.extra.get("_log_reports"),
        },
    )
    rows = write(final=True)

    print()
    print(table(rows))
    print()
    ratio = report["ratio_last_to_first"]
    if ratio is not None:
        verdict = "flat" if ratio <= 1.5 else "GROWS"
        print(
            f"ratio trial {rows[-1]['trial']} / trial {rows[0]['trial']} (median): "
            f"{ratio:.2f} ({verdict}; goal <= 1.5); CPU time of this process (median): "
            f"{report['ratio_cpu_last_to_first']:.2f}"
        )
    tm = result.timings
    print(
        f"job: {result.trials_run} trials {report['counts']} in {result.seconds:.1f}s; "
        f"setup {tm['setup']:.1f}s, build {tm['build']:.2f}s, fit {tm['fit']:.2f}s, "
        f"study+tracking {tm['study_tracking']:.1f}s ({100 * tm['fraction']:.0f}%), "
        f"finish {tm['finish']:.1f}s"
    )
    rep = report["reports_s"]
    if rep["write_job_reports"] is not None:
        print(
            f"the parent run's reports: {rep['write_job_reports']:.2f}s to write "
            f"({rep['with_upload_and_summary']:.2f}s with their upload and summary.md)"
        )
    if args.after:
        print("after the job:", flush=True)
        report["commands"] = time_commands(storage, cwd=workdir, tracking=tracking)
        write(final=True)
        if tracking.startswith("http"):
            report["ui"] = time_ui(tracking, folder=workdir)
        else:
            import servers

            (workdir / "ui").mkdir(exist_ok=True)
            with servers.mlflow_server(workdir / "ui", backend_store_uri=tracking) as url:
                report["ui"] = time_ui(url, folder=workdir)
        write(final=True)
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
