"""Recorder: a node of the recorder tree, and the rows it commits.

A recorder holds ``local_data`` (a dict that every record below it sees) and commits
records. ``push()`` commits one record; ``add()`` stages values that the next ``commit()``
turns into a record. Committed values go to per-key Python lists, which become compact
Arrow batches every few thousand rows (see ``_columns``).

A recorder standing alone keeps its batches in memory. Inside an ExperimentCollection the
run's store receives them (and writes them to disk); pushes then hold the store's lock, so
recorders of a collection may be used from several threads.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol

import pyarrow as pa

from ._columns import BATCH_ROWS, build_batch, keys_widened_to_float, to_python_columns
from ._hotpath import append_plain_row
from ._values import normalize_mapping
from .errors import RecorderTreeError
from .record import Record, RecordChunk, RecordSequence

if TYPE_CHECKING:
    import threading
    from typing import Self

    from .live import LiveWriter


class RecordStore(Protocol):
    """Where the sealed batches of a tree's recorders go (an ExperimentCollection's run)."""

    lock: threading.RLock

    def adopt(self, recorder: Recorder) -> None:
        """Take ``recorder`` (newly attached below the store's root) into the store."""

    def write(self, recorder: Recorder, batch: pa.RecordBatch) -> None:
        """Keep ``batch``, the next rows of ``recorder``."""

    def batches(self, recorder: Recorder) -> list[pa.RecordBatch]:
        """Every batch kept for ``recorder`` so far, in order."""

    def local_data_changed(self, recorder: Recorder) -> None:
        """Note that the local data of ``recorder`` changed."""

    def pending(self, recorder: Recorder) -> None:
        """Note that ``recorder`` holds rows that are not yet written."""

    def flush(self) -> None:
        """Make every batch written so far survive a crash of this process."""


class Recorder:
    """A node of the recorder tree: local data shared by its records, and the records.

    >>> experiment = Recorder(experiment=1)
    >>> episode = Recorder(episode=1).set_parent(experiment)
    >>> episode.push(x=1, y=1).push(x=2, y=2)[1]
    {'x': 2, 'y': 2, 'episode': 1, 'experiment': 1}
    >>> experiment["note"] = "set later"
    >>> episode[0]["note"]
    'set later'
    """

    __slots__ = (
        "__weakref__",
        "_batches",
        "_bare_rows",
        "_children",
        "_kinds_of",
        "_lineage",
        "_live",
        "_local",
        "_parent",
        "_pending",
        "_plain",
        "_sealed_rows",
        "_staged",
        "_store",
        "store_id",
    )

    def __init__(self, data: Mapping[str, Any] | None = None, /, **kwargs: Any) -> None:
        self._local: dict[str, Any] = normalize_mapping(data, kwargs)
        self._parent: Recorder | None = None
        # the local data dicts of this recorder and each ancestor, nearest first (the dicts
        # are only ever updated in place, so this changes only when the tree does)
        self._lineage: tuple[dict[str, Any], ...] = (self._local,)
        self._children: list[Recorder] = []
        self._pending: dict[str, list[Any]] = {}
        self._bare_rows = 0  # rows committed with no value at all while _pending is empty
        self._staged: dict[str, Any] | None = None
        self._batches: list[pa.RecordBatch] = []
        self._sealed_rows = 0
        self._kinds_of: tuple[dict[str, list[Any]], dict[str, tuple[int, set[type]]]] | None = None
        self._store: RecordStore | None = None
        self._live: list[LiveWriter] = []
        self._plain = True  # nothing staged, no store, no live file: push() may take the fast path
        self.store_id: int | None = None  # the recorder's id inside its store, if any

    # -- the tree ------------------------------------------------------------------------

    @property
    def parent(self) -> Recorder | None:
        """The recorder above this one, or None for a root."""
        return self._parent

    @property
    def children(self) -> tuple[Recorder, ...]:
        """The recorders whose parent this one is, in the order they were attached."""
        return tuple(self._children)

    def set_parent(self, parent: Recorder | None) -> Self:
        """Hang this recorder below ``parent`` (None detaches it); returns this recorder."""
        if parent is not None:
            if not isinstance(parent, Recorder):
                raise RecorderTreeError(f"a parent must be a Recorder, got {type(parent).__name__}")
            ancestor: Recorder | None = parent
            while ancestor is not None:
                if ancestor is self:
                    raise RecorderTreeError("set_parent would make a recorder its own ancestor")
                ancestor = ancestor._parent
        if self._parent is not None:
            self._parent._children.remove(self)
        self._parent = parent
        for recorder in self._subtree():
            above = recorder._parent
            recorder._lineage = (recorder._local, *above._lineage) if above is not None else (recorder._local,)
        if parent is not None:
            parent._children.append(self)
            if parent._store is not None and self._store is not parent._store:
                for recorder in self._subtree():
                    recorder._attach_store(parent._store)
        return self

    def sub_recorder(self, data: Mapping[str, Any] | None = None, /, **kwargs: Any) -> Recorder:
        """Make a child recorder with the given local data."""
        return Recorder(data, **kwargs).set_parent(self)

    SubRecorder = sub_recorder
    SubRecordKeeper = sub_recorder

    def swap_out(self, old: Recorder, new: Recorder) -> bool:
        """Replace the ancestor ``old`` by ``new`` in this recorder's lineage; True if found."""
        child = self
        while child._parent is not None:
            if child._parent is old:
                child.set_parent(new)
                return True
            child = child._parent
        return False

    def _subtree(self) -> Iterator[Recorder]:
        yield self
        for child in self._children:
            yield from child._subtree()

    def lineage_data(self) -> dict[str, Any]:
        """This recorder's local data merged with every ancestor's (nearest wins)."""
        merged: dict[str, Any] = {}
        for data in self._lineage:
            for key, value in data.items():
                merged.setdefault(key, value)
        return merged

    # -- local data ----------------------------------------------------------------------

    @property
    def local_data(self) -> Mapping[str, Any]:
        """A read-only view of this recorder's own data; write with ``recorder[key] = value``."""
        return MappingProxyType(self._local)

    def __setitem__(self, key: str, value: Any) -> None:
        self.update({key: value})

    def update(self, data: Mapping[str, Any] | None = None, /, **kwargs: Any) -> None:
        """Set several local data values at once; every record, earlier ones too, sees them."""
        self._local.update(normalize_mapping(data, kwargs))
        if self._store is not None:
            self._store.local_data_changed(self)

    def get(self, key: str | int | slice, default: Any = None) -> Any:
        """A local data value (or, with an int, a record), else ``default``."""
        if isinstance(key, str):
            return self._local.get(key, default)
        try:
            return self[key]
        except IndexError:
            return default

    def keys(self):  # noqa: ANN201 - the dict's own view type
        """The keys of the local data."""
        return self._local.keys()

    def values(self):  # noqa: ANN201
        """The values of the local data."""
        return self._local.values()

    def items(self):  # noqa: ANN201
        """The (key, value) pairs of the local data."""
        return self._local.items()

    def __contains__(self, key: object) -> bool:
        return key in self._local

    # -- committing ----------------------------------------------------------------------

    def push(self, data: Mapping[str, Any] | None = None, /, **values: Any) -> Self:
        """Commit one record: the staged values plus ``data`` and ``values``; returns self.

        >>> Recorder(model="m").push(loss=0.5)[0]["model"]
        'm'
        """
        if data is None and self._plain:
            # Fast path: plain values for exactly the existing columns, nothing else to do.
            rows = append_plain_row(self._pending, values)
            if rows:
                if rows >= BATCH_ROWS:
                    self._seal()
                return self
        self.add(data, **values)
        self.commit()
        return self

    def add(self, data: Mapping[str, Any] | None = None, /, **values: Any) -> Self:
        """Stage values for the next ``commit()`` (a later value for the same key wins)."""
        staged = normalize_mapping(data, values)  # raises before anything is changed
        if self._staged is None:
            self._staged = staged
            self._plain = False
        else:
            self._staged.update(staged)
        return self

    @property
    def staged(self) -> Mapping[str, Any]:
        """The values added since the last commit."""
        return MappingProxyType(self._staged or {})

    def commit(self) -> Record:
        """Commit the staged values as one record and return it."""
        values = self._staged or {}
        self._staged = None
        store = self._store
        if store is None:
            record = self._append_row(values)
            self._plain = not self._live
        else:
            with store.lock:
                store.pending(self)  # raises first if the run is finished: nothing half-committed
                record = self._append_row(values)
        for writer in self._live:
            writer.write(record)
        return record

    def _append_row(self, values: dict[str, Any]) -> Record:
        pending = self._pending
        index = append_plain_row(pending, values) - 1  # the new row's index; -1 if declined
        if index < 0:
            index = self._pending_rows()
            for key in values:
                if key not in pending:
                    pending[key] = [None] * index
            if pending:
                for key, column in pending.items():
                    column.append(values.get(key))
            else:
                self._bare_rows += 1
        record = Record(pending, index, self)
        if index + 1 >= BATCH_ROWS:
            self._seal()
        return record

    def _pending_rows(self) -> int:
        for column in self._pending.values():
            return len(column)
        return self._bare_rows

    def _seal(self) -> None:
        """Turn the pending rows into one Arrow batch (written to the store, if any)."""
        rows = self._pending_rows()
        if not rows:
            return
        batch = build_batch(self._pending, rows)
        self._pending, self._bare_rows = {}, 0
        self._sealed_rows += rows
        if self._store is None:
            self._batches.append(batch)
        else:
            self._store.write(self, batch)

    def flush(self) -> Self:
        """Seal pending rows; inside a collection, also make them survive a crash."""
        if self._store is None:
            self._seal()
        else:
            with self._store.lock:
                self._seal()
                self._store.flush()
        return self

    def _attach_store(self, store: RecordStore) -> None:
        """Move this recorder's rows and future rows into ``store``."""
        with store.lock:
            self._store = store
            self._plain = False
            store.adopt(self)
            batches, self._batches = self._batches, []
            for batch in batches:
                store.write(self, batch)
            if self._pending_rows():
                store.pending(self)

    # -- reading records -----------------------------------------------------------------

    def _sealed_batches(self) -> list[pa.RecordBatch]:
        """Every row of this recorder as Arrow batches (pending rows are sealed first)."""
        if self._store is None:
            self._seal()
            return list(self._batches)
        with self._store.lock:
            self._seal()
            return self._store.batches(self)

    def _chunks(self) -> list[RecordChunk]:
        if self._store is None:
            return self._chunks_of(self._batches)
        with self._store.lock:  # the flusher thread may seal pending rows meanwhile
            return self._chunks_of(self._store.batches(self))

    def _pending_kinds(self) -> dict[str, set[type]]:
        """The types of each key's pending values, scanning only rows added since last asked."""
        if self._kinds_of is None or self._kinds_of[0] is not self._pending:
            self._kinds_of = (self._pending, {})
        kinds = self._kinds_of[1]
        for key, values in self._pending.items():
            scanned, found = kinds.get(key, (0, set()))
            if scanned < len(values):
                kinds[key] = (len(values), found | set(map(type, values[scanned:])))
        return {key: found for key, (_, found) in kinds.items()}

    def _chunks_of(self, sealed: list[pa.RecordBatch]) -> list[RecordChunk]:
        """Chunks of the ``sealed`` batches, then of the pending rows."""
        as_float = keys_widened_to_float((batch.schema for batch in sealed), self._pending_kinds())
        chunks = [RecordChunk(self, batch.num_rows, _loader(batch, as_float)) for batch in sealed]
        pending = self._pending
        if as_float:
            pending = {key: [float(v) if key in as_float and type(v) is int else v for v in values] for key, values in pending.items()}
        chunks.append(RecordChunk(self, self._pending_rows(), lambda: pending))
        return chunks

    @property
    def records(self) -> RecordSequence:
        """This recorder's own records (not its children's)."""
        return RecordSequence(self._chunks())

    @property
    def all_records(self) -> RecordSequence:
        """This recorder's records, then each descendant's, depth first."""
        return RecordSequence([chunk for recorder in self._subtree() for chunk in recorder._chunks()])

    def __len__(self) -> int:
        return self._sealed_rows + self._pending_rows()

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records)

    def __getitem__(self, key: str | int | slice) -> Any:
        if isinstance(key, str):
            return self._local.get(key)
        return self.records[key]

    def __repr__(self) -> str:
        data = ", ".join(f"{key}={value!r}" for key, value in self._local.items())
        return f"Recorder({data}{', ' if data else ''}records={len(self)}, children={len(self._children)})"

    # -- files ---------------------------------------------------------------------------

    def live_write_to(self, path: str | Path, *, as_yaml: bool = True) -> Self:
        """Append every record committed from now on to a YAML file, flushed at each commit.

        The file starts with ``parent_data`` (this recorder's lineage data) and parses with
        ``yaml.safe_load`` at any moment, while the run goes on too.
        """
        from .live import LiveWriter

        if not as_yaml:
            raise ValueError("live_write_to writes YAML only: call it with as_yaml=True")
        self._live.append(LiveWriter(path, self.lineage_data()))
        self._plain = False
        return self

    def save_to(self, path: str | Path) -> Self:
        """Save this recorder and its whole subtree to one Parquet file (any extension)."""
        from ._tree_file import save_tree

        save_tree(self, Path(path))
        return self

    @classmethod
    def load_from(cls, path: str | Path) -> Recorder:
        """Load a tree written by ``save_to``; never unpickles."""
        from ._tree_file import load_tree

        return load_tree(Path(path))


RecordKeeper = Recorder


def _loader(batch: pa.RecordBatch, as_float: frozenset[str]):  # noqa: ANN202
    return lambda: to_python_columns(batch, as_float)
