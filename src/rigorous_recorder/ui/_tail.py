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
_KEPT_CURVES = 8  # curves of one running run kept growing (each y and x asked for)


def tail_key(info: dict[str, Any]) -> tuple[Any, ...]:
    """What a tail depends on besides the journal's growth: a compaction changes it."""
    return info["id"], info.get("records"), info.get("compacted_through", 0), info.get("session")


class RunningTail:
    """The records a running run has flushed so far, read a little more at each :meth:`update`.

    It keeps the values of the columns some curve asked for (a new column means reading the
    run once more from its start), and the names of every numeric and time column seen.
    """

    def __init__(self, folder: RunFolder, info: dict[str, Any]) -> None:
        self.key = tail_key(info)
        #: The keys of numeric values (seen as float64) and of timestamps (as seconds since the epoch).
        self.numeric: dict[str, None] = {}
        self.times: dict[str, None] = {}
        #: Bytes of journal decoded so far, all reads together.
        self.decoded_bytes = 0
        self._folder = folder
        self._info = info
        self._wanted: frozenset[str] = frozenset()
        self._restart()

    def _restart(self) -> None:
        """Read the run from its start."""
        self.entries: dict[int, dict[str, Any]] = {}
        #: Records seen so far, from every recorder.
        self.rows = 0
        self._chunks: list[Chunk] = []
        self._read_up_to: dict[Path, int] = {}
        self._curves: dict[tuple[str, str], tuple[int, int, Curve]] = {}
        if self._info.get("records"):  # a resumed run: its earlier sessions
            nodes = list(self._folder.compacted_nodes(self._info).values())
            self.entries.update((node.id, node.entry()) for node in nodes)
            for batch in tagged_batches(nodes):
                self._add(batch)
        self.update(self._info)

    def update(self, info: dict[str, Any]) -> None:
        """Decode the frames flushed since the last update."""
        self._info = info
        for path in self._folder.journal_paths(info):
            done = self._read_up_to.get(path, 0)
            try:
                if done and path.stat().st_size == done:
                    continue  # nothing flushed to it since: not even read again
                for frame, payload in read_journal(path, start=done):
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
        y_key, x_key = parse(y)[0], parse(x)[0] if x else None
        wanted = {y_key} if x_key is None else {y_key, x_key}
        if not wanted <= self._wanted:
            self._wanted |= wanted
            self._restart()
        spec = (y, x)
        used, points, curve = self._curves.pop(spec, (0, 0, Curve.empty()))
        for chunk in self._chunks[used:]:
            if y_key not in chunk or (x_key is not None and x_key not in chunk):
                continue
            more = Curve.of(chunk[x_key] if x_key is not None else None, chunk[y_key], first_index=points)
            points += len(more.y)
            curve = curve.extended(more)
        self._curves[spec] = (len(self._chunks), points, curve)
        if len(self._curves) > _KEPT_CURVES:
            del self._curves[next(iter(self._curves))]  # the least recently drawn
        return curve

    def _add(self, batch: pa.RecordBatch) -> None:
        self.rows += batch.num_rows
        chunk: Chunk = {}
        for field, column in zip(batch.schema, batch.columns):
            if field.name == RECORDER_COLUMN:
                continue
            kind = field.type
            if pa.types.is_timestamp(kind):
                self.times[field.name] = None
            elif pa.types.is_integer(kind) or pa.types.is_floating(kind):
                self.numeric[field.name] = None
            if field.name in self._wanted and (values := numbers(column)) is not None:
                chunk[field.name] = values
        self._chunks.append(chunk)

    def names(self) -> list[str]:
        """The view names of the numeric keys seen so far."""
        return [escape(key) for key in self.numeric]
