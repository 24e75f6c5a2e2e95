"""The flat view of a collection: every record with its whole lineage as columns.

Records are stored once per row with a ``__recorder__`` id; parent data is stored once
per recorder. The view joins the two at query time: a small "lineage" table (one row per
recorder of every run, holding the merged data of the recorder and its ancestors) against
the runs' Parquet files, which DuckDB (or Spark) scans directly. A key a record holds
itself wins over the same key inherited (nearest wins, as in Python).
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa

from ._values import to_json
from .errors import DamagedFileError
from .store.layout import BOOKKEEPING_KEYS, DAMAGED, EXPERIMENT_NODE, RECORDER_COLUMN, RUN_NODE, RUNNING, bookkeeping
from .store.run_folder import RunFolder
from .store.tree_file import read_tree_schema, records_table, tree_of

if TYPE_CHECKING:
    import pyspark.sql

SOURCE = "__source__"
Runs = Sequence[tuple[RunFolder, dict[str, Any]]]
_BOOKKEEPING_KEYS = list(BOOKKEEPING_KEYS)


@dataclass
class _RunSource:
    """One run as the flat view reads it: its recorders, and where its records are."""

    folder: RunFolder
    info: dict[str, Any]
    entries: list[dict[str, Any]]  # id, parent and local data of each recorder
    columns: list[str]  # the records' own columns
    parquet: Path | None = None  # a stopped run's compacted file, scanned in place
    table: pa.Table | None = None  # a running run's records, read from its segments

    @property
    def count(self) -> int | None:
        return self.info.get("records_count") if self.table is None else self.table.num_rows


def _sources(runs: Runs) -> list[_RunSource]:
    sources = []
    for folder, info in runs:
        try:
            if info["status"] == DAMAGED:
                sources.append(_RunSource(folder, info, [], [], table=None))
            elif info["status"] != RUNNING and info.get("records") and not folder.journal_paths(info):
                path = folder.compacted_path(info)
                schema = read_tree_schema(path)
                sources.append(_RunSource(folder, info, tree_of(schema, path)["recorders"], schema.names, parquet=path))
            else:
                nodes = folder.nodes(info)
                table = records_table(nodes)
                sources.append(_RunSource(folder, info, [node.entry() for node in nodes], table.column_names, table=table))
        except DamagedFileError as error:
            info = {**info, "status": DAMAGED, "error": str(error)}
            sources.append(_RunSource(folder, info, [], [], table=None))
    return sources


def _flat_columns(inherited: Iterable[str], sources: Iterable[_RunSource]) -> list[tuple[str, bool, bool]]:
    """The flat view's columns: (key, a record holds it, a recorder's lineage holds it).

    Inherited keys come first, in lineage order; where both hold a key, the record's wins.
    """
    own = dict.fromkeys(name for source in sources for name in source.columns)
    own.pop(RECORDER_COLUMN, None)
    inherited = [key for key in inherited if key not in (SOURCE, RECORDER_COLUMN)]
    return [(key, key in own, True) for key in inherited] + [(key, True, False) for key in own if key not in inherited]


class Query:
    """A DuckDB connection with the views ``records`` and ``experiments`` of some runs."""

    def __init__(self, runs: Runs, database: duckdb.DuckDBPyConnection) -> None:
        self._signature = _signature(runs)
        self.connection = database.cursor()
        sources = _sources(runs)

        def key(source: _RunSource) -> str:  # the parquet scan names each row's file
            return str(source.parquet) if source.parquet is not None else source.folder.id

        lineage = [row for source in sources for row in lineage_rows(key(source), source.entries, source.info)]
        _create_table(self.connection, "lineage", lineage, [SOURCE, RECORDER_COLUMN, *_BOOKKEEPING_KEYS])
        experiments = [_experiment_row(source.info, source.entries, source.count) for source in sources]
        _create_table(self.connection, "experiments", experiments, ["run_id", *_BOOKKEEPING_KEYS])
        scans = []
        files = [_literal(key(source)) for source in sources if source.parquet is not None]
        if files:
            scans.append(f"SELECT * FROM read_parquet([{', '.join(files)}], filename={_literal(SOURCE)}, union_by_name=true)")
        for index, source in enumerate(source for source in sources if source.table is not None):
            self.connection.register(f"running_{index}", _with_source(source.table, key(source)))
            scans.append(f"SELECT * FROM running_{index}")
        columns = [
            f"coalesce(r.{_name(key)}, l.{_name(key)}) AS {_name(key)}" if own and inherited
            else f"{'r' if own else 'l'}.{_name(key)}"
            for key, own, inherited in _flat_columns(self.connection.table("lineage").columns, sources)
        ]
        if scans:
            union = " UNION ALL BY NAME ".join(scans)
            self.connection.execute(
                f"CREATE OR REPLACE VIEW records AS SELECT {', '.join(columns)} FROM ({union}) AS r "
                f"JOIN lineage AS l ON r.{SOURCE} = l.{SOURCE} AND r.{RECORDER_COLUMN} = l.{RECORDER_COLUMN}"
            )
        else:
            self.connection.execute(f"CREATE OR REPLACE VIEW records AS SELECT {', '.join(columns)} FROM lineage AS l")

    def is_current(self, runs: Runs) -> bool:
        """True while ``runs`` are what this query was built from (no run is still running)."""
        return self._signature is not None and self._signature == _signature(runs)

    def sql(self, query: str) -> duckdb.DuckDBPyRelation:
        """Run ``query`` against the views."""
        return self.connection.sql(query)


def _with_source(table: pa.Table, source: str) -> pa.Table:
    return table.append_column(SOURCE, pa.repeat(pa.scalar(source), table.num_rows))


def lineage_rows(source: str, entries: Iterable[dict[str, Any]], info: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per recorder: its id, and its data merged with its ancestors' (nearest wins)."""
    by_id = {entry["id"]: entry for entry in entries}
    rows = []
    for node_id, entry in by_id.items():
        chain = []
        while entry is not None:
            chain.append(bookkeeping(info) if entry["id"] == RUN_NODE else entry["local_data"])
            entry = by_id.get(entry["parent"])
        row = {SOURCE: source, RECORDER_COLUMN: node_id}
        for data in reversed(chain):  # root first, so the nearest value is written last
            row.update(data)
        rows.append(row)
    return rows


def _experiment_row(info: dict[str, Any], entries: list[dict[str, Any]], count: int | None) -> dict[str, Any]:
    experiment = next((entry["local_data"] for entry in entries if entry["id"] == EXPERIMENT_NODE), {})
    row = {"run_id": info["id"], **bookkeeping(info), "status": info["status"], "records": count,
           "error": info.get("error")}
    return {**{key: value for key, value in experiment.items() if key not in row}, **row}


def _create_table(connection: duckdb.DuckDBPyConnection, name: str, rows: list[dict[str, Any]],
                  first: list[str]) -> None:
    """Make table ``name`` from Python rows, typed by the rule of ``_columns`` (ints and floats
    widen to DOUBLE; values of no single type become JSON text).

    The columns reach DuckDB as typed list parameters: no pyarrow conversion, which would
    import pandas (a quarter of a second) on a collection's first query.
    """
    names = list(dict.fromkeys([*first, *(key for row in rows for key in row)]))
    selects, parameters = [], []
    for index, key in enumerate(names, start=1):
        sql_type, values = _sql_column([row.get(key) for row in rows])
        if key == RECORDER_COLUMN:
            sql_type = "INTEGER"
        selects.append(f"unnest(${index}::{sql_type}[]) AS {_name(key)}")
        parameters.append(values)
    connection.execute(f"CREATE OR REPLACE TABLE {name} AS SELECT {', '.join(selects)}", parameters)


_SQL_TYPES = {bool: "BOOLEAN", int: "BIGINT", float: "DOUBLE", str: "VARCHAR", bytes: "BLOB",
              datetime.date: "DATE"}


def _sql_column(values: list[Any]) -> tuple[str, list[Any]]:
    kinds = set(map(type, values)) - {type(None)}
    if not kinds:
        return "VARCHAR", values
    if kinds == {int, float}:
        return "DOUBLE", [None if value is None else float(value) for value in values]
    if len(kinds) == 1:
        kind = kinds.pop()
        if kind is int and all(value is None or -(1 << 63) <= value < 1 << 63 for value in values):
            return "BIGINT", values
        if kind is datetime.datetime:
            aware = {value.tzinfo is not None for value in values if value is not None}
            if len(aware) == 1:
                return ("TIMESTAMPTZ" if aware.pop() else "TIMESTAMP"), values
        elif kind in _SQL_TYPES:
            return _SQL_TYPES[kind], values
    return "VARCHAR", [None if value is None else to_json(value) for value in values]


def _signature(runs: Runs) -> tuple[Any, ...] | None:
    if any(info["status"] == RUNNING for _, info in runs):
        return None  # running runs grow: rebuild every time
    return tuple((folder.id, info["status"], info.get("records")) for folder, info in runs)


def _name(key: str) -> str:
    return '"' + key.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def spark_records(spark: pyspark.sql.SparkSession, runs: Runs) -> pyspark.sql.DataFrame:
    """The flat table in Spark: Spark scans the runs' Parquet files, joined to the lineage."""
    from pyspark.sql import functions

    sources = _sources(runs)
    lineage = [row for source in sources for row in lineage_rows(source.folder.id, source.entries, source.info)]
    parts = [spark.createDataFrame(_with_source(source.table, source.folder.id))
             for source in sources if source.table is not None]
    finished = [str(source.parquet) for source in sources if source.parquet is not None]
    if finished:
        scanned = spark.read.option("mergeSchema", "true").parquet(*finished)
        run_id = functions.regexp_extract(functions.input_file_name(), r"/runs/([^/]+)/records-\d+\.parquet$", 1)
        parts.insert(0, scanned.withColumn(SOURCE, run_id))
    connection = duckdb.connect()
    _create_table(connection, "lineage", lineage, [SOURCE, RECORDER_COLUMN, *_BOOKKEEPING_KEYS])
    table = connection.table("lineage").to_arrow_table()
    inherited_frame = spark.createDataFrame(table)
    plan = _flat_columns(table.column_names, sources)
    if not parts:
        return inherited_frame.select(*(key for key, _, _ in plan)).limit(0)
    records = parts[0]
    for part in parts[1:]:
        records = records.unionByName(part, allowMissingColumns=True)
    joined = records.alias("r").join(functions.broadcast(inherited_frame.alias("l")), [SOURCE, RECORDER_COLUMN])
    columns = [
        functions.coalesce(functions.col(f"r.`{key}`"), functions.col(f"l.`{key}`")).alias(key) if own and inherited
        else functions.col(f"{'r' if own else 'l'}.`{key}`")
        for key, own, inherited in plan
    ]
    return joined.select(*columns)
