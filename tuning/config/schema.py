"""The experiment schema: pydantic models of an experiment file, with every field's default and
description, and the keys that must not be misspelled (``extra="forbid"``).

Owns what an experiment may say, not how it is read (``loading.py``) or which combinations of
values make sense together (``checks.py``).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_serializer,
    field_validator,
    model_validator,
)

from tuning.config.space import SearchSpace
from tuning.objective import Objective, Ranking

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


class ObjectiveConfig(_Model, Ranking):
    """What the study optimizes, and which of its values are better
    (:class:`~tuning.objective.Ranking`: ``better``, ``sort_key``, ``best``, ...)."""

    metric: str = Field(
        default="val_loss",
        description="a validation metric logged by Keras, e.g. val_accuracy, val_loss, val_rmse",
    )
    direction: Literal["minimize", "maximize"] = Field(
        default="minimize", description="minimize or maximize"
    )
    # With several objectives (``objective:`` a list), the ones after this, the primary.
    _rest: tuple[Objective, ...] = PrivateAttr(default=())


MEASURES = ("n_params", "model_bytes", "latency_ms")


class MeasuresConfig(_Model):
    """How the model-size and speed measures are taken (``tuning.measures``)."""

    latency_batch: int = Field(
        default=256,
        ge=1,
        description="latency_ms: rows per prediction batch (the first rows of the validation "
        "split, repeated if fewer); the figure is the batch's time divided by its rows",
    )
    latency_repeats: int = Field(
        default=5, ge=1, description="latency_ms: timed batches; the median counts"
    )
    latency_warmup: int = Field(
        default=2, ge=0, description="latency_ms: untimed batches first (compiling, caches)"
    )


class SelectionConfig(_Model):
    """Which trained model a job keeps when there are several objectives or limits."""

    prefer: str | None = Field(
        default=None,
        description="among the feasible models whose primary objective is not worse than the "
        "best feasible's beyond noise (a paired test on the validation rows), keep the one "
        "lowest on this measure (n_params, model_bytes or latency_ms); default: the second "
        "objective when it is a measure, else none (the best feasible by the primary)",
    )
    within_se: float | None = Field(
        default=1.0,
        ge=0,
        description="and whose primary falls short of the best feasible's by at most this "
        "many standard errors of their paired difference on the validation rows (the "
        "one-standard-error rule at 1.0); null: only the paired test at champion_alpha",
    )


class SamplerConfig(_Model):
    """The Optuna sampler, named with its options so a resumed study samples the same way."""

    type: Literal["tpe", "random", "nsga2"] = Field(
        default="tpe", description="tpe, random or nsga2 (several objectives)"
    )
    population_size: int = Field(
        default=20, ge=2, description="individuals per generation (nsga2 only)"
    )
    seed: int | None = Field(default=None, description="sampler seed (default: study.seed)")
    n_startup_trials: int = Field(
        default=5, ge=0, description="random trials before TPE starts modelling (tpe only)"
    )
    multivariate: bool = Field(default=True, description="multivariate TPE (tpe only)")
    constant_liar: bool = Field(
        default=True, description="constant liar for parallel workers (tpe only)"
    )
    history: int | None = Field(
        default=1000,
        ge=25,
        description=(
            "TPE models the best 25 complete trials and the most recent N (null: every trial; "
            "tpe only): a long study's sampling stays as fast as at trial N"
        ),
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


class ChangesConfig(_Model):
    """What a job does when the study's space or data changed since its last job
    (README, "A study that lives for months")."""

    space: Literal["adapt", "version", "error"] = Field(
        default="adapt",
        description="adapt: keep the study where Optuna can sample the changed space (numeric "
        "ranges, parameters added or removed, when: changed) and continue in a new version, "
        "warm-started from the earlier trials inside the new space, where it cannot (choices "
        "changed, a parameter's type changed); version: a new version on any change; error: "
        "stop with one line",
    )
    data: Literal["adapt", "version", "continue", "error"] = Field(
        default="adapt",
        description="adapt: a new version when the data's shape changes (columns, classes, "
        "task, split settings, objective metric) or its rows differ from the version's first "
        "job's by more than rows; version: a new version whenever the data's digest changes; "
        "continue: never a new version for data; error: stop with one line",
    )
    rows: float = Field(
        default=0.5,
        gt=0,
        description="with data: adapt, the share of rows (added or removed, against the rows "
        "the version began with) that starts a new data version",
    )
    retrain_top: int = Field(
        default=3,
        ge=0,
        description="a new data version first trains again this many of the previous version's "
        "best configurations (enqueued), so what was learned is kept",
    )


def _shorthand(value: object) -> object:
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

    min_configs: int | None = Field(
        default=10,
        ge=1,
        description="with a time budget, each trial trains for at most 1/min_configs of the "
        "search's time (it then counts with the value it reached), so a job compares at least "
        "this many configurations; the re-check trains the best further (null: off)",
    )
    recheck_top: int = Field(
        default=3,
        ge=0,
        description="before the job names its best model, train the top k trials again from "
        "other initial weights and rank them by the mean of both runs (0: off); with a time "
        "budget, the search leaves the last 30 % of it to this",
    )
    continue_trials: bool = Field(
        default=True,
        description="a trial stopped short by its share of the time budget keeps its weights "
        "and optimizer state until the job ends, and the re-check (or KerasTuner's Hyperband, "
        "which promotes trials) continues it from there instead of training it again from new "
        "weights (false: every run starts from new weights)",
    )
    ensemble_top: int = Field(
        default=0,
        ge=0,
        description="the job's model averages up to this many of its best trained models (the "
        "search's best trials and the re-check's re-runs), as many as score best together on "
        "the validation rows; 0 or 1: one model",
    )
    max_retries: int = Field(
        default=0,
        ge=0,
        description="times a trial whose worker died (no heartbeat) is run again with the same "
        "parameters (0: never)",
    )
    on_change: ChangesConfig = Field(
        default_factory=ChangesConfig,
        description="{space: adapt|version|error, data: adapt|version|continue|error, rows: "
        "0.5, retrain_top: 3}: what a job does when the space or data changed since the last",
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
    def _type_shorthand(cls, v: object) -> object:
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


class StopNotLearningConfig(_Model):
    """Ending trials that do not learn (``tuning.learning``); ``false`` switches it off."""

    enabled: bool = Field(default=True, description="true or false")
    after: int = Field(
        default=3, ge=1, description="epochs a trial trains before it is judged (at least 1)"
    )
    min_steps: int = Field(
        default=200,
        ge=0,
        description="optimizer steps a trial takes before it is judged, whatever `after` says "
        "(a small dataset's epoch is a few steps)",
    )
    margin: float = Field(
        default=0.02,
        ge=0,
        lt=1,
        description="the share of the way from the trivial baseline to a perfect score that a "
        "learning trial's best epoch must have gone (0 <= margin < 1)",
    )

    @model_validator(mode="before")
    @classmethod
    def _switch(cls, v: Any) -> Any:
        if isinstance(v, bool):
            return {"enabled": v}
        if v is None:
            return {}
        if not isinstance(v, dict):
            raise ValueError(f"must be true, false or {{after: ..., margin: ...}} (got {v!r})")
        return v


class TrainingConfig(_Model):
    """How each trial trains."""

    max_epochs: int = Field(default=100, ge=1, description="upper bound on epochs per trial")
    batch_size: int = Field(
        default=32, ge=1, description="batch size, unless the search space has batch_size"
    )
    early_stopping: EarlyStoppingConfig = Field(
        default_factory=EarlyStoppingConfig, description="patience and min_delta"
    )
    stop_not_learning: StopNotLearningConfig = Field(
        default_factory=StopNotLearningConfig,
        description="false, or {after: 3, min_steps: 200, margin: 0.02}: end a trial at once "
        "when after `after` epochs (and `min_steps` steps) its best objective is no better than "
        "a trivial predictor's (by `margin`) and not improving, or its training loss grew above "
        "its first epoch's",
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
    champion_alpha: float = Field(
        default=0.05,
        gt=0,
        lt=1,
        description="@champion moves only when a paired test of both models on the same "
        "validation rows (McNemar, or a paired bootstrap for regression) gives p below this",
    )
    stale_champion: Literal["replace", "keep"] = Field(
        default="replace",
        description="when @champion cannot score today's data (a column gone, a class added): "
        "replace: the new version becomes champion; keep: it stays, the new one a challenger",
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
        default_factory=ObjectiveConfig,
        description="{metric: ..., direction: ...}, or a list of them (several objectives, "
        "the first primary; the others may be n_params, model_bytes, latency_ms)",
    )
    limits: dict[str, float] = Field(
        default_factory=dict,
        description="upper bounds a trial must meet to count (feasible), e.g. {n_params: "
        "300000, latency_ms: 0.05}: n_params, model_bytes, latency_ms or a logged metric",
    )
    selection: SelectionConfig = Field(
        default_factory=SelectionConfig,
        description="{prefer: latency_ms}: the job's model with several objectives or limits",
    )
    measures: MeasuresConfig = Field(
        default_factory=MeasuresConfig, description="how latency_ms is measured"
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

    @field_validator("objective", mode="wrap")
    @classmethod
    def _objectives(cls, v: object, handler: ValidatorFunctionWrapHandler) -> ObjectiveConfig:
        """A list of objectives: the first is ``objective`` (the primary), the rest ride on it."""
        if not isinstance(v, list):
            return handler(v)  # type: ignore[no-any-return]
        if not v:
            raise ValueError("a list of objectives needs at least one {metric, direction}")
        parsed: list[ObjectiveConfig] = []
        for i, item in enumerate(v):
            if not isinstance(item, dict):
                raise ValueError(
                    f"item {i} must be a mapping {{metric, direction}} (got {item!r})"
                )
            try:
                parsed.append(ObjectiveConfig.model_validate(item))
            except ValidationError as e:
                first = e.errors()[0]
                where = ".".join(str(p) for p in first.get("loc", ()))
                got = f" (got {first['input']!r})" if "input" in first else ""
                raise ValueError(f"item {i}: {where}: {first['msg']}{got}") from None
        primary = parsed[0]
        primary._rest = tuple(Objective(o.metric, o.direction) for o in parsed[1:])
        return primary

    @field_serializer("objective")
    def _dump_objective(self, objective: ObjectiveConfig) -> object:
        """The list form again where there are several objectives (``config.yaml`` reloads)."""
        first = {"metric": objective.metric, "direction": objective.direction}
        if not objective._rest:
            return first
        return [first, *({"metric": o.metric, "direction": o.direction} for o in objective._rest)]

    @field_validator("limits", mode="before")
    @classmethod
    def _limits(cls, v: object) -> object:
        if not isinstance(v, dict):
            raise ValueError(f"must be a mapping of measure or metric -> upper bound (got {v!r})")
        for key, bound in v.items():
            if isinstance(bound, bool) or not isinstance(bound, int | float) or not bound > 0:
                raise ValueError(f"{key}: a limit must be a positive number (got {bound!r})")
        return v

    @property
    def objectives(self) -> tuple[Objective, ...]:
        """Every objective, the primary (:attr:`objective`) first; one unless a list was given."""
        o = self.objective
        return (Objective(o.metric, o.direction), *o._rest)

    @property
    def multi(self) -> bool:
        """Several objectives (a Pareto front) rather than one."""
        return len(self.objectives) > 1

    @property
    def prefer(self) -> str | None:
        """The measure the job's model is chosen small on, among those within noise of the
        best (``selection.prefer``, else the second objective when it is a measure)."""
        if self.selection.prefer is not None:
            return self.selection.prefer
        rest = self.objective._rest
        return rest[0].metric if rest and rest[0].metric in MEASURES else None

    # Set by load_experiment, not read from the file.
    _source: str = ""
    _space: SearchSpace | None = None
    # Set by tuning.lineage.resolve: the Optuna study of the version this job runs.
    _version: str | None = None

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
        """The Optuna study this job runs: the study's current version once
        ``tuning.lineage.resolve`` chose it (``NAME@v2`` ...), else :attr:`study_base`."""
        return self._version or self.study_base

    @property
    def study_base(self) -> str:
        """The study's name (defaults to the experiment name): its first version's study, and
        the ``lineage`` tag of every version's runs."""
        return self.study.name or self.name

    def use_version(self, study_name: str) -> None:
        """Run this job in ``study_name`` (a version of :attr:`study_base`)."""
        self._version = study_name

    @property
    def mlflow_experiment(self) -> str:
        """The MLflow experiment name (defaults to the experiment name)."""
        return self.tracking.experiment or self.name

    def data_key(self) -> str:
        """A fingerprint of the data a score was measured on (dataset, split, file contents)."""
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
