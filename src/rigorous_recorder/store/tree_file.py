"""The records file: one Parquet file holding a recorder tree (the format, nothing else).

Columns: ``__recorder__`` (the id of the recorder that committed the row) and one column
per key. Rows of one recorder keep their commit order; rows of different recorders may
interleave (a finished run keeps the order in which it was flushed). The file's key-value
metadata ``rigorous_recorder.tree`` is JSON: one entry per recorder (id, parent id, local
data, row count, and the index of its own columns' Arrow schema in a list of distinct
schemas, so that types survive the file's shared schema), and the file's layout (each
column's name, Arrow type and kind, so that readers without pyarrow know what a column
holds: :mod:`~rigorous_recorder.store.footer`). Any Parquet reader sees the records;
:func:`read_tree_file` gives the tree back. Nothing is ever unpickled.

This module is used by ``Recorder.save_to``/``load_from``, by a run's compaction and by the
query layer; it knows nothing of recorders.
"""

from __future__ import annotations

import base64
import os
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .._columns import conformed_table, empty_rows_batch, restore, unified_schema
from .._files import temporary_path_beside
from .._kinds import layout_of
from .._values import to_json
from ..errors import DamagedFileError
from .footer import TREE_FORMAT, TREE_KEY, parse_tree
from .layout import RECORDER_COLUMN

RECORDER_FIELD = pa.field(RECORDER_COLUMN, pa.int32())
_ROW_GROUP_ROWS = 1 << 17

Batches = Callable[[], Iterable[pa.RecordBatch]]


def _no_batches() -> list[pa.RecordBatch]:
    return []


@dataclass
class TreeNode:
    """One recorder as stored: identity, parent, local data, and a way to read its batches."""

    id: int
    parent: int | None
    local_data: dict[str, Any]
    batches: Batches = field(default=_no_batches)

    def entry(self) -> dict[str, Any]:
        """The node without its records: id, parent and local data."""
        return {"id": self.id, "parent": self.parent, "local_data": self.local_data}


# -- tagging: the recorder id as a column --------------------------------------------------


def tag(batch: pa.RecordBatch, node_id: int) -> pa.RecordBatch:
    """``batch`` with the ``__recorder__`` column in front."""
    return batch.add_column(0, RECORDER_FIELD, int32_array(array("i", [node_id]) * batch.num_rows))


def int32_array(values: array) -> pa.Array:
    """An int32 Arrow array over an ``array("i")``: pyarrow's Python conversions (``pa.array``,
    ``pa.scalar``) import pandas on first use, which costs a recording process ~60 MB and fails
    while the interpreter exits (a run finished at exit must import nothing)."""
    return pa.Array.from_buffers(pa.int32(), len(values), [None, pa.py_buffer(values)])


def tagged_batches(nodes: Sequence[TreeNode]) -> Iterator[pa.RecordBatch]:
    """Every node's batches, tagged with its id."""
    for node in nodes:
        for batch in node.batches():
            yield tag(batch, node.id)


def untag(batch: pa.RecordBatch) -> pa.RecordBatch:
    """A tagged batch without its ``__recorder__`` column."""
    return batch.drop_columns([RECORDER_COLUMN])


def recorder_counts(batch: pa.RecordBatch) -> dict[int, int]:
    """Rows per recorder id in a tagged batch."""
    import pyarrow.compute as pc  # here: a reader's first query need not load its 0.1 s

    counts = pc.value_counts(batch.column(RECORDER_COLUMN))
    return dict(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist()))


def split_by_recorder(batches: Iterable[pa.RecordBatch]) -> dict[int, list[pa.RecordBatch]]:
    """Untagged batches per recorder id, each recorder's rows in their order."""
    import pyarrow.compute as pc

    found: dict[int, list[pa.RecordBatch]] = {}
    for batch in batches:
        counts = recorder_counts(batch)
        if len(counts) == 1:
            ((node_id, _),) = counts.items()
            found.setdefault(node_id, []).append(untag(batch))
            continue
        grouped = batch.take(pc.sort_indices(batch.column(RECORDER_COLUMN)))  # a stable sort
        offset = 0
        for node_id in sorted(counts):
            found.setdefault(node_id, []).append(untag(grouped.slice(offset, counts[node_id])))
            offset += counts[node_id]
    return found


def records_table(nodes: Sequence[TreeNode]) -> pa.Table:
    """Every node's records in memory, tagged, as :func:`write_tree_file` would store them."""
    batches = list(tagged_batches(nodes))
    schema = unified_schema([pa.schema([RECORDER_FIELD]), *(batch.schema for batch in batches)])
    return conformed_table(batches, schema)


# -- writing -------------------------------------------------------------------------------


def write_tree_file(path: Path, entries: Sequence[dict[str, Any]], tagged: Batches,
                    extra: dict[str, Any] | None = None) -> int:
    """Write the tree ``entries`` (id, parent, local_data) and the ``tagged`` batches to ``path``
    atomically (a temporary file renamed into place); returns the number of records.

    ``tagged`` is called twice (once for schemas and counts, once to write), so memory holds
    one row group at a time, whatever the size of the run.
    """
    own: dict[int, list[pa.Schema]] = {}
    rows: dict[int, int] = {}
    for batch in tagged():
        schema = untag(batch).schema
        for node_id, count in recorder_counts(batch).items():
            rows[node_id] = rows.get(node_id, 0) + count
            schemas = own.setdefault(node_id, [])
            if not any(schema.equals(seen, check_metadata=True) for seen in schemas):  # JSON is metadata
                schemas.append(schema)
    distinct: list[pa.Schema] = []
    stored_entries = []
    for entry in entries:
        schemas = own.get(entry["id"], [])
        schema = schemas[0] if len(schemas) == 1 else unified_schema(schemas)
        index = next((i for i, seen in enumerate(distinct) if seen.equals(schema, check_metadata=True)), None)
        if index is None:
            index = len(distinct)
            distinct.append(schema)
        stored_entries.append({**entry, "rows": rows.get(entry["id"], 0), "schema": index})
    schema = unified_schema([pa.schema([RECORDER_FIELD]), *distinct])
    tree = {"format": TREE_FORMAT, "recorders": stored_entries,
            "schemas": [base64.b64encode(each.serialize().to_pybytes()).decode("ascii") for each in distinct],
            "columns": layout_of(schema), **(extra or {})}
    schema = schema.with_metadata({TREE_KEY: to_json(tree)})
    temporary = temporary_path_beside(path)
    try:
        with pq.ParquetWriter(temporary, schema, compression="zstd", write_page_checksum=True) as writer:
            group: list[pa.RecordBatch] = []
            grouped = 0
            for batch in tagged():
                group.append(batch)
                grouped += batch.num_rows
                if grouped >= _ROW_GROUP_ROWS:
                    writer.write_table(conformed_table(group, schema))
                    group, grouped = [], 0
            if group:
                writer.write_table(conformed_table(group, schema))
        with temporary.open("rb") as file:
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return sum(rows.get(entry["id"], 0) for entry in entries)


# -- reading -------------------------------------------------------------------------------


def read_tree_schema(path: Path) -> pa.Schema:
    """The schema of a records file, its tree in the metadata; DamagedFileError if unreadable,
    or when the tree pyarrow reads (the Arrow schema's copy) differs from the footer's own."""
    try:
        with pq.ParquetFile(path) as parquet:
            schema, stored = parquet.schema_arrow, parquet.metadata.metadata or {}
    except (OSError, pa.ArrowException) as error:
        raise DamagedFileError(path, f"not a rigorous_recorder file: not readable as Parquet ({error})") from None
    if TREE_KEY not in (schema.metadata or {}):
        raise DamagedFileError(path, "not a rigorous_recorder file: a Parquet file without a rigorous_recorder tree")
    if stored.get(TREE_KEY) != schema.metadata[TREE_KEY]:
        raise DamagedFileError(path, "its tree metadata is damaged (its two copies in the footer differ)")
    return schema


def is_records_file_schema(schema: pa.Schema) -> bool:
    """True for the schema of a records file: a recorder id column of the right type."""
    index = schema.get_field_index(RECORDER_COLUMN)
    return index >= 0 and schema.field(index).type == RECORDER_FIELD.type


def tree_of(schema: pa.Schema, path: Path | None = None) -> dict[str, Any]:
    """The tree stored in the metadata of a schema read by :func:`read_tree_schema`."""
    return parse_tree(schema.metadata[TREE_KEY], path)


def read_tree_metadata(path: Path) -> dict[str, Any]:
    """The tree stored in a file's footer, without reading its rows."""
    return tree_of(read_tree_schema(path), path)


def own_schema(tree: dict[str, Any], entry: dict[str, Any]) -> pa.Schema:
    """The Arrow schema of a recorder's own columns, as stored in the tree."""
    stored = entry.get("schema")
    encoded = tree["schemas"][stored] if isinstance(stored, int) else stored  # format 1 stored it inline
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(encoded)))


def read_tree_file(path: Path) -> tuple[dict[str, Any], list[TreeNode]]:
    """The tree of a records file, and its nodes.

    The rows are read on the first call of any node's ``batches``, once for all nodes.
    """
    tree = read_tree_metadata(path)
    loaded: dict[int, list[pa.RecordBatch]] = {}

    def load(node_id: int) -> list[pa.RecordBatch]:
        if not loaded:
            loaded.update(_read_batches(path, tree))
        return loaded.get(node_id, [])

    return tree, [
        TreeNode(entry["id"], entry["parent"], entry["local_data"], _bound(load, entry["id"]))
        for entry in tree["recorders"]
    ]


def _bound(load: Callable[[int], list[pa.RecordBatch]], node_id: int) -> Batches:
    return lambda: load(node_id)


#: Cells (rows x columns) read from a records file at once (half a MB of numbers), whatever its width:
#: a wide sparse file is never held as a dense table.
_READ_CELLS = 1 << 16


def _read_batches(path: Path, tree: dict[str, Any]) -> dict[int, list[pa.RecordBatch]]:
    """Each recorder's rows in commit order, as batches of its own columns with their own types.

    The file is read row group by row group, a few columns at a time, and each recorder's rows
    are cut into batches where a recorder seals them (``recorder.BATCH_ROWS`` rows at most,
    sparse rows sooner, each batch holding only the keys its rows hold): memory grows with the
    values stored, not with keys x rows. A recorder's first batch holds all its own columns
    (the missing ones as shared null arrays), in the order of its own schema.
    """
    by_id = {entry["id"]: entry for entry in tree["recorders"]}
    batches: dict[int, list[pa.RecordBatch]] = {}
    with open_checked(path) as parquet:
        stored = parquet.schema_arrow
        owners = _owners(tree, stored)
        names = [name for name in stored.names if name != RECORDER_COLUMN]
        for group in range(parquet.metadata.num_row_groups):
            windows = _windows(path, _read_columns(parquet, path, group, [RECORDER_COLUMN])[0], by_id)
            starts = [window.start for window in windows]
            for read in _column_windows(parquet, group, names):
                for name, column in zip(read, _read_columns(parquet, path, group, read)):
                    _share_out(name, column, windows, starts, owners)
            for window in windows:
                found = batches.setdefault(window.node_id, [])
                found.extend(window.cut_into_batches(owners[window.node_id], first=not found))
    for node_id, entry in by_id.items():
        counted = sum(batch.num_rows for batch in batches.get(node_id, []))
        if counted != entry["rows"]:
            raise DamagedFileError(path, f"recorder {node_id} has {counted} rows, its tree says {entry['rows']}")
    return batches


def check_every_page(path: Path | str) -> pa.Schema:
    """Read every page of ``path`` with its checksum checked, a few columns at a time (memory
    bounded whatever the file's width), and return its schema; DamagedFileError naming the file
    when a page fails, FileNotFoundError when the file is gone."""
    if not os.path.exists(path):
        raise FileNotFoundError(2, "gone while being checked", str(path))
    with open_checked(Path(path)) as parquet:
        for _ in checked_columns(parquet, Path(path)):
            pass
        return parquet.schema_arrow


def checked_columns(parquet: pq.ParquetFile, path: Path) -> Iterator[tuple[int, str, pa.Array]]:
    """Every column of every row group of ``parquet`` (opened by :func:`open_checked` from
    ``path``), as (row group, name, column), read a few columns at a time (about
    :data:`_READ_CELLS` cells) with their pages checked: memory bounded whatever the file's
    width. DamagedFileError naming the file when a page fails."""
    names = parquet.schema_arrow.names
    for group in range(parquet.metadata.num_row_groups):
        for read in _column_windows(parquet, group, names):
            for name, column in zip(read, _read_columns(parquet, path, group, read)):
                yield group, name, column


def _column_windows(parquet: pq.ParquetFile, group: int, names: list[str]) -> Iterator[list[str]]:
    """``names`` in windows of about :data:`_READ_CELLS` cells of row group ``group``."""
    width = max(1, _READ_CELLS // max(1, parquet.metadata.row_group(group).num_rows))
    for first in range(0, len(names), width):
        yield names[first:first + width]


def open_checked(path: Path) -> pq.ParquetFile:
    """``path`` opened for reading with every page's checksum checked; DamagedFileError naming
    the file when it cannot be opened."""
    try:
        return pq.ParquetFile(path, page_checksum_verification=True)
    except (OSError, pa.ArrowException) as error:
        raise DamagedFileError(path, f"its records cannot be read ({error})") from None


def _read_columns(parquet: pq.ParquetFile, path: Path, group: int, names: list[str]) -> list[pa.Array]:
    """The columns ``names`` of row group ``group``, their pages' checksums checked."""
    try:
        table = parquet.read_row_group(group, columns=names, use_threads=False)  # threads: MBs of heaps
    except (OSError, pa.ArrowException) as error:
        raise DamagedFileError(path, f"its records cannot be read ({error})") from None
    columns = (table.column(name) for name in names)
    return [column.chunk(0) if column.num_chunks == 1 else column.combine_chunks() for column in columns]


@dataclass
class _Owner:
    """A recorder's own schema, as reading its batches needs it: each name's position, the file's
    schema, and the names whose file column has another type (they are restored)."""

    schema: pa.Schema
    position: dict[str, int]
    stored: pa.Schema
    drifted: frozenset[str]


def _owners(tree: dict[str, Any], stored: pa.Schema) -> dict[int, _Owner]:
    """The :class:`_Owner` of each recorder, decoded once per distinct schema."""
    decoded: dict[Any, _Owner] = {}
    owners = {}
    for entry in tree["recorders"]:
        key = entry.get("schema")
        if key not in decoded:
            schema = own_schema(tree, entry)
            decoded[key] = _Owner(schema, {name: index for index, name in enumerate(schema.names)}, stored,
                                  frozenset(each.name for each in schema
                                            if not each.equals(stored.field(each.name), check_metadata=True)))
        owners[entry["id"]] = decoded[key]
    return owners


@dataclass
class _Window:
    """Consecutive rows of one recorder in a row group (``BATCH_ROWS`` at most), and the values of
    its keys there: ``full`` keys (a value in one row of ``SPARSE_CELLS_PER_VALUE`` or more) as
    an array of every row and their number of values; for each ``sparse`` key, the rows holding
    a value (counted from ``start``), and an array holding its values from an offset on."""

    node_id: int
    start: int
    stop: int
    full: dict[str, tuple[pa.Array, int]] = field(default_factory=dict)
    sparse: dict[str, tuple[list[int], pa.Array, int]] = field(default_factory=dict)

    def cut_into_batches(self, owner: _Owner, first: bool) -> list[pa.RecordBatch]:
        """The window's rows as batches (its values are let go): one, unless a recorder would
        have sealed them early; then cut where it would have, from each value's row (a full
        key with a gap is read value by value). ``first``: the first batch holds every column
        of the recorder's own schema."""
        import pyarrow.compute as pc

        from .._columns import conform

        rows = self.stop - self.start
        values = sum(held for _, held in self.full.values()) + sum(len(each) for each, _, _ in self.sparse.values())
        if _seals(rows * (len(self.full) + len(self.sparse)), values):
            for name, (column, held) in list(self.full.items()):
                if held < rows:
                    del self.full[name]
                    self.sparse[name] = (pc.indices_nonzero(column.is_valid()).to_pylist(), column.drop_null(), 0)
            events = sorted(((row, name) for name, (each, _, _) in self.sparse.items() for row in each),
                            key=lambda event: event[0])
            cuts = _cut(rows, len(self.full), events)
        else:
            cuts = [(0, rows, {name: each for name, (each, _, _) in self.sparse.items()})]
        pooled, placed = self._pooled_sparse_values()
        found = []
        for start, stop, held in cuts:
            columns = {name: column.slice(start, stop - start) for name, (column, _) in self.full.items()}
            for arrow_type, pool in pooled.items():
                names = [name for name in held if self.sparse[name][1].type == arrow_type]
                if names:
                    columns.update(zip(names, _spread(pool, start, stop, names, held, placed)))
            names = sorted(columns, key=owner.position.__getitem__)
            batch = _own_batch([columns[name] for name in names], names, owner, stop - start)
            if first and batch.num_columns < len(owner.schema):  # (conform drops the rows of no column)
                batch = conform(batch, owner.schema)
            first = False
            found.append(batch)
        self.full, self.sparse = {}, {}
        return found

    def _pooled_sparse_values(self) -> tuple[dict[pa.DataType, pa.Array], dict[str, int]]:
        """The sparse keys' values in one array per type, and where each key's first value is."""
        parts: dict[pa.DataType, list[pa.Array]] = {}
        sizes: dict[pa.DataType, int] = {}
        placed = {}
        for name, (rows, values, offset) in self.sparse.items():
            placed[name] = sizes.get(values.type, 0)
            sizes[values.type] = placed[name] + len(rows)
            parts.setdefault(values.type, []).append(values.slice(offset, len(rows)))
        return {arrow_type: pa.concat_arrays(group) for arrow_type, group in parts.items()}, placed


def _windows(path: Path, ids: pa.Array, by_id: dict[int, dict[str, Any]]) -> list[_Window]:
    """The row group's runs of rows of one recorder (given its recorder ids), cut at ``BATCH_ROWS``."""
    import pyarrow.compute as pc

    from ..recorder import BATCH_ROWS

    if ids.null_count:
        raise DamagedFileError(path, f"{ids.null_count} rows without a recorder id")
    if not len(ids):
        return []
    changes = pc.indices_nonzero(pc.not_equal(ids.slice(1), ids.slice(0, len(ids) - 1))).to_pylist()
    starts = [0, *(change + 1 for change in changes)]
    windows = []
    for start, stop in zip(starts, [*starts[1:], len(ids)]):
        node_id = ids[start].as_py()
        if node_id not in by_id:
            raise DamagedFileError(path, f"rows of recorder {node_id}, which its tree does not hold")
        windows.extend(_Window(node_id, first, min(first + BATCH_ROWS, stop))
                       for first in range(start, stop, BATCH_ROWS))
    return windows


def _share_out(name: str, column: pa.Array, windows: list[_Window], starts: list[int],
               owners: dict[int, _Owner]) -> None:
    """Give each window the values of column ``name`` in its rows (``starts``: each window's
    first row): an array of every row where they are many (a slice if the column as a whole
    has many, a copy otherwise), else their rows and where they are in a compact copy."""
    from bisect import bisect_left, bisect_right

    import pyarrow.compute as pc

    from ..recorder import SPARSE_CELLS_PER_VALUE

    values = len(column) - column.null_count
    if not values:
        return
    if values * SPARSE_CELLS_PER_VALUE >= len(column):
        for window in windows:
            if name in owners[window.node_id].position:
                part = column.slice(window.start, window.stop - window.start)
                held = len(part) - part.null_count
                if held * SPARSE_CELLS_PER_VALUE >= len(part):
                    window.full[name] = (part, held)
                elif held:
                    window.sparse[name] = (pc.indices_nonzero(part.is_valid()).to_pylist(), part.drop_null(), 0)
        return
    rows = pc.indices_nonzero(column.is_valid()).to_pylist()
    compact = column.drop_null()
    index = 0
    while index < len(rows):  # window by window, those holding a value of the column
        window = windows[bisect_right(starts, rows[index]) - 1]
        end = bisect_left(rows, window.stop, index)
        if name in owners[window.node_id].position:  # (a key not of its own schema is left, as ever)
            if (end - index) * SPARSE_CELLS_PER_VALUE >= window.stop - window.start:
                part = column.slice(window.start, window.stop - window.start)
                window.full[name] = (pa.concat_arrays([part]), end - index)
            else:
                window.sparse[name] = ([row - window.start for row in rows[index:end]], compact, index)
        index = end


def _cut(rows: int, full: int, events: list[tuple[int, str]]) -> list[tuple[int, int, dict[str, list[int]]]]:
    """Cut ``rows`` rows into batches where a recorder would seal them: ``full`` keys count as a
    value in every row, ``events`` are the other values (row, key) by row. Each batch: its first
    row, the row after its last, and the rows of each of its other keys."""
    from ..recorder import SPARSE_CELLS_PER_VALUE, SPARSE_MIN_CELLS

    cuts: list[tuple[int, int, dict[str, list[int]]]] = []
    start, held, values = 0, {}, 0  # the batch being filled: first row, rows of its other keys, their values

    def sealed_before(limit: int) -> int | None:
        """Where the batch would be sealed among the rows before ``limit``, which hold full keys only."""
        width = full + len(held)
        surplus = width - SPARSE_CELLS_PER_VALUE * full  # cells per row beyond what the full keys pay for
        if surplus <= 0:
            return None
        size = max(-(-SPARSE_MIN_CELLS // width), SPARSE_CELLS_PER_VALUE * values // surplus + 1)
        return start + size if start + size <= limit else None

    index = 0
    while index < len(events):
        row = events[index][0]
        stop = sealed_before(row)
        if stop is not None:
            cuts.append((start, stop, held))
            start, held, values = stop, {}, 0
        while index < len(events) and events[index][0] == row:
            held.setdefault(events[index][1], []).append(row)
            values += 1
            index += 1
        size = row + 1 - start
        if _seals(size * (full + len(held)), values + size * full):
            cuts.append((start, row + 1, held))
            start, held, values = row + 1, {}, 0
    stop = sealed_before(rows)
    if stop is not None:
        cuts.append((start, stop, held))
        start, held = stop, {}
    if start < rows:
        cuts.append((start, rows, held))
    return cuts


def _seals(cells: int, values: int) -> bool:
    """True where a recorder seals its unsealed rows early: ``cells`` (rows x keys) for too few ``values``."""
    from ..recorder import SPARSE_CELLS_PER_VALUE, SPARSE_MIN_CELLS

    return cells >= SPARSE_MIN_CELLS and cells > SPARSE_CELLS_PER_VALUE * values


def _spread(values: pa.Array, start: int, stop: int, names: list[str], held: dict[str, list[int]],
            placed: dict[str, int]) -> list[pa.Array]:
    """The columns ``names`` over rows ``start`` to ``stop``: each null but at its ``held`` rows,
    which take its next ``values`` (from ``placed``, moved on). One array is taken from
    ``values`` for all of them, and sliced: one allocation per batch, not one per column."""
    length = stop - start
    cells = length * len(names)
    indices = array("i", bytes(4 * cells))
    valid = bytearray((cells + 7) // 8)
    filled = 0
    for slot, name in enumerate(names):
        base, first = slot * length - start, placed[name]
        for index, row in enumerate(held[name], first):
            cell = base + row
            indices[cell] = index
            valid[cell >> 3] |= 1 << (cell & 7)
        filled += len(held[name])
        placed[name] = first + len(held[name])
    taking = pa.Array.from_buffers(pa.int32(), cells, [pa.py_buffer(valid), pa.py_buffer(indices)], cells - filled)
    block = values.take(taking)
    return [block.slice(slot * length, length) for slot in range(len(names))]


def _own_batch(arrays: list[pa.Array], names: list[str], owner: _Owner, rows: int) -> pa.RecordBatch:
    """The file's columns ``names`` as a batch of the recorder's own types."""
    if not names:
        return empty_rows_batch(rows)
    fields = [owner.schema.field(name) for name in names]
    if owner.drifted.isdisjoint(names):
        return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))
    as_stored = pa.Table.from_arrays(arrays, schema=pa.schema([owner.stored.field(name) for name in names]))
    return restore(as_stored, pa.schema(fields)).combine_chunks().to_batches()[0]
