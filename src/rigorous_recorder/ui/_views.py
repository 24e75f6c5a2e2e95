"""The stopped runs' flat views, built a few runs at a time and never for a running run's news.

``collection.sql()`` rebuilds its views over every run whenever one is running (a running run
grows). The dashboard instead keeps the stopped runs in a handful of :class:`StoppedView`
objects, each a ``records``/``experiments``/``columns`` view over some runs in its own DuckDB
database: a run that stops joins a new small view; only a view holding a run that changed
again (resumed, recovered) is rebuilt. Every database reads nothing outside the collection's
``runs/`` folder, and its configuration is locked.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .._naming import parse
from ..query import Query
from ..query_text import quote_literal, quote_name
from ..store.layout import CATALOG_FOLDER, RUNNING, RUNS_FOLDER
from ..store.run_folder import RunFolder
from ._curves import Curve, local_epoch, numbers
from ._tail import WALL_TIME

#: Columns of a numeric DuckDB type: what a curve can plot.
NUMERIC_TYPES = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER",
                 "UBIGINT", "UHUGEINT", "FLOAT", "DOUBLE", "DECIMAL")
#: Columns of these types are each record's wall-clock time (besides a numeric ``wall_time``).
TIME_TYPES = ("TIMESTAMP", "TIMESTAMPTZ", "TIMESTAMP WITH TIME ZONE")
#: The collection's folders a dashboard database may read: the runs, and the catalog's packs of them.
READABLE_FOLDERS = (RUNS_FOLDER, CATALOG_FOLDER)
#: Most views kept side by side; then the smaller half is merged into one.
MAX_VIEWS = 8


def lock_statements(runs_folder: Path) -> list[str]:
    """The settings that keep a DuckDB database on the collection's records: files outside its
    ``runs/`` and ``catalog/`` folders cannot be read, and the settings cannot be changed back.

    One thread: keeps the records in their order (the x of last resort) and leaves cores to training.
    """
    folders = ", ".join(quote_literal(str(runs_folder.with_name(name)) + os.sep) for name in READABLE_FOLDERS)
    return ["SET threads=1", f"SET allowed_directories=[{folders}]", "SET enable_external_access=false",
            "SET lock_configuration=true"]


def locked_database(runs_folder: Path) -> duckdb.DuckDBPyConnection:
    """A DuckDB database under :func:`lock_statements`."""
    database = duckdb.connect()
    for statement in lock_statements(runs_folder):
        database.execute(statement)
    return database


def signature(info: dict[str, Any]) -> tuple[Any, ...]:
    """What changes in a stopped run's info when its records change (recovery, a resume)."""
    return info["status"], info.get("records"), info.get("records_count"), info.get("error")


class StoppedView:
    """The flat views of some stopped runs, and what the dashboard reads from them once."""

    def __init__(self, runs_folder: Path, infos: Sequence[dict[str, Any]]) -> None:
        self.members = {info["id"]: signature(info) for info in infos}
        self._lock = threading.Lock()  # one query at a time in its database; other views answer meanwhile
        folders = {info["id"]: RunFolder(runs_folder / info["id"]) for info in infos}
        self._query = Query([(folders[info["id"]], info) for info in infos], locked_database(runs_folder))
        table = self._query.sql("SELECT * FROM experiments").to_arrow_table()
        #: The ``experiments`` rows as Arrow (for the where box) and by run id.
        self.experiments = table
        self.rows = {row["run_id"]: row for row in table.to_pylist()}
        own = self._query.sql("SELECT name, type, source FROM columns WHERE part = 'value' AND source LIKE 'record%'")
        types, only_own = {}, set()
        for name, kind, source in own.fetchall():
            types[name] = kind
            if source == "record" and kind.startswith((*NUMERIC_TYPES, *TIME_TYPES)):
                only_own.add(name)
        #: The columns a run's records file gives as they are (no inherited values, no other types).
        self._plain = only_own
        #: Each run's records file, where it is the whole run (no journal left).
        self._files = {info["id"]: folders[info["id"]].compacted_path(info) for info in infos
                       if info.get("records") and not folders[info["id"]].journal_paths(info)}
        #: The records' own numeric columns, and the type of each own column.
        self.metrics = [name for name, kind in types.items() if kind.startswith(NUMERIC_TYPES)]
        self.types = types
        #: Each run's time column (``wall_time``, else its first timestamp column), or None.
        self.time_of_run = self._time_columns(
            [name for name in (WALL_TIME, *types) if types.get(name, "").startswith(TIME_TYPES)
             or (name == WALL_TIME and name in self.metrics)])

    def wait_idle(self) -> None:
        """Return once this view runs no query."""
        with self._lock:
            pass

    def _time_columns(self, candidates: list[str]) -> dict[str, str | None]:
        candidates = list(dict.fromkeys(candidates))
        if not candidates:
            return dict.fromkeys(self.members)
        counts = ", ".join(f"count({quote_name(name)})" for name in candidates)
        found = {run_id: next((name for name, count in zip(candidates, row) if count), None)
                 for run_id, *row in self._query.sql(f"SELECT run_id, {counts} FROM records GROUP BY run_id").fetchall()}
        return {run_id: found.get(run_id) for run_id in self.members}

    def curves(self, run_ids: Sequence[str], y: str, x: str) -> dict[str, Curve]:
        """Each run's finite (x, y) in x order; x "" is the records' order, a timestamp column
        gives seconds since the epoch (naive timestamps read as local time).

        A run whose records file is the whole run is read from that file alone (the view
        would scan every run's file); the others through the view, in one query.
        """
        found: dict[str, Curve] = {}
        if y in self._plain and (not x or x in self._plain):
            for run_id in run_ids:
                if run_id in self._files and (curve := _read_file(self._files[run_id], y, x)) is not None:
                    found[run_id] = curve
        rest = [run_id for run_id in run_ids if run_id not in found]
        if rest:
            found.update(self._query_curves(rest, y, x))
        return found

    def _query_curves(self, run_ids: Sequence[str], y: str, x: str) -> dict[str, Curve]:
        kind = self.types.get(x, "")
        x_value = (f"epoch_us({quote_name(x)}) / 1e6" if kind.startswith(TIME_TYPES)
                   else f"CAST({quote_name(x)} AS DOUBLE)" if x else "NULL::DOUBLE")
        position = " ".join(f"WHEN {quote_literal(run_id)} THEN {index}" for index, run_id in enumerate(run_ids))
        with self._lock:
            table = self._query.sql(
                f"SELECT CASE run_id {position} END AS run, {x_value} AS x, CAST({quote_name(y)} AS DOUBLE) AS y "
                f"FROM records WHERE run_id IN ({', '.join(map(quote_literal, run_ids))}) AND isfinite({quote_name(y)})"
                + (f" AND {quote_name(x)} IS NOT NULL" if x else "")
            ).fetchnumpy()
        runs, xs, ys = (np.asarray(table[name]) for name in ("run", "x", "y"))
        if kind == "TIMESTAMP":
            xs = local_epoch(xs.astype(np.float64))
        found = {}
        for index, run_id in enumerate(run_ids):
            mine = slice(None) if len(run_ids) == 1 else runs == index
            found[run_id] = Curve.of(xs[mine] if x else None, ys[mine])
        return found

    def stats(self, run_ids: Iterable[str], metric: str, x: str) -> dict[str, tuple[Any, Any, Any]]:
        """(last in x order, min, max) of ``metric`` for each of ``run_ids`` that has a finite value."""
        ids = list(run_ids)
        if not ids:
            return {}
        y = quote_name(metric)
        order = f" ORDER BY {quote_name(x)}" if x else ""
        with self._lock:
            rows = self._query.sql(
                f"SELECT run_id, last({y}{order}), min({y}), max({y}) FROM records "
                f"WHERE run_id IN ({', '.join(map(quote_literal, ids))}) AND isfinite({y})"
                + (f" AND {quote_name(x)} IS NOT NULL" if x else "") + " GROUP BY run_id").fetchall()
        return {run_id: (last, low, high) for run_id, last, low, high in rows}


def _read_file(path: Path, y: str, x: str) -> Curve | None:
    """The curve of one run from its records file alone; None when a column there is not a
    number or a timestamp (values of several types, kept as JSON text: the view reads those)."""
    keys = [parse(name)[0] for name in (y, x) if name]
    with pq.ParquetFile(path) as file:
        if not set(keys) <= set(file.schema_arrow.names):
            return Curve.empty()  # this run never recorded one of them
        table = file.read(columns=list(dict.fromkeys(keys)))
    values = [numbers(table.column(key)) for key in keys]
    if any(column is None for column in values):
        return None
    return Curve.of(values[1] if x else None, values[0])


class StoppedViews:
    """Every stopped run of a collection, in a few :class:`StoppedView` objects."""

    def __init__(self, runs_folder: Path) -> None:
        self._runs_folder = runs_folder
        self.views: list[StoppedView] = []
        self._where_table: pa.Table | None = None

    def update(self, infos: Sequence[dict[str, Any]]) -> bool:
        """Follow the runs as ``collection.runs`` lists them now; True when a view was (re)built."""
        stopped = {info["id"]: info for info in infos if info["status"] != RUNNING}
        kept = [view for view in self.views
                if all(run_id in stopped and signature(stopped[run_id]) == sig for run_id, sig in view.members.items())]
        known = {run_id for view in kept for run_id in view.members}
        new = [info for run_id, info in stopped.items() if run_id not in known]
        if not new and len(kept) == len(self.views):
            return False
        if len(kept) >= MAX_VIEWS:  # the smaller half joins the new view: a run is rebuilt O(log runs) times
            kept.sort(key=lambda view: len(view.members), reverse=True)
            merged, kept = kept[MAX_VIEWS // 2:], kept[:MAX_VIEWS // 2]
            new += [stopped[run_id] for view in merged for run_id in view.members]
        self.views = kept + ([StoppedView(self._runs_folder, new)] if new else [])
        self._where_table = None
        return True

    def wait_idle(self) -> None:
        """Return once no view is running a query."""
        for view in self.views:
            view.wait_idle()

    def view_of(self, run_id: str) -> StoppedView | None:
        """The view holding a stopped run."""
        return next((view for view in self.views if run_id in view.members), None)

    @property
    def metrics(self) -> list[str]:
        """The records' own numeric columns, every view's."""
        return list(dict.fromkeys(name for view in self.views for name in view.metrics))

    def experiments(self) -> pa.Table | None:
        """Every view's ``experiments`` rows in one table (a column's clashing types as text)."""
        if self._where_table is None and self.views:
            self._where_table = concat([view.experiments for view in self.views])
        return self._where_table


def concat(tables: Sequence[pa.Table]) -> pa.Table:
    """``tables`` one after another; a column missing from some is null there, and a column
    whose types clash (a number in one, text in another) becomes text."""
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        pass
    kinds: dict[str, set[pa.DataType]] = {}
    for table in tables:
        for field in table.schema:
            kinds.setdefault(field.name, set()).add(field.type)
    clashing = {name for name, types in kinds.items() if len(types - {pa.null()}) > 1}
    return pa.concat_tables([_as_text(table, clashing) for table in tables], promote_options="permissive")


def _as_text(table: pa.Table, names: set[str]) -> pa.Table:
    for name in names & set(table.column_names):
        table = table.set_column(table.schema.get_field_index(name), name, table.column(name).cast(pa.string()))
    return table
