"""The catalog: finished runs gathered into a few pack files, so that listing and querying
a collection of thousands of runs reads a few files instead of thousands.

``catalog/pack-<time>-<id>.parquet`` holds the records of up to :data:`PACK_RUNS` finished
runs whose records files share one schema, each row tagged with its run's index in the pack
(a column named ``""``, a name no key can have). ``pack-<time>-<id>.runs.parquet``, written
first, lists each packed run in index order: its id, the signature of its ``run.json`` when
it was packed, that run.json (the keys every run has with one plain type as columns, the
others as JSON text, the ``context`` apart) and the run's tree entries as JSON text, decoded
when asked for. A pack is read only when both files are there.

The catalog is a cache; the run folders stay the truth. A run is taken from a pack only while
its run.json is the one that was packed (same inode, size and modification time) and its
folder is there; otherwise it is read from its folder and its rows in the pack are skipped.
A pack that cannot be read is ignored. Packs are never changed, only added; deleting
``catalog/`` loses nothing.
"""

from __future__ import annotations

import functools
import os
import time
import uuid
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .._columns import packed_array
from .._files import temporary_path_beside
from .._values import from_json, to_json
from ..errors import DamagedFileError
from .layout import CATALOG_FOLDER, CATALOG_LOCK, RUN_NODE, RUNNING
from .run_folder import RunFolder, Signature
from .tree_file import int32_array, is_records_file_schema, shape_of, tree_of

#: The most runs one pack holds, and the most records.
PACK_RUNS = 4096
PACK_RECORDS = 1 << 20
#: Runs with more records than this are read in place: their own file costs little per record.
PACKED_RUN_RECORDS = 100_000
#: Packing waits until this many finished runs are outside every pack.
PACK_MIN_RUNS = 64
#: The column of a pack that holds each row's run index: a name no key can have.
RUN_INDEX_COLUMN = ""
_PREFIX, _DATA, _LISTING = "pack-", ".parquet", ".runs.parquet"
_PACK_FORMAT = 1
_FORMAT_KEY = b"rigorous_recorder.pack"
_SIGNATURE = ("inode", "size", "mtime_ns")
_INFO = "info."  # the listing's columns of run.json keys that every run has, of one plain type


@dataclass
class PackedRun:
    """A run as a pack holds it: its info (run.json without ``context``), and its tree entries
    and context, decoded on first use."""

    id: str
    signature: Signature
    info: dict[str, Any]
    pack: Pack
    index: int
    _entries: str
    _context: str | None

    @property
    def entries(self) -> list[dict[str, Any]]:
        """The run's recorders: id, parent and local data of each."""
        return from_json(self._entries)  # type: ignore[no-any-return]

    @property
    def full_info(self) -> dict[str, Any]:
        """The run.json that was packed, whole."""
        return {**self.info, "context": dict(_context(self._context))} if self._context is not None else self.info


@dataclass
class Pack:
    """One pack file: its schema (the run index column last) and its runs in index order."""

    path: Path
    schema: pa.Schema
    runs: list[PackedRun]

    @property
    def records_schema(self) -> pa.Schema:
        """The schema of the packed records files (the run index column left out)."""
        return self.schema.remove(len(self.schema) - 1)


class Catalog:
    """The packs of one collection (``<collection>/catalog/``)."""

    def __init__(self, collection: Path) -> None:
        self.path = collection / CATALOG_FOLDER
        self._packs: dict[str, Pack | None] = {}  # by file name; None: unreadable, ignored

    def runs(self) -> dict[str, PackedRun]:
        """Every packed run by id, from the newest pack that holds it."""
        try:
            names = sorted(name[:-len(_DATA)] for name in os.listdir(self.path)
                           if name.startswith(_PREFIX) and name.endswith(_DATA) and not name.endswith(_LISTING))
        except OSError:
            names = []
        self._packs = {name: self._packs[name] if name in self._packs else _read_pack(self.path, name)
                       for name in names}
        packed: dict[str, PackedRun] = {}
        for pack in self._packs.values():
            if pack is not None:
                packed.update((run.id, run) for run in pack.runs)
        return packed

    def pack(self, runs: Sequence[tuple[RunFolder, dict[str, Any]]], packed: dict[str, PackedRun]) -> int:
        """Pack the finished runs of ``runs`` that no pack holds, if there are enough of them
        and no other process is packing; returns the number of runs packed."""
        waiting = [(folder, info) for folder, info in runs if _packable(info) and folder.id not in packed]
        if len(waiting) < PACK_MIN_RUNS:
            return 0
        from filelock import FileLock, Timeout

        try:
            self.path.mkdir(exist_ok=True)
            with FileLock(self.path / CATALOG_LOCK, timeout=0):
                self._remove_leftovers()
                done = self.runs()  # what another process packed meanwhile; a stale copy does not count
                return sum(self._write(group) for group in _groups(
                    folder for folder, _ in waiting
                    if folder.id not in done or done[folder.id].signature != folder.info_signature()))
        except (Timeout, OSError, pa.ArrowException):
            return 0  # another process packs, or the disk is full or read-only: runs are read in place

    def _remove_leftovers(self) -> None:
        """Delete what a packer killed midway left: temporary files and listings without data
        (call with the catalog lock)."""
        names = set(os.listdir(self.path))
        for name in names:
            if name.endswith(".tmp") or name.endswith(_LISTING) and name[:-len(_LISTING)] + _DATA not in names:
                (self.path / name).unlink(missing_ok=True)

    def _write(self, members: list[_Member]) -> int:
        """Write one pack of ``members`` (all of one schema); returns how many runs it holds."""
        schema = members[0].table.schema
        tables = [member.table.cast(schema).append_column(
                      pa.field(RUN_INDEX_COLUMN, pa.int32()), int32_array(array("i", [index]) * member.table.num_rows))
                  for index, member in enumerate(members)]
        listing = {
            "id": [member.folder.id for member in members],
            **{name: [member.signature[index] for member in members] for index, name in enumerate(_SIGNATURE)},
            "context": [None if member.info.get("context") is None else to_json(member.info["context"])
                        for member in members],
            "entries": [to_json(member.entries) for member in members],
        }
        infos = [{key: value for key, value in member.info.items() if key != "context"} for member in members]
        columns = {_INFO + key: packed_array([info[key] for info in infos]) for key in _shared_plain_keys(infos)}
        columns = {name: column for name, column in columns.items() if column is not None}
        listing["info"] = [to_json({key: value for key, value in info.items() if _INFO + key not in columns})
                           for info in infos]
        name = f"{_PREFIX}{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
        _write_parquet(self.path / (name + _LISTING), pa.table(
            {**{key: _array(values) for key, values in listing.items()}, **columns},
            metadata={_FORMAT_KEY: str(_PACK_FORMAT)}))
        _write_parquet(self.path / (name + _DATA), pa.concat_tables(tables))
        return len(members)


@functools.lru_cache(maxsize=64)
def _context(text: str) -> dict[str, Any]:
    """A context decoded (the runs of one sweep mostly share theirs): copy before handing out."""
    return from_json(text)  # type: ignore[no-any-return]


def _shared_plain_keys(infos: list[dict[str, Any]]) -> list[str]:
    """The keys every one of ``infos`` has, whose values (None aside) are all of one type among
    str, int, float and bool: stored as columns, they read back without decoding JSON per run."""
    keys = []
    for key in infos[0]:
        types = {type(info.get(key, ...)) for info in infos} - {type(None)}
        if len(types) == 1 and types <= {str, int, float, bool}:
            keys.append(key)
    return keys


def _packable(info: dict[str, Any]) -> bool:
    return (info["status"] != RUNNING and info.get("records") is not None
            and info.get("records_count", PACKED_RUN_RECORDS + 1) <= PACKED_RUN_RECORDS)


@dataclass
class _Member:
    """A run read whole for packing."""

    folder: RunFolder
    info: dict[str, Any]
    signature: Signature
    entries: list[dict[str, Any]]
    table: pa.Table


def _groups(folders: Iterable[RunFolder]) -> Iterable[list[_Member]]:
    """The runs of ``folders`` read whole and grouped by schema, in packs of bounded size.

    Each run is read between two looks at its run.json; a run that changed meanwhile (or
    cannot be read) is left out, to be read in place.
    """
    groups: dict[tuple[Any, ...], list[_Member]] = {}
    rows: dict[tuple[Any, ...], int] = {}
    for folder in folders:
        before = folder.info_signature()
        try:
            info = folder.read_info()
            if not _packable(info) or folder.journal_paths(info):
                continue
            path = folder.compacted_path(info)
            file = pq.ParquetFile(path)  # not pq.read_table: that loads pyarrow.dataset and pandas
            schema = file.schema_arrow
            entries = [{"id": entry["id"], "parent": entry["parent"], "rows": entry["rows"],
                        "local_data": {} if entry["id"] == RUN_NODE else entry["local_data"]}  # info has the root's
                       for entry in tree_of(schema, path)["recorders"]]
            table = file.read().replace_schema_metadata(None)
        except (DamagedFileError, OSError, pa.ArrowException):
            continue
        if before is None or folder.info_signature() != before:
            continue
        shape = shape_of(schema)
        group = groups.setdefault(shape, [])
        group.append(_Member(folder, info, before, entries, table))
        rows[shape] = rows.get(shape, 0) + table.num_rows
        if len(group) >= PACK_RUNS or rows[shape] >= PACK_RECORDS:
            yield groups.pop(shape)
            del rows[shape]
    yield from groups.values()


def _read_pack(folder: Path, name: str) -> Pack | None:
    """A pack's schema and runs, or None when it is not a readable pack."""
    try:
        # Both files are read whole with their page checksums checked, once per process: DuckDB
        # does not check them, and a damaged pack must never spoil a query (it is then ignored).
        listing = _verified(folder / (name + _LISTING))
        path = folder / (name + _DATA)
        schema = _verified(path).schema
        if (listing.schema.metadata or {}).get(_FORMAT_KEY) != str(_PACK_FORMAT).encode() \
                or schema.names[-1] != RUN_INDEX_COLUMN or not is_records_file_schema(schema.remove(len(schema) - 1)):
            return None
        columns = {key: listing.column(key).to_pylist() for key in ("id", *_SIGNATURE, "info", "context", "entries")}
        plain = [name[len(_INFO):] for name in listing.column_names if name.startswith(_INFO)]
        values = [listing.column(_INFO + key).to_pylist() for key in plain]
        infos = [dict(zip(plain, row)) for row in zip(*values)] if plain else [{} for _ in columns["id"]]
        for info, rest in zip(infos, columns["info"]):
            info.update(from_json(rest))
        pack = Pack(path, schema, [])
        pack.runs = [PackedRun(run_id, tuple(signature), info, pack, index, entries, context)
                     for index, ((run_id, *signature, _, context, entries), info)
                     in enumerate(zip(zip(*columns.values()), infos))]
        return pack
    except (OSError, pa.ArrowException, KeyError, TypeError, ValueError):
        return None


def _verified(path: Path) -> pa.Table:
    """The table in ``path``, every page checked (not pq.read_table: it imports pandas)."""
    return pq.ParquetFile(path, page_checksum_verification=True).read()


def _array(values: list[Any]) -> pa.Array:
    """A column of the listing (str or int values; None: missing)."""
    column = packed_array(values)
    return column if column is not None else pa.nulls(len(values), pa.string())  # no value at all


def _write_parquet(path: Path, table: pa.Table) -> None:
    """Write ``table`` to ``path`` atomically."""
    temporary = temporary_path_beside(path)
    try:
        pq.write_table(table, temporary, compression="zstd", write_page_checksum=True, row_group_size=1 << 17)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
