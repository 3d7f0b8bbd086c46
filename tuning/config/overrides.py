"""Command-line overrides: ``--set dotted.key=value`` items parsed, and applied in order to the raw
mapping read from an experiment or search-space file, before anything is validated."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import yaml

from tuning.errors import ConfigError

SPACE_PREFIX = "search_space."  # keys under it override the space itself (file or inline)

Override = tuple[str, object]


def parse_set(item: str) -> Override:
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


def split_overrides(overrides: Iterable[Override]) -> tuple[list[Override], list[Override]]:
    """The pairs for the experiment, and the ``search_space.*`` pairs with that prefix removed.

    Both keep their order; the space's pairs apply to the space once it is read.
    """
    experiment: list[Override] = []
    space: list[Override] = []
    for key, value in overrides:
        if key.startswith(SPACE_PREFIX):
            space.append((key.removeprefix(SPACE_PREFIX), value))
        else:
            experiment.append((key, value))
    return experiment, space


def apply_overrides(raw: dict[str, object], overrides: Sequence[Override]) -> None:
    """Set each ``dotted.key`` of ``overrides`` in ``raw``, in order, creating missing sections.

    A ``sampler`` or ``pruner`` given as a bare name becomes ``{type: name}`` first, so that
    ``study.sampler.seed`` can be set over ``sampler: tpe``.

    Raises:
        ConfigError: if a key passes through a value that is not a mapping.
    """
    for key, value in overrides:
        _apply_override(raw, key, value)


def _apply_override(raw: dict[str, object], key: str, value: object) -> None:
    parts = key.split(".")
    node = raw
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
