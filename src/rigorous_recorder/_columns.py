"""Columns: from per-key Python lists to typed Arrow batches, and back.

A recorder appends each committed value to a Python list per key (the cheapest thing
Python can do). Every ``recorder.BATCH_ROWS`` rows those lists become one Arrow record batch,
8 bytes a number, and the lists are dropped. This module holds that conversion, the rule
that merges batches whose types drifted, and the way back to Python values.

The type rule, applied per key:

* ints and floats together widen to float64;
* ``None`` is a missing value and fits any type;
* anything else that does not fit one Arrow type (a float, then a string; an int too big
  for int64; a dict) is stored as JSON text and marked so in the field's metadata. Reading
  it back through this package gives the original Python values; SQL sees text that
  DuckDB's JSON functions understand. Nothing is lost and nothing raises.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from typing import Any

import pyarrow as pa

from ._hotpath import pack_column
from ._values import EXACT_FLOAT_INT, INT64_MAX, INT64_MIN, from_json, to_json

ENCODING_KEY = b"rigorous_recorder.encoding"
_JSON_METADATA = {ENCODING_KEY: b"json"}

_PACKED_TYPES = {"d": pa.float64(), "q": pa.int64(), "b": pa.bool_(), "s": pa.string()}


def is_json_field(field: pa.Field) -> bool:
    """True when the field holds JSON text written by this module."""
    return bool(field.metadata) and field.metadata.get(ENCODING_KEY) == b"json"


def json_field(name: str) -> pa.Field:
    """A string field marked as holding JSON-encoded values."""
    return pa.field(name, pa.string(), metadata=_JSON_METADATA)


def packed_array(values: list[Any]) -> pa.Array | None:
    """``values`` of one plain kind (float, int, bool or str; None: missing) as an Arrow array,
    built from buffers (no ``pa.array``, which imports pandas); None for any other list."""
    packed = pack_column(values)
    if packed is None:
        return None
    kind, buffers, validity, missing = packed
    arrow_type = _PACKED_TYPES[kind]
    buffers = [None if validity is None else pa.py_buffer(validity), *map(pa.py_buffer, buffers)]
    return pa.Array.from_buffers(arrow_type, len(values), buffers, missing)


def column_to_arrow(name: str, values: list[Any]) -> tuple[pa.Field, pa.Array]:
    """Convert one key's values (already normalized) into an Arrow field and array."""
    packed = packed_array(values)
    if packed is not None:
        return pa.field(name, packed.type), packed
    kinds = set(map(type, values))
    if _fits_one_arrow_type(kinds, values):
        try:
            data = pa.array(values)
        except (pa.ArrowException, OverflowError, TypeError, ValueError):
            pass
        else:
            if not _has_struct(data.type):
                return pa.field(name, data.type), data
    return json_field(name), _json_array(values)


def exact_column_to_arrow(name: str, values: list[Any]) -> tuple[pa.Field, pa.Array]:
    """:func:`column_to_arrow`, except that ints beyond ±2**53 among floats stay exact (the
    column is JSON) instead of widening to float, as a key's values in a tree's data do."""
    kinds = set(map(type, values))
    if int in kinds and float in kinds and not all(
            -EXACT_FLOAT_INT <= value <= EXACT_FLOAT_INT for value in values if type(value) is int):
        return json_field(name), _json_array(values)
    return column_to_arrow(name, values)


def _json_array(values: Iterable[Any]) -> pa.Array:
    """Values as JSON text (None stays null), for a field made by :func:`json_field`."""
    return pa.array([None if value is None else to_json(value) for value in values], pa.string())


_ARROW_SCALARS = frozenset({bool, int, float, str, bytes, datetime.date, datetime.datetime})


def _fits_one_arrow_type(kinds: set[type], values: Iterable[Any]) -> bool:
    """True when ``pa.array(values)`` gives every value back as it was (ints may widen to floats).

    Arrow would otherwise coerce silently: bools among floats to 1.0, str among bytes to
    bytes, a datetime among dates to a date, naive datetimes among aware ones to UTC.
    """
    kinds = kinds - {type(None)}
    if kinds == {int, float}:  # an int beyond int64 would round: it goes to JSON text instead
        return all(type(value) is not int or INT64_MIN <= value <= INT64_MAX for value in values)
    if not kinds:
        return True
    if len(kinds) > 1:
        return False
    (kind,) = kinds
    if kind is list:
        items = [item for value in values if value is not None for item in value]
        return _fits_one_arrow_type(set(map(type, items)), items)
    if kind is datetime.datetime:
        try:
            return len({value.tzinfo for value in values if value is not None}) == 1
        except TypeError:  # an unhashable tzinfo
            return False
    return kind in _ARROW_SCALARS


def _has_struct(arrow_type: pa.DataType) -> bool:
    if pa.types.is_struct(arrow_type):
        return True
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        return _has_struct(arrow_type.value_type)
    return False


def build_batch(columns: dict[str, list[Any]], rows: int) -> pa.RecordBatch:
    """Turn equally long per-key lists into one record batch of ``rows`` rows."""
    if not columns:
        return empty_rows_batch(rows)
    fields, arrays = zip(*(column_to_arrow(name, values) for name, values in columns.items()))
    return pa.RecordBatch.from_arrays(list(arrays), schema=pa.schema(fields))


def empty_rows_batch(rows: int) -> pa.RecordBatch:
    """A batch of ``rows`` records that hold no value of their own (no columns)."""
    return pa.record_batch({"_": pa.nulls(rows)}).drop_columns(["_"])


def unified_schema(schemas: Iterable[pa.Schema]) -> pa.Schema:
    """The schema every batch can be cast to, by the type rule in this module's docstring."""
    found: dict[str, list[pa.Field]] = {}
    for schema in schemas:
        for field in schema:
            found.setdefault(field.name, []).append(field)
    return pa.schema(_merge_fields(name, fields) for name, fields in found.items())


def _merge_fields(name: str, fields: list[pa.Field]) -> pa.Field:
    if any(is_json_field(field) for field in fields):
        return json_field(name)
    types = {field.type for field in fields if not pa.types.is_null(field.type)}
    if not types:
        return pa.field(name, pa.null())
    if len(types) == 1:
        return pa.field(name, types.pop())
    if types == {pa.int64(), pa.float64()}:
        return pa.field(name, pa.float64())
    return json_field(name)


def conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """Cast ``batch`` to ``schema``: missing columns become nulls, drifted ones JSON or float.

    The missing columns of one type share one null array: a wide schema costs a pointer per
    missing column, not a buffer.
    """
    positions, types = _layout(schema)
    nulls = {arrow_type: pa.nulls(batch.num_rows, arrow_type) for arrow_type in set(types)}
    arrays = [nulls[arrow_type] for arrow_type in types]
    for index, name in enumerate(batch.schema.names):
        position = positions[name]
        arrays[position] = _conformed(batch.schema.field(index), batch.column(index), schema.field(position))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


_last_layout: tuple[pa.Schema, dict[str, int], list[pa.DataType]] | None = None


def _layout(schema: pa.Schema) -> tuple[dict[str, int], list[pa.DataType]]:
    """The position of each name in ``schema`` and its column types, kept for the last schema
    asked (a records file conforms every batch to one schema)."""
    global _last_layout
    last = _last_layout  # one read: another thread may replace it meanwhile
    if last is None or last[0] is not schema:
        last = _last_layout = (schema, {name: index for index, name in enumerate(schema.names)}, schema.types)
    return last[1], last[2]


def conformed_table(batches: list[pa.RecordBatch], schema: pa.Schema) -> pa.Table:
    """``batches`` cast to ``schema`` (as :func:`conform` casts each) as one table, built column
    by column: the rows between two batches holding a key become one null chunk of that key,
    a slice of one null array per type. A wide table of sparse batches (many keys, a few in
    each batch) then costs memory and writing time for its values, not for keys x batches."""
    rows = sum(batch.num_rows for batch in batches)
    types = dict(zip(schema.names, schema.types))
    chunks: dict[str, list[pa.Array]] = {name: [] for name in schema.names}
    covered = dict.fromkeys(schema.names, 0)  # rows of each key given a chunk so far
    nulls: dict[pa.DataType, pa.Array] = {}

    def pad(name: str, end: int) -> None:
        if covered[name] < end:
            arrow_type = types[name]
            null = nulls.get(arrow_type)
            if null is None:
                null = nulls[arrow_type] = pa.nulls(rows, arrow_type)
            chunks[name].append(null.slice(covered[name], end - covered[name]))
            covered[name] = end

    start = 0
    for batch in batches:
        for index, name in enumerate(batch.schema.names):
            pad(name, start)
            chunks[name].append(_conformed(batch.schema.field(index), batch.column(index), schema.field(name)))
            covered[name] = start + batch.num_rows
        start += batch.num_rows
    for name in schema.names:
        pad(name, rows)
    return pa.Table.from_arrays([pa.chunked_array(chunks[name], types[name]) for name in schema.names], schema=schema)


def _conformed(have: pa.Field, column: pa.Array, field: pa.Field) -> pa.Array:
    """``column``, stored as ``have``, cast to ``field`` (JSON text, or widened to float)."""
    if is_json_field(field) and not is_json_field(have):
        return _json_array(column.to_pylist())
    if have.type != field.type:
        # int64 to float64 is the widening rule: ints beyond 2**53 round, as in one batch
        return column.cast(field.type, safe=not pa.types.is_floating(field.type))
    return column


def keys_widened_to_float(schemas: Iterable[pa.Schema], pending_kinds: dict[str, set[type]]) -> frozenset[str]:
    """Keys whose values are ints in some rows and floats in others: they read as floats.

    ``pending_kinds`` holds the Python types of each key's not yet sealed values.
    """
    kinds: dict[str, set[Any]] = {}
    for schema in schemas:
        for field in schema:
            if not pa.types.is_null(field.type):
                kinds.setdefault(field.name, set()).add(int if field.type == pa.int64() else float if field.type == pa.float64() else field.type)
    for key, found in pending_kinds.items():
        kinds.setdefault(key, set()).update(found - {type(None)})
    return frozenset(key for key, found in kinds.items() if found == {int, float})


def to_python_columns(batch: pa.RecordBatch, as_float: frozenset[str] = frozenset()) -> dict[str, list[Any]]:
    """Python values per key for one batch; keys that are null in every row are left out.

    Keys in ``as_float`` read as floats (see :func:`keys_widened_to_float`).
    """
    columns = {}
    for field, column in zip(batch.schema, batch.columns):
        if column.null_count == len(column):
            continue
        if field.name in as_float and field.type == pa.int64():
            column = column.cast(pa.float64(), safe=False)  # ints beyond 2**53 round, as in one batch
        values = column.to_pylist()
        if is_json_field(field):
            values = [from_json(value) for value in values]
        columns[field.name] = values
    return columns


def restore(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Give ``table``'s columns back the types of ``schema`` (undoing widening or JSON)."""
    arrays = []
    for field in schema:
        column = table.column(field.name)
        stored = table.schema.field(field.name)
        if pa.types.is_null(field.type):  # no value of this recorder's own had the key
            column = pa.nulls(len(column))
        elif is_json_field(stored) and not is_json_field(field):
            column = pa.array([from_json(value) for value in column.to_pylist()], field.type)
        elif stored.type != field.type:
            column = _cast_back(column, field.type)
        arrays.append(column)
    return pa.Table.from_arrays(arrays, schema=schema)


def _cast_back(column: pa.ChunkedArray, arrow_type: pa.DataType) -> pa.ChunkedArray:
    """Cast a widened column back; an int64 that became a float beyond int64 is clamped."""
    try:
        return column.cast(arrow_type)
    except pa.ArrowInvalid:
        if arrow_type != pa.int64():
            raise
        low, high = -(2**63), 2**63 - 1
        return pa.chunked_array(
            [pa.array([None if v is None else min(max(int(v), low), high) for v in column.to_pylist()], arrow_type)],
            arrow_type,
        )
