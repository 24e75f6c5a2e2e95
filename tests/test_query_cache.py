"""``collection.sql()`` keeps its views while no run changes, and sees every change at once."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from rigorous_recorder import ExperimentCollection
from rigorous_recorder import query as query_module
from rigorous_recorder.store import catalog

COUNT = "SELECT count(*) FROM records"
PER_RUN = "SELECT run_id, status, count(*) FROM records GROUP BY ALL ORDER BY run_id"

#: Records into a collection from another process: a run, one record per line read, each
#: flushed (and acknowledged) before the next line; end of input finishes the run.
WRITER = """
import sys
from rigorous_recorder import ExperimentCollection

collection = ExperimentCollection(sys.argv[1], quiet=True)
with collection.new_experiment(lr=0.5) as recorder:
    print("started", flush=True)
    for line in sys.stdin:
        recorder.push(step=int(line))
        collection.flush()
        print("flushed", flush=True)
print("finished", flush=True)
"""


def record(collection: ExperimentCollection, lr: float, steps: int) -> str:
    """One finished run of ``steps`` records; returns its id."""
    experiment = collection.new_experiment(lr=lr)
    with experiment as recorder:
        for step in range(steps):
            recorder.push(step=step, loss=lr * step)
    return experiment.id


def ask(collection: ExperimentCollection, query: str, times: int = 3) -> list[tuple]:
    """The answer to ``query``, asked ``times`` in a row (past the point where records are kept
    in memory); every answer must be the same."""
    answers = [collection.sql(query).fetchall() for _ in range(times)]
    assert all(answer == answers[0] for answer in answers)
    return answers[0]


@pytest.fixture
def study(tmp_path) -> ExperimentCollection:
    """A collection of two finished runs of 3 and 4 records."""
    collection = ExperimentCollection(tmp_path / "study", quiet=True)
    record(collection, 0.1, 3)
    record(collection, 0.2, 4)
    return collection


def test_an_unchanged_collection_keeps_its_views(study):
    """Asking again while no run changed reuses the views (and their records kept in memory)."""
    study.sql(COUNT).fetchall()
    views = study._query_cache
    assert ask(study, COUNT, times=4) == [(7,)]
    assert study._query_cache is views


def test_a_new_run_of_another_writer_appears(study, tmp_path):
    """A run another collection object records after the views were built is in the next answer."""
    assert ask(study, COUNT) == [(7,)]
    record(ExperimentCollection(tmp_path / "study", quiet=True), 0.3, 5)
    assert ask(study, COUNT) == [(12,)]
    assert ask(study, "SELECT DISTINCT lr FROM records ORDER BY lr") == [(0.1,), (0.2,), (0.3,)]


def test_a_deleted_run_disappears(study):
    """A run whose folder is deleted is gone from the next answer."""
    assert ask(study, COUNT) == [(7,)]
    shutil.rmtree(study.path / "runs" / study.runs[0]["id"])
    assert ask(study, COUNT) == [(4,)]


def test_a_run_resumed_by_another_writer_adds_its_records(study, tmp_path):
    """Records of a run another collection object resumed and finished are in the next answer."""
    assert ask(study, COUNT) == [(7,)]
    run_id = study.runs[0]["id"]
    with ExperimentCollection(tmp_path / "study", quiet=True).resume(run_id) as recorder:
        recorder.push(step=3, loss=0.3)
    assert ask(study, COUNT) == [(8,)]
    assert ask(study, f"SELECT count(*) FROM records WHERE run_id = '{run_id}'") == [(4,)]


def test_records_of_a_running_run_of_this_process_appear_at_once(study):
    """Each record pushed into a running run is in the very next answer; so is its finish."""
    experiment = study.new_experiment(lr=0.3)
    with experiment as recorder:
        for expected in range(8, 11):
            recorder.push(step=expected)
            assert ask(study, COUNT) == [(expected,)]
        assert ask(study, f"SELECT status FROM records WHERE run_id = '{experiment.id}' LIMIT 1") == [("running",)]
    assert ask(study, f"SELECT status, count(*) FROM records WHERE run_id = '{experiment.id}' GROUP BY 1") \
        == [("ok", 3)]


@pytest.mark.slow
def test_records_of_a_running_run_of_another_process_appear_once_flushed(study, tmp_path):
    """A run recorded by another process: each flushed record, then its finish, are in the next answer."""
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path / "study")], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline() == "started\n"
        assert ask(study, COUNT) == [(7,)]
        for step in range(3):
            writer.stdin.write(f"{step}\n")
            writer.stdin.flush()
            assert writer.stdout.readline() == "flushed\n"
            assert ask(study, COUNT) == [(8 + step,)]
        assert ask(study, "SELECT DISTINCT status FROM records WHERE lr = 0.5") == [("running",)]
        writer.stdin.close()
        assert writer.stdout.readline() == "finished\n"
    finally:
        writer.stdin.close()
        writer.wait(timeout=60)
    assert ask(study, "SELECT status, count(*) FROM records WHERE lr = 0.5 GROUP BY 1") == [("ok", 3)]


def test_records_kept_in_memory_answer_as_the_files_do(study):
    """Rows, their order (one thread) and every column are the same before and after the
    records are kept in memory."""
    study.sql("SET threads = 1")
    first = study.sql("SELECT * FROM records").fetchall()
    assert ask(study, "SELECT * FROM records") == first
    assert ask(study, "SELECT * FROM experiments ORDER BY run_id") == study.sql(
        "SELECT * FROM experiments ORDER BY run_id").fetchall()


def test_a_relation_made_before_the_records_were_kept_in_memory_still_reads(study):
    """A relation from the first query answers after later queries kept the records in memory."""
    relation = study.sql("SELECT lr, count(*) FROM records GROUP BY lr ORDER BY lr")
    ask(study, COUNT)
    assert relation.fetchall() == [(0.1, 3), (0.2, 4)]


def test_records_beyond_the_memory_limit_stay_in_their_files(study, monkeypatch):
    """A collection whose records would take more cells than the limit is read from its files
    at every query, with the same answers."""
    monkeypatch.setattr(query_module, "IN_MEMORY_CELLS", 10)
    assert ask(study, PER_RUN, times=4) == [(run["id"], "ok", count) for run, count in zip(study.runs, (3, 4))]
    assert not study._query_cache.in_memory


def test_packed_runs_kept_in_memory_answer_as_the_pack_does(tmp_path, monkeypatch):
    """Runs read from a pack, one of them resumed since (its packed rows skipped), answer the
    same once kept in memory."""
    monkeypatch.setattr(catalog, "PACK_MIN_RUNS", 3)
    collection = ExperimentCollection(tmp_path / "study", quiet=True)
    for number in range(4):
        record(collection, 0.1 * (number + 1), number + 2)
    assert list((collection.path / "catalog").glob("pack-*"))
    with ExperimentCollection(tmp_path / "study", quiet=True).resume(collection.runs[0]["id"]) as recorder:
        recorder.push(step=9, loss=9.0)
    query = "SELECT run_id, status, lr, step, loss FROM records ORDER BY ALL"
    expected = ExperimentCollection(tmp_path / "study", quiet=True, recover=False).sql(query).fetchall()
    assert len(expected) == 2 + 3 + 4 + 5 + 1
    reader = ExperimentCollection(tmp_path / "study", quiet=True, recover=False)
    assert ask(reader, query) == expected
    assert reader._query_cache.in_memory


def test_reload_rebuilds_the_views(study):
    """``reload()`` forgets the views: the next query builds them anew."""
    ask(study, COUNT)
    views = study._query_cache
    study.reload()
    assert ask(study, COUNT) == [(7,)]
    assert study._query_cache is not views
