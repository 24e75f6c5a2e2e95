"""A Parquet file's footer decoded in pure Python: its rows, its key-value metadata and each
column chunk's statistics, which is all a query needs from a finished run's records file.

The footer is the file's ``FileMetaData``, a Thrift struct in the compact protocol
(https://github.com/apache/parquet-format, ``parquet.thrift``). Reading the few fields wanted
and skipping the rest costs microseconds per file, against milliseconds per DuckDB query and
a fifth of a second to import pyarrow.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import DamagedFileError
from .layout import PARQUET_MAGIC, SMALLEST_PARQUET

#: The end of a file: the footer's length (4 bytes, little endian), then the magic.
_TAIL = 4 + len(PARQUET_MAGIC)
#: How much of a file's end one read takes: most footers fit, a larger one takes a second read.
_FIRST_READ = 64 * 1024
#: Parquet's physical type numbers of the column chunks whose statistics are decoded as ints.
_INT32, _INT64 = 1, 2
_INT_FORMATS = {_INT32: struct.Struct("<i"), _INT64: struct.Struct("<q")}

# Thrift compact protocol: the type of a field or of a list's elements.
_TRUE, _FALSE, _BYTE, _I16, _I32, _I64, _DOUBLE, _BINARY, _LIST, _SET, _MAP, _STRUCT = range(1, 13)


@dataclass
class ChunkStatistics:
    """What one column chunk (a column in one row group) says of its values: its nulls (None:
    not counted) and, for an int column, its least and greatest value (None: not written)."""

    nulls: int | None
    least: int | None
    greatest: int | None


@dataclass
class FileFooter:
    """The parts of a Parquet footer a query reads: the names of the top-level columns,
    key-value metadata, and per row group its rows and each leaf column's
    :class:`ChunkStatistics` in schema order."""

    names: list[str]
    metadata: dict[bytes, bytes | None]
    row_groups: list[tuple[int, list[ChunkStatistics]]]


def read_footer(path: str | os.PathLike[str]) -> FileFooter:
    """The footer of the Parquet file at ``path``; DamagedFileError naming the file when it is
    not a whole Parquet file, FileNotFoundError when it is gone."""
    with open(path, "rb") as file:
        size = file.seek(0, os.SEEK_END)
        if size < SMALLEST_PARQUET:
            raise DamagedFileError(path, f"not a rigorous_recorder file: not readable as Parquet ({size} bytes)")
        start = max(0, size - _FIRST_READ)
        file.seek(start)
        tail = file.read()
        length = int.from_bytes(tail[-_TAIL:-len(PARQUET_MAGIC)], "little")
        if tail[-len(PARQUET_MAGIC):] != PARQUET_MAGIC or length > size - len(PARQUET_MAGIC) - _TAIL:
            raise DamagedFileError(path, "not a rigorous_recorder file: not readable as Parquet (no Parquet footer at its end)")
        if length > len(tail) - _TAIL:
            file.seek(size - _TAIL - length)
            tail = file.read()
    try:
        footer, end = _file_footer(tail, len(tail) - _TAIL - length)
        if end != len(tail) - _TAIL:
            raise ValueError(f"the footer ends {end - len(tail) + _TAIL} bytes from where its length says")
        return footer
    except (IndexError, ValueError, KeyError, RecursionError, struct.error) as error:
        raise DamagedFileError(path, f"not a rigorous_recorder file: its Parquet footer is damaged ({error!r})") from None


def _file_footer(data: bytes, position: int) -> tuple[FileFooter, int]:
    fields, position = _struct(data, position, {2: _SCHEMA, 4: _ROW_GROUPS, 5: _KEY_VALUES})
    return FileFooter(_top_level_names(fields[2]), dict(fields.get(5, [])), fields.get(4, [])), position


def _schema_element(data: bytes, position: int) -> tuple[tuple[str, int], int]:
    fields, position = _struct(data, position, {4: _binary, 5: _int})
    return (fields[4].decode("utf-8"), fields.get(5, 0)), position


def _top_level_names(elements: list[tuple[str, int]]) -> list[str]:
    """The names of the root's children in a schema listed depth first as (name, children)."""
    names = []
    position = 1
    for _ in range(elements[0][1]):
        name, pending = elements[position]
        names.append(name)
        position += 1
        while pending:  # the column's own descendants
            pending += elements[position][1] - 1
            position += 1
    return names


def _key_value(data: bytes, position: int) -> tuple[tuple[bytes, bytes | None], int]:
    fields, position = _struct(data, position, {1: _binary, 2: _binary})
    return (fields[1], fields.get(2)), position


def _row_group(data: bytes, position: int) -> tuple[tuple[int, list[ChunkStatistics]], int]:
    fields, position = _struct(data, position, {1: _COLUMN_CHUNKS, 3: _int})
    return (fields[3], fields[1]), position


def _column_chunk(data: bytes, position: int) -> tuple[ChunkStatistics, int]:
    fields, position = _struct(data, position, {3: _column_meta})
    meta = fields.get(3)
    if meta is None:
        return ChunkStatistics(None, None, None), position
    statistics = meta.get(12, {})
    int_format = _INT_FORMATS.get(meta.get(1))  # type: ignore[arg-type]
    least, greatest = statistics.get(6, statistics.get(2)), statistics.get(5, statistics.get(1))
    if int_format is None or least is None or greatest is None:
        return ChunkStatistics(statistics.get(3), None, None), position
    return ChunkStatistics(statistics.get(3), int_format.unpack(least)[0], int_format.unpack(greatest)[0]), position


def _column_meta(data: bytes, position: int) -> tuple[dict[int, Any], int]:
    return _struct(data, position, {1: _int, 12: _statistics})


def _statistics(data: bytes, position: int) -> tuple[dict[int, Any], int]:
    return _struct(data, position, {1: _binary, 2: _binary, 3: _int, 5: _binary, 6: _binary})


# -- the Thrift compact protocol ------------------------------------------------------------

Decoder = Callable[[bytes, int], tuple[Any, int]]

_SCALARS = {_BYTE: 1, _DOUBLE: 8}  # fixed sizes
_VARINTS = {_I16, _I32, _I64}
_LISTS = {_LIST, _SET}


def _struct(data: bytes, position: int, wanted: dict[int, Decoder]) -> tuple[dict[int, Any], int]:
    """The fields of the struct at ``position`` that ``wanted`` decodes (each a field of the
    type its decoder reads), and the position after the struct; the other fields skipped."""
    fields: dict[int, Any] = {}
    field_id = 0
    while True:
        header = data[position]
        position += 1
        if header == 0:
            return fields, position
        kind, delta = header & 0x0F, header >> 4
        if delta:
            field_id += delta
        else:
            field_id, position = _varint(data, position)
            field_id = _zigzag(field_id)
        if field_id in wanted:
            if kind not in _TYPES[wanted[field_id]]:
                raise ValueError(f"field {field_id} has type {kind}")
            fields[field_id], position = wanted[field_id](data, position)
        elif kind in _VARINTS:  # most fields skipped: inline
            while data[position] & 0x80:
                position += 1
            position += 1
        else:
            position = _skip(data, position, kind)


def _list_of(element: Decoder) -> Decoder:
    def decode(data: bytes, position: int) -> tuple[list[Any], int]:
        size, kind, position = _list_header(data, position)
        if kind != _STRUCT:
            raise ValueError(f"a list of type {kind} where structs were expected")
        items = []
        for _ in range(size):
            item, position = element(data, position)
            items.append(item)
        return items, position

    _TYPES[decode] = _LISTS
    return decode


def _list_header(data: bytes, position: int) -> tuple[int, int, int]:
    header = data[position]
    size = header >> 4
    if size == 15:
        size, position = _varint(data, position + 1)
        return size, header & 0x0F, position
    return size, header & 0x0F, position + 1


def _int(data: bytes, position: int) -> tuple[int, int]:
    value, position = _varint(data, position)
    return _zigzag(value), position


def _binary(data: bytes, position: int) -> tuple[bytes, int]:
    length, position = _varint(data, position)
    end = position + length
    if end > len(data):
        raise ValueError("a binary field runs past the footer")
    return data[position:end], end


def _skip(data: bytes, position: int, kind: int) -> int:
    """The position after a value of type ``kind`` at ``position`` (a bool field's value is in
    its header: nothing to skip)."""
    if kind in _VARINTS:
        while data[position] & 0x80:
            position += 1
        return position + 1
    if kind == _BINARY:
        length, position = _varint(data, position)
        return position + length
    if kind == _STRUCT:
        return _struct(data, position, {})[1]
    if kind in _LISTS:
        size, element, position = _list_header(data, position)
        if element in (_TRUE, _FALSE):  # a bool inside a list takes a byte
            return position + size
        if element in _SCALARS:
            return position + size * _SCALARS[element]
        for _ in range(size):
            position = _skip(data, position, element)
        return position
    if kind == _MAP:
        size, position = _varint(data, position)
        if size:
            types = data[position]
            position += 1
            for _ in range(size):
                for element in (types >> 4, types & 0x0F):
                    position = position + 1 if element in (_TRUE, _FALSE) else _skip(data, position, element)
        return position
    if kind in (_TRUE, _FALSE):
        return position
    if kind in _SCALARS:
        return position + _SCALARS[kind]
    raise ValueError(f"unknown field type {kind}")


def _varint(data: bytes, position: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, position
        shift += 7
        if shift > 63:
            raise ValueError("a varint longer than 10 bytes")


def _zigzag(value: int) -> int:
    return (value >> 1) ^ -(value & 1)


#: The field types each decoder reads (a list decoder adds itself).
_TYPES: dict[Decoder, set[int]] = {_int: _VARINTS, _binary: {_BINARY}, _column_meta: {_STRUCT}, _statistics: {_STRUCT}}
_ROW_GROUPS, _KEY_VALUES, _COLUMN_CHUNKS = _list_of(_row_group), _list_of(_key_value), _list_of(_column_chunk)
_SCHEMA = _list_of(_schema_element)
