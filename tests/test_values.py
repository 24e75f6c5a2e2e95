"""Tests of what a record may hold: each storable kind, conversions, refusals, and type drift."""

import datetime
import enum
import math

import pytest

from rigorous_recorder import Recorder, UnsupportedValueError
from rigorous_recorder.recorder import BATCH_ROWS
from rigorous_recorder._values import from_json, to_json

from .conftest import same

UTC = datetime.timezone.utc
PLUS_ONE = datetime.timezone(datetime.timedelta(hours=1))
PLUS_TWO = datetime.timezone(datetime.timedelta(hours=2))


def _stored(*values, seal, root=None):
    """Push each value under key "v" (below ``root``) and read them back, after sealing the rows when asked."""
    recorder = Recorder().set_parent(root)
    for value in values:
        recorder.push(v=value)
    if seal:
        recorder.flush()
    return [record["v"] for record in recorder]


STORABLE = {
    "int": 7,
    "negative int": -3,
    "int64 max": 2**63 - 1,
    "int beyond int64": 2**80 + 1,
    "negative int beyond int64": -(2**70),
    "float": 0.1,
    "nan": float("nan"),
    "inf": float("inf"),
    "-inf": float("-inf"),
    "true": True,
    "false": False,
    "str": "héllo\nworld",
    "empty str": "",
    "str with a lone surrogate": "a\udcffé",
    "bytes": b"\x00\xff",
    "datetime": datetime.datetime(2024, 5, 6, 7, 8, 9, 123456),
    "aware datetime": datetime.datetime(2024, 5, 6, 7, 8, tzinfo=PLUS_ONE),
    "date": datetime.date(2024, 5, 6),
    "list of ints": [1, 2, 3],
    "list of floats with nan": [0.5, float("nan")],
    "list of str": ["a", "b"],
    "empty list": [],
    "nested list": [[1, 2], [3]],
    "dict": {"lr": 0.1, "layers": [64, 64], "name": "mlp"},
    "nested dict with bytes and dates": {"a": {"b": b"x", "when": datetime.date(2020, 1, 2)}},
    "dict that looks like a tag": {"$bytes": "aGk="},
    "empty dict": {},
}


@pytest.mark.parametrize("seal", [False, True], ids=["pending", "sealed"])
@pytest.mark.parametrize("value", list(STORABLE.values()), ids=list(STORABLE))
def test_a_storable_value_reads_back_unchanged(root, value, seal):
    """Each storable kind reads back with its type and value, before and after sealing."""
    (back,) = _stored(value, seal=seal, root=root)
    assert same(value, back), (value, back)


def test_none_reads_back_as_none(root):
    """A pushed None reads as None (not set), before and after sealing."""
    assert (_stored(None, seal=False, root=root), _stored(None, seal=True, root=root)) == ([None], [None])


# -- conversions --------------------------------------------------------------------------------


def test_a_tuple_is_stored_as_a_list():
    """Tuples become lists, nested ones too."""
    assert _stored((1, (2, 3)), seal=True) == [[1, [2, 3]]]


def test_a_bytearray_is_stored_as_bytes():
    """A bytearray becomes bytes."""
    (back,) = _stored(bytearray(b"ab"), seal=True)
    assert (type(back), back) == (bytes, b"ab")


class Color(enum.IntEnum):
    RED = 1


class Split(str, enum.Enum):
    TRAIN = "train"


def test_an_int_enum_is_stored_as_its_int():
    """An IntEnum member becomes the plain int behind it."""
    (back,) = _stored(Color.RED, seal=False)
    assert (type(back), back) == (int, 1)


def test_a_str_enum_is_stored_as_its_str():
    """A str-based Enum member becomes the plain string behind it, not its name."""
    (back,) = _stored(Split.TRAIN, seal=False)
    assert (type(back), back) == (str, "train")


def test_a_pandas_timestamp_is_stored_as_a_datetime():
    """A pandas Timestamp (a datetime subclass) becomes a plain datetime."""
    pandas = pytest.importorskip("pandas")
    (back,) = _stored(pandas.Timestamp("2024-01-02 03:04:05.000006"), seal=False)
    assert (type(back), back) == (datetime.datetime, datetime.datetime(2024, 1, 2, 3, 4, 5, 6))


def test_numpy_scalars_become_python_scalars():
    """numpy int, float, bool and str scalars are stored as the Python types."""
    numpy = pytest.importorskip("numpy")
    values = [numpy.int64(3), numpy.float32(0.5), numpy.float64(0.25), numpy.bool_(True), numpy.str_("s")]
    back = [_stored(value, seal=False)[0] for value in values]
    assert [(type(value), value) for value in back] == [(int, 3), (float, 0.5), (float, 0.25), (bool, True), (str, "s")]


def test_numpy_nan_is_kept():
    """numpy.float64('nan') is stored as a float NaN."""
    numpy = pytest.importorskip("numpy")
    (back,) = _stored(numpy.float64("nan"), seal=True)
    assert type(back) is float and math.isnan(back)


def test_a_numpy_array_becomes_a_list():
    """A 1-d array is a list column; a 2-d array, nested lists."""
    numpy = pytest.importorskip("numpy")
    assert _stored(numpy.arange(3), numpy.array([[1.5, 2.0], [3.0, 4.0]]), seal=True) == [
        [0, 1, 2],
        [[1.5, 2.0], [3.0, 4.0]],
    ]


def test_a_numpy_datetime64_becomes_a_datetime():
    """datetime64 scalars and arrays, nanoseconds included, become datetimes (not ints)."""
    numpy = pytest.importorskip("numpy")
    scalar = numpy.datetime64("2024-01-02T03:04:05.000006789", "ns")
    array = numpy.array(["2024-01-02T03:04:05"], dtype="datetime64[ns]")
    assert _stored(scalar, array, seal=False) == [
        datetime.datetime(2024, 1, 2, 3, 4, 5, 6),
        [datetime.datetime(2024, 1, 2, 3, 4, 5)],
    ]


def test_a_numpy_timedelta64_is_refused_rather_than_turned_into_an_int():
    """timedelta64 in nanoseconds is not silently stored as its count of nanoseconds."""
    numpy = pytest.importorskip("numpy")
    with pytest.raises(UnsupportedValueError, match="'wait'.*timedelta"):
        Recorder().push(wait=numpy.timedelta64(5, "ns"))


@pytest.mark.slow  # importing torch takes seconds
def test_a_zero_dim_torch_tensor_becomes_a_python_scalar():
    """torch 0-d tensors (float, int, bool, bfloat16, requiring grad) become Python scalars."""
    torch = pytest.importorskip("torch")
    values = [
        torch.tensor(0.5),
        torch.tensor(3),
        torch.tensor(True),
        torch.tensor(2.0, dtype=torch.bfloat16),
        torch.tensor(1.5, requires_grad=True) * 2,
    ]
    back = [_stored(value, seal=True)[0] for value in values]
    assert [(type(value), value) for value in back] == [
        (float, 0.5),
        (int, 3),
        (bool, True),
        (float, 2.0),
        (float, 3.0),
    ]


@pytest.mark.slow  # importing torch takes seconds
def test_a_one_dim_torch_tensor_becomes_a_list():
    """A 1-d tensor is stored as a list of Python numbers."""
    torch = pytest.importorskip("torch")
    assert _stored(torch.tensor([1.0, 2.5]), seal=True) == [[1.0, 2.5]]


@pytest.mark.slow  # importing torch takes seconds
def test_a_torch_loss_can_be_pushed_directly():
    """The loss of a real tiny model, a tensor with grad, is pushed as its float value."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    loss = model(torch.ones(1, 2)).pow(2).mean()
    recorder = Recorder()
    recorder.push(loss=loss)
    assert recorder[0]["loss"] == loss.item()


def test_a_value_stored_is_a_copy_of_a_list_given():
    """Appending to a list after pushing it does not change the record."""
    values = [1, 2]
    recorder = Recorder()
    recorder.push(v=values)
    values.append(3)
    assert recorder[0]["v"] == [1, 2]


# -- refusals -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        (object(), "builtins.object"),
        ({1, 2}, "builtins.set"),
        (frozenset(), "builtins.frozenset"),
        (1 + 2j, "builtins.complex"),
        (datetime.timedelta(seconds=1), "datetime.timedelta"),
        (len, "builtins.builtin_function_or_method"),
    ],
    ids=["object", "set", "frozenset", "complex", "timedelta", "function"],
)
def test_an_unsupported_value_is_refused_with_its_key_and_type(value, type_name):
    """The error is a TypeError that names the key and the value's type, and says what works."""
    with pytest.raises(TypeError, match=rf"cannot record key 'x': {type_name} is not storable; use a number"):
        Recorder().push(x=value)


def test_an_unsupported_value_inside_a_list_names_its_position():
    """A bad item of a list is reported as key[index]."""
    with pytest.raises(UnsupportedValueError, match=r"cannot record key 'x\[1\]': builtins\.object"):
        Recorder().push(x=[1, object()])


def test_an_unsupported_value_inside_a_dict_names_its_path():
    """A bad value inside a dict is reported as key.inner."""
    with pytest.raises(UnsupportedValueError, match=r"cannot record key 'config\.tags': builtins\.set"):
        Recorder().push(config={"tags": {"a"}})


@pytest.mark.parametrize("value", [
    datetime.datetime(1, 1, 1, tzinfo=datetime.timezone(datetime.timedelta(hours=14))),
    datetime.datetime(9999, 12, 31, 23, tzinfo=datetime.timezone(datetime.timedelta(hours=-2))),
], ids=["before year 1 in UTC", "after 9999 in UTC"])
def test_an_aware_datetime_without_a_utc_datetime_is_refused_and_nothing_is_lost(collection, value):
    """Stored as its instant, it could never be read back into Python: refused at push, naming
    the key; what was recorded before stays."""
    with collection.new_experiment() as experiment:
        experiment.push(when=datetime.datetime(1, 1, 1, 14, tzinfo=datetime.timezone(datetime.timedelta(hours=14))))
        with pytest.raises(UnsupportedValueError, match=r"cannot record key 'when': .* is out of range: in UTC"):
            experiment.push(when=value)
        with pytest.raises(UnsupportedValueError, match=r"cannot record key 'info\.when'"):
            experiment.push(info={"when": value})
    assert [record["when"] for record in collection.records] == [datetime.datetime(1, 1, 1, tzinfo=datetime.timezone.utc)]


def test_a_dict_value_with_a_non_string_key_is_refused():
    """A dict stored as a value needs string keys; the error names the key and the bad inner key."""
    with pytest.raises(UnsupportedValueError, match=r"cannot record key 'config': dict keys must be strings, got 1"):
        Recorder().push(config={1: "a"})


def test_a_numpy_complex_is_refused():
    """A numpy complex scalar is not storable: it is refused, not truncated."""
    numpy = pytest.importorskip("numpy")
    with pytest.raises(UnsupportedValueError, match="'z'.*complex"):
        Recorder().push(z=numpy.complex128(1 + 1j))


# -- type drift ---------------------------------------------------------------------------------


def test_int_then_float_in_one_batch_widens_to_float(root):
    """A key that holds an int and later a float reads back as floats."""
    back = _stored(1, 1.5, seal=True, root=root)
    assert [(type(value), value) for value in back] == [(float, 1.0), (float, 1.5)]


def test_int_then_float_reads_as_float_before_sealing_too(root):
    """The widening shows at once, not only once the rows became a batch."""
    back = _stored(1, 1.5, seal=False, root=root)
    assert [(type(value), value) for value in back] == [(float, 1.0), (float, 1.5)]


def test_an_int_only_key_stays_int(root):
    """Without any float, ints stay ints after sealing."""
    back = _stored(1, None, 2, seal=True, root=root)
    assert [type(value) for value in back] == [int, type(None), int]


DRIFTS = {
    "float then str": [1.5, "high"],
    "str then float": ["high", 1.5],
    "int then str": [1, "one"],
    "float then bool": [1.5, True],
    "bool then float": [True, 1.5],
    "bool then int": [False, 0],
    "int then bool": [1, True],
    "str then bytes": ["a", b"a"],
    "bytes then str": [b"a", "a"],
    "date then datetime": [datetime.date(2020, 1, 1), datetime.datetime(2020, 1, 1, 12)],
    "naive then aware datetime": [datetime.datetime(2020, 1, 1), datetime.datetime(2020, 1, 1, tzinfo=UTC)],
    "two offsets": [datetime.datetime(2020, 1, 1, tzinfo=PLUS_ONE), datetime.datetime(2020, 1, 1, tzinfo=PLUS_TWO)],
    "scalar then list": [1, [1, 2]],
    "list then dict": [[1], {"a": 1}],
    "float then dict": [0.5, {"a": 1}],
    "int then int beyond int64": [1, 2**64],
    "list of str then list of bytes": [["a"], [b"a"]],
    "list mixing bools and floats": [[True, 0.5]],
    "list mixing str and bytes": [["a", b"a"]],
    "tag-like dict then str": [{"$date": "2020-01-01"}, "x"],
    "none between kinds": [1.5, None, "x"],
}


@pytest.mark.parametrize("values", list(DRIFTS.values()), ids=list(DRIFTS))
def test_type_drift_within_one_batch_keeps_every_value(root, values):
    """Values of different kinds under one key read back exactly after they share a batch."""
    back = _stored(*values, seal=True, root=root)
    assert all(map(same, values, back)), (values, back)


def _across_batches(first, second, root):
    """A recorder below ``root`` with BATCH_ROWS values ``first`` (one full batch), then one value ``second``."""
    recorder = Recorder().set_parent(root)
    for _ in range(BATCH_ROWS):
        recorder.push(v=first)
    recorder.push(v=second)
    return recorder


@pytest.mark.parametrize("values", [values for values in DRIFTS.values() if len(values) == 2], ids=[name for name, values in DRIFTS.items() if len(values) == 2])
def test_type_drift_across_batches_keeps_every_value(root, values):
    """A key whose kind changes after the first batch was sealed reads back exactly."""
    first, second = values
    recorder = _across_batches(first, second, root)
    assert (same(first, recorder[0]["v"]), same(first, recorder[BATCH_ROWS - 1]["v"]), same(second, recorder[-1]["v"])) == (
        True,
        True,
        True,
    )


def test_int_then_float_across_batches_widens_to_float(root):
    """Ints of a sealed batch read as floats once a later row holds a float."""
    recorder = _across_batches(2, 0.5, root)
    assert [(type(record["v"]), record["v"]) for record in recorder[BATCH_ROWS - 1 :]] == [(float, 2.0), (float, 0.5)]


def test_int_then_float_across_batches_widens_a_huge_int_without_raising(root):
    """An int beyond 2**53 widens to the nearest float instead of breaking the read."""
    recorder = _across_batches(2**60 + 1, 0.5, root)
    assert (recorder[0]["v"], recorder[-1]["v"]) == (float(2**60), 0.5)


def test_type_drift_never_raises_mid_run(root):
    """A long run that changes the kind of a key many times records every row."""
    kinds = [1, 2.5, "s", None, [1], {"a": 1}, True, b"b"]
    recorder = Recorder().set_parent(root)
    for index in range(2 * BATCH_ROWS + 3):
        recorder.push(index=index, v=kinds[index % len(kinds)])
    assert len(recorder) == 2 * BATCH_ROWS + 3
    assert same(kinds[(2 * BATCH_ROWS + 2) % len(kinds)], recorder[-1]["v"])
    assert [record["index"] for record in recorder] == list(range(2 * BATCH_ROWS + 3))


def test_a_string_with_a_lone_surrogate_never_stops_a_run(root):
    """A str that is not valid UTF-8 (os.fsdecode of a bad file name) crosses the batch boundary."""
    recorder = Recorder().set_parent(root)
    for index in range(BATCH_ROWS + 1):
        recorder.push(index=index, path="bad\udcff" if index % 2 else "good")
    assert (len(recorder), recorder[1]["path"], recorder[BATCH_ROWS]["path"]) == (BATCH_ROWS + 1, "bad\udcff", "good")


# -- the JSON encoding behind drifted columns ------------------------------------------------------


def test_json_encoding_round_trips_tagged_values():
    """bytes, datetimes and dates inside JSON read back as themselves."""
    value = {"b": b"\x01", "t": datetime.datetime(2020, 1, 1, 1, tzinfo=PLUS_ONE), "d": datetime.date(2020, 1, 1)}
    assert same(value, from_json(to_json(value)))


def test_json_encoding_keeps_a_user_dict_that_looks_like_a_tag():
    """A dict whose one key is a tag name ("$bytes", "$dict") stays a dict."""
    value = [{"$bytes": "aGk="}, {"$dict": [["a", 1]]}, {"$x": {"$date": "2020-01-01"}}]
    assert from_json(to_json(value)) == value


def test_json_decoding_of_none_is_none():
    """A missing JSON value (a null cell) decodes to None."""
    assert from_json(None) is None
