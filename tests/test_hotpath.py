"""Tests of the hot-path loops: the compiled pair and its pure-Python twin keep one contract."""

import math
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rigorous_recorder import _columns, _hotpath

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
    code = "from rigorous_recorder import _hotpath as h; print(h.COMPILED, h.append_plain_row.__module__)"
    environment = {**os.environ, "RIGOROUS_RECORDER_PURE_PYTHON": "1"}
    output = subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True,
                            text=True, check=True).stdout
    assert output.split() == ["False", "rigorous_recorder._hotpath"]


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
