"""The flat views of a collection: ``records`` (every record, its whole lineage as columns),
``experiments`` (one row per run) and ``columns`` (what each column of ``records`` holds).

Records are stored once per row with their recorder's id; parent data is stored once per
recorder. The view joins the two at query time: a small ``lineage`` table (one row per
recorder of every run: the merged data of the recorder and its ancestors) against the runs'
Parquet files, which DuckDB scans in place. A key a record holds itself wins over the same
key inherited (nearest wins, as in Python).

The view is queryable whatever keys and values the runs hold. The rule, per key:

* one typed column, of the type most of the key's values have across every run (its
  records' own values and its inherited values, counted together). Ints and floats count
  together and make a DOUBLE column (BIGINT when no value is a float);
* the values of any other type go to the key's companion column ``<name>~json``, as the
  JSON text that :func:`~rigorous_recorder._values.to_json` writes (DuckDB's ``->>`` and
  ``from_json`` read it, and so does ``json.loads``). So do ints beyond ±2**53 in a DOUBLE
  column, which a float would round; ints beyond int64 are JSON everywhere. A row's value is
  in exactly one of the two columns, or in neither when it has none;
* column names follow :mod:`~rigorous_recorder._naming` (case twins and names the view
  reserves get a ``~2`` suffix; the ``columns`` view maps each column back to its key).

While no run changes, ``collection.sql()`` keeps the views; asked again, it copies
``records`` into memory as one table (up to :data:`IN_MEMORY_CELLS` values), so that later
queries read no file and join nothing.

Every row of ``records`` also carries its run's ``run_id`` and ``status``. ``had_error`` is
NULL while a run is running; for a stopped run it is True when the run failed or crashed.
A run whose files cannot be read (status ``damaged``) is listed in ``experiments`` and adds
no records.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from ._kinds import (
    JSON,
    JSON_TEXT,
    Layout,
    StoredColumn,
    choose,
    json_kind_sql,
    layout_of,
    sql_type,
    split,
    stored_columns,
    unlist,
    value_kind,
    vote,
)
from ._naming import RECORDER_COLUMN, SOURCE_COLUMN, companion, view_names
from .query_text import quote_literal, quote_name
from .errors import DamagedFileError
from .store.layout import BOOKKEEPING_KEYS, DAMAGED, EXPERIMENT_NODE, RUN_NODE, RUNNING, bookkeeping, bookkeeping_columns
from .store.layout import RECORDER_COLUMN as STORED_RECORDER_COLUMN
from .store.run_folder import RunFolder
from .store.catalog import Pack, PackedRun
from .store.footer import Footer, lineages
from .store.verified import check_pages
from ._values import EXACT_FLOAT_INT, INT64_MAX, INT64_MIN

if TYPE_CHECKING:
    import pyarrow as pa

Runs = Sequence[tuple[RunFolder, dict[str, Any]]]

#: The columns every row of ``records`` has that no key gives, and their types.
HANDLES = {"run_id": "VARCHAR", "status": "VARCHAR"}
#: The bookkeeping keys keep these types whatever values a record gives them.
_BOOKKEEPING_KINDS = dict(zip(BOOKKEEPING_KEYS, ("BIGINT", "BIGINT", "BOOLEAN", "DOUBLE", "DOUBLE", "DOUBLE")))
#: The columns of ``experiments`` that no experiment info gives.
RUN_COLUMNS = {"run_id": "VARCHAR", **_BOOKKEEPING_KINDS, "status": "VARCHAR", "records": "BIGINT",
               "error": "VARCHAR"}
#: The column of the views' working tables that orders runs as ``experiments`` lists them.
_ORDER_COLUMN = "~order"


@dataclass
class Part:
    """Records that one scan reads: Parquet files of one layout, a pack of runs, or a running
    run's table."""

    layout: Layout
    columns: list[StoredColumn]
    files: list[Footer] = field(default_factory=list)
    table: pa.Table | None = None
    first_source: int = 0  # the ~source of its first file or packed run; the next count up from it
    sources: int = 0  # how many ~source ids it spans
    run_index: int | None = None  # a pack's column of run indexes
    taken: list[int] | None = None  # a pack's runs read from it (None: all)
    rows: int = 0  # rows in its files or table
    in_memory: str | None = None  # the temporary table its files' rows were copied into

    @classmethod
    def of_pack(cls, footer: Footer | None, runs: int) -> Part:
        """A file of a pack (its run index column last; its footer, known once the pack is
        checked) holding ``runs`` runs."""
        assert footer is not None, "a pack is read once checked"
        layout = footer.layout
        return cls(layout, stored_columns(layout[:-1]), [footer], sources=runs, run_index=len(layout) - 1)

    @property
    def recorder(self) -> int:
        """The position of the recorder id column."""
        return next(position for position, (name, _, _) in enumerate(self.layout) if name == STORED_RECORDER_COLUMN)

    def scan(self, name: str) -> str:
        """SQL for the rows of this part, every column named by position (c0, c1, ...)."""
        if self.table is not None:
            return name
        if self.in_memory is not None:
            return f"{quote_name(self.in_memory)} AS {name}"
        names = ", ".join(f"c{index}" for index in range(len(self.layout)))
        files = ", ".join(quote_literal(str(footer.path)) for footer in self.files)
        return f"read_parquet([{files}]) AS {name}({names})"

    def source_sql(self) -> str:
        """SQL for each row's source id."""
        if self.table is not None:
            return str(self.first_source)
        if self.run_index is not None:
            return f"CAST(c{self.run_index} AS INTEGER) + {self.first_source}"
        return f"CAST(file_index AS INTEGER) + {self.first_source}"

    def conditions(self) -> list[str]:
        """SQL conditions that keep only the rows of the runs read from this part."""
        if self.taken is None:
            return []
        return [f"c{self.run_index} IN ({', '.join(map(str, self.taken)) or 'NULL'})"]


def _where(conditions: list[str]) -> str:
    return f" WHERE {' AND '.join(conditions)}" if conditions else ""


@dataclass
class PackTrees:
    """The trees of a pack's runs as two more parts: each recorder's own data (``entries``),
    and the merged data of each recorder that holds records (``lineage``)."""

    entries: Part
    lineage: Part
    keys: list[tuple[str, int]]  # the recorders' keys, each with the first run (index in the pack) holding it
    experiment_keys: list[tuple[str, int]]  # the same for the experiment recorders' keys

    @classmethod
    def of(cls, pack: Pack) -> PackTrees:
        runs = len(pack.runs)
        return cls(Part.of_pack(pack.entries_footer, runs), Part.of_pack(pack.lineage_footer, runs), pack.keys,
                   pack.experiment_keys)

    def follow(self, records: Part) -> None:
        """Take the source ids and runs of the pack's records part."""
        for part in (self.entries, self.lineage):
            part.first_source, part.taken = records.first_source, records.taken


@dataclass
class RunSource:
    """One run as the flat views read it."""

    folder: RunFolder
    info: dict[str, Any]
    entries: list[dict[str, Any]]  # id, parent and local data of each recorder (a packed run: in its pack)
    count: int | None
    id: int = -1  # the ~source of its rows, given once every part is known
    trees: PackTrees | None = None  # a packed run's: its pack's trees
    index: int = -1  # a packed run's index in its pack


def _sources(runs: Runs, connection: duckdb.DuckDBPyConnection,
             packed: Mapping[str, PackedRun]) -> tuple[list[RunSource], list[Part]]:
    """Every run, and the parts its records are read from (files of one layout share a part,
    runs read from a pack share the pack's part)."""
    sources: list[RunSource] = []
    parts: list[tuple[Part, list[RunSource]]] = []
    by_layout: dict[Layout, tuple[Part, list[RunSource]]] = {}
    by_pack: dict[Path, tuple[Part, list[RunSource], PackTrees]] = {}
    for folder, info in runs:
        try:
            if info["status"] == DAMAGED:
                sources.append(RunSource(folder, info, [], 0))
            elif folder.id in packed:
                run = packed[folder.id]
                if run.pack.path not in by_pack:
                    part = Part.of_pack(run.pack.footer, len(run.pack.runs))
                    by_pack[run.pack.path] = (part, [], PackTrees.of(run.pack))
                    parts.append(by_pack[run.pack.path][:2])
                _, members, trees = by_pack[run.pack.path]
                source = RunSource(folder, info, [], info.get("records_count"), id=run.index, trees=trees,
                                   index=run.index)
                members.append(source)
                sources.append(source)
            else:
                info, (footer, journal) = folder.read_while_changing(info, _read_in_place)
                if journal is not None:
                    entries, records = journal
                    source = RunSource(folder, info, entries, records.num_rows)
                    sources.append(source)
                    layout = layout_of(records.schema)
                    parts.append((Part(layout, stored_columns(layout), table=records, sources=1), [source]))
                    continue
                folder.check_records_file(info, footer.path, footer.tree, footer.rows)
                source = RunSource(folder, info, footer.tree["recorders"], footer.rows)
                sources.append(source)
                if footer.layout not in by_layout:
                    by_layout[footer.layout] = (Part(footer.layout, stored_columns(footer.layout)), [])
                    parts.append(by_layout[footer.layout])
                part, members = by_layout[footer.layout]
                part.files.append(footer)
                part.sources += 1
                members.append(source)
        except DamagedFileError as error:
            sources.append(RunSource(folder, {**info, "status": DAMAGED, "error": str(error)}, [], 0))
    following = 0
    for part, members in parts:  # a part's files are scanned in order: their ids are consecutive
        part.first_source = following
        if part.run_index is not None:  # a packed run's id is its index in the pack
            for source in members:
                source.id += following
            if len(members) < part.sources:
                part.taken = sorted(source.id - following for source in members)
        else:
            for offset, source in enumerate(members):
                source.id = following + offset
        following += part.sources
    for source in sources:
        if source.id < 0:
            source.id = following
            following += 1
    for index, (part, _) in enumerate(parts):
        _count(part, f"part_{index}", connection)
    for index, (part, _, trees) in enumerate(by_pack.values()):
        trees.follow(part)
        _count(trees.entries, f"entries_{index}", connection, exact=True)
        _count(trees.lineage, f"lineage_{index}", connection, exact=True)
    return sources, [part for part, _ in parts]


def _read_in_place(folder: RunFolder,
                   info: dict[str, Any]) -> tuple[Footer | None, tuple[list[dict[str, Any]], pa.Table] | None]:
    """A run read from its folder: a stopped run whose records are all in its records file, by
    that file's footer (its pages checked once: DuckDB does not), or else its journal read whole
    (its tree entries and table)."""
    if info["status"] != RUNNING and info.get("records") and not folder.journal_paths(info):
        check_pages(folder, info)
        return Footer.read(folder.compacted_path(info)), None
    from .store.tree_file import records_table

    nodes = folder.nodes(info)
    return None, ([node.entry() for node in nodes], records_table(nodes))


def _count(part: Part, name: str, connection: duckdb.DuckDBPyConnection, exact: bool = False) -> None:
    """Count each stored column's values per kind, from Parquet statistics where they exist
    (``exact``: counted by a scan of the part's runs, for small parts)."""
    if part.table is not None:
        part.rows = part.table.num_rows
        connection.register(name, part.table.rename_columns([f"c{index}" for index in range(part.table.num_columns)]))
        for column in part.columns:
            array = part.table.column(column.position)
            column.votes[column.kind] = len(array) - array.null_count
            item, depth = unlist(column.kind)
            if item == "BIGINT" and column.votes[column.kind]:
                import pyarrow.compute as pc  # a sixth of a second: only a running run's ints need it

                for _ in range(depth):
                    array = pc.list_flatten(array)
                low, high = (bound.as_py() for bound in pc.min_max(array).values())
                column.wide = low is not None and not -EXACT_FLOAT_INT <= low <= high <= EXACT_FLOAT_INT
    else:
        for column in part.columns:
            column.wide = False
        for footer in part.files:
            part.rows += footer.rows
            for column in part.columns:
                statistics = footer.statistics(column.position)
                count = footer.rows if statistics.values is None else statistics.values
                column.votes[column.kind] += count
                item, depth = unlist(column.kind)
                if item == "BIGINT" and (count or depth):  # an unknown range may be wide
                    low, high = statistics.int_range(leaves=depth > 0)  # a list's statistics are its ints'
                    column.wide |= low is None or not -EXACT_FLOAT_INT <= low <= high <= EXACT_FLOAT_INT
    texts = [column for column in part.columns if column.kind == JSON_TEXT]
    counted = texts + [column for column in part.columns if exact and column.kind != JSON_TEXT]
    if counted:
        counts = ", ".join(f"histogram({json_kind_sql(f'c{column.position}')}) FILTER (WHERE c{column.position} IS NOT NULL)"
                           if column.kind == JSON_TEXT else f"count(c{column.position})" for column in counted)
        row = connection.execute(f"SELECT {counts} FROM {part.scan(name)}{_where(part.conditions())}").fetchall()[0]
        for column, count in zip(counted, row):
            column.votes = Counter(count or {}) if column.kind == JSON_TEXT else Counter({column.kind: count})


# -- the plan: one typed column (and maybe a companion) per key ------------------------------


@dataclass
class KeyColumns:
    """A key's columns in ``records``: typed column name and kind, and who holds the key."""

    key: str
    name: str
    kind: str
    own: bool = False  # some record holds it itself
    inherited: bool = False  # some recorder's lineage holds it
    own_typed: bool = False  # some part gives the typed column values
    own_json: bool = False  # some part gives the companion column values
    inherited_json: bool = False  # some lineage value does not fit the typed column

    @property
    def json_name(self) -> str:
        """The companion column's name."""
        return companion(self.name)

    @property
    def has_json(self) -> bool:
        """True when some value of the key does not fit the typed column."""
        return self.own_json or self.inherited_json


#: Python types whose values all have one kind (value_kind need not look at each value).
_ONE_KIND = {bool: "BOOLEAN", float: "DOUBLE", str: "VARCHAR"}


def _count_kinds(values: Sequence[Any], counts: Counter[str]) -> None:
    """Add the votes of ``values`` to ``counts``: per Python type where the type decides."""
    for kind_type, count in Counter(map(type, values)).items():
        if kind_type in _ONE_KIND:
            counts[_ONE_KIND[kind_type]] += count
        elif kind_type is not type(None):
            for value in values:
                if type(value) is kind_type:
                    counts[vote(value_kind(value))] += 1  # type: ignore[arg-type]  # not None here


def _split_column(values: list[Any], kind: str) -> tuple[list[Any], list[str | None] | None]:
    """``values`` as the cells of a typed column of ``kind`` and of its companion (None: no
    value needs one), as :func:`split` makes them; whole columns at once where types allow."""
    types = set(map(type, values)) - {type(None)}
    ints = [value for value in values if type(value) is int] if int in types else []
    if not types or (types == {_SQL_PYTHON_TYPE.get(kind)} and kind != "BIGINT"):
        return values, None
    if kind == "BIGINT" and types == {int} and INT64_MIN <= min(ints) and max(ints) <= INT64_MAX:
        return values, None
    if kind == "DOUBLE" and types <= {int, float} and -EXACT_FLOAT_INT <= min(ints, default=0) \
            and max(ints, default=0) <= EXACT_FLOAT_INT:
        return [None if value is None else float(value) for value in values], None
    cells = [split(value, kind) for value in values]
    texts = [text for _, text in cells]
    return [typed for typed, _ in cells], texts if any(text is not None for text in texts) else None


_SQL_PYTHON_TYPE = {"BOOLEAN": bool, "DOUBLE": float, "VARCHAR": str, "BIGINT": int}


def _pack_trees(sources: list[RunSource]) -> list[PackTrees]:
    """The trees of the packs that ``sources`` are read from, each once."""
    return list({id(source.trees): source.trees for source in sources if source.trees is not None}.values())


def _in_order(sources: list[RunSource], pack_keys: Callable[[PackTrees], list[tuple[str, int]]],
              holds: Callable[[dict[str, Any]], bool]) -> list[str]:
    """Keys of the runs' recorders (those ``holds`` picks; a pack's: ``pack_keys``), in the order
    the runs first hold them: whether a run is read from a pack or from its folder, the same."""
    place = {(id(source.trees), source.index): position for position, source in enumerate(sources)
             if source.trees is not None}
    first: dict[str, tuple[int, int]] = {}

    def held(key: str, at: tuple[int, int]) -> None:
        if key not in first or at < first[key]:
            first[key] = at

    for trees in _pack_trees(sources):
        for order, (key, run) in enumerate(pack_keys(trees)):
            held(key, (place.get((id(trees), run), len(sources)), order))  # a run read from its folder: last
    for position, source in enumerate(sources):
        order = 0
        for entry in source.entries:
            if entry["id"] != RUN_NODE and holds(entry):
                for key in entry["local_data"]:
                    held(key, (position, order))
                    order += 1
    return sorted(first, key=first.__getitem__)


def _add_votes(counts: Counter[str], column: StoredColumn) -> None:
    for kind, count in column.votes.items():
        counts[vote(kind)] += count


def plan(sources: list[RunSource], parts: list[Part]) -> dict[str, KeyColumns]:
    """Every key of ``records`` with its columns, inherited keys first (bookkeeping keys first,
    the others in the order runs first hold them)."""
    votes: dict[str, Counter[str]] = {key: Counter() for key in BOOKKEEPING_KEYS}
    values: dict[str, list[Any]] = {}
    for trees in _pack_trees(sources):
        for column in trees.entries.columns:
            _add_votes(votes.setdefault(column.key, Counter()), column)
    for source in sources:
        for entry in source.entries:
            if entry["id"] != RUN_NODE:  # the bookkeeping keys' kinds are fixed
                for key, value in entry["local_data"].items():
                    values.setdefault(key, []).append(value)
    for key, held in values.items():
        _count_kinds(held, votes.setdefault(key, Counter()))
    inherited = dict.fromkeys([*BOOKKEEPING_KEYS, *_in_order(sources, lambda trees: trees.keys, lambda entry: True)])
    for key in inherited:
        votes.setdefault(key, Counter())  # a key held only with None has no votes
    own = {}
    for part in parts:
        for column in part.columns:
            own[column.key] = None
            _add_votes(votes.setdefault(column.key, Counter()), column)
    names = view_names([*inherited, *own], reserved=HANDLES)
    keys = {
        key: KeyColumns(key, names[key], _BOOKKEEPING_KINDS.get(key) or choose(votes[key]),
                        own=key in own, inherited=key in inherited)
        for key in names
    }
    for part in parts:
        for column in part.columns:
            typed, text = column.expressions(keys[column.key].kind)
            keys[column.key].own_typed |= typed is not None
            keys[column.key].own_json |= text is not None
    return keys


# -- the views -----------------------------------------------------------------------------


@dataclass
class Tables:
    """The parts of some runs' records, the plan of their keys, and the small tables made of
    them in a DuckDB connection: ``lineage``, ``experiments`` and ``columns``, temporary tables
    of that connection alone (a relation made over an earlier connection keeps its own)."""

    parts: list[Part]
    keys: dict[str, KeyColumns]

    @classmethod
    def build(cls, runs: Runs, connection: duckdb.DuckDBPyConnection,
              packed: Mapping[str, PackedRun] | None = None) -> Tables:
        """Read the runs' trees and file footers (never their records) and make the tables;
        ``packed``: the runs to read from the catalog's packs, by id."""
        sources, parts = _sources(runs, connection, packed or {})
        keys = plan(sources, parts)
        trees = _pack_trees(sources)
        runs = _runs_table(sources)
        _make_lineage(connection, sources, trees, keys, runs)
        _make_experiments(connection, sources, trees, keys, runs)
        _create_table(connection, "columns", _COLUMNS_COLUMNS, _transposed(list(_describe(keys)), len(_COLUMNS_COLUMNS)))
        return cls(parts, keys)

    def part_sql(self, index: int) -> str:
        """SQL for the rows of part ``index`` with ~source, ~recorder and each key's columns."""
        return _part_sql(self.parts[index], f"part_{index}", self.keys)

    def columns(self) -> Iterator[Column]:
        """The columns of ``records``, in order."""
        return _columns(self.keys)


#: The most values (rows x columns; a number takes about 10 bytes) that a query over unchanged
#: runs keeps in memory: ``records`` whole (every column of the view counted), else only the
#: stored records (their stored columns counted); beyond that, read from the files at every query.
IN_MEMORY_CELLS = 8_000_000


class Query:
    """A DuckDB connection with the views ``records``, ``experiments`` and ``columns`` of some runs.

    ``listing``: what the caller saw of the runs before reading them, which
    :meth:`is_current` compares (None: never current).
    """

    def __init__(self, runs: Runs, database: duckdb.DuckDBPyConnection,
                 packed: Mapping[str, PackedRun] | None = None, listing: object = None) -> None:
        self._listing = None if any(info["status"] == RUNNING for _, info in runs) else listing
        self.connection = database.cursor()
        self._tables = Tables.build(runs, self.connection, packed)
        self.in_memory = False
        self._create_records_view()

    def _create_records_view(self) -> None:
        tables = self._tables
        scans = [tables.part_sql(index) for index in range(len(tables.parts))]
        select = ", ".join(column.duckdb() for column in tables.columns())
        if scans:
            union = " UNION ALL BY NAME ".join(scans)
            join = " AND ".join(f"r.{quote_name(column)} = l.{quote_name(column)}" for column in (SOURCE_COLUMN, RECORDER_COLUMN))
            self.connection.execute(f"CREATE OR REPLACE TEMP VIEW records AS SELECT {select} "
                                    f"FROM ({union}) AS r JOIN lineage AS l ON {join}")
        else:
            self.connection.execute(f"CREATE OR REPLACE TEMP VIEW records AS SELECT {select} FROM lineage AS l WHERE false")

    def is_current(self, listing: object) -> bool:
        """True while ``listing`` is the one this query was built from and no run was running."""
        return self._listing is not None and self._listing == listing

    def keep_in_memory(self) -> None:
        """Copy the records into temporary tables of this connection, so that later queries read
        no file: ``records`` itself becomes one table when it holds at most
        :data:`IN_MEMORY_CELLS` values, else each part's stored records are copied when those fit."""
        if self.in_memory:
            return
        rows = sum(part.rows for part in self._tables.parts)
        if rows * len(list(self._tables.columns())) <= IN_MEMORY_CELLS:
            self.connection.execute('CREATE OR REPLACE TEMP TABLE "~records" AS SELECT * FROM records')
            self.connection.execute('DROP VIEW records')
            self.connection.execute('ALTER TABLE "~records" RENAME TO records')
            self.in_memory = True
            return
        parts = [(index, part) for index, part in enumerate(self._tables.parts) if part.table is None]
        if sum(part.rows * (len(part.layout) + 1) for _, part in parts) > IN_MEMORY_CELLS:
            return
        for index, part in parts:
            name = f"~part_{index}"
            self.connection.execute(f"CREATE OR REPLACE TEMP TABLE {quote_name(name)} AS SELECT *, file_index "
                                    f"FROM {part.scan(f'part_{index}')}{_where(part.conditions())}")
            part.in_memory = name
        self.in_memory = True
        self._create_records_view()

    def sql(self, query: str) -> duckdb.DuckDBPyRelation:
        """Run ``query`` against the views."""
        return self.connection.sql(query)

    def execute(self, query: str) -> duckdb.DuckDBPyConnection:
        """Run ``query`` against the views at once; its rows stream to ``fetchmany()``."""
        return self.connection.execute(query)


#: The name, within the statements that make the tables, of each run's ~source, place and :data:`RUN_COLUMNS`.
_RUNS_TABLE = "~runs"

#: Columns (name, SQL type) and a list of values per column.
Values = tuple[list[tuple[str, str]], list[list[Any]]]


def _runs_table(sources: list[RunSource]) -> Values:
    """Each run's ~source, its place among the runs, and its :data:`RUN_COLUMNS` (bookkeeping
    keys as :func:`~rigorous_recorder.store.layout.bookkeeping_columns` shows them)."""
    shown = bookkeeping_columns([source.info for source in sources])
    values = [[source.id for source in sources], list(range(len(sources)))]
    for name in RUN_COLUMNS:
        if name == "run_id":
            values.append([source.info["id"] for source in sources])
        elif name == "records":
            values.append([source.count for source in sources])
        elif name in shown:
            values.append(shown[name])
        else:
            values.append([source.info.get(name) for source in sources])
    return [(SOURCE_COLUMN, "INTEGER"), (_ORDER_COLUMN, "INTEGER"), *RUN_COLUMNS.items()], values


def _value_columns(keys: Iterable[KeyColumns]) -> list[tuple[str, str]]:
    """Each key's typed column and, where it has one, its companion: name and SQL type."""
    names = []
    for columns in keys:
        names.append((columns.name, sql_type(columns.kind)))
        if columns.inherited_json:
            names.append((columns.json_name, "VARCHAR"))
    return names


def _loose_values(ids: list[tuple[str, str]], rows: list[tuple[list[int], dict[str, Any]]],
                  keys: list[KeyColumns]) -> Values:
    """``rows`` (the values of the ``ids`` columns, data) as the ``ids`` columns and those of
    ``keys``; marks the keys whose values need their companion column."""
    values = [[row_ids[index] for row_ids, _ in rows] for index in range(len(ids))]
    for columns in keys:
        typed, text = _split_column([data.get(columns.key) for _, data in rows], columns.kind)
        columns.inherited_json = text is not None
        values += [typed, text] if text is not None else [typed]
    return ids + _value_columns(keys), values


def _mark_companions(connection: duckdb.DuckDBPyConnection, part: Part, name: str, keys: Mapping[str, KeyColumns],
                     conditions: Sequence[str] = ()) -> None:
    """Mark the keys whose values in the rows of ``part`` meeting ``conditions`` need their
    companion column: counted by a scan (a pack's trees are small), so that a value of the key
    elsewhere in the part (another recorder's, an unread run's) adds no companion of NULLs only."""
    texts = {}
    for column in part.columns:
        if column.key in keys:
            text = column.expressions(keys[column.key].kind)[1]
            if text is not None:
                texts[column.key] = text
    if not texts:
        return
    counts = ", ".join(f"count({text})" for text in texts.values())
    row = connection.execute(f"SELECT {counts} FROM {part.scan(name)}{_where([*conditions, *part.conditions()])}").fetchall()[0]
    for key, count in zip(texts, row):
        keys[key].inherited_json |= bool(count)


def _make_lineage(connection: duckdb.DuckDBPyConnection, sources: list[RunSource], trees: list[PackTrees],
                  keys: dict[str, KeyColumns], runs: Values) -> None:
    """Table ``lineage``: each recorder that may hold records, with its run's handles and its
    merged data; packed runs' from their packs, the others' merged here."""
    inherited = [columns for columns in keys.values() if columns.inherited]
    rows = [([source.id, node_id], data) for source in sources if source.trees is None
            for node_id, data in lineages(source.entries, bookkeeping(source.info))]
    statement = _Statement(connection)
    loose = statement.values(*_loose_values([(SOURCE_COLUMN, "INTEGER"), (RECORDER_COLUMN, "INTEGER")], rows, inherited))
    scans = [loose]
    for index, pack in enumerate(trees):
        _mark_companions(connection, pack.lineage, f"lineage_{index}", keys)
        scans.append(_part_sql(pack.lineage, f"lineage_{index}", keys))
    source = quote_name(SOURCE_COLUMN)
    statement.execute(f"CREATE OR REPLACE TEMP TABLE lineage AS WITH {quote_name(_RUNS_TABLE)} AS ({statement.values(*runs)}) "
                      f"SELECT l.*, {', '.join(f'r.{name}' for name in HANDLES)} "
                      f"FROM ({' UNION ALL BY NAME '.join(scans)}) AS l "
                      f"JOIN {quote_name(_RUNS_TABLE)} AS r ON l.{source} = r.{source}")


def _make_experiments(connection: duckdb.DuckDBPyConnection, sources: list[RunSource], trees: list[PackTrees],
                      keys: dict[str, KeyColumns], runs: Values) -> None:
    """Table ``experiments``: the run's columns, then its experiment info (in the order runs
    first hold the keys); packed runs' info from their packs."""
    loose = [([source.id], next((entry["local_data"] for entry in source.entries if entry["id"] == EXPERIMENT_NODE), {}))
             for source in sources if source.trees is None]
    order = _in_order(sources, lambda trees: trees.experiment_keys, lambda entry: entry["id"] == EXPERIMENT_NODE)
    info_keys = {key: KeyColumns(key, name, keys[key].kind) for key, name in view_names(order, reserved=RUN_COLUMNS).items()}
    statement = _Statement(connection)
    scans = [statement.values(*_loose_values([(SOURCE_COLUMN, "INTEGER")], loose, list(info_keys.values())))]
    for index, pack in enumerate(trees):
        wanted = {key: info_keys[key] for key, _ in pack.experiment_keys}
        experiment_rows = [f"c{pack.entries.recorder} = {EXPERIMENT_NODE}"]
        _mark_companions(connection, pack.entries, f"entries_{index}", wanted, experiment_rows)
        scans.append(_part_sql(pack.entries, f"entries_{index}", wanted, experiment_rows))
    source = quote_name(SOURCE_COLUMN)
    selects = [f"r.{quote_name(name)}" for name in RUN_COLUMNS]
    selects += [f"i.{quote_name(name)}" for name, _ in _value_columns(info_keys.values())]
    statement.execute(f"CREATE OR REPLACE TEMP TABLE experiments AS WITH {quote_name(_RUNS_TABLE)} AS ({statement.values(*runs)}) "
                      f"SELECT {', '.join(selects)} "
                      f"FROM {quote_name(_RUNS_TABLE)} AS r LEFT JOIN ({' UNION ALL BY NAME '.join(scans)}) AS i "
                      f"ON r.{source} = i.{source} ORDER BY r.{quote_name(_ORDER_COLUMN)}")


_COLUMNS_COLUMNS = [("name", "VARCHAR"), ("key", "VARCHAR"), ("part", "VARCHAR"), ("source", "VARCHAR"),
                    ("type", "VARCHAR")]


def _describe(keys: dict[str, KeyColumns]) -> Iterator[list[Any]]:
    """Rows of ``columns``: each column of ``records``, its key, part, source and type."""
    handles = [[name, None, "handle", "run", kind] for name, kind in HANDLES.items()]
    yield handles[0]
    for columns in _ordered(keys):
        source = ("run" if columns.key in BOOKKEEPING_KEYS and not columns.own
                  else "record and inherited" if columns.own and columns.inherited
                  else "record" if columns.own else "inherited")
        yield [columns.name, columns.key, "value", source, columns.kind]
        if columns.has_json:
            yield [columns.json_name, columns.key, "json", source, JSON]
        if columns.key == BOOKKEEPING_KEYS[-1]:
            yield handles[1]


def _part_sql(part: Part, name: str, keys: Mapping[str, KeyColumns], conditions: Sequence[str] = ()) -> str:
    """SQL for one part's rows (those meeting ``conditions``) with ~source, ~recorder and the
    typed and companion column of each key of ``keys``."""
    selects = [f"{part.source_sql()} AS {quote_name(SOURCE_COLUMN)}",
               f"CAST(c{part.recorder} AS INTEGER) AS {quote_name(RECORDER_COLUMN)}"]
    for column in part.columns:
        if column.key not in keys:
            continue
        columns = keys[column.key]
        typed, text = column.expressions(columns.kind)
        if typed is not None:
            selects.append(f"CAST({typed} AS {sql_type(columns.kind)}) AS {quote_name(columns.name)}")
        if text is not None:
            selects.append(f"{text} AS {quote_name(columns.json_name)}")
    return f"SELECT {', '.join(selects)} FROM {part.scan(name)}{_where([*conditions, *part.conditions()])}"


@dataclass
class Column:
    """One column of ``records``: the record's own column (``own``) where the record holds the
    key, else the inherited one; None where the side never has it; ``holds``: the own columns
    that tell whether the record holds the key (None: the own column alone)."""

    name: str
    kind: str
    own: str | None
    inherited: str | None
    holds: list[str] | None = None

    def duckdb(self) -> str:
        """The column as DuckDB SQL over the records ``r`` joined to the lineage ``l``."""
        empty = f"CAST(NULL AS {sql_type(self.kind)})"
        own = f"r.{quote_name(self.own)}" if self.own else empty
        inherited = f"l.{quote_name(self.inherited)}" if self.inherited else empty
        if self.holds is None:
            value = own if self.inherited is None else inherited if self.own is None else f"coalesce({own}, {inherited})"
        else:
            holds = " OR ".join(f"r.{quote_name(name)} IS NOT NULL" for name in self.holds)
            value = f"CASE WHEN {holds} THEN {own} ELSE {inherited} END"
        return f"{value} AS {quote_name(self.name)}"


def _columns(keys: dict[str, KeyColumns]) -> Iterator[Column]:
    """The columns of ``records``: handles, then the bookkeeping and inherited keys, then own keys."""
    yield Column("run_id", "VARCHAR", None, "run_id")
    for columns in _ordered(keys):
        yield from _key_columns(columns)
        if columns.key == BOOKKEEPING_KEYS[-1]:
            yield Column("status", "VARCHAR", None, "status")


def _ordered(keys: dict[str, KeyColumns]) -> list[KeyColumns]:
    """Keys in the order of ``records``: bookkeeping and inherited keys first, then own keys.

    ``status`` follows the last bookkeeping key, as in ``experiments``.
    """
    return [*(columns for columns in keys.values() if columns.inherited),
            *(columns for columns in keys.values() if not columns.inherited)]


def _key_columns(columns: KeyColumns) -> Iterator[Column]:
    holds = None
    if columns.own and columns.inherited and columns.has_json:
        holds = [name for name, has in ((columns.name, columns.own_typed), (columns.json_name, columns.own_json)) if has]
    parts = [(columns.name, columns.kind, columns.own_typed, True)]
    if columns.has_json:
        parts.append((columns.json_name, JSON, columns.own_json, columns.inherited_json))
    for name, kind, own, inherited in parts:
        yield Column(name, kind, name if columns.own and own else None,
                     name if columns.inherited and inherited else None, holds)


def _create_table(connection: duckdb.DuckDBPyConnection, name: str, columns: list[tuple[str, str]],
                  values: list[list[Any]]) -> None:
    """Make table ``name`` with ``columns`` (name, SQL type) from a Python list of values per column."""
    statement = _Statement(connection)
    statement.execute(f"CREATE OR REPLACE TEMP TABLE {quote_name(name)} AS {statement.values(columns, values)}")


class _Statement:
    """One DuckDB statement whose tables of Python values travel with it (a statement costs
    milliseconds: the small tables are made in as few as possible).

    Where pyarrow is loaded already (a running run or a pack was read), columns of plain values
    reach DuckDB as Arrow arrays built from buffers (never through ``pa.array``, which would
    import pandas), registered for this statement alone; otherwise, and for other values, as
    typed list parameters: a fresh process reading finished runs never loads pyarrow and numpy
    (a fifth of a second). A parameter column holding a NaN goes as JSON text instead: DuckDB
    before 2.0 turns a NaN inside a list parameter into NULL.
    """

    def __init__(self, connection: duckdb.DuckDBPyConnection) -> None:
        self._connection = connection
        self._parameters: list[list[Any]] = []
        self._registered: list[str] = []

    def values(self, columns: list[tuple[str, str]], values: list[list[Any]]) -> str:
        """A SELECT of ``values`` (a list per column) as ``columns`` (name, SQL type)."""
        if "pyarrow" in sys.modules and values and values[0]:
            selected = self._arrow_values(columns, values)
            if selected is not None:
                return selected
        selects = []
        for (column, kind), cells in zip(columns, values):
            if any(map(_holds_nan, cells)):
                self._parameters.append([None if cell is None else json.dumps(cell) for cell in cells])
                selects.append(f"CAST(CAST(unnest(${len(self._parameters)}::VARCHAR[]) AS JSON) AS {kind}) AS {quote_name(column)}")
            else:
                self._parameters.append(cells)
                selects.append(f"unnest(${len(self._parameters)}::{kind}[]) AS {quote_name(column)}")
        return f"SELECT {', '.join(selects)}"

    def _arrow_values(self, columns: list[tuple[str, str]], values: list[list[Any]]) -> str | None:
        """The SELECT of :meth:`values` over Arrow arrays; None when some column is not plain."""
        import pyarrow as pa

        from ._columns import packed_array

        arrays = [packed_array(column) for column in values]
        arrays = [pa.nulls(len(column)) if array is None and column.count(None) == len(column) else array
                  for array, column in zip(arrays, values)]
        if any(array is None for array in arrays):
            return None
        name = f"~values_{len(self._registered)}"
        self._connection.register(name, pa.Table.from_arrays(arrays, names=[f"c{index}" for index in range(len(arrays))]))
        self._registered.append(name)
        selects = [f"CAST(c{index} AS {kind}) AS {quote_name(column)}" for index, (column, kind) in enumerate(columns)]
        return f"SELECT {', '.join(selects)} FROM {quote_name(name)}"

    def execute(self, sql: str) -> None:
        """Run ``sql``, which holds the SELECTs that :meth:`values` gave."""
        try:
            self._connection.execute(sql, self._parameters).fetchall()
        finally:
            for name in self._registered:
                self._connection.unregister(name)


def _transposed(rows: list[list[Any]], width: int) -> list[list[Any]]:
    """The columns of ``rows``."""
    return [[row[index] for row in rows] for index in range(width)]


def _holds_nan(value: Any) -> bool:
    """True for a float NaN, or a (nested) list holding one."""
    if type(value) is float:
        return value != value
    return type(value) is list and any(map(_holds_nan, value))
