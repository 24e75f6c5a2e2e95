"""One Parquet file that holds a recorder tree: records as rows, the tree in its metadata.

Columns: ``__recorder__`` (the id of the recorder that committed the row, rows grouped by
recorder) and one column per key. The file's key-value metadata ``rigorous_recorder.tree``
is JSON: one entry per recorder with its id, parent id, local data, row count and the
Arrow schema of its own columns (so types survive the file's shared schema). Any Parquet
reader sees the records; this module rebuilds the tree. Nothing is ever unpickled.
"""

from __future__ import annotations

import base64
import functools
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ._columns import conform, empty_rows_batch, restore, unified_schema
from ._files import temporary_path_beside
from ._values import from_json, to_json
from .errors import CollectionError
from .recorder import Recorder

TREE_KEY = b"rigorous_recorder.tree"
RECORDER_COLUMN = "__recorder__"
FORMAT_VERSION = 1


@dataclass
class TreeNode:
    """One recorder as stored: identity, parent, local data, and a way to read its batches."""

    id: int
    parent: int | None
    local_data: dict[str, Any]
    batches: Callable[[], Iterable[pa.RecordBatch]] = lambda: ()


_ROW_GROUP_ROWS = 1 << 17
_RECORDER_FIELD = pa.field(RECORDER_COLUMN, pa.int32())


def _tagged_batches(nodes: Sequence[TreeNode]) -> Iterator[pa.RecordBatch]:
    """Every node's batches with the ``__recorder__`` column in front."""
    for node in nodes:
        ids = pa.scalar(node.id, pa.int32())
        for batch in node.batches():
            yield batch.add_column(0, _RECORDER_FIELD, pa.repeat(ids, batch.num_rows))


def records_table(nodes: Sequence[TreeNode]) -> pa.Table:
    """Every node's records in memory, as :func:`write_tree_file` would store them."""
    batches = list(_tagged_batches(nodes))
    schema = unified_schema([pa.schema([_RECORDER_FIELD]), *(batch.schema for batch in batches)])
    return pa.Table.from_batches([conform(batch, schema) for batch in batches], schema)


def write_tree_file(path: Path, nodes: Sequence[TreeNode], extra: dict[str, Any] | None = None) -> int:
    """Write ``nodes`` and their records to ``path`` atomically; returns the number of records.

    Batches are streamed twice (once for schemas and counts, once to write), so memory
    holds one row group at a time, whatever the size of the run.
    """
    entries, schemas = [], []
    for node in nodes:
        node_schemas, rows = [], 0
        for batch in node.batches():
            rows += batch.num_rows
            if not any(batch.schema.equals(seen, check_metadata=True) for seen in node_schemas):  # JSON is metadata
                node_schemas.append(batch.schema)
        schema = unified_schema(node_schemas)
        schemas.append(schema)
        entries.append({
            "id": node.id,
            "parent": node.parent,
            "local_data": node.local_data,
            "rows": rows,
            "schema": base64.b64encode(schema.serialize().to_pybytes()).decode("ascii"),
        })
    schema = unified_schema([pa.schema([_RECORDER_FIELD]), *schemas])
    tree = {"format": FORMAT_VERSION, "recorders": entries, **(extra or {})}
    schema = schema.with_metadata({TREE_KEY: to_json(tree)})
    temporary = temporary_path_beside(path)
    try:
        with pq.ParquetWriter(temporary, schema, compression="zstd") as writer:
            group: list[pa.RecordBatch] = []
            for batch in _tagged_batches(nodes):
                group.append(conform(batch, schema))
                if sum(each.num_rows for each in group) >= _ROW_GROUP_ROWS:
                    writer.write_table(pa.Table.from_batches(group, schema))
                    group = []
            if group:
                writer.write_table(pa.Table.from_batches(group, schema))
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return sum(entry["rows"] for entry in entries)


def read_tree_schema(path: Path) -> pa.Schema:
    """The schema of a file written by :func:`write_tree_file`, its tree in the metadata."""
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowException) as error:
        raise CollectionError(f"{str(path)!r} is not a rigorous_recorder file: {error}") from None
    if TREE_KEY not in (schema.metadata or {}):
        raise CollectionError(f"{str(path)!r} is a Parquet file without a rigorous_recorder tree")
    return schema


def tree_of(schema: pa.Schema) -> dict[str, Any]:
    """The tree stored in the metadata of a schema read by :func:`read_tree_schema`."""
    return from_json(schema.metadata[TREE_KEY].decode("utf-8"))


def read_tree_metadata(path: Path) -> dict[str, Any]:
    """The tree stored in a file's footer, without reading its rows."""
    return tree_of(read_tree_schema(path))


def read_tree_file(path: Path) -> tuple[dict[str, Any], list[TreeNode]]:
    """The tree of a file written by :func:`write_tree_file`, and its nodes.

    The rows are read on the first call of any node's ``batches``, once for all nodes.
    """
    tree = read_tree_metadata(path)
    loaded: dict[int, list[pa.RecordBatch]] = {}

    def load(node_id: int) -> list[pa.RecordBatch]:
        if not loaded:
            loaded.update(_read_batches(path, tree))
        return loaded[node_id]

    nodes = [
        TreeNode(entry["id"], entry["parent"], entry["local_data"], functools.partial(load, entry["id"]))
        for entry in tree["recorders"]
    ]
    return tree, nodes


def _read_batches(path: Path, tree: dict[str, Any]) -> dict[int, list[pa.RecordBatch]]:
    table = pq.read_table(path)
    batches, offset = {}, 0
    for entry in tree["recorders"]:
        schema = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(entry["schema"])))
        rows = entry["rows"]
        own = restore(table.slice(offset, rows), schema)
        offset += rows
        if not rows:
            batches[entry["id"]] = []
        elif not own.num_columns:  # rows without values keep their count
            batches[entry["id"]] = [empty_rows_batch(rows)]
        else:
            batches[entry["id"]] = own.to_batches()
    return batches


def build_recorders(nodes: Sequence[TreeNode]) -> dict[int, Recorder]:
    """Recorders for ``nodes``, linked to their parents, holding their batches in memory."""
    recorders: dict[int, Recorder] = {}
    for node in nodes:
        recorder = Recorder(node.local_data)
        recorder._batches = list(node.batches())
        recorder._sealed_rows = sum(batch.num_rows for batch in recorder._batches)
        recorders[node.id] = recorder
    for node in nodes:
        if node.parent is not None:
            recorders[node.id].set_parent(recorders[node.parent])
    return recorders


def save_tree(recorder: Recorder, path: Path) -> None:
    """Save ``recorder``, its descendants and its ancestors' data (the lineage it sees)."""
    ancestors = []
    parent = recorder.parent
    while parent is not None:
        ancestors.append(parent)
        parent = parent.parent
    order = [*reversed(ancestors), *recorder._subtree()]
    ids = {id(each): number for number, each in enumerate(order)}
    nodes = [
        TreeNode(
            ids[id(each)],
            None if each.parent is None or id(each.parent) not in ids else ids[id(each.parent)],
            dict(each.local_data),
            # ancestors are saved for their data, not for their own records or other children
            _constant([] if each in ancestors else each._sealed_batches()),
        )
        for each in order
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_tree_file(path, nodes, {"saved": ids[id(recorder)]})


def load_tree(path: Path) -> Recorder:
    """Load what :func:`save_tree` wrote; returns the recorder that was saved."""
    tree, nodes = read_tree_file(path)
    recorders = build_recorders(nodes)
    return recorders[tree.get("saved", nodes[0].id if nodes else 0)]


def _constant(batches: list[pa.RecordBatch]) -> Callable[[], list[pa.RecordBatch]]:
    return lambda: batches
