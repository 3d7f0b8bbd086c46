"""Workers that stop cleanly (`tuning run --workers N`): signals, a dead parent, a closed pipe.

The process tests start the parent (the real command line, or a script calling run_workers) in
a session of its own, and cheap workers through ``$TUNING_WORKER_SCRIPT``: a script that sleeps,
or the synthetic worker of the benchmarks (trials that sleep), each writing down in
``$SIGNAL_LOG_DIR`` which process it is and every SIGINT or SIGTERM it receives. Every wait is
bounded, and each test kills what it started.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
import pytest
from conftest import ROOT, mlflow_runs, wait_for_trials

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG and /proc are Linux's"
)

# Both worker scripts start by recording `PID.started` (holding the parent's pid) and append
# the name of each SIGINT/SIGTERM they receive to `PID.signals`.
_RECORDER = """
import os, signal, sys, time
from pathlib import Path

LOG = Path(os.environ["SIGNAL_LOG_DIR"])
PID = os.getpid()


def started():
    tmp = LOG / f"{PID}.tmp"
    tmp.write_text(str(os.getppid()))
    tmp.rename(LOG / f"{PID}.started")


def note(signum):
    with open(LOG / f"{PID}.signals", "a") as f:
        f.write(signal.Signals(signum).name + "\\n")
"""

# Sleeps up to 60 s; on SIGTERM waits 1 s more (to catch a second signal), then exits 143.
# With $CHATTY set it writes 1 kB lines without pause meanwhile.
SLEEPER = (
    _RECORDER
    + """
got = []
signal.signal(signal.SIGTERM, lambda signum, frame: (note(signum), got.append(signum)))
signal.signal(signal.SIGINT, lambda signum, frame: (note(signum), got.append(signum)))
started()
chatty = bool(os.environ.get("CHATTY"))
deadline = time.monotonic() + 60
while not got and time.monotonic() < deadline:
    if chatty:
        sys.stdout.write("x" * 1000 + "\\n")
        sys.stdout.flush()
    else:
        time.sleep(0.05)
if not got:
    sys.exit(0)
time.sleep(1)
sys.exit(143)
"""
)

# `tuning` with sleeping trials (benchmarks/synthetic_worker.py), every handler of SIGINT and
# SIGTERM wrapped to record the signal first; its workers run this script too.
SYNTHETIC = (
    _RECORDER
    + """
real_signal = signal.signal


def logged(handler):
    if getattr(handler, "records_signals", False):
        return handler

    def wrapper(signum, frame):
        note(signum)
        if handler is signal.SIG_DFL:
            real_signal(signum, signal.SIG_DFL)
            os.kill(PID, signum)
        elif callable(handler):
            return handler(signum, frame)

    wrapper.records_signals = True
    return wrapper


def recording_signal(signum, handler):
    if signum in (signal.SIGINT, signal.SIGTERM):
        handler = logged(handler)
    return real_signal(signum, handler)


signal.signal = recording_signal
for s in (signal.SIGINT, signal.SIGTERM):
    recording_signal(s, signal.getsignal(s))
started()

sys.path.insert(0, BENCHMARKS)
import synthetic_worker
import tuning.cli
from tuning.workers import WORKER_SCRIPT_ENV

tuning_main = tuning.cli.main


def main():
    os.environ[WORKER_SCRIPT_ENV] = str(Path(__file__).resolve())  # the workers record too
    tuning_main()


tuning.cli.main = main
synthetic_worker.main()
"""
)

# Calls run_workers for 4 workers and sends itself SIGTERM from inside the second worker's
# Popen, before run_workers holds that worker: a signal in the middle of start-up.
STARTUP_DRIVER = """
import json, os, signal, subprocess, sys
from pathlib import Path

from tuning import workers

out = Path(sys.argv[1])
started = []


class Spy(subprocess.Popen):
    def __init__(self, cmd, *args, **kwargs):
        super().__init__(cmd, *args, **kwargs)
        if "run" in cmd:  # a worker (not nvidia-smi)
            started.append(self)
            with open(out / "pids", "a") as f:
                f.write(f"{self.pid}\\n")
            if len(started) == 2:
                os.kill(os.getpid(), signal.SIGTERM)


subprocess.Popen = Spy
code = workers.run_workers(["x.yaml"], n=4, say=lambda line: None)
result = {"code": code, "returncodes": [p.returncode for p in started]}
(out / "result.json").write_text(json.dumps(result))
"""


def _env(log: Path, script: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "SIGNAL_LOG_DIR": str(log),
        "TUNING_WORKER_SCRIPT": str(script),
        "CUDA_VISIBLE_DEVICES": "",  # no nvidia-smi, no GPU: CPU workers
        **extra,
    }


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped by its new parent, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] not in "ZX"


def _until(
    what: str, ready: Callable[[], bool], *, timeout: float, proc: subprocess.Popen | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the parent ended ({proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.05)


def _started(log: Path, parent: int) -> list[int]:
    """The pids of the workers that ``parent`` started (as far as they recorded it)."""
    return sorted(int(p.stem) for p in log.glob("*.started") if int(p.read_text()) == parent)


def _signals(log: Path, pid: int) -> list[str]:
    path = log / f"{pid}.signals"
    return path.read_text().split() if path.exists() else []


@pytest.fixture
def log(tmp_path: Path) -> Iterator[Path]:
    """The folder the scripts record into; afterwards, whatever recorded in it is killed."""
    folder = tmp_path / "signals"
    folder.mkdir()
    yield folder
    pids = [int(p.stem) for p in folder.glob("*.started")]
    pids += (
        [int(x) for x in (folder / "pids").read_text().split()]
        if (folder / "pids").exists()
        else []
    )
    for pid in pids:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def _script(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text.replace("BENCHMARKS", repr(str(ROOT / "benchmarks"))))
    return path


def _parent(
    cmd: list[str], env: dict[str, str], cwd: Path, **kwargs: object
) -> subprocess.Popen[str]:
    """The parent in a session of its own, as a terminal's foreground job is."""
    return subprocess.Popen(cmd, cwd=cwd, env=env, text=True, start_new_session=True, **kwargs)


def _kill_session(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def test_a_signal_during_start_up_reaches_every_started_worker(tmp_path: Path, log: Path) -> None:
    """SIGTERM while the second of 4 workers starts: both started workers get exactly one
    SIGTERM, the other two are never started, and run_workers returns 130. (Before: the
    forwarder came after the last start, so the signal killed the parent and the workers
    slept on.)"""
    script = _script(tmp_path, "sleeper.py", SLEEPER)
    driver = _parent(
        [sys.executable, "-c", STARTUP_DRIVER, str(log)],
        _env(log, script),
        tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        out, _ = driver.communicate(timeout=30)
    finally:
        _kill_session(driver)
    assert driver.returncode == 0, out[-3000:]
    result = json.loads((log / "result.json").read_text())
    pids = [int(x) for x in (log / "pids").read_text().split()]
    assert len(pids) == 2, pids  # no worker started after the signal
    assert result["code"] == 130, result
    # Each ended by one SIGTERM: recorded by its handler (143), or before it had one (-15).
    assert all(code in (143, -signal.SIGTERM) for code in result["returncodes"]), result
    for pid, code in zip(pids, result["returncodes"], strict=True):
        assert _signals(log, pid) == (["SIGTERM"] if code == 143 else []), pid


def test_ctrl_c_gives_each_worker_one_signal_and_ends_its_runs_killed(
    make_experiment, workdir: Path, log: Path
) -> None:
    """Ctrl-C as a terminal sends it (SIGINT to the parent's whole process group) while both
    workers are in a trial: each worker receives exactly one signal (SIGTERM, from the
    parent), ends its trial and parent run KILLED, and the job exits 130. (Before: the workers
    shared the parent's group and got the terminal's SIGINT and the parent's SIGTERM.)"""
    exp = make_experiment(
        "ctrlc",
        study__n_trials=100,
        study__sampler={"type": "random"},
        training__max_epochs=100_000,
        training__early_stopping={"patience": 100_000},
        tracking__log_models="none",  # the stand-in model is no Keras model
    )
    script = _script(workdir, "recording_worker.py", SYNTHETIC)
    env = _env(log, script, TUNING_SYNTHETIC_EPOCH_S="0.05")
    output = workdir / "output.txt"
    with output.open("w") as sink:
        parent = _parent(
            [sys.executable, str(script), "run", str(exp), "--workers", "2"],
            env,
            workdir,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        in_trials = lambda ts: sum(bool(t.intermediate_values) for t in ts) == 2  # noqa: E731
        wait_for_trials("ctrlc", parent, in_trials, timeout=90)
        os.killpg(parent.pid, signal.SIGINT)  # what Ctrl-C does
        parent.wait(timeout=30)
    finally:
        _kill_session(parent)
    out = output.read_text()
    assert parent.returncode == 130, out[-3000:]
    workers = _started(log, parent.pid)
    assert len(workers) == 2, workers
    assert _signals(log, parent.pid) == ["SIGINT"]
    for pid in workers:
        assert _signals(log, pid) == ["SIGTERM"], (pid, out[-3000:])
    runs = mlflow_runs(workdir, "ctrlc")
    assert sorted(r.info.status for r in runs) == ["KILLED"] * 4  # 2 parent runs, 2 trials
    study = optuna.load_study(study_name="ctrlc", storage="sqlite:///optuna.db")
    assert [t.state.name for t in study.trials] == ["FAIL", "FAIL"]


def test_kill_9_of_the_parent_ends_every_worker(make_experiment, workdir: Path, log: Path) -> None:
    """`kill -9` of the parent: every worker gets exactly one SIGTERM (its watch of the
    parent's pipe sends it) and ends within a few seconds. (Before: the workers ran on,
    orphans; with PR_SET_PDEATHSIG instead, some got two SIGTERMs, one per parent thread.)"""
    exp = make_experiment("orphans")
    script = _script(workdir, "sleeper.py", SLEEPER)
    parent = _parent(
        [sys.executable, "-m", "tuning", "run", str(exp), "--workers", "2"],
        _env(log, script),
        workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _until("2 workers started", lambda: len(_started(log, parent.pid)) == 2, timeout=60,
               proc=parent)  # fmt: skip
        workers = _started(log, parent.pid)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
        _until("every worker ended", lambda: not any(map(_alive, workers)), timeout=5)
    finally:
        _kill_session(parent)
    for pid in workers:
        assert _signals(log, pid) == ["SIGTERM"], pid


def test_a_closed_output_pipe_stops_every_worker(
    make_experiment, workdir: Path, log: Path
) -> None:
    """`tuning run --workers 2 ... | head -1` with workers that write without pause: the
    parent's output closes after one line; the job ends within seconds, exit 141, one line on
    stderr, every worker stopped by one SIGTERM and none left. (Before: the pump died on the
    broken pipe, its worker blocked on a full pipe and the parent waited for ever.)"""
    exp = make_experiment("pipe")
    script = _script(workdir, "sleeper.py", SLEEPER)
    errors = workdir / "stderr.txt"
    with errors.open("w") as stderr:
        parent = _parent(
            [sys.executable, "-m", "tuning", "run", str(exp), "--workers", "2"],
            _env(log, script, CHATTY="1"),
            workdir,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
    try:
        assert parent.stdout is not None
        parent.stdout.readline()  # head -1
        _until("2 workers started", lambda: len(_started(log, parent.pid)) == 2, timeout=60,
               proc=parent)  # fmt: skip
        parent.stdout.close()  # head exits
        parent.wait(timeout=20)
        workers = _started(log, parent.pid)
        _until("every worker ended", lambda: not any(map(_alive, workers)), timeout=5)
    finally:
        _kill_session(parent)
    err = errors.read_text()
    assert parent.returncode == 141, err[-3000:]
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1] == (
        "error: cannot write the workers' output (broken pipe): stopping the workers"
    ), err[-3000:]
    assert sum("workers' output" in line for line in lines) == 1, err[-3000:]
    assert "Traceback" not in err and "Exception ignored" not in err, err[-3000:]
    for pid in workers:
        assert _signals(log, pid) == ["SIGTERM"], pid


def test_sigterm_in_database_code_stops_at_the_next_check_instead() -> None:
    """The first SIGTERM that finds the main thread inside a store's database code (here a
    frame of a module named like SQLAlchemy's) only sets STOP: an interrupt in a commit would
    leave SQLite locked and every worker of the study waiting (seen in the Ctrl-C test: both
    workers hung in their clean-up). A second one, or one anywhere else, interrupts at once."""
    from tuning.cli import _sigterm_as_interrupt
    from tuning.process import STOP, check_stop

    def signal_in(module: str) -> None:
        code = "handler(15, sys._getframe())"
        exec(code, {"__name__": module, "handler": _sigterm_as_interrupt, "sys": sys})  # noqa: S102

    STOP.clear()
    try:
        signal_in("sqlalchemy.engine.default")  # deferred: no exception
        assert STOP.is_set()
        with pytest.raises(KeyboardInterrupt):
            check_stop()  # where the trial runner stops it: the next epoch end
        with pytest.raises(KeyboardInterrupt):
            signal_in("sqlalchemy.engine.default")  # a second signal does not wait
        STOP.clear()
        with pytest.raises(KeyboardInterrupt):
            signal_in("tuning.trial")
    finally:
        STOP.clear()
