"""``collection.sql()`` keeps its views while no run changes, and sees every change at once."""

from __future__ import annotations

import datetime
import os
import shutil
import subprocess
import sys

import pytest

from rigorous_recorder import ExperimentCollection
from rigorous_recorder import query as query_module
from rigorous_recorder.store import catalog

COUNT = "SELECT count(*) FROM records"
PER_RUN = "SELECT run_id, status, count(*) FROM records GROUP BY ALL ORDER BY run_id"
RECORDS_KIND = "SELECT table_type FROM information_schema.tables WHERE table_name = 'records'"

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


def test_a_run_copied_over_from_elsewhere_shows_its_new_records(tmp_path):
    """A run whose files are copied over its folder's (as rsync of a collection recorded on another
    machine does: each file renamed into place, ``runs/`` and ``active/`` left as they were) is read
    anew at the next query."""
    source = ExperimentCollection(tmp_path / "source", quiet=True)
    record(source, 0.1, 3)
    run_id = source.runs[0]["id"]
    shutil.copytree(source.path, tmp_path / "mirror.collection")
    mirror = ExperimentCollection(tmp_path / "mirror", quiet=True, recover=False)
    assert ask(mirror, COUNT) == [(3,)]
    with source.resume(run_id) as recorder:
        recorder.push(step=3, loss=0.3)
    folders = [mirror.path / "runs", mirror.path / "active"]
    times = [os.stat(folder).st_mtime_ns for folder in folders]
    for copied in sorted((source.path / "runs" / run_id).iterdir(), key=lambda path: path.name == "run.json"):
        if copied.is_file():
            shutil.copy2(copied, mirror.path / "runs" / run_id / f".{copied.name}.partial")
            os.replace(mirror.path / "runs" / run_id / f".{copied.name}.partial", mirror.path / "runs" / run_id / copied.name)
    assert [os.stat(folder).st_mtime_ns for folder in folders] == times
    assert ask(mirror, COUNT) == [(4,)]


def test_runs_packed_by_another_reader_answer_the_same(tmp_path, monkeypatch):
    """Runs another collection object gathers into a pack after the views were built answer the
    same; a packed run deleted since is gone from the next answer."""
    monkeypatch.setattr(catalog, "PACK_MIN_RUNS", 3)
    writer = ExperimentCollection(tmp_path / "study", quiet=True, recover=False)
    for number in range(3):
        record(writer, 0.1 * (number + 1), number + 2)
    reader = ExperimentCollection(tmp_path / "study", quiet=True, recover=False)
    expected = ask(reader, PER_RUN)
    assert not list((reader.path / "catalog").glob("pack-*"))
    ExperimentCollection(tmp_path / "study", quiet=True).sql(COUNT).fetchall()  # packs them
    assert list((reader.path / "catalog").glob("pack-*"))
    assert ask(reader, PER_RUN) == expected
    shutil.rmtree(reader.path / "runs" / expected[0][0])
    assert ask(reader, PER_RUN) == expected[1:]


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


def test_values_of_every_kind_kept_in_memory_answer_as_the_files_do(tmp_path):
    """Mixed kinds (a key's odd values in its JSON companion), lists, dicts, times and missing
    values, inherited and own, read the same from the table in memory as from the files."""
    collection = ExperimentCollection(tmp_path / "study", quiet=True)
    for number, extra in enumerate(({"tags": ["a", "b"]}, {"tags": {"a": 1}}, {})):
        with collection.new_experiment(lr=0.1 * (number + 1), **extra) as recorder:
            recorder.push(step=0, value=1, when=datetime.datetime(2026, 1, number + 1, tzinfo=datetime.timezone.utc))
            recorder.push(step=1, value="high", shape=[[1.5, None], []])
            recorder.push(step=2, value=None, config={"depth": number, "name": "mlp"})
    collection.sql("SET threads = 1")
    query = "SELECT * FROM records"
    first = collection.sql(query).fetchall()
    assert "value~json" in [name for name, *_ in collection.sql("DESCRIBE records").fetchall()]
    assert ask(collection, query) == first
    assert collection.sql(RECORDS_KIND).fetchall() == [("LOCAL TEMPORARY",)]


def test_a_relation_made_before_the_records_were_kept_in_memory_still_reads(study):
    """A relation from the first query answers after later queries kept the records in memory."""
    relation = study.sql("SELECT lr, count(*) FROM records GROUP BY lr ORDER BY lr")
    ask(study, COUNT)
    assert relation.fetchall() == [(0.1, 3), (0.2, 4)]


def test_records_asked_again_become_one_table(study):
    """From the second query of an unchanged collection, ``records`` is one table in memory:
    later queries join nothing."""
    assert study.sql(RECORDS_KIND).fetchall() == [("VIEW",)]
    assert study.sql(RECORDS_KIND).fetchall() == [("LOCAL TEMPORARY",)]
    assert study._query_cache.in_memory


def test_records_too_wide_for_one_table_keep_only_their_stored_values(study, monkeypatch):
    """When ``records`` whole (its inherited columns counted) would take more cells than the
    limit but the stored records would not, only those are kept in memory, with the same answers."""
    expected = study.sql("SELECT * FROM records ORDER BY ALL").fetchall()
    rows, width = len(expected), len(expected[0])
    monkeypatch.setattr(query_module, "IN_MEMORY_CELLS", rows * width - 1)
    assert ask(study, "SELECT * FROM records ORDER BY ALL") == expected
    assert study._query_cache.in_memory
    assert study.sql(RECORDS_KIND).fetchall() == [("VIEW",)]


def test_a_relation_kept_from_before_a_change_answers_as_then(study):
    """A relation made once ``records`` was one table answers from the runs of that time after
    the collection changed and its new views were kept in memory too."""
    ask(study, PER_RUN)
    before = study.sql(PER_RUN)
    expected = before.fetchall()
    shutil.rmtree(study.path / "runs" / study.runs[0]["id"])
    assert ask(study, PER_RUN) == expected[1:]
    assert before.fetchall() == expected


def test_a_relation_from_before_a_new_run_answers_as_then(study, tmp_path):
    """A relation made before a run of another schema came (its records never kept in memory)
    answers from the runs of that time, never their records under another run's keys."""
    with ExperimentCollection(tmp_path / "study", quiet=True).resume(study.runs[1]["id"]) as recorder:
        recorder.push(step=4, loss=0.8, extra=1)  # the later run's records file now has another schema
    query = "SELECT lr, count(*) FROM records GROUP BY lr ORDER BY lr"
    before = study.sql(query)
    expected = before.fetchall()
    record(ExperimentCollection(tmp_path / "study", quiet=True), 0.05, 6)
    assert ask(study, query) == [(0.05, 6), *expected]
    assert before.fetchall() == expected


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
