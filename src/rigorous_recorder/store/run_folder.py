"""One run's folder: its bookkeeping, its journal, its compacted records.

Nothing read from a file is trusted: a damaged, missing or foreign file raises
:class:`~rigorous_recorder.errors.DamagedFileError` naming the file, every file name read from
run.json is checked to lie inside the run's folder, and stray files are ignored.

A run's records are, at any moment, its compacted records file (if any) plus the journals of
the sessions after the one that file was compacted from (``compacted_through``): compaction
writes the new file, then run.json naming it, then deletes what it merged, so a kill at any
point counts each record exactly once.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .._files import atomic_write_text
from .._values import from_json, to_json
from ..errors import DamagedFileError
from .layout import (
    EXPERIMENT_NODE,
    FORMAT_VERSION,
    HEARTBEAT_FILE,
    JOURNAL_FOLDER,
    PARQUET_MAGIC,
    RUN_FILE,
    RUN_NODE,
    STATUSES,
    DAMAGED,
    RUNNING,
    SMALLEST_PARQUET,
    bookkeeping,
    is_records_name,
    journal_key,
    lock_name,
    lock_session,
    records_name,
)
from .process import hold_lock, lock_held, release_lock

if TYPE_CHECKING:
    import pyarrow as pa

    from .tree_file import Batches, TreeNode

# The record formats (journal, tree_file) load pyarrow: they are imported by the methods that
# read or write records, so that listing runs (the CLI's ls, numbering) never loads it.

#: Keys every run.json holds, with the types they must have.
_REQUIRED = {"id": str, "experiment_number": int, "error_number": int, "status": str, "had_error": bool,
             "experiment_start_time": (int, float), "session": int}


Signature = tuple[int, int, int]
Read = TypeVar("Read")
#: How often a reader tries a run whose files keep changing under it.
_READ_ATTEMPTS = 5


def info_signature_at(location: str) -> Signature | None:
    """What tells the present run.json of the run folder at ``location`` from any earlier one:
    inode, size and modification time (a rewrite renames a new file into place); None when
    there is none."""
    try:
        status = os.stat(f"{location}{os.sep}{RUN_FILE}")
    except OSError:
        return None
    return status.st_ino, status.st_size, status.st_mtime_ns


class RunFolder:
    """Reads and writes the files of one run (``runs/<run id>/``)."""

    def __init__(self, path: Path | str) -> None:
        self.location = os.fspath(path)  # a plain string: a listing makes one per run
        self.id = os.path.basename(self.location)

    @functools.cached_property
    def path(self) -> Path:
        """The run's folder."""
        return Path(self.location)

    @property
    def journal(self) -> Path:
        """The folder of the run's journal files."""
        return self.path / JOURNAL_FOLDER

    @property
    def heartbeat(self) -> Path:
        """The file whose modification time is the run's heartbeat."""
        return self.path / HEARTBEAT_FILE

    # -- run.json: the bookkeeping ---------------------------------------------------------

    def read_info(self) -> dict[str, Any]:
        """The run's bookkeeping; DamagedFileError when run.json is missing or not one of ours."""
        path = os.path.join(self.location, RUN_FILE)
        try:
            info = from_json(_read(path).decode("utf-8"))
        except FileNotFoundError:
            raise DamagedFileError(path, "missing") from None
        except OSError as error:
            raise DamagedFileError(path, f"cannot be read ({error.strerror or error})") from None
        except UnicodeDecodeError:
            raise DamagedFileError(path, "not UTF-8 text") from None
        except ValueError as error:
            raise DamagedFileError(path, f"not JSON ({error})") from None
        if not isinstance(info, dict):
            raise DamagedFileError(path, "not a JSON object")
        for key, kind in _REQUIRED.items():
            if not isinstance(info.get(key), kind) or (kind is int and isinstance(info.get(key), bool)):
                raise DamagedFileError(path, f"{key!r} is missing or not a {getattr(kind, '__name__', 'number')}")
        if info["id"] != self.id:
            raise DamagedFileError(path, f"belongs to run {info['id']!r}, not to its folder {self.id!r}")
        if type(info.get("format")) is int and info["format"] > FORMAT_VERSION:
            raise DamagedFileError(path, f"written by a newer rigorous-recorder (format {info['format']}; this version "
                                         f"reads format {FORMAT_VERSION} and before)")
        if info["status"] not in STATUSES or info["status"] == DAMAGED:
            raise DamagedFileError(path, f"unknown status {info['status']!r}")
        if info["status"] != RUNNING and (info.get("records") is None or type(info.get("records_count")) is not int):
            raise DamagedFileError(path, f"a {info['status']} run without its records file or its count")
        if info.get("records") is not None:
            if not is_records_name(info["records"]):
                raise DamagedFileError(path, f"names a records file {info['records']!r} that is not in its run folder")
            _check_parquet(os.path.join(self.location, info["records"]))
        return info

    def info_signature(self) -> Signature | None:
        """What tells the present run.json from any earlier one: see :func:`info_signature_at`."""
        return info_signature_at(self.location)

    def read_while_changing(self, info: dict[str, Any],
                            read: Callable[[RunFolder, dict[str, Any]], Read]) -> tuple[dict[str, Any], Read]:
        """``read(self, info)``, and again with run.json read anew while a file it needs went
        away meanwhile: the run finished, was recovered or resumed while it was being read."""
        for _ in range(_READ_ATTEMPTS - 1):
            try:
                return info, read(self, info)
            except FileNotFoundError:
                info = self.read_info()
        return info, read(self, info)

    def write_info(self, info: dict[str, Any]) -> None:
        """Replace run.json atomically."""
        atomic_write_text(self.path / RUN_FILE, to_json({**info, "format": FORMAT_VERSION}, indent=1))

    def touch_heartbeat(self) -> None:
        """Mark the run alive now (its heartbeat file's modification time)."""
        try:
            os.utime(self.heartbeat)
        except FileNotFoundError:
            self.heartbeat.touch()

    def heartbeat_age(self) -> float | None:
        """Seconds since the run's last heartbeat, or None if it never had one."""
        try:
            return time.time() - self.heartbeat.stat().st_mtime
        except OSError:
            return None

    def hold_lock(self, session: int) -> bool:
        """Hold the lock of the run's ``session`` while this process records it (see
        ``process``); False where this file system cannot lock (readers then use the pid and
        the heartbeat)."""
        return hold_lock(self._lock_path(session))

    def release_lock(self, session: int) -> None:
        """Stop holding the lock of the run's ``session`` (if this process holds it)."""
        release_lock(self._lock_path(session))

    def lock_held(self, session: int) -> bool | None:
        """Whether the writer of ``session`` holds its lock; None when there is no lock file (a
        run of an older version) or this file system cannot tell."""
        return lock_held(self._lock_path(session))

    def _lock_path(self, session: int) -> str:
        return f"{self.location}{os.sep}{lock_name(session)}"

    # -- records -----------------------------------------------------------------------------

    def compacted_path(self, info: dict[str, Any]) -> Path | None:
        """The run's compacted records file, if it has one (the name was checked by read_info)."""
        name = info.get("records")
        return self.path / name if name else None

    def compacted_nodes(self, info: dict[str, Any]) -> dict[int, TreeNode]:
        """The recorders of the compacted records file by id; their records load on first use."""
        from .footer import tree_rows
        from .tree_file import read_tree_file

        path = self.compacted_path(info)
        if path is None:
            return {}
        tree, nodes = read_tree_file(path)
        self.check_records_file(info, path, tree, tree_rows(tree))
        return {node.id: node for node in nodes}

    def check_records_file(self, info: dict[str, Any], path: Path, tree: dict[str, Any], rows: int) -> None:
        """Raise DamagedFileError naming ``path`` (this run's records file per ``info``, whose
        ``tree`` says it holds ``rows`` records) unless it is this run's and holds the records
        run.json counts: a file copied from another run, or a run.json that lies, is damage."""
        run = tree.get("run")  # files written before 2.0 name no run
        if run is not None and run != info.get("id"):
            raise DamagedFileError(path, f"holds the records of run {run!r}, not those of run {info.get('id')!r}")
        count = info.get("records_count")
        if count is not None and count != rows:
            raise DamagedFileError(path, f"holds {rows} records where {RUN_FILE} says {count}")

    def journal_paths(self, info: dict[str, Any]) -> list[Path]:
        """The journal files not yet merged into the compacted file, in writing order."""
        through = info.get("compacted_through", 0)
        found = []
        if self.journal.is_dir():
            for path in self.journal.iterdir():
                key = journal_key(path.name)
                if key is not None and key[0] > through:
                    found.append((key, path))
        return [path for _, path in sorted(found)]

    def contents(self, info: dict[str, Any], strict: bool = False) -> tuple[list[dict[str, Any]], Batches, list[str]]:
        """The run's tree entries, a way to read its records as tagged batches, and problems.

        Entries come from the compacted file, then the journals (a later entry of an id wins);
        the root's local data is the bookkeeping of ``info``. Records whose recorder has no
        entry (a damaged tree) are kept under an entry of their own below the experiment.
        Reading the batches streams the files, so memory holds one batch at a time. ``strict``:
        a journal that cannot be read (out of file descriptors, an I/O error) raises its OSError
        instead of being noted in the problems, as compaction, which deletes the journals, needs.
        """
        from .journal import BATCH, decode_batch
        from .tree_file import read_tree_file, recorder_counts, tagged_batches

        entries: dict[int, dict[str, Any]] = {}
        problems: list[str] = []
        path = self.compacted_path(info)
        earlier: list[TreeNode] = []
        if path is not None:
            _, earlier = read_tree_file(path)
            entries.update((node.id, node.entry()) for node in earlier)
        journals = self.journal_paths(info)
        ids: set[int] = set()
        for kind, payload in _frames(journals, problems, strict):
            if kind == BATCH:
                ids.update(recorder_counts(decode_batch(payload)))
            else:
                entries.update((entry["id"], entry) for entry in from_json(payload.decode("utf-8")))
        for node_id in sorted(ids - entries.keys()):
            entries[node_id] = {"id": node_id, "parent": EXPERIMENT_NODE, "local_data": {}}
            problems.append(f"{self.path}: records of recorder {node_id} without its tree entry; kept")
        if RUN_NODE in entries:
            entries[RUN_NODE] = {**entries[RUN_NODE], "local_data": bookkeeping(info)}

        def batches() -> Iterator[pa.RecordBatch]:
            yield from tagged_batches(earlier)
            for kind, payload in _frames(journals, [], strict):
                if kind == BATCH:
                    yield decode_batch(payload)

        return list(entries.values()), batches, problems

    def records_count(self, info: dict[str, Any]) -> int:
        """The number of records of the run: from run.json once stopped, else counted on disk."""
        if info["status"] != RUNNING and isinstance(info.get("records_count"), int) and not self.journal_paths(info):
            return info["records_count"]
        _, batches, _ = self.contents(info)
        return sum(batch.num_rows for batch in batches())

    def nodes(self, info: dict[str, Any]) -> list[TreeNode]:
        """Every recorder of the run with its records, for reading."""
        if not self.journal_paths(info):
            nodes = list(self.compacted_nodes(info).values())
            for node in nodes:
                if node.id == RUN_NODE:
                    node.local_data = bookkeeping(info)
            return nodes
        from .tree_file import TreeNode, split_by_recorder

        entries, batches, _ = self.contents(info)
        by_id = split_by_recorder(batches())
        return [TreeNode(entry["id"], entry["parent"], entry["local_data"], _constant(by_id.get(entry["id"], [])))
                for entry in entries]

    def compact(self, info: dict[str, Any]) -> dict[str, Any]:
        """Merge the compacted file and the journals into a new records file; returns the new info.

        The new file is written under a new name, then run.json names it, then the merged
        files go: a kill at any step leaves every record counted exactly once.
        """
        from .tree_file import write_tree_file

        entries, batches, problems = self.contents(info, strict=True)
        generation = info.get("generation", 0) + 1
        name = records_name(generation)
        count = write_tree_file(self.path / name, entries, batches, {"run": self.id})
        info = {**info, "records": name, "generation": generation, "records_count": count,
                "compacted_through": info["session"]}
        if problems:
            info["problems"] = [*info.get("problems", []), *problems]
        self.write_info(info)
        self.remove_leftovers(info)
        return info

    def remove_leftovers(self, info: dict[str, Any]) -> None:
        """Delete merged journals, records files run.json does not name, and temporary files.

        Once the run stopped, the lock of its session is let go and the lock files of the sessions
        up to it deleted. Only the journals and locks of the sessions ``info`` merged go: a resume by
        another process may have started the next session since run.json said the run stopped."""
        stopped = info["status"] != RUNNING
        if stopped:
            self.release_lock(info["session"])
        for path in self.path.iterdir():
            name = path.name
            session = lock_session(name)
            if is_records_name(name) and name != info.get("records") or name.endswith(".tmp") \
                    or stopped and session is not None and session <= info["session"]:
                path.unlink(missing_ok=True)
        if stopped:
            self._remove_merged_journals(info.get("compacted_through", 0))
            self.heartbeat.unlink(missing_ok=True)

    def _remove_merged_journals(self, through: int) -> None:
        """Delete the journal files of the sessions up to ``through``, and their folder if that
        leaves it empty."""
        try:
            names = os.listdir(self.journal)
        except OSError:
            return
        for name in names:
            key = journal_key(name)
            if key is not None and key[0] <= through:
                (self.journal / name).unlink(missing_ok=True)
        try:
            self.journal.rmdir()
        except OSError:
            pass  # a later session's journal, or a stray file: left for that session or its recovery


def _read(path: str) -> bytes:
    """The whole of a small file, with the fewest calls."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        return os.read(descriptor, max(os.fstat(descriptor).st_size, 1))
    finally:
        os.close(descriptor)


def _check_parquet(path: str) -> None:
    """Raise DamagedFileError unless ``path`` starts and ends as a Parquet file does (cheap:
    a missing, emptied, truncated or overwritten file is caught without reading it)."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
        try:
            size = os.fstat(descriptor).st_size
            head = os.pread(descriptor, len(PARQUET_MAGIC), 0)
            tail = os.pread(descriptor, len(PARQUET_MAGIC), max(size - len(PARQUET_MAGIC), 0))
        finally:
            os.close(descriptor)
    except FileNotFoundError:
        raise DamagedFileError(path, "missing") from None
    except OSError as error:
        raise DamagedFileError(path, f"cannot be read ({error.strerror or error})") from None
    if size < SMALLEST_PARQUET or head != PARQUET_MAGIC or tail != PARQUET_MAGIC:
        raise DamagedFileError(path, "not a whole Parquet file (truncated or overwritten)")



def _frames(journals: list[Path], problems: list[str], strict: bool = False) -> Iterator[tuple[bytes, bytes]]:
    """(kind, payload) of every whole frame of ``journals``; damage is noted in ``problems``, and
    so is a file that cannot be read, unless ``strict`` (then its OSError is raised)."""
    from .journal import JournalDamage, read_journal

    for journal in journals:
        try:
            for frame, payload in read_journal(journal):
                yield frame.kind, payload
        except JournalDamage as error:
            problems.append(f"{error}; the records before it are kept")
        except OSError as error:
            if strict:
                raise
            problems.append(f"{error}; the records before it are kept")


def _constant(batches: list[pa.RecordBatch]):  # noqa: ANN202
    return lambda: batches
