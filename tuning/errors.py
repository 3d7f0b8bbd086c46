"""Error types of tuning: what a user did wrong versus what went wrong in one trial.

Owns the two tiers every other module raises: :class:`ConfigError` (the user's input is wrong; the
job stops before anything is created, the CLI prints one line and exits 2) and :class:`TrialFailed`
(one trial went wrong, e.g. its loss became NaN; the trial ends FAIL with its reason and the study
goes on). Internal errors are neither and keep their traceback. This module imports nothing heavy.
"""

from __future__ import annotations

__all__ = [
    "ArtifactStoreFailed",
    "ConfigError",
    "NotLearning",
    "StopTraining",
    "StorageLost",
    "TrackingLost",
    "TrialFailed",
]


class ConfigError(ValueError):
    """A user error in an experiment, a search space, a dataset or an environment setting.

    The message is one line: ``<source>: <key>: <rule>. Fix: <fix>``. ``source`` is the file
    (or the command-line option) the value came from, ``key`` the dotted path of the value in it.

    Args:
        message: What rule was broken, quoting the value received.
        source: The file or option the bad value came from.
        key: Dotted path of the bad value inside ``source``.
        fix: How to put it right, when there is one clear fix.
    """

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        key: str | None = None,
        fix: str | None = None,
    ) -> None:
        self.rule = " ".join(str(message).split())
        self.source = source
        self.key = key
        self.fix = " ".join(fix.split()) if fix else None
        super().__init__(self._render())

    def _render(self) -> str:
        parts = [p for p in (self.source, self.key) if p]
        text = ": ".join([*parts, self.rule])
        if self.fix:
            text += f". Fix: {self.fix}"
        return text

    def with_source(self, source: str) -> ConfigError:
        """This error with ``source`` filled in, when it has none yet."""
        if self.source:
            return self
        return ConfigError(self.rule, source=source, key=self.key, fix=self.fix)

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only arguments need help to survive pickling (multiprocessing workers).
        return (_rebuild_config_error, (self.rule, self.source, self.key, self.fix))


def _rebuild_config_error(
    rule: str, source: str | None, key: str | None, fix: str | None
) -> ConfigError:
    return ConfigError(rule, source=source, key=key, fix=fix)


class TrialFailed(Exception):
    """One trial cannot give a value (NaN loss, diverged, no epoch finished).

    The study records the trial as FAIL with this message as its reason and carries on with the
    next trial; it is passed to ``Study.optimize(catch=...)`` explicitly.
    """


def config_error_from_validation(
    err: Exception,
    *,
    source: str | None,
    prefix: str = "",
    fields: dict[str, str] | None = None,
) -> ConfigError:
    """Turn the first problem of a pydantic ``ValidationError`` into a one-line ConfigError.

    Args:
        err: The ``pydantic.ValidationError`` raised while validating a file's contents.
        source: The file the contents came from.
        prefix: Dotted path of the validated mapping inside the file (empty for the top level).
        fields: Dotted key -> description of every field that can appear, used to say what an
            accepted value looks like and, for an unknown key, which keys are allowed.

    Returns:
        The error to raise (``raise config_error_from_validation(e, ...) from e``).
    """
    problems = err.errors() if hasattr(err, "errors") else []
    if not problems:
        return ConfigError(str(err), source=source, key=prefix or None)
    first = problems[0]
    loc = [str(p) for p in first.get("loc", ()) if not str(p).startswith("function-")]
    key = ".".join([p for p in (prefix, *loc) if p])
    kind = first.get("type", "")
    msg = str(first.get("msg", "invalid value"))
    msg = msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    fields = fields or {}
    fix: str | None = None
    if kind == "extra_forbidden":
        parent = key.rpartition(".")[0]
        allowed = sorted(k.rpartition(".")[2] for k in fields if k.rpartition(".")[0] == parent)
        msg = "unknown key"
        fix = f"remove it or correct its spelling; allowed keys here: {', '.join(allowed)}"
    elif kind == "missing":
        msg = "required key is missing"
        fix = f"add it ({fields[key]})" if key in fields else "add it"
    else:
        # Our own validators quote the value already; pydantic's built-in rules do not.
        if "input" in first and kind not in ("model_type", "dict_type", "value_error"):
            msg = f"{msg} (got {first['input']!r})"
        if key in fields:
            fix = f"expected {fields[key]}"
    return ConfigError(msg, source=source, key=key or None, fix=fix)


class TrackingLost(RuntimeError):
    """The MLflow tracking server stopped answering in the middle of a job.

    The job stops (the CLI prints the message on one line and exits 3); Optuna's storage keeps
    every finished trial, and the next job closes the runs this one could not end.
    """


class ArtifactStoreFailed(TrackingLost):
    """The MLflow artifact store failed while the job recorded its model and reports at its end
    (disk full, its folder gone, permission denied).

    The job's parent run ends FAILED (tagged ``reason``); the CLI prints the message on one line
    naming the store and the OS's reason, and exits 3 as for :class:`TrackingLost`. The study
    keeps every trial and the trials' runs stay as they ended.
    """


class StorageLost(TrackingLost):
    """The study storage (a database server) stopped answering in the middle of a job.

    The CLI prints the message on one line and exits 3, as for :class:`TrackingLost`; the
    study keeps every finished trial, and the trial in flight is failed by Optuna's heartbeat
    (and run again elsewhere with ``study.max_retries``).
    """


class NotLearning(TrialFailed):
    """Raised by the trial runner's epoch hook: the trial is not learning (``tuning.learning``).

    Its best objective value after the first epochs is no better than a trivial predictor's (always
    the same class, the training mean), or its training loss grew above its first epoch's.
    The fit ends at once and no model is kept. A :class:`TrialFailed`, so any code that does not
    know it treats it as a trial without a value; the engines record it apart: Optuna as PRUNED
    with the user attribute ``not_learning``, KerasTuner as completed with the value it reached
    (so its oracle learns the region is bad), the MLflow run as ``state=not_learning``.

    Attributes:
        value: The best objective value the trial reached (``None`` if none was finite).
        epochs: Epochs it trained.
    """

    def __init__(self, message: str, *, value: float | None = None, epochs: int = 0) -> None:
        super().__init__(message)
        self.value = value
        self.epochs = epochs

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only arguments need help to survive pickling (multiprocessing workers).
        return (_rebuild_not_learning, (str(self), self.value, self.epochs))


def _rebuild_not_learning(message: str, value: float | None, epochs: int) -> NotLearning:
    return NotLearning(message, value=value, epochs=epochs)


class StopTraining(Exception):  # noqa: N818 (a request, not an error)
    """Raised by an epoch hook to end the fit after this epoch, as early stopping would.

    The fit then returns normally: the best epoch's weights are restored and its value is the
    result (``FitResult.stopped`` holds the message). Used for the job's time budget: a trial
    it cuts is still a trained model with a real score.
    """
