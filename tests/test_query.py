"""Queries over a collection: the DuckDB views and the flat table in Arrow, pandas and polars."""

from __future__ import annotations

import pytest

from rigorous_recorder import ExperimentCollection, Recorder

FLAT_COLUMNS = [
    "run_id", "experiment_number", "error_number", "had_error", "experiment_start_time", "experiment_end_time",
    "experiment_duration", "status", "lr", "model", "step", "loss", "note",
]
#: Columns of ``records`` that are the run's, not a key of the record.
HANDLES = ("run_id", "status")


def test_records_view_has_one_row_per_record(study):
    """``SELECT count(*) FROM records`` counts every record of every run."""
    assert study.sql("SELECT count(*) FROM records").fetchall() == [(7,)]


def test_records_view_holds_the_whole_lineage_as_columns(study):
    """Each row of ``records`` holds its own values, its recorders' data and the six keys."""
    rows = study.sql(
        "SELECT experiment_number, had_error, lr, model, step, loss FROM records "
        "ORDER BY experiment_number, model, step"
    ).fetchall()
    assert rows == [
        (1, False, 0.1, "a", 0, 0.0), (1, False, 0.1, "a", 1, 1.0), (1, False, 0.1, "a", 2, 2.0),
        (1, False, 0.1, "b", 0, 0.5), (1, False, 0.1, "b", 1, 1.5), (1, False, 0.1, "b", 2, 2.5),
        (2, True, 0.2, "a", 0, 9.0),
    ]


def test_records_view_columns_are_lineage_then_own_keys(study):
    """The flat view's columns are the run's handles and six keys, the recorders' keys, then the records' own keys."""
    assert study.sql("SELECT * FROM records").columns == FLAT_COLUMNS


def test_sql_groups_and_filters_like_the_seed_analysis(study):
    """An aggregate per model over successful runs gives the averages computed by hand."""
    rows = study.sql(
        "SELECT model, avg(loss) FROM records WHERE NOT had_error GROUP BY model ORDER BY model"
    ).fetchall()
    assert rows == [("a", 1.0), ("b", 1.5)]


def test_experiments_view_has_one_row_per_run(study):
    """``experiments`` lists each run with its number, status, record count, error and info."""
    rows = study.sql(
        "SELECT experiment_number, error_number, had_error, status, records, error, lr "
        "FROM experiments ORDER BY experiment_start_time"
    ).fetchall()
    assert rows == [(1, 0, False, "ok", 6, None, 0.1), (2, 1, True, "error", 1, "RuntimeError: stop", 0.2)]


def test_experiments_view_run_ids_match_collection_runs(study):
    """The run_id column of ``experiments`` holds the ids of ``collection.runs``."""
    ids = study.sql("SELECT run_id FROM experiments ORDER BY experiment_start_time").fetchall()
    assert ids == [(run["id"],) for run in study.runs]


def test_records_view_matches_the_python_records(study):
    """Every row of ``records`` equals the dict of the same record read through ``collection.records``."""
    frame = study.to_pandas()
    from_sql = sorted(
        tuple(sorted((key, value) for key, value in row.items()
                     if value == value and value is not None and key not in HANDLES))
        for row in frame.to_dict("records")
    )
    from_python = sorted(tuple(sorted(dict(record).items())) for record in study.records)
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


def test_execute_streams_what_sql_answers(study):
    """execute() answers as sql() does, a batch of rows at a time, and sees a run added meanwhile."""
    query = "SELECT model, step, loss FROM records ORDER BY ALL"
    expected = study.sql(query).fetchall()
    study.execute(query)
    result = study.execute(query)
    assert [column[0] for column in result.description] == ["model", "step", "loss"]
    batches = []
    while batch := result.fetchmany(2):
        batches.append(batch)
    assert [len(batch) for batch in batches] == [2, 2, 2, 1]
    assert [row for batch in batches for row in batch] == expected
    assert not study._query_cache.in_memory  # a repeated sql() keeps the records in memory; execute() never
    with study.new_experiment() as recorder:
        recorder.push(step=99)
    assert study.execute("SELECT count(*) FROM records").fetchall() == [(len(expected) + 1,)]


def test_sql_sees_runs_added_by_another_collection_object(study):
    """A run written by another ExperimentCollection on the same path shows up in the next query."""
    assert study.sql("SELECT count(*) FROM experiments").fetchall() == [(2,)]
    other = ExperimentCollection(study.path, quiet=True)
    with other.new_experiment() as recorder:
        recorder.push(step=99)
    assert study.sql("SELECT step FROM records WHERE experiment_number = 2 AND NOT had_error").fetchall() == [(99,)]


def test_empty_collection_has_empty_views(tmp_path):
    """A collection without runs answers with zero rows in both views."""
    collection = ExperimentCollection(tmp_path / "study", quiet=True)
    assert collection.sql("SELECT count(*) FROM records").fetchall() == [(0,)]
    assert collection.sql("SELECT count(*) FROM experiments").fetchall() == [(0,)]


def test_to_arrow_is_the_flat_table(study):
    """``to_arrow()`` returns a pyarrow Table with the flat view's columns and rows."""
    table = study.to_arrow()
    assert table.column_names == FLAT_COLUMNS
    assert table.num_rows == 7
    assert sorted(table.column("loss").to_pylist()) == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 9.0]


def test_to_pandas_is_the_flat_table(study):
    """``to_pandas()`` returns a DataFrame with the flat view's columns and rows."""
    frame = study.to_pandas()
    assert list(frame.columns) == FLAT_COLUMNS
    assert sorted(zip(frame["model"], frame["step"], frame["lr"])) == sorted(
        [("a", s, 0.1) for s in range(3)] + [("b", s, 0.1) for s in range(3)] + [("a", 0, 0.2)]
    )


def test_to_polars_is_the_flat_table(study):
    """``to_polars()`` returns a polars DataFrame equal to the pandas one."""
    polars = pytest.importorskip("polars")
    frame = study.to_polars()
    assert isinstance(frame, polars.DataFrame)
    assert frame.columns == FLAT_COLUMNS
    assert frame.sort("loss").to_pandas().equals(study.to_pandas().sort_values("loss").reset_index(drop=True))


# -- the view never breaks: any keys, any types --------------------------------------------


def test_an_own_value_of_another_type_than_the_inherited_one_keeps_the_view_queryable(tmp_path):
    """``seed=42`` as experiment info and ``push(seed="42-b")``: the own text goes to ``seed~json``."""
    collection = ExperimentCollection(tmp_path / "study", quiet=True)
    with collection.new_experiment(seed=42) as recorder:
        recorder.push(step=0)
        recorder.push(step=1, seed="42-b")
    rows = collection.sql('SELECT step, seed, "seed~json" FROM records ORDER BY step').fetchall()
    assert rows == [(0, 42, None), (1, None, '"42-b"')]
    assert collection.sql("SELECT seed FROM experiments").fetchall() == [(42,)]


def test_info_text_in_one_run_and_numbers_in_another_keep_numbers_numeric(tmp_path):
    """``step="warmup"`` as info of one run, ``push(step=1)`` in another: ``step`` stays BIGINT."""
    collection = ExperimentCollection(tmp_path / "study", quiet=True)
    with collection.new_experiment(step="warmup") as recorder:
        recorder.push(loss=1.0)
    with collection.new_experiment() as recorder:
        recorder.push(step=1, loss=2.0)
        recorder.push(step=2, loss=3.0)
    assert collection.sql("SELECT sum(step) FROM records").fetchall() == [(3,)]
    assert collection.sql('SELECT "step~json" FROM records WHERE step IS NULL').fetchall() == [('"warmup"',)]


def test_one_drifted_value_leaves_the_column_numeric_for_every_run(tmp_path):
    """One ``loss="nan!"`` in one run: ``avg(loss)`` still works and the odd value is in ``loss~json``."""
    collection = ExperimentCollection(tmp_path / "study", quiet=True)
    with collection.new_experiment() as recorder:
        recorder.push(loss=1.0).push(loss=2.0)
    with collection.new_experiment() as recorder:
        recorder.push(loss=3.0).push(loss="nan!")
    assert collection.sql("SELECT avg(loss) FROM records").fetchall() == [(2.0,)]
    assert collection.sql('SELECT "loss~json" FROM records WHERE "loss~json" IS NOT NULL').fetchall() == [('"nan!"',)]
    assert dict(collection.sql("DESCRIBE records").fetchall() and
                collection.sql("SELECT column_name, column_type FROM (DESCRIBE records)").fetchall())["loss"] == "DOUBLE"


def test_case_twins_are_two_columns_and_the_columns_view_names_their_keys(tmp_path):
    """``push(Loss=1.0, loss=2.0)``: ``loss`` keeps its name, ``Loss`` is ``Loss~2``."""
    collection = ExperimentCollection(tmp_path / "study", quiet=True)
    with collection.new_experiment() as recorder:
        recorder.push(Loss=1.0, loss=2.0)
    assert collection.sql('SELECT loss, "Loss~2" FROM records').fetchall() == [(2.0, 1.0)]
    assert collection.sql("SELECT name, key FROM columns WHERE key ILIKE 'loss'").fetchall() == [
        ("loss", "loss"), ("Loss~2", "Loss")]


def test_keys_that_look_internal_are_ordinary_columns(tmp_path):
    """``__source__`` and ``__RECORDER__`` as keys, own and inherited, read back as their values."""
    collection = ExperimentCollection(tmp_path / "study", quiet=True)
    with collection.new_experiment(__source__="info") as recorder:
        recorder.push(__RECORDER__=5, **{"~recorder": 6, "~source": 7})
        recorder.push(__RECORDER__=8)
    rows = collection.sql('SELECT __source__, __RECORDER__, "~~recorder", "~~source" FROM records').fetchall()
    assert sorted(rows, key=repr) == [("info", 5, 6, 7), ("info", 8, None, None)]


def test_an_int_beyond_int64_is_exact_in_the_companion_column(tmp_path):
    """``2**70 + 1`` beside floats of another recorder: ``k`` holds the float, ``k~json`` the exact int."""
    collection = ExperimentCollection(tmp_path / "study", quiet=True)
    with collection.new_experiment() as recorder:
        Recorder().set_parent(recorder).push(k=1.5)
        Recorder().set_parent(recorder).push(k=2**70 + 1)
    rows = collection.sql('SELECT k, "k~json" FROM records').fetchall()
    assert sorted(rows, key=repr) == [(1.5, None), (None, str(2**70 + 1))]


def test_an_int_beyond_int64_among_floats_of_one_batch_stays_exact(tmp_path):
    """``2**70 + 1`` pushed after ``1.5`` by the same recorder reads back exactly."""
    collection = ExperimentCollection(tmp_path / "study", quiet=True)
    with collection.new_experiment() as recorder:
        recorder.push(k=1.5).push(k=2**70 + 1)
    assert collection.records[1]["k"] == 2**70 + 1


def test_an_int_beyond_2_53_among_floats_of_other_runs_stays_exact(tmp_path):
    """A BIGINT run beside a DOUBLE run: ints a float would round are kept exact in ``k~json``."""
    collection = ExperimentCollection(tmp_path / "study", quiet=True)
    with collection.new_experiment() as recorder:
        recorder.push(k=2**60 + 1).push(k=3)
    with collection.new_experiment() as recorder:
        recorder.push(k=0.5)
    rows = collection.sql('SELECT k, "k~json" FROM records').fetchall()
    assert sorted(rows, key=repr) == [(0.5, None), (3.0, None), (None, str(2**60 + 1))]


def test_an_int_beyond_2_53_in_one_of_several_int_runs_stays_exact(tmp_path):
    """Two BIGINT runs read in one scan, the first with an int beyond 2**53, and a DOUBLE run."""
    collection = ExperimentCollection(tmp_path / "study", quiet=True)
    for value in (2**60 + 1, 3, 0.5):
        with collection.new_experiment() as recorder:
            recorder.push(k=value)
    rows = collection.sql('SELECT k, "k~json" FROM records').fetchall()
    assert sorted(rows, key=repr) == [(0.5, None), (3.0, None), (None, str(2**60 + 1))]


def test_every_record_carries_its_run_id_and_status(tmp_path):
    """A failed attempt and its retry share a number; ``run_id`` and ``status`` tell them apart."""
    collection = ExperimentCollection(tmp_path / "study", quiet=True)
    with pytest.raises(RuntimeError), collection.new_experiment() as recorder:
        recorder.push(step=0)
        raise RuntimeError("stop")
    with collection.new_experiment() as recorder:
        recorder.push(step=0)
    ids = [run["id"] for run in collection.runs]
    rows = collection.sql("SELECT run_id, status, experiment_number FROM records ORDER BY experiment_start_time").fetchall()
    assert rows == [(ids[0], "error", 1), (ids[1], "ok", 1)]


def test_had_error_is_null_while_a_run_is_running(tmp_path):
    """``WHERE NOT had_error`` keeps finished good runs; the running run reads NULL, not True."""
    collection = ExperimentCollection(tmp_path / "study", quiet=True)
    experiment = collection.new_experiment()
    experiment.recorder.push(step=0)
    assert collection.sql("SELECT status, had_error FROM records").fetchall() == [("running", None)]
    assert collection.sql("SELECT had_error FROM experiments").fetchall() == [(None,)]
    experiment.finish()
    assert collection.sql("SELECT status, had_error FROM records").fetchall() == [("ok", False)]


def test_a_damaged_run_is_listed_and_adds_no_records(tmp_path):
    """A run whose files cannot be read (status damaged) is in ``experiments``, not in ``records``."""
    import duckdb

    from rigorous_recorder.query import Query

    collection = ExperimentCollection(tmp_path / "study", quiet=True)
    with collection.new_experiment(lr=0.1) as recorder:
        recorder.push(step=0)
    runs = collection._scan()
    folder, _ = runs[0]
    damaged = {"id": "000002-0123456789", "experiment_number": 2, "status": "damaged", "error": "run.json: not JSON"}
    query = Query([*runs, (folder, damaged)], duckdb.connect())
    assert query.sql("SELECT count(*) FROM records").fetchall() == [(1,)]
    assert query.sql("SELECT experiment_number, status, records, error FROM experiments ORDER BY 1").fetchall() == [
        (1, "ok", 1, None), (2, "damaged", 0, "run.json: not JSON")]


def test_the_columns_view_tells_own_values_from_inherited_ones(tmp_path):
    """``columns`` says, for each column of ``records``, its key, its part and where its values come from."""
    collection = ExperimentCollection(tmp_path / "study", quiet=True)
    with collection.new_experiment(lr=0.1) as recorder:
        Recorder(model="m").set_parent(recorder).push(loss=1.0, lr=0.2).push(loss="x")
    rows = collection.sql("SELECT name, key, part, source, type FROM columns WHERE key IN ('lr', 'model', 'loss')").fetchall()
    assert rows == [
        ("lr", "lr", "value", "record and inherited", "DOUBLE"),
        ("model", "model", "value", "inherited", "VARCHAR"),
        ("loss", "loss", "value", "record", "DOUBLE"),
        ("loss~json", "loss", "json", "record", "JSON"),
    ]
    assert collection.sql("SELECT * FROM records LIMIT 0").columns == [
        name for (name,) in collection.sql("SELECT name FROM columns").fetchall()]


def test_aware_datetimes_come_back_through_fetchall(tmp_path):
    """A TIMESTAMPTZ column reaches Python through ``fetchall()`` (DuckDB before 2.0 needs pytz for that,
    a declared dependency) as the same instant, timezone-aware."""
    import datetime

    moment = datetime.datetime(2020, 1, 2, 3, 4, 5, tzinfo=datetime.timezone(datetime.timedelta(hours=2)))
    collection = ExperimentCollection(tmp_path / "study", quiet=True)
    with collection.new_experiment(started=moment) as recorder:
        recorder.push(pushed=moment)
    ((pushed, started),) = collection.sql("SELECT pushed, started FROM records").fetchall()
    assert pushed == started == moment
    assert pushed.utcoffset() is not None


def test_an_inherited_nan_reads_back_as_nan(tmp_path):
    """NaN as experiment info, alone and in a list, is NaN in ``records`` (DuckDB before 2.0 turns a
    NaN in a list parameter into NULL)."""
    import math

    collection = ExperimentCollection(tmp_path / "study", quiet=True)
    with collection.new_experiment(loss=float("nan"), losses=[float("nan"), 1.0]) as recorder:
        recorder.push(step=0)
    ((loss, losses),) = collection.sql("SELECT loss, losses FROM records").fetchall()
    assert math.isnan(loss) and math.isnan(losses[0]) and losses[1] == 1.0
