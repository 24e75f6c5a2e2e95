"""Nothing committed is lost, on any exit, with any tree, on a full disk, next to damaged files.

Issue #10 under attack: real writer processes (tests/scripts/durability_writer.py), real
SIGTERM and SIGKILL at random moments, a real ``ulimit -n 1024``, a real 8 MB tmpfs, files
damaged in every way, 16 writers beside a reader, a writer on another host. The trials
themselves live in tests/scripts/durability_trials.py, shared with benchmarks/durability.py.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from rigorous_recorder import ExperimentCollection, Recorder

from .scripts import durability_trials as trials
from .scripts.durability_writer import FAILURE, RECORDS_PER_EPISODE

#: Random kill moments are drawn from this seed, shown in every failure message.
SEED = int(os.environ.get("DURABILITY_SEED", random.randrange(10**6)))
#: Seconds after which a run on another host without a heartbeat counts as crashed (in these tests).
HEARTBEAT_TIMEOUT = 3.0


def only_run(path: Path) -> dict:
    (run,) = ExperimentCollection(path, quiet=True).runs
    return run


def assert_counted_once(path: Path, expected: int) -> None:
    """SQL, len() and collection.records each count exactly ``expected`` distinct records."""
    count = trials.count_records(path, expected)
    assert count.error is None, count.error
    assert (count.sql, count.length, count.records, count.distinct, count.kept_below) == (expected,) * 5


# -- the lifecycle: how a process ends ------------------------------------------------------------


def test_unfinished_experiment_is_saved_ok_at_normal_exit(tmp_path):
    """A script that never calls finish() and ends normally leaves its run "ok" with every record."""
    writer = trials.Writer(tmp_path / "study", "exit", "--records", "100")
    assert writer.end() == 0, writer.tail()
    assert only_run(tmp_path / "study")["status"] == "ok"
    assert_counted_once(tmp_path / "study", 100)


def test_uncaught_exception_marks_the_run_error_with_its_text(tmp_path):
    """An exception escaping the script leaves its run "error", the exception's text in ``error``."""
    writer = trials.Writer(tmp_path / "study", "raise", "--records", "100")
    assert writer.end() == 1, writer.tail()
    run = only_run(tmp_path / "study")
    assert (run["status"], FAILURE in str(run.get("error"))) == ("error", True), run
    assert_counted_once(tmp_path / "study", 100)


@pytest.mark.parametrize(("sig", "names"), [
    (signal.SIGTERM, ("SIGTERM",)),
    (signal.SIGINT, ("SIGINT", "KeyboardInterrupt")),
])
def test_signal_flushes_every_record_and_marks_the_run_error_naming_it(tmp_path, sig, names):
    """SIGTERM or Ctrl-C with 5,000 unflushed records: all kept, the run "error", the signal named."""
    writer = trials.Writer(tmp_path / "study", "hold", "--records", "5000", "--flush-interval", "600")
    assert writer.wait_for("ready"), writer.tail()
    writer.kill(sig)
    run = only_run(tmp_path / "study")
    assert run["status"] == "error", run
    assert any(name in str(run.get("error")) for name in names), run
    assert_counted_once(tmp_path / "study", 5_000)


def test_kill_9_marks_the_run_crashed_and_keeps_records_older_than_the_flush_interval(tmp_path):
    """kill -9 1.6 s after the last push, with no flush() call: the run is "crashed" with every record."""
    writer = trials.Writer(tmp_path / "study", "hold", "--records", "5000")
    assert writer.wait_for("ready"), writer.tail()
    time.sleep(trials.SAFE_AGE + 0.1)
    writer.kill()
    assert only_run(tmp_path / "study")["status"] == "crashed"
    assert_counted_once(tmp_path / "study", 5_000)


@pytest.mark.slow
def test_twenty_thousand_episode_recorders_flush_and_finish_under_ulimit_1024(tmp_path):
    """One recorder per episode, 20,000 of them, with 1,024 open files allowed: every record kept."""
    writer = trials.Writer(tmp_path / "study", "episodes", "--episodes", "20000", "--nofile", "1024")
    assert writer.end() == 0, writer.tail()
    assert only_run(tmp_path / "study")["status"] == "ok"
    assert_counted_once(tmp_path / "study", 20_000 * RECORDS_PER_EPISODE)


# -- kill -9 at random moments -----------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("workload", sorted(trials.WORKLOAD_OPTIONS))
def test_kill_9_at_a_random_moment_loses_no_committed_record(tmp_path, workload):
    """A writer killed at a random moment keeps every record flushed or committed 1.5 s before, once.

    The moment is 1.6 to 3.5 s after the writer's first commit (see DURABILITY_SEED to replay one).
    """
    delay = random.Random(f"{SEED}-{workload}").uniform(1.6, 3.5)
    trial = trials.kill_trial(tmp_path, workload, delay)
    assert trial.problems() == [], f"seed {SEED}"
    assert trial.must_survive > 0, f"seed {SEED}: nothing was committed before the kill"


@pytest.mark.slow
def test_kill_9_inside_finish_counts_each_record_once(tmp_path):
    """A writer killed while finish() compacts 300,000 flushed records keeps each once, resumed or not."""
    seconds = trials.finish_seconds(tmp_path / "calibration")
    chooser = random.Random(f"{SEED}-finish")
    for index, fraction in enumerate((0.3, chooser.uniform(0.5, 1.0))):
        trial = trials.finish_kill_trial(tmp_path / str(index), fraction * seconds)
        assert trial.problems() == [], f"seed {SEED}, finish() took {seconds:.2f} s"
        collection = ExperimentCollection(tmp_path / str(index) / "study", quiet=True)
        collection.resume(collection.runs[0]["id"]).finish()  # resuming must not make duplicates permanent
        assert_counted_once(tmp_path / str(index) / "study", trial.must_survive)


@pytest.fixture(scope="module")
def crashed_template(tmp_path_factory):
    """A collection whose one run flushed RECOVERED_RECORDS records and was killed; not yet recovered."""
    path, _ = trials.crashed_collection(tmp_path_factory.mktemp("crashed"), trials.RECOVERED_RECORDS)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("how", ["cli", "open"])
def test_kill_9_inside_recovery_counts_each_record_once(tmp_path, crashed_template, how):
    """A recovery (``rigorous-recorder recover`` or an open) killed midway leaves each record once."""
    calibration = tmp_path / "calibration" / "study"
    shutil.copytree(trials.collection_folder(crashed_template), trials.collection_folder(calibration))
    seconds = trials.timed(trials.recover_command(calibration, how))
    chooser = random.Random(f"{SEED}-{how}")
    for index, fraction in enumerate((0.5, chooser.uniform(0.3, 1.0))):
        trial = trials.recovery_kill_trial(crashed_template, tmp_path / str(index), trials.RECOVERED_RECORDS,
                                           how, fraction * seconds)
        assert trial.problems() == [], f"seed {SEED}, recovery took {seconds:.2f} s"


@pytest.mark.slow
def test_two_processes_recovering_at_once_keep_the_flushed_run(tmp_path, crashed_template):
    """``rigorous-recorder recover`` and an open racing on a crashed run: it stays, whole and crashed."""
    path = tmp_path / "study"
    shutil.copytree(trials.collection_folder(crashed_template), trials.collection_folder(path))
    racers = [subprocess.Popen(trials.recover_command(path, how), stderr=subprocess.PIPE, text=True)
              for how in ("cli", "open")]
    for racer in racers:
        assert racer.wait(trials.PATIENCE) == 0, racer.stderr.read()
    assert only_run(path)["status"] == "crashed"
    assert_counted_once(path, trials.RECOVERED_RECORDS)


# -- damaged files ---------------------------------------------------------------------------------


def broken(results: dict[str, list[str]]) -> list[str]:
    return [problem for problems in results.values() for problem in problems]


#: Damage inside a records file's data pages (its two ends intact): only the page checksums tell it,
#: which DuckDB does not check; readers check each records file's pages once (store/verified.py).
DATA_PAGE_DAMAGE = ("records-N.parquet: garbage in the middle", "records-N.parquet: non-UTF-8 bytes")


@pytest.fixture(scope="module")
def finished_damage(tmp_path_factory):
    """The damage matrix over a finished run's files: what each damage broke."""
    folder = tmp_path_factory.mktemp("damage")
    target = trials.finished_template(folder / "template" / "study")
    return trials.damage_matrix(folder / "template" / "study", target, "target", folder / "cases")


@pytest.mark.slow
def test_damage_to_any_file_of_a_finished_run_is_isolated_and_reported(finished_damage):
    """Every file kind of a finished run x every damage: the collection opens, the run is listed."""
    assert len(finished_damage) > 10
    assert [problem for problem in broken(finished_damage) if not problem.startswith(DATA_PAGE_DAMAGE)] == []


@pytest.mark.slow
def test_damage_inside_the_data_pages_reads_the_same_everywhere(finished_damage):
    """Data-page damage: sql() answers for the other runs, and every reader lists the run damaged
    naming its records file."""
    assert {label for label in finished_damage if label.startswith(DATA_PAGE_DAMAGE)} == set(DATA_PAGE_DAMAGE)
    assert [problem for problem in broken(finished_damage) if problem.startswith(DATA_PAGE_DAMAGE)] == []


@pytest.mark.slow
def test_damage_to_any_file_of_a_crashed_run_is_isolated_and_reported(tmp_path):
    """Every file kind of a killed, unrecovered run x every damage: recovery copes, the run is listed."""
    target = trials.crashed_template(tmp_path / "template" / "study")
    results = trials.damage_matrix(tmp_path / "template" / "study", target, "target", tmp_path / "cases")
    assert len(results) > 10
    assert broken(results) == []


def test_stray_files_in_every_folder_are_ignored(tmp_path):
    """Stray files and folders everywhere in a collection change nothing that is read."""
    target = trials.finished_template(tmp_path / "template" / "study")
    assert trials.stray_files_problems(tmp_path / "template" / "study", target, "target", tmp_path / "w") == []


def test_command_line_names_the_damaged_file_in_one_line(tmp_path):
    """The real ``rigorous-recorder`` lists a run with a garbled run.json as damaged, no traceback."""
    path = tmp_path / "study"
    target = trials.finished_template(path)
    (trials.run_folder_of(path, target) / "run.json").write_bytes(b"{\"experiment_number\": \xff")
    listing = trials.run_cli("ls", str(path))
    assert (listing.returncode, listing.stderr) == (0, "")
    assert "damaged" in listing.stdout.splitlines()[-1]
    shown = trials.run_cli("show", str(path), "3")
    assert "Traceback" not in shown.stderr
    if shown.returncode == 2:
        (line,) = shown.stderr.splitlines()
        assert "run.json" in line
    else:
        assert (shown.returncode, "run.json" in shown.stdout) == (0, True)


# -- data pages: checked once per records file -------------------------------------------------------

#: Run in its own process: the bytes it reads (rchar) while listing the runs of a collection, the
#: runs' statuses and errors, and the records SQL counts per run. pyarrow is loaded before counting.
_LIST_RUNS = """
import json, sys
import pyarrow.parquet
from rigorous_recorder import ExperimentCollection

def read_so_far():
    with open("/proc/self/io") as io:
        return next(int(line.split()[1]) for line in io if line.startswith("rchar:"))

before = read_so_far()
collection = ExperimentCollection(sys.argv[1], quiet=True, recover=sys.argv[2] == "recover")
runs = collection.runs
read = read_so_far() - before
counts = dict(collection.sql("SELECT run, count(*) FROM records GROUP BY run").fetchall())
print(json.dumps({"read": read, "runs": [[run["status"], run.get("error")] for run in runs],
                  "counts": {str(run): count for run, count in counts.items()}}))
"""


def list_runs(path: Path, recover: bool = True) -> dict:
    """Open the collection at ``path`` in a fresh process: see :data:`_LIST_RUNS`."""
    done = subprocess.run([sys.executable, "-c", _LIST_RUNS, str(path), "recover" if recover else "read"],
                          capture_output=True, text=True, timeout=trials.PATIENCE)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture
def two_runs(tmp_path):
    """Two finished runs of 40,000 records of random floats (a records file of ~1.3 MB each);
    returns the collection and the second run's records file."""
    collection = ExperimentCollection(tmp_path / "study", quiet=True)
    noise = random.Random(3)
    for run in range(2):
        with collection.new_experiment(run=run) as recorder:
            for step in range(40_000):
                recorder.push(step=step, a=noise.random(), b=noise.random(), c=noise.random())
    (records_file,) = (trials.run_folder_of(tmp_path / "study", collection.runs[-1]["id"])).glob("records-*.parquet")
    (collection.path / "verified.json").unlink(missing_ok=True)  # as if no process had read the runs yet
    return collection, records_file


def overwrite_inside_a_data_page(path: Path) -> None:
    """Zero 8 bytes inside the data page of column ``a`` (random floats: stored raw), keeping the
    file's size, modification time and two ends: only the page checksum tells the damage."""
    status = path.stat()
    metadata = pq.ParquetFile(path).metadata.row_group(0)
    chunk = next(metadata.column(index) for index in range(metadata.num_columns)
                 if metadata.column(index).path_in_schema == "a")
    middle = chunk.data_page_offset + chunk.total_compressed_size // 2
    with open(path, "r+b") as file:
        file.seek(middle)
        file.write(bytes(8))
    os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns))
    assert path.stat().st_size == status.st_size
    with pytest.raises(OSError, match="CRC checksum verification failed"):
        pq.ParquetFile(path, page_checksum_verification=True).read()


@pytest.mark.slow
def test_a_file_its_own_run_finished_with_is_not_read_back_by_the_next_reader(tmp_path):
    """The process that finished a run wrote its pages and their checksums: a reader of the
    collection afterwards reads none of them (verified.json already holds the file)."""
    collection = ExperimentCollection(tmp_path / "study", quiet=True)
    noise = random.Random(4)
    with collection.new_experiment(run=0) as recorder:
        for step in range(40_000):
            recorder.push(step=step, a=noise.random(), b=noise.random(), c=noise.random())
    (records_file,) = collection.path.glob("runs/*/records-*.parquet")  # not collection.runs: it would check them
    reader = list_runs(collection.path)
    assert reader["runs"] == [["ok", None]] and reader["counts"] == {"0": 40_000}
    assert reader["read"] < records_file.stat().st_size / 20, "the reader read the pages back"


@pytest.mark.slow
def test_records_files_are_checked_once_then_damage_is_seen_through_a_restored_mtime(two_runs):
    """The first process reads every page; the next reads none (the cache); a later overwrite
    that keeps the file's size and modification time is still seen (its change time moved)."""
    collection, records_file = two_runs
    size = records_file.stat().st_size
    first = list_runs(collection.path)
    assert first["runs"] == [["ok", None], ["ok", None]]
    assert first["read"] > 2 * size, "the first process did not read the records files' pages"
    assert (collection.path / "verified.json").is_file()
    second = list_runs(collection.path)
    assert second["read"] < size / 20, "the second process read the pages again"
    assert second["counts"] == {"0": 40_000, "1": 40_000}
    overwrite_inside_a_data_page(records_file)
    third = list_runs(collection.path)
    assert third["runs"][0] == ["ok", None]
    assert third["runs"][1][0] == "damaged"
    assert f"{records_file}: its records cannot be read" in third["runs"][1][1]
    assert third["counts"] == {"0": 40_000}
    listing = trials.run_cli("ls", str(collection.path))
    assert (listing.returncode, listing.stderr) == (0, "")
    assert "damaged" in listing.stdout.splitlines()[-1] and records_file.name in listing.stdout.splitlines()[-1]


@pytest.mark.slow
@pytest.mark.parametrize("cache", [b"\x00garbage{", b'{"format": 1, "passed": {"runs": 7}}', b'{"format": 1, "passed": [[1, 2], "x"]}'])
def test_a_damaged_cache_is_ignored_and_rewritten(two_runs, cache):
    """A damaged verified.json: the pages are checked again (damage found), the cache rewritten."""
    collection, records_file = two_runs
    list_runs(collection.path)
    overwrite_inside_a_data_page(records_file)
    (collection.path / "verified.json").write_bytes(cache)
    again = list_runs(collection.path)
    assert again["read"] > records_file.stat().st_size
    assert [status for status, _ in again["runs"]] == ["ok", "damaged"]
    assert again["counts"] == {"0": 40_000}
    stored = json.loads((collection.path / "verified.json").read_text())
    intact = [path for path in collection.path.glob("runs/*/records-*.parquet") if path != records_file]
    assert [name for name, _ in stored["passed"]] == [str(path.relative_to(collection.path)) for path in intact]


@pytest.mark.slow
def test_a_reader_that_must_not_write_checks_pages_in_memory(two_runs):
    """recover=False (the dashboard): the damage is seen, no cache file is written."""
    collection, records_file = two_runs
    overwrite_inside_a_data_page(records_file)
    seen = list_runs(collection.path, recover=False)
    assert [status for status, _ in seen["runs"]] == ["ok", "damaged"]
    assert seen["counts"] == {"0": 40_000}
    assert not (collection.path / "verified.json").exists()


# -- full disk -------------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """An 8 MB tmpfs, unmounted after the test."""
    try:
        with trials.small_tmpfs(tmp_path / "disk") as mount_point:
            yield mount_point
    except trials.MountNotPermitted as error:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {error}")


@pytest.mark.slow
@pytest.mark.parametrize("first_call", ["push", "add", "commit", "flush"])
def test_full_disk_raises_at_the_first_call_and_keeps_what_was_flushed(small_disk, first_call):
    """The flusher hits a full disk: the next call raises naming the collection and the cause;
    flushed records stay, the run is never "ok" with records missing, no file is corrupt."""
    result = trials.full_disk_trial(small_disk, first_call, read_while_full=False)
    assert result.problems == []


@pytest.mark.slow
def test_finish_on_a_full_disk_never_marks_the_run_ok_short_of_records(small_disk):
    """finish() while the disk is still full may fail, never says "ok" with records missing, corrupts nothing."""
    result = trials.full_disk_trial(small_disk, "push", read_while_full=False, finish_while_full=True)
    assert result.problems == []


def test_collection_opens_and_answers_queries_on_a_full_and_a_read_only_disk(small_disk):
    """Another process opens and queries a collection while its disk is full, then read-only."""
    path = small_disk / "study"
    trials.finished_template(path)
    ballast = trials.fill_disk(small_disk)
    assert trials.reader_problems(path, "while the disk is full", 900) == []
    ballast.unlink()
    assert trials.read_only_problems(small_disk, path, 900) == []


# -- keys that cannot be stored ------------------------------------------------------------------

SURROGATE = "\ud800"


@pytest.mark.parametrize("where", ["push", "add", "local data", "new recorder", "experiment info"])
def test_lone_surrogate_key_is_refused_naming_it_and_nothing_is_lost(tmp_path, where):
    """A key '\\ud800' is refused where it is given, the error names it, the run saves every record."""
    collection = ExperimentCollection(tmp_path / "study", quiet=True)
    experiment = collection.new_experiment(tag="surrogate")
    worker = experiment.recorder.sub_recorder(role="worker")
    for seq in range(100):
        worker.push(seq=seq)
    attempts = {
        "push": lambda: worker.push({SURROGATE: 1, "seq": 100}),
        "add": lambda: worker.add({SURROGATE: 1}),
        "local data": lambda: worker.update({SURROGATE: 1}),
        "new recorder": lambda: Recorder({SURROGATE: 1}).set_parent(worker),
        "experiment info": lambda: collection.new_experiment({SURROGATE: 1}),
    }
    with pytest.raises(Exception) as refused:
        attempts[where]()
    assert repr(SURROGATE) in str(refused.value) or SURROGATE in str(refused.value)
    worker.push(seq=100)
    experiment.finish()
    assert only_run(tmp_path / "study")["status"] == "ok"
    assert_counted_once(tmp_path / "study", 101)


# -- a shared filesystem: who may read what was written ---------------------------------------

#: Writes four finished runs (three make a pack) and one run left open by a kill -9 (its journal).
MODES_WRITER = (
    "import os, signal, sys\n"
    "from rigorous_recorder import ExperimentCollection\n"
    "from rigorous_recorder.store import catalog\n"
    "catalog.PACK_MIN_RUNS = 3\n"
    "collection = ExperimentCollection(sys.argv[1], quiet=True)\n"
    "for run in range(4):\n"
    "    with collection.new_experiment(run=run) as recorder:\n"
    "        for step in range(25):\n"
    "            recorder.push(step=step, loss=1 / (step + 1))\n"
    "collection.new_experiment(run=4).recorder.push(step=0, loss=1.0)\n"
    "collection.flush()\n"
    "os.kill(os.getpid(), signal.SIGKILL)\n"
)
#: Reads the collection every way a user does; prints SQL's count, records' count, the statuses.
MODES_READER = (
    "import json, sys\n"
    "from rigorous_recorder import ExperimentCollection\n"
    "collection = ExperimentCollection(sys.argv[1], quiet=True)\n"
    "count = collection.sql('SELECT count(*) FROM records').fetchall()[0][0]\n"
    "print(json.dumps([count, len(collection.records), [run['status'] for run in collection.runs]]))\n"
)
NOBODY = 65534


def written_with_umask(umask: int, folder: Path) -> Path:
    """A collection written by a process whose umask is ``umask``, in a folder anyone may enter."""
    folder.mkdir(mode=0o755)
    path = folder / "study"
    written = subprocess.run([sys.executable, "-c", MODES_WRITER, str(path)], capture_output=True, text=True,
                             timeout=trials.PATIENCE, preexec_fn=lambda: os.umask(umask))
    assert written.returncode == -signal.SIGKILL, written.stderr
    return trials.collection_folder(path)


@pytest.fixture
def world_readable_folder():
    """A folder under /tmp that another user may enter (pytest's tmp_path is 0700)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to read as another user")
    with tempfile.TemporaryDirectory(prefix="rr-modes-") as folder:
        os.chmod(folder, 0o755)
        yield Path(folder)


def test_a_collection_written_with_umask_022_is_read_whole_by_another_user(world_readable_folder):
    """Written by root with umask 022: user nobody lists, queries and reads every record of it.

    Every file is 0644, as a plain open() makes it: run.json, records files and packs too
    (they are written to a temporary file and renamed into place).
    """
    collection = written_with_umask(0o022, world_readable_folder / "shared")
    assert list(collection.glob("catalog/pack-*.parquet")), "no pack was written"
    modes = {str(path.relative_to(collection)): stat.S_IMODE(path.stat().st_mode)
             for path in collection.rglob("*") if path.is_file()}
    assert {name: mode for name, mode in modes.items() if mode & 0o044 != 0o044} == {}
    as_nobody = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    runs = subprocess.run([*as_nobody, sys.executable, "-c", "import rigorous_recorder"], capture_output=True,
                          text=True, timeout=trials.PATIENCE)
    if runs.returncode != 0:  # a checkout in a folder only its owner may enter (as mktemp -d makes)
        pytest.skip(f"user nobody cannot run this checkout's Python, so only the modes were checked: "
                    f"{(runs.stderr.strip().splitlines() or ['?'])[-1]}")
    read = subprocess.run([*as_nobody, sys.executable, "-c", MODES_READER, str(collection)],
                          capture_output=True, text=True, timeout=trials.PATIENCE)
    assert read.returncode == 0, read.stderr
    assert json.loads(read.stdout) == [101, 101, ["ok", "ok", "ok", "ok", "crashed"]]
    listing = subprocess.run([*as_nobody, *trials.cli_command(), "ls", str(collection)],
                             capture_output=True, text=True, timeout=trials.PATIENCE)
    assert (listing.returncode, listing.stderr) == (0, "")
    assert [line.split()[2] for line in listing.stdout.splitlines()[2:] if line.strip()] == \
        ["ok", "ok", "ok", "ok", "crashed"], listing.stdout


def test_a_collection_written_with_umask_077_is_its_owners_alone(world_readable_folder):
    """Written with umask 077, every file is 0600 and every folder 0700."""
    collection = written_with_umask(0o077, world_readable_folder / "private")
    modes = {str(path.relative_to(collection)): stat.S_IMODE(path.stat().st_mode) for path in collection.rglob("*")}
    assert {name: oct(mode) for name, mode in modes.items() if mode & 0o077} == {}


# -- several processes, several hosts -----------------------------------------------------------


@pytest.mark.slow
def test_sixteen_writers_and_a_reader_never_crash_and_take_distinct_numbers(tmp_path):
    """16 writer processes beside a reader looping sql(), records and ls: no error, numbers 1 to 16.

    The reader is this process (sql() and records) plus one ``rigorous-recorder ls`` process
    after another.
    """
    path = tmp_path / "study"
    ExperimentCollection(path, quiet=True)
    writers = [trials.Writer(path, "small", "--runs", "1", "--records", "200", "--flush-interval", "0.2",
                             "--info", f"writer={index}") for index in range(16)]
    failures, loops, listings = [], 0, []
    while any(writer.process.poll() is None for writer in writers) or loops < 3:
        loops += 1
        try:
            collection = ExperimentCollection(path, quiet=True)
            collection.sql("SELECT count(*) FROM records").fetchall()
            len(collection.records)
        except Exception as error:
            failures.append(f"{type(error).__name__}: {error}")
        if not listings or listings[-1].poll() is not None:
            listings.append(subprocess.Popen([*trials.cli_command(), "ls", str(path)], stdout=subprocess.DEVNULL,
                                             stderr=subprocess.PIPE, text=True))
        time.sleep(0.2)  # a reader looks now and then; the writers need the two cores too
    assert [writer.end() for writer in writers] == [0] * 16, [writer.tail() for writer in writers]
    failures += [f"ls: {listing.stderr.read()}" for listing in listings if listing.wait(trials.PATIENCE) != 0]
    assert failures == []
    runs = ExperimentCollection(path, quiet=True).runs
    assert sorted(run["experiment_number"] for run in runs) == list(range(1, 17))
    assert {run["status"] for run in runs} == {"ok"}
    assert ExperimentCollection(path, quiet=True).sql("SELECT count(*) FROM records").fetchall() == [(16 * 200,)]


def unshare_prefix(hostname: str) -> tuple[str, ...]:
    """A command prefix that runs the rest in its own UTS namespace under ``hostname``."""
    probe = subprocess.run(["unshare", "--uts", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"unshare --uts is not permitted here: {probe.stderr.strip()}")
    return ("unshare", "--uts", "sh", "-c", f'hostname {hostname} && exec "$@"', "sh")


@pytest.mark.slow
def test_writer_on_another_host_killed_shows_crashed_once_its_heartbeat_is_stale(tmp_path):
    """A live writer on host node7 stays "running"; killed, it is "crashed" after the heartbeat timeout."""
    path = tmp_path / "study"
    writer = trials.Writer(path, "hold", "--records", "2000", "--flush", prefix=unshare_prefix("node7"))
    assert writer.wait_for("ready"), writer.tail()
    time.sleep(HEARTBEAT_TIMEOUT + 1.5)
    (alive,) = ExperimentCollection(path, quiet=True, heartbeat_timeout=HEARTBEAT_TIMEOUT).runs
    assert (alive["status"], alive["host"]) == ("running", "node7")
    writer.kill()
    deadline = time.time() + HEARTBEAT_TIMEOUT + 10
    while (status := only_status(path)) == "running" and time.time() < deadline:
        time.sleep(0.5)
    assert status == "crashed"
    assert_counted_once(path, 2_000)


def only_status(path: Path) -> str:
    (run,) = ExperimentCollection(path, quiet=True, heartbeat_timeout=HEARTBEAT_TIMEOUT).runs
    return run["status"]
