"""A big Optuna study in seconds, shaped like the ones ``tuning run`` writes: for timing the
reading commands (``tuning status``/``show``/``best``) and for their tests.

What it writes (``optuna.create_study`` + ``study.add_trials``, no training): the trials' params
and distributions of a small MLP space (a conditional ``momentum``), the user attributes the
engine records (:mod:`tuning.records`: ``fixed.batch_size``, ``process``, ``mlflow_run_id``,
``backend``, ``epochs_trained``, ``train_seconds``, ``n_params``, ``reason``), per-epoch
intermediate values, and states mixed as a long run leaves them: complete, pruned (valued at
their last epoch, as Optuna does), pruned as ``not_learning``, failed, a few still RUNNING (on
another host: their liveness is unknown) and one WAITING; some carry ``carried_from``, two
backends alternate. The study attributes are those the lineage writes (``tuning.lineage``,
``tuning.data``, ``tuning.data_last``). Deterministic for a seed.

Run it::

    python benchmarks/synthetic_study.py --trials 10000 --storage sqlite:////tmp/g10k.db

then, e.g., ``time tuning show growth --storage sqlite:////tmp/g10k.db``. 10,000 trials take
about 30 s of CPU to write.
"""

from __future__ import annotations

import argparse
import datetime
import random

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

SPACE = {
    "n_hidden": IntDistribution(1, 3),
    "n_neurons": IntDistribution(8, 128, log=True),
    "activation": CategoricalDistribution(["relu", "elu"]),
    "optimizer": CategoricalDistribution(["adam", "nesterov"]),
    "learning_rate": FloatDistribution(1e-4, 0.1, log=True),
}
MOMENTUM = FloatDistribution(0.8, 0.99)
BLOCK = 500  # trials written through Optuna; the rest are SQL copies of these (SQLite)
DATA = {"digest": "8e5214bab4bd8408", "schema": "9b888bb75ac8", "rows": 1797}


def _trial(rng: random.Random, number: int, start: datetime.datetime) -> optuna.trial.FrozenTrial:
    params: dict[str, object] = {
        "n_hidden": rng.randint(1, 3),
        "n_neurons": rng.randint(8, 128),
        "activation": rng.choice(["relu", "elu"]),
        "optimizer": rng.choice(["adam", "nesterov"]),
        "learning_rate": 10 ** rng.uniform(-4, -1),
    }
    dists = dict(SPACE)
    if params["optimizer"] == "nesterov":
        params["momentum"] = rng.uniform(0.8, 0.99)
        dists["momentum"] = MOMENTUM
    roll = rng.random()
    state = (
        TrialState.COMPLETE
        if roll < 0.45
        else TrialState.PRUNED
        if roll < 0.93
        else TrialState.FAIL
    )
    not_learning = state == TrialState.PRUNED and roll > 0.88
    epochs = rng.randint(4, 8) if state == TrialState.COMPLETE else rng.randint(1, 3)
    level = rng.uniform(0.5, 0.97)
    curve = {e: round(level * (1 - 0.5 ** (e + 1)), 6) for e in range(epochs)}
    attrs: dict[str, object] = {
        "fixed.batch_size": 64,
        "process": {"host": "elsewhere.example", "pid": 1000 + number, "trial": number},
        "mlflow_run_id": f"{rng.getrandbits(128):032x}",
        "backend": "jax" if number % 7 == 3 else "tensorflow",
        "epochs_trained": epochs,
        "train_seconds": round(rng.uniform(0.1, 3.0), 3),
        "n_params": rng.randint(100, 30000),
    }
    if state == TrialState.PRUNED:
        attrs["reason"] = f"pruned at epoch {epochs}"
    if not_learning:
        attrs["not_learning"] = "no better than the trivial baseline after 2 epochs"
    if state == TrialState.FAIL:
        attrs["reason"] = "ValueError: NaN loss"
    if number % 50 == 7:
        attrs["carried_from"] = f"growth#{number}"
    finished = state != TrialState.FAIL
    trial = optuna.trial.create_trial(
        state=state,
        value=curve[epochs - 1] if finished else None,  # pruned: its last epoch's, as Optuna
        params=params,
        distributions=dists,
        user_attrs=attrs,
        intermediate_values=curve if finished else {},
    )
    return _timed(trial, start + datetime.timedelta(seconds=number))


def _timed(trial: optuna.trial.FrozenTrial, at: datetime.datetime) -> optuna.trial.FrozenTrial:
    trial.datetime_start = at
    trial.datetime_complete = at + datetime.timedelta(milliseconds=700)
    return trial


def _copy_block(study: optuna.Study, block: int, trials: int) -> None:
    """Grow ``study`` to ``trials`` trials by copying its first ``block`` (all finished) with
    every child row (params, values, attributes, per-epoch values), numbers and times shifted.
    SQLite only: explicit trial ids would leave a PostgreSQL sequence behind."""
    import sqlalchemy

    storage = study._storage  # noqa: SLF001
    backend = getattr(storage, "_backend", storage)
    assert isinstance(backend, optuna.storages.RDBStorage), "an RDB storage (SQLite)"
    engine = backend.engine
    inspector = sqlalchemy.inspect(engine)
    children = {}
    for table in (
        "trial_params",
        "trial_values",
        "trial_user_attributes",
        "trial_system_attributes",
        "trial_intermediate_values",
    ):
        pk = set(inspector.get_pk_constraint(table)["constrained_columns"])
        children[table] = [c["name"] for c in inspector.get_columns(table) if c["name"] not in pk]
    with engine.begin() as conn:
        sid = study._study_id  # noqa: SLF001
        lo, top = conn.execute(
            sqlalchemy.text("SELECT MIN(trial_id), MAX(trial_id) FROM trials WHERE study_id = :s"),
            {"s": sid},
        ).one()
        done = block
        while done < trials:
            n = min(block, trials - done)
            off = top + 1 - lo + (done - block)
            args = {"s": sid, "off": off, "lo": lo, "hi": lo + n - 1, "dn": done, "sec": done}
            conn.execute(
                sqlalchemy.text(
                    "INSERT INTO trials (trial_id, number, study_id, state, datetime_start,"
                    " datetime_complete) SELECT trial_id + :off, number + :dn, study_id, state,"
                    " datetime(datetime_start, '+' || :sec || ' seconds'),"
                    " datetime(datetime_complete, '+' || :sec || ' seconds')"
                    " FROM trials WHERE study_id = :s AND trial_id BETWEEN :lo AND :hi"
                ),
                args,
            )
            for table, cols in children.items():
                rest = ", ".join(c for c in cols if c != "trial_id")
                conn.execute(
                    sqlalchemy.text(
                        f"INSERT INTO {table} (trial_id, {rest}) SELECT trial_id + :off, {rest}"
                        f" FROM {table} WHERE trial_id BETWEEN :lo AND :hi"
                    ),
                    args,
                )
            done += n


def make_study(
    storage: str | optuna.storages.BaseStorage,
    trials: int,
    *,
    name: str = "growth",
    seed: int = 0,
    running: int = 3,
) -> optuna.Study:
    """Create study ``name`` in ``storage`` with ``trials`` finished trials, then ``running``
    RUNNING trials and one WAITING (enqueued) one."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
    created = "2026-12-03T12:00:00+00:00"
    study.set_user_attr(
        "tuning.lineage",
        {"base": name, "version": 1, "previous": None, "reason": None, "created": created},
    )
    for key in ("tuning.data", "tuning.data_last"):
        study.set_user_attr(key, {**DATA, "metric": "val_accuracy", "inputs": "ac607395dfd2"})
    rng = random.Random(seed)
    start = datetime.datetime(2026, 12, 3, 12, 0, 0)
    made = min(trials, BLOCK)
    study.add_trials([_trial(rng, number, start) for number in range(made)])
    if trials > made:  # Optuna writes ~17 ms of CPU a trial: copy the first block in SQL
        _copy_block(study, made, trials)
    for _ in range(running):
        trial = study.ask()  # RUNNING, its process on another host
        trial.set_user_attr(
            "process", {"host": "elsewhere.example", "pid": 1, "trial": trial.number}
        )
        trial.set_user_attr("backend", "tensorflow")
        trial.report(0.5, 0)
    study.enqueue_trial({"n_hidden": 2, "n_neurons": 64})
    return study


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=10000)
    ap.add_argument("--storage", required=True, help="e.g. sqlite:////tmp/g10k.db (a new file)")
    ap.add_argument("--name", default="growth")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    make_study(args.storage, args.trials, name=args.name, seed=args.seed)
    print(f"study {args.name!r}: {args.trials} trials (+ running, waiting) in {args.storage}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
