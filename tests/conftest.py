"""Shared fixtures: a clean working folder per test, tiny experiments, seeded runs, no network."""

from __future__ import annotations

import json
import os
import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

if TYPE_CHECKING:  # mlflow is imported inside the helpers, after the backend is chosen
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[1]
# The benchmarks' helpers (servers.py: a throwaway PostgreSQL and mlflow server;
# experiment_files.py; machines.py, ...) import by name, as they do when a benchmark runs as a
# script.
if str(ROOT / "benchmarks") not in sys.path:
    sys.path.append(str(ROOT / "benchmarks"))
import experiment_files  # noqa: E402  (benchmarks/experiment_files.py)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ["TUNING_OFFLINE"] = "1"  # never wait on a download in tests
os.environ.setdefault("TUNING_CACHE_DIR", str(ROOT / ".pytest_cache" / "tuning"))


def _xla_fast_compile() -> None:
    """Tests compile XLA programs at optimization level 0: the same programs and results, built
    ~45 % faster (benchmarks/RESULTS.md, "What else was tried for the quickstart"); a test's
    tiny model trains for a few epochs, so compiling is most of its time. Not a job default: XLA
    aborts on a flag it does not know, so it is set only for the versions of jaxlib and
    TensorFlow it was checked with (a newer one just compiles as a job does), and never over
    the user's own XLA_FLAGS (subprocesses the tests start inherit it)."""
    from importlib.metadata import PackageNotFoundError, version

    def release(name: str) -> tuple[int, ...] | None:
        try:
            return tuple(int(p) for p in version(name).split(".")[:2])
        except (PackageNotFoundError, ValueError):
            return None

    jaxlib, tf = release("jaxlib"), release("tensorflow")
    checked = (jaxlib is None or jaxlib <= (0, 10)) and (tf is None or tf <= (2, 21))
    if checked and "XLA_FLAGS" not in os.environ:
        os.environ["XLA_FLAGS"] = "--xla_backend_optimization_level=0"


_xla_fast_compile()
# The suite runs on the backend a job would pick (`training.backend: auto`), fixed here before any
# test module imports keras; CI runs part of it again with KERAS_BACKEND=tensorflow.
from tuning import backend  # noqa: E402

backend.select("auto")


FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


def in_ci() -> bool:
    """Whether this is CI (``CI=true``), where .ci/run installs everything the tests need."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(available: object, what: str, install: str) -> None:
    """Skip a test whose data or program this machine lacks, naming the command that installs
    it; under CI fail instead, since .ci/run installs it there."""
    if available:
        return
    message = f"{what} is not on this machine: {install}"
    if in_ci():
        pytest.fail(f"{message} (CI must have it: .ci/run installs it)")
    pytest.skip(message)


def require_fashion_mnist() -> None:
    """Debian's Fashion-MNIST files (the tests never download)."""
    require(
        FASHION_DIR.is_dir(),
        "Debian's Fashion-MNIST",
        "apt-get install dataset-fashion-mnist",
    )


@pytest.fixture(autouse=True)
def _seeded() -> None:
    random.seed(0)
    np.random.seed(0)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh current directory with no MLflow run or URI inherited from the environment."""
    enter(tmp_path, monkeypatch)
    return tmp_path


MLFLOW_ENV = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_RUN_ID",
    "MLFLOW_EXPERIMENT_ID",
    "MLFLOW_EXPERIMENT_NAME",
)


def enter(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``folder`` the current directory, with no MLflow run or URI from the environment
    (what :func:`workdir` does; a module-scoped fixture calls it in ``MonkeyPatch.context()``)."""
    monkeypatch.chdir(folder)
    for var in MLFLOW_ENV:
        monkeypatch.delenv(var, raising=False)


TINY_SPACE = experiment_files.TINY_SPACE  # the tiny experiment's search space


def write_experiment(folder: Path, name: str = "tiny", **changes: Any) -> Path:
    """Write a tiny digits experiment ``NAME.yaml`` and its ``space.yaml`` (``space=``, else
    :data:`TINY_SPACE`) into ``folder``; return its path. ``changes`` set keys, a double
    underscore going one level down: ``study__n_trials=1``, ``tracking={...}``
    (benchmarks/experiment_files.py, which the benchmarks write theirs with)."""
    space = changes.pop("space", TINY_SPACE)
    return experiment_files.write_experiment(
        folder, experiment_files.experiment(name, **changes), space, sort_keys=True
    )


@pytest.fixture
def make_experiment(workdir: Path) -> Callable[..., Path]:
    """Write a tiny digits experiment into the working folder and return its path
    (:func:`write_experiment`)."""

    def make(name: str = "tiny", **changes: Any) -> Path:
        return write_experiment(workdir, name, **changes)

    return make


def nothing_created(workdir: Path) -> None:
    """No study, tracking store or artifact folder exists in ``workdir``."""
    assert not (workdir / "optuna.db").exists(), "a study was created"
    assert not (workdir / "mlflow.db").exists(), "a tracking store was created"
    assert not (workdir / "mlruns").exists()


def _tracking_uri(store: Path | str) -> str:
    """``store`` as a tracking URI: a folder means its ``mlflow.db``, a string is a URI."""
    return f"sqlite:///{store / 'mlflow.db'}" if isinstance(store, Path) else store


def mlflow_client(store: Path | str) -> MlflowClient:
    """A client of the tracking store in folder ``store`` (``sqlite:///<store>/mlflow.db``),
    or of the tracking URI ``store`` (a server, ...)."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(_tracking_uri(store))


def experiment_id(store: Path | str, experiment: str) -> str:
    """The id of the MLflow experiment named ``experiment``, which must exist, in ``store``."""
    found = mlflow_client(store).get_experiment_by_name(experiment)
    assert found is not None, f"no MLflow experiment {experiment!r} in {_tracking_uri(store)}"
    return found.experiment_id


def mlflow_runs(
    store: Path | str, experiment: str, *, role: str | None = None, filter_string: str = ""
) -> list[Run]:
    """Every run of the MLflow experiment named ``experiment`` in ``store`` (a folder or a URI,
    as for :func:`mlflow_client`), in MLflow's default order. With ``role``, only the runs
    tagged ``tuning.role`` = ``role`` ("job", "trial", "recheck", "compare"); ``filter_string``
    narrows them further."""
    filters = [f"tags.`tuning.role` = '{role}'"] if role is not None else []
    filters += [filter_string] if filter_string else []
    return list(
        mlflow_client(store).search_runs(
            [experiment_id(store, experiment)],
            filter_string=" and ".join(filters),
            max_results=1000,
        )
    )


def parents_and_children(runs: list[Run]) -> tuple[list[Run], list[Run]]:
    """``runs`` split into the top-level ones (no ``mlflow.parentRunId``: a job's parent run)
    and the nested ones (trials, re-checks), each in the order given."""
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, children


def by_trial_number(runs: list[Run]) -> dict[int, Run]:
    """``runs`` keyed by their ``trial_number`` tag, as an int (a later run of the same number
    replaces an earlier one)."""
    return {int(r.data.tags["trial_number"]): r for r in runs}


def run_json(workdir: Path, run_id: str, name: str) -> Any:
    """A JSON artifact of a run in ``workdir``'s tracking store (``recheck.json``, ...)."""
    import mlflow

    path = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path=name, tracking_uri=_tracking_uri(workdir)
    )
    return json.loads(Path(path).read_text())


def one_line_error(result: Any, *fragments: str) -> str:
    """The CLI exited 2 with exactly one line on stderr holding every fragment; returns it."""
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def _optuna_tables_made(path: str) -> bool:
    """Whether the SQLite file ``path`` holds Optuna's tables, stamped with their version: an
    RDBStorage opened before that races the job's to create them (UNIQUE alembic_version)."""
    import sqlite3

    if not Path(path).is_file():
        return False
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            return db.execute("SELECT count(*) FROM alembic_version").fetchone()[0] > 0
        finally:
            db.close()
    except sqlite3.Error:  # no such table yet, or locked while it is being made
        return False


def wait_for_trials(
    study: str, proc: Any, ready: Callable[[list[Any]], bool], *, timeout: float = 180
) -> None:
    """Poll the study in ./optuna.db until ``ready(trials)`` while ``proc`` still runs."""
    import time

    import optuna

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if not _optuna_tables_made("optuna.db"):  # opening it now would make them too
                raise KeyError(study)
            trials = optuna.load_study(study_name=study, storage="sqlite:///optuna.db").trials
        except KeyError:  # the study does not exist yet
            trials = []
        if ready(trials):
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.5)
    raise AssertionError(f"study {study!r} not ready within {timeout} s")
