"""The catalog: finished runs gathered into a few pack files, so that listing and querying
a collection of thousands of runs reads a few files instead of thousands.

``catalog/pack-<time>-<id>.parquet`` holds the records of up to :data:`PACK_RUNS` finished
runs whose records files share one schema, each row tagged with its run's index in the pack
(a column named ``""``, a name no key can have). Three smaller files, written before it, make
the flat view of its runs without reading each run's tree in Python:

* ``.runs.parquet`` lists each packed run in index order: its id, the signature of its
  ``run.json`` when it was packed, that run.json (the keys every run has with one plain type
  as columns, the others as JSON text, the experiment info and the ``context`` apart, decoded
  when asked for), and in its metadata the keys of the runs' recorders and of their
  experiment info, each with the first run that holds it;
* ``.entries.parquet``: each recorder of each run, its own data stored as records are (a
  column per key);
* ``.lineage.parquet``: each recorder that holds records, its data merged with its
  ancestors' (the run's bookkeeping keys at the root).

A pack is read only when all four files are there.

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

from .._columns import exact_column_to_arrow, packed_array
from .._files import temporary_path_beside
from .._values import from_json, to_json
from ..errors import DamagedFileError
from .layout import CATALOG_FOLDER, CATALOG_LOCK, EXPERIMENT_NODE, RUN_NODE, RUNNING, bookkeeping
from .run_folder import RunFolder, Signature
from .tree_file import RECORDER_FIELD, int32_array, is_records_file_schema, lineages, shape_of, tree_of

#: The most runs one pack holds, and the most records.
PACK_RUNS = 4096
PACK_RECORDS = 1 << 20
#: Runs with more records than this are read in place: their own file costs little per record.
PACKED_RUN_RECORDS = 100_000
#: Packing waits until this many finished runs are outside every pack.
PACK_MIN_RUNS = 64
#: The column of a pack that holds each row's run index: a name no key can have.
RUN_INDEX_COLUMN = ""
_PREFIX, _DATA, _LISTING, _ENTRIES, _LINEAGE = "pack-", ".parquet", ".runs.parquet", ".entries.parquet", ".lineage.parquet"
_PACK_FORMAT = 2
_FORMAT_KEY = b"rigorous_recorder.pack"
_KEYS = b"rigorous_recorder.keys"  # [key, index of the first run holding it] of entries' columns, in order
_EXPERIMENT_KEYS = b"rigorous_recorder.experiment_keys"  # the same for the experiment recorders' data
_SIGNATURE = ("inode", "size", "mtime_ns")
_INFO = "info."  # the listing's columns of run.json keys that every run has, of one plain type
_HELD = ("experiment", "context")  # run.json keys the listing holds apart, as JSON text: decoded when asked for


@dataclass
class PackedRun:
    """A run as a pack holds it: its info (run.json without its experiment info and context,
    which are decoded when asked for)."""

    id: str
    signature: Signature
    info: dict[str, Any]
    _held: dict[str, str]  # the run.json keys left out of info, as JSON text
    pack: Pack
    index: int

    @property
    def full_info(self) -> dict[str, Any]:
        """The run.json that was packed, whole."""
        info = dict(self.info)
        if "experiment" in self._held:
            info["experiment"] = from_json(self._held["experiment"])
        if "context" in self._held:
            info["context"] = dict(_context(self._held["context"]))
        return info


@dataclass
class Pack:
    """One pack: its records file, the entries and lineage files of its runs' trees (each
    file's schema has the run index column last), its runs in index order, and the keys of
    their recorders' and experiment recorders' data, each with the index of the first run
    that holds it."""

    path: Path
    schema: pa.Schema
    entries: Path
    entries_schema: pa.Schema
    lineage: Path
    lineage_schema: pa.Schema
    keys: list[tuple[str, int]]
    experiment_keys: list[tuple[str, int]]
    runs: list[PackedRun]


class Catalog:
    """The packs of one collection (``<collection>/catalog/``)."""

    def __init__(self, collection: Path) -> None:
        self.path = collection / CATALOG_FOLDER
        self._packs: dict[str, Pack | None] = {}  # by file name; None: unreadable, ignored

    def runs(self) -> dict[str, PackedRun]:
        """Every packed run by id, from the newest pack that holds it."""
        try:
            names = sorted(name[:-len(_DATA)] for name in os.listdir(self.path)
                           if name.startswith(_PREFIX) and name.endswith(_DATA) and name.count(".") == 1)
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
            companion = next((suffix for suffix in (_LISTING, _ENTRIES, _LINEAGE) if name.endswith(suffix)), None)
            if name.endswith(".tmp") or companion and name[:-len(companion)] + _DATA not in names:
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
            **{key: [to_json(member.info[key]) if key in member.info else None for member in members] for key in _HELD},
        }
        infos = [{key: value for key, value in member.info.items() if key not in _HELD} for member in members]
        columns = {_INFO + key: _array([info[key] for info in infos]) for key in _shared_plain_keys(infos)}
        columns = {name: column for name, column in columns.items() if column is not None}
        rests = [{key: value for key, value in info.items() if _INFO + key not in columns} for info in infos]
        listing["info"] = [to_json(rest) if rest else None for rest in rests]
        infos = [member.info for member in members]
        keys: dict[str, int] = {}
        experiment_keys: dict[str, int] = {}
        for index, member in enumerate(members):
            for entry in member.entries:
                for key in entry["local_data"]:
                    keys.setdefault(key, index)
                    if entry["id"] == EXPERIMENT_NODE:
                        experiment_keys.setdefault(key, index)
        entries = [(index, entry["id"], entry["local_data"]) for index, member in enumerate(members)
                   for entry in member.entries]
        merged = [(index, node_id, data) for index, member in enumerate(members)
                  for node_id, data in lineages(member.entries, bookkeeping(member.info))]
        name = f"{_PREFIX}{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
        _write_parquet(self.path / (name + _LISTING), pa.table(
            {**{key: _array(values) for key, values in listing.items()}, **columns},
            metadata={_FORMAT_KEY: str(_PACK_FORMAT), _KEYS: to_json(list(keys.items())),
                      _EXPERIMENT_KEYS: to_json(list(experiment_keys.items()))}))
        _write_parquet(self.path / (name + _ENTRIES), _data_table(entries))
        _write_parquet(self.path / (name + _LINEAGE), _data_table(merged))
        _write_parquet(self.path / (name + _DATA), pa.concat_tables(tables))  # last: the pack is complete
        return len(members)


@functools.lru_cache(maxsize=64)
def _context(text: str) -> dict[str, Any]:
    """A context decoded (the runs of one sweep mostly share theirs): copy before handing out."""
    return from_json(text)  # type: ignore[no-any-return]


def _data_table(rows: list[tuple[int, int, dict[str, Any]]]) -> pa.Table:
    """Rows of (run index, recorder id, data) as the records of a pack are stored: a column per
    key (ints among floats stay exact: beyond 2**53 the column is JSON), the recorder id, and
    the run index last."""
    keys = dict.fromkeys(key for _, _, data in rows for key in data)
    fields, arrays = [], []
    for key in keys:
        field, column = exact_column_to_arrow(key, [data.get(key) for _, _, data in rows])
        fields.append(field)
        arrays.append(column)
    fields += [RECORDER_FIELD, pa.field(RUN_INDEX_COLUMN, pa.int32())]
    arrays += [int32_array(array("i", [node_id for _, node_id, _ in rows])),
               int32_array(array("i", [index for index, _, _ in rows]))]
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def _shared_plain_keys(infos: list[dict[str, Any]]) -> list[str]:
    """The keys every one of ``infos`` has, whose values (None aside) are all of one type among
    str, int, float and bool, or all None: stored as columns, they read back without decoding
    JSON per run."""
    keys = []
    for key in infos[0]:
        types = {type(info.get(key, ...)) for info in infos} - {type(None)}
        if types <= {str} or types <= {int} or types <= {float} or types <= {bool}:
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
            # Pages checked: a damaged page must stay where readers see it damaged, never be
            # copied into a pack under fresh checksums. (Not pq.read_table: it loads pandas.)
            file = pq.ParquetFile(path, page_checksum_verification=True)
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
    """A pack's schemas and runs, or None when it is not a readable pack."""
    try:
        # Every file is read whole with its page checksums checked, once per process: DuckDB
        # does not check them, and a damaged pack must never spoil a query (it is then ignored).
        listing = _verified(folder / (name + _LISTING), shared=["context"])
        metadata = listing.schema.metadata or {}
        if metadata.get(_FORMAT_KEY) != str(_PACK_FORMAT).encode():
            return None
        schemas = []
        for suffix in (_ENTRIES, _LINEAGE, _DATA):
            schema = _verified(folder / (name + suffix)).schema
            if schema.names[-1] != RUN_INDEX_COLUMN or not is_records_file_schema(schema.remove(len(schema) - 1)):
                return None
            schemas.append(schema)
        keys, experiment_keys = (_first_runs(metadata[name]) for name in (_KEYS, _EXPERIMENT_KEYS))
        if [key for key, _ in keys] != schemas[0].names[:-2]:  # the entries' key columns, in order
            return None
        columns = {key: _python_values(listing.column(key)) for key in ("id", *_SIGNATURE, "info", *_HELD)}
        plain = [name[len(_INFO):] for name in listing.column_names if name.startswith(_INFO)]
        values = [listing.column(_INFO + key).to_pylist() for key in plain]
        infos = [dict(zip(plain, row)) for row in zip(*values)] if plain else [{} for _ in columns["id"]]
        for info, rest in zip(infos, columns["info"]):
            if rest is not None:
                info.update(from_json(rest))
        entries_schema, lineage_schema, schema = schemas
        pack = Pack(folder / (name + _DATA), schema, folder / (name + _ENTRIES), entries_schema,
                    folder / (name + _LINEAGE), lineage_schema, keys, experiment_keys, [])
        signatures = zip(*(columns[key] for key in _SIGNATURE))
        held = ({key: text for key, text in zip(_HELD, texts) if text is not None}
                for texts in zip(*(columns[key] for key in _HELD)))
        pack.runs = [PackedRun(*run, pack, index) for index, run in enumerate(zip(columns["id"], signatures, infos, held))]
        return pack
    except (OSError, pa.ArrowException, KeyError, TypeError, ValueError):
        return None


def _first_runs(text: bytes) -> list[tuple[str, int]]:
    """Keys with the first run holding each, as the metadata of a listing stores them."""
    pairs = from_json(text.decode("utf-8"))
    if not all(isinstance(key, str) and type(run) is int for key, run in pairs):
        raise ValueError("a listing's keys are damaged")
    return [(key, run) for key, run in pairs]


def _verified(path: Path, shared: list[str] | None = None) -> pa.Table:
    """The table in ``path``, every page checked (not pq.read_table: it imports pandas); the
    ``shared`` columns (a few values, many times) read as dictionaries."""
    return pq.ParquetFile(path, page_checksum_verification=True, read_dictionary=shared).read()


def _python_values(column: pa.ChunkedArray) -> list[Any]:
    """A column's values; a dictionary column's decoded once per distinct value."""
    if not pa.types.is_dictionary(column.type):
        return column.to_pylist()  # type: ignore[no-any-return]
    values = []
    for chunk in column.chunks:
        distinct = chunk.dictionary.to_pylist()
        values += [None if index is None else distinct[index] for index in chunk.indices.to_pylist()]
    return values


def _array(values: list[Any]) -> pa.Array | None:
    """A column of the listing (values of one plain type; None: missing), or None when the
    values do not fit one (an int beyond int64)."""
    column = packed_array(values)
    if column is None and values.count(None) == len(values):
        return pa.nulls(len(values), pa.string())
    return column


def _write_parquet(path: Path, table: pa.Table) -> None:
    """Write ``table`` to ``path`` atomically."""
    temporary = temporary_path_beside(path)
    try:
        pq.write_table(table, temporary, compression="zstd", write_page_checksum=True, row_group_size=1 << 17)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
