"""Secrets stay secret (DESIGN.md, "Secrets"): a password planted in the study storage's URL and
in the MLflow tracking URI, in both forms (``user:PASSWORD@`` and ``?password=PASSWORD``), on
real PostgreSQL databases, appears in no output of any command, no MLflow param, tag or artifact,
no row of either database, no file the jobs wrote, and on no worker's command line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy
import yaml
from conftest import mlflow_client
from test_postgres import postgres  # noqa: F401 (the fixture)
from typer.testing import CliRunner

from tuning.cli import _worker_arguments, app
from tuning.config import redact
from tuning.secrets import (
    URL_SETTINGS_ENV,
    carries_url,
    has_secret,
    is_secret_key,
    redact_data,
    redact_text,
)

ROOT = Path(__file__).resolve().parents[1]
PW = "S3cr3tPW"
runner = CliRunner()


# -- the rules ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u:S3cr3tPW@h/db", "postgresql://u:***@h/db"),
        ("postgresql+psycopg://u:S3cr3tPW@h:5432/db", "postgresql+psycopg://u:***@h:5432/db"),
        ("mysql+pymysql://user:S3cr3tPW%40x@host:3306/db", "mysql+pymysql://user:***@host:3306/db"),
        # What SQLAlchemy (Optuna's and MLflow's reading) calls the password, unescaped / ? @
        ("postgresql://u:S3cr/3tPW@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:S3cr?3tPW@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:S3cr@3tPW@h/db", "postgresql://u:***@h/db"),
        ("postgresql://h:5/db?user=u&password=S3cr3tPW", "postgresql://h:5/db?user=u&password=***"),
        ("postgresql://h/db?PassWord=S3cr3tPW&sslmode=require",
         "postgresql://h/db?PassWord=***&sslmode=require"),
        ("postgresql://h/db?user=u&pass%77ord=S3cr3tPW", "postgresql://h/db?user=u&password=***"),
        ("https://u:S3cr3tPW@mlflow.example:5000/", "https://u:***@mlflow.example:5000/"),
        ("https://mlflow.example/?token=S3cr3tPW&x=1#access_token=S3cr3tPW",
         "https://mlflow.example/?token=***&x=1#access_token=***"),
        ("s3://b/k?X-Amz-Security-Token=S3cr3tPW&X-Amz-Signature=S3cr3tPW&X-Amz-Date=1",
         "s3://b/k?X-Amz-Security-Token=***&X-Amz-Signature=***&X-Amz-Date=1"),
        ("postgresql://u:S3cr3tPW@h:notaport/db", "postgresql://***"),  # unparseable: scheme only
        # Nothing secret: unchanged, byte for byte.
        ("postgresql://u@h/db?sslmode=require", "postgresql://u@h/db?sslmode=require"),
        ("sqlite:///optuna.db", "sqlite:///optuna.db"),
        ("sqlite:////abs/dir/optuna.db", "sqlite:////abs/dir/optuna.db"),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("http://host:5000/users/@me", "http://host:5000/users/@me"),
        ("not a url", "not a url"),
    ],
)  # fmt: skip
def test_redact(url: str, expected: str) -> None:
    assert redact(url) == expected
    assert PW not in redact(url)


@pytest.mark.parametrize(
    ("name", "secret"),
    [("password", True), ("sslpassword", True), ("passwd", True), ("pwd", True),
     ("access_key", True), ("api-key", True), ("SecretAccessKey", True), ("sig", True),
     ("X-Amz-Credential", True), ("auth", True), ("user", False), ("sslmode", False),
     ("application_name", False), ("keepalives", False), ("authSource", False)],
)  # fmt: skip
def test_secret_parameter_names(name: str, secret: bool) -> None:
    assert is_secret_key(name) is secret


def test_every_url_in_text_and_data() -> None:
    line = (
        f"error: x.yaml: study.storage: cannot open 'postgresql://u:{PW}@h/db' (refused). "
        f"Fix: or [postgresql://h/db?password={PW}], done"
    )
    assert redact_text(line) == (
        "error: x.yaml: study.storage: cannot open 'postgresql://u:***@h/db' (refused). "
        "Fix: or [postgresql://h/db?password=***], done"
    )
    assert has_secret(line) and not has_secret(redact_text(line))
    data = {"study": {"storage": f"postgresql://u:{PW}@h/db"}, "l": [1, f"x https://h?key={PW}"]}
    assert PW not in json.dumps(redact_data(data))
    assert redact_data(data)["study"]["storage"] == "postgresql://u:***@h/db"


def test_workers_get_urls_through_the_environment() -> None:
    storage, tracking = f"postgresql://u:{PW}@h/db", f"postgresql://h/m?password={PW}"
    overrides = [
        ("training.max_epochs", 1),
        ("study.storage", storage),
        ("study.seed", 3),  # after a URL: keeps its place, in the environment too
        ("tracking.uri", tracking),
    ]
    args, env = _worker_arguments(Path("e.yaml"), overrides)
    assert args == ["e.yaml", "--set", "training.max_epochs=1"]
    assert json.loads(env[URL_SETTINGS_ENV]) == [[k, v] for k, v in overrides[1:]]
    assert _worker_arguments(Path("e.yaml"), overrides[:1])[1] == {}
    assert carries_url({"storage": storage}) and not carries_url(3)


def test_validate_hides_passwords_and_reads_tuning_storage(
    make_experiment, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exp = make_experiment("sec")
    monkeypatch.setenv("TUNING_STORAGE", f"postgresql://h/optuna?user=u&password={PW}")
    result = runner.invoke(
        app, ["validate", str(exp), "--set", f"tracking.uri=postgresql://u:{PW}@h/mlflow"]
    )
    assert result.exit_code == 0, result.output
    assert PW not in result.output
    resolved = yaml.safe_load(result.output)
    # $TUNING_STORAGE wins over the file ...
    assert resolved["study"]["storage"] == "postgresql://h/optuna?user=u&password=***"
    assert resolved["tracking"]["uri"] == "postgresql://u:***@h/mlflow"
    # ... and --set study.storage (or --storage) over $TUNING_STORAGE.
    result = runner.invoke(
        app, ["validate", str(exp), "--set", f"study.storage=postgresql://u:{PW}@h/other"]
    )
    assert yaml.safe_load(result.output)["study"]["storage"] == "postgresql://u:***@h/other"
    # A password in a bad value stays hidden in the error line too.
    result = runner.invoke(app, ["validate", str(exp), "--set", f"study.storage=redis://u:{PW}@h"])
    assert result.exit_code == 2 and "redis://u:***@h" in result.stderr
    assert PW not in result.output
    help_text = runner.invoke(app, ["status", "--help"]).output
    assert "TUNING_STORAGE" in help_text and PW not in help_text


# -- end to end, on PostgreSQL ----------------------------------------------------------------


def _stores(admin_url: str) -> dict[str, str]:
    """A role with password PW owning two databases (the study's, MLflow's); their URLs with
    the password in the user information and in the query."""
    engine = sqlalchemy.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sqlalchemy.text(f"CREATE ROLE tuner LOGIN PASSWORD '{PW}'"))
        for db in ("optuna_db", "mlflow_db"):
            conn.execute(sqlalchemy.text(f"CREATE DATABASE {db} OWNER tuner"))
    engine.dispose()
    server = admin_url.rsplit("@", 1)[1].rsplit("/", 1)[0]  # 127.0.0.1:PORT
    return {
        "storage": f"postgresql://tuner:{PW}@{server}/optuna_db",
        "storage_q": f"postgresql://{server}/optuna_db?user=tuner&password={PW}",
        "tracking": f"postgresql://tuner:{PW}@{server}/mlflow_db",
        "tracking_q": f"postgresql://{server}/mlflow_db?user=tuner&password={PW}",
    }


def _env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MLFLOW_", "TUNING_STORAGE", URL_SETTINGS_ENV))
    }
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["MLFLOW_LOGGING_LEVEL"] = "INFO"  # let MLflow say all it says
    env["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    return {**env, **extra}


def _tuning(*args: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tuning", *args],
        env=_env(**env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def _finish(proc: subprocess.Popen[str], *codes: int, timeout: float = 300) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode in (codes or (0,)), out[-4000:]
    return out


def _descendants(pid: int) -> dict[int, int]:
    """Every process below ``pid`` (from /proc), with its parent's pid."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = {}, [pid]
    while todo:
        parent = todo.pop()
        for child in children.get(parent, []):
            found[child] = parent
            todo.append(child)
    return found


def _watch_cmdlines(proc: subprocess.Popen[str]) -> dict[int, tuple[str, str, int]]:
    """Poll the command line, environment and parent's pid of every descendant of ``proc``
    until it ends."""
    seen: dict[int, tuple[str, str, int]] = {}
    while proc.poll() is None:
        for pid, parent in _descendants(proc.pid).items():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                environ = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if cmdline:
                seen[pid] = (cmdline, environ, parent)
        time.sleep(0.05)
    return seen


def _no_password_stored(stores: dict[str, str], workdir: Path) -> None:
    """No row of either database, no MLflow param or tag (runs and logged models), no artifact
    and no file under ``workdir`` holds the password."""
    for url in (stores["storage"], stores["tracking"]):
        engine = sqlalchemy.create_engine(url)
        with engine.connect() as conn:
            for table in sqlalchemy.inspect(conn).get_table_names():
                for row in conn.execute(sqlalchemy.text(f'SELECT * FROM "{table}"')):
                    assert PW not in repr(tuple(row)), (table, row)
        engine.dispose()
    client = mlflow_client(stores["tracking"])
    experiments = [e.experiment_id for e in client.search_experiments(view_type=3)]
    runs = client.search_runs(experiments, run_view_type=3, max_results=1000)
    assert runs
    for run in runs:
        assert PW not in repr(run.data.params) + repr(run.data.tags), run.info.run_id
        todo = [""]
        while todo:  # every artifact, through MLflow
            for item in client.list_artifacts(run.info.run_id, todo.pop() or None):
                if item.is_dir:
                    todo.append(item.path)
                else:
                    local = client.download_artifacts(
                        run.info.run_id, item.path, str(workdir / "dl" / run.info.run_id)
                    )
                    assert PW.encode() not in Path(local).read_bytes(), item.path
    for model in client.search_logged_models(experiments):
        assert PW not in repr(model.params) + repr(model.tags)
    for path in workdir.rglob("*"):  # artifacts, logged models, anything a job wrote
        if path.is_file():
            assert PW.encode() not in path.read_bytes(), path


def test_no_password_anywhere_on_postgresql(
    make_experiment,
    workdir: Path,
    postgres: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    stores = _stores(postgres)
    exp = str(
        make_experiment(
            "sec",
            study__n_trials=1,
            training__max_epochs=1,
            tracking={"experiment": "sec"},  # the store comes from the options or the environment
        )
    )
    outputs: dict[str, str] = {}

    # `tuning worker`, both URLs from the environment, JSON output: it creates the stores.
    outputs["worker"] = _finish(
        _tuning("worker", exp, "--json", TUNING_STORAGE=stores["storage"],
                MLFLOW_TRACKING_URI=stores["tracking_q"])
    )  # fmt: skip
    text = outputs["worker"]
    summary = json.loads(text[0 if text.startswith("{\n") else text.index("\n{\n") + 1 :])
    assert summary["tracking_uri"].startswith("postgresql://127.0.0.1")
    assert summary["tracking_uri"].endswith("password=***")

    # Two workers, both URLs given to the parent as options: none on a worker's command line.
    workers = _tuning(
        "run", exp, "--workers", "2",
        "--storage", stores["storage_q"], "--tracking-uri", stores["tracking"],
    )  # fmt: skip
    seen = _watch_cmdlines(workers)
    outputs["run --workers 2"] = _finish(workers)
    assert "password=***" in outputs["run --workers 2"]
    # The parent's own children (a worker's child, forked but not yet exec'd, shows the
    # worker's command line too: it is checked below, not counted).
    started = [
        cmd
        for cmd, _, parent in seen.values()
        if parent == workers.pid and " run " in cmd and "--workers" not in cmd
    ]
    assert len(started) == 2, seen
    for cmdline, _, _ in seen.values():
        assert PW not in cmdline and "://" not in cmdline, cmdline
    assert all(URL_SETTINGS_ENV in environ for cmd, environ, _ in seen.values() if cmd in started)

    # The reading commands, in this process (what libraries print to the terminal too, capfd).
    wrong = stores["storage"].replace(PW, "Wrong" + PW)
    missing = stores["storage_q"].replace("optuna_db", "nodb")
    reads = {
        "validate": ["validate", exp, "--set", f"tracking.uri={stores['tracking_q']}"],
        "status": ["status", "--storage", stores["storage"],
                   "--tracking-uri", stores["tracking_q"]],
        "show": ["show", "sec", "--storage", stores["storage_q"]],
        "best": ["best", "sec"],
        "compare": ["compare", "sec", "--storage", stores["storage_q"],
                    "--tracking-uri", stores["tracking"]],
        "status (wrong password)": ["status", "--storage", wrong],
        "show (no database)": ["show", "sec", "--storage", missing],
    }  # fmt: skip
    monkeypatch.setenv("TUNING_STORAGE", stores["storage"])  # validate's and best's storage
    for name, args in reads.items():
        result = runner.invoke(app, args)
        assert result.exit_code == (2 if "(" in name else 0), (name, result.output)
        captured = capfd.readouterr()
        outputs[name] = result.output + captured.out + captured.err
    assert "password=***" in outputs["validate"] and "tuner:***@" in outputs["validate"]
    assert outputs["status"].startswith("sec:") and "3 trials" in outputs["status"]
    assert outputs["best"].startswith("trial ")
    assert "tuner:***@" in outputs["status (wrong password)"]
    assert "password=***" in outputs["show (no database)"]

    for name, text in outputs.items():
        assert PW not in text, (name, text[-3000:])
    _no_password_stored(stores, workdir)


@pytest.mark.slow
def test_mlflow_run_takes_urls_from_the_environment(
    make_experiment,
    workdir: Path,
    postgres: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`mlflow run` with the URLs in the environment: no password anywhere. With -P storage
    holding one: MLflow has recorded it on its run before the job starts; the job stops with
    one line saying how to pass it, and adds nothing to that run."""
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    stores = _stores(postgres)
    exp = str(make_experiment("mlsec", study__n_trials=1, training__max_epochs=1, tracking={}))
    shutil.copy(ROOT / "MLproject", workdir / "MLproject")  # the job runs in the project folder
    command = [sys.executable, "-m", "mlflow", "run", str(workdir), "--env-manager", "local",
               "--experiment-name", "mlsec", "-P", f"experiment={exp}"]  # fmt: skip
    proc = subprocess.run(
        command,
        env=_env(TUNING_STORAGE=stores["storage_q"], MLFLOW_TRACKING_URI=stores["tracking"]),
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    assert PW not in output
    _no_password_stored(stores, workdir)

    proc = subprocess.run(
        [*command, "-P", f"storage={stores['storage']}"],
        env=_env(MLFLOW_TRACKING_URI=stores["tracking_q"]),
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    line = next(x for x in output.splitlines() if x.startswith("error: mlflow run"))
    assert "-P storage" in line and "TUNING_STORAGE" in line and PW not in line
    # What MLflow did before the job started, and no code of ours can undo: the param, in clear.
    client = mlflow_client(stores["tracking"])
    experiment = client.get_experiment_by_name("mlsec")
    runs = client.search_runs([experiment.experiment_id])
    leaky = [run for run in runs if PW in run.data.params.get("storage", "")]
    assert len(leaky) == 1 and leaky[0].info.status == "FAILED"
    assert "study" not in leaky[0].data.tags  # the job added nothing: no tag, no trial
    assert not [r for r in runs if r.data.tags.get("mlflow.parentRunId") == leaky[0].info.run_id]
