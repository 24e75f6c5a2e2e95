"""One run's folder: its bookkeeping, its tree, its segments and its compacted records."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from itertools import chain
from pathlib import Path
from typing import Any

import pyarrow as pa

from .._files import atomic_write_text
from .._tree_file import TreeNode, read_tree_file, write_tree_file
from .._values import from_json, to_json
from .segments import read_segment

RUNNING, OK, ERROR, CRASHED = "running", "ok", "error", "crashed"

#: The node id of the bookkeeping recorder (the six keys); the experiment recorder is 1.
BOOKKEEPING_ID, EXPERIMENT_ID = 0, 1


class RunFolder:
    """Reads and writes the files of one run (``runs/<run id>/``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.id = path.name
        self.segments = path / "segments"

    # -- run.json: the bookkeeping ---------------------------------------------------------

    def read_info(self) -> dict[str, Any]:
        """The run's bookkeeping (number, status, times, process)."""
        return json.loads((self.path / "run.json").read_text(encoding="utf-8"))

    def write_info(self, info: dict[str, Any]) -> None:
        """Replace run.json atomically."""
        atomic_write_text(self.path / "run.json", json.dumps(info, indent=1))

    # -- recorders.json: the tree while running ------------------------------------------------

    def read_tree(self) -> list[dict[str, Any]]:
        """The recorder tree as last written (id, parent, local_data per recorder)."""
        path = self.path / "recorders.json"
        if not path.exists():
            return []
        return from_json(path.read_text(encoding="utf-8"))

    def write_tree(self, nodes: list[dict[str, Any]]) -> None:
        """Replace recorders.json atomically."""
        atomic_write_text(self.path / "recorders.json", to_json(nodes))

    # -- records ---------------------------------------------------------------------------

    def compacted_path(self, info: dict[str, Any]) -> Path | None:
        """The run's current Parquet file, if it was ever compacted."""
        name = info.get("records")
        return self.path / name if name else None

    def segment_paths(self) -> dict[int, list[Path]]:
        """Segment files per recorder id, in writing order (named ``<id>.<session>.<n>.arrow``)."""
        found: dict[int, list[tuple[int, int, Path]]] = {}
        if self.segments.is_dir():
            for path in self.segments.glob("*.arrow"):
                recorder, session, number = (int(part) for part in path.name.split(".")[:3])
                found.setdefault(recorder, []).append((session, number, path))
        return {recorder: [path for *_, path in sorted(paths)] for recorder, paths in found.items()}

    def nodes(self, info: dict[str, Any]) -> list[TreeNode]:
        """Every recorder of the run with its batches: the compacted file's, then the segments'.

        The bookkeeping recorder's local data comes from run.json, the authority for it.
        """
        compacted: dict[int, TreeNode] = {}
        path = self.compacted_path(info)
        if path is not None:
            _, stored = read_tree_file(path)
            compacted = {node.id: node for node in stored}
        segments = self.segment_paths()
        tree = self.read_tree() or [
            {"id": node.id, "parent": node.parent, "local_data": node.local_data} for node in compacted.values()
        ]
        nodes = []
        for entry in tree:
            node_id = entry["id"]
            earlier = compacted[node_id].batches if node_id in compacted else _nothing
            paths = segments.get(node_id, [])
            local_data = bookkeeping(info) if node_id == BOOKKEEPING_ID else entry["local_data"]
            nodes.append(TreeNode(node_id, entry["parent"], local_data, _chained(earlier, paths)))
        return nodes

    def compact(self, info: dict[str, Any]) -> dict[str, Any]:
        """Merge the compacted file and the segments into a new Parquet file; returns new info.

        The new file is written under a new name, then run.json points to it, then the old
        file and the segments go: a crash at any step leaves a consistent run.
        """
        nodes = self.nodes(info)
        generation = info.get("generation", 0) + 1
        name = f"records-{generation}.parquet"
        count = write_tree_file(self.path / name, nodes, {"run": self.id})
        info = {**info, "records": name, "generation": generation, "records_count": count}
        self.write_info(info)
        self.remove_leftovers(info)
        return info

    def remove_leftovers(self, info: dict[str, Any]) -> None:
        """Delete segments and Parquet files that the current run.json no longer names."""
        shutil.rmtree(self.segments, ignore_errors=True)
        (self.path / "recorders.json").unlink(missing_ok=True)
        for path in self.path.glob("records-*.parquet"):
            if path.name != info.get("records"):
                path.unlink(missing_ok=True)
        for path in self.path.glob(".*.tmp"):
            path.unlink(missing_ok=True)


def bookkeeping(info: dict[str, Any]) -> dict[str, Any]:
    """The six keys every record of a run sees, from its run.json."""
    return {
        "experiment_number": info["experiment_number"],
        "error_number": info["error_number"],
        "had_error": info["had_error"],
        "experiment_start_time": info["experiment_start_time"],
        "experiment_end_time": info.get("experiment_end_time"),
        "experiment_duration": info.get("experiment_duration"),
    }


def _nothing() -> list[pa.RecordBatch]:
    return []


def _chained(earlier, paths: list[Path]):  # noqa: ANN001, ANN202
    def batches() -> Iterator[pa.RecordBatch]:
        return chain(earlier(), *(read_segment(path) for path in paths))

    return batches
