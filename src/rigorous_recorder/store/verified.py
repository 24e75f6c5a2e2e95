"""Parquet files whose every page passed its checksum, remembered by file signature.

DuckDB reads Parquet without checking page checksums, so a run's records file or a pack's file
is checked (every page read by pyarrow, a few columns at a time) before any query reads it, and
read by DuckDB itself (its footer, every page header): a file only DuckDB refuses would fail
every query over the files of its layout. A check is done once per file
signature: inode, size, modification time and change time. ``os.utime`` can set the
modification time back but not the change time, so any write to the file after its check
makes it checked again. A run's own process counts the file it finished the run with as passed
(it computed the checksums of those very pages), a packer the files of its packs. What passed
is kept in memory for the process, and in ``<collection>/verified.json`` for the next
processes; that file is a cache only:
deleting it loses nothing, a damaged one is ignored (and rewritten), and a reader that must
not write (``recover=False``) reads it but keeps what it checks in memory.
"""

from __future__ import annotations

import functools
import json
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._files import atomic_write_text
from ..errors import DamagedFileError
from .layout import RUNNING

if TYPE_CHECKING:
    import duckdb

    from .run_folder import RunFolder

#: The cache of checked records files, in the collection's folder.
VERIFIED_FILE = "verified.json"
_FORMAT = 1

FileSignature = tuple[int, int, int, int]


def file_signature(path: str | os.PathLike[str]) -> FileSignature:
    """Inode, size, modification and change time of ``path`` (OSError when it cannot be read)."""
    status = os.stat(path)
    return status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns


class VerifiedFiles:
    """The records and pack files of one collection whose pages passed their checksums."""

    def __init__(self, collection: str) -> None:
        self.cache = Path(collection, VERIFIED_FILE)
        self._prefix = os.path.join(collection, "")  # of every path it checks
        self._passed: set[tuple[str, FileSignature]] = set()  # path relative to the collection, signature
        self._read_signature: FileSignature | None = None  # of the cache file as last read
        self._unsaved = False
        self._lock = threading.Lock()

    def check(self, path: str | os.PathLike[str]) -> None:
        """Raise DamagedFileError naming ``path`` unless every page of it passes its checksum
        (read only when this signature of it was never checked)."""
        path = os.fspath(path)
        name = self._name(path)
        try:
            signature = file_signature(path)
        except FileNotFoundError:
            raise  # the run changed under its reader, which reads it again
        except OSError as error:
            raise DamagedFileError(path, f"cannot be read ({error.strerror or error})") from None
        with self._lock:
            if (name, signature) in self._passed or self._reread() and (name, signature) in self._passed:
                return
        from .tree_file import check_every_page  # FileNotFoundError: the run changed, its reader reads again

        check_every_page(path)
        check_duckdb_reads(path)
        with self._lock:
            self._passed.add((name, signature))
            self._unsaved = True

    def written(self, *paths: str | os.PathLike[str]) -> None:
        """Remember files this process has just written (a run's records file, a pack's files)
        as passed, and save: their page checksums were computed from the very pages written, so
        the next reader need not read them back (a later write to one changes its signature)."""
        for path in map(os.fspath, paths):
            try:
                signature = file_signature(path)
            except OSError:
                continue
            with self._lock:
                self._passed.add((self._name(path), signature))
                self._unsaved = True
        self.save()

    def _name(self, path: str) -> str:
        """``path`` relative to the collection."""
        return path[len(self._prefix):] if path.startswith(self._prefix) else os.path.relpath(path, self.cache.parent)

    def save(self) -> None:
        """Write what passed to the cache file when something new did (a failed write is
        ignored: the next process checks again)."""
        with self._lock:
            if not self._unsaved:
                return
            self._reread()  # keep what other processes checked meanwhile
            passed = {(name, signature) for name, signature in self._passed if _current(self.cache.parent / name, signature)}
            try:
                atomic_write_text(self.cache, json.dumps({"format": _FORMAT, "passed": sorted(passed)}, separators=(",", ":")))
                self._read_signature = file_signature(self.cache)
            except OSError:
                return
            self._passed, self._unsaved = passed, False

    def _reread(self) -> bool:
        """Take in the cache file's entries if it changed since it was last read; True if it did."""
        try:
            signature = file_signature(self.cache)
            if signature == self._read_signature:
                return False
            self._read_signature = signature
            stored = json.loads(self.cache.read_bytes())
        except (OSError, ValueError):
            return False  # no cache, or a damaged one: ignored
        if not isinstance(stored, dict) or stored.get("format") != _FORMAT or not isinstance(stored.get("passed"), list):
            return False
        for entry in stored["passed"]:
            if isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str) and isinstance(entry[1], list) \
                    and len(entry[1]) == 4 and all(type(part) is int for part in entry[1]):
                self._passed.add((entry[0], tuple(entry[1])))  # type: ignore[arg-type]
        return True


_collections: dict[str, VerifiedFiles] = {}
_collections_lock = threading.Lock()


def verified_files(collection: str | os.PathLike[str]) -> VerifiedFiles:
    """The checked records files of the collection at ``collection``, shared by this process."""
    collection = os.fspath(collection)
    with _collections_lock:
        if collection not in _collections:
            _collections[collection] = VerifiedFiles(collection)
        return _collections[collection]


def _current(path: Path, signature: FileSignature) -> bool:
    """True while ``path`` is there with ``signature``."""
    try:
        return file_signature(path) == signature
    except OSError:
        return False


#: Columns DuckDB reads at once when it checks a file (a wide file's values are never all held).
_DUCKDB_WINDOW = 256
_duckdb_lock = threading.Lock()  # one check at a time on the connection


@functools.cache
def _check_connection() -> duckdb.DuckDBPyConnection:
    """The DuckDB connection of this process's checks, made on first use."""
    import duckdb

    return duckdb.connect(config={"threads": 1})


def check_duckdb_reads(path: str | os.PathLike[str]) -> None:
    """Raise DamagedFileError naming ``path`` unless DuckDB reads every value of it: a flipped
    bit that pyarrow's reading forgives, in the footer or a page header, would otherwise fail
    every query over the files of its layout."""
    import duckdb

    from ..query_text import quote_literal, quote_name

    scan = f"read_parquet({quote_literal(os.fspath(path))})"
    with _duckdb_lock:
        connection = _check_connection()
        try:
            names = [row[0] for row in connection.execute(f"DESCRIBE SELECT * FROM {scan}").fetchall()]
            for first in range(0, len(names), _DUCKDB_WINDOW):
                hashes = ", ".join(f"max(hash({quote_name(name)}))" for name in names[first:first + _DUCKDB_WINDOW])
                connection.execute(f"SELECT {hashes} FROM {scan}").fetchall()
        except duckdb.Error as error:
            raise DamagedFileError(path, f"DuckDB cannot read it ({error})") from None


def check_pages(folder: RunFolder, info: dict[str, Any]) -> None:
    """Raise DamagedFileError naming the file unless the records file of the stopped run
    ``info`` (which readers scan in place) passed its page checksums; checked once per file
    signature. A running run's records are read by pyarrow, which checks them."""
    if info["status"] != RUNNING and info.get("records") is not None:
        verified_files(os.path.dirname(os.path.dirname(folder.location))).check(
            os.path.join(folder.location, info["records"]))
