"""The flat table in Spark: the same columns, names and rule as the DuckDB view ``records``.

Spark scans a run's Parquet files itself when they need no conversion (no value stored in
a type other than its key's typed column, no case twins among the file's columns, which
Spark would not tell apart). The few parts that need conversion (drifted values, running
runs) are converted by DuckDB and handed over as Arrow. The lineage is a small table
joined by broadcast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import duckdb

from ._naming import RECORDER_COLUMN, SOURCE_COLUMN
from .query import STORED_RECORDER_COLUMN, Column, Part, Runs, Tables, sql_type
from .query_text import quote_name

if TYPE_CHECKING:
    import pyspark.sql

#: DuckDB types and the Spark SQL types they are read as.
_SPARK_TYPES = {"VARCHAR": "string", "BLOB": "binary", "TIMESTAMPTZ": "timestamp", "TIMESTAMP": "timestamp_ntz"}
_RUN_ID = "run_id"


def spark_type(kind: str) -> str:
    """The Spark SQL type of a typed column of ``kind``."""
    kind = sql_type(kind)
    if kind.endswith("[]"):
        return f"array<{spark_type(kind[:-2])}>"
    return _SPARK_TYPES.get(kind, kind.lower())


def records_frame(spark: pyspark.sql.SparkSession, runs: Runs) -> pyspark.sql.DataFrame:
    """The flat table of ``runs`` as a Spark DataFrame."""
    from pyspark.sql import functions

    connection = duckdb.connect()
    tables = Tables.build(runs, connection)
    lineage = spark.createDataFrame(connection.table("lineage").to_arrow_table()).drop(SOURCE_COLUMN)
    frames = []
    for index, part in enumerate(tables.parts):
        if _spark_reads(part, tables):
            frames.append(_scanned(spark, part, tables))
        else:
            runs_of_sources = f"(SELECT DISTINCT {_RUN_ID}, {quote_name(SOURCE_COLUMN)} FROM lineage)"
            converted = connection.sql(f"SELECT * EXCLUDE ({quote_name(SOURCE_COLUMN)}) FROM ({tables.part_sql(index)}) "
                                       f"JOIN {runs_of_sources} USING ({quote_name(SOURCE_COLUMN)})")
            frames.append(spark.createDataFrame(converted.to_arrow_table()))
    columns = list(tables.columns())
    if not frames:
        return lineage.select(*(_typed_null(functions, column).alias(column.name) for column in columns)).limit(0)
    records = frames[0]
    for frame in frames[1:]:
        records = records.unionByName(frame, allowMissingColumns=True)
    on = [functions.col(f"r.{_quoted(name)}") == functions.col(f"l.{_quoted(name)}") for name in (_RUN_ID, RECORDER_COLUMN)]
    joined = records.alias("r").join(functions.broadcast(lineage.alias("l")), on[0] & on[1])
    return joined.select(*(_spark_column(functions, column) for column in columns))


def _spark_reads(part: Part, tables: Tables) -> bool:
    """True when Spark can scan the part's files and take its columns as they are."""
    if part.table is not None:
        return False
    names = [name.casefold() for name, _, _ in part.layout]
    if len(set(names)) < len(names):
        return False
    for stored in part.columns:
        typed, text = stored.expressions(tables.keys[stored.key].kind)
        if text is not None or typed not in (f"c{stored.position}", f"CAST(c{stored.position} AS DOUBLE)"):
            return False
    return True


def _scanned(spark: pyspark.sql.SparkSession, part: Part, tables: Tables) -> pyspark.sql.DataFrame:
    """The part's files as Spark reads them, columns named and typed as in ``records``."""
    from pyspark.sql import functions

    frame = spark.read.option("mergeSchema", "false").parquet(*(str(footer.path) for footer in part.files))
    recorder = STORED_RECORDER_COLUMN
    run_id = functions.element_at(functions.split(functions.input_file_name(), "/"), -2)
    selected = [run_id.alias(_RUN_ID), functions.col(_quoted(recorder)).cast("int").alias(RECORDER_COLUMN)]
    for stored in part.columns:
        columns = tables.keys[stored.key]
        selected.append(functions.col(_quoted(stored.key)).cast(spark_type(columns.kind)).alias(columns.name))
    return frame.select(*selected)


def _spark_column(functions, column: Column):  # noqa: ANN001, ANN202
    """One column of ``records`` over the records ``r`` joined to the lineage ``l``."""
    own = functions.col(f"r.{_quoted(column.own)}") if column.own else _typed_null(functions, column)
    inherited = functions.col(f"l.{_quoted(column.inherited)}") if column.inherited else _typed_null(functions, column)
    if column.holds is not None:
        holds = [functions.col(f"r.{_quoted(name)}").isNotNull() for name in column.holds]
        value = functions.when(holds[0] if len(holds) == 1 else holds[0] | holds[1], own).otherwise(inherited)
    elif column.own is None:
        value = inherited
    elif column.inherited is None:
        value = own
    else:
        value = functions.coalesce(own, inherited)
    return value.cast(spark_type(column.kind)).alias(column.name)


def _typed_null(functions, column: Column):  # noqa: ANN001, ANN202
    return functions.lit(None).cast(spark_type(column.kind))


def _quoted(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"
