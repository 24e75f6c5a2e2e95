"""RunStore: where the recorders of a running experiment send their batches.

Each recorder appends to its own segment files; a daemon thread seals pending rows and
flushes every ``flush_interval`` seconds, under the store's lock, which every push of
the run's recorders also holds. What a flush wrote survives a kill -9.
"""

from __future__ import annotations

import sys
import threading
import traceback
from collections.abc import Callable, Iterable
from itertools import chain
from pathlib import Path

import pyarrow as pa

from ..errors import RecorderError
from ..recorder import Recorder
from .run_folder import BOOKKEEPING_ID, RunFolder
from .segments import SegmentWriter, read_segment

Batches = Callable[[], Iterable[pa.RecordBatch]]


class RunStore:
    """The RecordStore of one experiment run (see ``Recorder``'s ``RecordStore`` protocol)."""

    def __init__(
        self,
        folder: RunFolder,
        session: int,
        flush_interval: float,
        known: dict[int, Recorder] | None = None,
        earlier: dict[int, Batches] | None = None,
    ) -> None:
        self.lock = threading.RLock()
        self.root: Recorder | None = None
        self._folder = folder
        self._session = session
        self._recorders: dict[int, Recorder] = dict(known or {})  # a resumed run's recorders
        self._earlier = earlier or {}  # their batches from before this session
        self._next_id = max(self._recorders, default=-1) + 1
        self._writers: dict[int, SegmentWriter] = {}
        self._segments: dict[int, list[Path]] = {}
        self._pending: set[Recorder] = set()
        self._tree_changed = True
        self._closed = False
        self._stop = threading.Event()
        self._flusher = threading.Thread(
            target=self._flush_periodically, args=(flush_interval,), name=f"rigorous-recorder-{folder.id}", daemon=True
        )
        self._flusher.start()

    # -- the RecordStore protocol --------------------------------------------------------

    def adopt(self, recorder: Recorder) -> None:
        """Give ``recorder`` an id in this run (unless it has one from an earlier session)."""
        self._check_open()
        if self._recorders.get(recorder.store_id) is not recorder:
            recorder.store_id = self._next_id
            self._next_id += 1
            self._recorders[recorder.store_id] = recorder
            self._tree_changed = True

    def write(self, recorder: Recorder, batch: pa.RecordBatch) -> None:
        """Append ``batch`` to the recorder's current segment (a new one if the schema changed)."""
        self._check_open()
        recorder_id = recorder.store_id
        writer = self._writers.get(recorder_id)
        if writer is None or not writer.schema.equals(batch.schema, check_metadata=True):  # JSON is metadata
            if writer is not None:
                writer.close()
            paths = self._segments.setdefault(recorder_id, [])
            path = self._folder.segments / f"{recorder_id}.{self._session}.{len(paths)}.arrow"
            path.parent.mkdir(exist_ok=True)
            writer = self._writers[recorder_id] = SegmentWriter(path, batch.schema)
            paths.append(path)
        writer.write(batch)

    def batches(self, recorder: Recorder) -> list[pa.RecordBatch]:
        """Every batch of ``recorder`` so far: earlier sessions', then this session's segments."""
        with self.lock:
            for writer in self._writers.values():
                writer.flush()
            earlier = self._earlier.get(recorder.store_id)
            paths = self._segments.get(recorder.store_id, [])
            return list(chain(earlier() if earlier else (), *(read_segment(path) for path in paths)))

    def local_data_changed(self, recorder: Recorder) -> None:
        """Rewrite the tree at the next flush."""
        self._tree_changed = True

    def pending(self, recorder: Recorder) -> None:
        """Seal and write ``recorder``'s pending rows at the next flush."""
        self._check_open()
        self._pending.add(recorder)

    def flush(self) -> None:
        """Write every pending row and the tree; after this, a kill -9 loses nothing so far."""
        with self.lock:
            if self._closed:
                return
            pending, self._pending = self._pending, set()
            for recorder in pending:
                recorder._seal()
            for writer in self._writers.values():
                writer.flush()
            if self._tree_changed:
                self._folder.write_tree(self.tree())
                self._tree_changed = False

    # -- lifecycle -------------------------------------------------------------------------

    def take(self, root: Recorder) -> None:
        """Make ``root``'s tree this run's: ids in depth-first order (the root is 0)."""
        self.root = root
        for recorder in root._subtree():
            recorder._attach_store(self)

    def tree(self) -> list[dict]:
        """The run's recorder tree as stored in recorders.json."""
        assert self.root is not None
        return [
            {
                "id": recorder.store_id,
                "parent": None if recorder.parent is None else recorder.parent.store_id,
                "local_data": {} if recorder.store_id == BOOKKEEPING_ID else dict(recorder.local_data),
            }
            for recorder in self.root._subtree()
        ]

    def close(self) -> None:
        """Flush, stop the flusher and close every segment; later writes raise."""
        self._stop.set()
        if self._flusher is not threading.current_thread():
            self._flusher.join()
        with self.lock:
            self.flush()
            for writer in self._writers.values():
                writer.close()
            self._writers.clear()
            self._closed = True

    def read_from(self, earlier: dict[int, Batches]) -> None:
        """After compaction: serve reads from the compacted file instead of the segments."""
        with self.lock:
            self._earlier = earlier
            self._segments.clear()

    def _check_open(self) -> None:
        if self._closed:
            raise RecorderError(
                f"experiment run {self._folder.id} is finished: "
                "reopen it with collection.resume(run_id) to record more"
            )

    def _flush_periodically(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.flush()
            except Exception:  # keep flushing later; the recording thread is not disturbed
                traceback.print_exc(file=sys.stderr)
