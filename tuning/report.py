"""Plots and tables for people: the trials table, the optimization history, learning curves.

Owns files written for the parent run (``trials.csv``, ``optimization_history.png``,
``learning_curves.png``). It reads a study and per-epoch histories and writes files; it does not
talk to MLflow (``tracking.py`` uploads what this returns) and does not train anything.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import optuna

__all__ = ["trials_table", "write_job_reports"]


def trials_table(study: optuna.Study) -> list[dict[str, object]]:
    """One row per trial: number, state, value, params, epochs, seconds, n_params, reason."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        fixed = {
            k.removeprefix("fixed."): v for k, v in t.user_attrs.items() if k.startswith("fixed.")
        }
        rows.append(
            {
                "number": t.number,
                "state": t.state.name.lower(),
                "value": t.value,
                **{f"params_{k}": v for k, v in {**t.params, **fixed}.items()},
                "epochs_trained": t.user_attrs.get("epochs_trained"),
                "train_seconds": t.user_attrs.get("train_seconds"),
                "n_params": t.user_attrs.get("n_params"),
                "reason": t.user_attrs.get("reason", ""),
                "mlflow_run_id": t.user_attrs.get("mlflow_run_id", ""),
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
    """Write the parent run's report files into ``out_dir`` and return their paths."""
    import pandas as pd

    paths = []
    table = out_dir / "trials.csv"
    pd.DataFrame(trials_table(study)).to_csv(table, index=False)
    paths.append(table)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [t for t in study.get_trials(deepcopy=False) if t.value is not None]
    if done:
        maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
        fig, ax = plt.subplots(figsize=(7, 4))
        xs = [t.number for t in done]
        ys = [float(t.value) for t in done if t.value is not None]
        best, running = [], (-math.inf if maximize else math.inf)
        for y in ys:
            running = max(running, y) if maximize else min(running, y)
            best.append(running)
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

    if histories:
        ranked = sorted(
            (n for n in histories if metric in histories[n]),
            key=lambda n: (max if _maximize(study) else min)(histories[n][metric]),
            reverse=_maximize(study),
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


def _maximize(study: optuna.Study) -> bool:
    return study.direction == optuna.study.StudyDirection.MAXIMIZE
