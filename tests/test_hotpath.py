"""Tests of the hot-path loops: the compiled pair and its pure-Python twin keep one contract."""

import math
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import given
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


# -- pack_numbers -------------------------------------------------------------------------------


numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-(2**70), 2**70))
column_values = st.lists(st.one_of(numbers, st.none(), st.booleans(), st.text(alphabet="1a", max_size=2)), min_size=1, max_size=40)


def packed(pack, values):
    """What ``pack`` returns, with its buffers as bytes."""
    result = pack(values)
    if result is None:
        return None
    typecode, data, validity, missing = result
    return typecode, bytes(data), None if validity is None else bytes(validity), missing


@COMPILED
@given(st.one_of(column_values, st.lists(st.one_of(numbers, st.none()), min_size=1, max_size=40)))
def test_both_pack_numbers_twins_agree(values):
    """The same typecode, the same bytes, the same validity bitmap, or None from both."""
    assert packed(_hotpath.pack_numbers, values) == packed(_hotpath.pack_numbers_python, values)


@pytest.mark.parametrize("pack", [_hotpath.pack_numbers, _hotpath.pack_numbers_python])
@given(values=st.lists(st.one_of(numbers, st.none()), min_size=1, max_size=40))
def test_a_packed_column_reads_back_as_its_values(pack, values):
    """Through column_to_arrow: numbers keep their values (ints widen among floats), None is null."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_columns, "pack_numbers", pack)
        field, array = _columns.column_to_arrow("key", values)
    present = [value for value in values if value is not None]
    if not present:
        assert field.type == pa.null()
    elif any(type(value) is float for value in present) and field.type == pa.float64():
        expected = [None if value is None else float(value) for value in values]
        assert repr(array.to_pylist()) == repr(expected)
    elif field.type == pa.int64():
        assert array.to_pylist() == values
    else:  # an int too big for its Arrow type: kept exactly as JSON text
        assert _columns.is_json_field(field)


@pytest.mark.parametrize("pack", [_hotpath.pack_numbers, _hotpath.pack_numbers_python])
@pytest.mark.parametrize(("values", "typecode"), [
    ([0.5, -1.5, math.inf], "d"),
    ([1, -(2**63), 2**63 - 1], "q"),
    ([1, 2.5], "d"),
])
def test_pack_numbers_packs_floats_ints_and_their_mix(pack, values, typecode):
    """Floats pack as float64, ints as int64, both together widen to float64."""
    code, data, validity, missing = pack(values)
    assert (code, validity, missing) == (typecode, None, 0)
    arrow_type = pa.float64() if code == "d" else pa.int64()
    array = pa.Array.from_buffers(arrow_type, len(values), [None, pa.py_buffer(data)])
    assert array.to_pylist() == [float(v) for v in values] if code == "d" else values


@pytest.mark.parametrize("pack", [_hotpath.pack_numbers, _hotpath.pack_numbers_python])
@pytest.mark.parametrize("values", [
    [True, 1.5], [1, False], ["1", 2], [b"x"], [2**63], [-(2**63) - 1], [10**400, 0.5], [None],
])
def test_pack_numbers_declines_what_is_not_a_plain_number_column(pack, values):
    """Bools, strings, bytes, ints beyond int64 (or float range), all-missing: the general path."""
    assert pack(values) is None


@pytest.mark.parametrize("pack", [_hotpath.pack_numbers, _hotpath.pack_numbers_python])
def test_pack_numbers_marks_missing_values_in_the_validity_bitmap(pack):
    """None becomes a null slot; the numbers keep their places and type."""
    values = [None, 1.5, None, None, 2, None, None, None, None, 3.0]
    code, data, validity, missing = pack(values)
    assert (code, missing) == ("d", 7)
    array = pa.Array.from_buffers(pa.float64(), len(values), [pa.py_buffer(validity), pa.py_buffer(data)], missing)
    assert array.to_pylist() == [None if v is None else float(v) for v in values]


# -- the whole recorder on the Python twins -----------------------------------------------------


def test_the_recorder_tests_pass_on_the_python_twins():
    """The core test modules, run in a process that uses the pure-Python loops."""
    environment = {**os.environ, "RIGOROUS_RECORDER_PURE_PYTHON": "1"}
    modules = ["tests/test_recorder.py", "tests/test_record.py", "tests/test_tree_file.py"]
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *modules],
                            cwd=REPO, env=environment, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
