"""What "better" means: one objective metric and its direction, and nothing else works it out.

Owns :class:`Ranking`, the methods that compare objective values (``better``, a best-first sort
key, ``best``, ``ranked``, Keras' ``min``/``max`` mode), and :class:`Objective`, a metric with its
direction. The experiment's ``objective`` (:class:`tuning.config.schema.ObjectiveConfig`) is a
``Ranking`` too, so a job asks ``exp.objective.better(a, b)``; code that has only a study asks
``Objective.of_study(study)``. Like Optuna's ``StudyDirection``, used by every part that ranks
values: the trial runner's kept models, the re-check, the ensemble, the champion, the reports,
the engines. Several objectives are a tuple of these (``Experiment.objectives``), the first
one primary: it alone ranks trials for pruning, the re-check and the reference model.

This module imports nothing heavy (no Keras, no Optuna, no MLflow), so any layer may use it.

.. code-block:: python

    >>> acc = Objective("val_accuracy", "maximize")
    >>> acc.better(0.91, 0.90), acc.better(0.90, None)
    (True, True)
    >>> sorted([0.5, 0.9, 0.7], key=acc.sort_key)
    [0.9, 0.7, 0.5]
    >>> Objective("val_loss", "minimize").best([0.3, 0.2, 0.4])
    0.2
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Literal, Protocol, TypeVar

__all__ = ["Direction", "Objective", "Ranking"]

Direction = Literal["minimize", "maximize"]
T = TypeVar("T")


class _Study(Protocol):  # what of optuna.Study ``Objective.of_study`` reads
    @property
    def directions(self) -> Sequence[object]: ...


class Ranking:
    """Comparisons of objective values in the direction ``self.direction``.

    A mixin: the class that takes it has a ``direction`` (``minimize`` or ``maximize``).
    """

    if TYPE_CHECKING:  # set by the class that takes the mixin (a field: not declared here)
        direction: Direction

    @property
    def maximize(self) -> bool:
        """Whether higher values are better."""
        return self.direction == "maximize"

    @property
    def keras_mode(self) -> Literal["min", "max"]:
        """The ``mode`` Keras' callbacks and KerasTuner's ``Objective`` take."""
        return "max" if self.maximize else "min"

    def better(self, a: float, b: float | None) -> bool:
        """Whether value ``a`` beats ``b`` (``None``: nothing yet, so ``a`` does)."""
        if b is None:
            return True
        return a > b if self.maximize else a < b

    def sort_key(self, value: float) -> float:
        """A sort key that puts the best value first (``sorted(.., key=...)``, ``min``)."""
        return -value if self.maximize else value

    def best(self, values: Iterable[float]) -> float:
        """The best of ``values`` (at least one)."""
        return min(values, key=self.sort_key)

    def ranked(self, items: Iterable[T], value: Callable[[T], float]) -> list[T]:
        """``items`` best first by ``value(item)``; ties keep their order (a stable sort)."""
        return sorted(items, key=lambda item: self.sort_key(value(item)))

    def running_best(self, values: Iterable[float]) -> list[float]:
        """The best value so far after each of ``values`` (an optimization history)."""
        out: list[float] = []
        for v in values:
            out.append(v if not out or self.better(v, out[-1]) else out[-1])
        return out


@dataclasses.dataclass(frozen=True)
class Objective(Ranking):
    """An objective metric (as Keras logs it) and its direction.

    Attributes:
        metric: e.g. ``val_accuracy``; ``value`` where only a study's values are known.
        direction: ``minimize`` or ``maximize``.
    """

    metric: str
    direction: Direction

    @classmethod
    def of_study(cls, study: _Study, metric: str = "value") -> Objective:
        """The objective of a stored Optuna study (its ``StudyDirection``; the first, the
        primary, of a study with several objectives)."""
        first = study.directions[0]
        name = getattr(first, "name", str(first)).lower()
        if name not in ("minimize", "maximize"):
            raise ValueError(f"a study direction must be minimize or maximize (got {name!r})")
        return cls(metric, name)  # type: ignore[arg-type]
