"""Optuna's cache in front of a database, with its sorted trial lists kept instead of rebuilt.

Optuna wraps every :class:`~optuna.storages.RDBStorage` in ``_CachedStorage``: finished trials
are read once and kept. But each ``get_all_trials`` then builds its answer again from the
whole cache: a dict comprehension over every trial to filter the states, and ``sorted`` with a
Python key. A job calls it several times a trial (``Study.ask`` looks for WAITING trials, TPE
and the pruner read the history), so at 10,000 trials each read costs ~1-3 ms and a trial's
overhead grows with the study (benchmarks/RESULTS.md, "Growth: 10,000 trials").

:class:`SortedTrialsCache` keeps one list per state set asked for, sorted by number, and updates
each in place as the cache takes in a trial (binary search; an insert or a delete moves
pointers in C). A read costs a copy of that list's pointers. What it returns is what Optuna's
own cache returns, in the same order (``tests/test_trial_cache.py`` checks it against Optuna's
on random histories): only the cost changes.

It subclasses a private Optuna class and overrides two of its methods, so it is kept in this
one module, and :func:`cached` falls back to Optuna's own cache where that class no longer has
what this one relies on (a later Optuna), rather than failing.
"""

from __future__ import annotations

import bisect
import copy
import operator
from collections.abc import Container
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

try:  # private: see the module's docstring
    from optuna.storages._cached_storage import _CachedStorage
except ImportError:  # pragma: no cover - a later Optuna
    _CachedStorage = None  # type: ignore[assignment,misc]

__all__ = ["SortedTrialsCache", "cached"]

_MAX_LISTS = 16  # state sets kept per study (Optuna's readers ask for about five)
_Key = frozenset[TrialState] | None


_number = operator.attrgetter("number")


if _CachedStorage is not None:

    class SortedTrialsCache(_CachedStorage):  # type: ignore[misc,valid-type]
        """Optuna's ``_CachedStorage`` whose ``get_all_trials`` answers from kept lists."""

        def __init__(self, backend: optuna.storages.RDBStorage) -> None:
            super().__init__(backend)
            # study id -> state set (None: all) -> that study's trials in it, sorted by number
            self._lists: dict[int, dict[_Key, list[FrozenTrial]]] = {}
            self._synced: set[int] = set()  # studies read from the database at least once

        def _add_trials_to_cache(self, study_id: int, trials: list[FrozenTrial]) -> None:
            # Called with Optuna's lock held, before its own update: the old trial is still there.
            lists = self._lists.get(study_id)
            if lists:
                known = self._studies[study_id].trials
                for trial in trials:
                    old = known.get(trial.number)
                    for key, kept in lists.items():
                        _update(kept, key, old, trial)
            super()._add_trials_to_cache(study_id, trials)

        def get_all_trials(
            self,
            study_id: int,
            deepcopy: bool = True,
            states: Container[TrialState] | None = None,
        ) -> list[FrozenTrial]:
            try:
                key: _Key = None if states is None else frozenset(states)  # type: ignore[call-overload]
            except TypeError:  # a Container that cannot be iterated: Optuna's way
                return super().get_all_trials(study_id, deepcopy=deepcopy, states=states)
            self._read_trials_from_remote_storage(study_id)
            trials = self._kept(study_id, key)
            return copy.deepcopy(trials) if deepcopy else trials

        def kept_trials(
            self, study_id: int, states: Container[TrialState] | None = None
        ) -> list[FrozenTrial]:
            """``get_all_trials(deepcopy=False)`` as of the last read of the database: no query.
            For a reader that has just read (TPE reads once per trial; see
            :class:`tuning.engines.optuna.BoundedTPESampler`)."""
            key: _Key = None if states is None else frozenset(states)  # type: ignore[call-overload]
            if study_id not in self._synced:
                self._read_trials_from_remote_storage(study_id)
            return self._kept(study_id, key)

        def _read_trials_from_remote_storage(self, study_id: int) -> None:
            super()._read_trials_from_remote_storage(study_id)
            self._synced.add(study_id)

        def _kept(self, study_id: int, key: _Key) -> list[FrozenTrial]:
            """A copy of the kept list of ``key``'s trials, made when first asked for."""
            with self._lock:
                lists = self._lists.setdefault(study_id, {})
                kept = lists.get(key)
                if kept is None:
                    if len(lists) >= _MAX_LISTS:
                        lists.pop(next(iter(lists)))
                    every = self._studies[study_id].trials.values()
                    kept = sorted((t for t in every if key is None or t.state in key), key=_number)
                    lists[key] = kept
                return list(kept)  # the caller's own list: the kept one changes later

        def delete_study(self, study_id: int) -> None:
            with self._lock:
                self._lists.pop(study_id, None)
                self._synced.discard(study_id)
            super().delete_study(study_id)

        def __getstate__(self) -> dict[Any, Any]:
            state = super().__getstate__()
            state["_lists"] = {}  # rebuilt on the first read
            state["_synced"] = set()
            return state

else:  # pragma: no cover - a later Optuna
    SortedTrialsCache = None  # type: ignore[assignment,misc]


def _update(kept: list[FrozenTrial], key: _Key, old: FrozenTrial | None, new: FrozenTrial) -> None:
    """Put ``new`` (replacing ``old``, the same number's trial before, if any) into ``kept``,
    the trials of the state set ``key`` sorted by number."""
    was_in = old is not None and (key is None or old.state in key)
    is_in = key is None or new.state in key
    if not (was_in or is_in):
        return
    i = bisect.bisect_left(kept, new.number, key=_number)
    there = i < len(kept) and kept[i].number == new.number
    if is_in and there:
        kept[i] = new
    elif is_in:
        kept.insert(i, new)
    elif there:
        del kept[i]


def cached(backend: optuna.storages.RDBStorage) -> optuna.storages.BaseStorage:
    """``backend`` behind :class:`SortedTrialsCache`, or behind Optuna's own cache where this
    Optuna's private cache lacks what it relies on."""
    needs = ("_add_trials_to_cache", "_read_trials_from_remote_storage", "_studies", "_lock")
    if SortedTrialsCache is not None:
        storage = SortedTrialsCache(backend)
        if all(hasattr(storage, name) for name in needs):
            return storage
    return optuna.storages.get_storage(backend)
