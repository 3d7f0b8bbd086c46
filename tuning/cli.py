"""The ``tuning`` command: thin commands over the library, errors mapped to exit codes.

Owns argument parsing and what the user sees in the terminal. Each command calls library
functions; a :class:`~tuning.errors.ConfigError` becomes one line on stderr and exit code 2, an
interrupt (Ctrl-C or SIGTERM) exit code 130 after the runs are ended, and any other error keeps
its traceback. No tuning logic lives here.

Each command imports the library inside its body: that keeps Optuna, MLflow and Keras out of
``tuning --help`` (about 0.4 s), and Keras out of the process until ``tuning.job`` has chosen
the backend.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shlex
import signal
import sys
import tempfile
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import typer
import yaml

from tuning.errors import ConfigError, TrackingLost

if TYPE_CHECKING:  # the commands import these inside their bodies: see the module docstring
    import optuna

    from tuning import pareto
    from tuning.config import Experiment
    from tuning.job import JobResult
    from tuning.objective import Objective

app = typer.Typer(
    add_completion=False,
    no_args_is_help=False,
    help="Tune Keras MLPs with Optuna and record every trial in MLflow.",
    pretty_exceptions_show_locals=False,  # a traceback never prints a URL held in a variable
)

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
EXIT_TRACKING_LOST = 3


def _fail(err: ConfigError) -> typer.Exit:
    from tuning.secrets import redact_text

    typer.echo(f"error: {redact_text(str(err))}", err=True)
    return typer.Exit(EXIT_USER_ERROR)


def _storage_from_env() -> list[tuple[str, object]]:
    """``$TUNING_STORAGE`` as the first override: ``--storage`` and ``--set study.storage``,
    applied after it, win over it; it wins over the experiment file's ``study.storage``."""
    from tuning.secrets import storage_from_env

    storage = storage_from_env()
    return [("study.storage", storage)] if storage else []


def _optional_number(value: str | None, option: str, kind: type) -> Any:
    """Parse an optional number; empty text (what ``mlflow run`` passes by default) means unset."""
    if value is None or value.strip() in ("", "none", "null"):
        return None
    try:
        number = kind(value)
    except ValueError:
        raise ConfigError(
            f"expected a {'whole ' if kind is int else ''}number (got {value!r})",
            source=option,
            fix=f"write e.g. {option} 5",
        ) from None
    return number


def _duration(value: str | None) -> float | None:
    """Seconds from ``3600``, ``90s``, ``45m``, ``2h`` or ``1h30m``; empty text means unset."""
    if value is None or value.strip() in ("", "none", "null"):
        return None
    text = value.strip().lower()
    try:
        return float(text)
    except ValueError:
        pass
    match = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?", text)
    if not match or not any(match.groups()):
        raise ConfigError(
            f"expected a duration (got {value!r})",
            source="--timeout",
            fix="write seconds (3600) or hours/minutes/seconds (2h, 90m, 1h30m)",
        )
    h, m, s = (float(g) if g else 0.0 for g in match.groups())
    return h * 3600 + m * 60 + s


def _hush_libraries() -> None:
    """Keep MLflow's and Optuna's INFO lines off the terminal (``--quiet``, ``--json``)."""
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read when mlflow is imported
    level = logging.getLevelName(os.environ["MLFLOW_LOGGING_LEVEL"].upper())
    logging.getLogger("mlflow").setLevel(level if isinstance(level, int) else logging.WARNING)


def _sigterm_as_interrupt(signum: int, frame: FrameType | None) -> None:
    from tuning.process import STOP

    # Raised wherever the main thread is; if that spot swallows it (a finalizer, a library's
    # catch-all), the job still stops at the next epoch end or trial end, where STOP is checked.
    # Except the first signal inside a store's database code: interrupted in a commit, SQLite
    # keeps its lock and every worker of the study waits on it for ever; STOP ends the job there.
    again = STOP.is_set()
    STOP.set()
    database = ("sqlalchemy", "sqlite3", "psycopg", "pymysql", "mlflow.store", "optuna.storages")
    while not again and frame is not None:
        if frame.f_globals.get("__name__", "").startswith(database):
            return
        frame = frame.f_back
    raise KeyboardInterrupt(f"signal {signum}")


ExperimentArg = Annotated[Path, typer.Argument(help="experiment YAML file")]
NTrialsOption = Annotated[
    str | None,
    typer.Option("--n-trials", metavar="N", help="trials this job adds (overrides the file)"),
]
TimeoutOption = Annotated[
    str | None,
    typer.Option(
        "--timeout",
        "--time-budget",
        metavar="DURATION",
        help="start no new trial after this: seconds, or 90m, 2h, 1h30m",
    ),
]
WorkersOption = Annotated[
    int,
    typer.Option(
        "--workers",
        min=1,
        help="run N jobs side by side on this machine, one study (each adds n_trials)",
    ),
]
RunStorageOption = Annotated[
    str | None,
    typer.Option(
        "--storage",
        help="Optuna storage URL, e.g. sqlite:///optuna.db (default: $TUNING_STORAGE, else the "
        "experiment's study.storage); put a password in $TUNING_STORAGE, not on a command line",
    ),
]
TrackingOption = Annotated[
    str | None,
    typer.Option(
        "--tracking-uri",
        help="MLflow tracking URI, e.g. sqlite:///mlflow.db (default: the experiment's "
        "tracking.uri, else $MLFLOW_TRACKING_URI); put a password in $MLFLOW_TRACKING_URI",
    ),
]
StudyNameOption = Annotated[str | None, typer.Option("--study-name", help="Optuna study name")]
SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set", metavar="KEY=VALUE", help="override any key, e.g. training.max_epochs=5"
    ),
]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="print nothing but errors")]
JsonOption = Annotated[
    bool, typer.Option("--json", help="print only a JSON summary of the job, for scripts")
]
OverridesOption = Annotated[
    str | None,
    typer.Option(
        "--overrides",
        metavar="'KEY=VALUE ...'",
        help="several --set items in one quoted string (for mlflow run -P overrides=...)",
    ),
]


@app.command()
def run(
    experiment: ExperimentArg = Path("experiments/quickstart.yaml"),
    n_trials: NTrialsOption = None,
    timeout: TimeoutOption = None,
    workers: WorkersOption = 1,
    storage: RunStorageOption = None,
    tracking_uri: TrackingOption = None,
    study_name: StudyNameOption = None,
    set_: SetOption = None,
    quiet: QuietOption = False,
    as_json: JsonOption = False,
    overrides_text: OverridesOption = None,
) -> None:
    """Tune an experiment: resume its study, run trials, record them in MLflow.

    The study storage: --storage (or --set study.storage=), else $TUNING_STORAGE, else the
    experiment file's; the MLflow store: --tracking-uri, else the file's, else
    $MLFLOW_TRACKING_URI. A URL's password is shown as *** everywhere."""
    from tuning.config import load_experiment, parse_set
    from tuning.secrets import url_settings_from_env

    if quiet or as_json:
        _hush_libraries()
    try:
        items = [*(set_ or []), *shlex.split(overrides_text or "")]
        overrides = [parse_set(item) for item in items]
        options = {
            "study.n_trials": _optional_number(n_trials, "--n-trials", int),
            "study.timeout": _duration(timeout),
            "study.storage": storage or None,
            "tracking.uri": tracking_uri or None,
            "study.name": study_name or None,
        }
        overrides += [(key, value) for key, value in options.items() if value is not None]
        overrides += url_settings_from_env()  # from a `tuning run --workers` parent
        exp = load_experiment(experiment, overrides=[*_storage_from_env(), *overrides])
        if os.environ.get("MLFLOW_RUN_ID"):
            _refuse_clear_launch_params(exp)
    except ConfigError as e:
        raise _fail(e) from None

    if workers > 1:
        args, env = _worker_arguments(experiment, overrides)
        args += ["--quiet"] if quiet else []
        raise typer.Exit(_run_workers(exp, workers, args, quiet=quiet, env=env))
    result = _run_one(exp, silent=quiet or as_json)
    if as_json:
        from tuning.secrets import redact_data

        typer.echo(json.dumps(redact_data(_job_json(result)), indent=2, default=str))
    if result.best_value is None:
        typer.echo("no trial completed: see the reasons in the trials' MLflow runs", err=True)
        raise typer.Exit(1)


def _worker_arguments(
    experiment: Path, overrides: list[tuple[str, object]]
) -> tuple[list[str], dict[str, str]]:
    """Each worker's `tuning run` arguments and extra environment: the same experiment and the
    same overrides in the same order, as --set items up to the first one holding a URL, that
    one and those after it in $TUNING_URL_SETTINGS: a URL is never on a command line, which
    every user of the machine can read (``ps``, ``/proc/PID/cmdline``)."""
    from tuning.secrets import carries_url, url_settings_env

    first = next((i for i, (_, v) in enumerate(overrides) if carries_url(v)), len(overrides))
    args = [str(experiment)]
    for key, value in overrides[:first]:
        args += ["--set", f"{key}={json.dumps(value)}"]
    return args, url_settings_env(overrides[first:])


def _refuse_clear_launch_params(exp: Experiment) -> None:
    """Under ``mlflow run``: stop, before anything is created, when MLflow recorded a URL's
    password in clear among the params of the run this job would adopt (``-P
    storage=postgresql://USER:PASSWORD@...``). MLflow logs every ``-P`` value on its run (and
    prints the command line) before the job starts, and a param can be neither changed nor
    deleted: the job can only refuse to add to that run, and say how to pass the URL instead.

    Raises:
        ConfigError: naming the params, the run and the fix.
    """
    from tuning.secrets import has_secret
    from tuning.tracking import open_client, resolve_tracking_uri

    run_id = os.environ["MLFLOW_RUN_ID"]
    try:
        client = open_client(resolve_tracking_uri(exp.tracking.uri))
        params = client.get_run(run_id).data.params
    except Exception:  # the job checks the store itself, with its own message
        return
    leaked = sorted(key for key, value in params.items() if has_secret(value))
    if leaked:
        names = ", ".join(f"-P {key}" for key in leaked)
        raise ConfigError(
            f"mlflow run recorded {names} with a password in clear as a param of run {run_id} "
            "(MLflow logs every -P value on its run before the job starts, and a param cannot "
            "be changed or deleted); this job adds nothing to that run",
            source="mlflow run",
            key=", ".join(leaked),
            fix="pass the URL through the environment instead: TUNING_STORAGE='<storage URL>' "
            "(and MLFLOW_TRACKING_URI) before mlflow run, and no -P storage; then remove that "
            f"run: mlflow runs delete --run-id {run_id}, then mlflow gc --backend-store-uri "
            "<the tracking store>",
        )


def _run_one(exp: Experiment, *, silent: bool) -> JobResult:
    """One job in this process; SIGTERM ends it like Ctrl-C (every run ended, exit 130)."""
    from tuning.job import run_job
    from tuning.secrets import redact_text

    previous = signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    try:
        return run_job(
            exp,
            say=(lambda line: None) if silent else (lambda line: typer.echo(redact_text(line))),
            progress=not silent and sys.stderr.isatty(),
        )
    except ConfigError as e:
        raise _fail(e) from None
    except TrackingLost as e:
        typer.echo(f"error: {redact_text(str(e))}", err=True)
        raise typer.Exit(EXIT_TRACKING_LOST) from None
    except KeyboardInterrupt:
        typer.echo("interrupted: every run was ended (trial in flight KILLED)", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_workers(
    exp: Experiment,
    workers: int,
    args: list[str],
    *,
    quiet: bool = False,
    env: dict[str, str] | None = None,
) -> int:
    """Validate once, create the stores once, then start the workers (each a `tuning run`, with
    ``env`` added to its environment: the URLs, see :func:`_worker_arguments`)."""
    from tuning.config import redact
    from tuning.job import prepare_stores, validate_job
    from tuning.workers import run_workers

    try:
        data, uri = validate_job(exp)
        prepare_stores(exp, data, uri, say=typer.echo)
    except ConfigError as e:
        typer.echo(f"error: {e}", err=True)
        return EXIT_USER_ERROR
    if not quiet:
        where = redact(exp.study.storage)
        typer.echo(f"starting {workers} workers on study {exp.study_name!r} in {where}")
    return run_workers(args, n=workers, say=typer.echo, env=env)


def _job_json(result: JobResult) -> dict[str, Any]:
    data = dataclasses.asdict(result)
    champion = result.champion
    data["champion"] = dataclasses.asdict(champion) if champion is not None else None
    return data


# A worker of a distributed study is the same job pointed at a shared storage.
app.command(
    name="worker",
    help="One worker of a study shared by several machines: `tuning run` with a shared storage "
    "(e.g. TUNING_STORAGE=postgresql://USER:PASSWORD@HOST/DB in the environment, or --storage "
    "postgresql://USER@HOST/DB); give each machine its own TUNING_WORKER number.",
)(run)


@app.command()
def spaces(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help="search-space files (default: every file in search_spaces/)"),
    ] = None,
) -> None:
    """Validate search spaces and print their parameters."""
    from tuning.config import load_search_space

    files = paths or sorted(Path("search_spaces").glob("*.y*ml"))
    if not files:
        typer.echo("no search-space files given and none in search_spaces/", err=True)
        raise typer.Exit(EXIT_USER_ERROR)
    failed = False
    for path in files:
        try:
            space = load_search_space(path)
        except ConfigError as e:
            typer.echo(f"error: {e}", err=True)
            failed = True
            continue
        typer.echo(f"{path}: {len(space.specs)} parameters, {len(space.searched())} searched")
        for line in space.describe():
            typer.echo(f"  {line}")
    if failed:
        raise typer.Exit(EXIT_USER_ERROR)


@app.command()
def validate(
    experiment: Annotated[Path, typer.Argument(help="experiment YAML file")],
    set_: Annotated[
        list[str] | None, typer.Option("--set", metavar="KEY=VALUE", help="override a key")
    ] = None,
) -> None:
    """Check an experiment and print it with every default filled in (the storage from
    --set, else $TUNING_STORAGE, else the file; passwords as ***); creates nothing."""
    from tuning.config import load_experiment, parse_set
    from tuning.secrets import redact_data

    try:
        overrides = [*_storage_from_env(), *(parse_set(s) for s in set_ or [])]
        exp = load_experiment(experiment, overrides=overrides)
    except ConfigError as e:
        raise _fail(e) from None
    typer.echo(yaml.safe_dump(redact_data(exp.resolved()), sort_keys=False).rstrip())


def _open_study(
    study_name: str, storage: str, store: optuna.storages.BaseStorage | None = None
) -> optuna.Study:
    from tuning.storage import load_study

    return load_study(study_name, storage, store)


StorageOption = Annotated[
    str,
    typer.Option(
        "--storage",
        envvar="TUNING_STORAGE",
        help="Optuna storage URL of the study (default: $TUNING_STORAGE, else "
        "sqlite:///optuna.db); put a password in $TUNING_STORAGE, not on a command line",
    ),
]


@dataclasses.dataclass
class _Picked:
    """The version of a study a reading command shows, and every version of that study.

    Attributes:
        base: The study's name (its first version's Optuna study).
        study: The Optuna study of the version shown.
        chain: Every version (:func:`tuning.report.version_summaries`, oldest first); empty for
            a version no other points at (a job died making it).
        shown: The shown version's entry in ``chain`` (``None`` when ``chain`` is empty).
    """

    base: str
    study: optuna.Study
    chain: list[dict[str, Any]]
    shown: dict[str, Any] | None

    @property
    def versioned(self) -> bool:
        """Whether the study has more than one version (else it reads as it always did)."""
        return len(self.chain) > 1

    def header(self) -> str:
        """``study 'quickstart' version 2 of 2 ('quickstart@v2', started because: ...)``."""
        shown = self.shown or {}
        current = self.chain[-1] if self.chain else shown
        why = _started_because(shown)
        later = (
            ""
            if shown.get("current", True)
            else f"; current: version {current['version']} {current['study']!r}"
        )
        return (
            f"study {self.base!r} version {shown.get('version', 1)} of {len(self.chain) or 1} "
            f"({self.study.study_name!r}, {why}{later})"
        )

    def json(self) -> dict[str, Any]:
        """The version shown and every version, for ``--json``."""
        shown = self.shown or {}
        return {
            "base": self.base,
            "version": shown.get("version"),
            "current": self.chain[-1]["study"] if self.chain else self.study.study_name,
            "versions": self.chain,
        }


def _started_because(version: dict[str, Any]) -> str:
    if version.get("reason"):
        return f"started because: {version['reason']}"
    if version.get("version", 1) == 1:
        return "the first version"
    return "started before reasons were recorded"


VersionOption = Annotated[
    int | None,
    typer.Option(
        "--version", min=1, metavar="N", help="show version N of the study (default: current)"
    ),
]


def _pick(name: str, storage: str, version: int | None = None, *, counts: bool = True) -> _Picked:
    """The version of study ``name`` to show: a base name means its current version,
    ``NAME@vN`` that version, ``version`` the version of that number. Without ``counts``
    the versions carry no trial counts (:func:`tuning.report.version_summaries`).

    Raises:
        ConfigError: no such study or version (naming those there are), or a storage that
            cannot be read.
    """
    from tuning.lineage import base_of
    from tuning.report import version_summaries
    from tuning.storage import reading_storage, study_names

    base, number = base_of(name)
    named = name != base  # NAME@vN
    if version is not None and named and version != number:
        raise ConfigError(
            f"{name!r} is version {number} of study {base!r}, --version asks for {version}",
            source="--version",
            fix=f"give the study's name {base!r} with --version, or the version's name alone",
        )
    # One storage object for every read: its cache reads each finished trial once.
    store = reading_storage(storage)
    names = set(study_names(store, storage))
    chain = (
        version_summaries(store, base, counts=counts)
        if store is not None and base in names
        else []
    )
    want = version if version is not None else number if named else None
    shown = chain[-1] if chain and want is None else None
    shown = shown or next((v for v in chain if v["version"] == want), None)
    if shown is None and chain and not (version is None and name in names):
        raise ConfigError(
            f"study {base!r} has no version {want}",
            source="--version" if version is not None else "STUDY",
            fix=f"use one of versions {', '.join(str(v['version']) for v in chain)} "
            f"(or {base!r} alone for the current one)",
        )
    if shown is None:  # no versions recorded, or a version no other links to
        return _Picked(base, _open_study(name, storage, store), [], None)
    return _Picked(base, _open_study(shown["study"], storage, store), chain, shown)


def _version_brief(v: dict[str, Any]) -> str:
    """One version of a study in one line (`tuning status`, `tuning show`)."""
    trials = f"{v['trials']} trials" + (f" ({v['carried']} carried)" if v["carried"] else "")
    if v["best_trial"] is not None:
        origin = f", {v['best_from']}" if v.get("best_from") else ""
        best = f"best {v['best_value']:.4f} (#{v['best_trial']}{origin})"
    else:
        best = "no best yet"
    if v["data_rows"] is not None:
        data = f"data {v['data_rows']} rows ({v['data_digest'][:8]})"
        began = v.get("data_rows_began")
        if began is not None and began != v["data_rows"]:
            data += f", began with {began}"
    else:
        data = "data not recorded"
    champion = f"; champion {v['champion']}" if v.get("champion") else ""
    return f"v{v['version']} {v['study']!r}: {trials}; {best}; {data}{champion}; " + (
        _started_because(v)
    )


@app.command()
def show(
    study_name: Annotated[
        str,
        typer.Argument(
            metavar="STUDY", help="study name (its current version) or a version's, NAME@vN"
        ),
    ],
    storage: StorageOption = "sqlite:///optuna.db",
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    top: Annotated[int, typer.Option("--top", help="how many best trials to list")] = 10,
    version: VersionOption = None,
) -> None:
    """Print a study's state from its storage: which version, trials by state, best trial, top
    trials, and the study's other versions."""
    from tuning.digest import digest_of_study
    from tuning.report import results_table

    try:
        picked = _pick(study_name, storage, version)
    except ConfigError as e:
        raise _fail(e) from None
    study = picked.study
    found = digest_of_study(study)  # SQL aggregates on a database: no trial read
    counts = {k: n for k, n in found.states.items() if n}
    last = found.last
    best = _best(study)
    front = _front(study)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "study": study.study_name,
                    **picked.json(),
                    **_directions(study, front),
                    "trials": found.trials,
                    "states": counts,
                    "last_trial_at": last.isoformat() if last else None,
                    "backends": found.backends,
                    "best": best,
                    **({"front": _front_json(front)} if front else {}),
                },
                indent=2,
                default=str,
            )
        )
        return
    if picked.versioned:
        typer.echo(picked.header())
    states = ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "no trials"
    carried = (picked.shown or {}).get("carried")
    typer.echo(
        f"study {study.study_name!r} ({_directions_text(study, front)}): {found.trials} trials: "
        f"{states}" + (f"; {carried} carried from earlier versions" if carried else "")
    )
    if picked.versioned and picked.shown and picked.shown["data_rows"] is not None:
        v = picked.shown
        began = v["data_rows_began"]
        typer.echo(
            f"data: {v['data_rows']} rows (digest {v['data_digest'][:8]}), objective "
            f"{v['metric']}"
            + (f"; the version began with {began} rows" if began != v["data_rows"] else "")
        )
    if last:
        typer.echo(f"last trial: {last:%Y-%m-%d %H:%M:%S}")
    backends = found.backends
    if backends:
        typer.echo("backend: " + ", ".join(f"{name} ({n} trials)" for name, n in backends.items()))
    if picked.versioned:
        typer.echo(f"versions of study {picked.base!r} (* shown):")
        for v in picked.chain:
            mark = "*" if v is picked.shown else " "
            typer.echo(f"  {mark} {_version_brief(v)}")
    if front is not None:
        for line in front.lines(top=top):
            typer.echo(line)
        return
    for line in results_table(study, top=top, origins=True, found=found):
        typer.echo(line)


@app.command()
def best(
    study_name: Annotated[
        str,
        typer.Argument(
            metavar="STUDY", help="study name (its current version) or a version's, NAME@vN"
        ),
    ],
    storage: StorageOption = "sqlite:///optuna.db",
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    version: VersionOption = None,
) -> None:
    """Print the best trial of a study's version (the current one unless told): value,
    hyperparameters, size, its MLflow run, and the version it came from if carried."""
    try:
        # The versions' trial counts read every trial: only --json prints them.
        picked = _pick(study_name, storage, version, counts=as_json)
    except ConfigError as e:
        raise _fail(e) from None
    study = picked.study
    found = _best(study)
    if found is None:
        which = f" ({picked.header()})" if picked.versioned else ""
        typer.echo(f"study {study.study_name!r}{which} has no complete trial yet", err=True)
        raise typer.Exit(1)
    front = _front(study)
    if as_json:
        shown = {**found, "study": study.study_name, **picked.json()}
        if front is not None:
            shown["front"] = _front_json(front)
        typer.echo(json.dumps(shown, indent=2, default=str))
        return
    if picked.versioned:
        typer.echo(picked.header())
    origin = f" ({found['carried']})" if found.get("carried") else ""
    if front is not None:  # several objectives: the front, then its most accurate trial
        for line in front.lines():
            typer.echo(line)
        values = ", ".join(f"{k} {v:.6g}" for k, v in found["values"].items())
        typer.echo(
            f"best {front.objectives[0].metric} on the front: trial {found['number']}: "
            f"{values}{origin} (the job's model follows its selection rule: the parent run's "
            "selection.json)"
        )
    else:
        typer.echo(f"trial {found['number']}: value {found['value']:.6g}{origin}")
    for key, value in found["params"].items():
        typer.echo(f"  {key:<20} {value}")
    from tuning.records import FIGURES

    for key in FIGURES:
        if found.get(key) is not None:
            typer.echo(f"  {key:<20} {found[key]}")


@app.command()
def status(
    storage: StorageOption = "sqlite:///optuna.db",
    tracking_uri: Annotated[
        str | None,
        typer.Option("--tracking-uri", help="MLflow store, for champion versions"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """List the studies in a storage: trials by state, best value, last trial, champion; a
    study with several versions once, as its current version, with a line per version."""
    from tuning.config import redact
    from tuning.storage import reading_storage, study_names

    try:
        store = reading_storage(storage)
        names = study_names(store, storage)
    except ConfigError as e:
        raise _fail(e) from None
    champions = _champions(tracking_uri)
    rows = _status_rows(names, store, champions) if store is not None else []
    if as_json:
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        typer.echo(f"no study in {redact(storage)} yet")
    for r in rows:
        states = ", ".join(
            f"{n} {k}"
            + (
                f" ({', '.join(f'{w}: {m}' for w, m in r['running'].items())})"
                if k == "running" and r["running"]
                else ""
            )
            for k, n in sorted(r["states"].items())
        )
        best = (
            f"best {r['best_value']:.4f} (#{r['best_trial']})"
            if r["best_trial"] is not None
            else "no best yet"
        )
        champ = f", champion {r['champion']}" if r["champion"] else ""
        last_at = r["last_trial_at"]
        which = ""
        if len(r["versions"]) > 1:
            which = f" version {r['version']} of {len(r['versions'])} ({r['current']!r}):"
        elif r.get("unlinked"):
            which = (
                f" (a version of {r['unlinked']!r} no other links to: a job died making it, "
                f"the next job of {r['unlinked']!r} removes it)"
            )
        typer.echo(
            f"{r['study']}:{which} {r['trials']} trials ({states}); {best}; last {last_at}{champ}"
        )
        if len(r["versions"]) > 1:
            for v in r["versions"]:
                typer.echo(f"    {_version_brief(v)}")


def _status_rows(
    names: list[str], store: optuna.storages.BaseStorage, champions: dict[str, str]
) -> list[dict[str, Any]]:
    """The rows of `tuning status`: a study once, under its name, with its versions (the row's
    figures are its current version's). Every read goes through ``store``, whose cache reads
    each finished trial once."""
    from tuning.lineage import base_of
    from tuning.report import version_summaries

    by_name = dict.fromkeys(names)
    chains: dict[str, list[dict[str, Any]]] = {}
    linked: set[str] = set()
    for name in by_name:
        if base_of(name)[0] == name:
            chains[name] = version_summaries(store, name)
            linked.update(v["study"] for v in chains[name])
    rows = []
    for name in by_name:
        if name in chains:
            # A version made since the studies were listed waits for the next `status`.
            chain = [v for v in chains[name] if v["study"] in by_name]
            for v in chain:
                v["champion"] = champions.get(v["study"])
            current: str = chain[-1]["study"] if chain else name
            row = _status_row(current, store, champions)
            row["champion"] = next(
                (v["champion"] for v in reversed(chain) if v["champion"]), row["champion"]
            )
            row.update(study=name, current=current, version=chain[-1]["version"] if chain else 1)
            row["versions"] = chain
            rows.append(row)
        elif name not in linked:  # a version no other links to (a job died making it)
            row = _status_row(name, store, champions)
            base, number = base_of(name)
            row.update(current=name, version=number, versions=[], unlinked=base)
            rows.append(row)
    return rows


def _status_row(
    name: str, store: optuna.storages.BaseStorage, champions: dict[str, str]
) -> dict[str, Any]:
    """One study's line of `tuning status`, as data."""
    import optuna

    from tuning.digest import digest, top_trials
    from tuning.objective import Objective
    from tuning.report import best_feasible, running_liveness

    study = optuna.load_study(study_name=name, storage=store)
    study_id = store.get_study_id_from_name(name)
    found = digest(store, study_id)  # SQL aggregates on a database: no trial read
    top = None
    if len(study.directions) > 1 or found.constrained:  # objectives, limits: every trial
        top = best_feasible(study.get_trials(deepcopy=False), study.directions)
    else:  # the first best of the complete trials
        best = top_trials(store, study_id, found, Objective.of_study(study), 1, complete_only=True)
        top = best[0] if best else None
    last = found.last
    return {
        "study": name,
        "trials": found.trials,
        "states": {k: n for k, n in found.states.items() if n},
        "running": {k: n for k, n in running_liveness(found.running).items() if n},
        "best_value": top.values[0] if top and top.values else None,
        "best_trial": top.number if top else None,
        "last_trial_at": last.isoformat(timespec="seconds") if last else None,
        "champion": champions.get(name),
    }


def _champions(tracking_uri: str | None) -> dict[str, str]:
    """Study name -> 'MODEL vN' of registered models whose @champion came from that study:
    from a SQLite store's tables or a server's REST API, else through MLflow (seconds to
    import: only then)."""
    from tuning.registry import resolve_tracking_uri, server_champions, sqlite_champions

    uri = resolve_tracking_uri(tracking_uri)
    found = sqlite_champions(uri)
    if found is None:
        found = server_champions(uri)
    if found is not None:
        return found
    from tuning.tracking import champions_by_study

    return champions_by_study(uri)


@app.command()
def compare(
    targets: Annotated[
        list[str],
        typer.Argument(metavar="STUDY_OR_EXPERIMENT...", help="study names or experiment files"),
    ],
    storage: StorageOption = "sqlite:///optuna.db",
    tracking_uri: Annotated[
        str | None, typer.Option("--tracking-uri", help="MLflow store (test scores, logging)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    log: Annotated[
        bool, typer.Option("--log/--no-log", help="record the table and plot as an MLflow run")
    ] = True,
) -> None:
    """Compare studies: trials, best and test scores, how fast each got near its best, size.

    A study name or an experiment file means the study's current version; ``NAME@vN`` names
    one version."""
    from tuning import pareto
    from tuning.config import load_experiment
    from tuning.report import compare_studies
    from tuning.tracking import resolve_tracking_uri, store_exists

    picked: list[_Picked] = []
    metric = "value"
    try:
        for target in targets:
            if target.endswith((".yaml", ".yml")):
                exp = load_experiment(target, overrides=_storage_from_env())
                picked.append(_pick(exp.study_base, exp.study.storage))
                metric = exp.objective.metric
                tracking_uri = tracking_uri or exp.tracking.uri
            else:
                picked.append(_pick(target, storage))
    except ConfigError as e:
        raise _fail(e) from None
    studies = [p.study for p in picked]
    uri = resolve_tracking_uri(tracking_uri)
    have_store = store_exists(uri)
    scores = _test_scores(uri, studies) if have_store else {}
    if any(pareto.is_multi(s) for s in studies):  # fronts: sizes, bests, hypervolumes
        _compare_fronts(picked, scores, uri=uri, as_json=as_json, log=log and have_store)
        return
    rows = compare_studies(studies, test_scores=scores)
    for row, p in zip(rows, picked, strict=True):
        row.update({k: v for k, v in p.json().items() if k != "versions"})
        row["versions"] = len(p.chain) or 1
    if as_json:
        typer.echo(json.dumps(rows, indent=2, default=str))
    else:
        for line in _compare_lines(rows, metric):
            typer.echo(line)
        said = set()
        for p in picked:
            name = p.study.study_name
            if p.versioned and p.shown and name not in said:
                said.add(name)
                current = p.chain[-1]["study"]
                which = "the current one" if current == name else f"current: {current!r}"
                typer.echo(
                    f"{name}: version {p.shown['version']} of {len(p.chain)} of study "
                    f"{p.base!r} ({which})"
                )
    if log and have_store:
        run_id = _log_compare(uri, studies, rows, metric)
        if not as_json:
            typer.echo(f"logged to MLflow run {run_id} (compare.csv, compare.md, best_so_far.png)")


def _compare_fronts(
    picked: list[_Picked], scores: dict[str, float | None], *, uri: str, as_json: bool, log: bool
) -> None:
    """``tuning compare`` of multi-objective studies: per study its trials, feasible trials,
    front size, each objective's best feasible value, its best primary trial, test score and the
    hypervolume of its front on one shared reference point; logged like the other compare."""
    from tuning import pareto
    from tuning.report import compare_fronts

    studies = [p.study for p in picked]
    single = [s.study_name for s in studies if not pareto.is_multi(s)]
    if single:
        raise _fail(
            ConfigError(
                f"{', '.join(map(repr, single))} optimize one objective, the others several: "
                "their fronts do not compare",
                source="STUDY",
                fix="compare studies with the same objectives",
            )
        )
    try:
        rows = compare_fronts(studies, test_scores=scores)
    except ValueError as e:
        raise _fail(
            ConfigError(str(e), source="STUDY", fix="compare studies with the same objectives")
        ) from None
    for row, p in zip(rows, picked, strict=True):
        row.update({k: v for k, v in p.json().items() if k != "versions"})
        row["versions"] = len(p.chain) or 1
    objectives = pareto.objectives_of(studies[0])
    lines = _front_compare_lines(rows, objectives)
    if as_json:
        typer.echo(json.dumps(rows, indent=2, default=str))
    else:
        for line in lines:
            typer.echo(line)
    if log:
        import pandas as pd

        from tuning.tracking import log_comparison

        with tempfile.TemporaryDirectory() as tmp:
            csv = Path(tmp) / "compare.csv"
            pd.DataFrame(rows).to_csv(csv, index=False)
            md = Path(tmp) / "compare.md"
            md.write_text("\n".join(lines) + "\n")
            plot = pareto.fronts_plot(
                {s.study_name: pareto.Front.of(s) for s in studies}, path=Path(tmp) / "fronts.png"
            )
            numbers = {
                f"{key}.{_metric_key(str(r['study']))}": float(r[key])  # type: ignore[arg-type]
                for r in rows
                for key in ("hypervolume", "front_size", "test_score")
                if r.get(key) is not None
            }
            run_id = log_comparison(
                uri,
                studies=[s.study_name for s in studies],
                files=[csv, md, plot],
                metrics=numbers,
            )
        if not as_json:
            typer.echo(f"logged to MLflow run {run_id} (compare.csv, compare.md, fronts.png)")


def _front_compare_lines(
    rows: list[dict[str, Any]], objectives: tuple[Objective, ...]
) -> list[str]:
    def fmt(v: object) -> str:
        return "n/a" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)

    bests = [f"best {o.metric}" for o in objectives]
    head = (
        f"{'study':<24} {'complete/pruned/failed':>22} {'feasible':>8} {'front':>5} "
        + " ".join(f"{b:>18}" for b in bests)
        + f" {'top':>6} {'test':>8} {'hypervolume':>12}"
    )
    lines = [head]
    for r in rows:
        cpf = f"{r['complete']}/{r['pruned']}/{r['fail']}"
        values = " ".join(f"{fmt(r.get('best_' + o.metric)):>18}" for o in objectives)
        lines.append(
            f"{r['study']:<24} {cpf:>22} {r['feasible']:>8} {r['front_size']:>5} {values} "
            f"{fmt(r.get('best_primary_trial')):>6} {fmt(r.get('test_score')):>8} "
            f"{fmt(r.get('hypervolume')):>12}"
        )
    reference = rows[0].get("reference") if rows else None
    if reference:
        at = ", ".join(f"{o.metric} {v:.4g}" for o, v in zip(objectives, reference, strict=True))
        lines.append(f"hypervolume: the area each front dominates up to one reference ({at})")
    return lines


def _test_scores(uri: str, studies: list[optuna.Study]) -> dict[str, float | None]:
    """Study -> the test score of its best trial's model; a best trial copied from an earlier
    version of the study has its score where it was trained (same data, same model)."""
    from tuning.lineage import CARRIED_FROM
    from tuning.tracking import find_test_scores

    scores: dict[str, float | None] = {}
    for study in studies:
        found = _best(study)
        if found is None:
            continue
        name = study.study_name
        scores.update(find_test_scores(uri, {name: found["number"]}))
        source, _, number = str(found.get(CARRIED_FROM) or "").rpartition("#")
        if scores.get(name) is None and source and number.isdigit():
            if str(found.get("carried", "")).startswith("copied"):
                scores[name] = find_test_scores(uri, {source: int(number)}).get(source)
    return scores


def _metric_key(study: str) -> str:
    """A study name as MLflow allows it in a metric's name (``quick@v2`` -> ``quick_v2``)."""
    return re.sub(r"[^\w\-. :/]", "_", study)


def _log_compare(
    uri: str, studies: list[optuna.Study], rows: list[dict[str, Any]], metric: str
) -> str:
    """Record a comparison as an MLflow run: its table, its text and its plot; the run id."""
    import pandas as pd

    from tuning.report import best_so_far_plot
    from tuning.tracking import log_comparison

    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "compare.csv"
        pd.DataFrame(rows).to_csv(csv, index=False)
        md = Path(tmp) / "compare.md"
        md.write_text("\n".join(_compare_lines(rows, metric)) + "\n")
        plot = best_so_far_plot(studies, metric=metric, path=Path(tmp) / "best_so_far.png")
        numbers = {
            f"{key}.{_metric_key(r['study'])}": float(r[key])
            for r in rows
            for key in ("best_value", "test_score", "seconds_to_within", "best_n_params")
            if r.get(key) is not None
        }
        return log_comparison(
            uri, studies=[s.study_name for s in studies], files=[csv, md, plot], metrics=numbers
        )


def _compare_lines(rows: list[dict[str, Any]], metric: str) -> list[str]:
    def fmt(v: object, spec: str) -> str:
        return format(v, spec) if isinstance(v, (int, float)) else "n/a"

    head = (
        f"{'study':<24} {'complete/pruned/failed':>22} {'best ' + metric:>18} {'test':>8} "
        f"{'trials to 0.5%':>14} {'seconds to 0.5%':>15} {'params':>9} {'epochs':>6}"
    )
    lines = [head]
    for r in rows:
        cpf = f"{r['complete']}/{r['pruned']}/{r['fail']}"
        if r.get("not_learning"):
            cpf += f" ({r['not_learning']} nl)"  # not learning: apart from the pruned
        lines.append(
            f"{r['study']:<24} {cpf:>22} {fmt(r.get('best_value'), '.4f'):>18} "
            f"{fmt(r.get('test_score'), '.4f'):>8} {fmt(r.get('trials_to_within'), 'd'):>14} "
            f"{fmt(r.get('seconds_to_within'), '.0f'):>15} {fmt(r.get('best_n_params'), ',d'):>9} "
            f"{fmt(r.get('best_epochs'), 'd'):>6}"
        )
    return lines


def _best(study: optuna.Study) -> dict[str, Any] | None:
    from tuning import pareto, records

    values: dict[str, float] = {}
    if pareto.is_multi(study):  # the front's best primary value (best feasible primary)
        objectives = pareto.objectives_of(study)
        found = pareto.best_primary(study.get_trials(deepcopy=False), objectives)
        if found is None:
            return None
        trial = found
        values = {o.metric: v for o, v in zip(objectives, trial.values, strict=True)}
    else:
        try:
            trial = study.best_trial
        except ValueError:
            return None
    from tuning.lineage import CARRIED_FROM
    from tuning.report import carried_note, primary

    return {
        "number": trial.number,
        "value": primary(trial),
        **({"values": values, "feasible": True} if values else {}),
        "params": records.params(trial),
        **records.figures(trial),
        CARRIED_FROM: trial.user_attrs.get(CARRIED_FROM),
        "carried": carried_note(trial),
    }


def _front(study: optuna.Study) -> pareto.Front | None:
    """A multi-objective study's front (``None``: one objective, shown as it always was)."""
    from tuning import pareto

    return pareto.Front.of(study) if pareto.is_multi(study) else None


def _directions(study: optuna.Study, front: pareto.Front | None) -> dict[str, Any]:
    """``direction`` for one objective; ``objectives`` and ``limits`` for several."""
    if front is None:
        return {"direction": study.direction.name.lower()}
    return {
        "objectives": [{"metric": o.metric, "direction": o.direction} for o in front.objectives],
        "limits": front.limits,
    }


def _directions_text(study: optuna.Study, front: pareto.Front | None) -> str:
    if front is None:
        return study.direction.name.lower()
    return ", ".join(f"{o.direction} {o.metric}" for o in front.objectives)


def _front_json(front: pareto.Front) -> dict[str, Any]:
    return {
        "trials": front.front,
        "best_primary": front.best_primary,
        "feasible": front.feasible,
        "best_feasible": front.best_feasible(),
        "rows": [r for r in front.rows if r["on_front"]],
    }


@app.command()
def prepare(
    experiment: Annotated[Path, typer.Argument(help="experiment YAML file")],
    storage: RunStorageOption = None,
    tracking_uri: TrackingOption = None,
    set_: SetOption = None,
) -> None:
    """Create a study's stores before its workers start, and run no trial: validate the
    experiment and its data, create the study storage's tables, the study's current version and
    the MLflow experiment. Safe to run again, and by several processes at once (the stores'
    locks). The study storage: --storage (or --set study.storage=), else $TUNING_STORAGE, else
    the experiment file's; the MLflow store: --tracking-uri, else the file's, else
    $MLFLOW_TRACKING_URI."""
    from tuning.config import load_experiment, parse_set, redact
    from tuning.job import prepare_stores, validate_job

    _hush_libraries()
    said: list[str] = []
    try:
        overrides = [parse_set(item) for item in set_ or []]
        options = {"study.storage": storage or None, "tracking.uri": tracking_uri or None}
        overrides += [(key, value) for key, value in options.items() if value is not None]
        exp = load_experiment(experiment, overrides=[*_storage_from_env(), *overrides])
        data, uri = validate_job(exp)
        prepare_stores(exp, data, uri, say=said.append)
    except ConfigError as e:
        raise _fail(e) from None
    mlflow = f"MLflow experiment {exp.mlflow_experiment!r} in {redact(uri)}"
    if exp.study.engine == "optuna":
        stores = f"study {exp.study_name!r} in {redact(exp.study.storage)} and {mlflow}"
    else:
        stores = f"{mlflow} (KerasTuner's project is made by the study's first job)"
    line = f"prepared {stores}" + (f": {'; '.join(said)}" if said else "")
    typer.echo(" ".join(line.split()))  # one line, whatever the version's lines hold


def main() -> None:
    """Console-script entry point."""
    from tuning.backend import prepare_environment

    prepare_environment()
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
