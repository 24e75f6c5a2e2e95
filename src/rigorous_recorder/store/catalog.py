"""The catalog: finished runs gathered into a few pack files, so that listing and querying
a collection of thousands of runs reads a few files instead of thousands.

``catalog/pack-<time>-<id>.parquet`` holds the records of up to :data:`PACK_RUNS` finished
runs whose records files have the same columns (in any order), each row tagged with its run's index in the pack
(a column named ``""``, a name no key can have). Three smaller files, written before it,
describe its runs:

* ``.runs.json`` lists each packed run in index order: its id, the signature of its
  ``run.json`` when it was packed, and that run.json (its context kept as JSON text, decoded
  when asked for, and each distinct context stored once), with
  the keys of the runs' recorders and of their experiment recorders, each with the first run
  that holds it. Its first line is the CRC-32 of the rest. Listing runs reads only this file
  (no Parquet, so ``ls`` never loads pyarrow);
* ``.entries.parquet``: each recorder of each run, its own data stored as records are (a
  column per key);
* ``.lineage.parquet``: each recorder that holds records, its data merged with its
  ancestors' (the run's bookkeeping keys at the root).

Each Parquet file of a pack lists its layout in its metadata, so that a query reads its footer
without pyarrow, as it reads a records file's.
A pack is listed only when its records file is there and its listing is whole; it is queried
only when its three Parquet files are whole too (every page checked against its checksum,
once per file signature, remembered with the collection's checked records files).

The catalog is a cache; the run folders stay the truth. A run is taken from a pack only while
its run.json is the one that was packed (same inode, size and modification time) and its
folder is there; otherwise it is read from its folder and its rows in the pack are skipped.
A pack that cannot be read is ignored. Packs are never changed, only added; deleting
``catalog/`` loses nothing.

Packing runs inside a user's process (when a run finishes, when a query is asked), so its
memory is bounded whatever the runs' widths: a run's records are read a few columns at a time,
a column holding few values is held as those values, and a pack's records file is written a row
group at a time, all within :data:`PACK_CELLS`.
"""

from __future__ import annotations

import functools
import hashlib
import os
import time
import zlib
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._files import atomic_write_text, temporary_path_beside
from .._values import from_json, to_json
from ..errors import DamagedFileError
from .footer import PACK_LAYOUT_KEY, Footer, tree_rows
from .layout import CATALOG_FOLDER, CATALOG_LOCK, EXPERIMENT_NODE, RECORDER_COLUMN, RUN_NODE, RUNNING, bookkeeping
from .run_folder import RunFolder, Signature
from .verified import VerifiedFiles, verified_files

if TYPE_CHECKING:
    import pyarrow as pa

# pyarrow (and the record formats built on it) load only to write a pack or to check one for a
# query: listing packed runs reads JSON alone.

#: The most runs one pack holds, and the most records.
PACK_RUNS = 4096
PACK_RECORDS = 1 << 20
#: The most cells (rows x stored columns) of records the packer holds at once (~32 MB of numbers):
#: half for the pack's row group being gathered, half for the run being read into it; a run that
#: costs more than half is left out of packs and read in place (a few columns at a time). Packing
#: runs inside a user's process (a run finishing, a query): its memory follows this, whatever the
#: runs' widths. A column holding values in few rows is held as pieces (its runs of values, and
#: null stretches sliced from one shared array), each costing :data:`_PIECE_CELLS`; any other
#: column costs a cell per row.
PACK_CELLS = 1 << 22
#: The most column chunks (row groups x columns) of a pack's records file: a reader parses each
#: (~800 bytes of pyarrow's memory), so a wide pack is closed sooner.
PACK_COLUMN_CHUNKS = 1 << 14
#: The rows of a row group of a pack's files, at most (of its records: fewer where :data:`PACK_CELLS` is
#: reached first).
_PACK_GROUP_ROWS = 1 << 17
#: What a piece of a column (an Arrow array of its own: ~300 bytes) costs, in cells of numbers.
_PIECE_CELLS = 40
#: Runs with more records than this are read in place: their own file costs little per record.
PACKED_RUN_RECORDS = 100_000
#: Packing waits until this many finished runs are outside every pack.
PACK_MIN_RUNS = 64
#: The column of a pack that holds each row's run index: a name no key can have.
RUN_INDEX_COLUMN = ""
_PREFIX, _DATA, _LISTING, _ENTRIES, _LINEAGE = "pack-", ".parquet", ".runs.json", ".entries.parquet", ".lineage.parquet"
_PACK_FORMAT = 3  # 3: each Parquet file lists its layout


@dataclass
class PackedRun:
    """A run as a pack holds it: its info (run.json without its experiment info and context,
    which :attr:`full_info` adds back, decoding the context on first use)."""

    id: str
    signature: Signature
    info: dict[str, Any]
    _experiment: dict[str, Any] | None
    _context: str | None  # as JSON text (runs mostly share theirs: decoded once each)
    pack: Pack
    index: int

    @property
    def full_info(self) -> dict[str, Any]:
        """The run.json that was packed, whole."""
        info = dict(self.info)
        if self._experiment is not None:
            info["experiment"] = dict(self._experiment)
        if self._context is not None:
            info["context"] = dict(_context(self._context))
        return info


@dataclass
class Pack:
    """One pack: its records file, the entries and lineage files of its runs' trees (each
    file's footer, known once the pack is checked, has the run index column last), its runs
    in index order, and the keys of their recorders' and experiment recorders' data, each with
    the index of the first run that holds it."""

    path: Path
    keys: list[tuple[str, int]]
    experiment_keys: list[tuple[str, int]]
    runs: list[PackedRun]
    footer: Footer | None = None
    entries_footer: Footer | None = None
    lineage_footer: Footer | None = None
    queryable: bool | None = None  # None: not checked yet

    @property
    def entries(self) -> Path:
        """The file of each recorder's own data."""
        return self.path.with_name(self.path.name[:-len(_DATA)] + _ENTRIES)

    @property
    def lineage(self) -> Path:
        """The file of each recorder's merged data."""
        return self.path.with_name(self.path.name[:-len(_DATA)] + _LINEAGE)

    def check(self, verified: VerifiedFiles) -> bool:
        """True when the pack's Parquet files are whole and fit its listing: every page read and
        checked once per file signature (DuckDB does not check them; a damaged pack must never
        spoil a query), what passed remembered in ``verified``; a damaged pack stays ignored."""
        if self.queryable is None:
            try:
                self.entries_footer, self.lineage_footer, self.footer = (
                    _checked_footer(path, verified) for path in (self.entries, self.lineage, self.path))
            except DamagedFileError:
                self.queryable = False
                return False
            except OSError:
                return False  # gone, or unreadable for now (too many open files): asked again next time
            key_columns = [name for name, _, _ in self.entries_footer.layout[:-2]]
            self.queryable = [key for key, _ in self.keys] == key_columns
        return self.queryable


class Catalog:
    """The packs of one collection (``<collection>/catalog/``)."""

    def __init__(self, collection: Path) -> None:
        self.path = collection / CATALOG_FOLDER
        self._verified = verified_files(collection)
        self._packs: dict[str, Pack | None] = {}  # by file name; None: unreadable, ignored
        self._left_over = False  # whether the last listing showed what a packer killed midway left

    def runs(self, queryable: bool = False) -> dict[str, PackedRun]:
        """Every packed run by id, from the newest pack that holds it (``queryable``: among the
        packs whose records and trees are whole, which is checked on first use)."""
        try:
            listed = set(os.listdir(self.path))
        except OSError:
            listed = set()
        self._left_over = bool(_leftovers(listed))
        names = sorted(name[:-len(_DATA)] for name in listed
                       if name.startswith(_PREFIX) and name.endswith(_DATA) and name.count(".") == 1)
        self._packs = {name: self._packs[name] if name in self._packs else _read_listing(self.path, name)
                       for name in names}
        packed: dict[str, PackedRun] = {}
        for pack in self._packs.values():
            if pack is not None and (not queryable or pack.check(self._verified)):
                packed.update((run.id, run) for run in pack.runs)
        return packed

    def pack(self, runs: Sequence[tuple[RunFolder, dict[str, Any]]], packed: dict[str, PackedRun]) -> int:
        """Pack the finished runs of ``runs`` that no pack holds, if there are enough of them
        and no other process is packing; returns the number of runs packed."""
        waiting = [(folder, info) for folder, info in runs if _packable(info) and folder.id not in packed]
        if len(waiting) < PACK_MIN_RUNS:
            return 0
        import pyarrow as pa
        from filelock import FileLock, Timeout

        try:
            self.path.mkdir(exist_ok=True)
            with FileLock(self.path / CATALOG_LOCK, timeout=0):
                done = self.runs(queryable=True)  # what another process packed meanwhile; a stale copy does not count
                self._remove_leftovers()
                return sum(self._write(group) for group in _groups(
                    folder for folder, _ in waiting
                    if folder.id not in done or done[folder.id].signature != folder.info_signature()))
        except (Timeout, OSError, pa.ArrowException):
            return 0  # another process packs, or the disk is full or read-only: runs are read in place

    def tidy(self) -> None:
        """Delete what a packer killed midway left, when the last :meth:`runs` saw some and no
        packer is at work (packing, which deletes it too, waits for :data:`PACK_MIN_RUNS` runs:
        a temporary file as large as a pack would stay till then)."""
        if not self._left_over:
            return
        from filelock import FileLock, Timeout

        try:
            with FileLock(self.path / CATALOG_LOCK, timeout=0):
                self._remove_leftovers()
        except (Timeout, OSError):
            pass  # a packer is at work (its files are no leftovers), or the disk is read-only

    def _remove_leftovers(self) -> None:
        """Delete what a packer killed midway left and packs of an earlier format (no listing,
        or one of an earlier format); call with the catalog lock, after :meth:`runs`."""
        names = set(os.listdir(self.path))
        earlier = {stem for stem, pack in self._packs.items() if pack is None and _of_earlier_format(self.path, stem)}
        for name in _leftovers(names, earlier):
            (self.path / name).unlink(missing_ok=True)
        self._left_over = False

    def _write(self, members: list[_Member]) -> int:
        """Write ``members`` (runs of one layout) into packs, in their order, as few as a pack's
        limits allow; returns how many runs they hold. A run found damaged, changed since its
        tree was read, or costing more than half of :data:`PACK_CELLS` is left out, to be read
        in place."""
        written = 0
        records: _PackRecords | None = None
        try:
            for member in members:
                read = _read_member(member)
                if read is None:
                    continue
                if records is not None and not records.fits(read):
                    written += self._finish(records)
                    records = None
                if records is None:
                    stamp = max(time.time_ns(), max(map(_time_of, self._packs), default=-1) + 1)  # whatever the clocks
                    records = _PackRecords(self.path / f"{_PREFIX}{stamp:020d}-{os.urandom(4).hex()}",
                                           read.schema)
                records.add(member, read)
            if records is not None:
                written += self._finish(records)
                records = None
        finally:
            if records is not None:
                records.abandon()
        return written

    def _finish(self, records: _PackRecords) -> int:
        """Complete the pack whose records ``records`` wrote: its listing, entries and lineage
        files, then its records file renamed into place (last: the pack is complete); returns how
        many runs it holds."""
        from .footer import lineages

        records.close()
        members = records.members
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
        name = records.stem.name
        contexts: dict[str, int] = {}  # each distinct context, once
        infos, experiments, context_of = [], [], []
        for member in members:
            context, experiment = member.info.get("context"), member.info.get("experiment")
            apart = {"context"} | ({"experiment"} if type(experiment) is dict else set())
            infos.append({key: value for key, value in member.info.items() if key not in apart})
            experiments.append(experiment if "experiment" in apart else None)
            context_of.append(None if context is None else contexts.setdefault(to_json(context), len(contexts)))
        shared = [key for key in infos[0] if all(key in info for info in infos)]  # a column each: fewer bytes to parse
        listing = to_json({
            "format": _PACK_FORMAT, "keys": list(keys.items()), "experiment_keys": list(experiment_keys.items()),
            "ids": [member.folder.id for member in members], "signatures": [member.signature for member in members],
            "columns": {key: [info[key] for info in infos] for key in shared},
            "rest": [{key: value for key, value in info.items() if key not in shared} or None for info in infos],
            "experiments": experiments, "contexts": list(contexts), "context_of": context_of})
        atomic_write_text(self.path / (name + _LISTING), f"{zlib.crc32(listing.encode('utf-8')):08x}\n{listing}")
        _write_parquet(self.path / (name + _ENTRIES), _data_table(entries))
        _write_parquet(self.path / (name + _LINEAGE), _data_table(merged))
        os.replace(records.temporary, self.path / (name + _DATA))  # last: the pack is complete
        self._verified.written(*(self.path / (name + suffix) for suffix in (_ENTRIES, _LINEAGE, _DATA)))
        return len(members)


@functools.lru_cache(maxsize=64)
def _context(text: str) -> dict[str, Any]:
    """A context decoded (the runs of one sweep mostly share theirs): copy before handing out."""
    return from_json(text)  # type: ignore[no-any-return]


def _data_table(rows: list[tuple[int, int, dict[str, Any]]]) -> pa.Table:
    """Rows of (run index, recorder id, data) as the records of a pack are stored: a column per
    key (ints among floats stay exact: beyond 2**53 the column is JSON), the recorder id, and
    the run index last."""
    import pyarrow as pa

    from .._columns import exact_column_to_arrow
    from .tree_file import RECORDER_FIELD, int32_array

    keys = dict.fromkeys(key for _, _, data in rows for key in data)
    fields, arrays = [], []
    for key in keys:
        field, column = exact_column_to_arrow(key, [data.get(key) for _, _, data in rows])
        fields.append(field)
        arrays.append(column)
    fields += [RECORDER_FIELD, pa.field(RUN_INDEX_COLUMN, pa.int32())]
    arrays += [int32_array(array("i", [node_id for _, node_id, _ in rows])),
               int32_array(array("i", [index for index, _, _ in rows]))]
    return pa.Table.from_arrays(arrays, schema=_with_layout(pa.schema(fields)))


def _packable(info: dict[str, Any]) -> bool:
    return (info["status"] != RUNNING and info.get("records") is not None
            and info.get("records_count", PACKED_RUN_RECORDS + 1) <= PACKED_RUN_RECORDS)


@dataclass
class _Member:
    """A run to pack: its info and tree as read between two looks at its run.json (its records
    are read when packed), and the key of its records file's layout."""

    folder: RunFolder
    info: dict[str, Any]
    signature: Signature
    entries: list[dict[str, Any]]
    path: Path
    layout: bytes


@dataclass
class _Read:
    """A run's records read for a pack: its file's schema (without metadata), its rows, what
    holding them costs in cells, and each column's pieces (first row, values), in row order; a
    column's rows without a piece are null."""

    schema: pa.Schema
    rows: int
    cells: int
    pieces: dict[str, list[tuple[int, pa.Array]]]


def _groups(folders: Iterable[RunFolder]) -> Iterable[list[_Member]]:
    """The runs of ``folders`` grouped by layout, at most :data:`PACK_RUNS` runs and
    :data:`PACK_RECORDS` records a group: their infos and trees (never their records, which
    :meth:`Catalog._write` reads run by run).

    Each run's tree is read between two looks at its run.json; a run that changed meanwhile (or
    cannot be read) is left out, to be read in place.
    """
    import pyarrow as pa

    from .tree_file import read_tree_schema, tree_of

    groups: dict[bytes, list[_Member]] = {}
    rows: dict[bytes, int] = {}
    for folder in folders:
        before = folder.info_signature()
        try:
            info = folder.read_info()
            if not _packable(info) or folder.journal_paths(info):
                continue
            path = folder.compacted_path(info)
            schema = read_tree_schema(path)
            tree = tree_of(schema, path)
            records = tree_rows(tree)
            folder.check_records_file(info, path, tree, records)
            entries = [{"id": entry["id"], "parent": entry["parent"], "rows": entry["rows"],
                        "local_data": {} if entry["id"] == RUN_NODE else entry["local_data"]}  # info has the root's
                       for entry in tree["recorders"]]
        except (DamagedFileError, OSError, pa.ArrowException):
            continue
        if before is None or folder.info_signature() != before:
            continue
        layout = _layout_key(schema)
        group = groups.setdefault(layout, [])
        group.append(_Member(folder, info, before, entries, path, layout))
        rows[layout] = rows.get(layout, 0) + records
        if len(group) >= PACK_RUNS or rows[layout] >= PACK_RECORDS:
            yield groups.pop(layout)
            del rows[layout]
    yield from groups.values()


def _layout_key(schema: pa.Schema) -> bytes:
    """What tells the columns of a records file of ``schema`` from another's, their order aside
    (a pack takes each run's columns by name: runs whose keys first came in another order share
    one): a digest, not the layout itself (runs of many distinct wide layouts wait to be packed
    together)."""
    from .._kinds import layout_of

    return hashlib.sha256(repr(sorted(layout_of(schema))).encode("utf-8")).digest()


def _read_member(member: _Member) -> _Read | None:
    """The records of ``member`` as pieces to pack, read a few columns at a time with every page
    checked (a damaged page must stay where readers see it damaged, never be copied into a pack
    under fresh checksums); None when the run is damaged, changed since its tree was read (its
    run.json looked at again after), or costs more than half of :data:`PACK_CELLS`."""
    import pyarrow as pa

    from .tree_file import checked_columns, open_checked

    pieces: dict[str, list[tuple[int, pa.Array]]] = {}
    cells = 0
    try:
        with open_checked(member.path) as parquet:
            schema = parquet.schema_arrow.remove_metadata()
            if _layout_key(schema) != member.layout:
                return None
            starts = [0]
            for group in range(parquet.metadata.num_row_groups):
                starts.append(starts[-1] + parquet.metadata.row_group(group).num_rows)
            for group, name, column in checked_columns(parquet, member.path):
                found, cost = _pieces(column, starts[group])
                cells += cost
                if cells > PACK_CELLS // 2:
                    return None
                if found:
                    pieces.setdefault(name, []).extend(found)
    except (DamagedFileError, OSError, pa.ArrowException):
        return None
    if member.folder.info_signature() != member.signature:
        return None
    return _Read(schema, starts[-1], cells + starts[-1], pieces)  # (and a cell a row of run index)


def _pieces(column: pa.Array, start: int) -> tuple[list[tuple[int, pa.Array]], int]:
    """``column`` (its first row being row ``start``) as pieces to pack, and their cost in cells:
    the column whole where that costs less, else each of its runs of values (the rows between
    are null)."""
    import pyarrow.compute as pc

    values = len(column) - column.null_count
    if not values:
        return [], 0
    if 2 * values * _PIECE_CELLS >= len(column):  # a piece of values and a null stretch each
        return [(start, column)], len(column)
    rows = pc.indices_nonzero(column.is_valid()).to_pylist()
    compact = column.drop_null()
    found = []
    first = 0
    for index in range(1, len(rows) + 1):
        if index == len(rows) or rows[index] != rows[index - 1] + 1:
            found.append((start + rows[first], compact.slice(first, index - first)))
            first = index
    return found, 2 * len(found) * _PIECE_CELLS


class _PackRecords:
    """The records file of a pack being written, to a temporary path until the pack is complete:
    its runs' rows in order, each tagged with the run's index in the pack, in row groups of at
    most half of :data:`PACK_CELLS` and :data:`_PACK_GROUP_ROWS` rows (a run's rows in one row
    group), gathered column by column as pieces (null stretches sliced from one array a type)."""

    def __init__(self, stem: Path, schema: pa.Schema) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.stem = stem
        self.schema = _with_layout(schema.append(pa.field(RUN_INDEX_COLUMN, pa.int32())))
        self._types = dict(zip(self.schema.names, self.schema.types))
        self.members: list[_Member] = []
        self.row_groups = 0
        self.temporary = temporary_path_beside(stem.with_name(stem.name + _DATA))
        self._writer = pq.ParquetWriter(self.temporary, self.schema, compression="zstd", write_page_checksum=True)
        self._nulls: dict[pa.DataType, pa.Array] = {}
        self._start_row_group()

    def _start_row_group(self) -> None:
        self._chunks: dict[str, list[pa.Array]] = {name: [] for name in self.schema.names}
        self._covered = dict.fromkeys(self.schema.names, 0)  # rows of each column given a chunk so far
        self._rows = 0
        self._cells = len(self.schema) * _PIECE_CELLS  # each column's last null stretch

    def _full_with(self, read: _Read) -> bool:
        """Whether the row group being gathered is written before ``read`` joins."""
        return self._rows > 0 and (self._rows + read.rows > _PACK_GROUP_ROWS
                                   or self._cells + read.cells > PACK_CELLS // 2)

    def fits(self, read: _Read) -> bool:
        """Whether ``read`` may join this pack: its column chunks stay within :data:`PACK_COLUMN_CHUNKS`."""
        row_groups = self.row_groups + 1 + self._full_with(read)
        return row_groups * len(self.schema) <= PACK_COLUMN_CHUNKS

    def add(self, member: _Member, read: _Read) -> None:
        """Add the rows of ``read``, the records of ``member``, as the pack's next run."""
        from .tree_file import int32_array

        if self._full_with(read):
            self._write_row_group()
        base = self._rows
        for name, pieces in read.pieces.items():
            chunks = self._chunks[name]
            for row, piece in pieces:
                self._pad(name, base + row)
                chunks.append(piece)
                self._covered[name] = base + row + len(piece)
        self._chunks[RUN_INDEX_COLUMN].append(int32_array(array("i", [len(self.members)]) * read.rows))
        self._rows += read.rows
        self._covered[RUN_INDEX_COLUMN] = self._rows
        self._cells += read.cells
        self.members.append(member)

    def _pad(self, name: str, end: int) -> None:
        """Give column ``name`` null rows up to row ``end``: a slice of one null array of its type."""
        import pyarrow as pa

        length = end - self._covered[name]
        if length > 0:
            arrow_type = self._types[name]
            nulls = self._nulls.get(arrow_type)
            if nulls is None or len(nulls) < length:
                nulls = self._nulls[arrow_type] = pa.nulls(max(length, _PACK_GROUP_ROWS), arrow_type)
            self._chunks[name].append(nulls.slice(0, length))
            self._covered[name] = end

    def _write_row_group(self) -> None:
        import pyarrow as pa

        for name in self.schema.names:
            self._pad(name, self._rows)
        table = pa.Table.from_arrays([pa.chunked_array(self._chunks[field.name], field.type) for field in self.schema],
                                     schema=self.schema)
        self._writer.write_table(table, row_group_size=max(1, self._rows))
        self.row_groups += 1
        self._start_row_group()

    def close(self) -> None:
        """Write the last row group and close the file (still at its temporary path)."""
        if self._rows or not self.row_groups:
            self._write_row_group()
        self._writer.close()

    def abandon(self) -> None:
        """Close the file and delete it: the pack is not written."""
        try:
            self._writer.close()
        finally:
            self.temporary.unlink(missing_ok=True)


def _time_of(name: str) -> int:
    """The time in a pack's name (0 if it has none): packs are named so that the newest, which a
    run is read from, sorts last, even where the clocks of the hosts that packed disagree."""
    digits = name[len(_PREFIX):].partition("-")[0]
    return int(digits) if digits.isdigit() else 0


def _leftovers(names: set[str], earlier: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """Among the catalog's file ``names``, what a packer killed midway left (temporary files, a
    pack's first files without its records file, which is written last) and the files of the
    packs ``earlier`` (stems)."""
    found = []
    for name in names:
        stem = name.split(".")[0]
        if name.endswith(".tmp") or name.startswith(_PREFIX) and (
                stem in earlier or not {stem + _DATA, stem + _LISTING} <= names):
            found.append(name)
    return found


def _listing(folder: Path, name: str) -> Any:
    """The listing of pack ``name`` (JSON); OSError or ValueError when it is not whole."""
    with open(folder / (name + _LISTING), "rb") as file:
        crc, _, text = file.read().partition(b"\n")
    if int(crc, 16) != zlib.crc32(text):
        raise ValueError(f"{folder / (name + _LISTING)} fails its CRC")
    return from_json(text.decode("utf-8"))


def _of_earlier_format(folder: Path, name: str) -> bool:
    """True when pack ``name``'s listing is whole and of an earlier format (a pack whose listing
    is damaged or of a later format stays, ignored)."""
    try:
        found = _listing(folder, name)["format"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return type(found) is int and found < _PACK_FORMAT


def _read_listing(folder: Path, name: str) -> Pack | None:
    """A pack as its listing describes it, or None when the listing is not whole or of another format."""
    try:
        listing = _listing(folder, name)
        if listing["format"] != _PACK_FORMAT:
            return None
        pack = Pack(folder / (name + _DATA), _first_runs(listing["keys"]), _first_runs(listing["experiment_keys"]), [])
        ids, columns, contexts = listing["ids"], listing["columns"], listing["contexts"]
        if not all(len(values) == len(ids) for values in (listing["signatures"], listing["rest"],
                                                          listing["experiments"], listing["context_of"],
                                                          *columns.values())):
            return None
        infos = [dict(zip(columns, row)) for row in zip(*columns.values())] if columns else [{} for _ in ids]
        for info, rest in zip(infos, listing["rest"]):
            if rest is not None:
                info.update(rest)
        pack.runs = [PackedRun(run_id, tuple(signature), info, experiment,
                               None if context is None else contexts[context], pack, index)
                     for index, (run_id, signature, info, experiment, context)
                     in enumerate(zip(ids, listing["signatures"], infos, listing["experiments"], listing["context_of"]))]
        if not all(type(run.id) is str and len(run.signature) == 3 and type(run._experiment) in (dict, type(None))
                   for run in pack.runs):
            return None
        return pack
    except (OSError, KeyError, TypeError, ValueError, IndexError):
        return None


def _first_runs(pairs: Any) -> list[tuple[str, int]]:
    """Keys with the first run holding each, as a listing stores them."""
    if not all(isinstance(key, str) and type(run) is int for key, run in pairs):
        raise ValueError("a listing's keys are damaged")
    return [(key, run) for key, run in pairs]


def _with_layout(schema: pa.Schema) -> pa.Schema:
    """``schema`` (of a pack's Parquet file) with its layout in its metadata."""
    from .._kinds import layout_of

    return schema.with_metadata({PACK_LAYOUT_KEY: to_json(layout_of(schema)).encode("utf-8")})


def _checked_footer(path: Path, verified: VerifiedFiles) -> Footer:
    """The footer of a pack's Parquet file, every page of it checked (once per file signature);
    DamagedFileError when it is not a whole file of a pack."""
    footer = Footer.read(path)
    columns = [(name, arrow_type) for name, arrow_type, _ in footer.layout]
    if columns[-1:] != [(RUN_INDEX_COLUMN, "int32")] or (RECORDER_COLUMN, "int32") not in columns:
        raise DamagedFileError(path, "not a file of a pack: no run index or recorder id column")
    verified.check(path)
    return footer


def _write_parquet(path: Path, table: pa.Table) -> None:
    """Write ``table`` to ``path`` atomically."""
    import pyarrow.parquet as pq

    temporary = temporary_path_beside(path)
    try:
        pq.write_table(table, temporary, compression="zstd", write_page_checksum=True, row_group_size=_PACK_GROUP_ROWS)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
