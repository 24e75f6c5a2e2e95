"""A running run as the dashboard follows it: only what was flushed since the last look is read.

A running run's records are its journal (plus, for a resumed run, the records file of its
earlier sessions). :class:`RunningTail` remembers how far it decoded each journal file and
decodes only the frames after that point; it keeps the numeric and time columns of the
records it has seen (float64 arrays, one chunk per batch) and each curve it has drawn, which
grows by the new chunks instead of being read again. The views of the stopped runs are never
rebuilt for a running run's news.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from .._naming import escape, parse
from ..store.journal import BATCH, TREE, JournalDamage, decode_batch, read_journal
from ..store.layout import EXPERIMENT_NODE, RECORDER_COLUMN
from ..store.run_folder import RunFolder
from ..store.tree_file import tagged_batches
from .._values import from_json
from ._curves import Curve, numbers

#: The key a record's wall-clock time goes under (seconds since the epoch): x = wall time.
WALL_TIME = "wall_time"

Chunk = dict[str, np.ndarray]


def tail_key(info: dict[str, Any]) -> tuple[Any, ...]:
    """What a tail depends on besides the journal's growth: a compaction changes it."""
    return info["id"], info.get("records"), info.get("compacted_through", 0), info.get("session")


class RunningTail:
    """The records a running run has flushed so far, read a little more at each :meth:`update`."""

    def __init__(self, folder: RunFolder, info: dict[str, Any]) -> None:
        self.key = tail_key(info)
        self.start_time = info.get("experiment_start_time")
        self.entries: dict[int, dict[str, Any]] = {}
        #: Records seen so far, from every recorder.
        self.rows = 0
        #: The keys of numeric values (seen as float64) and of timestamps (as seconds since the epoch).
        self.numeric: dict[str, None] = {}
        self.times: dict[str, None] = {}
        #: Bytes of journal decoded so far (what the next update skips).
        self.decoded_bytes = 0
        self._folder = folder
        self._chunks: list[Chunk] = []
        self._read_up_to: dict[Path, int] = {}
        self._curves: dict[tuple[Any, ...], tuple[int, int, Curve]] = {}
        if info.get("records"):  # a resumed run: its earlier sessions, read once
            nodes = list(folder.compacted_nodes(info).values())
            self.entries.update((node.id, node.entry()) for node in nodes)
            for batch in tagged_batches(nodes):
                self._add(batch)
        self.update(info)

    def update(self, info: dict[str, Any]) -> None:
        """Decode the frames flushed since the last update."""
        for path in self._folder.journal_paths(info):
            done = self._read_up_to.get(path, 0)
            try:
                for frame, payload in read_journal(path):
                    if frame.offset < done:
                        continue
                    if frame.kind == BATCH:
                        self._add(decode_batch(payload))
                    elif frame.kind == TREE:
                        self.entries.update((entry["id"], entry) for entry in from_json(payload.decode("utf-8")))
                    self.decoded_bytes += frame.length
                    self._read_up_to[path] = frame.offset + frame.length
            except (JournalDamage, OSError):
                continue  # the frames before the damage are kept, as a reader of the run keeps them

    @property
    def experiment_info(self) -> dict[str, Any]:
        """The run's experiment info (its experiment recorder's local data)."""
        return (self.entries.get(EXPERIMENT_NODE) or {}).get("local_data", {})

    @property
    def time_column(self) -> str | None:
        """The column giving each record's wall-clock time: ``wall_time``, else a timestamp column."""
        if WALL_TIME in self.numeric:
            return escape(WALL_TIME)
        return next((escape(key) for key in self.times), None)

    def curve(self, y: str, x: str) -> Curve:
        """``y`` against ``x`` (a column name; "" for the records' order; a timestamp column's
        values are seconds since the epoch), grown by the records flushed since the last call."""
        spec = (y, x)
        used, points, curve = self._curves.get(spec, (0, 0, Curve.empty()))
        y_key, x_key = parse(y)[0], parse(x)[0] if x else None
        for chunk in self._chunks[used:]:
            if y_key not in chunk or (x_key is not None and x_key not in chunk):
                continue
            more = Curve.of(chunk[x_key] if x_key is not None else None, chunk[y_key], first_index=points)
            points += len(more.y)
            curve = curve.extended(more)
        self._curves[spec] = (len(self._chunks), points, curve)
        return curve

    def _add(self, batch: pa.RecordBatch) -> None:
        self.rows += batch.num_rows
        chunk: Chunk = {}
        for field, column in zip(batch.schema, batch.columns):
            values = numbers(column) if field.name != RECORDER_COLUMN else None
            if values is not None:
                chunk[field.name] = values
                (self.times if pa.types.is_timestamp(field.type) else self.numeric)[field.name] = None
        self._chunks.append(chunk)

    def names(self) -> list[str]:
        """The view names of the numeric keys seen so far."""
        return [escape(key) for key in self.numeric]
