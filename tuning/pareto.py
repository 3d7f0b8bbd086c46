"""What a multi-objective study found: its feasible Pareto front, told apart from the rest.

Owns how a person reads a study with several objectives (e.g. ``val_accuracy`` up, ``latency_ms``
down, under limits such as ``n_params <= 100000``): which trials are feasible (every limit met),
which feasible trials no other feasible trial beats on every objective (the front, by Optuna's own
non-dominated sort), the table of them (:func:`front_table`), the plot of the primary objective
against the second (:func:`front_plot`), the front's most accurate trial (:func:`best_primary`:
the best primary value among the feasible trials; the job's own model follows the experiment's
selection rule, recorded on its parent run), and one number to compare fronts of studies with the
same objectives (:func:`hypervolume` on a shared :func:`reference_point`).

What it reads of a study is what the job wrote (DESIGN's contract): ``trial.values`` in the
objectives' order; the constraints Optuna's samplers read (``value - limit``, feasible when
``<= 0``, in the system attribute :data:`optuna.study._constrained_optimization._CONSTRAINTS_KEY`)
and the ``feasible`` user attribute; and the study's user attributes ``tuning.objectives`` and
``tuning.limits``, so a reader without the experiment knows the objectives' names and limits.

No Keras, no MLflow: it works on Optuna's ``FrozenTrial`` lists and writes a PNG with matplotlib.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.study._multi_objective import _get_pareto_front_trials_by_trials
from optuna.trial import FrozenTrial, TrialState

from tuning.objective import Objective

__all__ = [
    "best_primary",
    "FEASIBLE",
    "LIMITS_ATTR",
    "OBJECTIVES_ATTR",
    "Front",
    "front_of",
    "front_plot",
    "fronts_plot",
    "front_table",
    "hypervolume",
    "is_feasible",
    "is_multi",
    "limits_of",
    "objectives_of",
    "reference_point",
]

OBJECTIVES_ATTR = "tuning.objectives"  # study user attr: [{"metric": ..., "direction": ...}]
LIMITS_ATTR = "tuning.limits"  # study user attr: {"n_params": 100000, ...} ("at most")
FEASIBLE = "feasible"  # trial user attr: every limit met


def is_multi(study: optuna.Study) -> bool:
    """Whether ``study`` has several objectives (``study.best_trial`` raises on those)."""
    return len(study.directions) > 1


def objectives_of(study: optuna.Study) -> tuple[Objective, ...]:
    """The study's objectives in the order of ``trial.values``, primary first.

    From the study's ``tuning.objectives`` user attribute when the job wrote it (and its
    directions agree with the study's), else ``value_0``, ``value_1``, ... with the study's
    directions.
    """
    directions = [d.name.lower() for d in study.directions]
    stored = study.user_attrs.get(OBJECTIVES_ATTR)
    if isinstance(stored, list) and len(stored) == len(directions):
        try:
            objectives = tuple(Objective(str(o["metric"]), o["direction"]) for o in stored)
        except (KeyError, TypeError):
            objectives = ()
        if [o.direction for o in objectives] == directions:
            return objectives
    if len(directions) == 1:
        return (Objective.of_study(study),)
    return tuple(Objective(f"value_{i}", d) for i, d in enumerate(directions))  # type: ignore[arg-type]


def limits_of(study: optuna.Study) -> dict[str, float]:
    """The study's limits (``tuning.limits`` user attribute): metric -> its upper bound."""
    stored = study.user_attrs.get(LIMITS_ATTR) or {}
    return {str(k): float(v) for k, v in dict(stored).items()}


def is_feasible(trial: FrozenTrial) -> bool:
    """Whether ``trial`` met every limit: its constraints (as Optuna's samplers read them) are
    all ``<= 0`` and its ``feasible`` user attribute, when written, is not false."""
    if any(c > 0 for c in trial.constraints.values()):
        return False
    return trial.user_attrs.get(FEASIBLE) is not False


def _complete(trials: Sequence[FrozenTrial], n: int) -> list[FrozenTrial]:
    return [
        t
        for t in trials
        if t.state == TrialState.COMPLETE and t.values is not None and len(t.values) == n
    ]


def front_of(trials: Sequence[FrozenTrial], objectives: Sequence[Objective]) -> list[FrozenTrial]:
    """The feasible Pareto front: complete feasible trials no other feasible trial dominates,
    by trial number (Optuna's non-dominated sort; infeasible trials never enter it)."""
    feasible = [t for t in _complete(trials, len(objectives)) if is_feasible(t)]
    if not feasible:
        return []
    directions = [
        optuna.study.StudyDirection.MAXIMIZE
        if o.maximize
        else optuna.study.StudyDirection.MINIMIZE
        for o in objectives
    ]
    front = _get_pareto_front_trials_by_trials(feasible, directions, consider_constraint=False)
    return sorted(front, key=lambda t: t.number)


def best_primary(
    trials: Sequence[FrozenTrial], objectives: Sequence[Objective]
) -> FrozenTrial | None:
    """The front's trial with the best primary value among the feasible trials (ties:
    the better on the next objectives, then the earlier trial); ``None`` without one."""
    front = front_of(trials, objectives)
    if not front:
        return None

    def key(t: FrozenTrial) -> tuple[float, ...]:
        return tuple(o.sort_key(v) for o, v in zip(objectives, t.values, strict=True))

    return min(front, key=key)


@dataclasses.dataclass(frozen=True)
class Front:
    """A study's front as a person reads it.

    Attributes:
        objectives: The objectives, primary first.
        limits: Metric -> upper bound.
        rows: One per complete trial (:func:`front_table`).
        front: The numbers of the trials on the feasible front.
        best_primary: The number of :func:`best_primary`'s trial (``None``: no feasible one).
        refused: Trials ended before training because a limit was already broken (pruned with
            a constraint above 0, e.g. ``n_params`` over its limit once the model was built).
    """

    objectives: tuple[Objective, ...]
    limits: dict[str, float]
    rows: list[dict[str, Any]]
    front: list[int]
    best_primary: int | None
    refused: int = 0

    @classmethod
    def of(cls, study: optuna.Study) -> Front:
        """The front of a stored study, objectives and limits from its user attributes."""
        objectives, limits = objectives_of(study), limits_of(study)
        trials = study.get_trials(deepcopy=False)
        best = best_primary(trials, objectives)
        return cls(
            objectives=objectives,
            limits=limits,
            rows=front_table(trials, objectives, limits),
            front=[t.number for t in front_of(trials, objectives)],
            best_primary=best.number if best is not None else None,
            refused=sum(
                1
                for t in trials
                if t.state == TrialState.PRUNED and any(c > 0 for c in t.constraints.values())
            ),
        )

    @property
    def feasible(self) -> int:
        """How many complete trials met every limit."""
        return sum(1 for r in self.rows if r[FEASIBLE])

    def best_feasible(self) -> dict[str, float | None]:
        """Each objective's best value among the feasible trials (``None``: none feasible)."""
        out: dict[str, float | None] = {}
        for o in self.objectives:
            values = [r[o.metric] for r in self.rows if r[FEASIBLE]]
            out[o.metric] = o.best(values) if values else None
        return out

    def lines(self, *, top: int | None = None) -> list[str]:
        """The front as a terminal table (the best primary value marked ``*``), then a count of the
        feasible trials off the front and of the infeasible ones."""
        head = "  ".join(f"{_label(o):>16}" for o in self.objectives)
        size = "n_params" not in {o.metric for o in self.objectives}  # beside, unless one
        lines = [
            "front: "
            + ", ".join(f"{o.metric} ({o.direction})" for o in self.objectives)
            + (
                "; limits: " + ", ".join(f"{k} <= {_fmt(v)}" for k, v in self.limits.items())
                if self.limits
                else ""
            ),
            f"  {'trial':>5}  {head}  " + (f"{'n_params':>9}  " if size else "") + "feasible",
        ]
        on = [r for r in self.rows if r["on_front"]]
        on.sort(key=lambda r: self.objectives[0].sort_key(r[self.objectives[0].metric]))
        for r in on[:top] if top else on:
            mark = "*" if r["trial"] == self.best_primary else " "
            values = "  ".join(f"{_fmt(r[o.metric]):>16}" for o in self.objectives)
            n_params = f"{_fmt(r.get('n_params')):>9}  " if size else ""
            lines.append(
                f"{mark} {r['trial']:>5}  {values}  {n_params}{'yes' if r[FEASIBLE] else 'no'}"
            )
        if not on:
            lines.append("  (no feasible trial yet)")
        off = self.feasible - len(on)
        infeasible = len(self.rows) - self.feasible
        lines.append(
            f"{len(on)} on the front (* its best {self.objectives[0].metric}), "
            f"{off} feasible off it, {infeasible} infeasible"
            + (f", {self.refused} refused before training (over a limit)" if self.refused else "")
        )
        return lines


def _label(o: Objective) -> str:
    return f"{o.metric} {'↑' if o.maximize else '↓'}"


def _fmt(v: object) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def front_table(
    trials: Sequence[FrozenTrial], objectives: Sequence[Objective], limits: Mapping[str, float]
) -> list[dict[str, Any]]:
    """One row per complete trial: ``trial``, each objective's value, each limited figure that
    is not an objective (from the trial's user attributes), ``feasible``, ``on_front``."""
    on_front = {t.number for t in front_of(trials, objectives)}
    names = {o.metric for o in objectives}
    extra = [k for k in ("n_params", *sorted(limits)) if k not in names]
    extra = list(dict.fromkeys(extra))  # n_params (when not an objective), then limited figures
    rows = []
    for t in _complete(trials, len(objectives)):
        row: dict[str, Any] = {"trial": t.number}
        row.update({o.metric: float(v) for o, v in zip(objectives, t.values, strict=True)})
        for key in extra:
            if key not in row:
                row[key] = t.user_attrs.get(key)
        row[FEASIBLE] = is_feasible(t)
        row["on_front"] = t.number in on_front
        rows.append(row)
    return rows


def _losses(points: np.ndarray, objectives: Sequence[Objective]) -> np.ndarray:
    """Values turned into losses (maximized objectives negated), as Optuna's helpers take."""
    signs = np.array([-1.0 if o.maximize else 1.0 for o in objectives])
    return points * signs


def reference_point(
    fronts: Sequence[Sequence[Sequence[float]]],
    objectives: Sequence[Objective],
    limits: Mapping[str, float] | None = None,
) -> list[float]:
    """One reference point for the hypervolumes of several fronts with the same objectives:
    per objective, its limit when it has one (every feasible value is within it), else the
    worst value on any of the fronts pushed a tenth of the fronts' spread further (so the
    extreme points count too; 1 % of the value's size when the spread is nil).

    Raises:
        ValueError: if no front has a point.
    """
    limits = limits or {}
    points = [list(p) for f in fronts for p in f]
    if not points:
        raise ValueError("no front has a point: a reference point needs one")
    arr = np.asarray(points, dtype=float)
    ref = []
    for i, o in enumerate(objectives):
        if o.metric in limits:
            ref.append(float(limits[o.metric]))
            continue
        col = arr[:, i]
        worst, best = (col.min(), col.max()) if o.maximize else (col.max(), col.min())
        spread = abs(best - worst) or abs(worst) * 0.1 or 0.1
        ref.append(float(worst - 0.1 * spread if o.maximize else worst + 0.1 * spread))
    return ref


def hypervolume(
    front: Sequence[Sequence[float]], objectives: Sequence[Objective], reference: Sequence[float]
) -> float:
    """The hypervolume a front dominates up to ``reference`` (Optuna's exact WFG), in the
    objectives' own units; points not better than the reference on every objective add
    nothing. Larger is better; comparable only between fronts scored on the same reference."""
    from optuna._hypervolume import compute_hypervolume

    if not len(front):
        return 0.0
    losses = _losses(np.asarray(front, dtype=float), objectives)
    ref = _losses(np.asarray(reference, dtype=float)[None, :], objectives)[0]
    inside = losses[np.all(losses <= ref, axis=1)]
    if not len(inside):
        return 0.0
    return float(compute_hypervolume(inside, ref))


def front_plot(
    rows: Sequence[Mapping[str, Any]],
    objectives: Sequence[Objective],
    *,
    path: Path,
    title: str = "",
    limits: Mapping[str, float] | None = None,
) -> Path:
    """The primary objective against the second: the feasible front (joined, in red), the other
    feasible trials (blue), the infeasible ones (grey crosses), each point labelled with its
    trial number on the front; a limit on either objective as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")  # files, never a window
    import matplotlib.pyplot as plt

    x_obj, y_obj = objectives[1], objectives[0]  # the primary on the vertical axis
    fig, ax = plt.subplots(figsize=(7, 4.5))
    groups = (
        ("infeasible", lambda r: not r[FEASIBLE], dict(color="0.6", marker="x", s=22)),
        (
            "feasible, off the front",
            lambda r: r[FEASIBLE] and not r["on_front"],
            dict(color="C0", marker="o", s=18, alpha=0.7),
        ),
        ("feasible front", lambda r: r["on_front"], dict(color="C3", marker="o", s=36)),
    )
    for label, keep, style in groups:
        chosen_rows = [r for r in rows if keep(r)]
        if chosen_rows:
            ax.scatter(
                [r[x_obj.metric] for r in chosen_rows],
                [r[y_obj.metric] for r in chosen_rows],
                label=f"{label} ({len(chosen_rows)})",
                **style,  # type: ignore[arg-type]
            )
    front = sorted((r for r in rows if r["on_front"]), key=lambda r: r[x_obj.metric])
    if front:
        ax.step(
            [r[x_obj.metric] for r in front],
            [r[y_obj.metric] for r in front],
            where="pre" if x_obj.maximize else "post",
            color="C3",
            alpha=0.5,
        )
        for r in front:
            ax.annotate(
                f"#{r['trial']}",
                (r[x_obj.metric], r[y_obj.metric]),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
    for metric, line in ((x_obj.metric, ax.axvline), (y_obj.metric, ax.axhline)):
        if limits and metric in limits:
            limit = limits[metric]
            line(limit, color="0.4", linestyle="--", linewidth=1, label=f"{metric} <= {limit:g}")
    ax.set_xlabel(f"{x_obj.metric} ({x_obj.direction})")
    ax.set_ylabel(f"{y_obj.metric} ({y_obj.direction})")
    ax.set_title(title or f"Pareto front: {y_obj.metric} against {x_obj.metric}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def fronts_plot(fronts: Mapping[str, Front], *, path: Path) -> Path:
    """Several studies' feasible fronts on one plot (primary against second objective), one
    colour per study: the picture beside ``tuning compare``'s hypervolumes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = next(iter(fronts.values()))
    x_obj, y_obj = first.objectives[1], first.objectives[0]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (name, front) in enumerate(fronts.items()):
        rows = sorted((r for r in front.rows if r["on_front"]), key=lambda r: r[x_obj.metric])
        if not rows:
            continue
        xs, ys = [r[x_obj.metric] for r in rows], [r[y_obj.metric] for r in rows]
        ax.scatter(xs, ys, color=f"C{i}", s=24, label=f"{name} ({len(rows)})")
        ax.step(xs, ys, where="pre" if x_obj.maximize else "post", color=f"C{i}", alpha=0.5)
    ax.set_xlabel(f"{x_obj.metric} ({x_obj.direction})")
    ax.set_ylabel(f"{y_obj.metric} ({y_obj.direction})")
    ax.set_title("Feasible fronts")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
