"""The contract a search engine fulfils, and what a job hands it.

Owns :class:`Engine`, the abstract base every engine implements (as Optuna's ``BaseSampler`` is
for samplers: required methods, optional hooks, the docstrings are the contract), the
:class:`JobContext` a job hands an engine, the :class:`Outcome` an engine reports back, and the
:data:`STOP` flag a signal handler sets. ``tuning.job`` runs whichever engine the experiment
names and does everything else the same way for all of them (validation, the parent run, the
best model, the champion, the summary), so two engines differ only in how they choose and run
trials. This module imports nothing heavy: no Keras, no Optuna, no MLflow.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from tuning.process import STOP, check_stop  # re-exported: part of the engine contract

if TYPE_CHECKING:
    from tuning.config import Experiment
    from tuning.data import Dataset
    from tuning.tracking import ParentRun, Tracker
    from tuning.trial import TrialResult, TrialRunner

__all__ = ["STOP", "Engine", "JobContext", "Outcome", "Ranked", "Say", "check_stop"]

Say = Callable[[str], None]


@dataclasses.dataclass
class JobContext:
    """What a job hands its engine: the experiment, its data and the MLflow runs.

    Attributes:
        exp: The validated experiment.
        data: The loaded dataset (every split).
        tracker: MLflow for this job; ``tracker.trial_run`` opens each trial's child run.
        parent: This job's parent run.
        say: Where the terminal lines go.
        runner: Runs one configuration: builds, trains, records and keeps it (shared by every
            engine and the re-check: ``runner.run``).
        t0: ``time.perf_counter()`` when the job started.
        deadline: ``perf_counter`` time after which no trial starts and the trial in flight
            stops at its next epoch end; ``None`` without a time budget.
        progress: Show a progress bar where the engine has one.
    """

    exp: Experiment
    data: Dataset
    tracker: Tracker
    parent: ParentRun
    say: Say
    runner: TrialRunner
    t0: float
    deadline: float | None = None
    progress: bool = False


@dataclasses.dataclass
class Outcome:
    """Where the search stands after a job, across every job of the same study or project.

    Attributes:
        counts: Trials per state (``complete``, ``pruned``, ``not_learning``, ``fail``,
            ``running``, ...).
        added: This job's own trials per state (the same keys).
        best_trial: Number of the best trial so far; ``None`` before one completes.
        best_value: Its objective value.
        best_params: Its hyperparameters, fixed values included.
        best_run_id: Its MLflow run.
    """

    counts: dict[str, int]
    added: dict[str, int]
    best_trial: int | None = None
    best_value: float | None = None
    best_params: dict[str, object] = dataclasses.field(default_factory=dict)
    best_run_id: str = ""


@dataclasses.dataclass
class Ranked:
    """One of the best trials so far, as the job's re-check needs it.

    Attributes:
        number: The trial's number.
        value: Its objective value.
        params: Its hyperparameters, fixed values included.
        run_id: Its MLflow run (``""`` when unknown).
    """

    number: int
    value: float
    params: dict[str, object]
    run_id: str = ""


class Engine(abc.ABC):
    """A search engine: opens or resumes its search, runs trials, reports where it stands.

    A job calls, in order: :meth:`open` once, :meth:`search` once, then :meth:`outcome` (also
    after an interrupted or failed search), :meth:`reports` and :meth:`summary_lines`, and
    :meth:`close` last, whatever happened. An engine chooses configurations; every trial runs
    through ``ctx.runner.run`` (the MLflow child run, ended FINISHED/FAILED/KILLED whatever
    happens; build, train with early stopping, keep the job's best models; :func:`check_stop`
    at each epoch end), so every engine's runs carry the same names, and its terminal line
    comes from :func:`tuning.summary.trial_line`. An engine adds only its per-epoch hook
    (report, prune, its share of the budget). A trial's problem
    (:class:`~tuning.errors.TrialFailed`) fails that trial and the search goes on; a
    KeyboardInterrupt ends the search at once.

    Attributes:
        name: The ``study.engine`` value that picks this engine.
        noun: What the job's summary calls the search (``study has 8 trials``).
    """

    name: ClassVar[str]
    noun: ClassVar[str] = "study"

    def __init__(self, ctx: JobContext) -> None:
        self.ctx = ctx

    @classmethod
    def parent_tags(cls, exp: Experiment) -> dict[str, str]:
        """Tags for the parent run that say which engine ran it (optional hook)."""
        return {"engine": cls.name}

    @abc.abstractmethod
    def open(self) -> str:
        """Create or resume the search; return how to name it in the job's first line,
        e.g. ``study 'quickstart' (resumed with 8 trials, sqlite:///optuna.db)``.

        Raises:
            ConfigError: when the stored search cannot be used with this experiment.
        """

    @abc.abstractmethod
    def search(self) -> None:
        """Run this job's trials within the experiment's budget (``n_trials``, the deadline).

        Raises:
            KeyboardInterrupt: on Ctrl-C or SIGTERM, after the trial in flight was ended KILLED.
        """

    @abc.abstractmethod
    def outcome(self) -> Outcome:
        """Trial counts and the best trial so far, over every job of this search."""

    def ranked(self, k: int) -> list[Ranked]:
        """The ``k`` best complete trials so far, best first (optional hook; the job's
        ``study.recheck_top`` re-trains them; an engine returning none is not re-checked)."""
        return []

    def continued(self, number: int, result: TrialResult) -> None:  # noqa: B027 (optional)
        """Trial ``number`` was continued from its saved state (the re-check's "train
        further") and reached ``result.value``: record it where the engine keeps trials
        (optional hook; the trial's MLflow run and the job's kept model already have it)."""

    def reports(self, out_dir: Path) -> list[Path]:
        """Files for the parent run (tables, plots), written into ``out_dir`` (optional hook)."""
        return []

    def summary_lines(self) -> list[str]:
        """Extra lines for the end of the job's terminal summary (optional hook)."""
        return []

    def summary_markdown(self, *, test_scores: dict[str, float], seconds: float) -> str | None:
        """The parent run's ``summary.md`` (optional hook; ``None``: none is written)."""
        return None

    def close(self) -> None:  # noqa: B027 (an optional hook: nothing to do by default)
        """Release what :meth:`open` holds (optional hook)."""
