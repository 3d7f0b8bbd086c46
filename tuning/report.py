"""Plots, tables and words for people: what the parent run shows and what the terminal prints.

Owns the files written for the parent run (``trials.csv``; ``optimization_history``,
``param_importances``, ``parallel_coordinate`` and ``slice`` plots as interactive HTML and as PNG
for MLflow's preview; ``learning_curves.png``; ``summary.md``) and the results table printed at
the end of a job, and what ``tuning status``/``show`` say of a study's versions
(:func:`version_summaries`, :func:`carried_note`). It reads a study and per-epoch histories and
writes files or text; it does not talk to MLflow (``tracking.py`` uploads what this returns) and
does not train anything.
"""

from __future__ import annotations

import copy
import heapq
import warnings
from collections.abc import Container, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna

from tuning import pareto, records
from tuning.digest import Digest, digest, digest_of_trials, top_trials
from tuning.lineage import CARRIED_FROM, versions
from tuning.objective import Objective
from tuning.process import is_dead

if TYPE_CHECKING:
    from types import ModuleType

__all__ = [
    "carried_note",
    "compare_fronts",
    "primary",
    "last_trial_time",
    "state_counts",
    "results_table",
    "summary_markdown",
    "trials_table",
    "version_summaries",
    "write_job_reports",
]


def _pyplot() -> ModuleType:
    """matplotlib's pyplot, drawing to files (never a window). Imported when a plot is made:
    pyplot and pandas cost ~0.5 s, and ``tuning status``/``show``/``best`` draw nothing."""
    import matplotlib

    matplotlib.use("Agg")  # before pyplot is imported
    import matplotlib.pyplot as plt

    return plt


def state_counts(trials: Iterable[optuna.trial.FrozenTrial]) -> dict[str, int]:
    """Trials per state, every state present (``complete``, ``pruned``, ``fail``, ...), the
    pruned ones that did not learn apart (``not_learning``, :func:`tuning.records.state`)."""
    counts = {state.name.lower(): 0 for state in optuna.trial.TrialState}
    counts[records.NOT_LEARNING] = 0
    for t in trials:
        counts[records.state(t)] += 1
    return counts


def running_liveness(trials: Iterable[optuna.trial.FrozenTrial]) -> dict[str, int]:
    """RUNNING trials by whether their process lives: ``live``, ``dead`` (its process on this
    host is gone: the next job fails it) or ``elsewhere`` (another host: its heartbeat tells)."""
    out = {"live": 0, "dead": 0, "elsewhere": 0}
    for t in trials:
        if t.state != optuna.trial.TrialState.RUNNING:
            continue
        recorded = records.process_of(t)
        dead = is_dead(recorded) if recorded is not None else None
        out["elsewhere" if dead is None else "dead" if dead else "live"] += 1
    return out


def last_trial_time(trials: Iterable[optuna.trial.FrozenTrial]) -> Any:
    """When the latest trial ended (or started, if it still runs); None without trials."""
    times = [t.datetime_complete or t.datetime_start for t in trials]
    return max((t for t in times if t is not None), default=None)


def primary(trial: optuna.trial.FrozenTrial) -> float | None:
    """The trial's primary objective value (its first with several objectives); ``None``
    before it completed."""
    return trial.values[0] if trial.values else None


def best_feasible(
    trials: Iterable[optuna.trial.FrozenTrial],
    directions: Sequence[optuna.study.StudyDirection],
) -> optuna.trial.FrozenTrial | None:
    """The best complete trial by the primary (first) objective among those meeting every
    limit (constraints <= 0), the earliest of equals; ``None`` when there is none."""
    done = [
        t
        for t in trials
        if t.state == optuna.trial.TrialState.COMPLETE
        and t.values
        and all(v <= 0 for v in t.constraints.values())
    ]
    if not done:
        return None
    objective = Objective("value", directions[0].name.lower())  # type: ignore[arg-type]
    return objective.ranked(done, lambda t: float(t.values[0]))[0]


def trials_table(study: optuna.Study) -> list[dict[str, object]]:
    """One row per trial: number, state, value, params, epochs, seconds, n_params, reason."""
    rows = []
    objectives = pareto.objectives_of(study) if pareto.is_multi(study) else ()
    for t in study.get_trials(deepcopy=False):
        attrs = t.user_attrs
        rows.append(
            {
                "number": t.number,
                "state": records.state(t),
                "value": primary(t),
                **{  # several objectives: each under its name, the primary also as `value`
                    o.metric: (t.values[i] if t.values and len(t.values) > i else None)
                    for i, o in enumerate(objectives)
                },
                **({pareto.FEASIBLE: pareto.is_feasible(t)} if objectives else {}),
                **{f"params_{k}": v for k, v in records.params(t).items()},
                records.EPOCHS_TRAINED: attrs.get(records.EPOCHS_TRAINED),
                records.TRAIN_SECONDS: attrs.get(records.TRAIN_SECONDS),
                records.N_PARAMS: attrs.get(records.N_PARAMS),
                records.REASON: attrs.get(records.REASON, ""),
                records.MLFLOW_RUN_ID: records.run_id(t),
            }
        )
    return rows


def write_job_reports(
    study: optuna.Study,
    *,
    histories: Mapping[int, Mapping[str, list[float]]],
    metric: str,
    out_dir: Path,
) -> list[Path]:
    """Write the parent run's report files into ``out_dir`` and return their paths.

    A study with several objectives gets its front instead of the single-objective plots
    (:func:`write_front_reports`); the trials table and learning curves are the same.
    """
    import pandas as pd

    plt = _pyplot()
    paths = []
    table = out_dir / "trials.csv"
    pd.DataFrame(trials_table(study)).to_csv(table, index=False)
    paths.append(table)
    if pareto.is_multi(study):
        return (
            paths
            + write_front_reports(study, out_dir)
            + _learning_curves(study, histories, pareto.objectives_of(study)[0], out_dir)
        )

    done = [t for t in study.get_trials(deepcopy=False) if primary(t) is not None]
    if done:
        fig, ax = plt.subplots(figsize=(7, 4))
        xs = [t.number for t in done]
        ys = [float(v) for t in done if (v := primary(t)) is not None]
        best = Objective.of_study(study).running_best(ys)
        ax.scatter(xs, ys, s=14, label=f"trial {metric}")
        ax.step(xs, best, where="post", color="C3", label="best so far")
        ax.set_xlabel("trial")
        ax.set_ylabel(metric)
        ax.set_title(f"Optimization history: {study.study_name}")
        ax.legend()
        fig.tight_layout()
        path = out_dir / "optimization_history.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
        paths += _optuna_plots(study, out_dir)

    return paths + _learning_curves(study, histories, Objective.of_study(study, metric), out_dir)


def write_front_reports(study: optuna.Study, out_dir: Path) -> list[Path]:
    """A multi-objective study's front: ``pareto_front.csv`` (every complete trial: objectives,
    limited figures, feasible, on the front), ``pareto_front.png`` (primary against second
    objective) and Optuna's interactive ``pareto_front.html`` (infeasible trials greyed)."""
    import pandas as pd

    front = pareto.Front.of(study)
    path = out_dir / "pareto_front.csv"
    pd.DataFrame(front.rows).to_csv(path, index=False)
    paths = [path]
    if not front.rows:
        return paths
    paths.append(
        pareto.front_plot(
            front.rows,
            front.objectives,
            path=out_dir / "pareto_front.png",
            title=f"Pareto front: {study.study_name}",
            limits=front.limits,
        )
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            fig = optuna.visualization.plot_pareto_front(
                _Snapshot(study),
                target_names=[o.metric for o in front.objectives],
                constraints_func=lambda t: [1.0 if not pareto.is_feasible(t) else 0.0],
            )
            html = out_dir / "pareto_front.html"
            fig.write_html(html, include_plotlyjs="cdn")
            paths.append(html)
        except (ValueError, RuntimeError, ImportError):
            pass  # too few trials, or no plotly: the PNG stands alone
    return paths


def _learning_curves(
    study: optuna.Study,
    histories: Mapping[int, Mapping[str, list[float]]],
    objective: Objective,
    out_dir: Path,
) -> list[Path]:
    """The learning curves of this job's top five trials by ``objective``."""
    plt = _pyplot()
    paths: list[Path] = []
    metric = objective.metric
    if histories:
        ranked = objective.ranked(
            (n for n in histories if metric in histories[n]),
            lambda n: objective.best(histories[n][metric]),
        )[:5]
        if ranked:
            fig, ax = plt.subplots(figsize=(7, 4))
            train_metric = metric.removeprefix("val_")
            for i, n in enumerate(ranked):
                h = histories[n]
                epochs = range(1, len(h[metric]) + 1)
                ax.plot(epochs, h[metric], color=f"C{i}", label=f"trial {n} {metric}")
                if train_metric in h:
                    ax.plot(epochs, h[train_metric], color=f"C{i}", linestyle="--", alpha=0.6)
            ax.set_xlabel("epoch")
            ax.set_ylabel(metric)
            ax.set_title("Learning curves of this job's top trials (dashed: training)")
            ax.legend(fontsize=8)
            fig.tight_layout()
            path = out_dir / "learning_curves.png"
            fig.savefig(path, dpi=100)
            plt.close(fig)
            paths.append(path)
    return paths


class _Snapshot(optuna.Study):
    """A study whose trials are read once and never copied: what Optuna's plots are given.

    Optuna's plotting functions read ``study.trials`` (a deep copy of every trial) or
    ``get_trials`` several times each: ``plot_param_importances`` alone reads every trial six
    times, deep-copied (15 of 39 s at 10,000 trials). A plot only reads, so one uncopied list
    serves them all. Everything else (directions, name, storage) is the study's own.
    """

    def __init__(self, study: optuna.Study) -> None:
        # No super().__init__: a view of this study, not a new one (it would open the storage).
        self.__dict__.update(study.__dict__)
        self._frozen = study.get_trials(deepcopy=False)

    def _get_trials(
        self,
        deepcopy: bool = True,
        states: Container[optuna.trial.TrialState] | None = None,
        use_cache: bool = False,
    ) -> list[optuna.trial.FrozenTrial]:
        if states is None:
            return list(self._frozen)
        return [t for t in self._frozen if t.state in states]

    def latest(self, n: int, best: int) -> tuple[_Snapshot, str | None]:
        """This snapshot with only its latest ``n`` complete trials and the ``best`` best of the
        complete trials before them (the other states as they are), and a line that says so;
        itself and None where it has no more than ``n + best`` complete trials."""
        done = optuna.trial.TrialState.COMPLETE
        complete = [t for t in self._frozen if t.state == done]
        if len(complete) <= n + best:
            return self, None
        older = complete[:-n]
        pick = heapq.nsmallest if self.direction.name == "MINIMIZE" else heapq.nlargest
        keep = {t.number for t in complete[-n:]}
        keep.update(t.number for t in pick(best, older, key=lambda t: float(t.value)))  # type: ignore[arg-type]
        view = copy.copy(self)
        view._frozen = [t for t in self._frozen if t.state != done or t.number in keep]
        return view, (
            f"the latest {n:,} complete trials and the best {best} before them, "
            f"of {len(complete):,}"
        )


# Per-trial plots (parallel coordinate, slice) draw a long study's latest trials and its best:
# thousands of lines tell nothing more, and plotly takes seconds to draw them (the reports'
# goal is 10 s at 10,000 trials: benchmarks/RESULTS.md, "Growth: 10,000 trials").
PLOT_TRIALS = 1000
PLOT_BEST = 25
_PER_TRIAL_PLOTS = ("parallel_coordinate", "slice")


def _optuna_plots(study: optuna.Study, out_dir: Path) -> list[Path]:
    """Optuna's own plots: interactive HTML (plotly) and a PNG twin (matplotlib) of each.

    The optimization history and the importances use every trial; the per-trial plots the
    latest :data:`PLOT_TRIALS` complete ones and the best :data:`PLOT_BEST` before them, and
    their titles say so."""
    plt = _pyplot()
    study = _Snapshot(study)
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < 2 or not any(t.params for t in complete):
        return []
    recent, note = study.latest(PLOT_TRIALS, PLOT_BEST)
    paths: list[Path] = []
    kinds = {
        "optimization_history": ("plot_optimization_history", False),
        "param_importances": ("plot_param_importances", True),
        "parallel_coordinate": ("plot_parallel_coordinate", False),
        "slice": ("plot_slice", False),
    }
    for name, (fn, needs_variety) in kinds.items():
        if needs_variety and len(complete) < 3:
            continue
        drawn, said = (recent, note) if name in _PER_TRIAL_PLOTS else (study, None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                if name != "optimization_history":  # the PNG of this one is ours (above)
                    getattr(optuna.visualization.matplotlib, fn)(drawn)
                    fig = plt.gcf()
                    fig.set_size_inches(9, 5)
                    fig.tight_layout()
                    if said:
                        fig.text(0.005, 0.005, said, fontsize=7, color="0.4")
                    png = out_dir / f"{name}.png"
                    fig.savefig(png, dpi=100)
                    paths.append(png)
                plt.close("all")
                html = out_dir / f"{name}.html"
                figure = getattr(optuna.visualization, fn)(drawn)
                if said:
                    figure.update_layout(title_text=f"{figure.layout.title.text or name}: {said}")
                figure.write_html(html, include_plotlyjs="cdn")
                paths.append(html)
            except (ValueError, RuntimeError, ZeroDivisionError, ImportError):
                plt.close("all")  # too few distinct trials for this plot: skip it
    return paths


def results_table(
    study: optuna.Study, *, top: int = 5, origins: bool = False, found: Digest | None = None
) -> list[str]:
    """The best complete trials as text lines, like KerasTuner's ``results_summary``.

    With ``origins``, a trial carried from an earlier version of the study says where it came
    from (:func:`carried_note`) after its hyperparameters. With the study's digest
    (:func:`tuning.digest.digest_of_study`) and one objective, only the ``top`` trials are
    read; several objectives rank every trial.
    """
    if found is not None and not pareto.is_multi(study):
        complete = top_trials(
            study._storage,  # noqa: SLF001 (Optuna keeps them private)
            study._study_id,  # noqa: SLF001
            found,
            Objective.of_study(study),
            top,
        )
    else:
        complete = _ranked(study)
    if not complete:
        return []
    header = f"{'trial':>5}  {'value':>8}  {'epochs':>6}  {'seconds':>7}  {'params':>8}"
    lines = [f"{header}  hyperparameters"]
    for t in complete[:top]:
        attrs = t.user_attrs
        params = ", ".join(f"{k}={_short(v)}" for k, v in t.params.items())
        note = carried_note(t) if origins else None
        lines.append(
            f"{t.number:>5}  {primary(t):>8.4f}  {attrs.get(records.EPOCHS_TRAINED, ''):>6}  "
            f"{attrs.get(records.TRAIN_SECONDS, 0.0):>7.1f}  "
            f"{attrs.get(records.N_PARAMS, ''):>8}  {params}" + (f"  ({note})" if note else "")
        )
    return lines


def carried_note(trial: optuna.trial.FrozenTrial) -> str | None:
    """Where a trial of a later version came from (``None``: it was sampled in its own version).

    A new version of a study starts with copies of the earlier version's trials (same value,
    same MLflow run: ``copied from quickstart#3``) when only the space changed, or with the
    earlier version's best configurations queued to train again on new data (``configuration
    of quickstart#3, trained again``): both carry ``carried_from``; only a trained one records
    the process that ran it.
    """
    source = trial.user_attrs.get(CARRIED_FROM)
    if not source:
        return None
    if records.process_of(trial) is None:
        return f"copied from {source}"
    return f"configuration of {source}, trained again"


def version_summaries(
    storage: optuna.storages.BaseStorage | str, base: str, *, counts: bool = True
) -> list[dict[str, Any]]:
    """Each version of the study ``base`` (oldest first), as ``tuning status``/``show`` list it:
    its number and Optuna study, why it was started, its trials, best trial and data.

    A study from before versions were recorded, or never changed, is one version; a name that
    is not a stored study has none (an empty list). Without ``counts`` no trial is read but
    each version's best (``trials``, ``states`` and ``carried`` are None): counting reads every
    trial, seconds on a study of 10,000.
    """
    if isinstance(storage, str):
        storage = optuna.storages.get_storage(storage)
    out = []
    for info in versions(storage, base):
        study_id = storage.get_study_id_from_name(info.name)
        directions = storage.get_study_directions(study_id)
        limits = storage.get_study_user_attrs(study_id).get("tuning.limits")
        several = len(directions) > 1 or bool(limits)
        found: Digest | None = None
        best: optuna.trial.FrozenTrial | None
        if several:  # the best feasible by the primary: Optuna's best ignores limits
            trials = storage.get_all_trials(study_id, deepcopy=False)
            best = best_feasible(trials, directions)
            found = digest_of_trials(trials) if counts else None
        else:  # one query, not every trial (a study of 10,000 trials)
            try:
                best = storage.get_best_trial(study_id)
            except ValueError:
                best = None
            found = digest(storage, study_id) if counts else None  # SQL aggregates
        data = info.data_last or info.data
        out.append(
            {
                "version": info.version,
                "study": info.name,
                "current": info.current,
                "previous": info.previous,
                "reason": info.reason,
                "created": info.created,
                "trials": found.trials if found is not None else None,
                "states": (
                    {k: n for k, n in found.states.items() if n} if found is not None else None
                ),
                "carried": found.carried if found is not None else None,
                "best_value": primary(best) if best is not None else None,
                "best_trial": best.number if best is not None else None,
                "best_from": carried_note(best) if best is not None else None,
                "data_rows": data.rows if data else None,
                "data_digest": data.digest if data else None,
                "data_rows_began": info.data.rows if info.data else None,
                "metric": data.metric if data else None,
            }
        )
    return out


def _ranked(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Complete trials, best first; with several objectives the feasible ones, by the primary
    objective."""
    done = [t for t in study.get_trials(deepcopy=False) if t.values]
    if pareto.is_multi(study):
        done = [t for t in done if pareto.is_feasible(t)]
        objective = pareto.objectives_of(study)[0]
    else:
        objective = Objective.of_study(study)
    return objective.ranked(done, lambda t: float(t.values[0]))


def _short(v: object) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def summary_markdown(
    study: optuna.Study,
    *,
    metric: str,
    job_trials: int,
    test_scores: Mapping[str, float],
    seconds: float,
) -> str:
    """A short account in words: what was tried, what won, by how much, and how big it is."""
    trials = study.get_trials(deepcopy=False)
    counts = state_counts(trials)
    lines = [f"# Study `{study.study_name}`", ""]
    lines.append(
        f"This job ran {job_trials} trial(s) in {seconds:.0f} s. The study now holds "
        f"{len(trials)} trials: {counts.get('complete', 0)} complete, "
        f"{counts.get('pruned', 0)} pruned, {counts.get('fail', 0)} failed"
        + (
            f", {counts[records.NOT_LEARNING]} ended as not learning (no better than a trivial "
            "predictor after their first epochs)."
            if counts.get(records.NOT_LEARNING)
            else "."
        )
    )
    if pareto.is_multi(study):
        return _front_markdown(study, lines, test_scores)
    complete = [t for t in trials if primary(t) is not None]
    if not complete:
        lines += ["", "No trial has completed yet, so there is no best model."]
        return "\n".join(lines) + "\n"
    ranked = _ranked(study)
    best = ranked[0]
    params = ", ".join(f"`{k}` = {_short(v)}" for k, v in best.params.items())
    lines += [
        "",
        f"**Winner: trial {best.number}**, {metric} = {primary(best):.4f}, with {params}.",
    ]
    if len(ranked) > 1:
        runner_up = ranked[1]
        median = sorted(primary(t) for t in ranked)[len(ranked) // 2]  # type: ignore[type-var]
        gap = abs(primary(best) - primary(runner_up))  # type: ignore[operator]
        lines.append(
            f"It beats the runner-up (trial {runner_up.number}, {primary(runner_up):.4f}) by "
            f"{gap:.4f} and the median complete trial ({median:.4f}) by "
            f"{abs(primary(best) - median):.4f}."  # type: ignore[operator]
        )
    n_params = best.user_attrs.get(records.N_PARAMS)
    epochs = best.user_attrs.get(records.EPOCHS_TRAINED)
    if n_params:
        lines.append(
            f"Its network has {int(n_params):,} parameters and trained for {epochs} epochs "
            "(early stopping restored the best epoch's weights)."
        )
    if test_scores:
        scores = ", ".join(f"{k} = {v:.4f}" for k, v in test_scores.items())
        lines.append(f"This job's best model on the held-out test split: {scores}.")
    return "\n".join(lines) + "\n"


def _front_markdown(
    study: optuna.Study, lines: list[str], test_scores: Mapping[str, float]
) -> str:
    """The rest of :func:`summary_markdown` for a study with several objectives: its front."""
    front = pareto.Front.of(study)
    if front.best_primary is None:
        lines += ["", "No feasible trial has completed yet, so there is no front."]
        return "\n".join(lines) + "\n"
    row = next(r for r in front.rows if r["trial"] == front.best_primary)
    shown = ", ".join(f"{o.metric} = {pareto._fmt(row[o.metric])}" for o in front.objectives)
    lines += [
        "",
        f"**Front: {len(front.front)} trial(s)** not beaten on every objective by another "
        f"feasible trial ({front.feasible} feasible of {len(front.rows)} complete); its best "
        f"{front.objectives[0].metric}: **trial {front.best_primary}**, {shown}.",
        "",
        "```",
        *front.lines(),
        "```",
    ]
    if test_scores:
        scores = ", ".join(f"{k} = {v:.4f}" for k, v in test_scores.items())
        lines.append(
            f"This job's model (kept by the experiment's selection rule, which may prefer a "
            f"smaller or faster trial than the most accurate: `selection.json` where written) "
            f"on the held-out test split: {scores}."
        )
    return "\n".join(lines) + "\n"


def compare_studies(
    studies: list[optuna.Study],
    *,
    test_scores: Mapping[str, float | None],
    within: float = 0.005,
) -> list[dict[str, object]]:
    """One row per study: what it tried, what it reached, how fast, and how big the winner is.

    Args:
        studies: The studies to compare (same objective direction expected).
        test_scores: Study name -> the test score of its best trial's model, when one was logged.
        within: "Reached" means within this relative distance of the study's own best.
    """
    rows = []
    for study in studies:
        trials = sorted(
            (t for t in study.get_trials(deepcopy=False) if t.datetime_start is not None),
            key=lambda t: t.datetime_start,  # type: ignore[arg-type,return-value]
        )
        counts = state_counts(trials)
        row: dict[str, object] = {
            "study": study.study_name,
            **{k: counts[k] for k in ("complete", "pruned", "fail", records.NOT_LEARNING)},
        }
        ranked = _ranked(study)
        if not ranked:
            rows.append(row)
            continue
        best = ranked[0]
        best_value = float(primary(best))  # type: ignore[arg-type]
        start = trials[0].datetime_start
        reached_trials = reached_seconds = None
        for i, t in enumerate(trials, start=1):
            value = primary(t)
            if value is not None and abs(value - best_value) <= within * abs(best_value):
                reached_trials = i
                end = t.datetime_complete or t.datetime_start
                reached_seconds = (end - start).total_seconds()  # type: ignore[operator]
                break
        row.update(
            best_value=best_value,
            test_score=test_scores.get(study.study_name),
            trials_to_within=reached_trials,
            seconds_to_within=reached_seconds,
            best_n_params=best.user_attrs.get(records.N_PARAMS),
            best_epochs=best.user_attrs.get(records.EPOCHS_TRAINED),
            best_trial=best.number,
        )
        rows.append(row)
    return rows


def compare_fronts(
    studies: list[optuna.Study], *, test_scores: Mapping[str, float | None]
) -> list[dict[str, object]]:
    """One row per multi-objective study: trials, feasible trials, the front's size, each
    objective's best feasible value, the front's trial with the best primary value (and the
    test score of its job's model, when one was logged), and the hypervolume of its front on one
    reference point shared by all the studies (:func:`tuning.pareto.reference_point`), so the
    hypervolumes compare.

    Raises:
        ValueError: if the studies' objectives differ (names or directions).
    """
    fronts = [pareto.Front.of(s) for s in studies]
    objectives = fronts[0].objectives
    for study, front in zip(studies, fronts, strict=True):
        if front.objectives != objectives:
            raise ValueError(
                f"study {study.study_name!r} optimizes "
                f"{', '.join(f'{o.metric} ({o.direction})' for o in front.objectives)}, "
                f"{studies[0].study_name!r} "
                f"{', '.join(f'{o.metric} ({o.direction})' for o in objectives)}"
            )
    points = [[[r[o.metric] for o in objectives] for r in f.rows if r["on_front"]] for f in fronts]
    limits = {k: v for f in fronts for k, v in f.limits.items()}
    shared = {k: max(f.limits.get(k, v) for f in fronts) for k, v in limits.items()}
    reference = pareto.reference_point(points, objectives, shared) if any(points) else None
    rows: list[dict[str, object]] = []
    for study, front, front_points in zip(studies, fronts, points, strict=True):
        counts = state_counts(study.get_trials(deepcopy=False))
        row: dict[str, object] = {
            "study": study.study_name,
            **{k: counts[k] for k in ("complete", "pruned", "fail")},
            "feasible": front.feasible,
            "front_size": len(front.front),
            **{f"best_{k}": v for k, v in front.best_feasible().items()},
            "best_primary_trial": front.best_primary,
            "test_score": test_scores.get(study.study_name),
            "hypervolume": (
                pareto.hypervolume(front_points, objectives, reference)
                if reference is not None
                else None
            ),
            "reference": reference,
        }
        rows.append(row)
    return rows


def best_so_far_plot(studies: list[optuna.Study], *, metric: str, path: Path) -> Path:
    """Best-so-far validation score against wall-clock seconds, one line per study."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for study in studies:
        objective = pareto.objectives_of(study)[0]
        trials = sorted(
            (t for t in study.get_trials(deepcopy=False) if t.datetime_start is not None),
            key=lambda t: t.datetime_start,  # type: ignore[arg-type,return-value]
        )
        if not trials:
            continue
        start = trials[0].datetime_start
        xs: list[float] = []
        ys: list[float] = []
        best: float | None = None
        for t in trials:
            value = primary(t)
            if value is None or t.datetime_complete is None:
                continue
            best = value if objective.better(value, best) else best
            xs.append((t.datetime_complete - start).total_seconds())  # type: ignore[operator]
            ys.append(value if best is None else best)
        ax.step(xs, ys, where="post", label=study.study_name)
    ax.set_xlabel("wall-clock seconds since the study's first trial")
    ax.set_ylabel(f"best {metric} so far")
    ax.set_title("Best so far against time")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
