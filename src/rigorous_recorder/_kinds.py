"""The type rule of the flat views: the kind of each value, and SQL that sorts stored values
into a key's typed column and its companion JSON column.

A kind is a DuckDB type name (BIGINT, DOUBLE, BOOLEAN, VARCHAR, BLOB, DATE, TIMESTAMP,
TIMESTAMPTZ, lists such as DOUBLE[] or DATE[][]) or JSON: values only JSON text can hold
(dicts, lists of mixed item types, ints beyond int64). A list of ints and floats is a DOUBLE[];
a list that holds only None, or nothing, is a NULL[] and fits a list column of any item type.
A key's typed column has the kind whose column would hold most of its values (:func:`choose`);
a value fits it when its kind is that kind, when it is an int (or a list of ints) within
±2**53 and the column is DOUBLE (DOUBLE[]), or when it is a NULL[] and the column a list
(:func:`fits`). The other values go to the companion column as the JSON text
:func:`~rigorous_recorder._values.to_json` writes, which reads back as the value pushed.

>>> choose(Counter({"BIGINT": 3, "DOUBLE": 1, "VARCHAR": 2}))
'DOUBLE'
>>> split(2**60 + 1, "DOUBLE"), split("x", "DOUBLE"), split(3, "DOUBLE")
((None, '1152921504606846977'), (None, '"x"'), (3.0, None))
>>> value_kind([1, 2.5]), value_kind([[], None]), value_kind([1, "a"]), split([1, None], "DOUBLE[]")
('DOUBLE[]', 'NULL[][]', 'JSON', ([1.0, None], None))
"""

from __future__ import annotations

import datetime
import functools
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._values import EXACT_FLOAT_INT, INT64_MAX, INT64_MIN, to_json
from .query_text import quote_literal
from .store.layout import RECORDER_COLUMN as STORED_RECORDER_COLUMN

if TYPE_CHECKING:
    import pyarrow as pa

#: Kinds are DuckDB type names, plus JSON: values that only JSON text can hold (dicts,
#: lists of mixed or unknown item type, ints beyond int64). JSON columns are VARCHAR.
JSON = "JSON"
#: Ints whose magnitude is beyond 2**53: a BIGINT, but not exactly a DOUBLE.
WIDE_INT = "WIDE BIGINT"
#: The kind of a stored column of JSON text written by to_json (values of any kind).
JSON_TEXT = "JSON TEXT"
#: The item kind of a list that holds only None, or nothing: it fits a list of any item kind.
NULL = "NULL"
#: The order that breaks a tie between kinds holding as many values.
_PREFERENCE = ("DOUBLE", "BIGINT", "BOOLEAN", "VARCHAR", "TIMESTAMPTZ", "TIMESTAMP", "DATE", "BLOB")
#: Lists in JSON text nested deeper than this read as JSON (SQL cannot recurse).
JSON_LIST_DEPTH = 2

# -- kinds: the SQL type a value would have ------------------------------------------------


def value_kind(value: Any) -> str | None:
    """The kind of one stored Python value (None for None)."""
    kind = type(value)
    if value is None:
        return None
    if kind is bool:
        return "BOOLEAN"
    if kind is int:
        if not INT64_MIN <= value <= INT64_MAX:
            return JSON
        return "BIGINT" if -EXACT_FLOAT_INT <= value <= EXACT_FLOAT_INT else WIDE_INT
    if kind is float:
        return "DOUBLE"
    if kind is str:
        return "VARCHAR"
    if kind is bytes:
        return "BLOB"
    if kind is datetime.datetime:
        return "TIMESTAMP" if value.utcoffset() is None else "TIMESTAMPTZ"
    if kind is datetime.date:
        return "DATE"
    if kind is list:
        return _list_kind({value_kind(item) for item in value})
    return JSON


def _list_kind(items: set[str | None]) -> str:
    """The kind of a list whose items have the kinds ``items`` (None for a None item).

    The same rule as the SQL of :func:`json_kind_sql`: lists of None only (NULL[]) among lists
    at least as deep count as those (``[[], [1.0]]`` is DOUBLE[][]); ints among floats make
    DOUBLE[] (unless an int is beyond ±2**53), ints beyond ±2**53 among others make
    WIDE BIGINT[]; any other mix is JSON.
    """
    items = items - {None}
    nulls = {item for item in items if unlist(item)[0] == NULL}
    others = items - nulls
    if others and all(unlist(each)[1] <= min(unlist(other)[1] for other in others) for each in nulls):
        items = others
    if items == {"BIGINT", "DOUBLE"}:
        items = {"DOUBLE"}
    elif items == {"BIGINT", WIDE_INT}:
        items = {WIDE_INT}
    if not items:
        return f"{NULL}[]"
    if len(items) > 1 or JSON in items:
        return JSON
    return f"{items.pop()}[]"


def unlist(kind: str) -> tuple[str, int]:
    """A kind's item kind and list depth: ``("DATE", 2)`` for DATE[][], ``("DOUBLE", 0)`` for DOUBLE."""
    item = kind.removesuffix("[]")
    if item == kind:
        return kind, 0
    item, depth = unlist(item)
    return item, depth + 1


def arrow_kind(arrow_type: pa.DataType) -> str | None:
    """The kind of the values of an Arrow column (None for a column of nulls only)."""
    import pyarrow as pa  # loaded already: the caller holds an Arrow type

    if pa.types.is_null(arrow_type):
        return None
    if pa.types.is_integer(arrow_type):
        return "BIGINT"
    if pa.types.is_floating(arrow_type):
        return "DOUBLE"
    if pa.types.is_boolean(arrow_type):
        return "BOOLEAN"
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "VARCHAR"
    if pa.types.is_binary(arrow_type) or pa.types.is_large_binary(arrow_type):
        return "BLOB"
    if pa.types.is_date(arrow_type):
        return "DATE"
    if pa.types.is_timestamp(arrow_type):
        return "TIMESTAMP" if arrow_type.tz is None else "TIMESTAMPTZ"
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        item = arrow_kind(arrow_type.value_type) or NULL
        return JSON if item == JSON else item + "[]"
    return JSON


def vote(kind: str) -> str:
    """The kind a value counts for when the typed column's type is chosen."""
    return kind.replace(WIDE_INT, "BIGINT")


def fits(kind: str, main: str) -> bool:
    """True when a value of ``kind`` is held by a typed column of kind ``main``."""
    if vote(kind) == main:
        return True
    item, depth = unlist(kind)
    main_item, main_depth = unlist(main)
    if item == NULL:
        return main == JSON or main_depth >= depth
    return item == "BIGINT" and main_item == "DOUBLE" and depth == main_depth


def sql_type(kind: str) -> str:
    """The SQL type of a typed column of ``kind``."""
    return "VARCHAR" if kind == JSON else kind


def choose(votes: Counter[str]) -> str:
    """The kind of a key's typed column: the kind whose column holds most of its values
    (VARCHAR for no value, JSON for lists of None only)."""
    candidates = [kind for kind, count in votes.items() if count and unlist(kind)[0] != NULL]
    if not candidates:
        return JSON if any(votes.values()) else "VARCHAR"
    held = {main: sum(count for kind, count in votes.items() if fits(kind, main)) for main in candidates}
    return min(candidates, key=lambda main: (-held[main], _rank(main)))


def _rank(kind: str) -> tuple[int, str]:
    return (_PREFERENCE.index(kind) if kind in _PREFERENCE else len(_PREFERENCE) + (kind == JSON), kind)


def split(value: Any, main: str) -> tuple[Any, str | None]:
    """``value`` as (typed column value, companion JSON text) for a typed column of ``main``."""
    kind = value_kind(value)
    if kind is None:
        return None, None
    if not fits(kind, main):
        return None, to_json(value)
    if main == JSON:
        return to_json(value), None
    return (_as_floats(value) if unlist(main)[0] == "DOUBLE" else value), None


def _as_floats(value: Any) -> Any:
    """An int, or the ints of a (nested) list, as floats."""
    if type(value) is list:
        return [_as_floats(item) for item in value]
    return None if value is None else float(value)


# -- SQL over one stored column ------------------------------------------------------------

_STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?"
#: An integer of 16 digits or more in a JSON list. DuckDB's JSON reader reads an int beyond
#: 64 bits as a float, so a list with one is never read as DOUBLE[] (it would round).
_LONG_INT = r"[\[,]\s*-?[0-9]{16,}\s*[,\]]"


def json_kind_sql(text: str, depth: int = JSON_LIST_DEPTH) -> str:
    """SQL: the kind of a value from the JSON text :func:`to_json` wrote (see :func:`value_kind`).

    Lists nested deeper than ``depth`` are JSON.
    """
    lists = f"WHEN starts_with({text}, '[') THEN {_json_list_kind_sql(text, depth)} " if depth else ""
    return (
        f"CASE WHEN {text} IN ('true', 'false') THEN 'BOOLEAN' "
        f"WHEN starts_with({text}, '\"') THEN 'VARCHAR' "
        f"WHEN regexp_full_match({text}, '-?[0-9]+') THEN CASE "
        f"WHEN TRY_CAST({text} AS BIGINT) IS NULL THEN '{JSON}' "
        f"WHEN abs(CAST({text} AS HUGEINT)) <= {EXACT_FLOAT_INT} THEN 'BIGINT' ELSE '{WIDE_INT}' END "
        f"WHEN {text} IN ('NaN', 'Infinity', '-Infinity') "
        rf"OR regexp_full_match({text}, '-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?') THEN 'DOUBLE' "
        f"{lists}"
        rf"""WHEN regexp_full_match({text}, '\{{"\$bytes":\s*"[A-Za-z0-9+/=]*"\}}') THEN 'BLOB' """
        rf"""WHEN regexp_full_match({text}, '\{{"\$date":\s*"\d{{4}}-\d\d-\d\d"\}}') THEN 'DATE' """
        rf"""WHEN regexp_full_match({text}, '\{{"\$datetime":\s*"{_STAMP}"\}}') THEN 'TIMESTAMP' """
        rf"""WHEN regexp_full_match({text}, '\{{"\$datetime":\s*"{_STAMP}[+-]\d\d:\d\d"\}}') THEN 'TIMESTAMPTZ' """
        f"ELSE '{JSON}' END"
    )


def _json_list_kind_sql(text: str, depth: int) -> str:
    """SQL: the kind of the JSON list ``text``, by :func:`_list_kind`'s rule over its items' kinds."""
    item = f"x{depth}"
    item_kind = json_kind_sql(f"CAST({item} AS VARCHAR)", depth - 1)
    kinds = (f"list_sort(list_distinct(list_transform(CAST(CAST({text} AS JSON) AS JSON[]), "
             f"lambda {item}: CASE WHEN {item} IS NOT NULL THEN {item_kind} END)))")
    found, every, other, null = f"k{depth}", f"a{depth}", f"o{depth}", f"n{depth}"
    others = f"list_filter({every}, lambda {other}: NOT starts_with({other}, '{NULL}'))"
    nulls = f"list_filter({every}, lambda {null}: starts_with({null}, '{NULL}'))"
    deepest_null = f"coalesce(list_max(list_transform({nulls}, lambda {null}: {_depth_sql(null)})), 0)"
    shallowest_other = f"list_min(list_transform({others}, lambda {other}: {_depth_sql(other)}))"
    without_nulls = (f"CASE WHEN len({others}) > 0 AND {deepest_null} <= {shallowest_other} "
                     f"THEN {others} ELSE {every} END")
    rule = (f"CASE WHEN len({found}) = 0 THEN '{NULL}[]' "
            f"WHEN {found} = ['BIGINT', 'DOUBLE'] THEN CASE WHEN regexp_matches({text}, '{_LONG_INT}') "
            f"THEN '{JSON}' ELSE 'DOUBLE[]' END "
            f"WHEN {found} = ['BIGINT', '{WIDE_INT}'] THEN '{WIDE_INT}[]' "
            f"WHEN len({found}) = 1 AND {found}[1] <> '{JSON}' AND NOT (starts_with({found}[1], 'DOUBLE') "
            f"AND regexp_matches({text}, '{_LONG_INT}')) THEN {found}[1] || '[]' "
            f"ELSE '{JSON}' END")
    return f"list_transform([list_transform([{kinds}], lambda {every}: {without_nulls})[1]], lambda {found}: {rule})[1]"


def _depth_sql(kind: str) -> str:
    """SQL: the list depth of the kind named by the string ``kind`` (2 for 'DATE[][]')."""
    return f"((length({kind}) - length(replace({kind}, '[]', ''))) // 2)"


def _from_json_sql(text: str, main: str) -> str:
    """SQL: the typed value of JSON text whose kind fits ``main``."""
    if main == JSON:
        return text
    if main.endswith("[]"):
        depth = unlist(main)[1]
        item = f"y{depth}"
        return (f"list_transform(CAST(CAST({text} AS JSON) AS JSON[]), "
                f"lambda {item}: {_from_json_sql(f'CAST({item} AS VARCHAR)', main[:-2])})")
    if main in ("BIGINT", "DOUBLE"):
        return f"CAST({text} AS {main})"
    if main == "BOOLEAN":
        return f"({text} = 'true')"
    if main == "VARCHAR":
        return f"json_extract_string({text}, '$')"
    if main == "BLOB":
        return f"""from_base64(json_extract_string({text}, '$."$bytes"'))"""
    if main == "DATE":
        return f"""CAST(json_extract_string({text}, '$."$date"') AS DATE)"""
    return f"""CAST(json_extract_string({text}, '$."$datetime"') AS {main})"""  # TIMESTAMP, TIMESTAMPTZ


#: What json.dumps writes for each character it escapes in a string (ensure_ascii=False): the
#: backslash first, so that no later escape is escaped again.
_STRING_ESCAPES = {"\\": "\\\\", '"': '\\"', "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t",
                   **{chr(code): f"\\u{code:04x}" for code in range(0x20) if chr(code) not in "\b\f\n\r\t"}}


def _string_json_sql(column: str) -> str:
    """SQL: a VARCHAR as the JSON string json.dumps writes (DuckDB's to_json writes ``\\u001F``)."""
    escaped = column
    for character, escape in _STRING_ESCAPES.items():
        escaped = f"replace({escaped}, chr({ord(character)}), '{escape}')"
    return (f"""'"' || CASE WHEN regexp_matches({column}, '[\\x00-\\x1f"\\\\]') THEN {escaped} """
            f"""ELSE {column} END || '"'""")


def _isoformat_sql(timestamp: str) -> str:
    """SQL: a TIMESTAMP as datetime.isoformat() writes it (no fraction for a whole second)."""
    return rf"regexp_replace(strftime({timestamp}, '%Y-%m-%dT%H:%M:%S.%f'), '\.000000$', '')"


#: A time zone that Arrow names by its fixed offset from UTC (what datetime.timezone gives).
_FIXED_OFFSET = re.compile(r"([+-])(\d\d):(\d\d)")


def _zoned_sql(column: str, zone: str | None) -> tuple[str, str]:
    """SQL: a TIMESTAMPTZ as the wall time and the UTC offset text (``'+02:00'``) that
    isoformat() writes in ``zone``, the column's time zone (Arrow's name for it). A zone
    DuckDB does not know is written in UTC: the same instant."""
    utc = f"timezone('UTC', {column})"
    fixed = _FIXED_OFFSET.fullmatch(zone or "")
    if fixed:
        sign, hours, minutes = fixed.groups()
        seconds = int(f"{sign}1") * (int(hours) * 3600 + int(minutes) * 60)
        return f"({utc} + INTERVAL ({seconds}) SECOND)", quote_literal(zone if seconds else "+00:00")
    if zone is None or zone == "UTC" or zone not in _duckdb_time_zones():
        return utc, "'+00:00'"
    local = f"timezone({quote_literal(zone)}, {column})"
    seconds = f"abs(CAST(epoch({local}) - epoch({utc}) AS BIGINT))"
    sign = f"CASE WHEN epoch({local}) < epoch({utc}) THEN '-' ELSE '+' END"
    hours, minutes, rest = (f"lpad(CAST({part} AS VARCHAR), 2, '0')"
                            for part in (f"{seconds} // 3600", f"{seconds} % 3600 // 60", f"{seconds} % 60"))
    return local, f"{sign} || {hours} || ':' || {minutes} || CASE WHEN {seconds} % 60 <> 0 THEN ':' || {rest} ELSE '' END"


@functools.cache
def _duckdb_time_zones() -> frozenset[str]:
    """The time zones DuckDB's timezone() knows."""
    import duckdb

    return frozenset(name for (name,) in duckdb.connect().execute("SELECT name FROM pg_timezone_names()").fetchall())


def _to_json_sql(column: str, kind: str, zone: str | None = None) -> str:
    """SQL: the JSON text :func:`to_json` writes for a value of a stored column of ``kind``
    (``zone``: a TIMESTAMPTZ column's time zone), character for character (DuckDB's own
    to_json spells lists, floats and strings otherwise)."""
    depth = unlist(kind)[1]
    if depth:
        each = f"z{depth}"  # array_to_string leaves out NULL items, and gives NULL for [] before DuckDB 2.0
        each_text = f"coalesce({_to_json_sql(each, kind[:-2], zone)}, 'null')"
        items = f"array_to_string(list_transform({column}, lambda {each}: {each_text}), ', ')"
        return f"CASE WHEN {column} IS NOT NULL THEN '[' || coalesce({items}, '') || ']' END"
    if kind in ("BIGINT", WIDE_INT):
        return f"CAST({column} AS VARCHAR)"
    if kind == "DOUBLE":  # DuckDB casts finite doubles as repr() writes them
        return (f"CASE WHEN isnan({column}) THEN 'NaN' WHEN isinf({column}) THEN "
                f"CASE WHEN {column} > 0 THEN 'Infinity' ELSE '-Infinity' END ELSE CAST({column} AS VARCHAR) END")
    if kind == "BOOLEAN":
        return f"CASE WHEN {column} THEN 'true' WHEN NOT {column} THEN 'false' END"
    if kind == "VARCHAR":
        return _string_json_sql(column)
    if kind == "BLOB":
        return f"""'{{"$bytes": "' || to_base64({column}) || '"}}'"""
    if kind == "DATE":
        return f"""'{{"$date": "' || strftime({column}, '%Y-%m-%d') || '"}}'"""
    if kind == "TIMESTAMP":
        return f"""'{{"$datetime": "' || {_isoformat_sql(column)} || '"}}'"""
    if kind == "TIMESTAMPTZ":
        local, offset = _zoned_sql(column, zone)
        return f"""'{{"$datetime": "' || {_isoformat_sql(local)} || {offset} || '"}}'"""
    if kind == NULL:  # an item of a list of None only
        return "CAST(NULL AS VARCHAR)"
    return f"CAST(to_json({column}) AS VARCHAR)"  # a type this package never writes (a struct, a map)


def _exact_as_double_sql(column: str, depth: int) -> str:
    """SQL: true when every int of a BIGINT column (a list of ``depth``) is within ±2**53."""
    if not depth:
        return f"{column} BETWEEN -{EXACT_FLOAT_INT} AND {EXACT_FLOAT_INT}"
    for _ in range(depth - 1):
        column = f"flatten({column})"
    return f"len(list_filter({column}, lambda w: w NOT BETWEEN -{EXACT_FLOAT_INT} AND {EXACT_FLOAT_INT})) = 0"


@dataclass
class StoredColumn:
    """One key's column in one part of the records: what it holds, as far as is known."""

    key: str
    position: int
    kind: str  # of the stored values, or JSON_TEXT
    votes: Counter[str] = field(default_factory=Counter)  # values per kind (for JSON TEXT, counted)
    wide: bool = True  # an int column (or list of ints) that may hold ints beyond 2**53
    zone: str | None = None  # a TIMESTAMPTZ column's (or list's) time zone, as Arrow names it

    def expressions(self, main: str) -> tuple[str | None, str | None]:
        """SQL for this column's share of the key's typed and companion columns (None: nothing)."""
        column = f"c{self.position}"
        if self.kind == JSON_TEXT:
            fitting = [f"'{kind}'" for kind in self.votes if fits(kind, main)]
            if not fitting:
                return None, column
            fit = f"{json_kind_sql(column)} IN ({', '.join(fitting)})"
            typed = f"CASE WHEN {fit} THEN {_from_json_sql(column, main)} END"
            if len(fitting) == len(self.votes):
                return typed, None
            return typed, f"CASE WHEN NOT ({fit}) THEN {column} END"
        item, depth = unlist(self.kind)
        if item == "BIGINT" and unlist(main) == ("DOUBLE", depth):
            if not self.wide:
                return f"CAST({column} AS {main})", None
            inside = _exact_as_double_sql(column, depth)
            return (f"CASE WHEN {inside} THEN CAST({column} AS {main}) END",
                    f"CASE WHEN NOT ({inside}) THEN {_to_json_sql(column, self.kind, self.zone)} END")
        if fits(self.kind, main):
            return (_to_json_sql(column, self.kind, self.zone) if main == JSON else column), None
        return None, _to_json_sql(column, self.kind, self.zone)


#: What a records file's columns hold: each column's name, Arrow type (as text) and kind
#: (:data:`JSON_TEXT` for JSON text, None for nulls only), in the file's order. Files of one
#: layout are read as one.
Layout = tuple[tuple[str, str, "str | None"], ...]


def layout_of(schema: pa.Schema) -> Layout:
    """The layout of a records file of ``schema``."""
    from ._columns import is_json_field

    return tuple((stored.name, str(stored.type), JSON_TEXT if is_json_field(stored) else arrow_kind(stored.type))
                 for stored in schema)


def stored_columns(layout: Layout) -> list[StoredColumn]:
    """The key columns of a records file of ``layout`` (the recorder id column left out)."""
    return [StoredColumn(name, position, kind, zone=_zone(arrow_type)) for position, (name, arrow_type, kind)
            in enumerate(layout) if name != STORED_RECORDER_COLUMN and kind is not None]


def _zone(arrow_type: str) -> str | None:
    """The time zone in the text of an Arrow type (``timestamp[us, tz=Europe/Berlin]``), if any."""
    found = re.search(r"tz=([^\]]+)\]", arrow_type)
    return found.group(1) if found else None
