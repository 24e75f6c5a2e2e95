"""Tests of the hot-path loops: the compiled pair and its pure-Python twin keep one contract."""

import inspect
import math
import os
import random
import struct
import subprocess
import sys
from pathlib import Path
from types import MappingProxyType

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rigorous_recorder import Recorder, _columns, _hotpath
from rigorous_recorder import recorder as recorder_module
from rigorous_recorder.record import Record

COMPILED = pytest.mark.skipif(not _hotpath.COMPILED, reason="the C extension is not in use")
REPO = Path(__file__).resolve().parents[1]


def test_the_compiled_loops_are_in_use():
    """The dev install compiles the extension: benchmarks and users get the fast push."""
    if os.environ.get("RIGOROUS_RECORDER_PURE_PYTHON") == "1":
        pytest.skip("RIGOROUS_RECORDER_PURE_PYTHON=1 asks for the Python twins")
    assert _hotpath.COMPILED, (
        "rigorous_recorder._speedups did not build: `pip install -e .` needs a C compiler "
        "(or set RIGOROUS_RECORDER_PURE_PYTHON=1 to test the pure-Python twins)"
    )


def test_the_environment_variable_selects_the_python_twins():
    """RIGOROUS_RECORDER_PURE_PYTHON=1 makes a fresh process use the Python loops."""
    code = ("from rigorous_recorder import _hotpath as h; "
            "print(h.COMPILED, *(f.__module__ for f in (h.append_plain_row, h.float32_seen, h.seen_logs)))")
    environment = {**os.environ, "RIGOROUS_RECORDER_PURE_PYTHON": "1"}
    output = subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True,
                            text=True, check=True).stdout
    assert output.split() == ["False", *["rigorous_recorder._hotpath"] * 3]


# -- append_plain_row ---------------------------------------------------------------------------


class KeyLike(str):
    """A str subclass: the general path refuses it as a key, so the fast path must not take it."""


plain_values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.integers(), st.booleans(), st.none(),
    st.text(alphabet="ab é☃", max_size=5),
)
other_values = st.one_of(
    st.binary(max_size=3), st.lists(st.integers(), max_size=2),
    st.dictionaries(st.just("k"), st.integers(), max_size=1), st.builds(object),
)
keys = st.sampled_from(["x", "y", "z", "w"])


@st.composite
def pending_and_values(draw):
    """Pending columns (equal lengths) and a row of values for some of, all of, or other keys."""
    columns = draw(st.lists(keys, unique=True, max_size=3))
    rows = draw(st.integers(0, 3))
    pending = {key: draw(st.lists(plain_values, min_size=rows, max_size=rows)) for key in columns}
    if columns and draw(st.booleans()):
        row_keys = columns  # the common case: the same keys as before
    else:
        row_keys = draw(st.lists(keys, unique=True, max_size=4))
    values = {key: draw(st.one_of(plain_values, other_values) if draw(st.booleans()) else plain_values)
              for key in row_keys}
    if values and draw(st.integers(0, 9)) == 0:
        first = next(iter(values))
        values = {KeyLike(first) if key == first else key: value for key, value in values.items()}
    return pending, values


def copy_columns(pending):
    return {key: list(column) for key, column in pending.items()}


@COMPILED
@given(pending_and_values())
def test_both_append_plain_row_twins_agree(case):
    """Same return value and same columns afterwards, for any pending rows and values."""
    pending, values = case
    compiled, python = copy_columns(pending), copy_columns(pending)
    assert _hotpath.append_plain_row(compiled, values) == _hotpath.append_plain_row_python(python, values)
    assert compiled == python  # the same value objects: NaN equals itself by identity here


@pytest.mark.parametrize("append", [_hotpath.append_plain_row, _hotpath.append_plain_row_python])
@given(case=pending_and_values())
def test_append_plain_row_appends_a_whole_row_or_nothing(append, case):
    """It appends one value per column and returns the row count, or returns 0 and changes nothing."""
    pending, values = case
    before = copy_columns(pending)
    rows = append(pending, values)
    if rows == 0:
        assert pending == before
    else:
        assert set(values) == set(before)
        assert all(type(value) in (float, int, str, bool, type(None)) for value in values.values())
        assert all(pending[key] == before[key] + [value] for key, value in values.items())
        assert rows == len(next(iter(pending.values())))


@pytest.mark.parametrize("append", [_hotpath.append_plain_row, _hotpath.append_plain_row_python])
@pytest.mark.parametrize(("pending", "values"), [
    ({}, {}),
    ({"x": []}, {}),
    ({"x": [1]}, {"y": 2}),
    ({"x": [1], "y": [2]}, {"x": 3}),
    ({"x": [1]}, {"x": 2, "y": 3}),
    ({"x": [1]}, {"x": b"bytes"}),
    ({"x": [1], "y": [2]}, {"x": 3, "y": [4]}),
    ({"x": [1]}, {KeyLike("x"): 2}),
])
def test_append_plain_row_declines_what_the_general_path_must_handle(append, pending, values):
    """New or missing keys, non-plain values and str-subclass keys are left to add() + commit()."""
    before = copy_columns(pending)
    assert append(pending, values) == 0
    assert pending == before


# -- pack_column --------------------------------------------------------------------------------


PACKERS = [_hotpath.pack_column, _hotpath.pack_column_python]
numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-(2**70), 2**70))
texts = st.text(alphabet="a é☃\ud800", max_size=3)  # \ud800: a lone surrogate, not valid UTF-8
one_kind_columns = st.one_of(*(
    st.lists(st.one_of(values, st.none()), min_size=1, max_size=40)
    for values in (numbers, st.booleans(), texts)
))
mixed_columns = st.lists(st.one_of(numbers, st.none(), st.booleans(), texts, st.binary(max_size=1)),
                         min_size=1, max_size=40)


def packed(pack, values):
    """What ``pack`` returns, with its buffers as bytes."""
    result = pack(values)
    if result is None:
        return None
    kind, buffers, validity, missing = result
    return kind, tuple(map(bytes, buffers)), None if validity is None else bytes(validity), missing


def read_back(pack, values):
    """The Arrow field ``column_to_arrow`` makes with ``pack``, and the Python values read from it."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_columns, "pack_column", pack)
        field, array = _columns.column_to_arrow("key", values)
    batch = pa.RecordBatch.from_arrays([array], schema=pa.schema([field]))
    return field, _columns.to_python_columns(batch).get("key", [None] * len(values))


@COMPILED
@given(st.one_of(one_kind_columns, mixed_columns))
def test_both_pack_column_twins_agree(values):
    """The same kind, the same bytes, the same validity bitmap, or None from both."""
    assert packed(_hotpath.pack_column, values) == packed(_hotpath.pack_column_python, values)


@pytest.mark.parametrize("pack", PACKERS)
@settings(deadline=None)  # a column that is not packed takes pa.array, whose first call imports pandas
@given(values=one_kind_columns)
def test_a_column_reads_back_as_its_values(pack, values):
    """Packed or not, a column reads back exactly (ints among floats as floats, None as None; an int
    beyond int64 among floats stays that int: it is stored as JSON text, never rounded)."""
    field, back = read_back(pack, values)
    widen = any(type(value) is float for value in values) and all(
        -(1 << 63) <= value < 1 << 63 for value in values if type(value) is int)
    expected = [float(value) if widen and type(value) is int else value for value in values]
    assert repr(back) == repr(expected)
    if pack(values) is not None:
        assert field.type in (pa.float64(), pa.int64(), pa.bool_(), pa.string())


@pytest.mark.parametrize("pack", PACKERS)
@pytest.mark.parametrize(("values", "kind", "arrow_type"), [
    ([0.5, -1.5, math.inf], "d", pa.float64()),
    ([1, -(2**63), 2**63 - 1], "q", pa.int64()),
    ([1, 2.5], "d", pa.float64()),
    ([True, False, True], "b", pa.bool_()),
    (["", "loss", "é☃"], "s", pa.string()),
])
def test_pack_column_packs_each_plain_kind(pack, values, kind, arrow_type):
    """Floats, ints, their mix (as floats), bools and strings pack into their Arrow type."""
    found, buffers, validity, missing = pack(values)
    assert (found, validity, missing) == (kind, None, 0)
    array = pa.Array.from_buffers(arrow_type, len(values), [None, *map(pa.py_buffer, buffers)])
    assert array.to_pylist() == ([float(value) for value in values] if kind == "d" else values)


@pytest.mark.parametrize("pack", PACKERS)
@pytest.mark.parametrize("values", [
    [True, 1.5], [1, False], ["1", 2], [b"x"], [2**63], [-(2**63) - 1], [10**400, 0.5], [None],
    ["\ud800"], [[1.5]], [{"a": 1}],
])
def test_pack_column_declines_what_has_no_one_plain_kind(pack, values):
    """Mixed kinds, bytes, lists, dicts, out-of-range ints, invalid UTF-8, all-missing: general path."""
    assert pack(values) is None


@pytest.mark.parametrize("pack", PACKERS)
@pytest.mark.parametrize(("values", "arrow_type"), [
    ([None, 1.5, None, None, 2.0, None, None, None, None, 3.0], pa.float64()),
    ([None, "a", None, "bc", None], pa.string()),
    ([None, True, False, None], pa.bool_()),
])
def test_pack_column_marks_missing_values_in_the_validity_bitmap(pack, values, arrow_type):
    """None becomes a null slot; the values keep their places and type."""
    _, buffers, validity, missing = pack(values)
    assert missing == values.count(None)
    buffers = [pa.py_buffer(validity), *map(pa.py_buffer, buffers)]
    assert pa.Array.from_buffers(arrow_type, len(values), buffers, missing).to_pylist() == values


@pytest.mark.parametrize("pure_python", ["0", "1"])
def test_sealing_plain_columns_does_not_import_pandas(pure_python):
    """Float, int, bool and str columns, with gaps, become Arrow without pa.array (which imports pandas)."""
    pytest.importorskip("pandas")  # in the dev extra: without it this test could not fail
    code = """if True:
        import sys
        from rigorous_recorder import Recorder
        recorder = Recorder()
        for step in range(5000):
            recorder.push(step=step, loss=0.5, ok=step % 3 == 0, split="train" if step % 2 else None)
        recorder.flush()
        assert len(recorder.store.read(recorder)[0]) == 2
        print("pandas" in sys.modules)
    """
    environment = {**os.environ, "RIGOROUS_RECORDER_PURE_PYTHON": pure_python}
    output = subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True,
                            check=True).stdout
    assert output.strip() == "False"


# -- the whole recorder on the Python twins -----------------------------------------------------


@pytest.mark.slow  # runs the fast tests of four modules, over both stores, in a new process
def test_the_recorder_tests_pass_on_the_python_twins():
    """The core test modules, run in a process that uses the pure-Python loops."""
    environment = {**os.environ, "RIGOROUS_RECORDER_PURE_PYTHON": "1"}
    modules = ["tests/test_recorder.py", "tests/test_record.py", "tests/test_values.py", "tests/test_tree_file.py"]
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow", *modules]
    result = subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]


@pytest.mark.parametrize("append", [_hotpath.append_plain_row, _hotpath.append_plain_row_python])
def test_append_plain_row_reads_the_columns_of_a_holder(append):
    """Given a holder (a recorder), both twins append to its ``_pending`` dict, read at the call."""

    class Holder:
        __slots__ = ("_pending",)

    holder = Holder()
    holder._pending = {"x": [1.0]}
    assert append(holder, {"x": 2.0}) == 2
    assert holder._pending == {"x": [1.0, 2.0]}


# -- stage_plain_values and commit_staged_row ---------------------------------------------------


class Store:
    """What the staging loops read of a store: its failure."""

    def __init__(self, failure=None):
        self.failure = failure


class Holder:
    """What the staging loops read and write of a recorder: its slots."""

    __slots__ = ("_direct", "_fast", "_pending", "_staged", "_store")

    def __init__(self, pending, staged, direct=True, failure=None):
        self._pending, self._staged, self._direct = pending, staged, direct
        self._fast = staged is None
        self._store = Store(failure)

    def state(self):
        return (copy_columns(self._pending), None if self._staged is None else dict(self._staged), self._fast)


staging_keys = st.one_of(keys, st.sampled_from(["", "é", "__recorder__"]), st.builds(KeyLike, keys))


@st.composite
def staging_cases(draw):
    """A holder (pending columns, maybe staged values, a store that may have failed) and an add()'s arguments."""
    pending, _ = draw(pending_and_values())
    staged = draw(st.none() | st.dictionaries(keys, plain_values, max_size=3))
    failure = draw(st.sampled_from([None, None, None, OSError("disk full")]))
    value = st.one_of(plain_values, other_values) if draw(st.booleans()) else plain_values
    data = draw(st.none() | st.dictionaries(staging_keys, value, max_size=3) | st.just([("x", 1)]))
    values = draw(st.dictionaries(staging_keys, value, max_size=3))
    return pending, staged, failure, data, values


def holder_of(case):
    pending, staged, failure, _, _ = case
    return Holder(copy_columns(pending), None if staged is None else dict(staged), failure=failure)


@COMPILED
@given(staging_cases())
def test_both_stage_plain_values_twins_agree(case):
    """Same answer and the same holder afterwards, for any staged values, store and add() arguments."""
    *_, data, values = case
    compiled, python = holder_of(case), holder_of(case)
    assert _hotpath.stage_plain_values(compiled, data, dict(values)) == \
        _hotpath.stage_plain_values_python(python, data, dict(values))
    assert compiled.state() == python.state()


@pytest.mark.parametrize("stage", [_hotpath.stage_plain_values, _hotpath.stage_plain_values_python])
@given(case=staging_cases())
def test_stage_plain_values_stages_plain_values_or_changes_nothing(stage, case):
    """It stages data then values (a later key wins) when all are plain, valid keys and the store has not
    failed; otherwise it changes nothing, leaving the values to add()'s checks."""
    _, staged, failure, data, values = case
    holder = holder_of(case)
    before = holder.state()
    given_values = dict(values)
    if stage(holder, data, given_values):
        merged = {**(data or {}), **values}
        assert failure is None and all(
            type(key) is str and key and key.isascii() and key != "__recorder__" and
            type(value) in (float, int, str, bool, type(None)) for key, value in merged.items())
        assert holder._staged == {**(staged or {}), **merged}
        assert holder._fast is (before[2] and staged is not None)
        if staged is None and data is None:
            assert holder._staged is given_values  # **values is the callee's own dict: kept, not copied
    else:
        assert holder.state() == before


@pytest.mark.parametrize("commit", [_hotpath.commit_staged_row, _hotpath.commit_staged_row_python])
@given(case=pending_and_values(), direct=st.booleans())
def test_commit_staged_row_appends_the_staged_row_as_a_record_or_changes_nothing(commit, case, direct):
    """With ``_direct``, staged values that append_plain_row would append become one row and a record of
    it; ``_staged`` is then None and push's ``_fast`` True. Otherwise nothing changes."""
    pending, values = case
    holder = Holder(copy_columns(pending), dict(values), direct=direct)
    expected_rows = _hotpath.append_plain_row_python(copy_columns(pending), dict(values)) if direct else 0
    before = holder.state()
    record = commit(holder, Record)
    if expected_rows:
        assert (type(record), record.recorder, holder._staged, holder._fast) == (Record, holder, None, True)
        assert record._columns is holder._pending and record._index == expected_rows - 1
        assert record.own_data() == {key: value for key, value in values.items() if value is not None}
        assert holder._pending == {key: column + [values[key]] for key, column in before[0].items()}
    else:
        assert (record, holder.state()) == (None, before)


@COMPILED
def test_commit_staged_row_refuses_a_class_without_the_record_slots():
    """The compiled twin makes records through their slots: a class without them is an error, not a crash."""
    holder = Holder({"x": [1.0]}, {"x": 2.0})
    with pytest.raises(TypeError, match="_columns"):
        _hotpath.commit_staged_row(holder, dict)
    assert holder.state() == ({"x": [1.0, 2.0]}, None, True)  # the row is in: only the record failed


# -- add() and commit() as compiled methods -----------------------------------------------------


@COMPILED
def test_add_and_commit_are_compiled_methods_with_the_python_docs_and_signatures():
    """Compiled, Recorder.add and Recorder.commit are C methods that keep the docs and parameters."""
    python = recorder_module._python_methods
    for name in ("add", "commit"):
        method = getattr(Recorder, name)
        assert type(method).__name__ == "method_descriptor"
        assert method.__doc__ == python[name].__doc__
        assert parameters(method) == parameters(python[name])


def parameters(function):
    """Name, kind and default of each parameter after self (a C method's signature has no annotations)."""
    return [(each.name, each.kind, each.default) for each in inspect.signature(function).parameters.values()][1:]


operations = st.lists(st.one_of(
    st.tuples(st.just("add"), st.none() | st.dictionaries(staging_keys, plain_values | other_values, max_size=3),
              st.dictionaries(keys, plain_values | other_values, max_size=2)),
    st.tuples(st.just("commit"), st.none() | st.dictionaries(keys, plain_values, max_size=2), st.just({})),
    st.tuples(st.just("push"), st.none(), st.dictionaries(keys, plain_values, max_size=2)),
), max_size=25)


def replay(recorder, steps, methods):
    """Apply ``steps`` with ``methods`` (add, commit by name); what each returned or raised, then the records."""
    seen = []
    for name, data, values in steps:
        try:
            if name == "add":
                result = methods["add"](recorder, data, **values)
                seen.append(("added", result is recorder, dict(recorder.staged)))
            elif name == "commit":
                result = methods["commit"](recorder, additional_info=data)
                seen.append(("committed", result.own_data(), result is not None and result.recorder is recorder))
            else:
                seen.append(("pushed", recorder.push(**values) is recorder))
        except Exception as error:  # noqa: BLE001 - the error itself is compared
            seen.append((type(error), str(error), dict(recorder.staged)))
    return seen, [record.own_data() for record in recorder], len(recorder)


@COMPILED
@settings(deadline=None)
@given(operations)
def test_the_compiled_add_and_commit_do_what_the_python_methods_do(steps):
    """Any sequence of add/commit/push calls: the same results, errors, staged values and records."""
    compiled = {"add": Recorder.add, "commit": Recorder.commit}
    expected = replay(Recorder(), steps, recorder_module._python_methods)
    assert repr(replay(Recorder(), steps, compiled)) == repr(expected)


# -- float32_seen and seen_logs ------------------------------------------------------------------


SEERS = [_hotpath.float32_seen, _hotpath.float32_seen_python]


def float32_from_bits(bits):
    """The float32 whose IEEE bits are ``bits``, as a Python float."""
    return struct.unpack("<f", struct.pack("<I", bits))[0]


def exactly(value):
    """What tells two results apart: the type and the float64 bits (one NaN for all NaNs)."""
    return type(value), "nan" if math.isnan(value) else struct.pack("<d", value)


def edge_float32_values():
    """Both signs of every exponent (zeros, subnormals, infinities and NaNs too) with the edge
    fractions and 150 seeded random ones; full 24-bit mantissas scaled by 2^-40 to 2^20, where
    many values lie exactly halfway between two decimals of 6 to 9 digits; decimals as float32."""
    rng = random.Random(13)
    fractions = [0, 1, 2, 3, 0x400000, 0x400001, 0x7FFFFE, 0x7FFFFF, *(rng.getrandbits(23) for _ in range(150))]
    by_bits = [float32_from_bits(sign << 31 | exponent << 23 | fraction)
               for sign in (0, 1) for exponent in range(256) for fraction in fractions]
    halfway = [math.ldexp((1 << 23) + offset, exponent) for offset in range(-200, 200) for exponent in range(-40, 21)]
    decimals = [float32_from_bits(struct.unpack("<I", struct.pack("<f", number / 1000))[0]) for number in range(10**4)]
    return by_bits + halfway + decimals


@COMPILED
def test_both_float32_seen_twins_agree_on_every_exponent_and_on_halfway_values():
    """The same float, bit for bit, from both, on ~115,000 float32 values of every kind."""
    values = edge_float32_values()
    differing = [(value, _hotpath.float32_seen(value), _hotpath.float32_seen_python(value)) for value in values
                 if exactly(_hotpath.float32_seen(value)) != exactly(_hotpath.float32_seen_python(value))]
    assert differing == []


@COMPILED
@given(st.one_of(st.floats(width=32), st.floats()))
def test_both_float32_seen_twins_agree(value):
    """Any float32 value, and any float at all, gives the same float from both."""
    assert exactly(_hotpath.float32_seen(value)) == exactly(_hotpath.float32_seen_python(value))


@pytest.mark.parametrize("seen", SEERS)
@pytest.mark.parametrize(("value", "expected"), [
    (0.004999999888241291, 0.005),  # float32(0.005): what Keras hands over, shown as Keras shows it
    (0.10000000149011612, 0.1),
    (1.0000000116860974e-07, 1e-7),
    (123456.703125, 123456.7),
    (1048576.25, 1048576.2),  # halfway between two 8-digit decimals: to the even one, as "%.8g" rounds
    (1048576.75, 1048576.8),
    (0.0001220703125, 0.00012207031),  # 2^-13: a power of two
    (16777216.0, 16777216.0),
    (3.4028234663852886e38, 3.4028235e38),  # the largest float32
    (1.401298464324817e-45, 1.4013e-45),  # the smallest float32 subnormal: 6 digits at least
    (-0.25, -0.25),
    (-0.004999999888241291, -0.005),
])
def test_float32_seen_shows_a_float32_value_as_its_shortest_decimal(seen, value, expected):
    """A float that is a float32 value becomes the shortest decimal that gives that float32 back."""
    assert exactly(seen(value)) == exactly(expected)


@pytest.mark.parametrize("seen", SEERS)
@pytest.mark.parametrize("value", [0.1 + 1e-12, 1e300, -1e300, 3.5e38, math.nan, math.inf, -math.inf, 0.0, -0.0,
                                   2.0**-150])
def test_float32_seen_keeps_other_floats_as_they_are(seen, value):
    """NaN, infinities, zeros, floats between two float32 values or past float32's range come back unchanged."""
    assert exactly(seen(value)) == exactly(value)


@pytest.mark.parametrize("seen", SEERS)
@pytest.mark.parametrize("value", [1, "0.5", None, True])
def test_float32_seen_takes_only_floats(seen, value):
    """Anything but a float is a TypeError, in both twins."""
    with pytest.raises(TypeError, match="takes a float"):
        seen(value)


log_values = st.one_of(st.floats(width=32), st.floats(), st.integers(), st.text(max_size=2), st.none(),
                       st.booleans(), st.lists(st.floats(width=32), max_size=2))


@COMPILED
@given(st.one_of(st.none(), st.dictionaries(st.text(max_size=3), log_values, max_size=4)),
       st.sampled_from(["", "val_"]), st.booleans())
def test_both_seen_logs_twins_agree(logs, prefix, as_proxy):
    """Any logs, as a dict or another mapping, with or without a prefix: the same keys, values and types."""
    if as_proxy and logs is not None:
        logs = MappingProxyType(logs)
    compiled, python = _hotpath.seen_logs(logs, prefix), _hotpath.seen_logs_python(logs, prefix)
    assert list(compiled) == list(python)
    assert [repr(value) for value in compiled.values()] == [repr(value) for value in python.values()]


@pytest.mark.parametrize("seen_logs", [_hotpath.seen_logs, _hotpath.seen_logs_python])
def test_seen_logs_copies_the_logs_with_float32_values_shown_and_the_prefix(seen_logs):
    """Floats are shown as float32, other values kept; keys get the prefix; the logs are left alone."""
    logs = {"loss": 0.004999999888241291, "steps": 3, "name": "x", "rate": 0.1 + 1e-12}
    assert seen_logs(logs, "val_") == {"val_loss": 0.005, "val_steps": 3, "val_name": "x", "val_rate": 0.1 + 1e-12}
    assert seen_logs(logs) == {"loss": 0.005, "steps": 3, "name": "x", "rate": 0.1 + 1e-12}
    assert logs["loss"] == 0.004999999888241291 and seen_logs(None) == {}
