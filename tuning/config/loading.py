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
from collections.abc import Sequence
from pathlib import Path

import yaml
from pydantic import ValidationError

from tuning.config.checks import CHECKS
from tuning.config.overrides import apply_overrides, split_overrides
from tuning.config.schema import EXPERIMENT_FIELDS, Experiment
from tuning.config.space import SearchSpace
from tuning.errors import ConfigError, config_error_from_validation

DEFAULT_EXPERIMENT = "experiments/quickstart.yaml"


def read_yaml(path: str | os.PathLike[str], *, what: str = "file") -> object:
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
    data: object = None,
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


def load_experiment(
    path: str | os.PathLike[str],
    *,
    overrides: Sequence[tuple[str, object]] = (),
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
    experiment_overrides, space_overrides = split_overrides(overrides)
    apply_overrides(raw, experiment_overrides)
    try:
        exp = Experiment.model_validate(raw)
    except ValidationError as e:
        raise config_error_from_validation(e, source=source, fields=EXPERIMENT_FIELDS) from e
    exp._source = source
    if exp.dataset.path is not None and not Path(exp.dataset.path).is_absolute():
        exp.dataset.path = str(Path(path).parent / exp.dataset.path)
    space_raw, space_source = _read_space(exp, Path(path))
    if space_overrides:
        if not isinstance(space_raw, dict):
            space_raw = {}
        apply_overrides(space_raw, space_overrides)
        space_source += " (with --set search_space.*)"
    exp._space = load_search_space(data=space_raw, source=space_source)
    for check in CHECKS:
        check(exp)
    return exp


def _read_space(exp: Experiment, path: Path) -> tuple[object, str]:
    """The raw search space ``exp`` names (its file read, or a copy of the inline mapping), and
    the source to name in messages about it.

    Raises:
        ConfigError: if the file is missing, naming the experiment and ``search_space``.
    """
    if not isinstance(exp.search_space, str):
        return copy.deepcopy(exp.search_space), f"{exp.source}: search_space"
    space_path = Path(exp.search_space)
    if not space_path.is_absolute():
        space_path = path.parent / space_path
    if not space_path.is_file():
        raise ConfigError(
            f"search space file {str(space_path)!r} not found",
            source=exp.source,
            key="search_space",
            fix="give a path relative to the experiment file, e.g. "
            "../search_spaces/stretch_pants.yaml",
        )
    return read_yaml(space_path, what="search space file"), str(space_path)
