"""One Parquet file that holds a recorder tree: records as rows, the tree in its metadata.

Columns: ``__recorder__`` (the id of the recorder that committed the row, rows grouped by
recorder) and one column per key. The file's key-value metadata ``rigorous_recorder.tree``
is JSON: one entry per recorder with its id, parent id, local data, row count and the
Arrow schema of its own columns (so types survive the file's shared schema). Any Parquet
reader sees the records; this module rebuilds the tree. Nothing is ever unpickled.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ._columns import conform_all, empty_rows_batch, restore
from ._files import temporary_path_beside
from ._values import from_json, to_json
from .errors import CollectionError
from .recorder import Recorder

TREE_KEY = b"rigorous_recorder.tree"
RECORDER_COLUMN = "__recorder__"
FORMAT_VERSION = 1


@dataclass
class TreeNode:
    """One recorder as stored: identity, parent, local data, and its sealed batches."""

    id: int
    parent: int | None
    local_data: dict[str, Any]
    batches: list[pa.RecordBatch] = field(default_factory=list)


def write_tree_file(path: Path, nodes: Sequence[TreeNode], extra: dict[str, Any] | None = None) -> None:
    """Write ``nodes`` and their records to ``path`` atomically (temp file, then rename)."""
    entries, batches = [], []
    for node in nodes:
        schema, own = conform_all(node.batches) if node.batches else (pa.schema([]), [])
        rows = sum(batch.num_rows for batch in own)
        entries.append({
            "id": node.id,
            "parent": node.parent,
            "local_data": node.local_data,
            "rows": rows,
            "schema": base64.b64encode(schema.serialize().to_pybytes()).decode("ascii"),
        })
        for batch in own:
            ids = pa.repeat(pa.scalar(node.id, pa.int32()), batch.num_rows)
            batches.append(pa.RecordBatch.from_arrays([ids, *batch.columns], schema=batch.schema.insert(0, pa.field(RECORDER_COLUMN, pa.int32()))))
    if batches:
        schema, batches = conform_all(batches)
    else:
        schema = pa.schema([pa.field(RECORDER_COLUMN, pa.int32())])
    tree = {"format": FORMAT_VERSION, "recorders": entries, **(extra or {})}
    table = pa.Table.from_batches(batches, schema=schema)
    table = table.replace_schema_metadata({TREE_KEY: to_json(tree)})
    temporary = temporary_path_beside(path)
    try:
        pq.write_table(table, temporary, compression="zstd")
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def read_tree_file(path: Path) -> tuple[dict[str, Any], list[TreeNode]]:
    """Read a file written by :func:`write_tree_file`: its tree metadata and its nodes."""
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as error:
        raise CollectionError(f"{str(path)!r} is not a rigorous_recorder file: {error}") from None
    metadata = table.schema.metadata or {}
    if TREE_KEY not in metadata:
        raise CollectionError(f"{str(path)!r} is a Parquet file without a rigorous_recorder tree")
    tree = from_json(metadata[TREE_KEY].decode("utf-8"))
    nodes, offset = [], 0
    for entry in tree["recorders"]:
        schema = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(entry["schema"])))
        rows = entry["rows"]
        own = restore(table.slice(offset, rows), schema) if rows else None
        offset += rows
        batches = own.to_batches() if own is not None else []
        if own is not None and not own.num_columns:  # rows without values keep their count
            batches = [empty_rows_batch(rows)]
        nodes.append(TreeNode(entry["id"], entry["parent"], entry["local_data"], batches))
    return tree, nodes


def build_recorders(nodes: Sequence[TreeNode]) -> dict[int, Recorder]:
    """Recorders for ``nodes``, linked to their parents, holding their batches in memory."""
    recorders: dict[int, Recorder] = {}
    for node in nodes:
        recorder = Recorder(node.local_data)
        recorder._batches = node.batches
        recorder._sealed_rows = sum(batch.num_rows for batch in node.batches)
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
            [] if each in ancestors else each._sealed_batches(),
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
