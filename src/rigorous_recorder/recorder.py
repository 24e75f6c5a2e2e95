"""Recorder: a node of the recorder tree, and the rows it commits.

A recorder holds ``local_data`` (a dict that every record below it sees) and commits
records. ``push()`` commits one record; ``add()`` stages values that the next ``commit()``
turns into a record. Committed values go to per-key Python lists, which become compact
Arrow batches every few thousand rows, or sooner for sparse rows (see ``_columns``).

Every recorder has a store (``store.base``): a recorder standing alone keeps its batches in
a ``MemoryStore``; inside an ExperimentCollection the run's ``RunStore`` receives them and
writes them to disk. A commit of plain values for the existing columns appends them in one
step no other thread can split (the compiled loops of ``_hotpath``); other commits hold the
store's lock. So recorders of a collection may be used from several threads.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from ._hotpath import append_plain_row, commit_staged_row, compile_methods, stage_plain_values
from ._values import normalize_mapping
from .errors import RecorderTreeError
from .record import Record, RecordChunk, RecordSequence
from .store.base import MemoryStore, RecordStore

if TYPE_CHECKING:
    from typing import Self

    import pyarrow as pa

    from .live import LiveWriter
    from .store.tree_file import TreeNode


#: Rows a recorder buffers as Python lists before they become an Arrow batch. (The Arrow side,
#: ``_columns``, loads pyarrow: it is imported at the first batch, not with the package.)
BATCH_ROWS = 4096
#: Unsealed rows that would take this many cells (rows x keys, each 8 bytes or more once
#: sealed) per value they hold are sealed early, once they hold ``SPARSE_MIN_CELLS``: sparse
#: rows (many keys, a few in each) become small batches holding only their own keys, so
#: memory grows with the values recorded, not with keys x records.
SPARSE_CELLS_PER_VALUE = 16
SPARSE_MIN_CELLS = 1024


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
        "_children",
        "_direct",
        "_kinds_of",
        "_lineage",
        "_live",
        "_local",
        "_parent",
        "_pending",
        "_ragged",
        "_rows",
        "_fast",
        "_sealed_rows",
        "_staged",
        "_store",
        "_values",
        "node_id",
    )

    def __init__(self, data: Mapping[str, Any] | None = None, /, **kwargs: Any) -> None:
        self._local: dict[str, Any] = normalize_mapping(data, kwargs)
        self._parent: Recorder | None = None
        # the local data dicts of this recorder and each ancestor, nearest first (the dicts
        # are only ever updated in place, so this changes only when the tree does)
        self._lineage: tuple[dict[str, Any], ...] = (self._local,)
        self._children: list[Recorder] = []
        self._pending: dict[str, list[Any]] = {}
        # Unsealed columns may be ragged: a row without a key leaves that key's list short (padded
        # with None when the key comes back, or at sealing), so sparse keys cost nothing per row.
        # _rows counts the unsealed rows while they are ragged or hold no column at all.
        self._ragged = False
        self._rows = 0
        self._values = 0  # the values in the unsealed rows, counted while they are ragged
        self._staged: dict[str, Any] | None = None
        self._sealed_rows = 0
        self._kinds_of: tuple[dict[str, list[Any]], dict[str, tuple[int, set[type]]]] | None = None
        self._live: list[LiveWriter] = []
        # commit() may append plain values without the store's lock: the store allows it (see
        # store.base), no live file, columns not ragged; push() may, too, when nothing is staged
        self._direct = True
        self._fast = True
        self.node_id: int | None = None  # the recorder's id inside its run, for a run's recorders
        self._store: RecordStore = MemoryStore()
        self._store.adopt(self)

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
        if parent is None and self._parent is not None:
            self._store.check_detach(self)
        if self._parent is not None:
            self._parent._children.remove(self)
        self._parent = parent
        for recorder in self._subtree():
            above = recorder._parent
            recorder._lineage = (recorder._local, *above._lineage) if above is not None else (recorder._local,)
        if parent is not None:
            parent._children.append(self)
            if self._store is not parent._store:
                for recorder in self._subtree():
                    recorder.move_to(parent._store)
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
    def local_data(self) -> LocalData:
        """This recorder's own data, a dict-like view; writing to it is ``recorder.update()``.

        >>> recorder = Recorder(seed=1)
        >>> recorder.local_data["lr"] = 0.1
        >>> dict(recorder.local_data)
        {'seed': 1, 'lr': 0.1}
        """
        return LocalData(self)

    def __setitem__(self, key: str, value: Any) -> None:
        self.update({key: value})

    def update(self, data: Mapping[str, Any] | None = None, /, **kwargs: Any) -> None:
        """Set several local data values at once; every record, earlier ones too, sees them."""
        data = normalize_mapping(data, kwargs)
        with self._store.lock:
            self._local.update(data)
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
        if data is None and self._fast:
            # Fast path: plain values for exactly the existing columns, nothing else to do.
            rows = append_plain_row(self, values)  # reads self._pending: see store.base
            if rows:
                if rows >= BATCH_ROWS:
                    with self._store.lock:
                        self._seal()
                    self._store.relieve()
                return self
        self.add(data, **values)
        self.commit()
        return self

    def add(self, data: Mapping[str, Any] | None = None, /, **values: Any) -> Self:
        """Stage values for the next ``commit()`` (a later value for the same key wins)."""
        if not stage_plain_values(self, data, values):  # plain values are staged as they are
            staged = normalize_mapping(data, values)  # raises before anything is changed
            if self._store.failure is not None:
                raise self._store.failure
            if self._staged is None:
                self._staged = staged
                self._fast = False
            else:
                self._staged.update(staged)
        return self

    @property
    def staged(self) -> Mapping[str, Any]:
        """The values added since the last commit."""
        return MappingProxyType(self._staged or {})

    def commit(self, *, additional_info: Mapping[str, Any] | None = None) -> Record:
        """Commit the staged values (and ``additional_info``, as 1.x took it) as one record.

        >>> recorder = Recorder()
        >>> recorder.add(x=1).commit(additional_info={"y": 2})
        {'x': 1, 'y': 2}
        """
        if additional_info is None:
            # Fast path: plain values for exactly the existing columns, appended without the lock
            record = commit_staged_row(self, Record)  # reads self._pending: see store.base
            if record is not None:
                if record._index + 1 >= BATCH_ROWS:
                    with self._store.lock:
                        self._seal()
                    self._store.relieve()
                return record
        else:
            self.add(additional_info)
        values = self._staged or {}
        store = self._store
        with store.lock:
            store.pending(self)  # raises first if the store takes no more rows: nothing is changed
            self._staged = None
            record = self._append_row(values)
        if not self._pending:  # the commit sealed a batch (or there is nothing at all)
            store.relieve()
        self._direct = self._fast = store.unlocked_appends and not self._live and not self._ragged
        for writer in self._live:
            writer.write(record)
        return record

    def _append_row(self, values: dict[str, Any]) -> Record:
        pending = self._pending
        index = -1 if self._ragged else append_plain_row(pending, values) - 1  # -1: declined
        if index < 0:
            index = self._pending_rows()
            if not self._ragged:
                self._values = index * len(pending)  # square so far: a value in every cell
            for key, value in values.items():
                column = pending.get(key)
                if column is None:
                    pending[key] = column = [None] * index
                elif len(column) < index:
                    column.extend([None] * (index - len(column)))
                column.append(value)
            self._values += len(values)
            self._ragged = len(values) < len(pending)
            if self._ragged or not pending:
                self._rows = index + 1
        record = Record(pending, index, self)
        if index + 1 >= BATCH_ROWS or self._ragged and self._sparse(index + 1):
            self._seal()
        return record

    def _sparse(self, rows: int) -> bool:
        """True when ``rows`` ragged unsealed rows would make a batch of mostly missing cells."""
        cells = rows * len(self._pending)
        return cells >= SPARSE_MIN_CELLS and cells > SPARSE_CELLS_PER_VALUE * self._values

    def _pending_rows(self) -> int:
        if self._ragged or not self._pending:
            return self._rows
        for column in self._pending.values():
            return len(column)
        return 0

    def _square(self, rows: int) -> None:
        """Pad the short unsealed columns with None to ``rows`` (they are then no longer ragged)."""
        for column in self._pending.values():
            if len(column) < rows:
                column.extend([None] * (rows - len(column)))
        self._ragged = False

    def _seal(self) -> None:
        """Turn the unsealed rows into one Arrow batch for the store (called under its lock)."""
        columns, rows = self.take_unsealed_rows()
        if rows:
            from ._columns import build_batch

            self._store.write(self, build_batch(columns, rows))

    def flush(self) -> Self:
        """Seal unsealed rows; inside a collection, also make every record survive a crash."""
        with self._store.lock:
            self._seal()
        self._store.flush()
        return self

    # -- what stores call ----------------------------------------------------------------

    @property
    def store(self) -> RecordStore:
        """Where this recorder's sealed batches are kept (see ``store.base``)."""
        return self._store

    def move_to(self, store: RecordStore) -> None:
        """Move this recorder (not its children) and its batches into ``store``."""
        old = self._store
        with old.lock:
            batches = old.release(self)
        with store.lock:
            self._store = store
            self._direct = store.unlocked_appends and not self._live and not self._ragged
            self._fast = self._direct and self._staged is None
            self._sealed_rows += store.adopt(self)
            for batch in batches:
                store.write(self, batch)
            if self._pending_rows():
                store.pending(self)

    def unsealed_rows(self) -> tuple[dict[str, list[Any]], int]:
        """The committed rows not yet sealed into a batch: columns and row count (store lock held).

        A column may be shorter than the row count: the rows past its end do not hold its key.
        """
        return self._pending, self._pending_rows()

    def take_unsealed_rows(self) -> tuple[dict[str, list[Any]], int]:
        """Take the unsealed rows away, to be sealed by the caller (store lock held).

        The columns are never changed afterwards, so records that refer to them stay valid.
        """
        rows = self._rows if self._ragged or not self._pending else None
        if rows is not None:
            self._square(rows)
        columns, self._pending = self._pending, {}  # a push after this appends to the new dict
        if rows is None:  # counted after the swap: an unlocked push just before it is in ``columns``
            rows = len(next(iter(columns.values())))
        self._rows = 0
        self._sealed_rows += rows
        return columns, rows

    # -- reading records -----------------------------------------------------------------

    def _sealed_batches(self) -> list[pa.RecordBatch]:
        """Every row of this recorder as Arrow batches (unsealed rows are sealed first)."""
        with self._store.lock:
            self._seal()
        return self._store.read(self)[0]

    def _chunks(self) -> list[RecordChunk]:
        return self._chunks_of(*self._store.read(self))

    def _pending_kinds(self, pending: dict[str, list[Any]]) -> dict[str, set[type]]:
        """The types of each key's unsealed values, scanning only rows added since last asked."""
        if self._kinds_of is None or self._kinds_of[0] is not pending:
            self._kinds_of = (pending, {})
        kinds = self._kinds_of[1]
        for key, values in pending.items():
            scanned, found = kinds.get(key, (0, set()))
            if scanned < len(values):
                kinds[key] = (len(values), found | set(map(type, values[scanned:])))
        return {key: found for key, (_, found) in kinds.items()}

    def _chunks_of(self, sealed: list[pa.RecordBatch], pending: dict[str, list[Any]], rows: int) -> list[RecordChunk]:
        """Chunks of the ``sealed`` batches, then of the ``rows`` unsealed rows in ``pending``."""
        from ._columns import keys_widened_to_float

        as_float = keys_widened_to_float((batch.schema for batch in sealed), self._pending_kinds(pending))
        chunks = [RecordChunk(self, batch.num_rows, _loader(batch, as_float)) for batch in sealed]
        if as_float:
            pending = {key: [float(v) if key in as_float and type(v) is int else v for v in values] for key, values in pending.items()}
        chunks.append(RecordChunk(self, rows, lambda: pending))
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

    def own_keys(self) -> list[str]:
        """The keys this recorder's own records hold, in the order they first appeared.

        >>> Recorder().push(loss=1.0).push(loss=0.5, lr=0.1).own_keys()
        ['loss', 'lr']
        """
        sealed, pending, _ = self._store.read(self)
        return list(dict.fromkeys([*(name for batch in sealed for name in batch.schema.names), *pending]))

    @property
    def number_of_records(self) -> int:
        """``len(recorder)``, under its 1.x name."""
        return len(self)

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
        self._direct = self._fast = False
        return self

    def save_to(self, path: str | Path) -> Self:
        """Save this recorder and its whole subtree to one Parquet file (any extension)."""
        from .store.tree_file import TreeNode, tagged_batches, write_tree_file

        ancestors = []
        parent = self._parent
        while parent is not None:
            ancestors.append(parent)
            parent = parent._parent
        order = [*reversed(ancestors), *self._subtree()]
        ids = {id(each): number for number, each in enumerate(order)}
        nodes = [
            TreeNode(
                ids[id(each)],
                None if each._parent is None or id(each._parent) not in ids else ids[id(each._parent)],
                dict(each._local),
                # ancestors are saved for their data, not for their own records or other children
                _constant([] if each in ancestors else each._sealed_batches()),
            )
            for each in order
        ]
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        write_tree_file(Path(path), [node.entry() for node in nodes], lambda: tagged_batches(nodes),
                        {"saved": ids[id(self)]})
        return self

    @classmethod
    def load_from(cls, path: str | Path) -> Recorder:
        """Load a tree written by ``save_to``; never unpickles."""
        from .store.tree_file import read_tree_file

        tree, nodes = read_tree_file(Path(path))
        recorders = build_tree(nodes)
        return recorders[tree.get("saved", nodes[0].id if nodes else 0)]


#: add() and commit() as C methods for plain values where the loops are compiled (they call the
#: Python methods above for everything else); the Python methods, by name, either way.
_python_methods = compile_methods(Recorder, Record, BATCH_ROWS)

RecordKeeper = Recorder


class LocalData(MutableMapping[str, Any]):
    """A recorder's local data: reads see its dict, writes go through ``Recorder.update``
    (checked, normalized, and stored with the run)."""

    __slots__ = ("_recorder",)

    def __init__(self, recorder: Recorder) -> None:
        self._recorder = recorder

    def __getitem__(self, key: str) -> Any:
        return self._recorder._local[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._recorder.update({key: value})

    def __delitem__(self, key: str) -> None:
        recorder = self._recorder
        with recorder._store.lock:
            del recorder._local[key]
            recorder._store.local_data_changed(recorder)

    def __iter__(self) -> Iterator[str]:
        return iter(self._recorder._local)

    def __len__(self) -> int:
        return len(self._recorder._local)

    def __repr__(self) -> str:
        return repr(self._recorder._local)


def _loader(batch: pa.RecordBatch, as_float: frozenset[str]):  # noqa: ANN202
    from ._columns import to_python_columns

    return lambda: to_python_columns(batch, as_float)


def build_tree(nodes: Sequence[TreeNode]) -> dict[int, Recorder]:
    """Recorders for stored nodes, by id, linked to their parents, their records in memory."""
    store = MemoryStore()
    recorders: dict[int, Recorder] = {}
    for node in nodes:
        recorder = recorders[node.id] = Recorder(node.local_data)
        recorder.node_id = node.id
        recorder.move_to(store)
        with store.lock:
            for batch in node.batches():
                recorder._sealed_rows += batch.num_rows
                store.write(recorder, batch)
    for node in nodes:
        if node.parent is not None:
            recorders[node.id].set_parent(recorders[node.parent])
    return recorders


def _constant(batches: list[pa.RecordBatch]):  # noqa: ANN202
    return lambda: batches
