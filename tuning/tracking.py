"""Everything MLflow: the parent run of a job, one child run per trial, the best model.

Owns the MLflow layout of DESIGN.md. A job opens one parent run (or adopts the run ``mlflow run``
started for it), every trial gets a child run named ``trial-<number>`` nested under it, and every
run carries the ``study`` tag. Child runs get the trial's parameters under their search-space
names, every Keras metric per epoch (``step`` = epoch), the final objective and
``epochs_trained`` / ``n_params`` / ``train_seconds``, and a ``state`` tag. Whatever happens (a
normal end, an exception, Ctrl-C) a run is ended FINISHED, FAILED or KILLED, never left RUNNING.
This is the only module that imports mlflow.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from tuning.data import Dataset

# No progress bars in the job's output: one line per trial is what a person reads.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
# A tracking server that went away is reported in seconds, not after MLflow's default
# 7 retries with exponential backoff (minutes).
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")

import mlflow  # noqa: E402
import numpy as np  # noqa: E402
import optuna  # noqa: E402
import requests  # noqa: E402
from mlflow.data.code_dataset_source import CodeDatasetSource  # noqa: E402
from mlflow.entities import DatasetInput, InputTag, Metric, Param, RunTag  # noqa: E402
from mlflow.models import infer_signature  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT  # noqa: E402

from tuning import process  # noqa: E402
from tuning.champion import Decision, Standing  # noqa: E402
from tuning.config import redact  # noqa: E402
from tuning.config.schema import MEASURES  # noqa: E402
from tuning.errors import ConfigError, NotLearning  # noqa: E402
from tuning.locks import store_lock  # noqa: E402
from tuning.registry import (  # noqa: E402, F401 (re-exported)
    DEFAULT_TRACKING_URI,
    absolute_sqlite,
    resolve_tracking_uri,
    store_exists,
)

__all__ = [
    "Champion",
    "ParentRun",
    "Tracker",
    "TrialRun",
    "check_tracking_uri",
    "open_client",
    "resolve_tracking_uri",
    "ui_link",
]

# What kind of experiment this is, for MLflow's UI. Checked in Chromium with MLflow 3.17.2: the
# tag alone does not choose the landing page; the UI's GenAI / Model training switch does (URL
# parameter `workflowType`, then localStorage), so `ui_link` puts it in the link we print.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
_PARAM_MAX = 6000


def check_tracking_uri(uri: str, *, source: str | None = None, timeout: float = 5.0) -> None:
    """Fail fast, before anything is created, when the tracking store cannot be used.

    Raises:
        ConfigError: for a server that does not answer, or a SQLite file in a missing folder.
    """
    if uri.startswith(("http://", "https://")):
        url = uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (http only)
                if resp.status >= 400:
                    raise urllib.error.HTTPError(url, resp.status, "unhealthy", resp.headers, None)
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", None) or e
            raise ConfigError(
                f"the MLflow tracking server {redact(uri)} does not answer ({reason})",
                source=source,
                key="tracking.uri",
                fix="start it (mlflow server --host 127.0.0.1 --port 5000) or use "
                "sqlite:///mlflow.db",
            ) from e
    elif uri.startswith("sqlite:///"):
        path = uri.removeprefix("sqlite:///")
        parent = Path(path).parent
        if not parent.is_dir():
            raise ConfigError(
                f"the folder {str(parent)!r} of the tracking database does not exist",
                source=source,
                key="tracking.uri",
                fix="create the folder or use sqlite:///mlflow.db",
            )
    elif uri.startswith("file:") or "://" not in uri:
        if os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() not in ("1", "true"):
            raise ConfigError(
                f"MLflow 3 refuses the file store {uri!r}",
                source=source,
                key="tracking.uri",
                fix="use sqlite:///mlflow.db (or set MLFLOW_ALLOW_FILE_STORE=true)",
            )


def open_client(uri: str) -> MlflowClient:
    """A client of the tracking store at ``uri``.

    MLflow opens its store when the client is made, and the first opening of a SQL store
    (SQLite, PostgreSQL) creates its tables and runs its migrations: under
    :func:`tuning.locks.store_lock`, so that jobs starting at the same moment create it once
    (the others wait, then find it complete). A server (``http://``) creates its own store.
    """
    # With a server MLflow prints two "View run/experiment at: URL" lines for every run it
    # ends, after a get_run of its own: 20,000 lines and 10,000 requests for a 10,000-trial
    # study, and a URL that can hold a password. The job prints its own lines; a user who
    # wants MLflow's sets MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT=false.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    with store_lock(uri):
        return MlflowClient(tracking_uri=uri)


def is_unreachable(error: BaseException) -> bool:
    """Whether ``error`` (or what caused it) says the tracking server cannot be reached."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, (requests.exceptions.ConnectionError, ConnectionError)):
            return True
        text = str(seen)
        if isinstance(seen, mlflow.exceptions.MlflowException) and (
            "Max retries exceeded" in text or "Connection refused" in text
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def ui_link(uri: str, experiment_id: str) -> str:
    """How to see an experiment's runs table in the MLflow UI (not its GenAI overview)."""
    page = f"#/experiments/{experiment_id}?workflowType=machine_learning"
    if uri.startswith(("http://", "https://")):
        return f"{redact(uri).rstrip('/')}/{page}"
    # A database's password stays out of the terminal: the person running it knows it.
    return f"mlflow ui --backend-store-uri {redact(uri)}, then open http://127.0.0.1:5000/{page}"


# Which splits each run used: a trial trains on train and picks epochs on validation; the job's
# best model is also scored on test, on the parent run.
TRIAL_SPLITS = ("train", "validation")
JOB_SPLITS = ("train", "validation", "test")


def dataset_inputs(data: Dataset) -> dict[str, DatasetInput]:
    """The job's data as MLflow dataset inputs, one per split, made once per job.

    Each split is a dataset named after the data (``digits``), with its source (the file's
    path, or the loader that made it), a digest of all its values (SHA-256 of the feature and
    target arrays, so two studies that used the same rows show the same digest; MLflow's own
    digest looks at the first 10,000 values only), its shape as profile, and the split as the
    ``mlflow.data.context`` tag, which MLflow's runs table shows and filters on.
    """
    source = data.source or data.name
    is_file = Path(source).is_absolute()
    inputs = {}
    for split, x, y in (
        ("train", data.x_train, data.y_train),
        ("validation", data.x_valid, data.y_valid),
        ("test", data.x_test, data.y_test),
    ):
        digest = hashlib.sha256()
        for array in (x, y):
            array = np.ascontiguousarray(array)
            digest.update(f"{array.dtype}{array.shape}".encode())
            digest.update(array.data)
        dataset = mlflow.data.from_numpy(
            x,
            targets=y,
            source=source if is_file else CodeDatasetSource({"loader": source}),
            name=data.name,
            digest=digest.hexdigest()[:16],
        )
        tag = InputTag(key=MLFLOW_DATASET_CONTEXT, value=split)
        inputs[split] = DatasetInput(dataset=dataset._to_mlflow_entity(), tags=[tag])
    return inputs


def _log_inputs(client: MlflowClient, run_id: str, inputs: list[DatasetInput]) -> None:
    """``log_inputs``, again when a worker of the same study added the same dataset at the same
    moment: MLflow's SQL store checks for the dataset, then inserts it, so two processes can both
    insert it and one fails on the unique key; the second try finds it and only links it."""
    for attempt in range(3):
        try:
            client.log_inputs(run_id, inputs)
            return
        except mlflow.exceptions.MlflowException as e:
            if attempt == 2 or "unique" not in str(e).lower():
                raise
            time.sleep(0.1 * (attempt + 1))


def _registry_collision(error: mlflow.exceptions.MlflowException) -> bool:
    """Whether registering failed only because another job registered at the same moment.

    MLflow (3.17, every store) already lets the loser of creating the registered model go on
    to add its version, and retries taking the next version number three times; this is for
    what gets through: a store or release that reports the collision instead (the registered
    model "already exists", or "Model Version creation error ... Giving up").
    """
    return error.error_code in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS") or (
        "Model Version creation error" in str(error)
    )


def predict(model_uri: str, rows: pd.DataFrame | np.ndarray) -> np.ndarray | pd.DataFrame:
    """What a logged model answers for raw ``rows`` (labels, or values for regression)."""
    return mlflow.pyfunc.load_model(model_uri).predict(rows)


def _flatten(data: Mapping[str, object], prefix: str = "") -> dict[str, object]:
    out: dict[str, Any] = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{key}."))
        else:
            out[key] = v
    return out


def _param_value(v: object) -> str:
    text = "null" if v is None else str(v)
    return text[:_PARAM_MAX]


def _is_float(text: str | None) -> bool:
    try:
        float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return True


def _now_ms() -> int:
    return int(time.time() * 1000)


CHAMPION = "champion"


@dataclasses.dataclass
class Champion:
    """The outcome of registering a job's best model."""

    name: str
    version: str
    promoted: bool
    reason: str

    def describe(self) -> str:
        """One line for the job's output."""
        if self.promoted:
            return f"registered {self.name} v{self.version}, now @champion ({self.reason})"
        return f"registered {self.name} v{self.version} as a challenger ({self.reason})"


class Run:
    """One MLflow run, written through the client straight to the store: the base of the
    trial's and the job's runs (metrics, tags, params, files, its end)."""

    def __init__(self, client: MlflowClient, run_id: str) -> None:
        self.client = client
        self.run_id = run_id

    def log_metrics(self, metrics: Mapping[str, float | None], *, step: int = 0) -> None:
        """Log final metrics (at ``step``, 0 by default); ``None`` and non-finite values are
        left out."""
        ts = _now_ms()
        batch = [
            Metric(key=k, value=float(v), timestamp=ts, step=step)
            for k, v in metrics.items()
            if v is not None and math.isfinite(float(v))
        ]
        if batch:
            self.client.log_batch(self.run_id, metrics=batch)

    def set_tags(self, tags: Mapping[str, object]) -> None:
        """Set tags on the run."""
        self.client.log_batch(
            self.run_id, tags=[RunTag(k, _param_value(v)) for k, v in tags.items()]
        )

    def log_params(self, params: Mapping[str, object]) -> None:
        """Log params, flattening nested mappings to dotted keys."""
        items = [Param(k, _param_value(v)) for k, v in _flatten(params).items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_artifact(self, path: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        """Upload one file."""
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_text(self, text: str, name: str) -> None:
        """Upload a text artifact."""
        self.client.log_text(self.run_id, text, name)

    def end(self, status: str) -> None:
        """End the run with FINISHED, FAILED or KILLED."""
        self.client.set_terminated(self.run_id, status=status)


class TrialRun(Run):
    """The child run of one trial (or of a re-check's re-run); metrics go straight to the store
    as they come."""

    def __init__(self, client: MlflowClient, run_id: str) -> None:
        super().__init__(client, run_id)
        self.epochs = 0
        self.state = "running"

    def log_epoch(self, epoch: int, logs: Mapping[str, float]) -> None:
        """Log every metric of one epoch, ``step`` = epoch (0-based, as Keras counts)."""
        self.epochs = epoch + 1
        ts = _now_ms()
        metrics = [
            Metric(key=k, value=float(v), timestamp=ts, step=epoch)
            for k, v in logs.items()
            if math.isfinite(float(v))
        ]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)

    def log_history(self, history: Mapping[str, list[float]]) -> None:
        """Log an earlier fit's epochs (``step`` = epoch from 0), as :meth:`log_epoch` would
        have: a promoted trial's run shows the whole curve it continues."""
        ts = _now_ms()
        metrics = [
            Metric(key=k, value=float(v), timestamp=ts, step=epoch)
            for k, values in history.items()
            for epoch, v in enumerate(values)
            if math.isfinite(float(v))
        ]
        for i in range(0, len(metrics), 1000):  # MLflow's limit per batch
            self.client.log_batch(self.run_id, metrics=metrics[i : i + 1000])
        self.epochs = max((len(v) for v in history.values()), default=0)


@contextmanager
def _ended(trial_run: TrialRun) -> Iterator[None]:
    """End ``trial_run`` with the trial's state whatever happens: complete (normal exit),
    pruned (``TrialPruned``), not_learning (:class:`~tuning.errors.NotLearning`, run status
    FINISHED as for pruned), failed (any other exception) or killed (Ctrl-C / SIGTERM, run
    status KILLED); ``reason`` says why it did not complete."""
    status, state, reason = "FINISHED", "complete", None
    try:
        yield
    except optuna.TrialPruned as e:
        state, reason = "pruned", str(e) or "pruned"
        raise
    except NotLearning as e:
        state, reason = "not_learning", str(e) or "not learning"
        raise
    except KeyboardInterrupt:
        status, state, reason = "KILLED", "killed", "interrupted (Ctrl-C or SIGTERM)"
        raise
    except BaseException as e:
        status, state = "FAILED", "failed"
        reason = f"{type(e).__name__}: {e}"
        raise
    finally:
        trial_run.state = state
        try:
            tags: dict[str, Any] = {"state": state}
            if reason:
                tags["reason"] = reason[:_PARAM_MAX]
            trial_run.set_tags(tags)
        finally:
            trial_run.end(status)


class ParentRun(Run):
    """The parent run of one job."""

    def __init__(self, tracker: Tracker, run_id: str) -> None:
        super().__init__(tracker.client, run_id)
        self.tracker = tracker

    def log_inputs(self, inputs: Mapping[str, DatasetInput]) -> None:
        """Log the job's data splits as this run's dataset inputs; trials get theirs too."""
        self.tracker.data_inputs = [inputs[s] for s in TRIAL_SPLITS if s in inputs]
        _log_inputs(self.client, self.run_id, [inputs[s] for s in JOB_SPLITS if s in inputs])

    def log_model(
        self,
        *,
        keras_path: str | os.PathLike[str],
        meta: Mapping[str, object],
        input_example: pd.DataFrame | np.ndarray,
        pip_requirements: list[str],
    ) -> str:
        """Log a saved Keras model as an MLflow pyfunc model with signature and input example.

        The model is logged as code (``_pyfunc_model.py``): loading it needs only mlflow and
        Keras, not this package. ``predict`` returns class labels for classification (or
        probabilities with ``params={"output": "probabilities"}``) and values for regression.

        Returns:
            The model URI (``models:/<model_id>``), loadable with ``mlflow.pyfunc.load_model``.
        """
        # Keras (through encoding): only here, long after the job chose the backend.
        from tuning.data.encoding import predict_raw

        with tempfile.TemporaryDirectory() as tmp:
            meta_path = Path(tmp) / "meta.json"
            meta_path.write_text(json.dumps(dict(meta)))
            # Read by _pyfunc_model.py before keras is imported: serve on the training backend.
            backend_file = Path(tmp) / "keras_backend.py"
            backend_file.write_text(f"BACKEND = {meta.get('backend', '')!r}\n")
            example = input_example
            code = Path(__file__).with_name("_pyfunc_model.py")
            encoding = Path(__file__).with_name("data") / "encoding.py"
            # The output schema is inferred from what the model predicts on the example.
            output = predict_raw(str(keras_path), dict(meta), example)
            signature = infer_signature(example, output, params={"output": "labels"})
            # Model.log takes the run explicitly: no fluent active run to resume and end.
            info = mlflow.models.Model.log(
                artifact_path=None,
                name="model",
                flavor=mlflow.pyfunc,
                run_id=self.run_id,
                python_model=str(code),
                code_paths=[str(encoding), str(backend_file)],
                artifacts={"keras_model": str(keras_path), "meta": str(meta_path)},
                signature=signature,
                input_example=example,
                pip_requirements=pip_requirements,
            )
        return str(info.model_uri)

    def register_model(
        self,
        *,
        name: str,
        model_uri: str,
        value: float,
        metric: str,
        direction: str,
        data_key: str,
        trial: int | None,
        data_tags: Mapping[str, str] | None = None,
        figures: Mapping[str, float] | None = None,
    ) -> str:
        """Register the logged model as a new version of ``name``, tagged with what it was
        scored on (read back by :meth:`champion_standing`); returns the version."""
        tags = {
            "study": self.tracker.study,
            "trial": str(trial),
            "metric": metric,
            "direction": direction,
            "value": repr(float(value)),
            "data": data_key,
            "parent_run_id": self.run_id,
            **(data_tags or {}),
            **{k: repr(float(v)) for k, v in (figures or {}).items()},
        }
        for attempt in range(3):
            try:
                return str(mlflow.register_model(model_uri, name, tags=tags).version)
            except mlflow.exceptions.MlflowException as e:
                if attempt == 2 or not _registry_collision(e):
                    raise
                time.sleep(0.2 * (attempt + 1))
        raise AssertionError("unreachable")  # the loop returns or raises

    def champion_standing(self, name: str) -> Standing | None:
        """The version ``@champion`` points at, as its tags record it; ``None`` when none does."""
        try:
            current = self.client.get_model_version_by_alias(name, CHAMPION)
        except mlflow.exceptions.MlflowException:
            return None
        tags = current.tags
        value, rows = tags.get("value"), tags.get("data_rows")
        return Standing(
            version=str(current.version),
            metric=tags.get("metric"),
            data=tags.get("data"),
            value=float(value) if value is not None else None,
            inputs=tags.get("data_inputs"),
            rows=int(rows) if rows and rows.isdigit() else None,
            figures={k: float(tags[k]) for k in MEASURES if _is_float(tags.get(k))},
        )

    def record_champion(self, name: str, version: str, decision: Decision) -> Champion:
        """Record ``decision`` on version ``version`` of ``name``: the test, its p-value and
        the decision as tags (on every version weighed against a champion), its ``role``, and
        ``@champion`` moved where it promotes; the parent run is tagged with the outcome."""
        client = self.client
        if decision.against is not None:
            p_value = "" if math.isnan(decision.p_value) else repr(decision.p_value)
            client.set_model_version_tag(name, version, "champion_test", decision.test)
            client.set_model_version_tag(name, version, "champion_p_value", p_value)
            client.set_model_version_tag(name, version, "champion_decision", decision.text)
        role = CHAMPION if decision.promote else "challenger"
        client.set_model_version_tag(name, version, "role", role)
        if decision.promote:
            if decision.against is not None:
                client.set_model_version_tag(name, decision.against, "role", "former champion")
            client.set_registered_model_alias(name, CHAMPION, version)
        self.set_tags({"registered_model": name, "registered_version": version, "role": role})
        return Champion(
            name=name, version=version, promoted=decision.promote, reason=decision.reason
        )


class Tracker:
    """MLflow for one job: the store, the experiment, and the runs this job opens.

    Args:
        uri: Tracking URI (already checked with :func:`check_tracking_uri`).
        experiment: MLflow experiment name; ignored under ``mlflow run``, whose run decides it.
        study: Optuna study name, tagged on every run.
    """

    def __init__(self, *, uri: str, experiment: str, study: str) -> None:
        mlflow.set_tracking_uri(uri)
        self.uri = uri
        self.study = study
        self.client = open_client(uri)
        self.adopted_run_id = os.environ.get("MLFLOW_RUN_ID") or None
        self.data_inputs: list[DatasetInput] = []  # set by ParentRun.log_inputs
        if self.adopted_run_id:
            run = self.client.get_run(self.adopted_run_id)
            self.experiment_id = run.info.experiment_id
        else:
            self.experiment_id = self._experiment_id(experiment)
        exp = self.client.get_experiment(self.experiment_id)
        if exp.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
            self._tag_experiment_kind()
        self.experiment_name = exp.name
        # Logged models belong to the fluent "active" experiment: make it this one.
        mlflow.set_experiment(experiment_id=self.experiment_id)

    def _tag_experiment_kind(self) -> None:
        """Tag an experiment made elsewhere (``mlflow run``, MLflow's UI) with its kind; another
        job tagging it at the same moment may win the insert, and then the tag is there."""
        try:
            self.client.set_experiment_tag(
                self.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND
            )
        except mlflow.exceptions.MlflowException:
            tags = self.client.get_experiment(self.experiment_id).tags
            if tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
                raise

    def _experiment_id(self, name: str) -> str:
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            if exp.lifecycle_stage == "deleted":
                raise ConfigError(
                    f"the MLflow experiment {name!r} is deleted",
                    key="tracking.experiment",
                    fix="restore it (mlflow experiments restore) or choose another name",
                )
            return str(exp.experiment_id)
        try:
            return str(
                self.client.create_experiment(name, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
            )
        except mlflow.exceptions.MlflowException:
            exp = self.client.get_experiment_by_name(name)  # another worker created it first
            if exp is None:
                raise
            return str(exp.experiment_id)

    def artifact_location(self) -> str:
        """Where this experiment keeps its artifacts (password masked), for an error message;
        the tracking store itself when that cannot be read (it may be failing too)."""
        try:
            return redact(str(self.client.get_experiment(self.experiment_id).artifact_location))
        except Exception:
            return f"of {redact(self.uri)}"

    def start_parent(self, *, run_name: str, tags: Mapping[str, object]) -> ParentRun:
        """Open this job's parent run, or adopt the one ``mlflow run`` created."""
        all_tags = {
            "study": self.study,
            "tuning.role": "job",
            **process.identity(),  # host, pid, process_start: close_dead_jobs reads them
            **tags,
        }
        if self.adopted_run_id:
            run_id = self.adopted_run_id
            self.client.log_batch(
                run_id, tags=[RunTag(k, _param_value(v)) for k, v in all_tags.items()]
            )
        else:
            run = self.client.create_run(
                self.experiment_id,
                run_name=run_name,
                tags={k: _param_value(v) for k, v in all_tags.items()},
            )
            run_id = run.info.run_id
        return ParentRun(self, run_id)

    @contextmanager
    def trial_run(
        self,
        parent: ParentRun,
        *,
        number: int,
        params: Mapping[str, object],
        recheck: tuple[int, str] | None = None,
    ) -> Iterator[TrialRun]:
        """A child run for trial ``number``, ended with the right status whatever happens.

        The ``state`` tag is the trial's: complete (normal exit), pruned (``TrialPruned``),
        not_learning (:class:`~tuning.errors.NotLearning`, run status FINISHED as for pruned),
        failed (any other exception) or killed (Ctrl-C / SIGTERM, run status KILLED).
        ``recheck=(i, trial_run_id)`` makes the run of the trial's i-th re-check instead:
        ``trial-<number>-recheck-<i>``, nested under the trial's own run (or under the parent
        when the trial's run is unknown).
        """
        tags = {
            "mlflow.parentRunId": parent.run_id,
            "study": self.study,
            "trial_number": str(number),
            "state": "running",
            "tuning.role": "trial",
        }
        name = f"trial-{number}"
        if recheck is not None:
            name = f"{name}-recheck-{recheck[0]}"
            tags.update({"tuning.role": "recheck", "recheck": str(recheck[0])})
            tags["mlflow.parentRunId"] = recheck[1] or parent.run_id
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        trial_run = TrialRun(self.client, run.info.run_id)
        with _ended(trial_run):
            if params:
                trial_run.log_params(params)
            if self.data_inputs:
                _log_inputs(self.client, trial_run.run_id, self.data_inputs)
            yield trial_run

    @contextmanager
    def reopen_trial_run(self, run_id: str, *, epochs: int) -> Iterator[TrialRun]:
        """A finished trial's run, running again while the trial continues training from where
        it stopped (issue 26): its epochs are logged on from ``epochs``, and it is ended again
        whatever happens, FINISHED and ``state=complete`` as its trial is in the study, also
        when the continuation fails or is interrupted (the epochs it logged stand; the tag
        ``continue_failed`` says why)."""
        self.client.update_run(run_id, status="RUNNING")
        trial_run = TrialRun(self.client, run_id)
        trial_run.epochs = epochs
        trial_run.set_tags({"state": "running"})
        tags = {"state": "complete"}
        try:
            yield trial_run
        except KeyboardInterrupt:
            tags["continue_failed"] = "interrupted (Ctrl-C or SIGTERM)"
            raise
        except BaseException as e:
            tags["continue_failed"] = f"{type(e).__name__}: {e}"[:_PARAM_MAX]
            raise
        finally:
            trial_run.state = "complete"
            try:
                trial_run.set_tags(tags)
            finally:
                trial_run.end("FINISHED")

    def close_dead_jobs(self, *, study: str | None = None) -> int:
        """End parent runs of this study left RUNNING by a job that no longer runs.

        A job killed with SIGKILL cannot end its own run. A job in this boot, pid namespace and
        host (:func:`tuning.process.is_dead`) is checked at once. Any other one (another machine,
        container or pid namespace) cannot be checked from here: it is ended only once Optuna's
        heartbeat failed its trial (its trial run ended KILLED by :meth:`close_orphans`, tag
        ``state=failed``) and it started no run after that one; a job still working is left
        alone.

        Args:
            study: Another study's (an earlier version's) instead of this job's.

        Returns:
            How many parent runs were ended (as KILLED).
        """
        name = study or self.study
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=(
                f"tags.study = '{name}' and tags.`tuning.role` = 'job' "
                "and attributes.status = 'RUNNING'"
            ),
            max_results=1000,
        )
        stalled: dict[str, tuple[int, int]] | None = None  # read once, only where needed
        closed = 0
        for run in runs:
            tags, run_id = run.data.tags, run.info.run_id
            if run_id == self.adopted_run_id:
                continue
            where = f"its process {tags.get('pid', '?')} on {tags.get('host', '?')}"
            dead = process.is_dead(tags)
            if dead is None:
                if stalled is None:
                    stalled = self._stalled_jobs(name)
                if run_id not in stalled or self._ran_after(run_id, stalled[run_id][1]):
                    continue
                reason = (
                    f"{where} stopped: Optuna's heartbeat failed its trial {stalled[run_id][0]}"
                )
            elif dead:
                reason = f"{where} died"
            else:
                continue
            self.client.set_tag(run_id, "reason", reason)
            self.client.set_terminated(run_id, status="KILLED")
            closed += 1
        return closed

    def _stalled_jobs(self, study: str) -> dict[str, tuple[int, int]]:
        """Parent run id -> (trial number, start time) of the latest of its trial runs that
        :meth:`close_orphans` ended: runs of trials Optuna failed while they ran."""
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=(
                f"tags.study = '{study}' and tags.`tuning.role` = 'trial' "
                "and attributes.status = 'KILLED' and tags.state = 'failed'"
            ),
            max_results=1000,
        )
        out: dict[str, tuple[int, int]] = {}
        for run in runs:
            parent = run.data.tags.get("mlflow.parentRunId")
            start = int(run.info.start_time or 0)
            if parent and start >= out.get(parent, (0, -1))[1]:
                out[parent] = (int(run.data.tags.get("trial_number", -1)), start)
        return out

    def _ran_after(self, parent_run_id: str, start_time: int) -> bool:
        """Whether job ``parent_run_id`` started a run after ``start_time`` (ms): it carried on."""
        later = self.client.search_runs(
            [self.experiment_id],
            filter_string=(
                f"tags.`mlflow.parentRunId` = '{parent_run_id}' "
                f"and attributes.start_time > {start_time}"
            ),
            max_results=1,
        )
        return bool(later)

    def close_orphans(
        self,
        dead_trials: Mapping[int, str],
        *,
        study: str | None = None,
        finished_but_failed: Iterable[int] = (),
    ) -> int:
        """End trial runs left RUNNING by a killed process, given the trials Optuna knows dead.

        Args:
            dead_trials: trial number -> Optuna state name, for trials no longer running.
            study: Whose trials they are, when not this job's study (an earlier version).
            finished_but_failed: Numbers of trials Optuna marked FAIL whose runs may have ended
                FINISHED: the process ended the run, then died or lost the study storage before
                Optuna heard the result (its heartbeat failed the trial, which ran again). Such
                runs are set KILLED, ``state=failed``, so that both stores tell the same story.

        Returns:
            How many runs were ended or set KILLED (tagged ``state=failed``).
        """
        name = study or self.study
        closed = 0
        for number in finished_but_failed:
            for run in self.client.search_runs(
                [self.experiment_id],
                filter_string=(
                    f"tags.study = '{name}' and tags.`tuning.role` = 'trial' "
                    f"and tags.trial_number = '{number}' and attributes.status = 'FINISHED'"
                ),
                max_results=10,
            ):
                was = run.data.tags.get("state", "?")
                self.client.set_tag(run.info.run_id, "state", "failed")
                self.client.set_tag(
                    run.info.run_id,
                    "reason",
                    f"the run ended {was}, but the study never got the result: Optuna marked "
                    "the trial FAIL (its process died or lost the study storage)",
                )
                self.client.set_terminated(
                    run.info.run_id, status="KILLED", end_time=run.info.end_time
                )
                closed += 1
        if not dead_trials:
            return closed
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=(
                f"tags.study = '{name}' and tags.`tuning.role` = 'trial' "
                "and attributes.status = 'RUNNING'"
            ),
            max_results=1000,
        )
        for run in runs:
            number = int(run.data.tags.get("trial_number", -1))
            if number in dead_trials:
                self.client.set_tag(run.info.run_id, "state", "failed")
                self.client.set_tag(
                    run.info.run_id, "reason", "its process died; Optuna marked the trial FAIL"
                )
                self.client.set_terminated(run.info.run_id, status="KILLED")
                closed += 1
        return closed


def champions_by_study(uri: str) -> dict[str, str]:
    """Study name -> ``MODEL vN`` of the registered models whose ``@champion`` came from that
    study; empty where there is no store or no registry to read (it is optional to callers)."""
    if not store_exists(uri):
        return {}  # no store yet: do not create one by looking
    try:
        client = MlflowClient(uri)
        out = {}
        for model in client.search_registered_models():
            if CHAMPION in (model.aliases or {}):
                version = client.get_model_version_by_alias(model.name, CHAMPION)
                study = version.tags.get("study")
                if study:
                    out[study] = f"{model.name} v{version.version}"
        return out
    except Exception:  # the registry is optional here: the studies are what was asked for
        return {}


def find_test_scores(uri: str, picks: Mapping[str, int]) -> dict[str, float | None]:
    """Test score of each study's best model: the parent run that logged that trial's model.

    The score is ``test_<objective>`` (e.g. ``test_accuracy`` for ``val_accuracy``), the objective
    read from the run's ``objective_metric`` tag.

    Args:
        uri: Tracking URI.
        picks: Study name -> its best trial number.
    """
    client = open_client(uri)
    experiment_ids = [e.experiment_id for e in client.search_experiments()]
    out: dict[str, float | None] = {}
    for study, trial in picks.items():
        runs = client.search_runs(
            experiment_ids,
            filter_string=f"tags.study = '{study}' and tags.model_trial = '{trial}'",
            max_results=5,
        )
        values = []
        for r in runs:
            metric = "test_" + r.data.tags.get("objective_metric", "").removeprefix("val_")
            if metric in r.data.metrics:
                values.append(r.data.metrics[metric])
        out[study] = values[0] if values else None
    return out


def log_comparison(
    uri: str, *, studies: list[str], files: list[Path], metrics: Mapping[str, float]
) -> str:
    """Record a comparison as a run (table and plot as artifacts) next to the first study's runs.

    Returns:
        The run id.
    """
    client = open_client(uri)
    experiment_ids = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(
        experiment_ids, filter_string=f"tags.study = '{studies[0]}'", max_results=1
    )
    if runs:
        experiment_id = runs[0].info.experiment_id
    else:
        found = client.get_experiment_by_name("tuning-compare")
        experiment_id = (
            found.experiment_id
            if found
            else client.create_experiment(
                "tuning-compare", tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
            )
        )
    run = client.create_run(
        experiment_id,
        run_name="compare-" + "-vs-".join(studies),
        tags={"tuning.role": "compare", "studies": ",".join(studies)},
    )
    try:
        for path in files:
            client.log_artifact(run.info.run_id, str(path))
        Run(client, run.info.run_id).log_metrics(metrics)
    except BaseException:
        client.set_terminated(run.info.run_id, status="FAILED")
        raise
    client.set_terminated(run.info.run_id, status="FINISHED")
    return str(run.info.run_id)
