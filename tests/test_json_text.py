"""One value, one JSON text: the text DuckDB makes of a stored column's value (``_to_json_sql``)
is the very text :func:`~rigorous_recorder._values.to_json` writes for it, for every kind a
records file stores, so that ``WHERE "k~json" = ...`` and ``GROUP BY "k~json"`` see a value the
same whether it was split in Python (a tree's data, a JSON text column) or in SQL (a typed column).
"""

from __future__ import annotations

import datetime
import functools
import itertools
import math
import zoneinfo
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rigorous_recorder import ExperimentCollection
from rigorous_recorder._columns import column_to_arrow, is_json_field
from rigorous_recorder._kinds import _to_json_sql, layout_of, stored_columns
from rigorous_recorder._values import INT64_MAX, INT64_MIN, to_json

#: Characters json.dumps escapes (every control character, quote, backslash), and some it keeps
#: (DEL, non-ASCII, line separators, an astral character, a slash).
CHARACTERS = [chr(code) for code in range(0x20)] + list("a\"\\/'~ \x7fé日\u2028\u2029😀\U0010ffff")
TEXTS = st.text(st.sampled_from(CHARACTERS), max_size=8)
#: Floats at the edges of repr's notation (1e16, 1e-4, -0.0, subnormals), NaN and ±inf.
FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                   st.sampled_from([0.1, 1e20, 1e-7, -0.0, 0.0, 1e16, 1e15, 9999999999999998.0, 1e-4, 1e-5,
                                    5e-324, 1.7976931348623157e308, 2.0**53, -(2.0**63)]))
INTS = st.one_of(st.integers(INT64_MIN, INT64_MAX),
                 st.sampled_from([INT64_MIN, INT64_MAX, INT64_MIN + 1, INT64_MAX - 1, 2**53, 2**53 + 1, 0, -1]))
DATETIMES = st.datetimes(datetime.datetime(1, 1, 1), datetime.datetime(9999, 12, 31, 23, 59, 59, 999999))
#: Each kind a records file stores in a typed column, as the Python values that make it.
SCALARS = {
    "BIGINT": INTS,
    "DOUBLE": FLOATS,
    "BOOLEAN": st.booleans(),
    "VARCHAR": TEXTS,
    "BLOB": st.binary(max_size=8),
    "DATE": st.dates(datetime.date(1, 1, 1), datetime.date(9999, 12, 31)),
    "TIMESTAMP": st.one_of(DATETIMES, DATETIMES.map(lambda moment: moment.replace(microsecond=0))),
    "TIMESTAMPTZ": DATETIMES.map(lambda moment: moment.replace(tzinfo=datetime.timezone.utc)),
}
#: Time zones that Arrow names by their offset (what datetime.timezone gives), and UTC.
FIXED_ZONES = [datetime.timezone.utc, datetime.timezone(datetime.timedelta(hours=2)),
               datetime.timezone(datetime.timedelta(hours=-5, minutes=-30)),
               datetime.timezone(datetime.timedelta(hours=14))]


def _lists(items: st.SearchStrategy[Any], depth: int) -> st.SearchStrategy[Any]:
    """Lists ``depth`` deep of ``items``, None and [] anywhere."""
    for _ in range(depth):
        items = st.lists(st.one_of(st.none(), items), max_size=4)
    return items


@functools.cache
def _connection() -> duckdb.DuckDBPyConnection:
    """One DuckDB connection for every read here (a new one costs ~30 ms, most of an example)."""
    return duckdb.connect()


#: Numbers the files written, so that no read can meet an earlier example's file under its name.
_FILE_NUMBERS = itertools.count()


def _read_back_as_duckdb_json(folder: Path, values: list[Any]) -> tuple[str | None, list[str | None]]:
    """Store ``values`` as a records file stores one key's column; the column's kind (None
    when it is JSON text) and DuckDB's JSON text of each value."""
    field, array = column_to_arrow("k", values)
    if is_json_field(field):
        return None, []
    table = pa.table({"k": array})
    (column,) = stored_columns(layout_of(table.schema))  # as the views see a records file's column
    path = folder / f"column-{next(_FILE_NUMBERS)}.parquet"
    pq.write_table(table, path)
    rows = _connection().execute(f"SELECT {_to_json_sql('c0', column.kind, column.zone)} "
                                 "FROM read_parquet(?) AS t(c0)", [str(path)]).fetchall()
    return column.kind, [text for (text,) in rows]


def _same_text_for_each(folder: Path, values: list[Any], kind: str) -> None:
    stored, texts = _read_back_as_duckdb_json(folder, values)
    assert stored == kind, f"{values!r} was stored as {stored}, not {kind}"
    expected = [None if value is None else to_json(value) for value in values]
    assert texts == expected


#: Values at the edges of each kind's spelling, checked on every run of the fast tests.
EDGES = {
    "BIGINT": [INT64_MIN, INT64_MAX, 0, -1, 2**53 + 1],
    "DOUBLE": [0.1, 1e20, 1e-7, -0.0, 1.0, 1e16, 1e15, 1e-4, 1e-5, 5e-324, math.nan, math.inf, -math.inf],
    "BOOLEAN": [True, False],
    "VARCHAR": ["".join(CHARACTERS), "", "plain", "\\u001F"],
    "BLOB": [b"", b"\x00\xff", b"abcd"],
    "DATE": [datetime.date(1, 1, 1), datetime.date(9999, 12, 31), datetime.date(2020, 2, 29)],
    "TIMESTAMP": [datetime.datetime(1, 1, 1), datetime.datetime(2020, 1, 2, 3, 4, 5, 6),
                  datetime.datetime(9999, 12, 31, 23, 59, 59, 999999)],
    "TIMESTAMPTZ": [datetime.datetime(2020, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc),
                    datetime.datetime(2020, 1, 2, 3, 4, 5, 600, tzinfo=datetime.timezone.utc)],
}


@pytest.mark.parametrize("kind", SCALARS)
def test_edges_of_each_kind_are_spelled_as_to_json_spells_them(tmp_path, kind):
    """Each kind's edge values, alone, in a list with None, and in a list of lists."""
    _same_text_for_each(tmp_path, [*EDGES[kind], None], kind)
    _same_text_for_each(tmp_path, [[*EDGES[kind], None], [], None], kind + "[]")
    _same_text_for_each(tmp_path, [[[value] for value in EDGES[kind]], [None, []], None], kind + "[][]")


@pytest.mark.slow
@pytest.mark.parametrize("kind", SCALARS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_duckdb_writes_the_text_to_json_writes(tmp_path, kind, data):
    """For values of each stored kind (scalars, and lists up to three deep with None and [] items),
    the text SQL makes of the stored column equals ``to_json(value)``."""
    depth = data.draw(st.integers(0, 3), label="depth")
    scalars = SCALARS[kind]
    if kind == "TIMESTAMPTZ":  # a column holds one time zone
        zone = data.draw(st.sampled_from(FIXED_ZONES), label="zone")
        scalars = DATETIMES.map(lambda moment: moment.replace(tzinfo=zone))
    values = data.draw(st.lists(st.one_of(st.none(), _lists(scalars, depth)), min_size=1, max_size=8))
    items = values
    for _ in range(depth):
        items = [item for value in items if value is not None for item in value]
    if all(item is None for item in items):  # no value of the kind: stored as a list of nulls (or nothing)
        values.append(_nested(data.draw(scalars), depth))
    _same_text_for_each(tmp_path, values, kind + "[]" * depth)


def _nested(value: Any, depth: int) -> Any:
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("zone", ["Europe/Berlin", "America/St_Johns", "Asia/Kolkata", "UTC"])
def test_a_named_time_zone_gives_the_offset_isoformat_gives(tmp_path, zone):
    """A column of datetimes in a named zone: summer and winter time, a half-hour zone, and the
    local mean time of 1850 (an offset in seconds), as isoformat() writes them."""
    place = zoneinfo.ZoneInfo(zone)
    moments = [datetime.datetime(*when, tzinfo=place) for when in
               ((2020, 7, 1, 12), (2020, 1, 1, 12, 30, 0, 5), (1850, 7, 1, 12), (9999, 6, 1))]
    _same_text_for_each(tmp_path, [*moments, None], "TIMESTAMPTZ")
    _same_text_for_each(tmp_path, [moments, [None], None], "TIMESTAMPTZ[]")


@pytest.mark.parametrize("zone", FIXED_ZONES, ids=str)
def test_a_fixed_offset_is_written_as_isoformat_writes_it(tmp_path, zone):
    """Datetimes of a fixed offset, at the ends of the years Python knows (their UTC instant
    may fall outside them)."""
    moments = [datetime.datetime(1, 1, 1, tzinfo=zone), datetime.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=zone),
               datetime.datetime(2020, 2, 29, 12, 0, 0, 10, tzinfo=zone)]
    _same_text_for_each(tmp_path, [*moments, None], "TIMESTAMPTZ")


def test_lists_of_none_only_are_spelled_as_to_json_spells_them(tmp_path):
    """A list column holding None and [] only (a NULL[][] column)."""
    _same_text_for_each(tmp_path, [[[], None, [None]], None, []], "NULL[][]")


def test_a_lone_surrogate_is_never_in_a_typed_column(tmp_path):
    """A string no file can store as UTF-8 makes its column JSON text, written by to_json itself."""
    assert _read_back_as_duckdb_json(tmp_path, ["a\ud800", "b"]) == (None, [])
    assert _read_back_as_duckdb_json(tmp_path, [["a", "\udfff"]]) == (None, [])


#: Values whose companion text comes both from Python (inherited) and from SQL (a typed column).
TRICKY = {
    "strings": ["a\"b", "c\\d", "\x00\x1f\x7f", "é日😀\u2028", "\n\t"],
    "floats": [0.1, 1e20, 1e-7, -0.0, math.nan, math.inf, -math.inf, 1.0],
    "ints": [INT64_MAX, INT64_MIN, 2**53 + 1],
    "lists": [[1, 2], [[]], [[None, 1]], [["x"], None]],
    "stamps": [datetime.datetime(2020, 1, 2, 3, 4, 5), datetime.datetime(2020, 1, 2, 3, 4, 5, 6)],
    "tagged": [datetime.date(2020, 1, 2), b"\x00\xff"],
    "bools": [True, False],
}


def test_a_companion_holds_one_text_per_value_however_it_was_stored(tmp_path):
    """Each value as a run's experiment info (split in Python) and as a record's own value in a
    typed column (split in SQL), while most of the key's values are of another kind (1.5, or "s"
    for numbers): one text, ``to_json``'s, and ``GROUP BY`` counts one group per value."""
    collection = ExperimentCollection(tmp_path / "study", quiet=True)
    values = {f"k_{name}_{index}": value for name, group in TRICKY.items() for index, value in enumerate(group)}
    others = {key: "s" if type(value) in (int, float) else 1.5 for key, value in values.items()}
    for _ in range(3):
        with collection.new_experiment() as experiment:
            experiment.push(**others)
    with collection.new_experiment(**values) as experiment:  # inherited: split in Python
        experiment.sub_recorder().push(o=0)
    with collection.new_experiment() as experiment:  # one typed column per key: split in SQL
        experiment.push(**values)
    for key, value in values.items():
        name = f"{key}~json"
        groups = collection.sql(f'SELECT "{name}", count(*) FROM records WHERE "{name}" IS NOT NULL GROUP BY 1').fetchall()
        assert groups == [(to_json(value), 2)], f"{key} = {value!r}"
