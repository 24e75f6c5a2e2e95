"""Sparse records: many keys, a few in each record. Unsealed columns are ragged until sealed, and
sealed early into small batches that hold only their own keys."""

from __future__ import annotations

import random

import pyarrow as pa
import pytest

from rigorous_recorder import ExperimentCollection, Recorder
from rigorous_recorder._columns import conform, conformed_table, unified_schema
from rigorous_recorder.recorder import BATCH_ROWS, SPARSE_CELLS_PER_VALUE, SPARSE_MIN_CELLS

from .conftest import plain


def sparse_rows(count: int, keys: int = 300, per_row: int = 3, seed: int = 7) -> list[dict]:
    chooser = random.Random(seed)
    return [{f"k{key}": (index if key % 2 else float(index)) for key in chooser.sample(range(keys), per_row)}
            for index in range(count)]


@pytest.mark.parametrize("where", ["memory", "collection"])
def test_sparse_records_read_back_exactly_before_and_after_sealing(tmp_path, where):
    """Each record holds its own few keys and None for the rest, read before, across and after a seal."""
    rows = sparse_rows(BATCH_ROWS + 700)
    experiment = None
    if where == "memory":
        recorder = Recorder()
    else:
        experiment = ExperimentCollection(tmp_path / "study", quiet=True, flush_interval=0.05).new_experiment()
        recorder = Recorder().set_parent(experiment.recorder)
    for index, row in enumerate(rows):
        record = recorder.push(row)[index] if index % 997 == 0 else recorder.add(row).commit()
        assert record.own_data() == row
    assert len(recorder) == len(rows)
    assert [record.own_data() for record in recorder] == rows
    assert recorder[3]["k999"] is None and "k999" not in recorder[3]
    if experiment is not None:
        experiment.finish()
        collection = ExperimentCollection(tmp_path / "study", quiet=True)
        assert [record.own_data() for record in collection.records] == rows


def test_a_bare_record_between_sparse_ones_keeps_its_place():
    """A record with no value of its own still counts, between ragged ones."""
    recorder = Recorder()
    recorder.push(a=1).push(b=2)
    recorder.commit()
    recorder.push(a=3)
    assert [record.own_data() for record in recorder] == [{"a": 1}, {"b": 2}, {}, {"a": 3}]


def one_key_rows(count: int, keys: int = 2000, seed: int = 3) -> list[dict]:
    """Rows holding one value each, of one key drawn from ``keys``."""
    chooser = random.Random(seed)
    return [{f"k{chooser.randrange(keys)}": chooser.random()} for _ in range(count)]


def test_sealed_batches_of_sparse_rows_hold_cells_for_their_values_not_for_every_key(root):
    """1,000 keys, one in each record: batches are sealed early, each holding at most
    max(SPARSE_MIN_CELLS, SPARSE_CELLS_PER_VALUE x its values) cells, give or take its last row
    (a dense 4,096-row batch would hold ~980 cells per value), and every value reads back."""
    rows = one_key_rows(BATCH_ROWS + 500, keys=1000)
    recorder = Recorder().set_parent(root)
    for row in rows:
        recorder.push(row)
    recorder.flush()
    batches = recorder.store.read(recorder)[0]
    assert sum(batch.num_rows for batch in batches) == len(rows)
    for batch in batches:
        values = sum(len(column) - column.null_count for column in batch.columns)
        bound = max(SPARSE_MIN_CELLS, SPARSE_CELLS_PER_VALUE * values) + batch.num_rows + batch.num_columns
        assert batch.num_rows * batch.num_columns <= bound, (batch.num_rows, batch.num_columns, values)
    assert [plain(record) for record in recorder] == rows


def test_rows_missing_a_few_keys_keep_full_batches(root):
    """Rows with most of their keys (one missing in turn) are not sparse: batches of BATCH_ROWS rows."""
    recorder = Recorder().set_parent(root)
    for index in range(2 * BATCH_ROWS):
        recorder.push({key: float(index) for key in "abcd" if key != "abcd"[index % 4]})
    batches = recorder.store.read(recorder)[0]
    assert [batch.num_rows for batch in batches] == [BATCH_ROWS, BATCH_ROWS]


def test_reading_ragged_rows_leaves_them_ragged(root):
    """Reading a record while rows are ragged pads nothing: sparse rows stay cheap until sealed."""
    recorder = Recorder().set_parent(root)
    rows = one_key_rows(30, keys=30)
    for row in rows:
        recorder.push(row)
        assert plain(recorder[-1]) == row
    columns, count = recorder.unsealed_rows()
    assert count == len(rows)  # under 30 x 30 cells: fewer than SPARSE_MIN_CELLS, not sealed early
    assert sum(map(len, columns.values())) < count * len(columns)


def test_a_table_of_sparse_batches_is_built_from_one_null_chunk_per_gap():
    """conformed_table gives what conform gives batch by batch, with a few chunks per key."""
    batches = []
    for index, row in enumerate(one_key_rows(300, keys=50)):
        (key, value), = row.items()
        batches.append(pa.record_batch({key: [value, None], "step": [index, index]}))
    schema = unified_schema(batch.schema for batch in batches)
    table = conformed_table(batches, schema)
    assert table.equals(pa.Table.from_batches([conform(batch, schema) for batch in batches]))
    assert table.column("step").num_chunks == len(batches)
    assert all(table.column(key).num_chunks <= 2 * len([b for b in batches if key in b.schema.names]) + 1
               for key in schema.names)


def test_a_table_casts_drifted_columns_as_conform_does():
    """Ints among floats widen and values of several kinds become JSON text, in the table too."""
    batches = [pa.record_batch({"x": [1, 2], "y": ["a", "b"]}), pa.record_batch({"x": [0.5, None], "y": [1, 2]})]
    schema = unified_schema(batch.schema for batch in batches)
    table = conformed_table(batches, schema)
    assert table.equals(pa.Table.from_batches([conform(batch, schema) for batch in batches]))
    assert (table.column("x").to_pylist(), table.schema.field("y").metadata) == ([1.0, 2.0, 0.5, None],
                                                                                schema.field("y").metadata)
