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
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from ._tree_file import RECORDER_COLUMN, read_tree_metadata, records_table
from ._values import to_json
from .store.run_folder import BOOKKEEPING_ID, EXPERIMENT_ID, RUNNING, RunFolder, bookkeeping

if TYPE_CHECKING:
    import pyspark.sql

SOURCE = "__source__"
Runs = Sequence[tuple[RunFolder, dict[str, Any]]]
_BOOKKEEPING_KEYS = list(bookkeeping({"experiment_number": 0, "error_number": 0, "had_error": False,
                                      "experiment_start_time": 0.0}))


class Query:
    """A DuckDB connection with the views ``records`` and ``experiments`` of some runs."""

    def __init__(self, runs: Runs, database: duckdb.DuckDBPyConnection) -> None:
        self._signature = _signature(runs)
        self.connection = database.cursor()
        files, tables, lineage, experiments = [], [], [], []
        for folder, info in runs:
            if info["status"] != RUNNING and info.get("records"):
                source = str(folder.compacted_path(info))
                entries = read_tree_metadata(folder.compacted_path(info))["recorders"]
                files.append(source)
                count = info.get("records_count")
            else:
                source = f"running:{folder.id}"
                nodes = folder.nodes(info)
                entries = [{"id": node.id, "parent": node.parent, "local_data": node.local_data} for node in nodes]
                table = records_table(nodes)
                tables.append(table.append_column(SOURCE, pa.repeat(pa.scalar(source), table.num_rows)))
                count = table.num_rows
            lineage.extend(lineage_rows(source, entries, info))
            experiments.append(_experiment_row(info, entries, count))
        _create_table(self.connection, "lineage", lineage, [SOURCE, RECORDER_COLUMN, *_BOOKKEEPING_KEYS])
        _create_table(self.connection, "experiments", experiments, ["run_id", *_BOOKKEEPING_KEYS])
        scans = []
        if files:
            listed = ", ".join(_literal(path) for path in files)
            scans.append(f"SELECT * FROM read_parquet([{listed}], filename={_literal(SOURCE)}, union_by_name=true)")
        for index, table in enumerate(tables):
            self.connection.register(f"running_{index}", table)
            scans.append(f"SELECT * FROM running_{index}")
        own = _own_columns(files, tables)
        inherited = [name for name in self.connection.table("lineage").columns if name not in (SOURCE, RECORDER_COLUMN)]
        columns = [
            f"coalesce(r.{_name(key)}, l.{_name(key)}) AS {_name(key)}" if key in own else f"l.{_name(key)}"
            for key in inherited
        ] + [f"r.{_name(key)}" for key in own if key not in inherited]
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


def lineage_rows(source: str, entries: Iterable[dict[str, Any]], info: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per recorder: its id, and its data merged with its ancestors' (nearest wins)."""
    by_id = {entry["id"]: entry for entry in entries}
    rows = []
    for node_id, entry in by_id.items():
        chain = []
        while entry is not None:
            chain.append(bookkeeping(info) if entry["id"] == BOOKKEEPING_ID else entry["local_data"])
            entry = by_id.get(entry["parent"])
        row = {SOURCE: source, RECORDER_COLUMN: node_id}
        for data in reversed(chain):  # root first, so the nearest value is written last
            row.update(data)
        rows.append(row)
    return rows


def _experiment_row(info: dict[str, Any], entries: list[dict[str, Any]], count: int | None) -> dict[str, Any]:
    experiment = next((entry["local_data"] for entry in entries if entry["id"] == EXPERIMENT_ID), {})
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


def _own_columns(files: list[str], tables: list[pa.Table]) -> list[str]:
    schemas = [pq.read_schema(path) for path in files] + [table.schema for table in tables]
    names = dict.fromkeys(name for schema in schemas for name in schema.names)
    return [name for name in names if name not in (SOURCE, RECORDER_COLUMN)]


def _signature(runs: Runs) -> tuple[Any, ...] | None:
    if any(info["status"] == RUNNING for _, info in runs):
        return None  # running runs grow: rebuild every time
    return tuple((folder.id, info.get("records")) for folder, info in runs)


def _name(key: str) -> str:
    return '"' + key.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def spark_records(spark: pyspark.sql.SparkSession, runs: Runs) -> pyspark.sql.DataFrame:
    """The flat table in Spark: Spark scans the runs' Parquet files, joined to the lineage."""
    from pyspark.sql import functions

    lineage, parts, finished = [], [], []
    for folder, info in runs:
        if info["status"] != RUNNING and info.get("records"):
            entries = read_tree_metadata(folder.compacted_path(info))["recorders"]
            finished.append(str(folder.compacted_path(info)))
        else:
            nodes = folder.nodes(info)
            entries = [{"id": node.id, "parent": node.parent, "local_data": node.local_data} for node in nodes]
            table = records_table(nodes)
            parts.append(spark.createDataFrame(table.append_column(SOURCE, pa.repeat(pa.scalar(folder.id), table.num_rows))))
        lineage.extend(lineage_rows(folder.id, entries, info))
    if finished:
        scanned = spark.read.option("mergeSchema", "true").parquet(*finished)
        run_id = functions.regexp_extract(functions.input_file_name(), r"/runs/([^/]+)/records-\d+\.parquet$", 1)
        parts.insert(0, scanned.withColumn(SOURCE, run_id))
    connection = duckdb.connect()
    _create_table(connection, "lineage", lineage, [SOURCE, RECORDER_COLUMN, *_BOOKKEEPING_KEYS])
    table = connection.table("lineage").to_arrow_table()
    table = pa.Table.from_arrays(
        [column.cast(pa.string()) if pa.types.is_null(column.type) else column for column in table.columns],
        names=table.column_names,
    )
    inherited_frame = spark.createDataFrame(table)
    inherited = [name for name in table.column_names if name not in (SOURCE, RECORDER_COLUMN)]
    if not parts:
        return inherited_frame.select(*inherited).limit(0)
    records = parts[0]
    for part in parts[1:]:
        records = records.unionByName(part, allowMissingColumns=True)
    own = [name for name in records.columns if name not in (SOURCE, RECORDER_COLUMN)]
    joined = records.alias("r").join(functions.broadcast(inherited_frame.alias("l")), [SOURCE, RECORDER_COLUMN])
    columns = [
        functions.coalesce(functions.col(f"r.`{key}`"), functions.col(f"l.`{key}`")).alias(key) if key in own
        else functions.col(f"l.`{key}`")
        for key in inherited
    ] + [functions.col(f"r.`{key}`") for key in own if key not in inherited]
    return joined.select(*columns)
