"""What a records file's footer says, read without pyarrow: the recorder tree, the layout of
the columns, the row count and each column's statistics.

A query over finished runs needs nothing else from their records files (DuckDB scans the rows
in place), so each footer is decoded in Python (:mod:`~rigorous_recorder.store.parquet_footer`):
a fresh process answering a query loads neither pyarrow nor numpy.
:mod:`~rigorous_recorder.store.tree_file` writes the tree and reads it back with pyarrow.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._values import from_json
from ..errors import DamagedFileError
from .layout import RUN_NODE
from .parquet_footer import ChunkStatistics, FileFooter, read_footer

if TYPE_CHECKING:
    from .._kinds import Layout

#: The key of a records file's Parquet metadata that holds its tree (JSON).
TREE_KEY = b"rigorous_recorder.tree"
#: The version of the tree's format.
TREE_FORMAT = 2
#: The key of a pack file's Parquet metadata that holds its layout (JSON), as a tree lists a
#: records file's: a pack's files hold many runs' rows, so no tree.
PACK_LAYOUT_KEY = b"rigorous_recorder.pack_layout"
#: The key under which Parquet writers keep the Arrow schema, whose metadata holds a second copy of the tree.
ARROW_SCHEMA_KEY = b"ARROW:schema"


def parse_tree(text: bytes, path: Path | str | None = None) -> dict[str, Any]:
    """The tree stored as ``text`` in the footer of ``path``; DamagedFileError if it is damaged."""
    try:
        tree = from_json(text.decode("utf-8"))
        for entry in tree["recorders"]:
            if type(entry["id"]) is not int or type(entry["rows"]) is not int or type(entry["local_data"]) is not dict \
                    or entry["parent"] is not None and type(entry["parent"]) is not int:
                raise TypeError(f"a recorder entry of the wrong shape: {entry!r}"[:200])
    except (ValueError, KeyError, TypeError) as error:
        raise DamagedFileError(path, f"its tree metadata is damaged ({error!r})") from None
    return tree


def tree_rows(tree: dict[str, Any]) -> int:
    """The records a tree counts, its recorders' together."""
    return sum(entry["rows"] for entry in tree["recorders"])


def lineages(entries: Sequence[dict[str, Any]], root_data: dict[str, Any]) -> Iterator[tuple[int, dict[str, Any]]]:
    """Each recorder of a tree that may hold records (one an entry lists with ``rows`` 0 holds
    none): its id, and its data merged with its ancestors' (nearest wins, as in Python);
    ``root_data`` stands for the root's (the run's bookkeeping keys)."""
    by_id = {entry["id"]: entry for entry in entries}
    merged: dict[int, dict[str, Any]] = {}

    def lineage_of(node_id: int) -> dict[str, Any]:
        chain = []
        while node_id in by_id and node_id not in merged:
            chain.append(node_id)
            node_id = by_id[node_id]["parent"]
        data = merged.get(node_id, {})
        for each in reversed(chain):  # root first, so the nearest value is written last
            own = root_data if each == RUN_NODE else by_id[each]["local_data"]
            data = merged[each] = {**data, **own}
        return data

    for node_id, entry in by_id.items():
        if entry.get("rows") != 0:
            yield node_id, lineage_of(node_id)


@dataclass
class ColumnStatistics:
    """What a file's statistics say of one column: its values (not null; None when some row
    group does not count its nulls) and each row group's least and greatest int (None: no
    range, or not an int column)."""

    values: int | None = 0
    ranges: list[tuple[bool, int | None, int | None]] = field(default_factory=list)  # holds values, min, max

    def add(self, rows: int, chunk: ChunkStatistics) -> None:
        """Take one row group's statistics into account."""
        nulls = chunk.nulls
        self.values = None if nulls is None or self.values is None else self.values + rows - nulls
        self.ranges.append((nulls is None or rows > nulls, chunk.least, chunk.greatest))

    def int_range(self, leaves: bool) -> tuple[int | None, int | None]:
        """The least and greatest value of an int column: of the row groups holding values, or
        of every row group's leaves (a list's ints) for ``leaves``; (None, None) if unknown."""
        if self.values is None and not leaves:
            return None, None  # which row groups hold values is unknown
        bounds = [(least, greatest) for has_values, least, greatest in self.ranges if leaves or has_values]
        if not bounds or any(least is None or greatest is None for least, greatest in bounds):
            return None, None
        return min(least for least, _ in bounds), max(greatest for _, greatest in bounds)  # type: ignore[type-var]


class Footer:
    """One Parquet file's footer: its rows, each column's statistics and, for a records file,
    its tree and layout."""

    def __init__(self, path: Path, footer: FileFooter) -> None:
        self.path = path
        self.rows = sum(rows for rows, _ in footer.row_groups)
        self._names = footer.names
        self._tree_text = footer.metadata.get(TREE_KEY)
        self._pack_layout_text = footer.metadata.get(PACK_LAYOUT_KEY)
        self._arrow_schema = footer.metadata.get(ARROW_SCHEMA_KEY)
        self._statistics: list[ColumnStatistics] = []
        for rows, chunks in footer.row_groups:
            self._statistics += [ColumnStatistics() for _ in range(len(chunks) - len(self._statistics))]
            for column, chunk in zip(self._statistics, chunks):
                column.add(rows, chunk)

    @classmethod
    def read(cls, path: Path) -> Footer:
        """The footer of the Parquet file at ``path``; DamagedFileError when it is not a whole
        Parquet file, FileNotFoundError when it is gone."""
        return cls(path, read_footer(path))

    def statistics(self, position: int) -> ColumnStatistics:
        """The statistics of the column at ``position`` (a file without row groups: no values)."""
        return self._statistics[position] if position < len(self._statistics) else ColumnStatistics()

    @cached_property
    def tree(self) -> dict[str, Any]:
        """The recorder tree; DamagedFileError when the file has none or it is damaged (also when
        the copy of it in the Arrow schema, which pyarrow reads, differs: no checksum covers a footer)."""
        if self._tree_text is None:
            raise DamagedFileError(self.path, "not a rigorous_recorder file: a Parquet file without a "
                                              "rigorous_recorder tree")
        if self._arrow_schema is not None and not _holds(self._arrow_schema, self._tree_text):
            raise DamagedFileError(self.path, "its tree metadata is damaged (its two copies in the footer differ)")
        return parse_tree(self._tree_text, self.path)

    @cached_property
    def layout(self) -> Layout:
        """The layout its metadata lists: a pack's file's, or else the tree's; a records file
        written before trees listed it is asked of pyarrow."""
        if self._pack_layout_text is not None:
            listing = "layout"
            if self._arrow_schema is not None and not _holds(self._arrow_schema, self._pack_layout_text):
                raise DamagedFileError(self.path, "its layout metadata is damaged (its two copies in the footer differ)")
            try:
                columns = from_json(self._pack_layout_text.decode("utf-8"))
            except ValueError as error:
                raise DamagedFileError(self.path, f"its layout metadata is damaged ({error!r})") from None
        else:
            listing = "tree"
            columns = self.tree.get("columns")
            if columns is None:
                from .._kinds import layout_of
                from .tree_file import read_tree_schema

                return layout_of(read_tree_schema(self.path))
        try:
            layout = tuple((str(name), str(arrow_type), None if kind is None else str(kind))
                           for name, arrow_type, kind in columns)
        except (TypeError, ValueError) as error:
            raise DamagedFileError(self.path, f"its {listing} metadata is damaged (columns: {error!r})") from None
        named = [name for name, _, _ in layout]
        if named != self._names:  # DuckDB reads files of one layout by these names
            differ = next((pair for pair in zip(named, self._names) if pair[0] != pair[1]), (len(named), len(self._names)))
            raise DamagedFileError(self.path, f"its Parquet schema names its columns otherwise than its {listing} "
                                              f"({differ[1]!r} where the {listing} has {differ[0]!r})")
        return layout


def _holds(arrow_schema: bytes, text: bytes) -> bool:
    """True when ``arrow_schema`` (base64, as Parquet writers keep it) holds ``text`` verbatim."""
    try:
        return text in base64.b64decode(arrow_schema, validate=True)
    except ValueError:  # not base64
        return False
