"""The reading commands' figures from SQL equal those from every trial (tuning/digest.py), the
champion lookup without MLflow equals MLflow's, and on 10,000 trials each command stays cheap."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import servers  # benchmarks/servers.py: the throwaway PostgreSQL
from conftest import require
from synthetic_study import make_study  # benchmarks/synthetic_study.py (conftest's sys.path)

from tuning import digest, report
from tuning.objective import Objective
from tuning.registry import server_champions, sqlite_champions


def _both(storage: optuna.storages.BaseStorage, study: optuna.Study) -> tuple[object, object]:
    sid = storage.get_study_id_from_name(study.study_name)
    fast = digest.digest(storage, sid)
    slow = digest.digest_of_trials(storage.get_all_trials(sid, deepcopy=False))
    return fast, slow


def test_sql_digest_equals_the_generic_one(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    make_study(url, 240, seed=3)  # every trial written through Optuna
    storage = optuna.storages.get_storage(url)
    assert digest.rdb_backend(storage) is not None
    study = optuna.load_study(study_name="growth", storage=storage)
    fast, slow = _both(storage, study)
    assert fast == slow
    assert isinstance(fast, digest.Digest)
    states = {k: n for k, n in fast.states.items() if n}
    # every kind of trial is there, not_learning told apart from pruned
    assert set(states) == {"complete", "pruned", "not_learning", "fail", "running", "waiting"}
    assert states == {k: n for k, n in report.state_counts(study.trials).items() if n}
    assert fast.last == report.last_trial_time(study.trials)
    assert fast.trials == len(study.trials) == 244
    assert len(fast.backends) == 2 and fast.carried > 0
    assert [t.number for t in fast.running] == [t.number for t in slow.running]  # type: ignore[attr-defined]
    # the top trials, pruned ones with a value included, as report's ranking of every trial
    objective = Objective.of_study(study)
    sid = study._study_id
    top = digest.top_trials(storage, sid, fast, objective, 7)
    assert [t.number for t in top] == [t.number for t in report._ranked(study)[:7]]
    best = digest.top_trials(storage, sid, fast, objective, 1, complete_only=True)
    assert best[0].number == study.best_trial.number
    assert report.results_table(study, top=6, origins=True, found=fast) == report.results_table(
        study, top=6, origins=True
    )
    # a limit on a trial (Optuna 5's "constraints:<name>" system attribute) is seen by both
    assert not fast.constrained
    storage.set_trial_system_attr(fast.running[0]._trial_id, "constraints:n_params", 1.0)
    fast, slow = _both(storage, study)
    assert fast == slow and fast.constrained  # type: ignore[attr-defined]


def test_sql_copies_grow_a_study_that_reads_the_same(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    make_study(url, 1300, seed=5)  # 500 through Optuna, 800 copied in SQL
    storage = optuna.storages.get_storage(url)
    study = optuna.load_study(study_name="growth", storage=storage)
    fast, slow = _both(storage, study)
    assert fast == slow
    assert fast.trials == 1304  # type: ignore[attr-defined]


def test_another_storage_reads_every_trial(tmp_path: Path) -> None:
    from optuna.storages.journal import JournalFileBackend

    storage = optuna.storages.JournalStorage(JournalFileBackend(str(tmp_path / "j.log")))
    study = make_study(storage, 40, seed=1)
    assert digest.rdb_backend(storage) is None
    found = digest.digest_of_study(study)
    assert found.trials == 44
    assert found.states["not_learning"] == sum(
        1 for t in study.trials if "not_learning" in t.user_attrs
    )
    assert report.results_table(study, found=found) == report.results_table(study)


def test_champions_from_sqlite_equal_mlflows(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from tuning.tracking import champions_by_study

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert sqlite_champions(uri) == {}  # no store yet: none, and none created
    assert not (tmp_path / "mlflow.db").exists()
    client = MlflowClient(uri)
    assert sqlite_champions(uri) == {} == champions_by_study(uri)
    for name, study in (("digits-mlp", "digits"), ("iris-mlp", "iris"), ("nochamp", "x")):
        client.create_registered_model(name)
        for _ in range(2):
            v = client.create_model_version(name, source=str(tmp_path), tags={"study": study})
        if name != "nochamp":
            client.set_registered_model_alias(name, "champion", v.version)
    assert sqlite_champions(uri) == champions_by_study(uri)
    assert sqlite_champions(uri) == {"digits": "digits-mlp v2", "iris": "iris-mlp v2"}
    assert sqlite_champions("http://127.0.0.1:1") is None  # a server: MLflow answers


@pytest.mark.slow
def test_champions_from_a_servers_rest_api_equal_mlflows(tmp_path: Path, monkeypatch) -> None:
    """`tuning status` with a tracking server reads the champions over REST, not through
    MLflow (3.9 s against 1.4 s on a 10,000-trial study); MLflow answers where credentials,
    TLS settings or an error are involved."""
    from mlflow.tracking import MlflowClient

    from tuning.tracking import champions_by_study

    with servers.mlflow_server(tmp_path) as uri:
        assert server_champions(uri) == {} == champions_by_study(uri)
        client = MlflowClient(uri)
        for name, study in (("digits-mlp", "digits"), ("iris-mlp", "iris"), ("nochamp", "x")):
            client.create_registered_model(name)
            for _ in range(2):
                v = client.create_model_version(
                    name, source="s3://bucket/model", tags={"study": study}
                )
            if name != "nochamp":
                client.set_registered_model_alias(name, "champion", v.version)
        client.set_registered_model_alias("digits-mlp", "champion", "1")
        expected = {"digits": "digits-mlp v1", "iris": "iris-mlp v2"}
        assert server_champions(uri) == champions_by_study(uri) == expected
        in_a_fresh_process = subprocess.run(
            [sys.executable, "-c",
             "import sys; from tuning.cli import _champions; "
             f"print(_champions({uri!r})); print('mlflow' in sys.modules)"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert in_a_fresh_process.stdout.split("\n")[:2] == [str(expected), "False"], (
            in_a_fresh_process.stdout + in_a_fresh_process.stderr[-2000:]
        )
        assert server_champions(uri.replace("http://", "http://user:pw@")) is None
        with monkeypatch.context() as env:
            env.setenv("MLFLOW_TRACKING_TOKEN", "t")
            assert server_champions(uri) is None  # MLflow applies its own settings
    assert server_champions(uri) is None  # the server gone: MLflow answers (and says so)


@pytest.mark.slow
def test_sql_digest_on_postgresql() -> None:
    """The same SQL on PostgreSQL (Optuna's enums are native there, times are timestamps)."""
    require(
        servers.postgres_available(), "PostgreSQL (initdb, pg_ctl)", "apt-get install postgresql"
    )
    pg = servers.Postgres(password="digest-pw")
    try:
        storage = optuna.storages.get_storage(pg.url())
        study = make_study(storage, 120, seed=7)
        fast, slow = _both(storage, study)
        assert fast == slow
        assert fast.states["not_learning"] > 0  # type: ignore[attr-defined]
        assert fast.last is not None  # type: ignore[attr-defined]
    finally:
        pg.stop()


@pytest.mark.slow
def test_reading_commands_on_10000_trials_read_a_few_trials_and_copy_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``status``, ``show`` and ``best`` on a study of 10,000 trials: the right counts, from SQL
    aggregates and the few trials they show (:mod:`tuning.digest`), not by reading or copying
    every trial, which is what made them cost seconds. Their times are benchmark figures
    (``benchmarks/growth.py --after``, benchmarks/RESULTS.md), not asserted here."""
    import copy

    from typer.testing import CliRunner

    from tuning.cli import app

    db = tmp_path / "optuna.db"
    make_study(f"sqlite:///{db}", 10000)
    storage = f"sqlite:///{db}"
    rows: list[int] = []  # trials per read of the database
    copied = 0  # trials deep-copied
    read = optuna.storages.RDBStorage._get_trials
    deepcopy = copy.deepcopy

    def counted_read(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        trials = read(self, *args, **kwargs)
        rows.append(len(trials))
        return trials

    def counted_copy(x, memo=None, _nil=[]):  # type: ignore[no-untyped-def]  # noqa: B006
        nonlocal copied
        if memo is None:  # a caller's copy, not deepcopy's own recursion
            items = x if isinstance(x, list) else [x]
            copied += sum(isinstance(t, optuna.trial.FrozenTrial) for t in items)
        return deepcopy(x, memo)

    monkeypatch.setattr(optuna.storages.RDBStorage, "_get_trials", counted_read)
    monkeypatch.setattr(copy, "deepcopy", counted_copy)
    monkeypatch.chdir(tmp_path)
    commands = [
        ["status", "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"],
        ["show", "growth"],
        ["best", "growth"],
    ]
    for args in commands:
        rows.clear()
        copied = 0
        done = CliRunner().invoke(app, [*args, "--storage", storage])
        assert done.exit_code == 0, done.output
        assert "10004 trials" in done.output or args[0] == "best"
        # SQL aggregates and the few trials shown (tuning.digest), not every trial
        assert sum(rows) <= 100, f"tuning {args[0]} read {sum(rows)} trials: {rows[:10]}"
        assert copied <= 1, f"tuning {args[0]} deep-copied {copied} trials"
