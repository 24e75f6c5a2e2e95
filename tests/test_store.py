"""The run store and its journal: bounded files, torn ends, damage, concurrent flushes."""

from __future__ import annotations

import json
import os
import random
import statistics
import threading
import time

import pyarrow as pa
import pytest

from rigorous_recorder import ExperimentCollection, InvalidKeyError, Recorder
from rigorous_recorder._hotpath import COMPILED
from rigorous_recorder.recorder import BATCH_ROWS
from rigorous_recorder.store.journal import JournalDamage, JournalWriter, decode_batch, read_journal, tree_frame
from rigorous_recorder.store.run_store import RunStore


def open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_torn_last_frame_is_skipped_quietly(tmp_path):
    """A journal cut in the middle of its last frame gives every whole frame before it."""
    path = tmp_path / "1-0.rrj"
    writer = JournalWriter(path)
    writer.append([tree_frame(b"[1]"), tree_frame(b"[2]")])
    writer.close()
    data = path.read_bytes()
    path.write_bytes(data[:-1])
    assert [payload for _, payload in read_journal(path)] == [b"[1]"]


def test_a_bad_frame_before_the_end_is_reported_after_the_good_ones(tmp_path):
    """A frame whose checksum fails in the middle of a journal is damage, not a torn end."""
    path = tmp_path / "1-0.rrj"
    writer = JournalWriter(path)
    writer.append([tree_frame(b"[1]"), tree_frame(b"[2]"), tree_frame(b"[3]")])
    writer.close()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    found = []
    with pytest.raises(JournalDamage, match="1-0.rrj"):
        for _, payload in read_journal(path):
            found.append(payload)
    assert found == [b"[1]"]


def test_open_files_stay_bounded_with_thousands_of_recorders(tmp_path):
    """One journal per run, however many recorders: 3,000 episode recorders open no file each."""
    collection = ExperimentCollection(tmp_path / "study", quiet=True, flush_interval=0.01)
    before = open_files()
    experiment = collection.new_experiment()
    for episode in range(3_000):
        Recorder(episode=episode).set_parent(experiment.recorder).push(reward=float(episode))
    experiment.flush()
    assert open_files() - before <= 3
    experiment.finish()
    assert collection.sql("SELECT count(*), sum(reward) FROM records").fetchall() == [(3_000, sum(range(3_000)))]


def test_pushes_racing_a_fast_flusher_lose_nothing(tmp_path):
    """The flusher swaps unsealed rows away every millisecond while two threads push: every row arrives."""
    collection = ExperimentCollection(tmp_path / "study", quiet=True, flush_interval=0.001)
    experiment = collection.new_experiment()
    recorders = [Recorder(thread=index).set_parent(experiment.recorder) for index in range(2)]

    def push_many(recorder: Recorder) -> None:
        for step in range(60_000):
            recorder.push(step=step, value=step * 0.5)

    threads = [threading.Thread(target=push_many, args=(recorder,)) for recorder in recorders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [len(recorder) for recorder in recorders] == [60_000, 60_000]
    experiment.finish()
    rows = collection.sql("SELECT thread, count(*), count(DISTINCT step), sum(step) FROM records "
                          "GROUP BY thread ORDER BY thread").fetchall()
    assert rows == [(0, 60_000, 60_000, sum(range(60_000))), (1, 60_000, 60_000, sum(range(60_000)))]


@pytest.mark.skipif(not COMPILED, reason="the unlocked push needs the compiled hot path")
def test_push_inside_a_collection_takes_the_unlocked_fast_path(tmp_path):
    """After its first push, a run's recorder appends plain rows without the store's lock."""
    experiment = ExperimentCollection(tmp_path / "study", quiet=True).new_experiment()
    recorder = Recorder().set_parent(experiment.recorder)
    recorder.push(x=1.0)
    with experiment.root.store.lock:  # held by another thread, a locked push would block
        done = threading.Event()
        threading.Thread(target=lambda: (recorder.push(x=2.0), done.set())).start()
        assert done.wait(5)
    experiment.finish()


@pytest.mark.parametrize("place", ["push", "add", "local data", "experiment info"])
def test_a_lone_surrogate_key_is_refused_by_name_and_nothing_is_lost(collection, place):
    """A key no file can store is refused where it is given; what was recorded before is kept."""
    with collection.new_experiment() as recorder:
        recorder.push(x=1)
        with pytest.raises(InvalidKeyError, match="surrogate"):
            if place == "push":
                recorder.push({"\ud800": 1})
            elif place == "add":
                recorder.add({"bad\udfff": 1})
            elif place == "local data":
                recorder["\ud800"] = 1
            else:
                collection.new_experiment({"\ud800": 1})
    assert collection.sql("SELECT count(*) FROM records").fetchall() == [(1,)]


def test_a_damaged_run_is_listed_and_its_number_never_reused(collection):
    """A garbled run.json makes its run 'damaged' (naming the file); the next run takes a new number."""
    with collection.new_experiment() as recorder:
        recorder.push(x=1)
    (run,) = collection.runs
    (collection.path / "runs" / run["id"] / "run.json").write_bytes(b"\xff\xfe not json")
    (damaged,) = collection.runs
    assert damaged["status"] == "damaged" and "run.json" in damaged["error"]
    with collection.new_experiment() as recorder:
        recorder.push(x=2)
    assert [info["experiment_number"] for info in collection.runs] == [1, 2]
    assert collection.sql("SELECT x FROM records").fetchall() == [(2,)]


def test_a_records_name_outside_the_run_folder_is_damage_not_read(collection):
    """run.json naming '../x.parquet' is never followed."""
    with collection.new_experiment() as recorder:
        recorder.push(x=1)
    path = collection.path / "runs" / collection.runs[0]["id"] / "run.json"
    info = json.loads(path.read_text())
    path.write_text(json.dumps({**info, "records": "../../elsewhere.parquet"}))
    (run,) = collection.runs
    assert run["status"] == "damaged" and "not in its run folder" in run["error"]


def test_a_batch_frame_written_with_arrow_compressing_each_buffer_still_reads(tmp_path):
    """Journals written before batch frames were compressed whole (Arrow's per-buffer LZ4) stay readable."""
    batch = pa.record_batch({"x": pa.array([1, None, 3]), "name": pa.array(["a", "b", None])})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema, options=pa.ipc.IpcWriteOptions(compression="lz4")) as stream:
        stream.write_batch(batch)
    assert decode_batch(sink.getvalue().to_pybytes()).equals(batch)


def test_rows_keep_their_commit_order_when_batches_of_two_types_are_flushed_together(tmp_path):
    """Batches sealed while a key holds ints, then strings, then ints again, flushed at once, read
    back in commit order, in the recording process and from disk by another reader."""
    collection = ExperimentCollection(tmp_path / "study", quiet=True, flush_interval=600)
    experiment = collection.new_experiment()
    worker = experiment.recorder.sub_recorder(role="worker")
    kinds = (int, str, int)
    for seq in range(len(kinds) * BATCH_ROWS):
        worker.push(seq=seq, value=kinds[seq // BATCH_ROWS](seq))
    collection.flush()
    expected = list(range(len(kinds) * BATCH_ROWS))
    assert [record["seq"] for record in worker] == expected
    reader = ExperimentCollection(tmp_path / "study", quiet=True)
    assert [record["seq"] for record in reader.records if record.get("role") == "worker"] == expected
    experiment.finish()


def test_the_flusher_starts_a_flush_every_interval_even_when_flushes_are_slow(tmp_path, monkeypatch):
    """A flush taking 0.15 s of a 0.2 s interval does not stretch the period to 0.35 s: the next
    flush starts 0.2 s after the last one began (records wait one interval, not interval + flush)."""
    starts: list[float] = []
    flush = RunStore.flush

    def slow_flush(self: RunStore) -> None:
        starts.append(time.monotonic())
        time.sleep(0.15)
        flush(self)

    monkeypatch.setattr(RunStore, "flush", slow_flush)
    experiment = ExperimentCollection(tmp_path / "study", quiet=True, flush_interval=0.2).new_experiment()
    time.sleep(2.1)
    gaps = [later - earlier for earlier, later in zip(starts, starts[1:])]
    experiment.finish()
    assert len(gaps) >= 5
    assert statistics.median(gaps) < 0.3


@pytest.mark.slow
def test_a_flush_of_sparse_records_costs_a_fraction_of_committing_them(tmp_path):
    """2,000 records of 8 keys out of 400 (sealed early into ~90 small batches) flush in under half
    the CPU time their commits took (compressing each batch's buffers one by one cost as much as
    the commits)."""
    collection = ExperimentCollection(tmp_path / "study", quiet=True, flush_interval=600)
    experiment = collection.new_experiment()
    worker = experiment.recorder.sub_recorder(role="worker")
    chooser = random.Random(7)
    ratios = []
    for _ in range(3):
        started = time.process_time()
        for seq in range(2_000):
            worker.add({f"key_{key}": seq for key in chooser.sample(range(400), 8)})
            worker.add(seq=seq).commit()
        committed = time.process_time()
        collection.flush()
        ratios.append((time.process_time() - committed) / (committed - started))
    experiment.finish()
    assert statistics.median(ratios) < 0.5


def test_a_finisher_tidying_late_leaves_the_journal_of_a_resume_that_came_first(tmp_path):
    """A finisher writes run.json (status ok), then removes what it merged. Another process may
    resume the run in between: the finisher's tidying must leave the new session's journal."""
    from rigorous_recorder.store.run_folder import RunFolder

    collection = ExperimentCollection(tmp_path / "study", quiet=True)
    with collection.new_experiment() as recorder:
        recorder.push(step=0)
    (run,) = collection.runs
    folder = RunFolder(collection.path / "runs" / run["id"])
    finished = folder.read_info()  # what the finisher holds when it tidies
    resumed = ExperimentCollection(collection.path, quiet=True).resume(run["id"])
    resumed.recorder.push(step=1)
    resumed.flush()
    folder.remove_leftovers(finished)  # the finisher's last step, late
    resumed.recorder.push(step=2)
    resumed.finish()
    assert collection.sql("SELECT step FROM records ORDER BY step").fetchall() == [(0,), (1,), (2,)]
