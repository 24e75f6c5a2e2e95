"""ExperimentCollection: storage, numbering, the six keys, errors, reading and resuming."""

from __future__ import annotations

import gc
import json
import os
import pickle
import platform
import socket
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from rigorous_recorder import (
    CollectionError,
    Experiment,
    ExperimentCollection,
    Recorder,
    RecorderError,
    RecorderTreeError,
    UnsupportedValueError,
)

from .conftest import statuses

SIX_KEYS = (
    "experiment_number",
    "error_number",
    "had_error",
    "experiment_start_time",
    "experiment_end_time",
    "experiment_duration",
)


def run_ok(collection: ExperimentCollection, values: range = range(3), **info: object) -> Experiment:
    """Run one successful experiment that pushes ``index`` for each of ``values``."""
    experiment = collection.new_experiment(**info)
    child = Recorder(role="child").set_parent(experiment.recorder)
    for index in values:
        child.push(index=index)
    experiment.finish()
    return experiment


def run_failing(collection: ExperimentCollection) -> None:
    """Run one experiment that raises inside its ``with`` block."""
    with pytest.raises(RuntimeError), collection.new_experiment() as recorder:
        recorder.sub_recorder(role="child").push(index=0)
        raise RuntimeError("failed on purpose")


class Marker:
    """Unpickling this creates the file ``path``."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return open, (self.path, "w")


# -- the folder ----------------------------------------------------------------------------


def test_collection_is_stored_in_path_plus_collection_suffix(collection, tmp_path):
    """The collection's files live in ``path + ".collection"``."""
    run_ok(collection)
    assert collection.path == tmp_path / "study.collection"
    assert sorted(path.name for path in (tmp_path / "study.collection").iterdir()) == [
        "active", "collection.json", "numbering.lock", "runs", "verified.json",
    ]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["study.collection"]


def test_quiet_collection_prints_nothing(collection, capsys):
    """With quiet=True creating, running, failing and recovering print nothing at all."""
    run_ok(collection)
    run_failing(collection)
    collection.records[0]
    assert capsys.readouterr() == ("", "")


def test_loud_collection_reports_saved_experiments_on_stderr(tmp_path, capsys):
    """Without quiet the collection tells on stderr where each experiment was saved."""
    collection = ExperimentCollection(tmp_path / "study")
    experiment = run_ok(collection)
    out, err = capsys.readouterr()
    assert out == ""
    assert f"experiment 1 saved: 3 records in {experiment.folder.path}" in err


def test_path_that_is_a_file_raises_collection_error(tmp_path):
    """A file sitting where the collection folder would go is refused, and left alone."""
    (tmp_path / "study.collection").write_text("not a folder")
    with pytest.raises(CollectionError, match="exists and is not a folder"):
        ExperimentCollection(tmp_path / "study", quiet=True)
    assert (tmp_path / "study.collection").read_text() == "not a folder"


def test_create_false_on_missing_collection_raises_and_creates_nothing(tmp_path):
    """create=False on a path without a collection raises CollectionError and writes no file."""
    with pytest.raises(CollectionError, match="is not a rigorous_recorder collection"):
        ExperimentCollection(tmp_path / "missing", quiet=True, create=False)
    assert list(tmp_path.iterdir()) == []


def test_create_false_opens_an_existing_collection(tmp_path):
    """create=False opens a collection that exists and sees its runs."""
    run_ok(ExperimentCollection(tmp_path / "study", quiet=True))
    assert len(ExperimentCollection(tmp_path / "study", quiet=True, create=False)) == 3


# -- running experiments -------------------------------------------------------------------


def test_with_block_yields_the_experiment_recorder_holding_experiment_info(collection):
    """``with new_experiment(**info) as recorder`` yields a Recorder whose local data is the info."""
    with collection.new_experiment(learning_rate=0.1, optimizer="adam") as recorder:
        assert isinstance(recorder, Recorder)
        assert dict(recorder.local_data) == {"learning_rate": 0.1, "optimizer": "adam"}
        recorder.sub_recorder(episode=1).push(x=1)
    assert collection.records[0] == {
        "x": 1, "episode": 1, "learning_rate": 0.1, "optimizer": "adam",
        **{key: collection.records[0][key] for key in SIX_KEYS},
    }


def test_experiment_without_with_records_after_finish(collection):
    """An experiment used without ``with``: push through ``exp.recorder``, then ``finish(error=None)``."""
    experiment = collection.new_experiment(name="manual")
    Recorder(model="m").set_parent(experiment.recorder).push(loss=0.5)
    assert experiment.finished is False
    experiment.finish(error=None)
    assert experiment.finished is True
    assert [dict(record) for record in collection.records] == [{
        "loss": 0.5, "model": "m", "name": "manual",
        **{key: collection.runs[0][key] for key in SIX_KEYS},
    }]
    assert collection.runs[0]["status"] == "ok"


def test_finish_with_an_error_marks_the_run_failed(collection):
    """``finish(error=exc)`` marks the run had_error=True with status "error" and the error text."""
    experiment = collection.new_experiment()
    experiment.recorder.push(x=1)
    experiment.finish(error=ValueError("bad data"))
    run = collection.runs[0]
    assert (run["had_error"], run["status"], run["error"]) == (True, "error", "ValueError: bad data")
    assert collection.records[0]["had_error"] is True


def test_children_hang_below_the_experiment_recorder(collection):
    """Recorders given the experiment recorder as parent are its children, in order."""
    with collection.new_experiment() as recorder:
        first = Recorder(model="a").set_parent(recorder)
        second = recorder.sub_recorder(model="b")
        assert recorder.children == (first, second)


def test_finished_experiment_refuses_more_records(collection):
    """Pushing into a recorder of a finished run raises a RecorderError that names resume()."""
    with collection.new_experiment() as recorder:
        child = recorder.sub_recorder(model="a")
        child.push(x=1)
    with pytest.raises(RecorderError, match=r"collection\.resume"):
        child.push(x=2)
    child.flush()
    assert [record["x"] for record in collection.records] == [1]


# -- the six keys and numbering ------------------------------------------------------------


def test_every_record_sees_the_six_keys_of_its_run(collection):
    """Each record reads the six bookkeeping keys from its run's run.json."""
    run_ok(collection)
    run = collection.runs[0]
    assert [{key: record[key] for key in SIX_KEYS} for record in collection.records] == [
        {key: run[key] for key in SIX_KEYS}
    ] * 3


def test_six_keys_of_a_successful_run_have_the_right_values(collection):
    """A successful first run: number 1, error_number 0, no error, duration = end - start >= 0."""
    run_ok(collection)
    record = collection.records[0]
    assert (record["experiment_number"], record["error_number"], record["had_error"]) == (1, 0, False)
    assert record["experiment_end_time"] >= record["experiment_start_time"]
    assert record["experiment_duration"] == record["experiment_end_time"] - record["experiment_start_time"]


def test_six_keys_are_not_stored_in_local_data_of_the_experiment_recorder(collection):
    """The six keys come through the experiment recorder's parent, not its own local data."""
    with collection.new_experiment(a=1) as recorder:
        assert dict(recorder.local_data) == {"a": 1}
        assert set(recorder.parent.local_data) == set(SIX_KEYS)
        assert recorder.parent.parent is None


def test_successful_runs_take_consecutive_numbers(collection):
    """Three successful runs are numbered 1, 2, 3 with error_number 0."""
    for _ in range(3):
        run_ok(collection)
    assert statuses(collection) == [(1, 0, "ok"), (2, 0, "ok"), (3, 0, "ok")]


def test_failed_runs_repeat_the_number_and_count_consecutive_errors(collection):
    """After failures the same number comes again, error_number counting them; success resets it."""
    run_ok(collection)
    run_failing(collection)
    run_failing(collection)
    run_ok(collection)
    run_failing(collection)
    run_ok(collection)
    assert statuses(collection) == [
        (1, 0, "ok"), (2, 1, "error"), (2, 2, "error"), (2, 0, "ok"), (3, 1, "error"), (3, 0, "ok"),
    ]


def test_numbering_continues_in_a_new_collection_object(tmp_path):
    """A second ExperimentCollection on the same path numbers from what is on disk."""
    run_ok(ExperimentCollection(tmp_path / "study", quiet=True))
    run_failing(ExperimentCollection(tmp_path / "study", quiet=True))
    collection = ExperimentCollection(tmp_path / "study", quiet=True)
    experiment = collection.new_experiment()
    experiment.finish()  # here, not at exit, when its temporary folder may be gone
    assert experiment.number == 2


# -- exceptions inside the with block ------------------------------------------------------


def test_exception_in_with_block_reraises_the_same_object(collection):
    """The exception raised inside the block is the very object that leaves it."""
    error = ValueError("boom")
    with pytest.raises(ValueError) as caught, collection.new_experiment():
        raise error
    assert caught.value is error


def test_keyboard_interrupt_in_with_block_is_reraised_and_recorded(collection):
    """A KeyboardInterrupt leaves the block as the same object and the run is marked failed."""
    interrupt = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt) as caught, collection.new_experiment() as recorder:
        recorder.push(step=1)
        raise interrupt
    assert caught.value is interrupt
    assert (collection.runs[0]["status"], collection.records[0]["had_error"]) == ("error", True)


def test_exception_in_with_block_keeps_every_record(collection, tmp_path):
    """Everything pushed before the exception is saved, and its records say had_error=True."""
    with pytest.raises(ZeroDivisionError), collection.new_experiment(lr=0.5) as recorder:
        child = recorder.sub_recorder(model="m")
        for index in range(5000):
            child.push(index=index)
        child.add(index=5000)  # staged, never committed
        1 / 0  # noqa: B018
    reopened = ExperimentCollection(tmp_path / "study", quiet=True)
    assert [record["index"] for record in reopened.records] == list(range(5000))
    assert {(record["had_error"], record["lr"], record["model"]) for record in reopened.records} == {(True, 0.5, "m")}
    assert reopened.runs[0]["error"] == "ZeroDivisionError: division by zero"


# -- reading -------------------------------------------------------------------------------


def test_records_hold_every_record_of_every_run_in_run_order(collection):
    """``collection.records`` lists the records of all runs, oldest run first."""
    run_ok(collection, range(2))
    run_failing(collection)
    run_ok(collection, range(3))
    assert [(record["experiment_number"], record["index"]) for record in collection.records] == [
        (1, 0), (1, 1), (2, 0), (2, 0), (2, 1), (2, 2),
    ]


def test_record_reads_missing_key_as_none(collection):
    """A key no record nor ancestor holds reads as None, like the seed's records."""
    run_ok(collection)
    assert collection.records[0]["no such key"] is None
    assert collection.records[0].get("no such key", "default") == "default"


def test_len_counts_every_record_of_every_run(collection):
    """``len(collection)`` is the number of records of all runs together."""
    run_ok(collection, range(4))
    run_failing(collection)
    assert len(collection) == 5


def test_experiment_numbers_lists_each_number_once_ascending(collection):
    """A number given to several runs (failures) appears once in experiment_numbers."""
    run_ok(collection)
    run_failing(collection)
    run_ok(collection)
    run_ok(collection)
    assert collection.experiment_numbers == (1, 2, 3)


def test_getitem_gives_the_records_of_one_experiment_number(collection):
    """``collection[n]`` holds the records of every run numbered n."""
    run_ok(collection, range(2))
    run_failing(collection)
    run_ok(collection, range(10, 13))
    assert [(record["index"], record["had_error"]) for record in collection[2]] == [
        (0, True), (10, False), (11, False), (12, False),
    ]


def test_getitem_with_negative_number_counts_from_the_last_experiment(collection):
    """``collection[-1]`` is the latest experiment number's records, ``[-2]`` the one before."""
    run_ok(collection, range(1))
    run_ok(collection, range(2))
    assert [record["experiment_number"] for record in collection[-1]] == [2, 2]
    assert [record["experiment_number"] for record in collection[-2]] == [1]


def test_reload_sees_runs_written_by_another_collection_object(tmp_path):
    """After another writer adds a run, ``reload()`` and a fresh read both include it."""
    reader = ExperimentCollection(tmp_path / "study", quiet=True)
    run_ok(reader, range(2))
    assert len(reader) == 2
    run_ok(ExperimentCollection(tmp_path / "study", quiet=True), range(5))
    reader.reload()
    assert len(reader) == 7
    assert reader.experiment_numbers == (1, 2)


def test_records_and_sql_agree_after_a_recorder_of_a_run_is_detached(collection):
    """Detaching a run's recorder (or refusing to) never leaves records that one reader shows and the other not."""
    with collection.new_experiment() as recorder:
        child = Recorder(model="m").set_parent(recorder)
        child.push(x=1)
        try:
            child.set_parent(None)
        except RecorderTreeError:
            pass  # refusing, as moving to another tree is refused, keeps them in agreement too
        else:
            child.push(x=2)
    assert collection.sql("SELECT count(*) FROM records").fetchall() == [(len(collection.records),)]


# -- storage -------------------------------------------------------------------------------


def test_finished_run_is_one_parquet_file_and_json_metadata(collection):
    """A finished run's folder holds run.json and one records-<n>.parquet file, nothing else."""
    experiment = run_ok(collection)
    assert sorted(path.name for path in experiment.folder.path.iterdir()) == ["records-1.parquet", "run.json"]
    assert json.loads((experiment.folder.path / "run.json").read_text())["records"] == "records-1.parquet"
    assert json.loads((collection.path / "collection.json").read_text())["format"] == 2


def test_a_run_killed_while_its_folder_was_made_leaves_nothing_after_the_next_open(collection):
    """new_experiment() marks the run active, builds its folder under a name no reader lists,
    then renames it into place: killed before the rename, the marker and that folder are litter,
    which the next open removes (under the numbering lock, which making a folder holds)."""
    run_ok(collection)
    killed = "000002-0123456789"
    (collection.path / "active").mkdir(exist_ok=True)
    (collection.path / "active" / killed).touch()
    (collection.path / "runs" / f".new-{killed}").mkdir()
    (collection.path / "runs" / f".new-{killed}" / "run.json").write_text("{}")
    reopened = ExperimentCollection(collection.path, quiet=True)
    assert sorted(os.listdir(collection.path / "runs")) == [run["id"] for run in reopened.runs]
    assert os.listdir(collection.path / "active") == []
    experiment = reopened.new_experiment()
    experiment.finish()
    assert experiment.number == 2


def test_a_collection_or_run_a_newer_version_wrote_is_refused_by_name(collection):
    """A newer format may mean what this version would misread: the collection is refused, a
    run alone reads as damaged, each naming the format; the other runs answer as before."""
    first, second = run_ok(collection), run_ok(collection)
    run_file = second.folder.path / "run.json"
    run_file.write_text(json.dumps({**json.loads(run_file.read_text()), "format": 99}))
    reader = ExperimentCollection(collection.path, quiet=True, recover=False)
    (damaged,) = [run for run in reader.runs if run["status"] == "damaged"]
    assert damaged["id"] == second.id and "format 99" in damaged["error"]
    assert [run["id"] for run in reader.runs if run["status"] == "ok"] == [first.id]
    described = collection.path / "collection.json"
    described.write_text(json.dumps({**json.loads(described.read_text()), "format": 99}))
    with pytest.raises(CollectionError, match=r"newer rigorous-recorder \(format 99"):
        ExperimentCollection(collection.path, quiet=True)


def test_parquet_file_stores_parent_data_once_per_recorder_not_per_row(collection):
    """The Parquet columns are the records' own keys only: no lineage or bookkeeping column."""
    with collection.new_experiment(lr=0.1) as recorder:
        episode = recorder.sub_recorder(episode=1)
        for step in range(100):
            episode.push(x=step, y=step * 2.0)
    (path,) = collection.path.glob("runs/*/records-*.parquet")
    assert pq.read_schema(path).names == ["__recorder__", "x", "y"]
    assert pq.read_table(path).num_rows == 100


def test_parquet_file_is_readable_by_pyarrow_and_duckdb_without_the_package(collection, tmp_path):
    """A fresh interpreter that never imports rigorous_recorder reads the run with pyarrow and DuckDB."""
    run_ok(collection, range(100))
    (path,) = collection.path.glob("runs/*/records-*.parquet")
    script = (
        "import sys, duckdb, pyarrow.parquet as pq\n"
        f"path = {str(path)!r}\n"
        "table = pq.read_table(path)\n"
        "(total,) = duckdb.sql(f\"SELECT sum(index), count(*) FROM read_parquet('{path}')\").fetchall()\n"
        "assert 'rigorous_recorder' not in sys.modules\n"
        "print(table.num_rows, total[0], total[1])\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=tmp_path)
    assert result.stdout.split() == ["100", str(sum(range(100))), "100"]


def test_loading_never_unpickles_a_pickle_in_the_folder(tmp_path):
    """Pickles dropped beside and inside the collection are never loaded by opening or querying it."""
    marker = tmp_path / "unpickled"
    payload = pickle.dumps(Marker(str(marker)))
    collection = ExperimentCollection(tmp_path / "study", quiet=True)
    experiment = run_ok(collection)
    for path in (
        tmp_path / "study.pickle",
        collection.path / "study.pickle",
        collection.path / "runs" / "records.pickle",
        experiment.folder.path / "records-1.pickle",
        experiment.folder.path / "records.pickle",
    ):
        path.write_bytes(payload)
    reopened = ExperimentCollection(tmp_path / "study", quiet=True)
    assert [record["index"] for record in reopened.records] == [0, 1, 2]
    assert reopened.sql("SELECT count(*) FROM records").fetchall() == [(3,)]
    assert len(reopened.to_pandas()) == 3
    reopened.resume(experiment.id).finish()
    assert not marker.exists()
    pickle.loads(payload)  # the payload is live: loading it would have made the marker
    assert marker.exists()


# -- bad values ----------------------------------------------------------------------------


def test_unsupported_value_raises_naming_the_key_and_loses_nothing(collection):
    """An unstorable value raises UnsupportedValueError naming its key; the other records stay."""
    with collection.new_experiment() as recorder:
        child = recorder.sub_recorder(model="m")
        child.push(index=0, loss=0.5)
        with pytest.raises(UnsupportedValueError, match="'weights'"):
            child.push(index=1, weights=object())
        child.push(index=2, loss=0.25)
    assert [dict(record.own_data()) for record in collection.records] == [
        {"index": 0, "loss": 0.5}, {"index": 2, "loss": 0.25},
    ]
    assert collection.runs[0]["status"] == "ok"


def test_unsupported_experiment_info_raises_before_a_run_starts(collection):
    """An unstorable experiment info value raises naming the key, and no run is created."""
    with pytest.raises(UnsupportedValueError, match="'callback'"):
        collection.new_experiment(callback=lambda: None)
    assert collection.runs == []


def test_unsupported_value_escaping_the_with_block_marks_run_failed_and_keeps_records(collection):
    """An uncaught UnsupportedValueError ends the run as an error with the earlier records kept."""
    with pytest.raises(UnsupportedValueError), collection.new_experiment() as recorder:
        recorder.push(index=0)
        recorder.push(index=1, bad={1, 2})
    assert [record["index"] for record in collection.records] == [0]
    assert collection.runs[0]["status"] == "error"


# -- resume --------------------------------------------------------------------------------


def test_resume_keeps_the_number_and_the_recorders_with_their_data(collection, tmp_path):
    """A resumed run has its old number, and its experiment recorder's children are the old recorders."""
    with collection.new_experiment(lr=0.1) as recorder:
        Recorder(model="a").set_parent(recorder).push(index=0)
        Recorder(model="b").set_parent(recorder).push(index=0).push(index=1)
    run_ok(collection)
    experiment = ExperimentCollection(tmp_path / "study", quiet=True).resume(collection.runs[0]["id"])
    assert experiment.number == 1
    assert dict(experiment.recorder.local_data) == {"lr": 0.1}
    assert [dict(child.local_data) for child in experiment.recorder.children] == [{"model": "a"}, {"model": "b"}]
    assert [len(child) for child in experiment.recorder.children] == [1, 2]
    assert [record["index"] for record in experiment.recorder.children[1]] == [0, 1]
    experiment.finish()


def test_resumed_pushes_append_after_the_old_records(collection):
    """Records pushed after resume come after the run's earlier ones, in the same run and recorder."""
    experiment = run_ok(collection, range(3))
    resumed = collection.resume(experiment.id)
    (child,) = resumed.recorder.children
    for index in range(3, 6):
        child.push(index=index)
    resumed.finish()
    assert [(record["index"], record["role"]) for record in collection.records] == [(i, "child") for i in range(6)]
    assert [(run["experiment_number"], run["records_count"], run["session"]) for run in collection.runs] == [(1, 6, 2)]


def test_resume_of_a_failed_run_that_succeeds_clears_had_error(collection):
    """A failed run resumed and finished without error reads had_error=False in every record."""
    run_failing(collection)
    with collection.resume(collection.runs[0]["id"]) as recorder:
        recorder.children[0].push(index=1)
    assert [(record["index"], record["had_error"], record["error_number"]) for record in collection.records] == [
        (0, False, 0), (1, False, 0),
    ]


def test_resume_can_add_new_recorders(collection):
    """A recorder hung below a resumed experiment is saved with the run."""
    experiment = run_ok(collection, range(1))
    with collection.resume(experiment.id) as recorder:
        recorder.sub_recorder(role="late").push(index=7)
    assert [(record["role"], record["index"]) for record in collection.records] == [("child", 0), ("late", 7)]


def test_resume_of_an_unknown_run_id_raises_collection_error(collection):
    """An id no run has raises CollectionError quoting it."""
    run_ok(collection)
    with pytest.raises(CollectionError, match="no run 'no-such-run'"):
        collection.resume("no-such-run")


def test_resume_of_a_running_run_raises_collection_error(collection):
    """A run whose process is still recording cannot be resumed a second time."""
    experiment = collection.new_experiment()
    with pytest.raises(CollectionError, match="still running"):
        collection.resume(experiment.id)
    experiment.finish()


def test_each_run_records_the_context_it_ran_in(tmp_path):
    """run.json holds the command line, host, Python and package versions, and the git commit."""
    repository = tmp_path / "repo"
    repository.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repository, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "x"],
                   cwd=repository, check=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repository, capture_output=True, text=True).stdout.strip()
    script = ("from rigorous_recorder import ExperimentCollection\n"
              f"ExperimentCollection({str(tmp_path / 'study')!r}, quiet=True).new_experiment().finish()\n"
              f"ExperimentCollection({str(tmp_path / 'bare')!r}, quiet=True, record_context=False)"
              ".new_experiment().finish()\n")
    subprocess.run([sys.executable, "-c", script], cwd=repository, check=True)
    (run,) = ExperimentCollection(tmp_path / "study", quiet=True).runs
    context = run["context"]
    assert (context["git_commit"], context["git_dirty"]) == (commit, False)
    assert context["hostname"] == socket.gethostname()
    assert context["python_version"] == platform.python_version()
    assert context["rigorous_recorder_version"] and context["command"].startswith(sys.executable)
    assert ExperimentCollection(tmp_path / "bare", quiet=True).runs[0]["context"] == {}


def test_a_query_made_in_one_line_reads_after_its_collection_is_let_go(tmp_path):
    """`ExperimentCollection(path).sql(query).fetchall()`: DuckDB before 2.0 closed the cursor
    with the collection, so the relation could not be read."""
    with ExperimentCollection(tmp_path / "study", quiet=True).new_experiment(lr=0.1) as experiment:
        experiment.push(loss=0.5)
    relation = ExperimentCollection(tmp_path / "study", quiet=True).sql("SELECT lr, loss FROM records")
    gc.collect()
    assert relation.fetchall() == [(0.1, 0.5)]
