"""Append-only Arrow IPC stream files that survive a kill -9.

Each recorder of a running run appends its batches to a segment file. A crash can leave a
torn batch at the end of a file; :func:`read_segment` returns every complete batch before
it, so what was flushed is always a clean prefix.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa


class SegmentWriter:
    """Appends batches of one schema to one segment file (buffered until :meth:`flush`)."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path = path
        self.schema = schema
        self._file = path.open("wb")
        self._stream = pa.ipc.new_stream(self._file, schema)

    def write(self, batch: pa.RecordBatch) -> None:
        """Append one batch (its schema must be this segment's)."""
        self._stream.write_batch(batch)

    def flush(self) -> None:
        """Hand the buffered bytes to the operating system: they now survive a kill -9."""
        self._file.flush()

    def close(self) -> None:
        """End the stream and close the file."""
        self._stream.close()
        self._file.close()


def read_segment(path: Path) -> Iterator[pa.RecordBatch]:
    """Every complete batch of a segment file, stopping quietly at a torn end."""
    try:
        with path.open("rb") as file:
            reader = pa.ipc.open_stream(file)
            while True:
                try:
                    yield reader.read_next_batch()
                except StopIteration:
                    return
    except (pa.ArrowInvalid, OSError, EOFError):
        return
