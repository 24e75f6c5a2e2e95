"""Tests of Record: a read-only, dict-like view of one row through its recorder's lineage."""

from collections.abc import Mapping

import pytest

from rigorous_recorder import Record, Recorder

from .conftest import plain, plains


def _one_record(root=None, /, **values):
    """The record of a push to a model recorder below an experiment recorder (below ``root``)."""
    experiment = Recorder(experiment=1, name="experiment").set_parent(root)
    model = Recorder(model="m", name="model").set_parent(experiment)
    return model.push(**values)[0]


def test_a_record_is_a_mapping():
    """A record is a collections.abc.Mapping, so dict-consuming code accepts it."""
    assert isinstance(_one_record(x=1), Mapping)


def test_a_record_reads_its_own_values(root):
    """record[key] gives the value committed in that record."""
    assert _one_record(root, x=1, y="b")["y"] == "b"


def test_a_record_reads_its_recorders_local_data(root):
    """A key not in the record comes from the recorder's local data."""
    assert _one_record(root, x=1)["model"] == "m"


def test_a_record_reads_ancestor_data(root):
    """A key found neither in the record nor its recorder comes from an ancestor."""
    assert _one_record(root, x=1)["experiment"] == 1


def test_the_nearest_ancestor_wins(root):
    """When recorder and ancestor share a key, the recorder's value shows."""
    assert _one_record(root, x=1)["name"] == "model"


def test_the_records_own_value_wins_over_local_data(root):
    """A value committed in the record hides the lineage's value of the same key."""
    assert _one_record(root, name="row")["name"] == "row"


def test_a_missing_key_reads_as_none(root):
    """record["missing"] returns None rather than raising KeyError, as in the seed."""
    assert _one_record(root, x=1)["missing"] is None


def test_get_returns_the_default_only_for_a_missing_key(root):
    """get(key, default) gives the value when the key is anywhere in the lineage."""
    record = _one_record(root, x=0)
    assert (record.get("x", 9), record.get("experiment", 9), record.get("missing", 9), record.get("missing")) == (
        0,
        1,
        9,
        None,
    )


def test_in_looks_at_the_record_and_the_lineage(root):
    """`key in record` is True for own and inherited keys, False otherwise."""
    record = _one_record(root, x=1)
    assert ("x" in record, "model" in record, "experiment" in record, "missing" in record) == (True, True, True, False)


def test_iteration_gives_own_keys_then_nearest_lineage_keys_once_each():
    """Keys come in order: the record's, then the recorder's, then each ancestor's, no repeats."""
    assert list(_one_record(x=1, name="row")) == ["x", "name", "model", "experiment"]


def test_len_counts_distinct_keys():
    """len(record) is the number of distinct keys seen through the lineage."""
    assert len(_one_record(x=1, name="row")) == 4


def test_dict_of_a_record_is_a_plain_dict_with_the_merged_values():
    """dict(record) copies the merged view into a built-in dict."""
    flat = dict(_one_record(x=1))
    assert (type(flat), flat) == (dict, {"x": 1, "name": "model", "model": "m", "experiment": 1})


def test_a_record_equals_a_dict_with_the_same_contents():
    """record == dict compares contents, whatever the order."""
    assert _one_record(x=1) == {"experiment": 1, "model": "m", "name": "model", "x": 1}


def test_a_record_differs_from_a_dict_with_another_value():
    """record != dict when one value differs."""
    assert _one_record(x=1) != {"experiment": 1, "model": "m", "name": "model", "x": 2}


def test_a_record_differs_from_a_dict_with_a_missing_key():
    """A dict without an inherited key is not equal to the record."""
    assert _one_record(x=1) != {"x": 1}


def test_the_repr_of_a_record_reads_like_a_dict():
    """repr(record) is the repr of dict(record)."""
    recorder = Recorder(model="m")
    recorder.push(loss=0.5)
    assert repr(recorder[0]) == "{'loss': 0.5, 'model': 'm'}"


def test_a_record_cannot_be_assigned_to():
    """Records are read-only views: item assignment raises TypeError."""
    record = _one_record(x=1)
    with pytest.raises(TypeError):
        record["x"] = 2  # type: ignore[index]


def test_a_record_cannot_be_deleted_from():
    """del record[key] raises TypeError."""
    record = _one_record(x=1)
    with pytest.raises(TypeError):
        del record["x"]  # type: ignore[attr-defined]


def test_own_data_leaves_out_the_lineage(root):
    """own_data() gives only the values committed in the record."""
    assert _one_record(root, x=1, y=2).own_data() == {"x": 1, "y": 2}


def test_a_records_recorder_is_the_one_that_committed_it(root):
    """record.recorder is the committing recorder, also when read through an ancestor."""
    child = Recorder().set_parent(root)
    child.push(x=1)
    assert root.all_records[0].recorder is child


def test_an_own_none_does_not_hide_a_parent_value(root):
    """A record's own None counts as not set here: the lineage's value shows through."""
    recorder = Recorder(x="parent").set_parent(root)
    recorder.push(x=None, y=1)
    assert (recorder[0]["x"], plain(recorder[0])) == ("parent", {"y": 1, "x": "parent"})


def test_an_own_none_without_a_lineage_value_is_absent(root):
    """A key whose only value is an own None is not in the record."""
    recorder = Recorder().set_parent(root)
    recorder.push(x=None, y=1)
    assert ("x" in recorder[0], plain(recorder[0])) == (False, {"y": 1})


def test_a_local_none_is_a_present_key(root):
    """A None stored as local data is a key of the record with the value None."""
    recorder = Recorder(note=None).set_parent(root)
    recorder.push(x=1)
    assert ("note" in recorder[0], plain(recorder[0])) == (True, {"x": 1, "note": None})


def test_records_read_through_all_records_see_their_own_lineage(root):
    """Each record of a subtree reads the local data of its own branch."""
    run = Recorder(run=1).set_parent(root)
    Recorder(model="a").set_parent(run).push(x=1)
    Recorder(model="b").set_parent(run).push(x=2)
    assert plains(run.all_records) == [
        {"x": 1, "model": "a", "run": 1},
        {"x": 2, "model": "b", "run": 1},
    ]


def test_a_sealed_record_reads_like_a_pending_one(root):
    """After flush() turns rows into an Arrow batch (written, in a run), records read the same values and order."""
    recorder = Recorder(run=1).set_parent(root)
    recorder.push(x=1, s="a").push(y=[1, 2]).push(x=3, d={"k": 1})
    before = [(list(record), dict(record)) for record in recorder]
    recorder.flush()
    assert [(list(record), dict(record)) for record in recorder] == before


def test_record_class_is_exported():
    """Record is importable from the package and is the type of what commit() returns."""
    assert type(Recorder().add(x=1).commit()) is Record
