"""A live run is never taken over: its writer holds a lock that the kernel drops when it dies.

Real writer processes (this file run as a script, see the end), real SIGSTOP and SIGKILL, a
writer as another host in its own UTS namespace (``unshare --uts``), readers whose every
heartbeat is stale (``heartbeat_timeout=0.001``, as for a reader whose clock runs two minutes
ahead): the lock alone tells a live run from a dead one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rigorous_recorder import ExperimentCollection
from rigorous_recorder.store.run_folder import RunFolder

THIS_FILE = Path(__file__).resolve()
#: Records a writer flushes before it says ``ready``, and records it adds once told to go on.
FLUSHED, MORE = 2_000, 500
#: A heartbeat timeout that every heartbeat exceeds: a reader's clock far ahead of the writer's.
STALE = 0.001
#: Seconds a process may take before a test gives up on it.
PATIENCE = 120.0


class Writer:
    """This file run as a writer of one run (see :func:`_write_main`), its stdout read line by line."""

    def __init__(self, path: Path, *options: str, prefix: tuple[str, ...] = ()) -> None:
        self.process = subprocess.Popen([*prefix, sys.executable, str(THIS_FILE), str(path), *options],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True)

    def said(self, word: str) -> str:
        """The first line that starts with ``word`` (read until it comes; fails if the process ends first)."""
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith(word):
                return line.strip()
        raise AssertionError(f"the writer ended before it said {word!r}: {self.end()[1][-2000:]}")

    def go_on(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("\n")
        self.process.stdin.flush()

    def signal(self, number: int) -> None:
        os.kill(self.process.pid, number)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.signal(signal.SIGKILL)
        self.process.wait(PATIENCE)

    def end(self) -> tuple[int, str]:
        """Its exit code and stderr, once it ended by itself."""
        _, stderr = self.process.communicate(timeout=PATIENCE)
        return self.process.returncode, stderr


def other_host() -> tuple[str, ...]:
    """A command prefix running the rest as host ``other`` (its own UTS namespace); skips the
    test where this machine does not allow it."""
    probe = subprocess.run(["unshare", "--uts", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"unshare --uts is not permitted here: {probe.stderr.strip()}")
    return ("unshare", "--uts", "sh", "-c", 'hostname other && exec "$@"', "sh")


def statuses(path: Path, **options: float) -> list[tuple[str, int]]:
    """(status, records count) of each stopped run, read by a fresh collection (which recovers dead runs)."""
    collection = ExperimentCollection(path, quiet=True, **options)
    return [(run["status"], run.get("records_count")) for run in collection.runs]


def by_writer(reader: ExperimentCollection) -> dict[str, tuple[str, int]]:
    """(status, records queried) of each run, by its ``writer`` info."""
    counts = dict(reader.sql("SELECT writer, count(*) FROM records GROUP BY writer").fetchall())
    return {run["experiment"]["writer"]: (run["status"], counts.get(run["experiment"]["writer"], 0))
            for run in reader.runs}


def records_queried(path: Path) -> int:
    reader = ExperimentCollection(path, quiet=True, recover=False)
    ((count,),) = reader.sql("SELECT count(*) FROM records").fetchall()
    return count


def test_a_live_writer_of_another_host_is_not_taken_over_by_a_reader_whose_heartbeats_are_all_stale(tmp_path):
    """A writer on host ``other`` records while a reader of this host, for which every heartbeat
    is stale, opens the collection, queries and recovers: the run stays running, and the writer
    finishes it with every record (before the lock, the reader marked it crashed and the writer's
    finish() raised StorageError, keeping only the records flushed before)."""
    path = tmp_path / "study"
    writer = Writer(path, prefix=other_host())
    writer.said("ready")
    time.sleep(10 * STALE)
    reader = ExperimentCollection(path, quiet=True, heartbeat_timeout=STALE)
    (run,) = reader.runs
    assert (run["status"], run["host"]) == ("running", "other")
    assert reader.sql("SELECT count(*) FROM records").fetchall() == [(FLUSHED,)]
    assert reader.recover() == []
    writer.go_on()
    code, stderr = writer.end()
    assert code == 0, stderr[-2000:]
    assert statuses(path, heartbeat_timeout=STALE) == [("ok", FLUSHED + MORE)]
    assert records_queried(path) == FLUSHED + MORE


def test_a_killed_writer_of_another_host_is_recovered_with_every_flushed_record(tmp_path):
    """Killed, the writer of host ``other`` holds no lock any more: a reader of this host falls
    back to the heartbeat, stale, and recovers the run with every record flushed."""
    path = tmp_path / "study"
    writer = Writer(path, prefix=other_host())
    writer.said("ready")
    writer.kill()
    assert statuses(path, heartbeat_timeout=STALE) == [("crashed", FLUSHED)]
    assert records_queried(path) == FLUSHED


def test_a_writer_of_another_host_whose_lock_cannot_be_seen_lives_by_its_heartbeat(tmp_path):
    """Where flock is local to each host (``--lock-unseen``: the writer lets its lock go), a reader
    of another host counts the run alive while its heartbeat is fresh, crashed once it is stale."""
    path = tmp_path / "study"
    writer = Writer(path, "--lock-unseen", prefix=other_host())
    writer.said("ready")
    try:
        assert statuses(path) == [("running", None)]
        assert statuses(path, heartbeat_timeout=STALE) == [("crashed", FLUSHED)]
    finally:
        writer.kill()


def test_a_stopped_writer_of_this_host_is_not_taken_over_and_a_killed_one_is_recovered_at_once(tmp_path):
    """Two writers of this host: one stopped (SIGSTOP: alive, its heartbeat stale), one killed. A
    reader recovers the killed one's run at once, whatever its heartbeat's age, and leaves the
    stopped one's running; woken, that one finishes with every record."""
    path = tmp_path / "study"
    stopped, killed = Writer(path, "--info", "stopped"), Writer(path, "--info", "killed")
    stopped.said("ready")
    killed.said("ready")
    stopped.signal(signal.SIGSTOP)
    killed.kill()
    try:
        reader = ExperimentCollection(path, quiet=True)  # the killed writer's heartbeat is still fresh
        assert by_writer(reader) == {"stopped": ("running", FLUSHED), "killed": ("crashed", FLUSHED)}
        time.sleep(10 * STALE)
        stale = ExperimentCollection(path, quiet=True, heartbeat_timeout=STALE)
        assert by_writer(stale)["stopped"] == ("running", FLUSHED)
        assert stale.recover() == []
    finally:
        stopped.signal(signal.SIGCONT)
    stopped.go_on()
    code, stderr = stopped.end()
    assert code == 0, stderr[-2000:]
    assert sorted(statuses(path)) == [("crashed", FLUSHED), ("ok", FLUSHED + MORE)]


def test_a_killed_writer_whose_pid_now_names_a_live_process_is_recovered(tmp_path):
    """Two killed writers of this host whose run.json now names a live process (a recycled pid
    with a start time that matches): the run whose lock file is there is recovered (its lock is
    free); the run without one, as an older version wrote it, is checked by its pid as before,
    and still reads running."""
    import psutil

    path = tmp_path / "study"
    locked, older = Writer(path, "--info", "locked"), Writer(path, "--info", "older")
    for writer in (locked, older):
        writer.said("ready")
        writer.kill()
    me = psutil.Process()
    for folder in map(RunFolder, sorted((path.parent / "study.collection" / "runs").iterdir())):
        info = folder.read_info()
        folder.write_info({**info, "pid": me.pid, "pid_start": me.create_time()})
        if info["experiment"]["writer"] == "older":
            (folder.path / f"lock-{info['session']}").unlink()
    assert by_writer(ExperimentCollection(path, quiet=True)) == {"locked": ("crashed", FLUSHED),
                                                                 "older": ("running", FLUSHED)}


def running(pid: int) -> bool:
    import psutil

    return psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE


def test_a_forked_child_does_not_keep_its_killed_parents_run_alive(tmp_path):
    """A writer forks a child (as a DataLoader worker is forked) that sleeps on, and is killed: the
    child closed its copy of the lock's descriptor, so a reader recovers the run at once."""
    path = tmp_path / "study"
    writer = Writer(path, "--fork")
    child = int(writer.said("child").split()[1])
    writer.said("ready")
    try:
        writer.kill()
        assert running(child)
        assert statuses(path) == [("crashed", FLUSHED)]
    finally:
        os.kill(child, signal.SIGKILL)


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd to count open files")
def test_every_lock_is_let_go_when_its_run_finishes(tmp_path):
    """100 runs open at once in one process each hold their lock, then 200 runs one after the
    other: once all are finished, the process holds no more files than before."""
    collection = ExperimentCollection(tmp_path / "study", quiet=True, record_context=False)
    before = open_descriptors()
    together = [collection.new_experiment(run=run) for run in range(100)]
    for experiment in together:
        experiment.recorder.push(step=0)
        assert experiment.folder.lock_held(experiment.info["session"]) is True
    assert open_descriptors() >= before + 100
    for experiment in together:
        experiment.finish()
    for run in range(200):
        with collection.new_experiment(run=100 + run) as recorder:
            recorder.push(step=0)
    assert open_descriptors() <= before
    assert [folder.name for folder in collection.path.glob("runs/*/lock-*")] == []
    assert len(collection.runs) == 300


# -- the writer (this file run as a script) ----------------------------------------------------


def _write_main(path: str, options: list[str]) -> None:
    """Record one run: flush :data:`FLUSHED` records, say ``ready``, wait for a line on stdin,
    then record :data:`MORE` more and finish. ``--info NAME``: the run's ``writer`` info.
    ``--fork``: first fork a child that sleeps (and says ``child <pid>``). ``--lock-unseen``: let
    the run's lock go once started, as a reader of another host sees it where flock is per host."""
    collection = ExperimentCollection(path, quiet=True, record_context=False)
    name = options[options.index("--info") + 1] if "--info" in options else "writer"
    experiment = collection.new_experiment(writer=name)
    if "--lock-unseen" in options:
        experiment.folder.release_lock(experiment.info["session"])
    for step in range(FLUSHED):
        experiment.recorder.push(step=step, loss=1 / (step + 1))
    experiment.flush()
    if "--fork" in options:
        child = os.fork()
        if child == 0:
            time.sleep(PATIENCE)
            os._exit(0)
        print(f"child {child}", flush=True)
    print("ready", flush=True)
    sys.stdin.readline()
    for step in range(FLUSHED, FLUSHED + MORE):
        experiment.recorder.push(step=step, loss=1 / (step + 1))
    experiment.finish()
    print("finished", flush=True)


if __name__ == "__main__":
    _write_main(sys.argv[1], sys.argv[2:])
