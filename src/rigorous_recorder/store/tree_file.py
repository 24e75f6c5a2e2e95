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
    """The schema of a records file, its tree in the metadata; DamagedFileError if unreadable."""
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowException) as error:
        raise DamagedFileError(path, f"not a rigorous_recorder file: not readable as Parquet ({error})") from None
    if TREE_KEY not in (schema.metadata or {}):
        raise DamagedFileError(path, "not a rigorous_recorder file: a Parquet file without a rigorous_recorder tree")
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


def _read_batches(path: Path, tree: dict[str, Any]) -> dict[int, list[pa.RecordBatch]]:
    """Each recorder's rows, with its own column types restored (once per distinct schema)."""
    import pyarrow.compute as pc

    try:
        table = pq.read_table(path, page_checksum_verification=True)
    except (OSError, pa.ArrowException) as error:
        raise DamagedFileError(path, f"its records cannot be read ({error})") from None
    by_id = {entry["id"]: entry for entry in tree["recorders"]}
    ids = table.column(RECORDER_COLUMN)
    unknown = set(pc.unique(ids).to_pylist()) - by_id.keys()
    if unknown:
        raise DamagedFileError(path, f"rows of recorders {sorted(unknown)}, which its tree does not hold")
    by_schema: dict[Any, list[int]] = {}
    for entry in tree["recorders"]:
        if entry["rows"]:
            by_schema.setdefault(entry.get("schema"), []).append(entry["id"])
    batches: dict[int, list[pa.RecordBatch]] = {}
    for stored, members in by_schema.items():
        part = table.filter(pc.is_in(ids, pa.array(members, pa.int32()))) if len(by_schema) > 1 else table
        part = part.take(pc.sort_indices(part.column(RECORDER_COLUMN)))  # a stable sort: commit order kept
        own = restore(part.drop_columns([RECORDER_COLUMN]), own_schema(tree, by_id[members[0]]))
        offset = 0
        for node_id in sorted(members):
            rows = by_id[node_id]["rows"]
            piece = own.slice(offset, rows)
            offset += rows
            batches[node_id] = piece.to_batches() if own.num_columns else [empty_rows_batch(rows)]
    return batches
