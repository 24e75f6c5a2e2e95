"""Sparse records: many keys, a few in each record. Unsealed columns are ragged until sealed."""

from __future__ import annotations

import random

import pytest

from rigorous_recorder import ExperimentCollection, Recorder
from rigorous_recorder.recorder import BATCH_ROWS


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
