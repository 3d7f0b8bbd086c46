"""Several machines on one study, simulated honestly with Linux namespaces on this host.

Each "machine" is what ``benchmarks/machines.py`` makes (and removes again): its own host name
(UTS namespace), its own pid namespace with its own ``/proc`` (the worker is pid 1 there, as in
a container, so pids coincide between machines) and its own network namespace, joined to the
host by a veth pair this test creates (host side ``10.200.X.1/30``). PostgreSQL and an
``mlflow server`` run on the host side, listening on the veth host addresses; each machine runs
``tuning worker`` (through ``benchmarks/synthetic_worker.py``: about 1 s a trial) and reaches
both only over its veth. Skipped where namespaces cannot be made (not root, ``unshare``
refused), except under CI, where that fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
from conftest import ROOT, in_ci

from tuning.process import identity, is_dead

sys.path.insert(0, str(ROOT / "benchmarks"))

import machines  # noqa: E402  (benchmarks/machines.py: the namespaces and servers)

HEARTBEAT = 3  # seconds; Optuna fails a trial silent for 2x this (the grace)
CUT_BOUND = 240  # seconds a worker cut off the network may take to give up


def _need_namespaces() -> None:
    reason = machines.namespaces_unavailable()
    if reason is None:
        return
    if in_ci():
        pytest.fail(f"machines cannot be simulated here: {reason} (CI must allow it)")
    pytest.skip(f"machines cannot be simulated here: {reason}")


# --- the identity, without servers -------------------------------------------------------------


def test_another_boot_or_pid_namespace_is_unknown() -> None:
    me = identity()
    assert me["boot_id"] and me["pid_ns"].startswith("pid:["), me
    assert is_dead(me) is False
    # Same host name and pid, but another kernel or another pid namespace: cannot tell from here.
    assert is_dead({**me, "boot_id": "0" * 36}) is None
    assert is_dead({**me, "pid_ns": "pid:[1]"}) is None
    assert is_dead({**me, "pid": "999999999", "pid_ns": "pid:[1]"}) is None


def test_records_without_boot_or_namespace_are_judged_as_before() -> None:
    me = identity()
    old = {key: me[key] for key in ("host", "pid", "process_start")}
    assert is_dead(old) is False
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    assert is_dead({**old, "pid": str(finished.pid)}) is True
    assert is_dead({**old, "process_start": str(int(me["process_start"]) - 1)}) is True


_PROBE = """
import json, subprocess, sys
from tuning.process import identity, is_dead
host = json.loads(sys.argv[1])
gone = subprocess.Popen([sys.executable, "-c", "pass"]); gone.wait()
print(json.dumps({
    "me": identity(),
    "host_record": is_dead(host),
    "host_record_old_style": is_dead({k: host[k] for k in ("host", "pid", "process_start")}),
    "gone_here": is_dead({**identity(), "pid": str(gone.pid)}),
}))
"""


def test_a_process_in_another_pid_namespace_is_never_taken_for_dead() -> None:
    """A 'container' with this host's name and its own pid namespace: neither side judges the
    other's pids; inside, its own dead processes are still found at once."""
    _need_namespaces()
    here = identity()
    proc = subprocess.run(
        ["unshare", "--uts", "--pid", "--fork", "--mount-proc", "--",
         sys.executable, "-c", _PROBE, json.dumps(here)],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout)
    inside = seen["me"]
    assert inside["host"] == here["host"] and inside["boot_id"] == here["boot_id"]
    assert inside["pid"] == "1" and inside["pid_ns"] != here["pid_ns"]
    # From the host: pid 1 exists here too (the host's init), started at another time. Judged by
    # host name and pid alone (an old record) it would be dead; it is unknown.
    assert is_dead({k: inside[k] for k in ("host", "pid", "process_start")}) is True
    assert is_dead(inside) is None
    # From inside: the host's pytest pid does not exist there.
    assert seen["host_record_old_style"] is True
    assert seen["host_record"] is None
    assert seen["gone_here"] is True  # its own namespace: known at once


def test_close_dead_jobs_of_other_machines_only_after_their_heartbeat_failed(
    workdir: Path,
) -> None:
    """Parent runs of jobs elsewhere (another pid namespace) are ended only where Optuna's
    heartbeat failed their trial (its run ended by close_orphans) and nothing ran after it."""
    from tuning.tracking import Tracker

    tracker = Tracker(uri=f"sqlite:///{workdir / 'mlflow.db'}", experiment="e", study="s")
    client = tracker.client
    elsewhere = {**identity(), "pid_ns": "pid:[1]", "pid": "1"}

    def job(name: str) -> str:
        tags = {"study": "s", "tuning.role": "job", **elsewhere}
        return client.create_run(tracker.experiment_id, run_name=name, tags=tags).info.run_id

    def trial(parent: str, number: int, status: str | None, state: str = "running") -> None:
        tags = {"mlflow.parentRunId": parent, "study": "s", "trial_number": str(number),
                "tuning.role": "trial", "state": state}  # fmt: skip
        run = client.create_run(tracker.experiment_id, run_name=f"t{number}", tags=tags)
        if status is not None:
            client.set_terminated(run.info.run_id, status=status)

    stalled, working, carried_on = job("stalled"), job("working"), job("carried-on")
    trial(stalled, 0, "FINISHED", "complete")
    trial(stalled, 1, None)  # in flight when its machine died
    trial(working, 2, None)  # in flight, its machine alive
    trial(carried_on, 3, None)  # failed by heartbeat while its job was cut off...
    time.sleep(0.01)
    trial(carried_on, 5, "FINISHED", "complete")  # ...which then came back and carried on
    # Optuna failed trials 1 and 3 by heartbeat; the sweep ends their runs, then the jobs'.
    assert tracker.close_orphans({0: "COMPLETE", 1: "FAIL", 3: "FAIL", 5: "COMPLETE"}) == 2
    assert tracker.close_dead_jobs() == 1
    status = {r.info.run_name: r for r in client.search_runs([tracker.experiment_id])}
    assert status["stalled"].info.status == "KILLED"
    assert "heartbeat failed its trial 1" in status["stalled"].data.tags["reason"]
    assert status["working"].info.status == "RUNNING"
    assert status["carried-on"].info.status == "RUNNING"


def test_a_run_that_ended_before_optuna_heard_its_result_is_set_killed(workdir: Path) -> None:
    """A job ends trial 4's run FINISHED, then loses the study storage before Optuna hears the
    result; the heartbeat fails the trial. The sweep makes its run say so (KILLED, failed), and
    then ends the job's parent run: both stores tell one story."""
    from tuning.tracking import Tracker

    tracker = Tracker(uri=f"sqlite:///{workdir / 'mlflow.db'}", experiment="e", study="s")
    client = tracker.client
    elsewhere = {**identity(), "pid_ns": "pid:[1]", "pid": "1"}
    tags = {"study": "s", "tuning.role": "job", **elsewhere}
    parent = client.create_run(tracker.experiment_id, run_name="cut", tags=tags).info.run_id
    runs = {}
    for number in (3, 4):
        tags = {"mlflow.parentRunId": parent, "study": "s", "trial_number": str(number),
                "tuning.role": "trial", "state": "complete"}  # fmt: skip
        runs[number] = client.create_run(tracker.experiment_id, tags=tags).info.run_id
        client.set_terminated(runs[number], status="FINISHED", end_time=1000 + number)
    dead = {3: "COMPLETE", 4: "FAIL"}
    assert tracker.close_orphans(dead, finished_but_failed=[4]) == 1
    four, three = client.get_run(runs[4]), client.get_run(runs[3])
    assert (four.info.status, four.data.tags["state"]) == ("KILLED", "failed")
    assert "never got the result" in four.data.tags["reason"] and four.info.end_time == 1004
    assert (three.info.status, three.data.tags["state"]) == ("FINISHED", "complete")
    assert tracker.close_dead_jobs() == 1
    assert "heartbeat failed its trial 4" in client.get_run(parent).data.tags["reason"]
    assert tracker.close_orphans(dead, finished_but_failed=[4]) == 0  # once only


def _gives_up_on_a_lost_storage() -> bool:
    """Whether this tree bounds the study storage's connections and reports their loss in one
    line (``tuning.errors.StorageLost``): until it does, the cut-off check is an expected
    failure, with its reason."""
    import tuning.errors

    return hasattr(tuning.errors, "StorageLost")


def test_machines_that_name_one_server_differently_share_its_creation_lock() -> None:
    from tuning.locks import pg_lock_key

    url = "postgresql://tuning:pw@{}:5432/studies"
    assert pg_lock_key(url.format("10.200.1.1")) == pg_lock_key(url.format("10.200.2.1"))
    assert pg_lock_key(url.format("db.internal")) == pg_lock_key(url.format("127.0.0.1"))


# --- machines with servers ----------------------------------------------------------------------


def _wait(
    what: str, ready: Callable[[], bool], *, timeout: float, alive: list[machines.Worker]
) -> float:
    """Poll ``ready`` every 0.25 s until it holds (returns the time it did, ``time.time()``);
    fail when ``timeout`` s pass or a worker in ``alive`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return time.time()
        for w in alive:
            assert w.proc.poll() is None, (what, w.name, *w.output())
        time.sleep(0.25)
    raise AssertionError(f"not within {timeout} s: {what}")


def _trials(storage: str, study: str) -> list[optuna.trial.FrozenTrial]:
    try:
        return optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)
    except KeyError:  # not created yet
        return []


def _process(t: optuna.trial.FrozenTrial) -> dict[str, Any]:
    return t.user_attrs.get("process") or {}


def _worker_args(cluster: machines.Cluster, exp: Path, db: str, k: int, n: int) -> list[str]:
    return [str(exp), "--storage", cluster.storage(db, k), "--tracking-uri",
            cluster.tracking(k), "--n-trials", str(n), "--set", "study.max_retries=1"]  # fmt: skip


def _check_stores(found: dict[str, Any]) -> None:
    """Every trial once in Optuna and once in MLflow, each run under its own job's parent."""
    assert found["optuna_duplicates"] == 0 and found["optuna_gaps"] == 0, found["states"]
    assert found["mlflow_duplicates"] == 0 and found["mlflow_missing"] == 0
    assert found["misplaced"] == 0
    for t in found["trials"]:
        assert t.user_attrs.get("mlflow_run_id"), t.number


@pytest.fixture
def cluster(tmp_path: Path):
    _need_namespaces()
    with machines.Cluster(4, tmp_path) as made:
        yield made


def _retried(
    trials: list[optuna.trial.FrozenTrial], number: int
) -> optuna.trial.FrozenTrial | None:
    """The COMPLETE trial that ran trial ``number`` again (Optuna's heartbeat retry)."""
    return next(
        (
            t
            for t in trials
            if t.system_attrs.get("failed_trial") == number
            and t.state == optuna.trial.TrialState.COMPLETE
        ),
        None,
    )


@pytest.mark.slow
def test_machines_killed_and_cut_off(cluster: machines.Cluster, tmp_path: Path) -> None:
    """Four machines on one study; two share a host name (and, being pid 1 each, their pid):
    neither takes the other's trial for dead. One machine is killed whole mid-trial, another
    cut off the network mid-trial: their trials are failed by the heartbeat and run again on a
    live machine within the grace, and a later worker ends their runs KILLED."""
    db = cluster.postgres.new_database()  # type: ignore[union-attr]
    study = "machines"
    exp = machines.write_experiment(tmp_path, study=study, trials=5, heartbeat=HEARTBEAT)
    storage = cluster.storage(db)
    # Made once from the host first, as `tuning run --workers` does: machines started in the
    # same second on a fresh database may create its tables twice (see the lock test above).
    machines.prepare_study(exp, storage, cluster.tracking())
    # Twin 0 runs one long trial (5 epochs of 25 s); twin 1 starts meanwhile, with the same host
    # name and, as pid 1 of its own namespace, the same pid. Its first act is a sweep for dead
    # trials: twin 0's trial is RUNNING before it starts and after that sweep.
    long_trial = {"TUNING_SYNTHETIC_EPOCH_S": "25"}
    twin0 = cluster.start_worker(
        0, "twin", _worker_args(cluster, exp, db, 0, 1), env=long_trial, label="twin0"
    )
    _wait(
        "twin 0 in its trial",
        lambda: any(_process(t).get("host") == "twin" for t in _trials(storage, study)),
        timeout=300,
        alive=[twin0],
    )
    long_number = next(
        t.number for t in _trials(storage, study) if _process(t).get("host") == "twin"
    )
    twin1 = cluster.start_worker(1, "twin", _worker_args(cluster, exp, db, 1, 45), label="twin1")
    killed = cluster.start_worker(2, "m-killed", _worker_args(cluster, exp, db, 2, 45))
    cut = cluster.start_worker(3, "m-cut", _worker_args(cluster, exp, db, 3, 45))
    twins = [twin0, twin1]
    _wait(
        "twin 1 opened the study (and swept it)",
        lambda: "study 'machines'" in twin1.output()[0],
        timeout=300,
        alive=[*twins, killed, cut],
    )
    first = next(t for t in _trials(storage, study) if t.number == long_number)
    assert first.state == optuna.trial.TrialState.RUNNING, first
    _wait(
        "every machine in a trial",
        lambda: len({_process(t).get("pid_ns") for t in _trials(storage, study)}) == 4,
        timeout=300,
        alive=[twin1, killed, cut],
    )
    trials = _trials(storage, study)
    twin_ids = {(p["pid_ns"], p["pid"]) for t in trials if (p := _process(t))["host"] == "twin"}
    assert len(twin_ids) == 2 and {pid for _, pid in twin_ids} == {"1"}, twin_ids

    def mid_trial(host: str, alive: list[machines.Worker]) -> int:
        """Wait until ``host`` is in a trial that reported an epoch (its MLflow run is open);
        its number."""
        found: list[int] = []

        def ready() -> bool:
            found[:] = [
                t.number
                for t in _trials(storage, study)
                if t.state == optuna.trial.TrialState.RUNNING
                and _process(t).get("host") == host
                and t.intermediate_values
            ]
            return bool(found)

        _wait(f"{host} mid-trial", ready, timeout=120, alive=alive)
        return found[0]

    victim = {"m-killed": mid_trial("m-killed", [twin1, killed, cut])}
    cluster.kill_machine(killed)  # kill -9 of its pid 1: the whole pid namespace goes
    t_kill = time.time()
    victim["m-cut"] = mid_trial("m-cut", [twin1, cut])
    cluster.cut(3)  # ip link set <its veth's host side> down
    t_cut = time.time()
    assert killed.wait(timeout=30) != 0

    # Each victim's trial is failed by Optuna's heartbeat and run again on a twin.
    _wait(
        "both victims' trials retried",
        lambda: all(_retried(_trials(storage, study), n) for n in victim.values()),
        timeout=120,
        alive=[twin1],
    )
    trials = _trials(storage, study)
    took = sorted(
        (t.datetime_complete - t.datetime_start).total_seconds()  # type: ignore[operator]
        for t in trials
        if t.state == optuna.trial.TrialState.COMPLETE
    )
    trial_s = took[len(took) // 2]
    # The grace (2 heartbeats), the twin's trial in flight when it went stale, one more, slack.
    bound = 2 * HEARTBEAT + 2 * trial_s + 5
    delays = {}
    for host, since in (("m-killed", t_kill), ("m-cut", t_cut)):
        again = _retried(trials, victim[host])
        assert again is not None and _process(again)["host"] == "twin"
        assert again.params == next(t for t in trials if t.number == victim[host]).params
        delays[host] = again.datetime_start.timestamp() - since  # type: ignore[union-attr]
    assert all(d <= bound for d in delays.values()), (delays, bound)

    for w in twins:
        assert w.wait(timeout=300) == 0, w.output()
        assert "Traceback" not in w.output()[1], w.output()[1][-3000:]

    # A later worker (the killed machine rebooted) sweeps: the dead machines' runs end KILLED.
    later = cluster.start_worker(2, "m-killed", _worker_args(cluster, exp, db, 2, 1))
    assert later.wait(timeout=300) == 0, later.output()

    found = machines.read_back(storage, cluster.tracking(), study)
    _check_stores(found)
    failed = sorted(t.number for t in found["trials"] if t.state == optuna.trial.TrialState.FAIL)
    assert failed == sorted(victim.values()), failed  # no twin's trial was taken for dead
    for t in found["trials"]:
        assert "died" not in str(t.user_attrs.get("reason", "")), (t.number, t.user_attrs)
        if _process(t).get("host") == "twin":
            assert t.state == optuna.trial.TrialState.COMPLETE, t.number
    runs = {int(r.data.tags["trial_number"]): r for r in found["children"]}
    for host, number in victim.items():
        run = runs[number]
        assert run.info.status == "KILLED" and run.data.tags["state"] == "failed", host
        parent = found["parents"][run.data.tags["mlflow.parentRunId"]]
        assert parent.info.status == "KILLED", (host, parent.data.tags)
        assert "heartbeat failed its trial" in parent.data.tags.get("reason", ""), host
    assert all(r.info.status != "RUNNING" for r in found["runs"])

    # The cut-off worker gives up within a bound, in one line.
    code: int | None = None
    with contextlib.suppress(subprocess.TimeoutExpired):
        code = cut.wait(timeout=max(CUT_BOUND - (time.time() - t_cut), 1))
    gave_up = time.time() - t_cut
    err = cut.output()[1]
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    seen = {"twins": sorted(twin_ids), "victims": victim, "retried_after_s": delays,
            "bound_s": bound, "trial_s": trial_s, "cut_exit": code,
            "cut_gave_up_after_s": round(gave_up, 1), "cut_errors": errors}  # fmt: skip
    print(json.dumps(seen))  # shown with -s: what the run saw
    one_line = code not in (None, 0) and len(errors) == 1 and "Traceback" not in err
    if not one_line and not _gives_up_on_a_lost_storage():
        pytest.xfail(
            "a worker cut off from PostgreSQL hangs in TCP retransmissions (no timeout on the "
            "study storage's connections) and then ends in tracebacks (no one-line error for a "
            f"lost study storage): exit {code} after {gave_up:.0f} s"
        )
    assert one_line, (code, err[-3000:])
