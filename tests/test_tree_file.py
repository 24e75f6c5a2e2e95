"""Tests of save_to / load_from: one Parquet file holds a whole recorder tree, never a pickle."""

import datetime
import pickle

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rigorous_recorder import Recorder, RecorderError
from rigorous_recorder.recorder import BATCH_ROWS

from .conftest import same


def _round_trip(recorder, tmp_path, name="tree.parquet"):
    path = tmp_path / name
    recorder.save_to(path)
    return Recorder.load_from(path)


def _experiment_tree():
    """experiment -> (model a -> train, test), (model b), with records at several levels."""
    experiment = Recorder(experiment=1, started=datetime.datetime(2024, 1, 2, 3, 4, 5))
    model_a = Recorder(model="a", lr=0.1).set_parent(experiment)
    train = Recorder(split="train").set_parent(model_a)
    test = Recorder(split="test").set_parent(model_a)
    model_b = Recorder(model="b", lr=0.01).set_parent(experiment)
    experiment.push(note="start")
    for index in range(3):
        train.push(index=index, loss=1 / (index + 1))
    test.push(index=0, accuracy=0.75)
    model_b.push(index=0, loss=float("nan"), weights=[0.5, 1.5], config={"depth": 2})
    return experiment


# -- the file -----------------------------------------------------------------------------------


def test_save_to_returns_the_recorder(tmp_path):
    """save_to() returns self."""
    recorder = Recorder()
    assert recorder.save_to(tmp_path / "tree.parquet") is recorder


def test_a_pickle_path_holds_a_parquet_file(tmp_path):
    """The seed's .pickle paths keep working, and the file written there is Parquet."""
    path = tmp_path / "run.pickle"
    _experiment_tree().save_to(path)
    data = path.read_bytes()
    assert (data[:4], data[-4:], pq.read_table(path).num_rows) == (b"PAR1", b"PAR1", 6)


def test_save_to_creates_missing_folders(tmp_path):
    """Folders in the path that do not exist yet are created."""
    path = tmp_path / "where" / "ever" / "you_want.pickle"
    Recorder(a=1).save_to(path)
    assert Recorder.load_from(path)["a"] == 1


def test_load_from_accepts_a_string_path(tmp_path):
    """save_to and load_from take str paths as well as Paths."""
    path = str(tmp_path / "tree.pickle")
    Recorder(a=1).push(x=2).save_to(path)
    assert dict(Recorder.load_from(path)[0]) == {"x": 2, "a": 1}


def test_saving_twice_to_one_path_replaces_the_file(tmp_path):
    """A second save_to to the same path leaves only the second tree there."""
    path = tmp_path / "tree.parquet"
    Recorder(version=1).push(x=1).save_to(path)
    Recorder(version=2).save_to(path)
    loaded = Recorder.load_from(path)
    assert (loaded["version"], len(loaded)) == (2, 0)


def test_saving_leaves_no_temporary_file_behind(tmp_path):
    """The write goes through a temporary file that is renamed: only the target remains."""
    _experiment_tree().save_to(tmp_path / "tree.parquet")
    assert [path.name for path in tmp_path.iterdir()] == ["tree.parquet"]


class _Explodes:
    """Unpickling this creates the file named by ``marker``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_loading_a_real_pickle_raises_a_clear_error_and_never_unpickles(tmp_path):
    """A pickle given to load_from is refused as not a rigorous_recorder file; its code never runs."""
    marker = tmp_path / "unpickled"
    path = tmp_path / "old_run.pickle"
    path.write_bytes(pickle.dumps(_Explodes(str(marker))))
    with pytest.raises(RecorderError, match="not a rigorous_recorder file"):
        Recorder.load_from(path)
    assert not marker.exists()


def test_loading_a_parquet_file_without_a_tree_raises(tmp_path):
    """A Parquet file that save_to did not write is refused with a clear message."""
    import pyarrow as pa

    path = tmp_path / "other.parquet"
    pq.write_table(pa.table({"x": [1, 2]}), path)
    with pytest.raises(RecorderError, match="without a rigorous_recorder tree"):
        Recorder.load_from(path)


def _with_tree_changed(path, change):
    """Rewrite the records file at ``path`` with ``change`` applied to its tree (rows kept)."""
    import json

    table = pq.read_table(path)
    tree = json.loads(table.schema.metadata[b"rigorous_recorder.tree"])
    change(tree)
    pq.write_table(table.replace_schema_metadata({b"rigorous_recorder.tree": json.dumps(tree).encode()}), path)


@pytest.mark.parametrize(("change", "problem"), [
    (lambda tree: tree["recorders"][2].update(rows=5), "recorder 2 has 3 rows, its tree says 5"),
    (lambda tree: tree["recorders"].pop(), "rows of recorder 4, which its tree does not hold"),
])
def test_rows_that_disagree_with_the_tree_are_damage_naming_the_file(tmp_path, change, problem):
    """A tree that counts a recorder's rows wrong, or lacks a recorder that has rows, is damage:
    the error names the file and the problem, and no record is given to a wrong recorder."""
    path = tmp_path / "tree.parquet"
    _experiment_tree().save_to(path)
    _with_tree_changed(path, change)
    with pytest.raises(RecorderError, match=problem) as raised:
        Recorder.load_from(path)
    assert str(path) in str(raised.value)


def test_other_parquet_readers_see_one_row_per_record(tmp_path):
    """The file is a plain table: one row per record, a column per key plus the recorder id."""
    path = tmp_path / "tree.parquet"
    _experiment_tree().save_to(path)
    table = pq.read_table(path)
    assert sorted(table.column_names) == sorted(["__recorder__", "note", "index", "loss", "accuracy", "weights", "config"])
    assert table.column("index").to_pylist() == [None, 0, 1, 2, 0, 0]


# -- the tree -----------------------------------------------------------------------------------


def _shape(recorder):
    return (dict(recorder.local_data), [_shape(child) for child in recorder.children])


def test_the_tree_shape_and_local_data_round_trip(tmp_path):
    """Children, their order, and every recorder's local data come back."""
    tree = _experiment_tree()
    assert _shape(_round_trip(tree, tmp_path)) == _shape(tree)


def test_every_record_round_trips_with_its_lineage(tmp_path):
    """all_records of the loaded tree equal the saved tree's, value types included."""
    tree = _experiment_tree()
    loaded = _round_trip(tree, tmp_path)
    expected = [dict(record) for record in tree.all_records]
    actual = [dict(record) for record in loaded.all_records]
    assert len(actual) == len(expected) == 6
    assert all(map(same, expected, actual)), (expected, actual)


def test_each_recorder_keeps_its_own_records(tmp_path):
    """Records stay with the recorder that committed them."""
    loaded = _round_trip(_experiment_tree(), tmp_path)
    model_a = loaded.children[0]
    train, test = model_a.children
    assert ([len(r) for r in (loaded, model_a, train, test)], [r["index"] for r in train]) == ([1, 0, 3, 1], [0, 1, 2])


def test_saving_a_child_keeps_the_ancestors_data_but_not_their_records(tmp_path):
    """A saved subtree loads with its ancestors' local data, and without their other records."""
    tree = _experiment_tree()
    train = tree.children[0].children[0]
    loaded = _round_trip(train, tmp_path)
    assert (loaded["split"], loaded.parent["model"], loaded.parent.parent["experiment"]) == ("train", "a", 1)
    assert (len(loaded.parent), len(loaded.parent.parent), loaded.parent.children) == (0, 0, (loaded,))
    assert dict(loaded[2]) == dict(train[2])


def test_an_empty_recorder_round_trips(tmp_path):
    """A recorder without data, records or children loads as one."""
    loaded = _round_trip(Recorder(), tmp_path)
    assert (len(loaded), dict(loaded.local_data), loaded.children, loaded.parent) == (0, {}, (), None)


def test_records_without_values_keep_their_count(tmp_path):
    """Empty commits are records too: their number survives the round trip."""
    recorder = Recorder(run=1)
    recorder.push().push()
    loaded = _round_trip(recorder, tmp_path)
    assert [dict(record) for record in loaded] == [{"run": 1}, {"run": 1}]


def test_a_loaded_tree_can_grow_and_be_saved_again(tmp_path):
    """After loading, pushes, children and a second save keep old and new records."""
    loaded = _round_trip(_experiment_tree(), tmp_path)
    loaded.children[1].push(index=1, loss=0.5)
    Recorder(model="c").set_parent(loaded).push(index=0)
    again = _round_trip(loaded, tmp_path, "again.parquet")
    assert [(record["model"], record["index"]) for record in again.all_records][-3:] == [("b", 0), ("b", 1), ("c", 0)]


def test_local_data_of_every_kind_round_trips(tmp_path):
    """Local data keeps NaN, inf, bytes, datetimes, big ints, lists, dicts and None."""
    data = {
        "nan": float("nan"),
        "inf": float("inf"),
        "bytes": b"\x00",
        "when": datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc),
        "day": datetime.date(2024, 1, 1),
        "big": -(2**90),
        "nested": [[1, 2.5], "x"],
        "config": {"a": {"b": None}},
        "tag_like": {"$bytes": "aGk="},
        "none": None,
        "lone surrogate": "x\udcff",
    }
    loaded = _round_trip(Recorder(data), tmp_path)
    assert same(data, dict(loaded.local_data))


# -- types and drift through the file ---------------------------------------------------------------


def test_an_int_column_stays_int(tmp_path):
    """Ints without any float under their key load as ints."""
    recorder = Recorder().push(x=1).push(x=2)
    assert [type(record["x"]) for record in _round_trip(recorder, tmp_path)] == [int, int]


def test_int_then_float_loads_as_float(tmp_path):
    """The widening rule holds after a round trip."""
    recorder = Recorder().push(x=1).push(x=2.5)
    assert [(type(r["x"]), r["x"]) for r in _round_trip(recorder, tmp_path)] == [(float, 1.0), (float, 2.5)]


def test_type_drift_within_a_batch_survives_the_file(tmp_path):
    """float then str, bool then int, str then bytes: each value loads exactly."""
    recorder = Recorder()
    pairs = [(1.5, "high"), (True, 0), ("a", b"a"), (datetime.date(2020, 1, 1), datetime.datetime(2020, 1, 1, 5))]
    for first, second in pairs:
        recorder.push(v=first).push(v=second)
    loaded = _round_trip(recorder, tmp_path)
    expected = [value for pair in pairs for value in pair]
    assert all(same(e, record["v"]) for e, record in zip(expected, loaded, strict=True))


def test_type_drift_across_batches_survives_the_file(tmp_path):
    """A float column that turns to str after a full batch loads with every value exact."""
    recorder = Recorder()
    for index in range(BATCH_ROWS):
        recorder.push(v=index / 2)
    recorder.push(v="done")
    loaded = _round_trip(recorder, tmp_path)
    assert (len(loaded), loaded[1]["v"], loaded[BATCH_ROWS - 1]["v"], loaded[-1]["v"]) == (
        BATCH_ROWS + 1,
        0.5,
        (BATCH_ROWS - 1) / 2,
        "done",
    )


def test_a_str_batch_then_a_json_batch_of_one_key_round_trips(tmp_path):
    """Batches whose types differ only in the JSON marker are not merged as one plain str column."""
    recorder = Recorder()
    recorder.push(v="").flush()
    recorder.push(v={}).push(v=[1, "x"])
    loaded = _round_trip(recorder, tmp_path)
    assert [record["v"] for record in loaded] == ["", {}, [1, "x"]]


def test_int_then_float_across_batches_loads_as_float(tmp_path):
    """Ints of a full first batch load as floats when a later batch holds floats."""
    recorder = Recorder()
    for index in range(BATCH_ROWS):
        recorder.push(v=index)
    recorder.push(v=0.5)
    loaded = _round_trip(recorder, tmp_path)
    assert [(type(r["v"]), r["v"]) for r in (loaded[3], loaded[-1])] == [(float, 3.0), (float, 0.5)]


def test_one_key_with_different_kinds_in_different_recorders_round_trips(tmp_path):
    """Each recorder gets back its own kind for a key the others use differently."""
    root = Recorder()
    kinds = [1, 2.5, "s", [1, 2], {"a": 1}, b"b", None, 2**70]
    for value in kinds:
        Recorder().set_parent(root).push(v=value)
    loaded = _round_trip(root, tmp_path)
    assert all(same(value, child[0]["v"]) for value, child in zip(kinds, loaded.children, strict=True))


def test_a_key_set_only_to_none_in_one_recorder_round_trips(tmp_path):
    """A recorder whose values for a key are all None loads beside one with numbers there."""
    root = Recorder()
    Recorder().set_parent(root).push(v=None, w=1).push(v=None, w=2)
    Recorder().set_parent(root).push(v=1.5)
    loaded = _round_trip(root, tmp_path)
    assert [dict(record) for record in loaded.all_records] == [{"w": 1}, {"w": 2}, {"v": 1.5}]


def test_ints_in_one_recorder_and_floats_in_another_round_trip(tmp_path):
    """An int-only recorder keeps int values when another recorder has floats under the key."""
    root = Recorder()
    Recorder().set_parent(root).push(v=3)
    Recorder().set_parent(root).push(v=0.5)
    first, second = _round_trip(root, tmp_path).children
    assert ((type(first[0]["v"]), first[0]["v"]), second[0]["v"]) == ((int, 3), 0.5)


def test_a_huge_int_beside_floats_in_another_recorder_loads_widened(tmp_path):
    """Beyond 2**53 the shared float column rounds the int, as pandas would; loading never raises."""
    root = Recorder()
    Recorder().set_parent(root).push(v=2**60 + 1).push(v=2**63 - 1)
    Recorder().set_parent(root).push(v=0.5)
    first, _ = _round_trip(root, tmp_path).children
    assert [record["v"] for record in first] == [2**60, 2**63 - 1]


# -- hypothesis: random trees ---------------------------------------------------------------------

KEYS = st.sampled_from(["a", "b", "c", "d"])
OFFSETS = st.integers(-23 * 60, 23 * 60).map(lambda minutes: datetime.timezone(datetime.timedelta(minutes=minutes)))
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53), 2**53),
    st.integers(2**63, 2**80),
    st.integers(-(2**80), -(2**63) - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(st.characters(exclude_categories=()), max_size=5),  # lone surrogates included
    st.binary(max_size=5),
    st.datetimes(),
    st.datetimes(timezones=OFFSETS),
    st.dates(),
)
DICT_KEYS = st.one_of(st.sampled_from(["$bytes", "$dict", "$date", "x"]), st.text(max_size=3))
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(DICT_KEYS, inner, max_size=3)),
    max_leaves=6,
)
ROWS = st.lists(st.tuples(st.dictionaries(KEYS, VALUES, max_size=4), st.booleans()), max_size=5)
TREES = st.recursive(
    st.tuples(st.dictionaries(KEYS, VALUES, max_size=3), ROWS, st.just([])),
    lambda children: st.tuples(st.dictionaries(KEYS, VALUES, max_size=3), ROWS, st.lists(children, max_size=3)),
    max_leaves=6,
)


def _build(tree, parent=None):
    """Make the recorders of ``tree`` (local data, rows, children); a row's flag seals after it."""
    local, rows, children = tree
    recorder = Recorder(local).set_parent(parent)
    for values, seal in rows:
        recorder.push(values)
        if seal:
            recorder.flush()
    for child in children:
        _build(child, recorder)
    return recorder


def _has_float(value):
    if type(value) is float:
        return True
    return type(value) is list and any(map(_has_float, value))


def _expected(tree, lineage=()):
    """(record dict, keys that may widen) for every record of ``tree``, depth first."""
    local, rows, children = tree
    lineage = (local, *lineage)
    inherited = {}
    for data in reversed(lineage):
        inherited.update(data)
    widen = {key for values, _ in rows for key, value in values.items() if _has_float(value)}
    expected = []
    for values, _ in rows:
        record = dict(inherited)
        record.update({key: value for key, value in values.items() if value is not None})
        expected.append((record, widen))
    for child in children:
        expected.extend(_expected(child, lineage))
    return expected


def _matches(expected, records):
    records = [dict(record) for record in records]
    assert len(records) == len(expected)
    for (want, widen), got in zip(expected, records):
        assert want.keys() == got.keys(), (want, got)
        for key in want:
            assert same(want[key], got[key], widen=key in widen), (key, want[key], got[key])


def _same_shape(tree, recorder):
    local, _, children = tree
    assert same(local, dict(recorder.local_data)), (local, dict(recorder.local_data))
    assert len(recorder.children) == len(children)
    for child_tree, child in zip(children, recorder.children):
        _same_shape(child_tree, child)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(tree=TREES)
def test_random_trees_round_trip_through_the_file(tree, tmp_path):
    """Any tree of storable local data and records reads the same in memory and after loading."""
    recorder = _build(tree)
    expected = _expected(tree)
    _matches(expected, recorder.all_records)
    path = tmp_path / "random.pickle"
    recorder.save_to(path)
    loaded = Recorder.load_from(path)
    _same_shape(tree, loaded)
    _matches(expected, loaded.all_records)
