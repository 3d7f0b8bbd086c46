"""Which process runs a trial or a job, and whether it still lives: host, pid, start time.

Owns the identity a job records on its parent run and on every trial (``host``, ``pid`` and the
process's start time) and the check a later job makes with it. A process on this host is dead
when its pid is gone, or when the pid now belongs to a process that started at another time
(pids are reused); that is known at once, so a job started right after ``kill -9`` fails the
dead trial and ends its runs without waiting for a heartbeat to go stale. A process on another
host cannot be checked from here: Optuna's heartbeat covers those.

Also owns :data:`STOP`, a stop requested of this process (SIGTERM), which the trial runner
checks at every epoch end.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

__all__ = ["STOP", "Identity", "check_stop", "identity", "is_dead"]

Identity = dict[str, str]

# Set by the command line's SIGTERM handler, which also raises KeyboardInterrupt at once; this
# flag makes a job stop at the next epoch or trial end even where a library swallowed that.
STOP = threading.Event()


def check_stop() -> None:
    """Raise KeyboardInterrupt when a stop was requested (the runner calls it at each epoch
    end, the engines at each trial end)."""
    if STOP.is_set():
        raise KeyboardInterrupt("stop requested (SIGTERM)")


def _start_ticks(pid: int) -> str | None:
    """The start time of ``pid`` in clock ticks since boot (Linux ``/proc``), else ``None``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22; the command name (field 2) may hold spaces, so count after its closing ')'.
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None


def _pid_exists(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def identity() -> Identity:
    """This process: ``{"host", "pid", "process_start"}`` (start empty where unknown)."""
    pid = os.getpid()
    return {
        "host": socket.gethostname(),
        "pid": str(pid),
        "process_start": _start_ticks(pid) or "",
    }


def is_dead(recorded: dict[str, object]) -> bool | None:
    """Whether the process ``recorded`` (an :func:`identity`) is gone.

    Returns:
        ``True`` when it ran on this host and its pid is gone or now another process's;
        ``False`` when it still runs here; ``None`` when it ran on another host, or nothing
        was recorded (only a heartbeat can tell).
    """
    host, pid = recorded.get("host"), str(recorded.get("pid") or "")
    if host != socket.gethostname() or not pid.isdigit():
        return None
    if not _pid_exists(int(pid)):
        return True
    started = str(recorded.get("process_start") or "")
    now = _start_ticks(int(pid))
    return bool(started and now and started != now)
