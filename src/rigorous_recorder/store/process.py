"""Is a run's process alive? The pid check on this host, the heartbeat from anywhere.

A running run records the host, pid and process start time of its writer, and its flusher
touches the run's heartbeat file every flush interval. A reader on the same host asks the
operating system (through psutil) whether that very process (same pid, same start time)
still runs; a reader on another host, which cannot see the process, trusts the heartbeat
while it is younger than the collection's ``heartbeat_timeout``.
"""

from __future__ import annotations

import os
from typing import Any

#: Seconds without a heartbeat after which a run of another host counts as crashed. The
#: writer touches the heartbeat every flush interval (1 s by default), so this leaves room for
#: slow shared filesystems and clocks that differ between hosts by less than a minute.
HEARTBEAT_TIMEOUT = 60.0


def this_host() -> str:
    """The name of this host, as a run records its writer's."""
    import socket  # here: a process that reads only finished runs never asks

    return socket.gethostname()


def this_process() -> dict[str, Any]:
    """The identity of the current process, as a run records its writer's."""
    import psutil  # a fifth of a second to import: only checks of liveness need it

    pid = os.getpid()
    return {"pid": pid, "pid_start": psutil.Process(pid).create_time(), "host": this_host()}


def process_alive(info: dict[str, Any]) -> bool | None:
    """Whether the writer of ``info`` still runs; None when it is on another host."""
    if info.get("host") != this_host():
        return None
    import psutil

    try:
        process = psutil.Process(info["pid"])
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        started = process.create_time()
    except (psutil.NoSuchProcess, KeyError, TypeError, ValueError):
        return False
    except psutil.AccessDenied:
        return True
    recorded = info.get("pid_start")
    return not isinstance(recorded, (int, float)) or abs(started - recorded) < 1.0


def run_alive(info: dict[str, Any], heartbeat_age: float | None, timeout: float) -> bool:
    """Whether the run of ``info`` is still being recorded (its process or its heartbeat)."""
    alive = process_alive(info)
    if alive is not None:
        return alive
    return heartbeat_age is not None and heartbeat_age < timeout
