"""Several workers on one study: N processes on this machine, each a job of its own.

Owns starting, watching and stopping worker processes for ``tuning run --workers N``. Each worker
is a plain ``tuning run`` of the same experiment and options (so it opens its own parent run
tagged with the study, and adds its own ``n_trials``); Optuna's storage hands out unique trial
numbers. On a machine with GPUs each worker sees one (``CUDA_VISIBLE_DEVICES``), round robin.

Stopping, so that every worker ends its runs (trial in flight KILLED) and none is left behind:

* Ctrl-C and SIGTERM to this process are passed on: each signal it receives becomes exactly one
  SIGTERM to every worker still running. The handler is in place before the first worker
  starts, and a signal during start-up also stops the workers not yet started (none is).
* The workers run in sessions of their own, so the terminal's Ctrl-C reaches only this process
  (which forwards it once), never the workers directly as well (a second interrupt would cut the
  first one's clean-up).
* Workers die with this process, even by ``kill -9``: each starts through :func:`worker_main`
  (``python -m tuning.workers run ...``), which watches a pipe that only this process holds
  open and, when it closes, sends its own process one SIGTERM (none if a stop is already under
  way). Linux's ``PR_SET_PDEATHSIG`` is not used: it signals once per thread of the parent that
  exits while the worker is its child, so a parent with several threads sent two or three.
* When this process's output breaks (``tuning run --workers 2 ... | head -1``) it says so in one
  line on stderr, stops the workers and exits 141 (128 + SIGPIPE); their output is still read
  (and dropped) until they end, so none blocks on a full pipe.

``$TUNING_WORKER_SCRIPT``, when set, is a Python script each worker runs instead of ``-m tuning``
(with the same arguments): benchmarks and tests use it to put a stand-in trial in every worker
(``benchmarks/synthetic_worker.py``). Users leave it unset.
"""

from __future__ import annotations

import os
import runpy
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["WORKER_SCRIPT_ENV", "run_workers", "visible_gpus", "worker_main"]

WORKER_SCRIPT_ENV = "TUNING_WORKER_SCRIPT"
LIFELINE_ENV = "TUNING_WORKER_LIFELINE"  # the file descriptor of the pipe a worker watches

EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a single job
EXIT_OUTPUT_CLOSED = 141  # 128 + SIGPIPE, as a shell reports a writer whose reader left
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def visible_gpus() -> list[str]:
    """GPU ids this process may use: $CUDA_VISIBLE_DEVICES, else what nvidia-smi lists."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in env.split(",") if g.strip() and g.strip() != "-1"]
    try:
        out = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]


def _lifeline() -> tuple[int, int] | None:
    """A pipe whose write end only this process holds: its read end, passed to every worker,
    reads end-of-file once this process is gone, however it died. ``None`` where file
    descriptors cannot be passed on (not POSIX)."""
    return os.pipe() if os.name == "posix" else None


def _watch_parent(fd: int) -> None:
    """In a worker: a thread that sends this process one SIGTERM when the parent is gone."""
    from tuning.process import STOP

    def watch() -> None:
        try:
            while os.read(fd, 1):  # the parent never writes: b"" when its end closes
                pass
        except OSError:  # not the pipe any more: nothing to tell
            return
        if not STOP.is_set():  # a stop under way gets no second interrupt
            os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="tuning-parent-watch", daemon=True).start()


def worker_main() -> None:
    """What a worker process runs (``python -m tuning.workers run ARGS``): watch the parent,
    then run ``tuning run ARGS``, or ``$TUNING_WORKER_SCRIPT run ARGS``, in this process."""
    fd = os.environ.pop(LIFELINE_ENV, None)
    if fd is not None and fd.isdigit():
        _watch_parent(int(fd))
    script = os.environ.get(WORKER_SCRIPT_ENV)
    if script:
        sys.argv = [script, *sys.argv[1:]]
        sys.path[0] = os.path.dirname(os.path.abspath(script))  # as `python SCRIPT` has it
        runpy.run_path(script, run_name="__main__")
    else:
        runpy.run_module("tuning", run_name="__main__", alter_sys=True)


def _warn(line: str) -> None:
    """One line on stderr, if stderr still works."""
    try:
        sys.stderr.write(f"{line}\n")
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
        pass


def _quiet_broken_stdout() -> None:
    """Point stdout at /dev/null if it is the broken stream, so that the lines left in its
    buffer are not flushed again at exit (Python would print an error for that)."""
    stream = sys.stdout
    try:
        stream.flush()
        return  # stdout works (or holds nothing): the broken output was elsewhere
    except (OSError, ValueError):
        pass
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, stream.fileno())
        finally:
            os.close(null)
    except (OSError, ValueError, AttributeError):
        pass


class _Workers:
    """The started workers and the stops asked of them: each stop is one SIGTERM to each."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []
        self.stops = 0  # stop requests so far (signals received, output closed)
        self.interrupted = False  # a signal asked for a stop
        self._sent: list[int] = []  # SIGTERMs sent to each worker
        # Reentrant: the signal handler runs in the main thread, which may hold it already.
        self._lock = threading.RLock()

    def add(self, proc: subprocess.Popen[str]) -> None:
        """Count ``proc`` in; it gets any stop asked while it was starting."""
        with self._lock:
            self.procs.append(proc)
            self._sent.append(0)
            self._deliver()

    def stop(self) -> None:
        """Send one SIGTERM to every worker still running; start no more."""
        with self._lock:
            self.stops += 1
            self._deliver()

    def _deliver(self) -> None:
        for i, proc in enumerate(self.procs):
            while self._sent[i] < self.stops:
                self._sent[i] += 1
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)

    def forward(self, signum: int, frame: Any) -> None:
        """The handler of SIGINT and SIGTERM in this process."""
        self.interrupted = True
        self.stop()


class _Output:
    """Where the pumps put the workers' lines, one at a time; when writing fails (a broken
    pipe, a closed terminal) it says so once on stderr, stops the workers and drops the rest."""

    def __init__(self, say: Callable[[str], None], on_closed: Callable[[], None]) -> None:
        self._say = say
        self._on_closed = on_closed
        self._lock = threading.Lock()
        self.closed = False

    def line(self, text: str) -> None:
        closed_now = False
        with self._lock:
            if self.closed:
                return
            try:
                try:
                    self._say(text)
                except UnicodeError:  # a terminal that cannot show some character
                    self._say(text.encode("ascii", "backslashreplace").decode("ascii"))
            except Exception as e:  # the output is gone: not a reason to block a worker
                self.closed = closed_now = True
                reason = e.strerror.lower() if isinstance(e, OSError) and e.strerror else e
                _warn(f"error: cannot write the workers' output ({reason}): stopping the workers")
                _quiet_broken_stdout()
        if closed_now:
            self._on_closed()


def _pump(stream: Any, prefix: str, out: _Output) -> None:
    """Read a worker's lines until it ends; never stop reading while it may write."""
    try:
        for line in iter(stream.readline, ""):
            out.line(f"{prefix}{line.rstrip()}")
    finally:
        stream.close()  # if reading failed, the worker's next write fails instead of blocking


def _install(handler: Callable[[int, Any], None]) -> dict[int, Any] | None:
    """Install ``handler`` for SIGINT and SIGTERM (not over SIG_IGN); the previous handlers,
    or ``None`` where signals cannot be handled here (not the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    previous: dict[int, Any] = {}
    try:
        for s in _STOP_SIGNALS:
            if signal.getsignal(s) is not signal.SIG_IGN:
                previous[s] = signal.signal(s, handler)
    except (ValueError, OSError):
        _restore(previous)
        return None
    return previous


def _restore(previous: dict[int, Any]) -> None:
    for s, handler in previous.items():
        signal.signal(s, handler)


def _exit_code(code: int) -> int:
    return code if code >= 0 else 128 - code  # killed by signal N: 128 + N, as a shell says


def run_workers(
    args: Sequence[str],
    *,
    n: int,
    say: Callable[[str], None] = print,
    env: Mapping[str, str] | None = None,
) -> int:
    """Run ``tuning run ARGS`` in ``n`` processes and wait for all of them.

    Call it from the main thread, so that Ctrl-C and SIGTERM are forwarded (elsewhere the
    workers stay in this process group: the terminal's Ctrl-C reaches them directly).

    Args:
        args: Arguments after ``tuning run`` (the experiment and its options, no ``--workers``).
        n: Number of worker processes.
        say: Where the workers' lines go, each prefixed with ``[worker i]``.
        env: Extra environment for every worker (what must stay off command lines: URLs).

    Returns:
        0 if every worker succeeded; 141 if this output closed (the workers were stopped); 130
        if a signal stopped the job or any worker was interrupted; else the first non-zero code.
    """
    workers = _Workers()
    out = _Output(say, on_closed=workers.stop)
    previous = _install(workers.forward)  # before anything starts: no signal is lost
    threads: list[threading.Thread] = []
    lifeline: tuple[int, int] | None = None
    try:
        gpus = visible_gpus()
        lifeline = _lifeline()
        for i in range(n):
            if workers.stops:  # stopped during start-up: start no more
                break
            child_env = {**os.environ, **(env or {}), "TUNING_WORKER": str(i)}
            if gpus:
                child_env["CUDA_VISIBLE_DEVICES"] = gpus[i % len(gpus)]
            if lifeline is not None:
                child_env[LIFELINE_ENV] = str(lifeline[0])
            proc = subprocess.Popen(
                [sys.executable, "-m", "tuning.workers", "run", *args],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",  # a stray byte must not stop the pump
                env=child_env,
                start_new_session=previous is not None,  # signals come from here only
                pass_fds=lifeline[:1] if lifeline is not None else (),
            )
            workers.add(proc)  # a signal that came during Popen reaches it now
            t = threading.Thread(target=_pump, args=(proc.stdout, f"[worker {i}] ", out))
            t.daemon = True
            t.start()
            threads.append(t)
        codes = [p.wait() for p in workers.procs]
    except BaseException:
        workers.stop()  # leave no worker behind
        for p in workers.procs:
            p.wait()
        raise
    finally:
        if previous is not None:
            _restore(previous)
        for fd in lifeline or ():
            os.close(fd)  # every worker has ended: nothing watches it any more
        for t in threads:
            t.join(timeout=5)
    if out.closed:
        return EXIT_OUTPUT_CLOSED
    if workers.interrupted:
        return EXIT_INTERRUPTED
    if all(c == 0 for c in codes):
        return 0
    if any(c == EXIT_INTERRUPTED for c in codes):
        return EXIT_INTERRUPTED
    return next(_exit_code(c) for c in codes if c != 0)


if __name__ == "__main__":
    worker_main()
