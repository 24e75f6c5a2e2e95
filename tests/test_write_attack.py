"""The write side attacked where it changed last: packing, and many writers on one collection.

Differential: every writer keeps its own ground truth, a plain log fsynced after each run
starts and after its finish() returns; what a reader sees afterwards (SQL, ``records``,
``len()``, ``runs``, in a fresh ``python -I`` process) must hold every finished run once,
whole, and every killed run once, with a clean prefix of its records. Real processes, real
SIGKILL, real files: the victims are this file run as a script (see the end), which may only
add a pause at a chosen point of the packer (to be killed there), never change what it does.

``ATTACK_DEPTH`` (environment) multiplies the sweeps of the slow part for a deeper hunt.
"""

from __future__ import annotations

import collections
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

#: Random kill moments come from this seed, shown in every failure message.
SEED = int(os.environ.get("WRITE_ATTACK_SEED", random.randrange(10**6)))
#: Raise (e.g. ATTACK_DEPTH=10) to run every sweep of the slow part that many times over.
DEPTH = int(os.environ.get("ATTACK_DEPTH", "1"))
#: The library packs once this many finished runs wait (catalog.PACK_MIN_RUNS, not lowered here).
PACK_MIN_RUNS = 64
#: Records of each run: small runs, as packing gathers them.
RECORDS = 20
#: Where a victim may pause, to be killed there: the packer's steps, in order.
PACK_POINTS = ("leftovers", "read", "row-group", "listing", "entries", "lineage", "rename", "packed")
#: Where a recovering process may pause: its new records file written, run.json not yet naming it.
RECOVERY_POINTS = ("compacted",)
#: Seconds a process may take before a test gives up on it.
PATIENCE = 120.0
THIS_FILE = Path(__file__).resolve()


# -- ground truth -----------------------------------------------------------------------------


@dataclass
class Truth:
    """What the writers' logs say: runs started, and runs whose finish() returned (with their
    record counts), by (writer, run)."""

    started: set[tuple[str, int]] = field(default_factory=set)
    done: dict[tuple[str, int], int] = field(default_factory=dict)

    @classmethod
    def of(cls, logs: list[Path]) -> Truth:
        truth = cls()
        for log in logs:
            if not log.exists():
                continue
            for line in log.read_text().splitlines():
                word, writer, run, *count = line.split()
                if word == "start":
                    truth.started.add((writer, int(run)))
                elif word == "done":
                    truth.done[(writer, int(run))] = int(count[0])
        return truth


OBSERVER = r"""
import collections, json, sys
from rigorous_recorder import ExperimentCollection
collection = ExperimentCollection(sys.argv[1], quiet=True, recover=sys.argv[2] == "recover")
sql = collection.sql("SELECT writer, run, count(*), count(DISTINCT step), min(step), max(step) FROM records "
                     "WHERE step IS NOT NULL GROUP BY ALL").fetchall()
experiments = collection.sql("SELECT writer, run, status FROM experiments").fetchall()
records = collections.Counter((record["writer"], record["run"], record["step"]) for record in collection.records)
runs = [(run["experiment"].get("writer"), run["experiment"].get("run"), run["status"]) for run in collection.runs]
print(json.dumps({"sql": sql, "experiments": experiments, "records": [[*key, n] for key, n in records.items()],
                  "runs": runs, "len": len(collection)}))
"""


@dataclass
class Seen:
    """What one reader saw, and what it got wrong against the truth."""

    runs: int
    records: int
    lost_runs: list[str]
    twice: list[str]
    problems: list[str]


def observe(path: Path, truth: Truth, recover: bool = False, finished_only: bool = False) -> Seen:
    """Read the collection in a fresh ``python -I`` process (recovering first when ``recover``)
    and compare every view with ``truth``: each run finished in the logs there once, whole, as
    ``ok``; each run started there at most once, a clean prefix of its records."""
    done = subprocess.run([sys.executable, "-I", "-c", OBSERVER, str(path), "recover" if recover else "read"],
                          capture_output=True, text=True, timeout=PATIENCE)
    if done.returncode != 0:
        return Seen(0, 0, [], [], [f"the reader failed: {done.stderr.strip().splitlines()[-1:]}"])
    seen = json.loads(done.stdout)
    problems: list[str] = []
    lost: list[str] = []
    twice: list[str] = []
    by_sql = {(writer, run): (count, distinct, low, high) for writer, run, count, distinct, low, high in seen["sql"]}
    by_records: dict[tuple[str, int], collections.Counter[int]] = collections.defaultdict(collections.Counter)
    for writer, run, step, count in seen["records"]:
        if step is not None:
            by_records[(writer, run)][step] += count
    statuses: dict[tuple[str, int], list[str]] = collections.defaultdict(list)
    for writer, run, status in seen["runs"]:
        statuses[(writer, run)].append(status)
    experiment_rows = collections.Counter((writer, run) for writer, run, _ in seen["experiments"])
    for key in sorted(truth.started | set(truth.done)):
        label = f"{key[0]}/{key[1]}"
        listed = statuses.get(key, [])
        if len(listed) > 1 or experiment_rows[key] > 1:
            twice.append(f"{label}: listed {len(listed)} times, {experiment_rows[key]} experiment rows")
        if key in truth.done:
            expected = truth.done[key]
            if not listed:
                lost.append(f"{label}: finished, not listed")
                continue
            if listed != ["ok"]:
                problems.append(f"{label}: finished, listed as {listed}")
            if by_sql.get(key) != (expected, expected, 0, expected - 1):
                (lost if by_sql.get(key, (0,))[0] < expected else twice).append(
                    f"{label}: SQL shows {by_sql.get(key)} of {expected} records")
            steps = by_records.get(key, collections.Counter())
            if steps != collections.Counter(range(expected)):
                (lost if sum(steps.values()) < expected else twice).append(
                    f"{label}: records shows {sum(steps.values())} of {expected} records")
        elif finished_only:
            continue
        else:
            if not listed:
                lost.append(f"{label}: started, not listed")
            count, distinct, low, high = by_sql.get(key, (0, 0, 0, -1))
            if (count, distinct, low) != (high + 1, high + 1, 0) and count:
                twice.append(f"{label}: killed run's SQL rows {by_sql.get(key)} are not a clean prefix")
    total = sum(count for count, *_ in by_sql.values())
    if seen["len"] != total or sum(map(sum, (c.values() for c in by_records.values()))) != total:
        problems.append(f"len() {seen['len']}, records and SQL {total} disagree")
    return Seen(len(seen["runs"]), total, lost, twice, problems)


# -- processes ----------------------------------------------------------------------------------


class Victim:
    """This file run as a writer (or a reader that packs), its stdout read line by line."""

    def __init__(self, *arguments: str, prefix: tuple[str, ...] = (), limit_files: int | None = None) -> None:
        def limited() -> None:
            if limit_files is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (limit_files, limit_files))

        self.process = subprocess.Popen([*prefix, sys.executable, "-I", str(THIS_FILE), *arguments],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True, preexec_fn=limited)

    def wait_for(self, word: str) -> bool:
        """Read lines until one starts with ``word``; False when the process ended first."""
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith(word):
                return True
        return False

    def go_on(self) -> None:
        """Let a writer that holds its last run (``--hold``) finish it."""
        assert self.process.stdin is not None
        self.process.stdin.write("\n")
        self.process.stdin.flush()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(PATIENCE)

    def end(self) -> tuple[int, str]:
        """Its exit code and stderr, once it ended by itself."""
        _, stderr = self.process.communicate(timeout=PATIENCE)
        return self.process.returncode, stderr


def write(path: Path, log: Path, writer: str, runs: int, *options: str, **keywords: Any) -> Victim:
    """A writer process recording ``runs`` runs of :data:`RECORDS` records into ``path``."""
    return Victim("write", str(path), str(log), writer, str(runs), *options, **keywords)


def catalog_files(path: Path) -> list[str]:
    folder = path.with_name(path.name + ".collection") / "catalog"
    return sorted(os.listdir(folder)) if folder.is_dir() else []


def catalog_problems(path: Path) -> list[str]:
    """What a finished packer must not leave: temporary files, or a pack missing a file."""
    names = [name for name in catalog_files(path) if name.startswith("pack-") or name.endswith(".tmp")]
    stems = collections.Counter(name.split(".")[0] for name in names if not name.endswith(".tmp"))
    return [f"left over: {name}" for name in names if name.endswith(".tmp")] + [
        f"pack {stem} has {count} of its 4 files" for stem, count in stems.items() if count != 4]


def packed_ids(path: Path) -> collections.Counter[str]:
    """How many packs list each run id (several when a later pack holds a newer copy)."""
    folder = path.with_name(path.name + ".collection") / "catalog"
    counts: collections.Counter[str] = collections.Counter()
    for name in catalog_files(path):
        if name.endswith(".runs.json"):
            counts.update(json.loads((folder / name).read_text().partition("\n")[2])["ids"])
    return counts


# -- the attacks -----------------------------------------------------------------------------------

#: What every attack of this module counted, printed at the end (``pytest -s``) for the report.
TALLY: collections.Counter[str] = collections.Counter()


@pytest.fixture(scope="module", autouse=True)
def tally() -> Any:
    yield TALLY
    if TALLY:
        print(f"\nwrite attack (seed {SEED}, depth {DEPTH}): " + ", ".join(f"{key} {n}" for key, n in sorted(TALLY.items())))


def checked(seen: Seen, when: str) -> list[str]:
    """``seen``'s problems labelled ``when``, counted in the tally."""
    TALLY["reads"] += 1
    TALLY["runs lost"] += len(seen.lost_runs)
    TALLY["runs shown twice"] += len(seen.twice)
    TALLY["errors seen"] += len(seen.problems)
    return [f"{when}: {problem}" for problem in seen.lost_runs + seen.twice + seen.problems]


@pytest.fixture(scope="module")
def waiting(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding a collection ``study`` of 63 finished runs (two layouts), none packed,
    and its writer's log ``t.log``: the next finished run packs."""
    folder = tmp_path_factory.mktemp("waiting")
    writer = write(folder / "study", folder / "t.log", "t", PACK_MIN_RUNS - 1)
    assert writer.end() == (0, "")
    assert catalog_files(folder / "study") == []
    return folder


def copy_of(template: Path, folder: Path) -> Path:
    shutil.copytree(template, folder, symlinks=True)
    return folder / "study"


def killed_at(victim: Victim, point: str | float) -> bool:
    """Kill ``victim`` once it pauses at its pause point, or ``point`` seconds after it says
    ``finishing`` (its last run's finish, which packs); True when it was killed before it ended."""
    reached = victim.wait_for("paused" if isinstance(point, str) else "finishing")
    if reached and not isinstance(point, str):
        time.sleep(point)
    alive = victim.process.poll() is None
    victim.kill()
    TALLY["kills tried"] += 1
    TALLY["kills that landed"] += alive
    return alive


def logs(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.log"))


def packing_trial(template: Path, folder: Path, victim_point: str | float, cleaner_point: str | None,
                  crashed: bool = True, strict: bool = False) -> list[str]:
    """The 64th run's finish() killed inside packing (``victim_point``), beside a run killed while
    recording (``crashed``); then a process that opens (recovering the killed run) and queries
    (packing the leftovers), killed at ``cleaner_point`` (None: not killed); then one that does
    both whole. Every reader in between must see every finished run once, whole; the last must
    leave the catalog clean, each run in one pack at most, and fewer than 64 runs waiting (what a
    packer killed after its first pack left is only counted unless ``strict``: no packer runs while
    fewer wait, see the strict xfail below)."""
    path = copy_of(template, folder)
    if crashed:
        holding = write(path, folder / "c.log", "c", 1, "--hold", "--records", "2000")
        assert holding.wait_for("holding")
        holding.kill()
    killed_at(write(path, folder / "v.log", "v", 1, "--first", "63", "--pause",
                    victim_point if isinstance(victim_point, str) else "none"), victim_point)
    problems = checked(observe(path, Truth.of(logs(folder))), f"after the packer was killed at {victim_point}")
    if cleaner_point is not None:
        killed_at(Victim("open", str(path), "--pause", cleaner_point), cleaner_point)
        problems += checked(observe(path, Truth.of(logs(folder))), f"after the next one was killed at {cleaner_point}")
    cleaner = Victim("open", str(path))
    assert cleaner.end() == (0, "")
    truth = Truth.of(logs(folder))
    problems += checked(observe(path, truth, recover=True), "after a whole open and query")
    packed = packed_ids(path)
    left = catalog_problems(path)
    if not strict and len(truth.started) - len(packed) < PACK_MIN_RUNS:
        TALLY["trials leaving a killed packer's files while too few runs wait"] += bool(left)
        left = []
    problems += left
    problems += [f"{run} packed {n} times" for run, n in packed.items() if n > 1]
    TALLY["runs recorded"] += len(truth.started)
    if len(truth.started) - len(packed) >= PACK_MIN_RUNS:
        problems.append(f"{len(truth.started) - len(packed)} runs still wait outside the packs")
    return problems


@pytest.mark.slow
def test_kill_9_between_a_packs_trees_and_its_records_loses_and_doubles_nothing(tmp_path, waiting):
    """The packer killed when a pack's listing and trees are written but not its records file
    (and a run killed while recording): every finished run is read once, whole, before and
    after the next process recovers and packs; that one leaves the catalog clean."""
    assert packing_trial(waiting, tmp_path / "trial", "rename", None, crashed=False) == []


def midway(point: str, chooser: random.Random) -> str:
    """``point``, at one of the runs for the step done run by run (``read:N``: the Nth run read)."""
    return f"{point}:{chooser.randint(1, PACK_MIN_RUNS - 1)}" if point == "read" else point


@pytest.mark.slow
def test_what_a_packer_killed_after_its_first_pack_left_is_removed_by_the_next_process(tmp_path, waiting):
    """The 64th finish() packs the runs of two layouts as two packs; killed while writing the
    second, it leaves that pack's temporary file (as large as the pack, up to tens of MB). The
    runs of the second layout (fewer than 64) then wait for more: no process packs, and nothing
    removes the file."""
    assert packing_trial(waiting, tmp_path / "trial", "row-group:2", None, crashed=False, strict=True) == []


@pytest.mark.slow
def test_kill_9_anywhere_in_packing_and_in_the_next_recovery_and_packing(tmp_path, waiting):
    """The 64th finish() killed at steps of the packer and at random moments, the next process
    killed inside recovery or its own packing: nothing lost, nothing counted twice."""
    chooser = random.Random(SEED)
    steps = chooser.sample(PACK_POINTS, min(DEPTH, len(PACK_POINTS)))  # and as many random moments, at least
    victim_points: list[str | float] = [*steps, *(chooser.uniform(0.0, 0.6) for _ in range(2 * DEPTH - len(steps)))]
    victim_points = [midway(point, chooser) if isinstance(point, str) else point for point in victim_points]
    problems = []
    for index, victim_point in enumerate(victim_points):  # the first next process killed inside recovery
        cleaner_point = midway(chooser.choice((*PACK_POINTS, *RECOVERY_POINTS)), chooser) if index else RECOVERY_POINTS[0]
        problems += packing_trial(waiting, tmp_path / str(index), victim_point, cleaner_point)
    assert problems == [], f"seed {SEED}"


#: Writer processes finishing runs at once (one as another host where namespaces allow), and runs each.
WRITERS, WRITER_RUNS = 4, 17


def other_host() -> tuple[str, ...]:
    """A command prefix running the rest as host ``other`` (its own UTS namespace), or () where
    this machine does not allow it."""
    if subprocess.run(["unshare", "--uts", "true"], capture_output=True).returncode != 0:
        return ()
    return ("unshare", "--uts", "sh", "-c", 'hostname other && exec "$@"', "sh")


def query_problems(reader: Any, truth: Truth) -> list[str]:
    """One query of ``reader``: each run there once, a finished run whole, and every run whose
    finish() returned before the query started there."""
    TALLY["queries"] += 1
    try:
        rows = reader.sql("SELECT writer, run, status, count(*), count(DISTINCT step) FROM records "
                          "GROUP BY ALL").fetchall()
    except Exception as error:  # noqa: BLE001 - what a user would see
        TALLY["errors seen"] += 1
        return [f"a query failed: {type(error).__name__}: {error}"]
    seen = collections.Counter((writer, run) for writer, run, *_ in rows)
    problems = [f"{writer}/{run}: in {seen[(writer, run)]} rows of status" for writer, run, *_ in rows
                if seen[(writer, run)] > 1]
    problems += [f"{writer}/{run}: ok with {count} records, {distinct} distinct" for writer, run, status, count, distinct
                 in rows if status == "ok" and (count, distinct) != (RECORDS, RECORDS)]
    problems += [f"{writer}/{run}: finished before the query, not in it" for writer, run in truth.done
                 if (writer, run) not in seen]
    TALLY["runs shown twice"] += sum(n > 1 for n in seen.values())
    TALLY["runs lost"] += sum(key not in seen for key in truth.done)
    return problems


@pytest.mark.slow
def test_writers_of_two_hosts_finishing_and_packing_at_once_beside_readers(tmp_path):
    """Four writers (one as another host) finish 68 runs at once, so that several may reach the
    64th waiting run together, while a reader that packs and one that must not query in a
    loop: no query fails, shows a run twice or misses one that had finished."""
    from rigorous_recorder import ExperimentCollection

    path = tmp_path / "study"
    ExperimentCollection(path, quiet=True)
    prefix = other_host()
    writers = [write(path, tmp_path / f"w{index}.log", f"w{index}", WRITER_RUNS * DEPTH,
                     prefix=prefix if index == WRITERS - 1 else ()) for index in range(WRITERS)]
    readers = [ExperimentCollection(path, quiet=True), ExperimentCollection(path, quiet=True, recover=False)]
    problems: list[str] = []
    while any(writer.process.poll() is None for writer in writers):
        for reader in readers:
            truth = Truth.of(logs(tmp_path))
            if truth.started:  # before, the records have no column "writer"
                problems += query_problems(reader, truth)
    assert [writer.end()[0] for writer in writers] == [0] * WRITERS
    truth = Truth.of(logs(tmp_path))
    TALLY["runs recorded"] += len(truth.started)
    assert len(truth.done) == WRITERS * WRITER_RUNS * DEPTH
    for reader in readers:
        problems += query_problems(reader, truth)
    problems += checked(observe(path, truth, recover=True), "at the end")
    problems += catalog_problems(path)
    packed = packed_ids(path)
    problems += [f"{run} packed {n} times" for run, n in packed.items() if n > 1]
    assert packed, "the writers packed nothing"
    assert problems == [], f"seed {SEED}"


@pytest.fixture
def small_disk(tmp_path):
    """A 20 MB tmpfs, unmounted after the test."""
    from .scripts.durability_trials import MountNotPermitted, small_tmpfs

    try:
        with small_tmpfs(tmp_path / "disk", "20m") as mount_point:
            yield mount_point
    except MountNotPermitted as error:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {error}")


#: Records of each run on the small disk: runs of ~28 KB, packs of ~1 MB.
DISK_RECORDS = 2_000
#: Space left when the 64th run finishes: enough for its records file, not for a pack.
SPACE_FOR_THE_RUN = 40 << 10


def fill_but(mount_point: Path, space: int) -> Path:
    """Fill the disk at ``mount_point``, then free ``space`` bytes; returns the ballast file."""
    from .scripts.durability_trials import fill_disk

    ballast = fill_disk(mount_point)
    os.truncate(ballast, ballast.stat().st_size - space)
    return ballast


@pytest.mark.slow
def test_packing_on_a_full_disk_fails_alone_and_succeeds_once_space_is_freed(small_disk):
    """The 64th run finishes on a disk with room for its records file but not for a pack: its
    finish() succeeds, the pack is not written and leaves nothing behind, every run reads the
    same while the disk is full (read only, and recovering); once space is freed, the next
    query packs."""
    path, log = small_disk / "study", small_disk / "w.log"
    assert write(path, log, "t", PACK_MIN_RUNS - 1, "--records", str(DISK_RECORDS)).end() == (0, "")
    victim = write(path, log, "v", 1, "--first", "63", "--records", str(DISK_RECORDS), "--hold")
    assert victim.wait_for("holding")
    ballast = fill_but(small_disk, SPACE_FOR_THE_RUN)
    victim.go_on()
    assert victim.end() == (0, "")
    truth = Truth.of([log])
    TALLY["runs recorded"] += len(truth.started)
    assert not packed_ids(path), "the pack fitted: the disk was not full enough to attack packing"
    problems = catalog_problems(path)
    problems += checked(observe(path, truth), "while the disk is full")
    problems += checked(observe(path, truth, recover=True), "while the disk is full, a reader that may pack")
    ballast.unlink()
    problems += checked(observe(path, truth, recover=True), "once space is freed")
    problems += catalog_problems(path)
    assert problems == []
    assert len(packed_ids(path)) == PACK_MIN_RUNS


@pytest.mark.slow
def test_finish_on_a_full_disk_raises_a_storage_error_naming_the_run(small_disk):
    """finish() that cannot write the run's records file raises what its docstring promises, a
    StorageError naming the run, not pyarrow's bare "Error writing bytes to file"; nothing is lost."""
    path, log = small_disk / "study", small_disk / "w.log"
    victim = write(path, log, "v", 1, "--records", str(DISK_RECORDS), "--hold")
    assert victim.wait_for("holding")
    ballast = fill_but(small_disk, 0)
    victim.go_on()
    code, stderr = victim.end()
    ballast.unlink()
    assert checked(observe(path, Truth.of([log]), recover=True), "after the failed finish") == []
    assert code != 0
    last = stderr.strip().splitlines()[-2]  # the traceback's last line (then the at-exit retry's)
    assert last.startswith("rigorous_recorder.errors.StorageError") and "000001-" in last, stderr[-1500:]


#: The open files a writer process may hold, with as many runs open at once as that allows (each
#: open run holds two: its journal and its lock).
FILE_LIMIT = 176


@pytest.mark.slow
def test_as_many_runs_open_as_the_file_limit_allows_finish_and_pack_whole(tmp_path):
    """A writer under ``ulimit -n 176`` starts runs until it runs out of files (refused with an
    error naming the folder), records and flushes them all, then finishes them, packing at the
    64th: every run reads whole."""
    path, log = tmp_path / "study", tmp_path / "w.log"
    writer = write(path, log, "u", 10 * FILE_LIMIT, "--together", limit_files=FILE_LIMIT)
    code, stderr = writer.end()
    assert code == 0, stderr[-2000:]
    truth = Truth.of([log])
    TALLY["runs recorded"] += len(truth.started)
    assert PACK_MIN_RUNS < len(truth.done) < FILE_LIMIT
    problems = checked(observe(path, truth), "after the writer ended")
    problems += catalog_problems(path)
    assert problems == []
    assert len(packed_ids(path)) >= PACK_MIN_RUNS


#: Records the stalled writer flushed before it stalled.
STALLED_RECORDS = 3_000


@pytest.mark.slow
def test_a_writer_of_another_host_stalled_past_the_heartbeat_timeout_loses_nothing(tmp_path):
    """A writer on host ``other``, whose lock this host cannot see (``--lock-unseen``: a file system
    whose flock is local to each host), flushes 3,000 records and stalls (SIGSTOP) longer than a
    reader's heartbeat timeout; the reader, on this host, recovers its run as crashed. The writer then
    wakes and finishes: its finish() says the run was taken over, and the run keeps its records
    (it said "done", and the run read ok with 0 records: recovery deleted the journal the writer
    still held, and the writer's compaction replaced the recovered records file)."""
    from rigorous_recorder import ExperimentCollection

    prefix = other_host()
    if not prefix:
        pytest.skip("unshare --uts is not permitted here")
    path, log = tmp_path / "study", tmp_path / "w.log"
    writer = write(path, log, "w", 1, "--hold", "--records", str(STALLED_RECORDS), "--lock-unseen", prefix=prefix)
    assert writer.wait_for("holding")
    os.kill(writer.process.pid, signal.SIGSTOP)
    time.sleep(1.5)
    (run,) = ExperimentCollection(path, quiet=True, heartbeat_timeout=1.0).runs  # recovers it
    assert (run["status"], run["records_count"]) == ("crashed", STALLED_RECORDS)
    os.kill(writer.process.pid, signal.SIGCONT)
    writer.go_on()
    code, stderr = writer.end()
    assert code != 0 and "StorageError: experiment run " in stderr and "was taken over" in stderr, stderr[-2000:]
    truth = Truth.of([log])
    TALLY["runs recorded"] += 1
    reader = ExperimentCollection(path, quiet=True, recover=False)
    ((count,),) = reader.sql("SELECT count(*) FROM records").fetchall()
    (status,) = (run["status"] for run in reader.runs)
    TALLY["runs lost"] += count < STALLED_RECORDS
    assert (status, count) == ("crashed", STALLED_RECORDS), f"{count} of {STALLED_RECORDS} records, log {truth}"
    assert not truth.done



@pytest.mark.slow
def test_a_stalled_writer_that_flushes_while_its_recovery_is_midway_is_told_and_loses_nothing(tmp_path):
    """As above, but the writer wakes while the recovery has read its journal and not yet marked
    the run crashed, and flushes 1,000 more records. The recovery named a new session in run.json
    before it read the journal, so that flush fails, saying the run was taken over, and the run
    keeps the 3,000 records flushed before (the flush returned, and the recovery then deleted the
    journal the 1,000 went to: lost without a word)."""
    prefix = other_host()
    if not prefix:
        pytest.skip("unshare --uts is not permitted here")
    path, log = tmp_path / "study", tmp_path / "w.log"
    writer = write(path, log, "w", 1, "--hold", "--records", str(STALLED_RECORDS), "--more", "1000", "--lock-unseen",
                   prefix=prefix)
    assert writer.wait_for("holding")
    os.kill(writer.process.pid, signal.SIGSTOP)
    time.sleep(1.5)
    recovery = Victim("open", str(path), "--heartbeat-timeout", "1", "--pause", "compacted")
    assert recovery.wait_for("paused")
    os.kill(writer.process.pid, signal.SIGCONT)
    writer.go_on()
    code, stderr = writer.end()
    assert code != 0 and "StorageError: experiment run " in stderr and "was taken over" in stderr, stderr[-2000:]
    recovery.go_on()
    assert recovery.end()[0] == 0
    from rigorous_recorder import ExperimentCollection

    reader = ExperimentCollection(path, quiet=True, recover=False)
    ((count,),) = reader.sql("SELECT count(*) FROM records").fetchall()
    TALLY["runs recorded"] += 1
    TALLY["records lost, flushed during a recovery"] += STALLED_RECORDS - count
    assert ([run["status"] for run in reader.runs], count) == (["crashed"], STALLED_RECORDS)


# -- the victims (this file run as a script) ---------------------------------------------------


def _pause_at(point: str, occurrence: int) -> None:
    """Wrap the packer's (or recovery's) steps so that the process says ``paused`` and waits for
    a line on stdin the ``occurrence``-th time it reaches ``point``: a delay only, to be killed
    there or let go on."""
    from rigorous_recorder.store import catalog, tree_file

    reached = collections.Counter()

    def pause_if(name: str) -> None:
        reached[name] += 1
        if name == point and reached[name] == occurrence:
            print(f"paused {name}", flush=True)
            sys.stdin.readline()  # until killed, or told to go on

    def wrapped(owner: Any, attribute: str, before: str | None = None, after: str | None = None) -> None:
        original = getattr(owner, attribute)

        def pausing(*arguments: Any, **keywords: Any) -> Any:
            if before:
                pause_if(before)
            result = original(*arguments, **keywords)
            if after:
                pause_if(after)
            return result

        setattr(owner, attribute, pausing)

    wrapped(catalog.Catalog, "_remove_leftovers", before="leftovers")
    wrapped(catalog, "_read_member", before="read")
    wrapped(catalog._PackRecords, "_write_row_group", before="row-group")
    wrapped(catalog, "atomic_write_text", before="listing")
    entries_then_lineage = iter(("entries", "lineage") * 1000)
    writes = iter(range(1, 2000))

    def parquet_step(original: Any) -> Any:
        def pausing(*arguments: Any, **keywords: Any) -> Any:
            pause_if(next(entries_then_lineage))
            result = original(*arguments, **keywords)
            if next(writes) % 2 == 0:
                pause_if("rename")  # both trees written: the records file is renamed into place next
            return result
        return pausing

    catalog._write_parquet = parquet_step(catalog._write_parquet)
    wrapped(catalog.Catalog, "_finish", after="packed")
    wrapped(tree_file, "write_tree_file", after="compacted")


def _logged(log: Any, line: str) -> None:
    log.write(line + "\n")
    log.flush()
    os.fsync(log.fileno())


def _write_main(path: str, log_path: str, writer: str, runs: int, options: list[str]) -> None:
    """Record ``runs`` runs, each logged once started and once its finish() returned.

    ``--hold``: the last run flushes, says ``holding`` and waits for a line on stdin before it
    finishes (``--more N``: before, it records N more records, flushes, says ``flushed`` and waits
    for another line). ``--together``: every run is started (until the process runs out of files, which
    it reports), recorded and flushed before the first finishes (a finish() refused for want of files
    is tried again after the others). ``--lock-unseen``: each run lets
    its lock go once started, as a reader of another host sees it where flock is local to each host.
    """
    from rigorous_recorder import ExperimentCollection, StorageError

    first = int(options[options.index("--first") + 1]) if "--first" in options else 0
    records = int(options[options.index("--records") + 1]) if "--records" in options else RECORDS
    more = int(options[options.index("--more") + 1]) if "--more" in options else 0
    collection = ExperimentCollection(path, quiet=True, record_context=False)
    started = []
    with open(log_path, "a") as log:
        for run in range(first, first + runs):
            try:
                experiment = collection.new_experiment(writer=writer, run=run)
            except OSError as error:
                print(f"refused {error}", flush=True)
                break
            _logged(log, f"start {writer} {run}")
            if "--lock-unseen" in options:
                experiment.folder.release_lock(experiment.info["session"])
            for step in range(records):
                experiment.recorder.push(step=step, loss=1 / (step + 1), **({"odd": run} if run % 2 else {}))
            started.append((run, experiment))
            if "--together" in options:
                experiment.flush()
                continue
            if "--hold" in options and run == first + runs - 1:
                experiment.flush()
                print("holding", flush=True)
                sys.stdin.readline()
                for step in range(records, records + more):
                    experiment.recorder.push(step=step, loss=1 / (step + 1))
                if more:
                    experiment.flush()
                    print("flushed", flush=True)
                    sys.stdin.readline()
            print("finishing", flush=True)
            experiment.finish()
            _logged(log, f"done {writer} {run} {records + more * (run == first + runs - 1)}")
        if "--together" in options:
            print(f"started {len(started)}", flush=True)
            again = []
            for run, experiment in started:
                try:
                    experiment.finish()
                except StorageError:  # out of files: finish() again once others let theirs go, as it says
                    again.append((run, experiment))
                    continue
                _logged(log, f"done {writer} {run} {records}")
            for run, experiment in again:
                experiment.finish()
                _logged(log, f"done {writer} {run} {records}")
    print("written", flush=True)


if __name__ == "__main__":
    arguments = sys.argv[1:]
    if "--pause" in arguments:
        where = arguments[arguments.index("--pause") + 1]
        name, _, nth = where.partition(":")
        _pause_at(name, int(nth or 1))
    if arguments[0] == "write":
        _write_main(arguments[1], arguments[2], arguments[3], int(arguments[4]), arguments[5:])
    elif arguments[0] == "open":  # open (recovering), then query (packing what waits)
        from rigorous_recorder import ExperimentCollection

        timeout = float(arguments[arguments.index("--heartbeat-timeout") + 1]) \
            if "--heartbeat-timeout" in arguments else 60.0
        print("opening", flush=True)
        opened = ExperimentCollection(arguments[1], quiet=True, heartbeat_timeout=timeout)
        print("querying", flush=True)
        opened.sql("SELECT count(*) FROM records").fetchall()
        print("queried", flush=True)
