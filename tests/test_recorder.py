"""Tests of Recorder: the tree, local data, staging and committing, and reading records back."""

import re

import pytest

from rigorous_recorder import (
    ExperimentCollection,
    InvalidKeyError,
    Record,
    RecordKeeper,
    Recorder,
    RecorderError,
    RecorderTreeError,
    UnsupportedValueError,
)
from rigorous_recorder.recorder import BATCH_ROWS

from .conftest import plain, plains

# -- the class and its tree ------------------------------------------------------------------


def test_record_keeper_is_the_recorder_class():
    """RecordKeeper, the seed's name, is the very same class as Recorder."""
    assert RecordKeeper is Recorder


def test_local_data_comes_from_a_dict_and_keywords():
    """Recorder(data, **kwargs) holds both, a keyword winning over the dict's same key."""
    recorder = Recorder({"a": 1, "b": 2}, b=3, c=4)
    assert dict(recorder.local_data) == {"a": 1, "b": 3, "c": 4}


def test_a_new_recorder_has_no_records_no_parent_and_no_children():
    """A fresh recorder is an empty root."""
    recorder = Recorder()
    assert (len(recorder), list(recorder), recorder.parent, recorder.children) == (0, [], None, ())


def test_set_parent_returns_the_child_itself(root):
    """set_parent returns self, so a recorder can be built and attached in one expression."""
    child = Recorder(x=1)
    assert child.set_parent(root) is child


def test_set_parent_links_both_directions(root):
    """After set_parent the child names its parent and the parent lists the child."""
    first = Recorder().set_parent(root)
    second = Recorder().set_parent(root)
    assert (first.parent, second.parent, root.children) == (root, root, (first, second))


def test_set_parent_again_moves_the_child_and_its_records(root):
    """Attaching a child to a new parent removes it from the old parent's children; its records follow."""
    old, new = Recorder(where="old").set_parent(root), Recorder(where="new").set_parent(root)
    child = Recorder().set_parent(old).push(x=1)
    child.set_parent(new)
    assert (old.children, new.children, child.parent) == ((), (child,), new)
    assert plains(root.all_records) == [{"x": 1, "where": "new"}]


def test_a_subtree_with_records_brings_them_along_when_attached(root):
    """Records committed before set_parent, sealed or not, in the recorder and below it, move with it."""
    model = Recorder(model="m").push(x=1).flush().push(x=2)
    Recorder(split="test").set_parent(model).push(y=1)
    model.set_parent(root)
    model.push(x=3)
    assert plains(root.all_records) == [
        {"x": 1, "model": "m"}, {"x": 2, "model": "m"}, {"x": 3, "model": "m"}, {"y": 1, "split": "test", "model": "m"},
    ]


def test_set_parent_twice_to_the_same_parent_lists_the_child_once(root):
    """Repeating set_parent with the same parent does not duplicate the child."""
    child = Recorder().set_parent(root).set_parent(root)
    assert root.children == (child,)


def test_set_parent_none_detaches():
    """set_parent(None) makes the recorder a root again and its records stop inheriting."""
    parent = Recorder(run=1)
    child = Recorder().set_parent(parent)
    child.push(x=1)
    child.set_parent(None)
    assert (child.parent, parent.children, dict(child[0])) == (None, (), {"x": 1})


def test_sub_recorder_makes_a_child_with_local_data(root):
    """sub_recorder(**kw) returns a new child that holds kw as its local data."""
    parent = Recorder(run=1).set_parent(root)
    child = parent.sub_recorder({"a": 1}, model="m")
    assert (child.parent, parent.children, dict(child.local_data)) == (parent, (child,), {"a": 1, "model": "m"})


@pytest.mark.parametrize("name", ["SubRecorder", "SubRecordKeeper"])
def test_the_seed_names_of_sub_recorder_still_work(root, name):
    """SubRecorder and SubRecordKeeper, the seed's names, make a child as sub_recorder does."""
    parent = Recorder(run=1).set_parent(root)
    child = getattr(parent, name)(model="m")
    child.push(x=1)
    assert (child.parent, plain(child[0])) == (parent, {"x": 1, "model": "m", "run": 1})


def test_set_parent_to_itself_raises_a_tree_error(root):
    """A recorder cannot be its own parent."""
    recorder = Recorder().set_parent(root)
    with pytest.raises(RecorderTreeError, match="own ancestor"):
        recorder.set_parent(recorder)
    assert recorder.parent is root


def test_set_parent_to_a_descendant_raises_and_leaves_the_tree_as_it_was(root):
    """A cycle through a grandchild is refused and no link changes."""
    top = Recorder().set_parent(root)
    child = Recorder().set_parent(top)
    grandchild = Recorder().set_parent(child)
    with pytest.raises(RecorderTreeError, match="own ancestor"):
        top.set_parent(grandchild)
    assert (top.parent, top.children, grandchild.children) == (root, (child,), ())


@pytest.mark.parametrize("caught", [ValueError, RecorderError])
def test_a_refused_set_parent_is_caught_as_value_error_or_recorder_error(caught):
    """The tree error of a cycle is caught by an ``except`` of the built-in ValueError or of RecorderError."""
    recorder = Recorder()
    with pytest.raises(caught, match="own ancestor"):
        recorder.set_parent(recorder)


def test_set_parent_to_something_else_than_a_recorder_raises():
    """A dict is not a valid parent; the message names the type given."""
    with pytest.raises(RecorderTreeError, match="dict"):
        Recorder().set_parent({"run": 1})


def test_lineage_data_merges_ancestors_nearest_first(root):
    """lineage_data() gives every key seen from the recorder, the nearest value winning."""
    top = Recorder(a="top", b="top").set_parent(root)
    middle = Recorder(b="middle", c="middle").set_parent(top)
    leaf = Recorder(c="leaf").set_parent(middle)
    assert plain(leaf.lineage_data()) == {"a": "top", "b": "middle", "c": "leaf"}


# -- swap_out -----------------------------------------------------------------------------------


def test_swap_out_replaces_the_parent(root):
    """swap_out(old, new) hangs the recorder below new when old is its parent, and says so."""
    old, new = Recorder(phase="old").set_parent(root), Recorder(phase="new").set_parent(root)
    child = Recorder().set_parent(old)
    assert child.swap_out(old, new) is True
    assert (child.parent, old.children, new.children) == (new, (), (child,))


def test_swap_out_replaces_a_grandparent_in_the_lineage(root):
    """The link to a deeper ancestor is replaced at its own level, the parent is kept."""
    old, new = Recorder(phase="old").set_parent(root), Recorder(phase="new").set_parent(root)
    middle = Recorder(m=1).set_parent(old)
    leaf = Recorder().set_parent(middle)
    leaf.push(x=1)
    assert leaf.swap_out(old, new) is True
    assert (leaf.parent, middle.parent, leaf[0]["phase"]) == (middle, new, "new")


def test_swap_out_is_false_when_old_is_not_an_ancestor(root):
    """A recorder that is not in the lineage leaves the tree alone."""
    parent, stranger, new = (Recorder().set_parent(root) for _ in range(3))
    child = Recorder().set_parent(parent)
    assert child.swap_out(stranger, new) is False
    assert child.parent is parent


def test_records_see_the_swapped_in_ancestor_data(root):
    """Records committed before a swap read the new ancestor's data afterwards."""
    first_epoch, second_epoch = Recorder(epoch=1).set_parent(root), Recorder(epoch=2).set_parent(root)
    batch_recorder = Recorder().set_parent(first_epoch)
    batch_recorder.push(loss=0.5)
    batch_recorder.swap_out(first_epoch, second_epoch)
    assert batch_recorder[0]["epoch"] == 2


def test_records_below_a_moved_recorder_see_its_new_ancestors(root):
    """Moving a recorder changes what its descendants' records inherit."""
    old, new = Recorder(where="old").set_parent(root), Recorder(where="new", extra=1).set_parent(root)
    middle = Recorder(level="middle").set_parent(old)
    leaf = Recorder().set_parent(middle)
    leaf.push(x=1)
    middle.set_parent(new)
    assert plain(leaf[0]) == {"x": 1, "level": "middle", "where": "new", "extra": 1}


def test_records_below_a_detached_recorder_stop_inheriting():
    """Detaching a recorder takes its ancestors' data away from its descendants' records."""
    top = Recorder(where="top")
    middle = Recorder(level="middle").set_parent(top)
    leaf = Recorder().set_parent(middle)
    leaf.push(x=1)
    middle.set_parent(None)
    assert (dict(leaf[0]), leaf[0]["where"]) == ({"x": 1, "level": "middle"}, None)


# -- local data ---------------------------------------------------------------------------------


def test_reading_a_local_data_key():
    """recorder["key"] reads the recorder's own local data."""
    assert Recorder(model="m")["model"] == "m"


def test_reading_a_missing_local_data_key_gives_none():
    """recorder["missing"] is None, as a record's missing key is."""
    assert Recorder()["missing"] is None


def test_get_reads_local_data_with_a_default():
    """get(key, default) returns the default only when the key is absent."""
    recorder = Recorder(a=0)
    assert (recorder.get("a", 5), recorder.get("b", 5), recorder.get("b")) == (0, 5, None)


def test_get_with_an_int_reads_a_record_or_the_default(root):
    """get(i) gives the i-th record, and the default past the end."""
    recorder = Recorder().set_parent(root).push(x=1)
    assert (plain(recorder.get(0)), recorder.get(3, "none")) == ({"x": 1}, "none")


def test_keys_values_items_and_in_read_local_data():
    """keys(), values(), items() and `in` describe the local data, not the records."""
    recorder = Recorder(a=1, b="x").push(c=3)
    assert (list(recorder.keys()), list(recorder.values()), list(recorder.items())) == (
        ["a", "b"],
        [1, "x"],
        [("a", 1), ("b", "x")],
    )
    assert ("a" in recorder, "c" in recorder) == (True, False)


def test_writing_local_data_is_checked_like_update_and_seen_by_earlier_records():
    """local_data["k"] = v (1.x's way) goes through update(): values are checked, records see the change."""
    recorder = Recorder(a=1)
    recorder.push(x=1)
    recorder.local_data["a"] = 2
    del recorder.local_data["a"]
    recorder.local_data["b"] = (1, 2)
    assert dict(recorder.local_data) == {"b": [1, 2]}
    assert recorder[0]["b"] == [1, 2] and recorder[0]["a"] is None
    with pytest.raises(UnsupportedValueError, match="'bad'"):
        recorder.local_data["bad"] = object()


def test_setting_a_key_writes_local_data(root):
    """recorder["key"] = value adds or replaces a local data value."""
    recorder = Recorder(a=1).set_parent(root)
    recorder["a"] = 2
    recorder["b"] = 3
    assert dict(recorder.local_data) == {"a": 2, "b": 3}


def test_a_local_value_set_later_is_seen_by_every_earlier_record(root):
    """A value set on the recorder after its commits is visible in all of them."""
    recorder = Recorder().set_parent(root)
    recorder.push(x=1).push(x=2)
    recorder["note"] = "late"
    assert [record["note"] for record in recorder] == ["late", "late"]


def test_a_parent_value_set_later_is_seen_by_earlier_child_records(root):
    """A value set on the parent after a child's commit is visible in that record."""
    parent = Recorder(run=1).set_parent(root)
    child = Recorder().set_parent(parent)
    child.push(x=1)
    parent["note"] = "late"
    assert child[0]["note"] == "late"


def test_a_late_value_is_seen_by_records_that_were_sealed_into_a_batch(root):
    """Parent data set after the rows became an Arrow batch (written, in a run) still shows in those records."""
    recorder = Recorder().set_parent(root)
    recorder.push(x=1).flush()
    recorder["note"] = "late"
    assert plain(recorder[0]) == {"x": 1, "note": "late"}


def test_update_sets_several_local_values(root):
    """update(dict, **kw) sets several keys at once, keywords winning."""
    recorder = Recorder(a=1).set_parent(root)
    recorder.update({"b": 2, "c": 3}, c=4)
    assert dict(recorder.local_data) == {"a": 1, "b": 2, "c": 4}


def test_the_dict_given_to_the_constructor_is_neither_kept_nor_mutated():
    """The recorder copies the dict: changing either side later leaves the other alone."""
    data = {"a": 1, "tags": ["x"]}
    recorder = Recorder(data, b=2)
    data["a"] = 99
    data["tags"].append("y")
    recorder["c"] = 3
    assert (data, dict(recorder.local_data)) == (
        {"a": 99, "tags": ["x", "y"]},
        {"a": 1, "tags": ["x"], "b": 2, "c": 3},
    )


# -- committing ---------------------------------------------------------------------------------


def test_push_returns_the_recorder(root):
    """push() returns self, so pushes chain."""
    recorder = Recorder().set_parent(root)
    assert recorder.push(x=1) is recorder


def test_add_returns_the_recorder(root):
    """add() returns self, so add().commit() chains."""
    recorder = Recorder().set_parent(root)
    assert recorder.add(x=1) is recorder


def test_commit_returns_the_record_it_made(root):
    """commit() returns the new record, seen through the lineage."""
    recorder = Recorder(model="m").set_parent(root)
    record = recorder.add(x=1).commit()
    assert (type(record), plain(record), record.recorder) == (Record, {"x": 1, "model": "m"}, recorder)


def test_push_takes_a_dict_and_keywords(root):
    """push(dict, **kw) records both, a keyword winning over the dict's same key."""
    recorder = Recorder().set_parent(root)
    recorder.push({"x": 1, "y": 2}, y=3)
    assert plain(recorder[0]) == {"x": 1, "y": 3}


def test_push_is_add_then_commit(root):
    """push(values) and add(values).commit() give the same records."""
    pushed, committed = Recorder(run=1).set_parent(root), Recorder(run=1).set_parent(root)
    for index in range(3):
        pushed.push({"loss": index / 2}, index=index)
        committed.add({"loss": index / 2}, index=index).commit()
    assert [plain(record) for record in pushed] == [plain(record) for record in committed]


def test_add_accumulates_values_until_commit(root):
    """Several add() calls make one record; a later value of the same key wins."""
    recorder = Recorder().set_parent(root)
    recorder.add(index=0, loss=1.0)
    recorder.add({"loss": 0.5})
    assert len(recorder) == 0
    recorder.commit()
    assert (len(recorder), plain(recorder[0])) == (1, {"index": 0, "loss": 0.5})


def test_push_includes_values_staged_by_add(root):
    """push() commits what add() staged together with its own values."""
    recorder = Recorder().set_parent(root)
    recorder.add(index=3)
    recorder.push(loss=0.25)
    assert plain(recorder[0]) == {"index": 3, "loss": 0.25}


def test_staged_shows_the_values_added_since_the_last_commit(root):
    """staged is empty after a commit and holds what add() gave before it."""
    recorder = Recorder().set_parent(root)
    recorder.add(x=1).add(y=2)
    before = dict(recorder.staged)
    recorder.commit()
    assert (before, dict(recorder.staged)) == ({"x": 1, "y": 2}, {})


def test_commit_with_nothing_staged_makes_an_empty_record(root):
    """commit() without add() still makes a record, which sees only the lineage."""
    recorder = Recorder(run=1).set_parent(root)
    recorder.commit()
    recorder.push()
    assert (len(recorder), [plain(record) for record in recorder]) == (2, [{"run": 1}, {"run": 1}])


def test_records_may_have_different_keys(root):
    """A key missing from a record is simply absent from it, not None in the dict."""
    recorder = Recorder().set_parent(root)
    recorder.push(x=1).push(y=2).push(x=3, y=4)
    assert [plain(record) for record in recorder] == [{"x": 1}, {"y": 2}, {"x": 3, "y": 4}]


def test_push_does_not_mutate_the_dict_given(root):
    """The dict passed to push() is the same afterwards, and later changes to it do not leak."""
    values = {"x": 1, "items": [1, 2]}
    recorder = Recorder().set_parent(root)
    recorder.push(values, y=2)
    values["items"].append(3)
    assert (values, plain(recorder[0])) == ({"x": 1, "items": [1, 2, 3]}, {"x": 1, "items": [1, 2], "y": 2})


def test_add_does_not_mutate_the_dict_given(root):
    """Later add() calls update the recorder's staging, never the caller's dict."""
    first = {"x": 1}
    recorder = Recorder().set_parent(root)
    recorder.add(first).add({"x": 2, "y": 3})
    recorder.commit()
    assert (first, plain(recorder[0])) == ({"x": 1}, {"x": 2, "y": 3})


# -- reading records ----------------------------------------------------------------------------


def _numbered(count, root):
    """A recorder below ``root`` with ``count`` records, whose ``index`` counts from 0."""
    recorder = Recorder().set_parent(root)
    for index in range(count):
        recorder.push(index=index)
    return recorder


def test_len_counts_the_recorders_own_records(root):
    """len() is the number of records this recorder committed, not its children's."""
    parent = _numbered(3, root)
    Recorder().set_parent(parent).push(index=9)
    assert len(parent) == 3


def test_iterating_gives_the_records_in_commit_order(root):
    """iter(recorder) yields its records oldest first."""
    assert [record["index"] for record in _numbered(4, root)] == [0, 1, 2, 3]


def test_indexing_gives_one_record(root):
    """recorder[i] is the i-th record."""
    assert _numbered(4, root)[2]["index"] == 2


def test_negative_indices_count_from_the_end(root):
    """recorder[-1] is the last record, recorder[-4] the first of four."""
    recorder = _numbered(4, root)
    assert (recorder[-1]["index"], recorder[-4]["index"]) == (3, 0)


def test_an_index_past_the_end_raises_index_error(root):
    """recorder[len] and recorder[-len - 1] raise IndexError, as a list does."""
    recorder = _numbered(2, root)
    with pytest.raises(IndexError):
        recorder[2]
    with pytest.raises(IndexError):
        recorder[-3]


def test_slicing_gives_a_list_of_records(root):
    """recorder[a:b:c] follows list slicing, negative bounds included."""
    recorder = _numbered(6, root)
    assert (
        [record["index"] for record in recorder[1:4]],
        [record["index"] for record in recorder[::2]],
        [record["index"] for record in recorder[-2:]],
        [record["index"] for record in recorder[::-1]],
    ) == ([1, 2, 3], [0, 2, 4], [4, 5], [5, 4, 3, 2, 1, 0])


def test_records_property_matches_iteration(root):
    """recorder.records holds the same records as iterating the recorder."""
    recorder = _numbered(3, root)
    assert list(recorder.records) == list(recorder)
    assert len(recorder.records) == 3


def test_records_excludes_the_childrens_records(root):
    """.records is this recorder's own records only."""
    parent = Recorder(level="parent").set_parent(root)
    parent.push(x=0)
    Recorder(level="child").set_parent(parent).push(x=1)
    assert [plain(record) for record in parent.records] == [{"x": 0, "level": "parent"}]


def test_all_records_lists_own_records_then_each_descendant_depth_first(root):
    """all_records: the recorder's records, then each child's subtree in attach order."""
    top = Recorder(name="top").set_parent(root).push(x=0)
    first = Recorder(name="first").set_parent(top).push(x=1)
    Recorder(name="first.child").set_parent(first).push(x=2)
    Recorder(name="second").set_parent(top).push(x=3)
    top.push(x=4)
    assert [(record["name"], record["x"]) for record in top.all_records] == [
        ("top", 0),
        ("top", 4),
        ("first", 1),
        ("first.child", 2),
        ("second", 3),
    ]


def test_all_records_supports_len_indexing_and_slicing(root):
    """all_records is a sequence: len, negative index and slices span recorders."""
    root.push(x=0)
    Recorder().set_parent(root).push(x=1).push(x=2)
    records = root.all_records
    assert (len(records), records[-1]["x"], [record["x"] for record in records[0:2]]) == (3, 2, [0, 1])


def test_all_records_of_a_leaf_are_its_records(root):
    """A recorder without children has all_records equal to records."""
    leaf = Recorder().set_parent(Recorder().set_parent(root).push(x=0)).push(x=1)
    assert [plain(record) for record in leaf.all_records] == [{"x": 1}]


def test_repr_shows_local_data_and_counts():
    """The recorder's repr names its local data, record count and child count."""
    recorder = Recorder(model="m", lr=0.1).push(x=1)
    Recorder().set_parent(recorder)
    assert repr(recorder) == "Recorder(model='m', lr=0.1, records=1, children=1)"


# -- many rows: crossing the batch boundary ----------------------------------------------------


def test_records_read_back_across_the_batch_boundary(root):
    """Pushing past BATCH_ROWS keeps every record readable, by index, slice and iteration."""
    count = BATCH_ROWS + 10
    recorder = _numbered(count, root)
    assert len(recorder) == count
    assert [record["index"] for record in recorder] == list(range(count))
    assert (recorder[BATCH_ROWS - 1]["index"], recorder[BATCH_ROWS]["index"], recorder[-1]["index"]) == (
        BATCH_ROWS - 1,
        BATCH_ROWS,
        count - 1,
    )
    assert [record["index"] for record in recorder[BATCH_ROWS - 2 : BATCH_ROWS + 2]] == list(
        range(BATCH_ROWS - 2, BATCH_ROWS + 2)
    )


def test_add_and_commit_read_back_across_the_batch_boundary(root):
    """add() + add() + commit() past BATCH_ROWS keeps every record, each commit returning its own."""
    recorder = Recorder().set_parent(root)
    returned = []
    for index in range(BATCH_ROWS + 10):
        recorder.add(index=index)
        recorder.add({"half": index / 2, "tag": None if index % 3 else "third"})
        returned.append(recorder.commit())
    expected = [{"index": index, "half": index / 2, **({} if index % 3 else {"tag": "third"})}
                for index in range(BATCH_ROWS + 10)]
    assert [plain(record) for record in returned] == [plain(record) for record in recorder] == expected


def test_a_refused_add_between_committed_rows_keeps_them_and_the_staged_values(root):
    """A bad value raises at its own add() naming the key; earlier records and staged values stay."""
    recorder = Recorder().set_parent(root)
    for index in range(5):
        recorder.add(x=float(index)).add({"y": index}).commit()
    recorder.add(x=5.0)
    with pytest.raises(UnsupportedValueError, match="cannot record key 'y'"):
        recorder.add({"y": object()})
    recorder.add(y=5).commit()
    assert [plain(record) for record in recorder] == [{"x": float(index), "y": index} for index in range(6)]


def test_add_and_commit_lose_nothing_while_the_flusher_takes_rows_every_millisecond(tmp_path):
    """With the flusher taking rows every millisecond, every add()+commit() row reaches the run's file once."""
    collection = ExperimentCollection(tmp_path / "study", quiet=True, flush_interval=0.001)
    experiment = collection.new_experiment()
    recorder = Recorder().set_parent(experiment.recorder)
    count = 3 * BATCH_ROWS
    for index in range(count):
        recorder.add(index=index).add({"loss": index / count}).commit()
    experiment.finish()
    stored = ExperimentCollection(tmp_path / "study", quiet=True).records
    assert [(record["index"], record["loss"]) for record in stored if record["index"] is not None] == [
        (index, index / count) for index in range(count)]


def test_a_record_obtained_before_the_batch_is_sealed_stays_valid(root):
    """The Record returned by commit() keeps its values after its rows became a batch."""
    recorder = Recorder().set_parent(root)
    first = recorder.add(index=0).commit()
    for index in range(1, BATCH_ROWS + 5):
        recorder.push(index=index)
    assert plain(first) == {"index": 0}


def test_a_key_first_seen_after_the_batch_boundary_reads_back(root):
    """A key that appears only in the second batch is absent from the first's records."""
    recorder = _numbered(BATCH_ROWS, root)
    recorder.push(index=BATCH_ROWS, late="yes")
    assert (recorder[0].get("late", "absent"), recorder[-1]["late"]) == ("absent", "yes")


def test_flush_keeps_every_record(root):
    """flush() seals the pending rows without changing what the records read."""
    recorder = Recorder(run=1).set_parent(root)
    recorder.push(x=1, tag="a").push(x=2)
    before = [plain(record) for record in recorder]
    recorder.flush()
    recorder.push(x=3)
    assert [plain(record) for record in recorder] == [*before, {"x": 3, "run": 1}]


# -- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize("key", [1, None, ("a",), b"x", ""], ids=["int", "none", "tuple", "bytes", "empty"])
def test_a_bad_key_in_a_pushed_dict_raises_an_invalid_key_error_naming_it(root, key):
    """Only non-empty strings are keys; the message shows the key given."""
    recorder = Recorder().set_parent(root)
    with pytest.raises(InvalidKeyError, match=re.escape(f"cannot record key {key!r}: keys must be non-empty strings")):
        recorder.push({key: 1})


def test_an_invalid_key_error_is_a_type_error():
    """InvalidKeyError can be caught as the built-in TypeError."""
    with pytest.raises(TypeError):
        Recorder().push({3: 1})


def test_an_empty_keyword_key_is_refused_too(root):
    """push(**{"": 1}) is refused like push({"": 1})."""
    recorder = Recorder().set_parent(root)
    with pytest.raises(InvalidKeyError, match="''"):
        recorder.push(**{"": 1})
    assert len(recorder) == 0


def test_an_empty_keyword_key_is_refused_by_the_constructor():
    """Recorder(**{"": 1}) is refused: local data keys follow the same rule."""
    with pytest.raises(InvalidKeyError, match="''"):
        Recorder(**{"": 1})


def test_an_empty_key_is_refused_as_local_data(root):
    """recorder[""] = value raises and leaves the local data as it was."""
    recorder = Recorder(a=1).set_parent(root)
    with pytest.raises(InvalidKeyError):
        recorder[""] = 2
    assert dict(recorder.local_data) == {"a": 1}


def test_a_non_string_local_data_key_is_refused(root):
    """recorder[5] = value raises InvalidKeyError naming 5."""
    recorder = Recorder().set_parent(root)
    with pytest.raises(InvalidKeyError, match="cannot record key 5"):
        recorder[5] = "x"  # type: ignore[index]


def test_the_reserved_recorder_column_name_is_refused_as_a_key(root):
    """__recorder__ names the recorder id in saved files, so it cannot be a record key."""
    recorder = Recorder().set_parent(root)
    with pytest.raises(InvalidKeyError, match="'__recorder__'.*reserved"):
        recorder.push(__recorder__=1)


def test_push_of_an_unsupported_value_names_the_key_and_the_type(root):
    """An object() is refused with an UnsupportedValueError that says where and what."""
    recorder = Recorder().set_parent(root)
    with pytest.raises(UnsupportedValueError, match=r"cannot record key 'model': builtins\.object is not storable"):
        recorder.push(model=object())


@pytest.mark.parametrize("caught", [TypeError, RecorderError])
def test_a_refused_value_is_caught_as_type_error_or_recorder_error(caught):
    """UnsupportedValueError is caught by an ``except`` of the built-in TypeError or of RecorderError."""
    with pytest.raises(caught, match="'model'"):
        Recorder().push(model=object())


def test_a_refused_push_keeps_every_earlier_record(root):
    """After a refused push the records committed before it are all still there."""
    recorder = Recorder(run=1).set_parent(root)
    recorder.push(x=1, y=2).push(x=3, y=4)
    with pytest.raises(UnsupportedValueError):
        recorder.push(x=5, y={1, 2})
    assert [plain(record) for record in recorder] == [{"x": 1, "y": 2, "run": 1}, {"x": 3, "y": 4, "run": 1}]


def test_a_refused_push_with_known_keys_leaves_no_partial_row(root):
    """A push whose first value fits and second does not adds nothing, and the next push works."""
    recorder = Recorder().set_parent(root)
    recorder.push(x=1, y=2)
    with pytest.raises(UnsupportedValueError):
        recorder.push(x=10, y=object())
    recorder.push(x=3, y=4)
    assert [plain(record) for record in recorder] == [{"x": 1, "y": 2}, {"x": 3, "y": 4}]


def test_a_refused_push_leaves_the_staged_values_as_they_were(root):
    """Values staged by add() survive a refused push and go into the next commit."""
    recorder = Recorder().set_parent(root)
    recorder.add(index=7)
    with pytest.raises(UnsupportedValueError):
        recorder.push(loss=object())
    assert dict(recorder.staged) == {"index": 7}
    recorder.push(loss=0.5)
    assert plain(recorder[0]) == {"index": 7, "loss": 0.5}


def test_a_refused_add_leaves_the_staged_values_as_they_were(root):
    """add() with one bad value stages none of the values of that call."""
    recorder = Recorder().set_parent(root)
    recorder.add(index=7)
    with pytest.raises(UnsupportedValueError, match="'bad'"):
        recorder.add(index=8, good=1.0, bad=object())
    assert dict(recorder.staged) == {"index": 7}


def test_a_refused_add_on_an_empty_stage_leaves_it_empty(root):
    """The first add() refused stages nothing."""
    recorder = Recorder().set_parent(root)
    with pytest.raises(UnsupportedValueError):
        recorder.add(bad=object())
    assert dict(recorder.staged) == {}


def test_a_refused_local_value_leaves_the_local_data_as_it_was(root):
    """recorder[key] = object() raises and changes nothing."""
    recorder = Recorder(a=1).set_parent(root)
    with pytest.raises(UnsupportedValueError, match="'b'"):
        recorder["b"] = object()
    assert dict(recorder.local_data) == {"a": 1}


def test_a_refused_update_sets_none_of_its_values(root):
    """update() with one bad value sets none of the values given with it."""
    recorder = Recorder(a=1).set_parent(root)
    with pytest.raises(UnsupportedValueError):
        recorder.update(a=2, b=object())
    assert dict(recorder.local_data) == {"a": 1}


def test_the_constructor_refuses_an_unsupported_value():
    """Recorder(model=object()) raises UnsupportedValueError naming 'model'."""
    with pytest.raises(UnsupportedValueError, match="'model'"):
        Recorder(model=object())


def test_data_that_is_not_a_mapping_is_refused(root):
    """push([1, 2]) raises UnsupportedValueError: data must be a dict of values."""
    recorder = Recorder().set_parent(root)
    with pytest.raises(UnsupportedValueError, match="expected a dict of values, got list"):
        recorder.push([1, 2])  # type: ignore[arg-type]
    assert len(recorder) == 0
