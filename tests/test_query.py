"""Queries over a collection: the DuckDB views and the flat table in Arrow, pandas and polars."""

from __future__ import annotations

import pytest

from rigorous_recorder import ExperimentCollection, Recorder

FLAT_COLUMNS = [
    "experiment_number", "error_number", "had_error", "experiment_start_time", "experiment_end_time",
    "experiment_duration", "lr", "model", "step", "loss", "note",
]


@pytest.fixture
def collection(tmp_path):
    """Two runs: run 1 (lr 0.1, models a and b, 3 steps each), run 2 fails after one record of model a."""
    collection = ExperimentCollection(tmp_path / "study", quiet=True)
    with collection.new_experiment(lr=0.1) as recorder:
        for model in ("a", "b"):
            child = Recorder(model=model).set_parent(recorder)
            for step in range(3):
                child.push(step=step, loss=step + (0.5 if model == "b" else 0.0))
    with pytest.raises(RuntimeError), collection.new_experiment(lr=0.2) as recorder:
        Recorder(model="a").set_parent(recorder).push(step=0, loss=9.0, note="last")
        raise RuntimeError("stop")
    return collection


def test_records_view_has_one_row_per_record(collection):
    """``SELECT count(*) FROM records`` counts every record of every run."""
    assert collection.sql("SELECT count(*) FROM records").fetchall() == [(7,)]


def test_records_view_holds_the_whole_lineage_as_columns(collection):
    """Each row of ``records`` holds its own values, its recorders' data and the six keys."""
    rows = collection.sql(
        "SELECT experiment_number, had_error, lr, model, step, loss FROM records "
        "ORDER BY experiment_number, model, step"
    ).fetchall()
    assert rows == [
        (1, False, 0.1, "a", 0, 0.0), (1, False, 0.1, "a", 1, 1.0), (1, False, 0.1, "a", 2, 2.0),
        (1, False, 0.1, "b", 0, 0.5), (1, False, 0.1, "b", 1, 1.5), (1, False, 0.1, "b", 2, 2.5),
        (2, True, 0.2, "a", 0, 9.0),
    ]


def test_records_view_columns_are_lineage_then_own_keys(collection):
    """The flat view's columns are the six keys, the recorders' keys, then the records' own keys."""
    assert collection.sql("SELECT * FROM records").columns == FLAT_COLUMNS


def test_sql_groups_and_filters_like_the_seed_analysis(collection):
    """An aggregate per model over successful runs gives the averages computed by hand."""
    rows = collection.sql(
        "SELECT model, avg(loss) FROM records WHERE NOT had_error GROUP BY model ORDER BY model"
    ).fetchall()
    assert rows == [("a", 1.0), ("b", 1.5)]


def test_experiments_view_has_one_row_per_run(collection):
    """``experiments`` lists each run with its number, status, record count, error and info."""
    rows = collection.sql(
        "SELECT experiment_number, error_number, had_error, status, records, error, lr "
        "FROM experiments ORDER BY experiment_start_time"
    ).fetchall()
    assert rows == [(1, 0, False, "ok", 6, None, 0.1), (2, 1, True, "error", 1, "RuntimeError: stop", 0.2)]


def test_experiments_view_run_ids_match_collection_runs(collection):
    """The run_id column of ``experiments`` holds the ids of ``collection.runs``."""
    ids = collection.sql("SELECT run_id FROM experiments ORDER BY experiment_start_time").fetchall()
    assert ids == [(run["id"],) for run in collection.runs]


def test_records_view_matches_the_python_records(collection):
    """Every row of ``records`` equals the dict of the same record read through ``collection.records``."""
    frame = collection.to_pandas()
    from_sql = sorted(
        tuple(sorted((key, value) for key, value in row.items() if value == value and value is not None))
        for row in frame.to_dict("records")
    )
    from_python = sorted(tuple(sorted(dict(record).items())) for record in collection.records)
    assert from_sql == from_python


def test_own_value_wins_over_an_inherited_value_of_the_same_key(tmp_path):
    """A key a record holds itself wins over the same key inherited from a recorder (nearest wins)."""
    collection = ExperimentCollection(tmp_path / "study", quiet=True)
    with collection.new_experiment(phase="train") as recorder:
        child = Recorder(phase="eval").set_parent(recorder)
        child.push(step=0)
        child.push(step=1, phase="override")
    assert collection.sql("SELECT step, phase FROM records ORDER BY step").fetchall() == [(0, "eval"), (1, "override")]


def test_sql_sees_records_of_a_running_experiment(tmp_path):
    """Records pushed into an unfinished run are visible to sql() at once."""
    collection = ExperimentCollection(tmp_path / "study", quiet=True)
    experiment = collection.new_experiment()
    child = Recorder(model="live").set_parent(experiment.recorder)
    child.push(step=0)
    assert collection.sql("SELECT model, step FROM records").fetchall() == [("live", 0)]
    child.push(step=1)
    assert collection.sql("SELECT count(*) FROM records").fetchall() == [(2,)]
    experiment.finish()
    assert collection.sql("SELECT count(*) FROM records").fetchall() == [(2,)]


def test_sql_sees_runs_added_by_another_collection_object(collection):
    """A run written by another ExperimentCollection on the same path shows up in the next query."""
    assert collection.sql("SELECT count(*) FROM experiments").fetchall() == [(2,)]
    other = ExperimentCollection(collection.path, quiet=True)
    with other.new_experiment() as recorder:
        recorder.push(step=99)
    assert collection.sql("SELECT step FROM records WHERE experiment_number = 2 AND NOT had_error").fetchall() == [(99,)]


def test_empty_collection_has_empty_views(tmp_path):
    """A collection without runs answers with zero rows in both views."""
    collection = ExperimentCollection(tmp_path / "study", quiet=True)
    assert collection.sql("SELECT count(*) FROM records").fetchall() == [(0,)]
    assert collection.sql("SELECT count(*) FROM experiments").fetchall() == [(0,)]


def test_to_arrow_is_the_flat_table(collection):
    """``to_arrow()`` returns a pyarrow Table with the flat view's columns and rows."""
    table = collection.to_arrow()
    assert table.column_names == FLAT_COLUMNS
    assert table.num_rows == 7
    assert sorted(table.column("loss").to_pylist()) == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 9.0]


def test_to_pandas_is_the_flat_table(collection):
    """``to_pandas()`` returns a DataFrame with the flat view's columns and rows."""
    frame = collection.to_pandas()
    assert list(frame.columns) == FLAT_COLUMNS
    assert sorted(zip(frame["model"], frame["step"], frame["lr"])) == sorted(
        [("a", s, 0.1) for s in range(3)] + [("b", s, 0.1) for s in range(3)] + [("a", 0, 0.2)]
    )


def test_to_polars_is_the_flat_table(collection):
    """``to_polars()`` returns a polars DataFrame equal to the pandas one."""
    polars = pytest.importorskip("polars")
    frame = collection.to_polars()
    assert isinstance(frame, polars.DataFrame)
    assert frame.columns == FLAT_COLUMNS
    assert frame.sort("loss").to_pandas().equals(collection.to_pandas().sort_values("loss").reset_index(drop=True))
