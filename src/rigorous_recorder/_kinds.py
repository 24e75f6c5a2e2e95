"""The type rule of the flat views: the kind of each value, and SQL that sorts stored values
into a key's typed column and its companion JSON column.

A kind is a DuckDB type name (BIGINT, DOUBLE, BOOLEAN, VARCHAR, BLOB, DATE, TIMESTAMP,
TIMESTAMPTZ, lists such as DOUBLE[]) or JSON: values only JSON text can hold (dicts, lists
of mixed or unknown item type, ints beyond int64). A key's typed column has the kind most of
its values have (:func:`choose`); a value fits it when its kind is that kind, or when it is
an int within ±2**53 and the column is DOUBLE (:func:`fits`). The other values go to the
companion column as the JSON text :func:`~rigorous_recorder._values.to_json` writes.

>>> choose(Counter({"BIGINT": 3, "DOUBLE": 1, "VARCHAR": 2}))
'DOUBLE'
>>> split(2**60 + 1, "DOUBLE"), split("x", "DOUBLE"), split(3, "DOUBLE")
((None, '1152921504606846977'), (None, '"x"'), (3.0, None))
"""

from __future__ import annotations

import datetime
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from ._columns import INT64_MAX, INT64_MIN, column_to_arrow, is_json_field
from ._values import to_json
from .store.layout import RECORDER_COLUMN as STORED_RECORDER_COLUMN

#: Kinds are DuckDB type names, plus JSON: values that only JSON text can hold (dicts,
#: lists of mixed or unknown item type, ints beyond int64). JSON columns are VARCHAR.
JSON = "JSON"
#: Ints whose magnitude is beyond 2**53: a BIGINT, but not exactly a DOUBLE.
WIDE_INT = "WIDE BIGINT"
EXACT_FLOAT_INT = 2**53
#: The kind of a stored column of JSON text written by to_json (values of any kind).
JSON_TEXT = "JSON TEXT"
#: The order that breaks a tie between kinds holding as many values.
_PREFERENCE = ("DOUBLE", "BIGINT", "BOOLEAN", "VARCHAR", "TIMESTAMPTZ", "TIMESTAMP", "DATE", "BLOB")

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
        stored = column_to_arrow("value", [value])[0]
        return JSON if is_json_field(stored) else arrow_kind(stored.type) or JSON
    return JSON


def arrow_kind(arrow_type: pa.DataType) -> str | None:
    """The kind of the values of an Arrow column (None for a column of nulls only)."""
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
        item = arrow_kind(arrow_type.value_type)
        return JSON if item in (None, JSON) else item + "[]"
    return JSON


def vote(kind: str) -> str:
    """The kind a value counts for when the typed column's type is chosen."""
    return "BIGINT" if kind == WIDE_INT else kind


def fits(kind: str, main: str) -> bool:
    """True when a value of ``kind`` is held by a typed column of kind ``main``."""
    return vote(kind) == main or (main == "DOUBLE" and kind == "BIGINT")


def sql_type(kind: str) -> str:
    """The SQL type of a typed column of ``kind``."""
    return "VARCHAR" if kind == JSON else kind


def choose(votes: Counter[str]) -> str:
    """The kind of a key's typed column: the kind most of its values have (VARCHAR for none)."""
    votes = Counter(votes)
    if votes["DOUBLE"]:
        votes["DOUBLE"] += votes.pop("BIGINT", 0)
    ranked = sorted(votes.items(), key=lambda item: (-item[1], _rank(item[0])))
    return ranked[0][0] if ranked and ranked[0][1] else "VARCHAR"


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
    return (float(value) if main == "DOUBLE" else value), None


# -- SQL over one stored column ------------------------------------------------------------


def json_kind_sql(text: str) -> str:
    """SQL: the kind of a value from the JSON text :func:`to_json` wrote (see :func:`value_kind`)."""
    stamp = r'\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?'
    return (
        f"CASE WHEN {text} IN ('true', 'false') THEN 'BOOLEAN' "
        f"WHEN starts_with({text}, '\"') THEN 'VARCHAR' "
        f"WHEN regexp_full_match({text}, '-?[0-9]+') THEN CASE "
        f"WHEN TRY_CAST({text} AS BIGINT) IS NULL THEN '{JSON}' "
        f"WHEN abs(CAST({text} AS HUGEINT)) <= {EXACT_FLOAT_INT} THEN 'BIGINT' ELSE '{WIDE_INT}' END "
        f"WHEN {text} IN ('NaN', 'Infinity', '-Infinity') "
        rf"OR regexp_full_match({text}, '-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?') THEN 'DOUBLE' "
        rf"""WHEN regexp_full_match({text}, '\{{"\$bytes": "[A-Za-z0-9+/=]*"\}}') THEN 'BLOB' """
        rf"""WHEN regexp_full_match({text}, '\{{"\$date": "\d{{4}}-\d\d-\d\d"\}}') THEN 'DATE' """
        rf"""WHEN regexp_full_match({text}, '\{{"\$datetime": "{stamp}"\}}') THEN 'TIMESTAMP' """
        rf"""WHEN regexp_full_match({text}, '\{{"\$datetime": "{stamp}[+-]\d\d:\d\d"\}}') THEN 'TIMESTAMPTZ' """
        f"ELSE '{JSON}' END"
    )


def _tag_payload(text: str, tag: str) -> str:
    """SQL: the string inside a one-key tagged object ``{"$tag": "..."}``."""
    start = len(f'{{"${tag}": "') + 1
    return f"substring({text}, {start}, length({text}) - {start + 1})"


def _from_json_sql(text: str, main: str) -> str:
    """SQL: the typed value of JSON text whose kind fits ``main``."""
    if main == JSON:
        return text
    if main in ("BIGINT", "DOUBLE"):
        return f"CAST({text} AS {main})"
    if main == "BOOLEAN":
        return f"({text} = 'true')"
    if main == "VARCHAR":
        return f"json_extract_string({text}, '$')"
    if main == "BLOB":
        return f"from_base64({_tag_payload(text, 'bytes')})"
    if main == "DATE":
        return f"CAST({_tag_payload(text, 'date')} AS DATE)"
    return f"CAST({_tag_payload(text, 'datetime')} AS {main})"  # TIMESTAMP, TIMESTAMPTZ


def _to_json_sql(column: str, kind: str) -> str:
    """SQL: the JSON text :func:`to_json` writes for a value of a stored column of ``kind``."""
    if kind in ("BIGINT", WIDE_INT):
        return f"CAST({column} AS VARCHAR)"
    if kind == "BLOB":
        return f"""'{{"$bytes": "' || to_base64({column}) || '"}}'"""
    if kind == "DATE":
        return f"""'{{"$date": "' || strftime({column}, '%Y-%m-%d') || '"}}'"""
    if kind == "TIMESTAMP":
        return f"""'{{"$datetime": "' || strftime({column}, '%Y-%m-%dT%H:%M:%S.%f') || '"}}'"""
    if kind == "TIMESTAMPTZ":
        utc = f"timezone('UTC', {column})"
        return f"""'{{"$datetime": "' || strftime({utc}, '%Y-%m-%dT%H:%M:%S.%f') || '+00:00"}}'"""
    return f"CAST(to_json({column}) AS VARCHAR)"


@dataclass
class StoredColumn:
    """One key's column in one part of the records: what it holds, as far as is known."""

    key: str
    position: int
    kind: str  # of the stored values, or JSON_TEXT
    votes: Counter[str] = field(default_factory=Counter)  # values per kind (for JSON TEXT, counted)
    wide: bool = True  # an int column that may hold ints beyond 2**53

    def expressions(self, main: str) -> tuple[str | None, str | None]:
        """SQL for this column's share of the key's typed and companion columns (None: nothing)."""
        column = f"c{self.position}"
        if self.kind == JSON_TEXT:
            fit = " OR ".join(f"kind = '{kind}'" for kind in self.votes if fits(kind, main))
            if not fit:
                return None, column
            kind = json_kind_sql(column)
            typed = f"CASE WHEN {fit.replace('kind', kind)} THEN {_from_json_sql(column, main)} END"
            if all(fits(kind, main) for kind in self.votes):
                return typed, None
            return typed, f"CASE WHEN NOT ({fit.replace('kind', kind)}) THEN {column} END"
        if self.kind == "BIGINT" and main == "DOUBLE":
            if not self.wide:
                return f"CAST({column} AS DOUBLE)", None
            inside = f"{column} BETWEEN -{EXACT_FLOAT_INT} AND {EXACT_FLOAT_INT}"
            return (f"CASE WHEN {inside} THEN CAST({column} AS DOUBLE) END",
                    f"CASE WHEN NOT ({inside}) THEN {_to_json_sql(column, 'BIGINT')} END")
        if fits(self.kind, main):
            return (_to_json_sql(column, self.kind) if main == JSON else column), None
        return None, _to_json_sql(column, self.kind)




def stored_columns(schema: pa.Schema) -> list[StoredColumn]:
    """The key columns of a records schema (the recorder id column left out)."""
    columns = []
    for position, stored in enumerate(schema):
        if stored.name == STORED_RECORDER_COLUMN:
            continue
        kind = JSON_TEXT if is_json_field(stored) else arrow_kind(stored.type)
        if kind is not None:
            columns.append(StoredColumn(stored.name, position, kind))
    return columns
