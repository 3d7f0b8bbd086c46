"""Machines benchmark: trials per hour of one study with 1, 2, 4 and 8 "machines" on this host.

A machine here is a set of Linux namespaces this script creates and removes again: its own host
name (UTS namespace), its own pid namespace (with its own ``/proc``: the worker is pid 1 there,
as in a container) and its own network namespace, joined to the host by a veth pair (host side
``10.200.X.1/30``, machine side ``10.200.X.2/30``). PostgreSQL (the Optuna storage) and an
``mlflow server`` run on the host side, listening on 127.0.0.1 and on each veth's host address;
every machine runs one worker, ``tuning worker EXP`` through ``benchmarks/synthetic_worker.py``
(trials that sleep 0.2 s per epoch, 5 epochs: about 1 s a trial, each epoch reported to Optuna
and MLflow as a real one is), and reaches both servers only over its veth. The same set-up is
what ``tests/test_machines.py`` kills machines and cuts their network in (:class:`Cluster`).

Set-up, per machine ``k`` (as root)::

    ip netns add NS_k
    ip link add H_k type veth peer name M_k
    ip link set M_k netns NS_k
    ip addr add 10.200.X.1/30 dev H_k && ip link set H_k up
    ip -n NS_k addr add 10.200.X.2/30 dev M_k && ip -n NS_k link set M_k up
    ip -n NS_k link set lo up
    ip netns exec NS_k unshare --uts --pid --fork --mount-proc --kill-child -- \\
        sh -c 'hostname NAME; exec python benchmarks/synthetic_worker.py worker EXP ...'

What it measures: every machine starts at once and adds ``--trials`` trials to one study (made
beforehand from the host: :func:`prepare_study`). *trials/h steady* counts the trials that ended
while every machine was running trials (from the last machine's first trial start to the first
machine's last trial end), *overall* every trial over the whole wall time (each machine imports
Keras and loads the data first). It then reads both stores back: Optuna numbers unique and
complete, one MLflow trial run per trial under its own machine's parent run, every run
FINISHED. Run it (as root, from the repository root; about
4 minutes on 2 cores)::

    python benchmarks/machines.py --machines 1 2 4 8 --trials 30 \\
        --out benchmarks/results/machines.json

It prints a markdown table and writes every run to ``--out`` as JSON. A benchmark, not a test:
nothing is asserted. Everything it creates (namespaces, veth pairs, servers, processes) is
removed when it ends, also on failure.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import experiment_files  # noqa: E402  (benchmarks/experiment_files.py)
from growth import SPACE  # noqa: E402  (the growth benchmark's search space)
from servers import Postgres, free_port  # noqa: E402  (throwaway servers)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORKER = HERE / "synthetic_worker.py"
PASSWORD = "machines-pw"
SUBNET = "10.200"  # machine k: 10.200.X.0/30, X picked free at set-up
LOCK = Path(tempfile.gettempdir()) / "tuning-machines.lock"


def _run(*cmd: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=timeout)


def namespaces_unavailable() -> str | None:
    """Why machines cannot be made here (not root, no ``ip``/``unshare``, namespaces refused);
    ``None`` when they can."""
    if os.geteuid() != 0:
        return "needs root (network namespaces and veth pairs)"
    for tool in ("ip", "unshare", "runuser"):
        if shutil.which(tool) is None:
            return f"needs {tool!r}"
    try:
        probe = _run(
            "unshare", "--uts", "--pid", "--fork", "--mount-proc", "--net", "--",
            "sh", "-c", "hostname probe && ip link set lo up", check=False,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError) as e:
        return f"unshare failed: {e}"
    if probe.returncode != 0:
        return f"unshare --uts --pid --mount-proc --net failed: {probe.stderr.strip()[:200]}"
    return None


# --- the network: one namespace and one veth pair per machine ------------------------------------


@dataclass
class Link:
    """Machine ``index``'s network namespace and veth pair."""

    index: int
    netns: str
    host_if: str
    machine_if: str
    octet: int  # 10.200.<octet>.0/30

    @property
    def host_ip(self) -> str:
        return f"{SUBNET}.{self.octet}.1"

    @property
    def machine_ip(self) -> str:
        return f"{SUBNET}.{self.octet}.2"


def _used_octets() -> set[int]:
    """Third octets of 10.200.X.* addresses or routes on the host already."""
    text = _run("ip", "-4", "-o", "addr", "show").stdout + _run("ip", "-4", "route").stdout
    used = set()
    for word in text.split():
        if word.startswith(f"{SUBNET}."):
            parts = word.split("/")[0].split(".")
            if len(parts) == 4 and parts[2].isdigit():
                used.add(int(parts[2]))
    return used


def make_links(n: int, tag: str) -> list[Link]:
    """Create ``n`` network namespaces, each joined to the host by a veth pair; on any failure
    what was made is removed before raising."""
    links: list[Link] = []
    with LOCK.open("w") as lock:  # two set-ups at once must not pick the same subnets
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            used = _used_octets()
            free = [x for x in range(1, 255) if x not in used][:n]
            if len(free) < n:
                raise RuntimeError(f"no {n} free /30 subnets in {SUBNET}.0.0/16")
            for k, octet in enumerate(free):
                link = Link(k, f"tuning-{tag}-{k}", f"th{tag}{k}", f"tm{tag}{k}", octet)
                links.append(link)
                _run("ip", "netns", "add", link.netns)
                _run("ip", "link", "add", link.host_if, "type", "veth",
                     "peer", "name", link.machine_if)  # fmt: skip
                _run("ip", "link", "set", link.machine_if, "netns", link.netns)
                _run("ip", "addr", "add", f"{link.host_ip}/30", "dev", link.host_if)
                _run("ip", "link", "set", link.host_if, "up")
                ns = ("ip", "-n", link.netns)
                _run(*ns, "addr", "add", f"{link.machine_ip}/30", "dev", link.machine_if)
                _run(*ns, "link", "set", link.machine_if, "up")
                _run(*ns, "link", "set", "lo", "up")
        except BaseException:
            remove_links(links)
            raise
    return links


def remove_links(links: Sequence[Link]) -> None:
    """Delete the veth pairs and namespaces (either may be gone already)."""
    for link in links:
        _run("ip", "link", "del", link.host_if, check=False)
        _run("ip", "netns", "del", link.netns, check=False)


# --- the servers on the host side ---------------------------------------------------------------


def start_postgres(addresses: Sequence[str]) -> Postgres:
    """A throwaway PostgreSQL listening on 127.0.0.1 and ``addresses`` (password auth from
    10.200.0.0/16): ``benchmarks/servers.py``'s, ``new_database`` per run."""
    return Postgres(
        password=PASSWORD,
        addresses=addresses,
        hba=f"{SUBNET}.0.0/16",
        max_connections=300,
        prefix="tuning-pg-machines-",
    )


class MlflowServer:
    """``mlflow server`` on a SQLite store in ``folder``, listening on 127.0.0.1 and on every
    address of ``addresses`` (gunicorn binds each: uvicorn takes one host only)."""

    def __init__(self, folder: Path, addresses: Sequence[str], workers: int = 4) -> None:
        self.port = free_port()
        binds = " ".join(f"-b {a}:{self.port}" for a in addresses)
        self.log = (folder / "mlflow-server.log").open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1",
             "--port", str(self.port), "--workers", str(workers),
             "--gunicorn-opts", f"{binds} --timeout 120",
             "--backend-store-uri", f"sqlite:///{folder / 'mlflow-server.db'}",
             "--artifacts-destination", str(folder / "mlartifacts")],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 120
            for address in ["127.0.0.1", *addresses]:
                while not self._healthy(address):
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"mlflow server did not start: see {self.log.name}")
                    time.sleep(0.5)
        except BaseException:
            self.stop()
            raise

    def _healthy(self, address: str) -> bool:
        try:
            with urllib.request.urlopen(self.url(address) + "/health", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def url(self, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}"

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.log.close()


# --- machines and their workers -----------------------------------------------------------------


@dataclass
class Worker:
    """One ``tuning worker`` in machine ``link``: the ``unshare`` process (host pid namespace)
    whose forked child is the worker itself, pid 1 of the machine's pid namespace."""

    name: str
    link: Link
    proc: subprocess.Popen
    stdout: Path
    stderr: Path
    started: float = field(default_factory=time.monotonic)

    def init_pid(self, timeout: float = 10) -> int:
        """The host pid of the machine's pid 1 (the worker)."""
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                pids = children.read_text().split()
                if pids:
                    return int(pids[0])
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"machine {self.name}: no pid 1 found")

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def output(self) -> tuple[str, str]:
        return self.stdout.read_text(errors="replace"), self.stderr.read_text(errors="replace")

    def stop(self) -> None:
        """SIGKILL the whole machine (its pid namespace dies with its pid 1), then ``unshare``."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=30)


class Cluster:
    """PostgreSQL and an MLflow server on the host, ``n`` machines joined to it by veth pairs.

    Use as a context manager: everything is removed at the end, also on failure.
    """

    def __init__(self, n: int, folder: Path) -> None:
        self.folder = folder
        self.tag = f"{os.getpid() % 100000}"
        self.links: list[Link] = []
        self.workers: list[Worker] = []
        self.postgres: Postgres | None = None
        self.mlflow: MlflowServer | None = None
        try:
            self.links = make_links(n, self.tag)
            addresses = [link.host_ip for link in self.links]
            self.postgres = start_postgres(addresses)
            self.mlflow = MlflowServer(folder, addresses)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def storage(self, database: str, k: int | None = None) -> str:
        """The study storage's URL as machine ``k`` reaches it (``None``: from the host)."""
        assert self.postgres is not None
        host = self.links[k].host_ip if k is not None else "127.0.0.1"
        return self.postgres.url(database, host)

    def tracking(self, k: int | None = None) -> str:
        """The MLflow server's URL as machine ``k`` reaches it (``None``: from the host)."""
        assert self.mlflow is not None
        return self.mlflow.url(self.links[k].host_ip if k is not None else "127.0.0.1")

    def start_worker(
        self, k: int, hostname: str, args: Sequence[str], *, env: dict[str, str] | None = None,
        label: str | None = None,
    ) -> Worker:  # fmt: skip
        """Run ``synthetic_worker.py worker ARGS`` as pid 1 of a fresh pid and UTS namespace
        (host name ``hostname``) inside machine ``k``'s network namespace."""
        link = self.links[k]
        label = label or f"{k}-{len(self.workers)}"
        # The storage URL (it holds a password) goes through the environment, never argv.
        args, env = list(args), dict(env or {})
        if "--storage" in args:
            i = args.index("--storage")
            env["TUNING_STORAGE"] = args[i + 1]
            del args[i : i + 2]
        out, err = self.folder / f"worker-{label}.out", self.folder / f"worker-{label}.err"
        cmd = [
            "ip", "netns", "exec", link.netns,
            "unshare", "--uts", "--pid", "--fork", "--mount-proc", "--kill-child", "--",
            "sh", "-c", 'hostname "$1" && shift && exec "$@"', "sh", hostname,
            sys.executable, str(WORKER), "worker", *args,
        ]  # fmt: skip
        base = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        base.update(
            TUNING_OFFLINE="1", TF_CPP_MIN_LOG_LEVEL="3", TUNING_WORKER=str(k),
            PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        )  # fmt: skip
        base.update(env or {})
        with out.open("w") as o, err.open("w") as e:
            proc = subprocess.Popen(
                cmd, stdout=o, stderr=e, env=base, cwd=self.folder, start_new_session=True
            )
        worker = Worker(hostname, link, proc, out, err)
        self.workers.append(worker)
        return worker

    def kill_machine(self, worker: Worker) -> None:
        """``kill -9`` the machine's pid 1: the kernel kills every process of its namespace."""
        os.kill(worker.init_pid(), signal.SIGKILL)

    def cut(self, k: int) -> None:
        """Cut machine ``k`` off: its veth's host side goes down."""
        _run("ip", "link", "set", self.links[k].host_if, "down")

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()
        if self.mlflow is not None:
            self.mlflow.stop()
        if self.postgres is not None:
            self.postgres.stop()
        remove_links(self.links)


# --- the benchmark -----------------------------------------------------------------------------


def write_experiment(folder: Path, *, study: str, trials: int, heartbeat: int = 10) -> Path:
    """The experiment every machine runs (storage and tracking come on the command line)."""
    exp = experiment_files.experiment(
        study,
        description="machines benchmark: trials that sleep, real study and tracking",
        study__storage="sqlite:///unused.db",
        study__sampler={"type": "random", "seed": 0},
        study__n_trials=trials,
        study__heartbeat_interval=heartbeat,
        training={"max_epochs": 5, "batch_size": 64, "early_stopping": {"patience": 5}},
        tracking={"uri": "sqlite:///unused-mlflow.db", "log_models": "none"},
    )
    return experiment_files.write_experiment(folder, exp, SPACE)


def read_back(storage: str, tracking: str, study: str) -> dict[str, Any]:
    """Both stores, read from the host: trials, their runs, and every check of one study."""
    import optuna
    from mlflow.tracking import MlflowClient

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trials = optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)
    client = MlflowClient(tracking)
    experiment = client.get_experiment_by_name(study)
    runs = (
        list(client.search_runs([experiment.experiment_id], max_results=5000))
        if experiment
        else []
    )
    parents = {r.info.run_id: r for r in runs if r.data.tags.get("tuning.role") == "job"}
    children = [r for r in runs if r.data.tags.get("tuning.role") == "trial"]
    numbers = [t.number for t in trials]
    run_numbers = [int(r.data.tags.get("trial_number", -1)) for r in children]
    by_id = {r.info.run_id: r for r in children}
    misplaced = 0  # a trial run not under the parent run of the job whose process ran it
    for t in trials:
        run = by_id.get(str(t.user_attrs.get("mlflow_run_id", "")))
        proc = t.user_attrs.get("process") or {}
        parent = parents.get(run.data.tags.get("mlflow.parentRunId", "")) if run else None
        if run is None or parent is None:
            continue
        keys = ("boot_id", "pid_ns", "pid", "process_start")
        if any(str(proc.get(key)) != parent.data.tags.get(key) for key in keys):
            misplaced += 1
    states: dict[str, int] = {}
    for t in trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    return {
        "trials": trials,
        "runs": runs,
        "parents": parents,
        "children": children,
        "states": states,
        "optuna_duplicates": len(numbers) - len(set(numbers)),
        "optuna_gaps": len(set(range(len(numbers))) - set(numbers)),
        "mlflow_duplicates": len(run_numbers) - len(set(run_numbers)),
        "mlflow_missing": len(set(numbers) - set(run_numbers)),
        "misplaced": misplaced,
        "not_finished": sum(1 for r in runs if r.info.status != "FINISHED"),
    }


def rates(trials: list[Any], by_job: dict[int, str], wall: float) -> dict[str, Any]:
    """Trials per hour while every machine ran trials (steady), and over the whole wall time."""
    done = [t for t in trials if t.datetime_start and t.datetime_complete and t.number in by_job]
    spans: dict[str, list[tuple[float, float]]] = {}
    for t in done:
        span = (t.datetime_start.timestamp(), t.datetime_complete.timestamp())
        spans.setdefault(by_job[t.number], []).append(span)
    first = max(min(s for s, _ in ss) for ss in spans.values())
    last = min(max(e for _, e in ss) for ss in spans.values())
    inside = sum(1 for ss in spans.values() for _, e in ss if first < e <= last)
    window = last - first
    seconds = sorted(e - s for ss in spans.values() for s, e in ss)
    return {
        "steady_window_s": window,
        "steady_trials": inside,
        "trials_per_hour": 3600 * inside / window if window > 0 else None,
        "overall_trials_per_hour": 3600 * len(done) / wall,
        "trial_seconds_median": statistics.median(seconds),
    }


def prepare_study(exp: Path, storage: str, tracking: str) -> None:
    """Create the study and the MLflow experiment once, from the host, before machines start
    (as ``tuning run --workers N`` does before its workers: :func:`tuning.job.prepare_stores`).

    Machines that reach one PostgreSQL server by different addresses do not share
    :func:`tuning.locks.store_lock` (its key holds the URL's host): started in the same second
    on a fresh database, they may create its tables twice and stop with a ``UniqueViolation``
    (seen here: 1 of 8 machines; ``tests/test_machines.py`` checks the lock's key).
    """
    from tuning.config import load_experiment
    from tuning.job import prepare_stores, validate_job

    found = load_experiment(
        exp, overrides=[("study.storage", storage), ("tracking.uri", tracking)]
    )
    data, uri = validate_job(found)
    prepare_stores(found, data, uri, say=lambda line: None)


def one_run(cluster: Cluster, n: int, trials: int) -> dict[str, Any]:
    """``n`` machines at once, each adding ``trials`` trials to a fresh study."""
    assert cluster.postgres is not None
    database = cluster.postgres.new_database("machines")
    study = f"machines{n}"
    folder = cluster.folder / study
    folder.mkdir()
    exp = write_experiment(folder, study=study, trials=trials)

    def start(k: int) -> Worker:
        args = [str(exp), "--storage", cluster.storage(database, k),
                "--tracking-uri", cluster.tracking(k)]  # fmt: skip
        return cluster.start_worker(k, f"machine-{k}", args, label=f"{study}-{k}")

    prepare_study(exp, cluster.storage(database), cluster.tracking())
    t0 = time.perf_counter()
    workers = [start(k) for k in range(n)]
    codes = [w.wait(timeout=900) for w in workers]
    wall = time.perf_counter() - t0
    found = read_back(cluster.storage(database), cluster.tracking(), study)
    by_job = {
        int(r.data.tags["trial_number"]): r.data.tags["mlflow.parentRunId"]
        for r in found["children"]
    }
    record = {
        "machines": n,
        "trials_per_machine": trials,
        "exit_codes": codes,
        "wall_s": wall,
        "cores": os.cpu_count(),
        "states": found["states"],
        "parents": len(found["parents"]),
        "tracebacks": sum("Traceback" in w.output()[1] for w in workers),
        "errors": [
            line for w in workers for line in w.output()[1].splitlines()
            if line.startswith("error:")
        ],
        **{k: found[k] for k in ("optuna_duplicates", "optuna_gaps", "mlflow_duplicates",
                                 "mlflow_missing", "misplaced", "not_finished")},
    }  # fmt: skip
    record.update(rates(found["trials"], by_job, wall))
    return record


def table(records: list[dict[str, Any]]) -> str:
    head = (
        "| machines | trials | trials/h steady | × 1 machine | trials/h overall "
        "| s/trial (median) | dup / lost / misplaced | runs not FINISHED | exit codes |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    base = next((r["trials_per_hour"] for r in records if r["machines"] == 1), None)
    for r in records:
        rate = r["trials_per_hour"]
        ratio = f"{rate / base:.2f}" if base and rate else "n/a"
        dup = r["optuna_duplicates"] + r["mlflow_duplicates"]
        lost = r["optuna_gaps"] + r["mlflow_missing"]
        lines.append(
            f"| {r['machines']} | {sum(r['states'].values())} | {rate:,.0f} | {ratio} | "
            f"{r['overall_trials_per_hour']:,.0f} | {r['trial_seconds_median']:.2f} | "
            f"{dup} / {lost} / {r['misplaced']} | {r['not_finished']} | "
            f"{','.join(map(str, r['exit_codes']))} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--machines", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--trials", type=int, default=30, help="trials each machine adds")
    ap.add_argument("--out", type=Path, default=None, help="write every run here as JSON")
    ap.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="keep the workers' output here (default: a temporary folder, removed)",
    )
    args = ap.parse_args(argv)
    reason = namespaces_unavailable()
    if reason is not None:
        print(f"error: machines cannot be simulated here: {reason}", file=sys.stderr)
        return 2
    records = []
    with contextlib.ExitStack() as stack:
        if args.workdir is None:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="tuning-machines-"))
            args.workdir = Path(tmp)
        args.workdir.mkdir(parents=True, exist_ok=True)
        with Cluster(max(args.machines), args.workdir) as cluster:
            for n in args.machines:
                record = one_run(cluster, n, args.trials)
                print(json.dumps(record), flush=True)
                records.append(record)
    print(table(records))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(records, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
