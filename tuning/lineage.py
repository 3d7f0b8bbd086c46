"""A study that lives for months: its versions, and what a job does when the space or data changed.

Owns the life of a study across jobs. Each version of a study is an Optuna study of its own:
version 1 is the study's name (``quickstart``), later ones ``quickstart@v2``, ``@v3`` ... (``@``
cannot appear in a study name a user gives, so a version never collides with one). On each
version the study's user attributes record:

- ``tuning.lineage``: ``{base, version, previous, reason, created}``;
- ``tuning.space``: the search space its last job ran (plain data, as the YAML would hold it);
- ``tuning.data``: the data it began with, ``tuning.data_last``: its last job's
  (:class:`DataPrint`: the digest of the rows, the digest of their shape, the row count, the
  objective metric);
- ``tuning.next``: on an older version, the name of the one that replaced it; set last, so a
  version without a predecessor pointing at it is half made and is removed by the next job.

:func:`resolve` runs once per job, after the configuration was validated and before anything
else is created, under the storage's creation lock (:func:`tuning.locks.store_lock`), so jobs
started together agree on one version. It compares the space and the data with the current
version's and, following ``study.on_change`` (:class:`~tuning.config.schema.ChangesConfig`),
continues that version, starts a new one, or stops with one line:

- **space** (``adapt``): Optuna keeps sampling in the same study when every searched parameter's
  distribution is compatible with what the study holds (a numeric range widened or narrowed, a
  parameter added, removed or made fixed, a ``when:`` changed); when one is not (a choice added
  or removed, a parameter's type or log scale changed), a new version starts, warm-started with
  every earlier trial that lies inside the new space (its value and per-epoch values copied when
  the data did not change), the others kept in the old version, out of the sampler.
- **data** (``adapt``): a new version when the data's shape changed (columns, classes, task,
  split settings), when the objective metric changed, or when the row count moved by more than
  ``on_change.rows`` of the rows the version began with; rows appended night after night within
  that share keep the version (its sampler keeps what it learned). A data version carries no
  values (they were measured on other rows): it enqueues the previous version's
  ``on_change.retrain_top`` best configurations, trained first on today's data.

Optuna's storage only (no Keras, no MLflow): the job tags its parent run with
:meth:`Lineage.tags`, and ``tuning status``/``show``/``best``/``compare`` read :func:`versions`.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    check_distribution_compatibility,
)
from optuna.study._frozen import FrozenStudy
from optuna.trial import TrialState

from tuning import records
from tuning.config import Experiment
from tuning.config.params import DEFAULTS, PER_LAYER_PREFIX
from tuning.config.space import CategoricalSpec, FixedSpec, FloatSpec, IntSpec, SearchSpace
from tuning.errors import ConfigError
from tuning.locks import store_lock
from tuning.storage import open_storage

if TYPE_CHECKING:
    from tuning.data import Dataset

__all__ = [
    "CARRIED_FROM",
    "DataPrint",
    "Lineage",
    "VersionInfo",
    "base_of",
    "data_print",
    "resolve",
    "version_name",
    "versions",
]

LINEAGE = "tuning.lineage"
SPACE = "tuning.space"
DATA = "tuning.data"
LAST_DATA = "tuning.data_last"
NEXT = "tuning.next"
CARRIED_FROM = "carried_from"  # on a trial copied or enqueued from an earlier version
SEP = "@v"

Say = Callable[[str], None]


def version_name(base: str, version: int) -> str:
    """The Optuna study of ``base``'s version ``version`` (1 is ``base`` itself)."""
    return base if version == 1 else f"{base}{SEP}{version}"


def base_of(study_name: str) -> tuple[str, int]:
    """``quickstart@v3`` -> ``("quickstart", 3)``; a plain name is version 1."""
    base, sep, number = study_name.rpartition(SEP)
    if sep and base and number.isdigit():
        return base, int(number)
    return study_name, 1


def digest(value: object) -> str:
    """A short stable digest of plain data."""
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclasses.dataclass(frozen=True)
class DataPrint:
    """What a version's values were measured on.

    Attributes:
        digest: The rows and settings (``Experiment.data_key``): changes with any row.
        schema: The data's shape: task, columns, targets, classes, split settings.
        rows: Rows in all splits together.
        metric: The objective metric the values are of.
        inputs: What a trained model takes and gives: task, columns, targets, classes (a model
            of other inputs cannot score these rows).
    """

    digest: str
    schema: str
    rows: int
    metric: str
    inputs: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: object) -> DataPrint | None:
        if not isinstance(raw, Mapping):
            return None
        try:
            return cls(
                str(raw["digest"]),
                str(raw["schema"]),
                int(raw["rows"]),
                str(raw["metric"]),
                str(raw.get("inputs", "")),
            )
        except (KeyError, TypeError, ValueError):
            return None


def data_print(exp: Experiment, data: Dataset) -> DataPrint:
    """The print of the data this job loaded (see :class:`DataPrint`)."""
    ds = exp.dataset
    inputs = {
        "task": data.task,
        "kind": data.kind,
        "input_shape": list(data.input_shape),
        "columns": data.feature_names,
        "targets": data.targets,
        "classes": [str(v) for v in data.labels] if data.labels is not None else None,
    }
    shape = {
        **inputs,
        "split": {"validation": ds.validation, "test": ds.test, "seed": ds.seed},
        "read": {
            "name": ds.name,
            "impute": ds.impute,
            "drop": ds.drop,
            "categorical": ds.categorical,
            "features": ds.features,
        },
    }
    return DataPrint(
        digest=exp.data_key(),
        schema=digest(shape),
        rows=sum(data.sizes().values()),
        metric=exp.objective.metric,
        inputs=digest(inputs),
    )


@dataclasses.dataclass
class Lineage:
    """The version a job runs, and how it got there.

    Attributes:
        base: The study's name (version 1's study).
        name: The Optuna study of the version this job runs.
        version: Its number.
        previous: The version it replaced (``None`` for version 1).
        reason: Why that version was started (``None`` when this job continued one).
        started: Whether this job started the version.
        space_digest: Digest of this job's search space.
        data: This job's data print.
        data_before: The previous job's data print (``None``: first job, or not recorded).
        lines: What the job says about it (one line per change).
    """

    base: str
    name: str
    version: int
    previous: str | None
    reason: str | None
    started: bool
    space_digest: str
    data: DataPrint
    data_before: DataPrint | None = None
    lines: list[str] = dataclasses.field(default_factory=list)

    def tags(self) -> dict[str, str]:
        """The parent run's lineage tags."""
        tags = {
            "lineage": self.base,
            "study_version": str(self.version),
            "space_digest": self.space_digest,
            "data_digest": self.data.digest,
            "data_schema": self.data.schema,
            "data_rows": str(self.data.rows),
        }
        if self.previous:
            tags["study_previous"] = self.previous
        if self.started and self.reason:
            tags["version_reason"] = self.reason
        if self.data_before is not None and self.data_before.digest != self.data.digest:
            before = self.data_before
            tags["data_change"] = (
                f"rows {before.rows} -> {self.data.rows}, digest {before.digest[:8]} -> "
                f"{self.data.digest[:8]}"
                + (", shape changed" if before.schema != self.data.schema else "")
            )
        return tags


# -- the space: distributions, changes, trials inside it -------------------------------------


def distributions(space: SearchSpace) -> dict[str, BaseDistribution]:
    """The Optuna distribution of each searched parameter (per-layer widths by n_neurons')."""
    out: dict[str, BaseDistribution] = {}
    for name, spec in space.specs.items():
        dist = _distribution(spec)
        if dist is not None:
            out[name] = dist
    return out


def _distribution(spec: object) -> BaseDistribution | None:
    if isinstance(spec, IntSpec):
        return IntDistribution(spec.low, spec.high, log=spec.log, step=spec.step or 1)
    if isinstance(spec, FloatSpec):
        return FloatDistribution(spec.low, spec.high, log=spec.log, step=spec.step)
    if isinstance(spec, CategoricalSpec):
        return CategoricalDistribution(spec.choices)
    return None


def _dist_of(space: SearchSpace, key: str) -> BaseDistribution | None:
    spec = space.specs.get(key)
    if (
        spec is None
        and key.startswith(PER_LAYER_PREFIX)
        and key[len(PER_LAYER_PREFIX) :].isdigit()
    ):
        spec = space.specs.get("n_neurons")
    return _distribution(spec) if spec is not None else None


def incompatible(space: SearchSpace, stored: Mapping[str, BaseDistribution]) -> list[str]:
    """Parameters whose distribution Optuna would refuse next to ``stored`` (the study's)."""
    bad = []
    for key, old in stored.items():
        new = _dist_of(space, key)
        if new is None:
            continue  # no longer sampled: Optuna does not mind
        try:
            check_distribution_compatibility(old, new)
        except ValueError:
            bad.append(key)
    return sorted(bad)


def stored_distributions(
    trials: Sequence[optuna.trial.FrozenTrial],
) -> dict[str, BaseDistribution]:
    """Each parameter's distribution as the study holds it (the first recorded, as Optuna
    checks a new one against it)."""
    out: dict[str, BaseDistribution] = {}
    for t in trials:
        for key, dist in t.distributions.items():
            out.setdefault(key, dist)
    return out


def _summary(raw: Mapping[str, Any] | None) -> str:
    if raw is None:
        return "absent"
    kind = raw.get("type")
    if kind == "categorical":
        text = f"one of {raw.get('choices')}"
    elif kind == "fixed":
        text = f"fixed {raw.get('value')!r}"
    else:
        text = f"{kind} {raw.get('low')}..{raw.get('high')}" + (" log" if raw.get("log") else "")
        if raw.get("step") is not None:
            text += f" step {raw['step']}"
    if raw.get("when"):
        text += f" when {raw['when']}"
    return text


def _flat(space_dict: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    out = {k: v for k, v in space_dict.items() if k != "extra"}
    out.update({f"extra.{k}": v for k, v in (space_dict.get("extra") or {}).items()})
    return out


def space_changes(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> list[str]:
    """What changed from ``old`` to ``new`` (spaces as plain data), one phrase per parameter."""
    if old is None:
        return []
    before, after = _flat(old), _flat(new)
    out = []
    for name in [*before, *(k for k in after if k not in before)]:
        a, b = before.get(name), after.get(name)
        if a == b:
            continue
        if a is None:
            out.append(f"{name} added ({_summary(b)})")
        elif b is None:
            out.append(f"{name} removed (was {_summary(a)})")
        elif a.get("type") == b.get("type") == "categorical" and a.get("when") == b.get("when"):
            added = [c for c in b["choices"] if c not in a["choices"]]
            gone = [c for c in a["choices"] if c not in b["choices"]]
            parts = [f"{', '.join(map(str, added))} added" if added else ""]
            parts.append(f"{', '.join(map(str, gone))} removed" if gone else "")
            out.append(f"{name}: " + ("; ".join(p for p in parts if p) or "choices reordered"))
        else:
            out.append(f"{name}: {_summary(a)} -> {_summary(b)}")
    return out


def inside(
    trial_params: Mapping[str, Any], space: SearchSpace, defaults: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The trial's configuration in ``space``, or ``None`` when the space could not produce it.

    ``trial_params`` is the whole configuration the trial trained (sampled and fixed values); a
    parameter it does not name had the model's default (``defaults``). The trial lies inside
    when every parameter the space makes active takes a value the space allows, and every other
    value it trained with is the default the space now leaves it at.
    """
    chosen: dict[str, Any] = {}
    missing = object()

    def value(key: str, name: str) -> Any:
        return trial_params[key] if key in trial_params else defaults.get(name, missing)

    for name in space.order:
        if not space.active(name, chosen):
            continue
        spec = space.specs[name]
        keys = [name]
        if name == "n_neurons" and chosen.get("n_neurons_per_layer"):
            layers = int(chosen.get("n_hidden", defaults.get("n_hidden", DEFAULTS["n_hidden"])))
            keys = [f"{PER_LAYER_PREFIX}{i}" for i in range(1, layers + 1)]
        for key in keys:
            v = value(key, name)
            if v is missing or not spec.possible(v):
                return None
            chosen[key] = v
    layers = int(chosen.get("n_hidden", defaults.get("n_hidden", DEFAULTS["n_hidden"])))
    for key, v in trial_params.items():
        if key in chosen:
            continue
        if key.startswith(PER_LAYER_PREFIX) and key[len(PER_LAYER_PREFIX) :].isdigit():
            if not chosen.get("n_neurons_per_layer") or int(key[len(PER_LAYER_PREFIX) :]) > layers:
                continue  # a width the network no longer has, or one n_neurons now covers
        if key not in defaults or defaults[key] != v:
            return None
    return chosen


def effective_defaults(exp: Experiment) -> dict[str, Any]:
    """What a parameter a space leaves out is trained with (the training section's values)."""
    return {
        **DEFAULTS,
        "batch_size": exp.training.batch_size,
        "patience": exp.training.early_stopping.patience,
    }


# -- versions --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class VersionInfo:
    """One version of a study, as ``tuning status``/``show`` list them.

    Attributes:
        name: Its Optuna study.
        version: Its number.
        previous: The version it replaced.
        reason: Why it was started.
        created: When (ISO time, UTC).
        data: The data it began with.
        data_last: Its last job's data.
        current: Whether it is the study's newest version.
    """

    name: str
    version: int
    previous: str | None
    reason: str | None
    created: str | None
    data: DataPrint | None
    data_last: DataPrint | None
    current: bool


def _chain(studies: Mapping[str, FrozenStudy], base: str) -> list[FrozenStudy]:
    """``base``'s versions in order, following each one's ``tuning.next``."""
    chain: list[FrozenStudy] = []
    name: str | None = base
    while name is not None and name in studies and len(chain) < 10_000:
        chain.append(studies[name])
        nxt = studies[name].user_attrs.get(NEXT)
        name = nxt if isinstance(nxt, str) and nxt != name else None
    return chain


def versions(storage: optuna.storages.BaseStorage | str, base: str) -> list[VersionInfo]:
    """Every version of the study ``base`` (oldest first); empty when there is none."""
    if isinstance(storage, str):
        storage = optuna.storages.get_storage(storage)
    studies = {s.study_name: s for s in storage.get_all_studies()}
    chain = _chain(studies, base)
    out = []
    for i, s in enumerate(chain):
        info = s.user_attrs.get(LINEAGE) or {}
        out.append(
            VersionInfo(
                name=s.study_name,
                version=int(info.get("version", i + 1)),
                previous=info.get("previous"),
                reason=info.get("reason"),
                created=info.get("created"),
                data=DataPrint.from_dict(s.user_attrs.get(DATA)),
                data_last=DataPrint.from_dict(s.user_attrs.get(LAST_DATA)),
                current=i == len(chain) - 1,
            )
        )
    return out


def current_version(storage: optuna.storages.BaseStorage | str, name: str) -> str:
    """The newest version of the study ``name`` (``name`` itself if it has none, or if it
    names a version already: ``quickstart@v2``)."""
    if base_of(name)[1] != 1:
        return name
    chain = versions(storage, name)
    return chain[-1].name if chain else name


def earlier_versions(storage: optuna.storages.BaseStorage, base: str, current: str) -> list[str]:
    """The versions of ``base`` before ``current`` that still hold a RUNNING trial (a job
    killed in them before a later job replaced the version), oldest first."""
    out = []
    for s in _chain({s.study_name: s for s in storage.get_all_studies()}, base):
        if s.study_name == current:
            break
        running = storage.get_all_trials(s._study_id, deepcopy=False, states=(TrialState.RUNNING,))
        if running:
            out.append(s.study_name)
    return out


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def resolve(exp: Experiment, data: Dataset, say: Say = print) -> Lineage:
    """Choose the version of ``exp``'s study this job runs, starting one where the space or the
    data changed (see the module's docstring); point ``exp`` at it (``exp.use_version``).

    Raises:
        ConfigError: when the experiment's ``study.on_change`` says to stop on a change, or the
            stored study optimizes in the other direction.
    """
    storage_url = exp.study.storage
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with store_lock(storage_url):
        storage = open_storage(exp)
        lineage = _Resolver(exp, data, storage).run()
    exp.use_version(lineage.name)
    for line in lineage.lines:
        say(line)
    return lineage


class _Resolver:
    """One job's decision, made under the storage's lock (see :func:`resolve`)."""

    def __init__(self, exp: Experiment, data: Dataset, storage: optuna.storages.BaseStorage):
        self.exp, self.storage = exp, storage
        self.base = exp.study_base
        self.space_dict = exp.space.to_dict()
        self.space_digest = digest(self.space_dict)
        self.print = data_print(exp, data)
        self.changes = exp.study.on_change

    def run(self) -> Lineage:
        studies = {s.study_name: s for s in self.storage.get_all_studies()}
        chain = _chain(studies, self.base)
        self._remove_half_made(studies, chain)
        if not chain:
            return self._first()
        head = chain[-1]
        self._check_direction(head)
        version = int((head.user_attrs.get(LINEAGE) or {}).get("version", len(chain)))
        head_id = head._study_id
        trials = self.storage.get_all_trials(head_id, deepcopy=False)
        stored_space = head.user_attrs.get(SPACE)
        began = DataPrint.from_dict(head.user_attrs.get(DATA))
        last = DataPrint.from_dict(head.user_attrs.get(LAST_DATA)) or began
        space_phrases = space_changes(stored_space, self.space_dict)
        refused = incompatible(self.exp.space, stored_distributions(trials))
        if refused and not space_phrases:  # a study from before lineage was recorded
            space_phrases = [f"{k}: now {_summary(self.space_dict.get(k))}" for k in refused]
        space_reason = self._space_reason(space_phrases, refused)
        data_reason, data_phrase = self._data_reason(began, last)
        lineage = Lineage(
            base=self.base, name=head.study_name, version=version,
            previous=(head.user_attrs.get(LINEAGE) or {}).get("previous"), reason=None,
            started=False, space_digest=self.space_digest, data=self.print, data_before=last,
        )  # fmt: skip
        if space_reason is None and data_reason is None:
            if space_phrases:
                lineage.lines.append(
                    f"search space changed since the study's last job: {'; '.join(space_phrases)}"
                    f": continuing {self._label(head.study_name, version)} (Optuna samples the "
                    "changed space in the same study)"
                )
            if data_phrase:
                lineage.lines.append(
                    f"data changed since the study's last job: {data_phrase}: continuing "
                    f"{self._label(head.study_name, version)} ({self._within(began)})"
                )
            if LINEAGE not in head.user_attrs:  # a study from before lineage was recorded
                self._stamp(head_id, version=version, previous=None, reason=None)
            self.storage.set_study_user_attr(head_id, SPACE, self.space_dict)
            self.storage.set_study_user_attr(head_id, LAST_DATA, self.print.to_dict())
            return lineage
        return self._new_version(head, version, trials, lineage, space_reason, data_reason,
                                 space_phrases, data_phrase)  # fmt: skip

    # -- decisions ---------------------------------------------------------------------------

    def _error(self, what: str, key: str, fix: str) -> ConfigError:
        return ConfigError(what, source=self.exp.source, key=key, fix=fix)

    def _space_reason(self, phrases: list[str], refused: list[str]) -> str | None:
        """Why the space needs a new version (``None``: it does not)."""
        if not phrases:
            return None
        policy = self.changes.space
        if policy == "error":
            raise self._error(
                f"the search space of study {self.base!r} changed since its last job "
                f"({'; '.join(phrases)}) and study.on_change.space is error",
                "study.on_change.space",
                "undo the change, set study.on_change.space: adapt (or version), or give a new "
                "study.name",
            )
        if policy == "version":
            return "search space changed"
        if refused:
            return (
                "search space changed in a way Optuna cannot sample in one study "
                f"({', '.join(refused)})"
            )
        return None

    def _data_reason(
        self, began: DataPrint | None, last: DataPrint | None
    ) -> tuple[str | None, str | None]:
        """Why the data needs a new version, and how it changed since the last job."""
        now = self.print
        if last is None or last == now:
            phrase = None
        else:
            phrase = (
                f"rows {last.rows} -> {now.rows}, digest {last.digest[:8]} -> {now.digest[:8]}"
            )
            if last.schema != now.schema:
                phrase += ", its shape changed (columns, classes, task or split)"
            if last.metric != now.metric:
                phrase += f", objective {last.metric} -> {now.metric}"
        if phrase is None or began is None:
            return None, phrase
        policy = self.changes.data
        if policy == "error":
            raise self._error(
                f"the data of study {self.base!r} changed since its last job ({phrase}) and "
                "study.on_change.data is error",
                "study.on_change.data",
                "restore the data, set study.on_change.data: adapt (or version, continue), or "
                "give a new study.name",
            )
        if policy == "continue":
            return None, phrase
        if policy == "version" and now.digest != began.digest:
            return "data changed", phrase
        if now.schema != began.schema:
            return "the data's shape changed (columns, classes, task or split)", phrase
        if now.metric != began.metric:
            return f"the objective changed ({began.metric} -> {now.metric})", phrase
        share = abs(now.rows - began.rows) / max(began.rows, 1)
        if share > self.changes.rows:
            return (
                f"the rows changed by {share:.0%} since the version began with {began.rows} "
                f"(over study.on_change.rows {self.changes.rows:.0%})",
                phrase,
            )
        return None, phrase

    def _within(self, began: DataPrint | None) -> str:
        if began is None:
            return "no data recorded for it before"
        share = abs(self.print.rows - began.rows) / max(began.rows, 1)
        return (
            f"{share:.0%} of the {began.rows} rows it began with, within study.on_change.rows "
            f"{self.changes.rows:.0%}; @champion is judged on today's rows"
        )

    @staticmethod
    def _label(name: str, version: int) -> str:
        return f"version {version} ({name!r})"

    def _check_direction(self, head: FrozenStudy) -> None:
        stored = [d.name.lower() for d in head.directions]
        wanted = [o.direction for o in self.exp.objectives]
        if stored == wanted:
            return
        if len(stored) == len(wanted) == 1:
            raise self._error(
                f"the stored study {head.study_name!r} is {stored[0]}d, this experiment "
                f"{wanted[0]}s",
                "objective.direction",
                f"set direction: {stored[0]}, or give a new study.name",
            )
        raise self._error(
            f"the stored study {head.study_name!r} has directions {stored}, this experiment's "
            f"objectives {wanted}",
            "objective",
            f"give objectives with directions {stored}, or a new study.name",
        )

    # -- making versions ---------------------------------------------------------------------

    def _remove_half_made(self, studies: dict[str, FrozenStudy], chain: list[FrozenStudy]) -> None:
        """Delete versions of this study that no version points at (a job died making them:
        they hold only copies of earlier trials, never a trial of their own)."""
        linked = {s.study_name for s in chain}
        for name in list(studies):
            base, number = base_of(name)
            if base == self.base and number > 1 and name not in linked:
                optuna.delete_study(study_name=name, storage=self.storage)
                del studies[name]

    def _first(self) -> Lineage:
        study = optuna.create_study(
            storage=self.storage,
            study_name=self.base,
            directions=[o.direction for o in self.exp.objectives],
            load_if_exists=True,
        )
        self._stamp(study._study_id, version=1, previous=None, reason=None)
        return Lineage(
            base=self.base, name=self.base, version=1, previous=None, reason=None, started=True,
            space_digest=self.space_digest, data=self.print,
        )  # fmt: skip

    def _stamp(
        self, study_id: int, *, version: int, previous: str | None, reason: str | None
    ) -> None:
        info = {
            "base": self.base,
            "version": version,
            "previous": previous,
            "reason": reason,
            "created": _now(),
        }
        self.storage.set_study_user_attr(study_id, LINEAGE, info)
        self.storage.set_study_user_attr(study_id, SPACE, self.space_dict)
        self.storage.set_study_user_attr(study_id, DATA, self.print.to_dict())
        self.storage.set_study_user_attr(study_id, LAST_DATA, self.print.to_dict())

    def _new_version(
        self,
        head: FrozenStudy,
        version: int,
        trials: Sequence[optuna.trial.FrozenTrial],
        lineage: Lineage,
        space_reason: str | None,
        data_reason: str | None,
        space_phrases: list[str],
        data_phrase: str | None,
    ) -> Lineage:
        name = version_name(self.base, version + 1)
        reason = "; ".join(r for r in (space_reason, data_reason) if r)
        study = optuna.create_study(
            storage=self.storage,
            study_name=name,
            directions=[o.direction for o in self.exp.objectives],
        )
        defaults = effective_defaults(self.exp)
        if data_reason is None:
            carried, left = self._carry(study, head.study_name, trials, defaults)
            what = (
                f"warm-started with {carried} of its trials ({left} outside the new space "
                "stay there)"
            )
        else:
            queued = self._enqueue(study, head.study_name, trials, defaults)
            what = (
                f"no values carried (measured on other data); its {queued} best configuration(s) "
                "are trained again first"
            )
        self._stamp(study._study_id, version=version + 1, previous=head.study_name, reason=reason)
        self.storage.set_study_user_attr(head._study_id, NEXT, name)  # last: the version is whole
        changed = []
        if space_phrases:
            changed.append(f"search space changed ({'; '.join(space_phrases)})")
        if data_phrase:
            changed.append(f"data changed ({data_phrase})")
        lineage.lines.append(
            f"{' and '.join(changed) or 'study changed'} since the study's last job: {reason}: "
            f"continuing in {self._label(name, version + 1)} after "
            f"{self._label(head.study_name, version)}, {what}"
        )
        lineage.name, lineage.version, lineage.previous = name, version + 1, head.study_name
        lineage.reason, lineage.started = reason, True
        return lineage

    def _carry(
        self,
        study: optuna.Study,
        source: str,
        trials: Sequence[optuna.trial.FrozenTrial],
        defaults: Mapping[str, Any],
    ) -> tuple[int, int]:
        """Copy the finished trials that lie inside the new space, with their values."""
        space, copies, left = self.exp.space, [], 0
        for t in trials:
            if t.state not in (TrialState.COMPLETE, TrialState.PRUNED):
                continue
            config = inside(records.params(t), space, defaults)
            if config is None:
                left += 1
                continue
            copies.append(self._copy(t, config, source))
        study.add_trials(copies)
        return len(copies), left

    def _copy(
        self, t: optuna.trial.FrozenTrial, config: Mapping[str, Any], source: str
    ) -> optuna.trial.FrozenTrial:
        space = self.exp.space
        sampled, dists, fixed = {}, {}, {}
        for key, v in config.items():
            dist = _dist_of(space, key)
            if dist is None or isinstance(space.specs.get(key), FixedSpec):
                fixed[f"{records.FIXED_PREFIX}{key}"] = v
            else:
                sampled[key], dists[key] = v, dist
        attrs = {
            k: v
            for k, v in t.user_attrs.items()
            if k != records.PROCESS and not k.startswith(records.FIXED_PREFIX)
        }
        attrs.update(fixed)
        attrs[CARRIED_FROM] = f"{source}#{t.number}"
        return optuna.trial.create_trial(
            state=t.state,
            values=t.values,
            params=sampled,
            distributions=dists,
            user_attrs=attrs,
            intermediate_values=dict(t.intermediate_values),
            constraints=dict(t.constraints) or None,
        )

    def _enqueue(
        self,
        study: optuna.Study,
        source: str,
        trials: Sequence[optuna.trial.FrozenTrial],
        defaults: Mapping[str, Any],
    ) -> int:
        """Queue the previous version's best configurations that the space still holds."""
        k = self.changes.retrain_top
        done = [t for t in trials if t.state == TrialState.COMPLETE and t.values]
        ranked = self.exp.objective.ranked(done, lambda t: float(t.values[0]))
        queued = 0
        for t in ranked:
            if queued >= k:
                break
            config = inside(records.params(t), self.exp.space, defaults)
            if config is None:
                continue
            searched = {
                k2: v
                for k2, v in config.items()
                if _dist_of(self.exp.space, k2) is not None
                and not isinstance(self.exp.space.specs.get(k2), FixedSpec)
            }
            study.enqueue_trial(
                searched, user_attrs={CARRIED_FROM: f"{source}#{t.number}"}, skip_if_exists=True
            )
            queued += 1
        return queued
