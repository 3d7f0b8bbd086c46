"""Whether a recorded process lives: its pid, its start time (pids are reused), its host."""

from __future__ import annotations

import subprocess
import sys

from tuning.process import identity, is_dead


def test_this_process_lives() -> None:
    assert is_dead(identity()) is False


def test_a_finished_process_is_dead() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert is_dead({**identity(), "pid": str(proc.pid)}) is True


def test_a_reused_pid_is_dead() -> None:
    # Our pid, but a process that started at another time: not the process recorded.
    me = identity()
    assert me["process_start"], "needs /proc"
    assert is_dead({**me, "process_start": str(int(me["process_start"]) - 1)}) is True


def test_another_host_or_nothing_recorded_is_unknown() -> None:
    assert is_dead({**identity(), "host": "some-other-host"}) is None
    assert is_dead({}) is None
