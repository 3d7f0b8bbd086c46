"""Cross-field checks: small registered rules ``check_*(experiment) -> None`` that run once every
default is filled, each raising one ConfigError that names the key and the fix.

Owns the rules that span several fields (objective and task, dataset name or path, storage URL,
engine and budget); single-field rules live on the schema's fields.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tuning.config.schema import MEASURES, Experiment
from tuning.errors import ConfigError
from tuning.secrets import redact  # the public name: tuning.config.redact

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


def _registered_datasets() -> tuple[dict[str, str], tuple[str, ...]]:
    """Registered dataset name -> task, and the data file suffixes, from :mod:`tuning.data`."""
    # Late: tuning.data loads numpy, and config imports no runtime module at import time.
    from tuning.data import DATASETS, FILE_SUFFIXES

    return {name: info.task for name, info in DATASETS.items()}, FILE_SUFFIXES


def static_task(exp: Experiment) -> str | None:
    """The task when it is known without reading data: a registered dataset, or declared."""
    tasks, _ = _registered_datasets()
    if exp.dataset.name in tasks:
        return tasks[exp.dataset.name]
    return None if exp.dataset.task == "auto" else exp.dataset.task


def check_objective_for(exp: Experiment, task: str) -> None:
    """The objective metric exists for ``task``, and a loss is never maximized.

    Raises:
        ConfigError: naming ``objective.metric`` or ``objective.direction``.
    """
    metric = exp.objective.metric
    known = OBJECTIVE_METRICS[task]
    first = "objective.0" if exp.multi else "objective"
    if metric not in known:
        raise ConfigError(
            f"{metric!r} is not a validation metric of a {task} task",
            source=exp.source,
            key=f"{first}.metric",
            fix=f"use one of {', '.join(known)}",
        )
    wanted = "minimize" if metric in LOWER_IS_BETTER else "maximize"
    if exp.objective.direction != wanted:
        raise ConfigError(
            f"{metric} should be {wanted}d, not {exp.objective.direction}d",
            source=exp.source,
            key=f"{first}.direction",
            fix=f"set direction: {wanted}",
        )
    for i, extra in enumerate(exp.objectives[1:], start=1):
        if extra.metric in MEASURES:
            continue  # check_objectives: measures are minimized
        if extra.metric not in known:
            raise ConfigError(
                f"{extra.metric!r} is neither a measure nor a validation metric of a {task} task",
                source=exp.source,
                key=f"objective.{i}.metric",
                fix=f"use one of {', '.join((*MEASURES, *known))}",
            )
        wanted = "minimize" if extra.metric in LOWER_IS_BETTER else "maximize"
        if extra.direction != wanted:
            raise ConfigError(
                f"{extra.metric} should be {wanted}d, not {extra.direction}d",
                source=exp.source,
                key=f"objective.{i}.direction",
                fix=f"set direction: {wanted}",
            )
    for name in exp.limits:
        if name in MEASURES:
            continue
        if name not in known:
            raise ConfigError(
                f"unknown limit {name!r}: neither a measure nor a validation metric of a "
                f"{task} task",
                source=exp.source,
                key=f"limits.{name}",
                fix="use one of "
                + ", ".join((*MEASURES, *(k for k in known if k in LOWER_IS_BETTER))),
            )
        if name not in LOWER_IS_BETTER:
            raise ConfigError(
                f"a limit is an upper bound, and higher {name} is better",
                source=exp.source,
                key=f"limits.{name}",
                fix="remove it, or limit a metric that is minimized: "
                + ", ".join(LOWER_IS_BETTER),
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
    tasks, suffixes = _registered_datasets()
    ds = exp.dataset
    if (ds.name is None) == (ds.path is None):
        raise ConfigError(
            "give either dataset.name or dataset.path" + (", not both" if ds.name else ""),
            source=exp.source,
            key="dataset",
            fix=f"name: one of {', '.join(tasks)}; or path: FILE.csv with target: COLUMN",
        )
    if ds.name is not None:
        if ds.name not in tasks:
            raise ConfigError(
                f"unknown dataset {ds.name!r}",
                source=exp.source,
                key="dataset.name",
                fix=f"use one of {', '.join(tasks)}, or give path: FILE.csv",
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
    if Path(ds.path).suffix.lower() not in suffixes:
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
def check_objectives(exp: Experiment) -> None:
    """Several objectives: no metric twice, measures minimized, the primary a Keras metric, a
    ``selection.prefer`` that is a measure, and an engine and a pruner that can take them."""
    objectives = exp.objectives
    seen: set[str] = set()
    for i, o in enumerate(objectives):
        key = f"objective.{i}" if exp.multi else "objective"
        if o.metric in seen:
            raise ConfigError(
                f"{o.metric!r} is listed twice",
                source=exp.source,
                key=f"{key}.metric",
                fix="give each objective once",
            )
        seen.add(o.metric)
        if o.metric in MEASURES and i == 0:
            raise ConfigError(
                f"the primary (first) objective must be a validation metric, not {o.metric}",
                source=exp.source,
                key=f"{key}.metric",
                fix="put a validation metric first, e.g. val_accuracy, then the measure",
            )
        if o.metric in MEASURES and o.direction != "minimize":
            raise ConfigError(
                f"{o.metric} should be minimized, not maximized",
                source=exp.source,
                key=f"{key}.direction",
                fix="set direction: minimize",
            )
    prefer = exp.selection.prefer
    if prefer is not None and prefer not in MEASURES:
        raise ConfigError(
            f"unknown measure {prefer!r}",
            source=exp.source,
            key="selection.prefer",
            fix=f"use one of {', '.join(MEASURES)}, or remove it",
        )
    if exp.study.engine == "keras_tuner" and (exp.multi or exp.limits):
        lacks = " and ".join(
            w for w, on in (("a Pareto front", exp.multi), ("constraints", exp.limits)) if on
        )
        raise ConfigError(
            f"engine keras_tuner lacks {lacks}: it takes one objective and no limits",
            source=exp.source,
            key="objective" if exp.multi else "limits",
            fix="set study.engine: optuna, or keep one objective and no limits",
        )
    if exp.multi and exp.study.pruner.type == "hyperband":
        raise ConfigError(
            "Optuna's pruners refuse several objectives; with them this tool prunes by its "
            "median rule on the primary objective only",
            source=exp.source,
            key="study.pruner.type",
            fix="set study.pruner: median (or none)",
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
