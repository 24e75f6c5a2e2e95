"""Durability and concurrency of a collection, with real processes and a real SIGKILL."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from rigorous_recorder import ExperimentCollection

from .conftest import statuses

WORKER = Path(__file__).parent / "scripts" / "experiment_worker.py"
#: Records pushed before the worker says "ready": not a multiple of the 4,096 rows a recorder
#: seals by itself, so the last 904 survive only if the flush really wrote them.
FLUSHED = 5_000
#: Long enough that no automatic flush runs before the kill in the explicit-flush tests.
NO_AUTOMATIC_FLUSH = 600.0


def start_worker(path: Path, mode: str, records: int, flush_interval: float | None = None) -> subprocess.Popen[str]:
    """Start tests/scripts/experiment_worker.py on the collection at ``path`` (None: default interval)."""
    interval = [] if flush_interval is None else [str(flush_interval)]
    return subprocess.Popen(
        [sys.executable, str(WORKER), str(path), mode, str(records), *interval],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def kill_when_ready(process: subprocess.Popen[str]) -> None:
    """Wait for the worker's "ready" line, let it push a little more, then SIGKILL it."""
    line = process.stdout.readline()
    assert line == "ready\n", process.stderr.read()
    try:
        process.wait(timeout=0.3)
    except subprocess.TimeoutExpired:
        pass
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL


def crashed_collection(
    tmp_path: Path, mode: str, flush_interval: float | None = NO_AUTOMATIC_FLUSH
) -> ExperimentCollection:
    """A collection whose only run was killed after the worker flushed FLUSHED records."""
    kill_when_ready(start_worker(tmp_path / "study", mode, FLUSHED, flush_interval))
    return ExperimentCollection(tmp_path / "study", quiet=True)


@pytest.fixture(scope="module")
def killed_after_flush(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A collection whose only run was killed after ``collection.flush()`` of FLUSHED records,
    never opened since: each test opens its own copy (opening recovers the run)."""
    path = tmp_path_factory.mktemp("killed") / "study"
    kill_when_ready(start_worker(path, "flush", FLUSHED, NO_AUTOMATIC_FLUSH))
    return path


def copy_of(template: Path, tmp_path: Path) -> Path:
    """A copy of the collection at ``template`` in ``tmp_path``, under the same name."""
    shutil.copytree(template.with_suffix(".collection"), (tmp_path / template.name).with_suffix(".collection"))
    return tmp_path / template.name


def assert_clean_prefix(collection: ExperimentCollection) -> None:
    """The run's records are index 0..k-1 in order, with k at least FLUSHED."""
    indexes = [record["index"] for record in collection.records]
    assert len(indexes) >= FLUSHED
    assert indexes == list(range(len(indexes)))


# -- durability ----------------------------------------------------------------------------


def test_collection_flush_survives_sigkill_as_a_clean_prefix(tmp_path, killed_after_flush):
    """After ``collection.flush()`` a SIGKILL keeps every flushed record, in order, with no gap."""
    assert_clean_prefix(ExperimentCollection(copy_of(killed_after_flush, tmp_path), quiet=True))


def test_recorder_flush_survives_sigkill_as_a_clean_prefix(tmp_path):
    """After a recorder's ``flush()`` a SIGKILL keeps every flushed record, in order, with no gap."""
    assert_clean_prefix(crashed_collection(tmp_path, "recorder-flush"))


def test_automatic_flush_within_a_second_survives_sigkill(tmp_path):
    """With the default flush_interval, records older than 1.5 s survive a SIGKILL without any flush call."""
    assert_clean_prefix(crashed_collection(tmp_path, "wait", flush_interval=None))


def test_flush_interval_is_configurable(tmp_path):
    """With flush_interval=0.1, records older than 0.15 s survive a SIGKILL without any flush call."""
    assert_clean_prefix(crashed_collection(tmp_path, "wait", flush_interval=0.1))


def test_killed_run_is_marked_crashed_with_had_error(tmp_path, killed_after_flush):
    """The killed run's run.json says status "crashed" and had_error=True, and so do its records."""
    collection = ExperimentCollection(copy_of(killed_after_flush, tmp_path), quiet=True)
    (run,) = collection.runs
    assert (run["status"], run["had_error"], run["experiment_number"], run["error_number"]) == ("crashed", True, 1, 1)
    assert {record["had_error"] for record in collection.records} == {True}
    assert run["records_count"] == len(collection)


def test_quiet_collection_recovers_a_killed_run_silently(tmp_path, capsys, killed_after_flush):
    """Opening with quiet=True marks the killed run crashed without printing anything."""
    collection = ExperimentCollection(copy_of(killed_after_flush, tmp_path), quiet=True)
    assert collection.runs[0]["status"] == "crashed"
    assert capsys.readouterr() == ("", "")


def test_loud_collection_reports_a_recovered_crash_on_stderr(tmp_path, capsys, killed_after_flush):
    """Opening without quiet says on stderr that the killed run crashed and its flushed records are kept."""
    collection = ExperimentCollection(copy_of(killed_after_flush, tmp_path))
    run_id = collection.runs[0]["id"]
    assert capsys.readouterr().err.endswith(f"experiment 1 ({run_id}) crashed; its 5,000 flushed records are kept\n")


def test_killed_run_leaves_one_readable_parquet_file(tmp_path, killed_after_flush):
    """Opening the collection compacts the killed run into one Parquet file that pyarrow reads whole."""
    collection = ExperimentCollection(copy_of(killed_after_flush, tmp_path), quiet=True)
    (run,) = collection.runs
    folder = collection.path / "runs" / run["id"]
    assert sorted(path.name for path in folder.iterdir()) == ["records-1.parquet", "run.json"]
    assert pq.read_table(folder / "records-1.parquet").num_rows == run["records_count"]


@pytest.mark.slow  # two killed processes, then a run: 11 s here
def test_run_after_a_crash_takes_the_failed_run_number(tmp_path):
    """The run after a killed run gets the same number with error_number 2 on a second crash, then 0 on success."""
    crashed_collection(tmp_path, "flush")
    collection = crashed_collection(tmp_path, "flush")
    with collection.new_experiment() as recorder:
        recorder.push(index=0)
    assert statuses(collection) == [(1, 1, "crashed"), (1, 2, "crashed"), (1, 0, "ok")]


def test_crashed_run_can_be_resumed_to_append_records(tmp_path, killed_after_flush):
    """A killed run reopened with resume() keeps its number and appends after its surviving records."""
    collection = ExperimentCollection(copy_of(killed_after_flush, tmp_path), quiet=True)
    run = collection.runs[0]
    kept = run["records_count"]
    with collection.resume(run["id"]) as recorder:
        (worker,) = recorder.children
        assert len(worker) == kept
        worker.push(index=kept)
    assert (collection.runs[0]["status"], collection.runs[0]["experiment_number"]) == ("ok", 1)
    assert_clean_prefix(collection)
    assert len(collection) == kept + 1


# -- several processes ---------------------------------------------------------------------


@pytest.mark.slow  # eight processes at once: 20 s here
def test_eight_processes_sharing_a_collection_never_collide_or_lose_records(tmp_path):
    """Eight concurrent runs get numbers 1..8, each keeps exactly its 3,000 records, every file reads whole."""
    workers = [start_worker(tmp_path / "study", "finish", 3_000, 0.05) for _ in range(8)]
    for worker in workers:
        _, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err
    collection = ExperimentCollection(tmp_path / "study", quiet=True)
    runs = collection.runs
    assert sorted(run["experiment_number"] for run in runs) == list(range(1, 9))
    assert sorted(collection.sql("SELECT worker FROM experiments").fetchall()) == sorted((w.pid,) for w in workers)
    assert [(run["status"], run["records_count"]) for run in runs] == [("ok", 3_000)] * 8
    for number in range(1, 9):
        assert [record["index"] for record in collection[number]] == list(range(3_000))
    for path in collection.path.glob("runs/*/records-*.parquet"):
        assert pq.read_table(path).num_rows == 3_000
    assert collection.sql("SELECT count(DISTINCT worker), count(*) FROM records").fetchall() == [(8, 24_000)]


# -- memory --------------------------------------------------------------------------------


@pytest.mark.slow  # 10,000,000 records: 8 s of CPU, 30 s here
def test_memory_stays_bounded_while_recording_ten_million_records(tmp_path):
    """RSS grows by less than 100 MB while one run records 10,000,000 two-key records."""
    worker = start_worker(tmp_path / "study", "memory", 10_000_000)
    out, err = worker.communicate(timeout=300)
    assert worker.returncode == 0, err
    growth = int(out)
    assert growth < 100_000_000, f"RSS grew by {growth / 1e6:.1f} MB"
    assert ExperimentCollection(tmp_path / "study", quiet=True).runs[0]["records_count"] == 10_000_000


def test_resumed_run_killed_again_keeps_both_sessions_records(tmp_path):
    """A run resumed in another process and killed there keeps its first records and the flushed new ones."""
    collection = ExperimentCollection(tmp_path / "study", quiet=True)
    with collection.new_experiment() as recorder:
        worker = recorder.sub_recorder(role="worker")
        for index in range(10):
            worker.push(index=index)
    run_id = collection.runs[0]["id"]
    script = (
        "import itertools, sys, time\n"
        "from rigorous_recorder import ExperimentCollection\n"
        f"collection = ExperimentCollection({str(tmp_path / 'study')!r}, quiet=True, flush_interval=600)\n"
        f"(worker,) = collection.resume({run_id!r}).recorder.children\n"
        f"for index in range(10, {FLUSHED}):\n"
        "    worker.push(index=index, extra=1.5)\n"
        "collection.flush()\n"
        "print('ready', flush=True)\n"
        f"for index in itertools.count({FLUSHED}):\n"
        "    worker.push(index=index)\n"
        "    time.sleep(0.001)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    kill_when_ready(process)
    reopened = ExperimentCollection(tmp_path / "study", quiet=True)
    assert_clean_prefix(reopened)
    assert [(run["status"], run["session"], run["experiment_number"]) for run in reopened.runs] == [("crashed", 2, 1)]
    assert reopened.sql("SELECT count(extra) FROM records WHERE index < 10").fetchall() == [(0,)]
    assert reopened.sql(f"SELECT count(extra) FROM records WHERE index < {FLUSHED}").fetchall() == [(FLUSHED - 10,)]
