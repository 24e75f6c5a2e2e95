"""Is a run still being recorded? Its writer's lock first, then its process or its heartbeat.

The writer of a run holds an exclusive ``flock`` on the run's lock file of its session from
the moment it records until it finishes; the kernel drops it when the process dies, however it
dies. A reader tries a shared ``flock`` on a fresh open of that file and lets it go at once:

* held: the run is alive, whatever its pid or its heartbeat say (a stalled writer, or a reader
  whose clock is ahead, never takes a live run over);
* free, on the writer's host: the run is dead (a recycled pid cannot make it look alive);
* free, from another host: the heartbeat decides, since some shared file systems keep ``flock``
  to each host (NFS ``local_lock=flock``, Lustre ``localflock``): only "held" is trusted across
  hosts. The writer's flusher touches the heartbeat file every flush interval; the run counts
  as alive while it is younger than the collection's ``heartbeat_timeout``;
* no lock file (a run of an older version), or a file system where ``flock`` fails: the pid
  check (same pid, same start time, through psutil) on the writer's host, the heartbeat
  elsewhere.

``flock`` locks belong to the open file description: a second open in the same process
conflicts, and closing another descriptor of the file drops nothing (POSIX ``fcntl`` locks do
both wrongly here). The writer's descriptor is not inherited by ``exec``, and a forked child
(a DataLoader worker) closes its copy at once, so it never keeps a dead parent's run alive.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

try:
    import fcntl
except ImportError:  # Windows: no flock; liveness is the pid check and the heartbeat
    fcntl = None  # type: ignore[assignment]

#: Seconds without a heartbeat after which a run of another host counts as crashed, unless its
#: writer's lock is seen held. The writer touches the heartbeat every flush interval (1 s by
#: default), so this leaves room for slow shared filesystems and clocks that differ between hosts
#: by less than a minute.
HEARTBEAT_TIMEOUT = 60.0

#: The lock files this process holds, by path, each with its descriptor.
_held: dict[str, int] = {}
#: Taken around taking a lock and around fork, so that a child never gets a descriptor unlisted.
_holding = threading.RLock()


def this_host() -> str:
    """The name of this host, as a run records its writer's."""
    import socket  # here: a process that reads only finished runs never asks

    return socket.gethostname()


def this_process() -> dict[str, Any]:
    """The identity of the current process, as a run records its writer's."""
    import psutil  # a fifth of a second to import: only checks of liveness need it

    pid = os.getpid()
    return {"pid": pid, "pid_start": psutil.Process(pid).create_time(), "host": this_host()}


def run_alive(info: dict[str, Any], lock: bool | None, heartbeat_age: Callable[[], float | None],
              timeout: float) -> bool:
    """Whether the run of ``info`` is still being recorded.

    ``lock``: whether its writer's lock is held (None: no lock file, or ``flock`` fails there);
    ``heartbeat_age``: the seconds since its last heartbeat (None: it never had one).
    """
    if lock:
        return True
    if info.get("host") == this_host():
        return lock is None and _process_alive(info)
    age = heartbeat_age()
    return age is not None and age < timeout


def _process_alive(info: dict[str, Any]) -> bool:
    """Whether the writer of ``info``, a process of this host, still runs (same pid and start time)."""
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


def hold_lock(path: str) -> bool:
    """Create the lock file ``path`` already locked (``flock``, exclusive) and hold it until
    :func:`release_lock`; False (nothing held, no file made) where ``flock`` or the file fails.

    The file is made under a temporary name, locked, then renamed into place: a reader never
    finds it free while its writer lives.
    """
    if fcntl is None:
        return False
    building = path + ".tmp"
    with _holding:
        if path in _held:
            return True
        try:
            descriptor = os.open(building, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)  # not inherited by exec
        except OSError:
            return False
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.rename(building, path)
        except OSError:
            os.close(descriptor)
            _remove(building)
            return False
        _held[path] = descriptor
    return True


def release_lock(path: str) -> None:
    """Stop holding the lock file ``path`` (if this process holds it)."""
    with _holding:
        descriptor = _held.pop(path, None)
    if descriptor is not None:
        os.close(descriptor)


def lock_held(path: str) -> bool | None:
    """Whether some process holds the lock file ``path``: True or False, or None when there is
    no such file or ``flock`` fails on it (taken shared and let go at once: readers never block
    one another, and a read-only file system does)."""
    if fcntl is None:
        return None
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:  # EWOULDBLOCK / EAGAIN: held
        return True
    except OSError:  # ENOLCK, EOPNOTSUPP, ENOSYS, EBADF, ...: this file system cannot tell
        return None
    finally:
        os.close(descriptor)
    return False


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass  # a leftover .tmp file: removed with the run's other leftovers


def _close_in_child() -> None:
    """In a forked child: close every inherited lock descriptor (the lock stays the parent's)."""
    for descriptor in _held.values():
        try:
            os.close(descriptor)
        except OSError:
            pass  # closed already by the code that forked (closerange): nothing is kept
    _held.clear()
    _holding.release()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_holding.acquire, after_in_parent=_holding.release, after_in_child=_close_in_child)
