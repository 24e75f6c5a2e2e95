"""RunStore: the store of a running experiment, written to the run's journal.

Every recorder of the run sends its rows here. A flush (on a daemon thread, one starting every
``flush_interval`` seconds, or at once when the last one ran longer; or when asked) takes,
under the store's lock, only what changed since the last flush: the unsealed rows of the
recorders that committed, the batches they sealed, and the tree entries of new or changed
recorders. That takes microseconds per recorder that committed, whatever the size of the tree.
The rows are then turned into Arrow batches, each recorder's in commit order, and appended to
the one journal file of this session, outside the lock: ``push()`` never waits for the disk.
What a flush wrote survives a kill -9 and a power loss (the journal is synced at each write).

A write that fails (a full disk) keeps its frames in memory and retries them first at the
next flush; until one succeeds, the run's recorders refuse new rows with a
:class:`~rigorous_recorder.errors.StorageError` naming the run and the cause.

The store holds the run's lock (see ``process``) from its start until the run is finished, so
that no reader takes a live run over. After each write, and before the run is finished, run.json
is read back: once another process took the run over all the same (a reader on another host,
where this host's lock cannot be seen, found its heartbeat stale and recovered it), the
store writes nothing more and refuses rows the same way, so that finishing never replaces the
records the recovery kept. A recovery claims the session in run.json (``recovered_session``)
before it reads the journal, so a write this check lets pass is one the recovery reads.
"""

from __future__ import annotations

import threading
import time
from array import array
from collections.abc import Iterable
from itertools import islice
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from .._columns import build_batch
from .._hotpath import COMPILED
from .._values import to_json
from ..errors import DamagedFileError, RecorderError, RecorderTreeError, StorageError
from .base import RecordStore
from .journal import BATCH, HEADER_SIZE, Frame, JournalWriter, batch_frame, decode_batch, tree_frame
from .layout import RECORDER_COLUMN, RECOVERED_SESSION, RUN_NODE, RUNNING, journal_name
from .run_folder import RunFolder
from .tree_file import RECORDER_FIELD, TreeNode, int32_array, recorder_counts, tag, untag

if TYPE_CHECKING:
    from ..recorder import Recorder

_CACHED_FRAMES = 32
_RECORDERS_PER_LOCK = 256
#: Sealed bytes waiting for the flusher above which the recording thread writes them itself.
_MAX_QUEUED_BYTES = 8 << 20


class RunStore(RecordStore):
    """The RecordStore of one session of one experiment run."""

    #: The compiled push appends without the lock: it reads a recorder's unsealed columns and
    #: appends to them in one step, which the flusher's swap of those columns cannot split.
    unlocked_appends = COMPILED

    def __init__(self, folder: RunFolder, session: int, flush_interval: float,
                 resumed: dict[int, Recorder] | None = None, earlier: dict[int, TreeNode] | None = None) -> None:
        super().__init__()
        self.folder = folder
        self._session = session
        self._flushing = threading.Lock()  # taken before ``lock``, never after
        self._recorders: dict[int, Recorder] = dict(resumed or {})
        for node_id, recorder in self._recorders.items():
            recorder.node_id = node_id
        self._earlier = earlier or {}  # a resumed run's records from before this session
        self._next_id = max(self._recorders, default=-1) + 1
        self._changed: dict[Recorder, None] = {}
        self._dirty: dict[Recorder, None] = {}
        self._sealed: dict[int, list[pa.RecordBatch]] = {}  # per recorder id: tagged, sealed since the last flush
        self._queued_bytes = 0
        self._unwritten: list[tuple[bytes, pa.RecordBatch | None]] = []  # frames a failed write left
        self._frames: dict[int, list[Frame]] = {}
        self._cache: dict[Frame, pa.RecordBatch] = {}
        self._journal: JournalWriter | None = None
        self._part = 0
        self._closed = False
        self._taken_over: StorageError | None = None  # set once run.json says another process took the run
        self._stop = threading.Event()
        self._interval = flush_interval
        folder.hold_lock(session)  # let go when the run's finish writes run.json (RunFolder.compact)
        self._flusher = self._start_flusher()

    # -- the RecordStore contract ----------------------------------------------------------

    def adopt(self, recorder: Recorder) -> int:
        """Give ``recorder`` an id in this run; a resumed recorder keeps its id and its rows."""
        self._check_open()
        if self._recorders.get(recorder.node_id) is recorder:
            earlier = self._earlier.get(recorder.node_id)
            rows = sum(batch.num_rows for batch in earlier.batches()) if earlier is not None else 0
        else:
            recorder.node_id = self._next_id
            self._next_id += 1
            self._recorders[recorder.node_id] = recorder
            rows = 0
        self._changed[recorder] = None
        return rows

    def release(self, recorder: Recorder) -> list[pa.RecordBatch]:
        """Refused: a run's records stay in the run."""
        raise RecorderTreeError(
            f"a recorder of experiment run {self.folder.id} cannot move to another tree: its records are in "
            "the run; make a new recorder instead"
        )

    def check_detach(self, recorder: Recorder) -> None:
        """Refused: a detached recorder's records would lose the run's lineage."""
        raise RecorderTreeError(
            f"a recorder of experiment run {self.folder.id} cannot be detached: its records would lose the "
            "run's bookkeeping and experiment info; hang it elsewhere in the run instead"
        )

    def write(self, recorder: Recorder, batch: pa.RecordBatch) -> None:
        """Queue a sealed batch for the next flush (called under the lock)."""
        self._check_open()
        self._sealed.setdefault(recorder.node_id, []).append(tag(batch, recorder.node_id))
        self._queued_bytes += batch.nbytes

    def pending(self, recorder: Recorder) -> None:
        """Note that ``recorder`` has unsealed rows; refuses while the run is finished or failing."""
        self._check_open()
        self._dirty[recorder] = None

    def local_data_changed(self, recorder: Recorder) -> None:
        """Write the recorder's tree entry at the next flush."""
        if self._recorders.get(recorder.node_id) is recorder:
            self._changed[recorder] = None

    def read(self, recorder: Recorder) -> tuple[list[pa.RecordBatch], dict[str, list[Any]], int]:
        """Every batch of ``recorder`` (earlier sessions', the journal's, the queued ones) and
        its unsealed rows, seen at one moment."""
        node_id = recorder.node_id
        with self._flushing, self.lock:
            frames = list(self._frames.get(node_id, ()))
            unwritten = [batch for _, batch in self._unwritten if batch is not None]
            columns, rows = recorder.unsealed_rows()
            earlier = self._earlier.get(node_id)
            batches = list(earlier.batches()) if earlier is not None else []
            for batch in [*map(self._decoded, frames), *unwritten]:
                batches.extend(_rows_of(batch, node_id))
            batches.extend(map(untag, self._sealed.get(node_id, ())))
        return batches, columns, rows

    def flush(self) -> None:
        """Write what changed since the last flush to the journal; raises StorageError if it fails.

        The lock is taken once per few hundred recorders that committed, and released while
        the rows are converted and written, so ``push()`` never waits long.
        """
        with self._flushing:
            taken: dict[int, list[Piece]] = {}  # per recorder id, in commit order
            while True:
                with self.lock:
                    if self._closed:
                        return
                    dirty = list(islice(self._dirty, _RECORDERS_PER_LOCK))
                    for recorder in dirty:
                        del self._dirty[recorder]
                        pieces = taken.setdefault(recorder.node_id, [])
                        pieces.extend(self._sealed.pop(recorder.node_id, ()))  # sealed before these rows
                        pieces.append(recorder.take_unsealed_rows())
                    if not dirty:  # last: tree entries of every recorder whose rows were taken
                        changed, self._changed = list(self._changed), {}
                        for node_id, batches in self._sealed.items():  # sealed after its rows were taken, or none were
                            taken.setdefault(node_id, []).extend(batches)
                        self._sealed, self._queued_bytes = {}, 0
                        break
            frames = list(self._unwritten)
            if changed:
                entries = [self._entry(recorder) for recorder in changed]
                frames.append((tree_frame(to_json(entries).encode("utf-8")), None))
            frames.extend((batch_frame(batch), batch) for batch in _grouped(_batches_of(taken)))
            if frames:
                self._append(frames)

    def relieve(self) -> None:
        """Flush now, in the recording thread, when sealed batches pile up faster than the
        flusher writes them (memory stays bounded whatever the push rate)."""
        if self._queued_bytes > _MAX_QUEUED_BYTES:
            self.flush()

    # -- lifecycle -------------------------------------------------------------------------

    def take(self, root: Recorder) -> None:
        """Make ``root``'s tree this run's: new recorders get ids depth first (the root is 0)."""
        for recorder in _subtree(root):
            recorder.move_to(self)

    def close(self) -> None:
        """Flush everything, stop the flusher and close the journal; later writes raise.

        Raises StorageError (and stays open, flushing on) when the last flush fails.
        """
        self._stop.set()
        if self._flusher is not threading.current_thread():
            self._flusher.join()
        try:
            self.flush()  # (each write of the journal is synced)
            self._check_still_recording()  # else finishing would replace what the recovery kept
        except (StorageError, OSError):
            if self._taken_over is None:
                self._stop.clear()
                self._flusher = self._start_flusher()
            raise
        with self._flushing, self.lock:
            self._closed = True
            if self._journal is not None:
                self._journal.close()
                self._journal = None

    def serve_from(self, earlier: dict[int, TreeNode]) -> None:
        """After compaction: read the records from the compacted file instead of the journal."""
        with self._flushing, self.lock:
            self._earlier = earlier
            self._frames.clear()
            self._cache.clear()

    # -- inside ------------------------------------------------------------------------------

    def _entry(self, recorder: Recorder) -> dict[str, Any]:
        parent = recorder.parent
        return {
            "id": recorder.node_id,
            "parent": None if parent is None else parent.node_id,
            "local_data": {} if recorder.node_id == RUN_NODE else dict(recorder.local_data),
        }

    def _append(self, frames: list[tuple[bytes, pa.RecordBatch | None]]) -> None:
        if self._taken_over is not None:
            self._unwritten = frames
            raise self._taken_over
        try:
            if self._journal is None:
                self.folder.journal.mkdir(exist_ok=True)
                self._journal = JournalWriter(self.folder.journal / journal_name(self._session, self._part))
            offsets = self._journal.append([frame for frame, _ in frames])
        except OSError as error:
            self._unwritten = frames
            if self._journal is not None and not isinstance(error, (BlockingIOError, InterruptedError)):
                self._journal.close()  # the next try starts a new part: this one may not be cut back
                self._journal, self._part = None, self._part + 1
            self.failure = StorageError(
                f"cannot write experiment run {self.folder.id} to {self.folder.path.parent.parent}: "
                f"{error.strerror or error}; the records committed so far are kept and written when writing "
                "works again (flush() retries)"
            )
            raise self.failure from error
        self._unwritten = []
        self.failure = None
        path = self._journal.path
        for (frame, batch), offset in zip(frames, offsets):
            if batch is not None:
                located = Frame(BATCH, path, offset, len(frame) - HEADER_SIZE)
                for node_id in recorder_counts(batch):
                    self._frames.setdefault(node_id, []).append(located)
        self._check_still_recording()

    def _check_still_recording(self) -> None:
        """Raise StorageError (from now on) once run.json no longer says that this session
        records the run: another process recovered it (from another host that cannot see this
        host's lock, its heartbeat looked stale: a stalled process, or clocks that disagree) or
        resumed it. A journal the recovery deleted takes writes without a word, and finishing
        would replace its records file."""
        if self._taken_over is None:
            try:
                info = self.folder.read_info()
            except DamagedFileError:
                return  # unreadable now: readers report that; recording goes on
            ours = info["status"] == RUNNING and info["session"] == self._session
            if ours and info.get(RECOVERED_SESSION) != self._session:
                return
            state = "it is being recovered" if ours else f"{info['status']!r}, session {info['session']}"
            self._taken_over = StorageError(
                f"experiment run {self.folder.id} was taken over by another process while this one recorded "
                f"it: its run.json now says {state} (a reader on another host, where this host's file locks "
                f"cannot be seen, found its heartbeat older than that reader's heartbeat_timeout: a stalled "
                f"process, or clocks that disagree). The run keeps the records flushed before then; nothing "
                f"more is written to it: resume it (collection.resume({self.folder.id!r})) to record more"
            )
            self.folder.release_lock(self._session)
        self.failure = self._taken_over
        raise self._taken_over

    def _decoded(self, frame: Frame) -> pa.RecordBatch:
        batch = self._cache.get(frame)
        if batch is None:
            if len(self._cache) >= _CACHED_FRAMES:
                self._cache.clear()
            batch = self._cache[frame] = decode_batch(frame.payload())
        return batch

    def _check_open(self) -> None:
        if self._closed:
            raise RecorderError(
                f"experiment run {self.folder.id} is finished: reopen it with collection.resume(run_id) to record more"
            )
        if self.failure is not None:
            raise self.failure

    def _start_flusher(self) -> threading.Thread:
        thread = threading.Thread(target=self._flush_periodically, name=f"rigorous-recorder-{self.folder.id}",
                                  daemon=True)
        thread.start()
        return thread

    def _flush_periodically(self) -> None:
        """Start a flush every ``flush_interval`` seconds (at once when the last one ran longer):
        a record waits at most one interval and one flush before it is on disk."""
        started = time.monotonic()
        while not self._stop.wait(max(0.0, started + self._interval - time.monotonic())):
            started = time.monotonic()
            try:
                self.flush()
            except StorageError:
                pass  # handed to the recording thread through ``failure``; retried next time
            try:
                if self._taken_over is None:  # a run taken over is another process's to mark
                    self.folder.touch_heartbeat()
            except OSError:
                pass  # a full disk: the lock (or the pid check) still tells readers on this host


#: What a flush takes from one recorder: a tagged batch it sealed, or its unsealed rows (columns, count).
Piece = pa.RecordBatch | tuple[dict[str, list[Any]], int]


def _batches_of(taken: dict[int, list[Piece]]) -> list[pa.RecordBatch]:
    """Tagged batches of what a flush took, each recorder's rows in commit order: the sealed
    batches and rows of a recorder that sealed any, each in turn; the rows of the recorders
    that only had unsealed rows, one batch per set of keys and value types (one batch per
    episode recorder would be slow)."""
    batches: list[pa.RecordBatch] = []
    only_rows: list[tuple[int, dict[str, list[Any]], int]] = []
    for node_id, pieces in taken.items():
        pieces = [piece for piece in pieces if isinstance(piece, pa.RecordBatch) or piece[1]]
        if len(pieces) == 1 and not isinstance(pieces[0], pa.RecordBatch):
            only_rows.append((node_id, *pieces[0]))
            continue
        for piece in pieces:
            batches.append(piece if isinstance(piece, pa.RecordBatch) else tag(build_batch(*piece), node_id))
    groups: dict[tuple[Any, ...], tuple[list[int], dict[str, list[Any]]]] = {}
    for node_id, columns, rows in only_rows:
        signature = tuple((key, frozenset(map(type, values))) for key, values in columns.items())
        group = groups.get(signature)
        if group is None:
            groups[signature] = ([node_id] * rows, {key: list(values) for key, values in columns.items()})
        else:
            group[0].extend([node_id] * rows)
            for key, values in columns.items():
                group[1][key].extend(values)
    return batches + [
        build_batch(columns, len(ids)).add_column(0, RECORDER_FIELD, int32_array(array("i", ids)))
        for ids, columns in groups.values()
    ]


def _grouped(batches: Iterable[pa.RecordBatch]) -> list[pa.RecordBatch]:
    """Tagged batches, each run of consecutive batches of one schema merged into one batch (few
    frames per flush; merging only neighbours keeps each recorder's rows in commit order)."""
    runs: list[list[pa.RecordBatch]] = []
    for batch in batches:
        if runs and runs[-1][0].schema.equals(batch.schema, check_metadata=True):  # JSON is metadata
            runs[-1].append(batch)
        else:
            runs.append([batch])
    return [run[0] if len(run) == 1 else pa.Table.from_batches(run).combine_chunks().to_batches()[0]
            for run in runs]


def _rows_of(batch: pa.RecordBatch, node_id: int) -> list[pa.RecordBatch]:
    """The rows of one recorder in a tagged batch, untagged."""
    import pyarrow.compute as pc  # here: readers need not load it

    picked = batch.filter(pc.equal(batch.column(RECORDER_COLUMN), pa.scalar(node_id, pa.int32())))
    return [untag(picked)] if picked.num_rows else []


def _subtree(root: Recorder) -> list[Recorder]:
    found, stack = [], [root]
    while stack:
        recorder = stack.pop()
        found.append(recorder)
        stack.extend(reversed(recorder.children))
    return found
