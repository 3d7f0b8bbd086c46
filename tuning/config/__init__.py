"""Experiment files: reading, defaults, command-line overrides and validation, in that order.

Owns the file format. An experiment YAML is read with ``yaml.safe_load``, overrides from the
command line (``--set dotted.key=value``, ``--n-trials`` ...) are applied to the raw mapping, the
result is validated by pydantic models that forbid unknown keys, then cross-field checks run on the
fully defaulted config, and the search space it names is read and validated too. Every problem is
one :class:`~tuning.errors.ConfigError` naming the file, the key and the fix. Nothing here creates
a study, a run or a file, and nothing imports Keras, Optuna or MLflow.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tuning.config.space import SearchSpace
from tuning.errors import ConfigError, config_error_from_validation

__all__ = [
    "DEFAULT_EXPERIMENT",
    "Experiment",
    "load_experiment",
    "load_search_space",
    "parse_set",
    "read_yaml",
]

DEFAULT_EXPERIMENT = "experiments/quickstart.yaml"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class DatasetConfig(_Model):
    """Which data to tune on, how to read it and how to split it."""

    name: str | None = Field(
        default=None,
        description="a registered dataset, e.g. digits or fashion_mnist (or give path)",
    )
    path: str | None = Field(
        default=None,
        description="a CSV or Parquet file, relative to the experiment file (instead of name)",
    )
    target: str | list[str] | None = Field(
        default=None,
        description="the target column of the file, or a list (multilabel, multi-output)",
    )
    features: list[str] | None = Field(
        default=None, description="feature columns (default: all but the target and drop)"
    )
    drop: list[str] = Field(default_factory=list, description="columns to leave out")
    categorical: list[str] = Field(
        default_factory=list, description="columns to treat as categories even if numeric"
    )
    impute: Literal["error", "mean", "median", "drop"] = Field(
        default="error",
        description="missing values: error, mean or median (of the training split), drop (rows)",
    )
    task: Literal["auto", "binary", "multiclass", "multilabel", "regression"] = Field(
        default="auto",
        description="auto (from the target), binary, multiclass, multilabel or regression",
    )
    validation: float | int | None = Field(
        default=None,
        description="validation split: a fraction of the training data (0 < x < 1) or a row "
        "count; default: the dataset's own (5000 for fashion_mnist, 0.2 otherwise)",
    )
    test: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="test fraction for datasets without a held-out test set (default 0.2)",
    )
    seed: int = Field(default=42, description="seed of the splits")

    @field_validator("validation")
    @classmethod
    def _validation_size(cls, v: float | int | None) -> float | int | None:
        if v is None:
            return v
        if isinstance(v, float) and not 0 < v < 1:
            raise ValueError(f"a fraction must be between 0 and 1 (got {v!r})")
        if isinstance(v, int) and v < 1:
            raise ValueError(f"a row count must be at least 1 (got {v!r})")
        return v


class ObjectiveConfig(_Model):
    """What the study optimizes."""

    metric: str = Field(
        default="val_loss",
        description="a validation metric logged by Keras, e.g. val_accuracy, val_loss, val_rmse",
    )
    direction: Literal["minimize", "maximize"] = Field(
        default="minimize", description="minimize or maximize"
    )


class SamplerConfig(_Model):
    """The Optuna sampler, named with its options so a resumed study samples the same way."""

    type: Literal["tpe", "random"] = Field(default="tpe", description="tpe or random")
    seed: int | None = Field(default=None, description="sampler seed (default: study.seed)")
    n_startup_trials: int = Field(
        default=5, ge=0, description="random trials before TPE starts modelling (tpe only)"
    )
    multivariate: bool = Field(default=True, description="multivariate TPE (tpe only)")
    constant_liar: bool = Field(
        default=True, description="constant liar for parallel workers (tpe only)"
    )


class PrunerConfig(_Model):
    """The Optuna pruner, fed the objective metric after every epoch."""

    type: Literal["median", "hyperband", "none"] = Field(
        default="median", description="median, hyperband or none"
    )
    n_startup_trials: int = Field(
        default=3, ge=0, description="trials before the median pruner prunes (median only)"
    )
    n_warmup_steps: int = Field(
        default=3, ge=0, description="epochs before a trial can be pruned (median only)"
    )
    min_resource: int = Field(default=1, ge=1, description="epochs of the first rung (hyperband)")
    reduction_factor: int = Field(default=3, ge=2, description="rung reduction (hyperband)")


def _shorthand(value: Any) -> Any:
    return {"type": value} if isinstance(value, str) else value


class StudyConfig(_Model):
    """The Optuna study: where it lives, how it samples and prunes, and the budget of one job."""

    name: str | None = Field(
        default=None, description="study name (default: the experiment's name)"
    )
    storage: str = Field(
        default="sqlite:///optuna.db",
        description="an Optuna storage URL: sqlite:///FILE.db or postgresql://USER@HOST/DB",
    )
    sampler: SamplerConfig = Field(
        default_factory=SamplerConfig, description="tpe or random, or a mapping with options"
    )
    pruner: PrunerConfig = Field(
        default_factory=PrunerConfig, description="median, hyperband or none, or a mapping"
    )
    n_trials: int | None = Field(
        default=10, ge=1, description="trials this job adds to the study (null: no limit)"
    )
    timeout: float | None = Field(
        default=None,
        gt=0,
        description="seconds this job may take from its start: no trial starts after it, and "
        "the trial in flight stops at its next epoch end (recorded PRUNED)",
    )
    seed: int = Field(default=0, description="seed of the sampler and of each trial's weights")
    heartbeat_interval: int | None = Field(
        default=60,
        ge=1,
        description="seconds between heartbeats; a trial silent for 2x this is marked FAIL when "
        "the study is next opened (null: off)",
    )

    max_retries: int = Field(
        default=0,
        ge=0,
        description="times a trial whose worker died (no heartbeat) is run again with the same "
        "parameters (0: never)",
    )
    engine: Literal["optuna", "keras_tuner"] = Field(
        default="optuna",
        description="what runs the search: optuna (the study in study.storage) or keras_tuner "
        "(a KerasTuner project in kt_studies/ next to the current folder; pruner ignored)",
    )
    tuner: Literal["random", "bayesian", "hyperband"] = Field(
        default="random",
        description="the KerasTuner tuner with engine: keras_tuner (random, bayesian or "
        "hyperband); optuna uses sampler and pruner instead",
    )

    @field_validator("sampler", "pruner", mode="before")
    @classmethod
    def _type_shorthand(cls, v: Any) -> Any:
        return _shorthand(v)

    @field_validator("name")
    @classmethod
    def _valid_name(cls, v: str | None) -> str | None:
        if v is not None and not _NAME.match(v):
            raise ValueError(f"must be letters, digits, '.', '_' or '-' (got {v!r})")
        return v


class EarlyStoppingConfig(_Model):
    """Early stopping on the objective metric, best weights restored (the stretch-pants guard)."""

    patience: int = Field(default=10, ge=1, description="epochs without improvement to wait")
    min_delta: float = Field(default=0.0, ge=0, description="smallest change that counts")


class TrainingConfig(_Model):
    """How each trial trains."""

    max_epochs: int = Field(default=100, ge=1, description="upper bound on epochs per trial")
    batch_size: int = Field(
        default=32, ge=1, description="batch size, unless the search space has batch_size"
    )
    early_stopping: EarlyStoppingConfig = Field(
        default_factory=EarlyStoppingConfig, description="patience and min_delta"
    )
    loss: Literal["auto", "mse", "mae", "huber"] = Field(
        default="auto",
        description="regression loss: auto (mse), mse, mae or huber; classification losses "
        "follow the task",
    )
    output_activation: Literal["auto", "linear", "softplus", "relu"] = Field(
        default="auto",
        description="regression output: auto/linear, or softplus/relu for positive values",
    )
    backend: Literal["auto", "jax", "tensorflow", "torch"] = Field(
        default="auto",
        description="Keras backend: auto ($KERAS_BACKEND if set, else the fastest installed: "
        "jax, then tensorflow, then torch), or one by name",
    )


class TrackingConfig(_Model):
    """Where and what MLflow records."""

    uri: str | None = Field(
        default=None,
        description="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)",
    )
    experiment: str | None = Field(
        default=None, description="MLflow experiment name (default: the experiment's name)"
    )
    log_models: Literal["best", "none"] = Field(
        default="best", description="best: log this job's best model on the parent run; none"
    )
    register_as: str | None = Field(
        default=None,
        description="registered model name: each job's best model becomes a version, and the "
        "alias champion moves to it when it beats the champion on the same metric and data",
    )


class Experiment(_Model):
    """A whole experiment file, validated and with every default filled in."""

    name: str = Field(description="experiment name: letters, digits, '.', '_' or '-'")
    description: str = Field(default="", description="free text")
    dataset: DatasetConfig = Field(description="{name: ..., validation: ...}")
    search_space: str | dict[str, Any] = Field(
        description="path of a search-space YAML, relative to the experiment file, or the space "
        "inline"
    )
    objective: ObjectiveConfig = Field(
        default_factory=ObjectiveConfig, description="{metric: ..., direction: ...}"
    )
    study: StudyConfig = Field(default_factory=StudyConfig, description="the Optuna study")
    training: TrainingConfig = Field(
        default_factory=TrainingConfig,
        description="{max_epochs: ..., batch_size: ..., early_stopping: {patience: ...}}",
    )
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, description="MLflow")

    @field_validator("name")
    @classmethod
    def _valid_name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"must be letters, digits, '.', '_' or '-' (got {v!r})")
        return v

    # Set by load_experiment, not read from the file.
    _source: str = ""
    _space: SearchSpace | None = None

    @property
    def source(self) -> str:
        """The file this experiment was read from."""
        return self._source

    @property
    def space(self) -> SearchSpace:
        """The validated search space."""
        assert self._space is not None, "load the experiment with load_experiment()"
        return self._space

    @property
    def study_name(self) -> str:
        """The Optuna study name (defaults to the experiment name)."""
        return self.study.name or self.name

    @property
    def mlflow_experiment(self) -> str:
        """The MLflow experiment name (defaults to the experiment name)."""
        return self.tracking.experiment or self.name

    def data_key(self) -> str:
        """A fingerprint of the data a score was measured on (dataset, split, file contents)."""
        import hashlib
        import json

        ds = self.dataset.model_dump(mode="json")
        if self.dataset.path and Path(self.dataset.path).is_file():
            digest = hashlib.sha256(Path(self.dataset.path).read_bytes()).hexdigest()
            ds["path"] = f"sha256:{digest[:16]}"
        return hashlib.sha256(json.dumps(ds, sort_keys=True).encode()).hexdigest()[:16]

    def resolved(self) -> dict[str, Any]:
        """Plain data that reproduces this job: every default filled, the space inline."""
        data = self.model_dump(mode="json")
        data["search_space"] = self.space.to_dict()
        return data


def _field_descriptions(model: type[BaseModel], prefix: str = "") -> dict[str, str]:
    """Dotted key -> description for every field, nested models included."""
    out: dict[str, str] = {}
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        out[key] = field.description or name
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out.update(_field_descriptions(ann, f"{key}."))
    return out


EXPERIMENT_FIELDS = _field_descriptions(Experiment)


# -- reading ---------------------------------------------------------------------------------


def read_yaml(path: str | os.PathLike[str], *, what: str = "file") -> Any:
    """Read one YAML file with ``yaml.safe_load``.

    Raises:
        ConfigError: if the file is missing, unreadable or not valid YAML.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(
            f"{what} not found",
            source=str(p),
            fix="check the path (it is relative to the current directory"
            + (", or to the experiment file for search_space)" if what != "file" else ")"),
        )
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read {what}: {e}", source=str(p)) from e
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(
            f"{where}not valid YAML ({problem})",
            source=str(p),
            fix="correct the YAML syntax at that place",
        ) from e


def load_search_space(
    path: str | os.PathLike[str] | None = None,
    *,
    data: Any = None,
    source: str | None = None,
) -> SearchSpace:
    """Read and validate a search space from a file, or from ``data`` already read.

    Raises:
        ConfigError: naming the file and key of the first problem.
    """
    if path is not None:
        source = str(path)
        data = read_yaml(path, what="search space file")
    return SearchSpace.from_dict(data, source=source)


def parse_set(item: str) -> tuple[str, Any]:
    """Split one ``--set dotted.key=value`` item; the value is read as YAML (``5``, ``null``).

    Raises:
        ConfigError: if there is no ``=`` or the key is empty.
    """
    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(
            f"expected dotted.key=value (got {item!r})",
            source="--set",
            fix="write e.g. --set study.n_trials=5",
        )
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    return key, parsed


def _apply_override(raw: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node: Any = raw
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = {}
            node[part] = child
        elif isinstance(child, str) and part in ("sampler", "pruner"):
            child = {"type": child}
            node[part] = child
        if not isinstance(child, dict):
            raise ConfigError(
                f"cannot set {key}: {'.'.join(parts[: i + 1])} is not a mapping",
                source="--set",
                fix="set the key itself instead",
            )
        node = child
    node[parts[-1]] = value


# -- cross-field checks (run after defaults are filled) ----------------------------------------

Check = Callable[[Experiment], None]
CHECKS: list[Check] = []


def register_check(check: Check) -> Check:
    """Register a cross-field rule ``check_*(experiment) -> None`` that raises ConfigError."""
    CHECKS.append(check)
    return check


OBJECTIVE_METRICS: dict[str, tuple[str, ...]] = {
    "binary": ("val_loss", "val_accuracy", "val_auc"),
    "multiclass": ("val_loss", "val_accuracy"),
    "multilabel": ("val_loss", "val_accuracy", "val_auc"),
    "regression": ("val_loss", "val_rmse", "val_mae"),
}
LOWER_IS_BETTER = ("val_loss", "val_rmse", "val_mae")


def static_task(exp: Experiment) -> str | None:
    """The task when it is known without reading data: a registered dataset, or declared."""
    from tuning.data import DATASETS

    if exp.dataset.name in DATASETS:
        return DATASETS[exp.dataset.name].task
    return None if exp.dataset.task == "auto" else exp.dataset.task


def check_objective_for(exp: Experiment, task: str) -> None:
    """The objective metric exists for ``task``, and a loss is never maximized.

    Raises:
        ConfigError: naming ``objective.metric`` or ``objective.direction``.
    """
    metric = exp.objective.metric
    known = OBJECTIVE_METRICS[task]
    if metric not in known:
        raise ConfigError(
            f"{metric!r} is not a validation metric of a {task} task",
            source=exp.source,
            key="objective.metric",
            fix=f"use one of {', '.join(known)}",
        )
    wanted = "minimize" if metric in LOWER_IS_BETTER else "maximize"
    if exp.objective.direction != wanted:
        raise ConfigError(
            f"{metric} should be {wanted}d, not {exp.objective.direction}d",
            source=exp.source,
            key="objective.direction",
            fix=f"set direction: {wanted}",
        )
    if task != "regression":
        for key, value in (
            ("loss", exp.training.loss),
            ("output_activation", exp.training.output_activation),
        ):
            if value != "auto":
                raise ConfigError(
                    f"training.{key} applies to regression only; this is a {task} task",
                    source=exp.source,
                    key=f"training.{key}",
                    fix="remove it (the task decides the loss and the output)",
                )


@register_check
def check_dataset(exp: Experiment) -> None:
    """Exactly one of name and path; a known name; a file with a target and a readable type."""
    from tuning.data import DATASETS, FILE_SUFFIXES

    ds = exp.dataset
    if (ds.name is None) == (ds.path is None):
        raise ConfigError(
            "give either dataset.name or dataset.path" + (", not both" if ds.name else ""),
            source=exp.source,
            key="dataset",
            fix=f"name: one of {', '.join(DATASETS)}; or path: FILE.csv with target: COLUMN",
        )
    if ds.name is not None:
        if ds.name not in DATASETS:
            raise ConfigError(
                f"unknown dataset {ds.name!r}",
                source=exp.source,
                key="dataset.name",
                fix=f"use one of {', '.join(DATASETS)}, or give path: FILE.csv",
            )
        for key in ("target", "features"):
            if getattr(ds, key) is not None:
                raise ConfigError(
                    f"dataset.{key} is for data files (path:), not the registered {ds.name}",
                    source=exp.source,
                    key=f"dataset.{key}",
                    fix="remove it",
                )
        return
    assert ds.path is not None
    if ds.target is None or ds.target == []:
        raise ConfigError(
            "a data file needs its target column",
            source=exp.source,
            key="dataset.target",
            fix="add target: COLUMN (or a list of columns)",
        )
    if Path(ds.path).suffix.lower() not in FILE_SUFFIXES:
        raise ConfigError(
            f"unsupported file type {Path(ds.path).suffix!r}",
            source=exp.source,
            key="dataset.path",
            fix="give a .csv or .parquet file",
        )
    if not Path(ds.path).is_file():
        raise ConfigError(
            f"data file {ds.path!r} not found",
            source=exp.source,
            key="dataset.path",
            fix="give a path relative to the experiment file",
        )


@register_check
def check_objective(exp: Experiment) -> None:
    """Objective and task agree, when the task is known before reading data."""
    task = static_task(exp)
    if task is not None:
        check_objective_for(exp, task)


@register_check
def check_retries(exp: Experiment) -> None:
    """Retrying a dead worker's trial needs heartbeats to notice it died."""
    if exp.study.max_retries and not exp.study.heartbeat_interval:
        raise ConfigError(
            "max_retries needs heartbeats to notice a dead worker, but heartbeat_interval is null",
            source=exp.source,
            key="study.max_retries",
            fix="set study.heartbeat_interval (e.g. 60), or max_retries: 0",
        )


@register_check
def check_registry(exp: Experiment) -> None:
    """Registering needs a logged model."""
    if exp.tracking.register_as and exp.tracking.log_models == "none":
        raise ConfigError(
            "register_as needs a logged model, but log_models is none",
            source=exp.source,
            key="tracking.register_as",
            fix="set log_models: best, or remove register_as",
        )


@register_check
def check_storage(exp: Experiment) -> None:
    """The study storage is an URL Optuna can open."""
    url = exp.study.storage
    schemes = ("sqlite:///", "postgresql://", "postgresql+", "mysql://", "mysql+")
    if not url.startswith(schemes):
        raise ConfigError(
            f"unsupported storage URL {redact(url)!r}",
            source=exp.source,
            key="study.storage",
            fix="use sqlite:///optuna.db (one machine) or postgresql://USER@HOST/DB",
        )
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
        parent = Path(path).parent if path and path != ":memory:" else Path(".")
        if not parent.is_dir():
            raise ConfigError(
                f"the folder {str(parent)!r} of the storage file does not exist",
                source=exp.source,
                key="study.storage",
                fix="create the folder or point the URL elsewhere",
            )


@register_check
def check_engine(exp: Experiment) -> None:
    """A KerasTuner job needs a trial budget; ``tuner`` means something to keras_tuner only.

    The pruner is ignored by keras_tuner (its tuners stop trials their own way); the storage is
    still checked by :func:`check_storage`, since the Optuna engine may run the same file.
    """
    study = exp.study
    if study.engine == "optuna" and study.tuner != "random":
        raise ConfigError(
            f"study.tuner {study.tuner!r} applies to engine keras_tuner only",
            source=exp.source,
            key="study.tuner",
            fix="set study.engine: keras_tuner, or remove tuner (optuna uses study.sampler)",
        )
    if study.engine == "keras_tuner" and study.n_trials is None:
        raise ConfigError(
            "engine keras_tuner needs a trial budget, but n_trials is null",
            source=exp.source,
            key="study.n_trials",
            fix="set study.n_trials (e.g. 10)",
        )


# -- loading ---------------------------------------------------------------------------------


def load_experiment(
    path: str | os.PathLike[str],
    *,
    overrides: Sequence[tuple[str, Any]] = (),
) -> Experiment:
    """Read, override, default and validate an experiment and the search space it names.

    Args:
        path: The experiment YAML file.
        overrides: ``(dotted.key, value)`` pairs applied after reading, in order.

    Returns:
        The validated experiment, with its search space loaded (``.space``).

    Raises:
        ConfigError: for the first problem found, naming the file and key.
    """
    source = str(path)
    raw = read_yaml(path, what="experiment file")
    if not isinstance(raw, dict):
        raise ConfigError(
            f"an experiment must be a mapping of keys (got {type(raw).__name__})",
            source=source,
            fix="start from experiments/quickstart.yaml",
        )
    raw = copy.deepcopy(raw)
    # search_space.* overrides apply to the space itself (file or inline), once it is read.
    space_overrides = [(k, v) for k, v in overrides if k.startswith("search_space.")]
    for key, value in overrides:
        if not key.startswith("search_space."):
            _apply_override(raw, key, value)
    try:
        exp = Experiment.model_validate(raw)
    except ValidationError as e:
        raise config_error_from_validation(e, source=source, fields=EXPERIMENT_FIELDS) from e
    exp._source = source
    if exp.dataset.path is not None and not Path(exp.dataset.path).is_absolute():
        exp.dataset.path = str(Path(path).parent / exp.dataset.path)
    if isinstance(exp.search_space, str):
        space_path = Path(exp.search_space)
        if not space_path.is_absolute():
            space_path = Path(path).parent / space_path
        if not space_path.is_file():
            raise ConfigError(
                f"search space file {str(space_path)!r} not found",
                source=source,
                key="search_space",
                fix="give a path relative to the experiment file, e.g. "
                "../search_spaces/stretch_pants.yaml",
            )
        space_source = str(space_path)
        space_raw = read_yaml(space_path, what="search space file")
    else:
        space_source = f"{source}: search_space"
        space_raw = copy.deepcopy(exp.search_space)
    if space_overrides:
        if not isinstance(space_raw, dict):
            space_raw = {}
        for key, value in space_overrides:
            _apply_override(space_raw, key.removeprefix("search_space."), value)
        space_source += " (with --set search_space.*)"
    exp._space = load_search_space(data=space_raw, source=space_source)
    for check in CHECKS:
        check(exp)
    return exp


def redact(url: str) -> str:
    """Hide a password in a URL (``postgresql://user:***@host/db``)."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)
