"""The storage seam: where a recorder tree's sealed batches go.

Every recorder has a store. A recorder standing alone (or a tree built by hand) keeps its
batches in a :class:`MemoryStore`; the recorders of a collection's run share that run's
``RunStore``, which writes them to disk. Hanging a recorder below a parent with another
store moves it, and its batches, into the parent's store.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

    from ..recorder import Recorder


class RecordStore(ABC):
    """Keeps the sealed record batches of the recorders of one tree.

    ``lock`` guards the recorders' unsealed rows as well as the store: a recorder holds it
    while it commits, and a store holds it while it takes rows away to write them.
    """

    #: The error that stops this store from taking rows (a failed write), or None.
    failure: Exception | None = None

    #: True when ``push()`` and ``commit()`` may append plain values without taking ``lock``: a
    #: store whose flusher thread takes unsealed rows away may allow it only where that append
    #: and the read of the recorder's columns are one step (the compiled hot path). Such an
    #: append needs no ``pending()`` notice: it only appends to columns that exist, and a store
    #: that takes a recorder's rows leaves it none, so its next row comes through ``pending()``.
    unlocked_appends = True

    def __init__(self) -> None:
        self.lock = threading.RLock()

    @abstractmethod
    def adopt(self, recorder: Recorder) -> int:
        """Take ``recorder`` in; returns how many of its rows the store already holds."""

    @abstractmethod
    def release(self, recorder: Recorder) -> list[pa.RecordBatch]:
        """Let ``recorder`` go (to another store); returns its batches."""

    @abstractmethod
    def write(self, recorder: Recorder, batch: pa.RecordBatch) -> None:
        """Keep ``batch``, the next sealed rows of ``recorder``."""

    def check_detach(self, recorder: Recorder) -> None:  # noqa: B027 - a memory tree may split
        """Raise if ``recorder`` may not leave its tree (``set_parent(None)``)."""

    def pending(self, recorder: Recorder) -> None:  # noqa: B027 - most stores need no notice
        """Note that ``recorder`` holds unsealed rows; raises if the store takes no more."""

    def local_data_changed(self, recorder: Recorder) -> None:  # noqa: B027
        """Note that the local data of ``recorder`` changed."""

    @abstractmethod
    def read(self, recorder: Recorder) -> tuple[list[pa.RecordBatch], dict[str, list[Any]], int]:
        """One consistent view of ``recorder``'s rows: its batches, and its unsealed columns
        with their row count (rows never appear in both)."""

    def flush(self) -> None:  # noqa: B027
        """Make every batch written so far survive a crash of this process."""

    def relieve(self) -> None:  # noqa: B027 - a memory store keeps everything by design
        """Called after a recorder sealed a batch, without the lock: a store whose writer fell
        behind writes now, in the recording thread (back-pressure instead of unbounded memory)."""


class MemoryStore(RecordStore):
    """Keeps batches in memory: the store of recorders outside any collection."""

    def __init__(self) -> None:
        super().__init__()
        self._batches: dict[Recorder, list[pa.RecordBatch]] = {}

    def adopt(self, recorder: Recorder) -> int:
        """Take ``recorder`` in (it holds nothing here yet)."""
        self._batches.setdefault(recorder, [])
        return 0

    def release(self, recorder: Recorder) -> list[pa.RecordBatch]:
        """Let ``recorder`` go; returns its batches."""
        return self._batches.pop(recorder, [])

    def write(self, recorder: Recorder, batch: pa.RecordBatch) -> None:
        """Keep ``batch`` in memory."""
        self._batches[recorder].append(batch)

    def read(self, recorder: Recorder) -> tuple[list[pa.RecordBatch], dict[str, list[Any]], int]:
        """The recorder's batches and unsealed rows."""
        with self.lock:
            return list(self._batches.get(recorder, ())), *recorder.unsealed_rows()
