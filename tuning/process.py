"""Which process runs a trial or a job, and whether it still lives: boot, pid namespace, pid.

Owns the identity a job records on its parent run and on every trial, and the check a later job
makes with it. A pid means something only inside one pid namespace of one running kernel: two
containers (or two machines) with the same host name both have a pid 1, 2, ... So the identity
is the kernel's boot id (``/proc/sys/kernel/random/boot_id``: new at every boot, different on
every machine), the pid namespace (``/proc/self/ns/pid``), the pid and the process's start time
(pids are reused), with the host name for people to read.

A process recorded in this boot and this pid namespace (and on this host name) is dead when its
pid is gone, or when the pid now belongs to a process that started at another time; that is
known at once, so a job started right after ``kill -9`` fails the dead trial and ends its runs
without waiting for a heartbeat to go stale. Any other process (another machine, another
container or pid namespace on this one, an earlier boot) cannot be checked from here: Optuna's
heartbeat covers those. Records from before the boot id and namespace were kept (no such
fields) are judged as they always were: by host name, pid and start time.

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

BOOT_ID = Path("/proc/sys/kernel/random/boot_id")

# Set by the command line's SIGTERM handler, which also raises KeyboardInterrupt at once; this
# flag makes a job stop at the next epoch or trial end even where a library swallowed that.
STOP = threading.Event()


def check_stop() -> None:
    """Raise KeyboardInterrupt when a stop was requested (the runner calls it at each epoch
    end, the engines at each trial end)."""
    if STOP.is_set():
        raise KeyboardInterrupt("stop requested (SIGTERM)")


def _start_ticks(pid: int | str) -> str | None:
    """The start time of ``pid`` (or ``"self"``) in clock ticks since boot, from ``/proc``;
    ``None`` where it cannot be read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22; the command name (field 2) may hold spaces, so count after its closing ')'.
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None


def _boot_id() -> str:
    """This kernel's boot id ("" where unknown: not Linux)."""
    try:
        return BOOT_ID.read_text().strip()
    except OSError:
        return ""


def _pid_namespace() -> str:
    """This process's pid namespace, as ``pid:[INODE]`` ("" where unknown)."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def _proc_is_ours() -> bool:
    """Whether ``/proc`` shows this process's pid namespace: ``/proc/PID`` then means the pid
    ``os.kill`` means. A process in a pid namespace of its own that kept the parent's ``/proc``
    (``unshare --pid --fork`` without ``--mount-proc``) sees other pids there."""
    try:
        return os.readlink("/proc/self") == str(os.getpid())
    except OSError:
        return False


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
    """This process: ``{"host", "pid", "process_start", "boot_id", "pid_ns"}`` (each empty where
    unknown)."""
    return {
        "host": socket.gethostname(),
        "pid": str(os.getpid()),
        "process_start": _start_ticks("self") or "",
        "boot_id": _boot_id(),
        "pid_ns": _pid_namespace(),
    }


def is_dead(recorded: dict[str, object]) -> bool | None:
    """Whether the process ``recorded`` (an :func:`identity`) is gone.

    Returns:
        ``True`` when it ran in this boot, this pid namespace and on this host name, and its pid
        is gone or now another process's; ``False`` when it still runs here; ``None`` when it
        ran anywhere else (another machine, container or pid namespace, an earlier boot), or
        nothing was recorded (only a heartbeat can tell).
    """
    host, pid = recorded.get("host"), str(recorded.get("pid") or "")
    if host != socket.gethostname() or not pid.isdigit():
        return None
    boot, namespace = recorded.get("boot_id"), recorded.get("pid_ns")
    if boot is not None or namespace is not None:  # absent from records before they were kept
        here = _boot_id(), _pid_namespace()
        if not all(here) or (boot, namespace) != here:
            return None
    if not _pid_exists(int(pid)):
        return True
    started = str(recorded.get("process_start") or "")
    if not started:
        return False  # an old record without a start time: as before, a live pid is taken alive
    if not _proc_is_ours():
        return None  # /proc shows another namespace's pids: the start time cannot be read
    now = _start_ticks(int(pid))
    return bool(now and started != now)
