"""The journal: one append-only file of framed entries per run session.

A running run writes everything it records to one journal file, whatever the number of
its recorders: tree entries (a recorder's id, parent and local data, as JSON) and record
batches (an Arrow IPC stream with the recorder id as a column, compressed whole: ``b"RRLZ"``,
its length, 8 bytes little-endian, and an LZ4 frame of it). Each entry is a frame::

    b"RR"  kind (1 byte: T tree, B batch)  length (8 bytes, little-endian)  crc32 (4 bytes)  payload

A flush appends the tree entries of new or changed recorders before the batches that need
them, so what is on disk is always self-describing. A kill -9 can tear the last frame;
:func:`read_journal` stops there and returns every whole frame before it. A frame whose
checksum fails before the end of the file is damage, and is reported.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

TREE, BATCH = b"T", b"B"
_HEADER = struct.Struct("<2scQI")
#: Bytes before each frame's payload.
HEADER_SIZE = _HEADER.size
_MAGIC = b"RR"
#: No frame is larger: a flush writes at most a few seconds of records.
_MAX_FRAME = 1 << 32


def tree_frame(payload: bytes) -> bytes:
    """A frame holding tree entries (UTF-8 JSON)."""
    return _frame(TREE, payload)


def batch_frame(batch: pa.RecordBatch) -> bytes:
    """A frame holding one record batch (an Arrow IPC stream, LZ4-compressed as a whole)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as stream:
        stream.write_batch(batch)
    written = sink.getvalue()
    return _frame(BATCH, _COMPRESSED.pack(_COMPRESSED_MAGIC, written.size) + _LZ4.compress(written, asbytes=True))


#: Batches are LZ4-compressed (sparse records, many keys and a few in each, are mostly nulls), the
#: whole stream at once: Arrow's own IPC compression starts an LZ4 frame per buffer, which cost a
#: sparse batch of 22 rows and 150 keys ~2.5 ms, ten times its uncompressed writing.
_LZ4 = pa.Codec("lz4")
#: What a compressed batch payload begins with: a mark (an IPC stream, as journals written before
#: held, begins with 0xFFFFFFFF instead) and the stream's length, which decompressing at once needs.
_COMPRESSED = struct.Struct("<4sQ")
_COMPRESSED_MAGIC = b"RRLZ"


def _frame(kind: bytes, payload: bytes) -> bytes:
    return _HEADER.pack(_MAGIC, kind, len(payload), zlib.crc32(payload)) + payload


def decode_batch(payload: bytes) -> pa.RecordBatch:
    """The record batch of a batch frame's payload (compressed whole, or buffer by buffer as
    journals written before 2026-11-29 are)."""
    source = pa.py_buffer(payload)
    if payload[:4] == _COMPRESSED_MAGIC:
        _, size = _COMPRESSED.unpack_from(payload)
        source = _LZ4.decompress(source.slice(_COMPRESSED.size), decompressed_size=size)
    return pa.ipc.open_stream(source).read_next_batch()


@dataclass(frozen=True)
class Frame:
    """One whole frame of a journal: its kind, and where its payload lies in the file."""

    kind: bytes
    path: Path
    offset: int
    length: int

    def payload(self) -> bytes:
        """Read the payload from the file."""
        with self.path.open("rb") as file:
            file.seek(self.offset)
            return file.read(self.length)


class JournalDamage(Exception):
    """A journal holds a bad frame before its end (not a torn last frame)."""


def read_journal(path: Path, start: int = 0) -> Iterator[tuple[Frame, bytes]]:
    """Every whole frame of a journal file with its payload, stopping quietly at a torn end.

    ``start`` is where a frame begins (the end of a frame read before: its payload's offset
    plus its length): the frames before it are not read. Raises :class:`JournalDamage`
    (after yielding the good frames before it) when a frame before the end of the file is bad,
    or when ``start`` is not where a frame begins.
    """
    with path.open("rb") as file:
        size = os.fstat(file.fileno()).st_size
        offset = file.seek(start)
        while offset < size:
            header = file.read(_HEADER.size)
            if len(header) < _HEADER.size:
                return  # torn at the end
            magic, kind, length, checksum = _HEADER.unpack(header)
            start = offset + _HEADER.size
            if magic != _MAGIC or kind not in (TREE, BATCH) or length > _MAX_FRAME:
                raise JournalDamage(f"{path}: no frame at byte {offset}")
            if start + length > size:
                return  # torn at the end
            payload = file.read(length)
            if zlib.crc32(payload) != checksum:
                if start + length >= size:
                    return  # the last frame, torn
                raise JournalDamage(f"{path}: frame at byte {offset} fails its checksum")
            yield Frame(kind, path, start, length), payload
            offset = start + length


class JournalWriter:
    """Appends frames to one journal file, unbuffered.

    After a failed write the file is cut back to its last whole frame before the next
    write, so a failure (a full disk) never leaves garbage between frames.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._size = os.fstat(self._fd).st_size
        self._torn = False

    def append(self, frames: list[bytes]) -> list[int]:
        """Write ``frames`` to the disk: then they survive a kill -9 and a power loss, and a
        process on another host reads them (a shared filesystem's client may hold written
        data until a sync: a recovery there would miss it).

        Returns the offset of each frame's payload. After an error nothing counts as written.
        """
        if self._torn:
            os.ftruncate(self._fd, self._size)
            self._torn = False
        offsets, position = [], self._size
        for frame in frames:
            offsets.append(position + _HEADER.size)
            position += len(frame)
        try:
            for frame in frames:  # one at a time: joining them first would copy a whole flush
                data = memoryview(frame)
                while data:
                    data = data[os.write(self._fd, data):]
            os.fsync(self._fd)
        except BaseException:
            self._torn = True
            raise
        self._size = position
        return offsets

    def close(self) -> None:
        """Close the file."""
        os.close(self._fd)
