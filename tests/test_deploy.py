"""The deploy files: valid Kubernetes objects, stores' URLs only in environment variables from
Secrets, an image with the PostgreSQL driver SQLAlchemy uses, commands that parse, and the
`tuning prepare` their init step runs."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import ROOT, experiment_id, mlflow_runs, nothing_created, one_line_error
from test_postgres import PASSWORD, postgres  # noqa: F401  (a throwaway server: a fixture)
from typer.testing import CliRunner

from tuning.cli import app

runner = CliRunner()

DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
MANIFESTS = sorted(KUBERNETES.glob("*.y*ml"))
DOCKERFILE = KUBERNETES / "image.Dockerfile"
# The URLs' variables: TUNING_STORAGE is read by `tuning`, MLFLOW_TRACKING_URI by MLflow.
URL_VARIABLES = ("TUNING_STORAGE", "MLFLOW_TRACKING_URI")
# The oldest Kubernetes the Indexed Job suits: backoffLimitPerIndex is on by default from 1.29.
OLDEST_KUBERNETES = "1.29"


def _resources(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _pod_specs(node: Any) -> Iterator[dict[str, Any]]:
    """Every pod spec in a resource (a Job's template, a CronJob's job template's ...)."""
    if isinstance(node, dict):
        if "containers" in node:
            yield node
        for value in node.values():
            yield from _pod_specs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _pod_specs(value)


def _containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*spec.get("initContainers", []), *spec["containers"]]


def _all_containers() -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{path.name}:{container['name']}", container)
        for path in MANIFESTS
        for resource in _resources(path)
        for spec in _pod_specs(resource)
        for container in _containers(spec)
    ]


CONTAINERS = _all_containers()


def test_there_are_manifests() -> None:
    assert {p.name for p in MANIFESTS} >= {"cronjob.yaml", "workers-job.yaml"}
    assert all(_resources(p) for p in MANIFESTS)


# --- Kubernetes' schema, offline ---------------------------------------------------------------


def _kubernetes_versions() -> list[str]:
    """The oldest Kubernetes the manifests are for, and the newest the validator knows."""
    from kubernetes_validate.utils import latest_version

    return sorted({OLDEST_KUBERNETES, latest_version()})


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_is_a_valid_kubernetes_object(path: Path) -> None:
    """Strict schemas (no unknown field anywhere), shipped in kubernetes-validate's wheel."""
    import kubernetes_validate

    for resource in _resources(path):
        for version in _kubernetes_versions():
            try:
                kubernetes_validate.validate(resource, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                where = ".".join(str(p) for p in e.path)
                pytest.fail(f"{path.name} ({resource['kind']}), Kubernetes {version}: {where}: "
                            f"{e.message}")  # fmt: skip


def test_the_validator_catches_a_misspelled_field() -> None:
    """The check above is not vacuous: a typo in a container is refused offline."""
    import kubernetes_validate

    resource = _resources(KUBERNETES / "workers-job.yaml")[0]
    container = resource["spec"]["template"]["spec"]["containers"][0]
    container["arg"] = container.pop("args")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(resource, _kubernetes_versions()[-1], strict=True)


# --- secrets: environment variables, never arguments -------------------------------------------


@pytest.mark.parametrize(("name", "container"), CONTAINERS, ids=[n for n, _ in CONTAINERS])
def test_no_url_or_secret_expansion_in_a_command_line(name: str, container: dict) -> None:
    """A `$(VAR)` in args puts the secret in the process's command line (`ps` shows it)."""
    words = [str(w) for w in [*container.get("command", []), *container.get("args", [])]]
    for word in words:
        assert "://" not in word, f"{name}: a URL in the command line: {word!r}"
        assert "$(" not in word, f"{name}: a variable expanded in the command line: {word!r}"
        assert not word.startswith(("--storage", "--tracking-uri")), (name, word)
        assert not re.match(r"(study\.storage|tracking\.uri)=", word), (name, word)
    for var in container.get("env", []):
        assert "://" not in str(var.get("value", "")), f"{name}: a literal URL in {var['name']}"


@pytest.mark.parametrize(("name", "container"), CONTAINERS, ids=[n for n, _ in CONTAINERS])
def test_stores_come_from_secrets_in_the_variables_the_tool_reads(
    name: str, container: dict
) -> None:
    env = {var["name"]: var for var in container.get("env", [])}
    refs = []
    for variable in URL_VARIABLES:
        assert variable in env, f"{name}: no {variable}"
        ref = env[variable].get("valueFrom", {}).get("secretKeyRef")
        assert ref and ref.get("name") and ref.get("key"), f"{name}: {variable} not from a Secret"
        assert "value" not in env[variable]
        refs.append((ref["name"], ref["key"]))
    assert len(set(refs)) == len(refs), f"{name}: both variables read the same key"


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_stores_are_prepared_before_the_job(path: Path) -> None:
    """Every pod that tunes first runs `tuning prepare` on the same experiment, with a subset of
    the job's --set items (same study, same MLflow experiment)."""
    for resource in _resources(path):
        for spec in _pod_specs(resource):
            jobs = [c for c in spec["containers"] if c["args"][0] in ("run", "worker")]
            inits = [c for c in spec.get("initContainers", []) if c["args"][0] == "prepare"]
            assert jobs, f"{path.name}: no container runs `tuning run` or `tuning worker`"
            assert len(inits) == 1, f"{path.name}: no init container runs `tuning prepare`"
            init = inits[0]
            for job in jobs:
                assert init["image"] == job["image"]
                assert init["args"][1] == job["args"][1], "prepare and job: other experiments"
                assert set(_set_items(init["args"])) <= set(_set_items(job["args"]))


def _set_items(args: list[str]) -> list[str]:
    return [args[i + 1] for i, word in enumerate(args[:-1]) if word == "--set"]


# --- the image's PostgreSQL driver -------------------------------------------------------------

_PIP_FLAGS = {"--no-cache-dir", "--upgrade", "-U", "--quiet", "-q", "--no-compile"}
_PROJECT = re.compile(r"^(?:\.|/app)/?(?:\[(?P<extras>[^\]]*)\])?$")


def _pip_targets(dockerfile: str) -> list[str]:
    """What the Dockerfile's `pip install` commands install (project paths and requirements)."""
    text = re.sub(r"\\\n", " ", dockerfile)
    targets: list[str] = []
    for line in text.splitlines():
        if not line.strip().upper().startswith("RUN "):
            continue
        for command in re.split(r"&&|;", line.strip()[4:]):
            words = shlex.split(command)
            if "install" not in words or not any(re.fullmatch(r"(.*/)?pip3?", w) for w in words):
                continue
            for word in words[words.index("install") + 1 :]:
                if word in ("-e", "--editable"):
                    continue
                assert not word.startswith("-") or word in _PIP_FLAGS, f"pip option {word!r}"
                if not word.startswith("-"):
                    targets.append(word)
    return targets


def _installed_requirements(targets: list[str]) -> list[Any]:
    """The requirements those targets bring: the project's own (``tuning``'s installed metadata,
    with the extras named), and any package named beside it."""
    from packaging.requirements import Requirement

    requirements = []
    for target in targets:
        match = _PROJECT.match(target)
        if match is None:
            requirements.append(Requirement(target))
            continue
        extras = {e.strip() for e in (match["extras"] or "").split(",") if e.strip()}
        for line in metadata.requires("tuning") or []:
            req = Requirement(line)
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in extras):
                requirements.append(req)
    return requirements


def _postgresql_module() -> str:
    """The module SQLAlchemy imports for ``postgresql://`` URLs (psycopg under SQLAlchemy 2.1)."""
    from sqlalchemy.engine import make_url

    dialect = make_url("postgresql://u@h/d").get_dialect()
    try:
        return dialect.import_dbapi().__name__.partition(".")[0]
    except ImportError:
        return dialect.driver


def _missing_driver(dockerfile: str) -> str | None:
    """Why an image built from ``dockerfile`` lacks SQLAlchemy's PostgreSQL driver (or None)."""
    from packaging.utils import canonicalize_name

    module = _postgresql_module()
    requirements = _installed_requirements(_pip_targets(dockerfile))
    providers = {
        canonicalize_name(d) for d in metadata.packages_distributions().get(module, [])
    } or {canonicalize_name(module)}  # not installed here: a distribution named like it
    found = [r for r in requirements if canonicalize_name(r.name) in providers]
    if not found:
        names = sorted(r.name for r in requirements if "psycopg" in r.name or "pg" in r.name)
        return f"SQLAlchemy imports {module!r} for postgresql://, the image installs {names}"
    for req in found:
        try:
            have = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            continue
        if req.specifier and not req.specifier.contains(have, prereleases=True):
            return f"{req} does not admit {req.name} {have}, which SQLAlchemy works with here"
    return None


def test_sqlalchemy_resolves_postgresql_to_psycopg() -> None:
    """The premise: SQLAlchemy 2.1 picks psycopg (3) for a bare postgresql:// URL."""
    from sqlalchemy.engine import make_url

    assert make_url("postgresql://u@h/d").get_dialect().driver == "psycopg"
    assert _postgresql_module() == "psycopg"


def test_the_image_installs_the_driver_sqlalchemy_uses() -> None:
    assert _missing_driver(DOCKERFILE.read_text()) is None
    assert any(_PROJECT.match(t) for t in _pip_targets(DOCKERFILE.read_text()))


def test_the_old_install_line_is_refused() -> None:
    """psycopg2-binary beside the project (the image before) is not the driver."""
    old = "FROM python:3.11-slim\nRUN pip install --no-cache-dir -e . psycopg2-binary\n"
    why = _missing_driver(old)
    assert why is not None and "'psycopg'" in why and "psycopg2-binary" in why


def test_the_postgres_extra_is_pyprojects() -> None:
    """The installed metadata the check reads says what pyproject.toml says (no stale install)."""
    tomllib = pytest.importorskip("tomllib")
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    def key(req: Requirement) -> tuple[str, str, frozenset[str]]:
        return canonicalize_name(req.name), str(req.specifier), frozenset(req.extras)

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {key(Requirement(r)) for r in project["optional-dependencies"]["postgres"]}
    installed = {
        key(req)
        for req in map(Requirement, metadata.requires("tuning") or [])
        if req.marker is not None and req.marker.evaluate({"extra": "postgres"})
    }
    assert declared == installed, "reinstall the project: pip install -e '.[dev]'"


# --- every command line in deploy/ parses and names a valid experiment --------------------------


def _k8s_commands() -> list[tuple[str, list[str]]]:
    return [(name, [str(w) for w in c["args"]]) for name, c in CONTAINERS]


def _systemd_commands() -> list[tuple[str, list[str]]]:
    found = []
    for path in sorted((DEPLOY / "systemd").glob("*.service")):
        for line in path.read_text().splitlines():
            if line.startswith("ExecStart="):
                words = shlex.split(line.removeprefix("ExecStart="))
                assert words[0].endswith("/bin/tuning"), line
                found.append((path.name, words[1:]))
    return found


def _crontab_commands() -> list[tuple[str, list[str]]]:
    found = []
    for line in (DEPLOY / "crontab").read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        words = shlex.split(line)
        start = next(i for i, w in enumerate(words) if w.endswith("/bin/tuning")) + 1
        shell = (i for i, w in enumerate(words) if i >= start and re.match(r"\d*[<>]|[|&;]", w))
        end = next(shell, None)
        found.append(("crontab", words[start:end]))
    return found


COMMANDS = [*_k8s_commands(), *_systemd_commands(), *_crontab_commands()]


@pytest.mark.parametrize(("where", "args"), COMMANDS, ids=[w for w, _ in COMMANDS])
def test_deploy_command_parses_and_its_experiment_loads(where: str, args: list[str]) -> None:
    """Parsed by the real command (unknown options, bad types refused), then the experiment
    loaded with its --set items (unknown keys, bad values refused): nothing runs."""
    from typer.main import get_command

    from tuning.cli import _duration, _optional_number
    from tuning.config import load_experiment, parse_set

    group = get_command(app)
    command = group.get_command(group.context_class(group), args[0])
    assert command is not None, f"{where}: no command `tuning {args[0]}`"
    params = command.make_context(args[0], list(args[1:])).params
    _duration(params.get("timeout"))
    _optional_number(params.get("n_trials"), "--n-trials", int)
    overrides = [parse_set(item) for item in params.get("set_") or []]
    exp = load_experiment(ROOT / params["experiment"], overrides=overrides)
    assert exp.name


# --- tuning prepare ----------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_storage_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TUNING_STORAGE", raising=False)


def _prepared(workdir: Path, *args: str) -> str:
    result = runner.invoke(app, ["prepare", *args])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, result.stdout
    return lines[0]


def test_prepare_creates_the_stores_and_runs_nothing(make_experiment, workdir: Path) -> None:
    import optuna

    exp = make_experiment("tiny")
    line = _prepared(workdir, str(exp))
    assert "'tiny'" in line, line
    summaries = optuna.get_all_study_summaries("sqlite:///optuna.db")
    assert [s.study_name for s in summaries] == ["tiny"]
    assert summaries[0].n_trials == 0
    experiment_id(workdir, "tiny")  # the MLflow experiment exists
    assert mlflow_runs(workdir, "tiny") == []

    # Twice (a retried pod, a second worker's init container): the same study, still no run.
    again = _prepared(workdir, str(exp))
    assert "'tiny'" in again, again
    summaries = optuna.get_all_study_summaries("sqlite:///optuna.db")
    assert [(s.study_name, s.n_trials) for s in summaries] == [("tiny", 0)]
    assert mlflow_runs(workdir, "tiny") == []


def test_prepare_takes_the_stores_and_overrides_from_the_command_line(
    make_experiment, workdir: Path
) -> None:
    import optuna

    exp = make_experiment("tiny")
    (workdir / "stores").mkdir()
    line = _prepared(
        workdir,
        str(exp),
        "--storage",
        "sqlite:///stores/optuna.db",
        "--tracking-uri",
        "sqlite:///stores/mlflow.db",
        "--set",
        "study.name=nightly",
        "--set",
        "tracking.experiment=night",
    )
    assert "'nightly'" in line and "'night'" in line, line
    nothing_created(workdir)
    names = [s.study_name for s in optuna.get_all_study_summaries("sqlite:///stores/optuna.db")]
    assert names == ["nightly"]
    experiment_id(workdir / "stores", "night")
    assert mlflow_runs(workdir / "stores", "night") == []


def test_prepare_reads_the_storage_from_tuning_storage(
    make_experiment, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the manifests rely on: the URL in $TUNING_STORAGE, not in the arguments; a
    --storage still wins over it."""
    import optuna

    (workdir / "env").mkdir()
    (workdir / "flag").mkdir()
    monkeypatch.setenv("TUNING_STORAGE", "sqlite:///env/optuna.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///env/mlflow.db")
    exp = make_experiment("tiny", tracking__uri=None)
    assert "env/optuna.db" in _prepared(workdir, str(exp))
    assert not (workdir / "optuna.db").exists()
    names = [s.study_name for s in optuna.get_all_study_summaries("sqlite:///env/optuna.db")]
    assert names == ["tiny"]
    experiment_id(workdir / "env", "tiny")

    line = _prepared(workdir, str(exp), "--storage", "sqlite:///flag/optuna.db")
    assert "flag/optuna.db" in line, line
    assert (workdir / "flag" / "optuna.db").exists()


@pytest.mark.slow  # a real server, four processes importing TensorFlow: about a minute
def test_init_containers_prepare_postgresql_at_once(
    make_experiment,
    workdir: Path,
    postgres: str,  # noqa: F811
) -> None:
    """The Indexed Job's init containers: four `tuning prepare` processes at the same moment,
    the URL in $TUNING_STORAGE (psycopg, SQLAlchemy's driver for postgresql://): one study,
    one MLflow experiment, no trial, no run, the password in no line."""
    import optuna

    exp = make_experiment("pg")
    env = {**os.environ, "TUNING_STORAGE": postgres}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tuning", "prepare", str(exp)],
            cwd=workdir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for _ in range(4)
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        lines = out.splitlines()
        assert len(lines) == 1 and "'pg'" in lines[0] and "postgresql://" in lines[0], out
        assert PASSWORD not in out + err
    summaries = optuna.get_all_study_summaries(postgres)
    assert [(s.study_name, s.n_trials) for s in summaries] == [("pg", 0)]
    assert not (workdir / "optuna.db").exists()
    assert mlflow_runs(workdir, "pg") == []


def test_prepare_user_error_is_one_line_exit_2_and_creates_nothing(
    make_experiment, workdir: Path
) -> None:
    exp = make_experiment("tiny")
    result = runner.invoke(app, ["prepare", str(exp), "--set", "study.n_trails=3"])
    one_line_error(result, "study.n_trails", "unknown key")
    nothing_created(workdir)
    result = runner.invoke(app, ["prepare", "nope.yaml"])
    one_line_error(result, "nope.yaml")
    nothing_created(workdir)
