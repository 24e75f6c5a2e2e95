"""What the dashboard reads: the runs table, the metric columns, downsampled curves, SQL.

Everything goes through a private, read-only :class:`ExperimentCollection` (opened with
``recover=False``: the dashboard never changes the collection). Its DuckDB database is
locked down once the views exist: files outside the collection's ``runs/`` folder cannot
be read, the configuration cannot be changed back, and the SQL box accepts one SELECT
(``WITH``, ``DESCRIBE``, ``SHOW``, ``SUMMARIZE`` parse as SELECT) and nothing else.
"""

from __future__ import annotations

import datetime
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from ..collection import ExperimentCollection
from ..errors import RecorderError
from ..query_text import quote_literal as _literal
from ..query_text import quote_name as _name
from ..store.layout import BOOKKEEPING_KEYS, DAMAGED, RUNNING, RUNS_FOLDER

#: Columns of a numeric DuckDB type: what a curve can plot.
NUMERIC_TYPES = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER",
                 "UBIGINT", "UHUGEINT", "FLOAT", "DOUBLE", "DECIMAL")
#: Own columns picked as the x axis when present, in this order; else the records' order.
STEP_COLUMNS = ("step", "global_step", "epoch", "index")
#: Every run's bookkeeping columns in the views (not experiment info).
BOOKKEEPING = BOOKKEEPING_KEYS
#: Columns of the ``experiments`` view that are not experiment info.
RUN_COLUMNS = ("run_id", "status", "records", "error", *BOOKKEEPING)
#: The records view's columns that together name one run (until the view carries ``run_id``).
RUN_KEY = ("experiment_number", "error_number")
#: Most rows the SQL box returns.
MAX_RESULT_ROWS = 1000
#: Most buckets (pixel columns) a curve request may ask for.
MAX_BUCKETS = 4000
_LIVE_COLUMNS_AGE = 5.0  # seconds the metric columns are trusted while runs are running
_CACHED_VALUES = 32_000_000  # x and y values of finished runs kept in memory, all runs together


class DashboardError(RecorderError, ValueError):
    """A request the dashboard cannot answer: bad SQL, an unknown column or run."""


@dataclass
class Curve:
    """One run's (x, y) values in x order, y finite."""

    x: np.ndarray
    y: np.ndarray


class DashboardData:
    """The read side of the dashboard over one collection; safe to call from several threads."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.collection = ExperimentCollection(path, quiet=True, create=False, recover=False)
        self._lock = threading.Lock()
        # The runs table reads through a second copy: its answers never wait for a long records query.
        self._table = ExperimentCollection(path, quiet=True, create=False, recover=False)
        self._table_lock = threading.Lock()
        self._curves: OrderedDict[tuple[Any, ...], Curve] = OrderedDict()
        self._stats: dict[tuple[Any, ...], dict[str, Any] | None] = {}
        self._columns: tuple[tuple[Any, ...], float, list[str]] | None = None
        self._buckets = duckdb.connect()  # private: downsampling only, never user SQL
        self._lock_down()
        # Load now what the first curve needs (pyarrow's numpy conversions: ~0.5 s on first use).
        self._buckets.sql("SELECT 1.0 AS x").to_arrow_table().column("x").to_numpy(zero_copy_only=False)
        self._m4(self._buckets, Curve(np.arange(2.0), np.arange(2.0)), 0.0, 1.0, 1)

    def _lock_down(self) -> None:
        runs = _literal(str(self.collection.path / RUNS_FOLDER) + os.sep)
        # One thread: keeps the records in their order (the x of last resort) and leaves cores to training.
        for collection in (self.collection, self._table):
            for statement in ("SET threads=1", f"SET allowed_directories=[{runs}]",
                              "SET enable_external_access=false", "SET lock_configuration=true"):
                collection.sql(statement)

    def wait_idle(self) -> None:
        """Return once no query is running (a query left running at interpreter exit aborts it)."""
        with self._lock, self._table_lock:
            pass

    # -- fresh state -------------------------------------------------------------------------

    def _views(self, collection: ExperimentCollection | None = None) -> duckdb.DuckDBPyRelation:
        """``experiments`` as the runs folder is now; :meth:`_also` runs more SQL on the same views.

        Each ``collection.sql()`` scans the runs folder: one call per request, then ``_also``.
        """
        return (self.collection if collection is None else collection).sql("SELECT * FROM experiments")

    @staticmethod
    def _also(views: duckdb.DuckDBPyRelation, sql: str) -> duckdb.DuckDBPyRelation:
        return views.query("dashboard_experiments", sql)

    def _runs_of(self, views: duckdb.DuckDBPyRelation) -> list[dict[str, Any]]:
        """Each run as ``views`` saw it (the same scan as ``collection.runs``): id, number, error
        number, status and record count; a stopped run's count names its records for the caches."""
        rows = self._also(views, "SELECT run_id, experiment_number, error_number, status, records FROM experiments")
        return [{"id": run_id, "experiment_number": number, "error_number": errors, "status": status, "records": count}
                for run_id, number, errors, status, count in rows.fetchall()]

    @staticmethod
    def _signature(infos: list[dict[str, Any]]) -> tuple[Any, ...]:
        """What changes when a run starts or stops (a running run's growth is not counted)."""
        return tuple((info["id"], info["status"], None if info["status"] == RUNNING else info["records"])
                     for info in infos)

    # -- the runs table ----------------------------------------------------------------------

    def runs(self, where: str = "") -> dict[str, Any]:
        """Every run (or those of ``experiments`` matching the SQL ``where``): status, error, info.

        Read from the ``experiments`` view alone, which ``collection.sql()`` builds from the same
        scan as ``collection.runs`` (a dead process's run reads as crashed): one scan per call.
        """
        with self._table_lock:
            views = self._views(self._table)
            names = views.columns
            rows = [dict(zip(names, row)) for row in views.fetchall()]
            kept = None
            if where.strip():
                query = f"SELECT run_id FROM experiments WHERE {where}"
                _check_select(query)
                kept = {row[0] for row in _sql_errors(lambda: self._also(views, query).fetchall())}
        info_columns = [name for name in names if name not in RUN_COLUMNS]
        now = time.time()
        table = []
        for row in rows:
            if kept is not None and row["run_id"] not in kept:
                continue
            duration = row["experiment_duration"]
            if duration is None and row["status"] == RUNNING:
                duration = now - row["experiment_start_time"]
            table.append({
                "run_id": row["run_id"],
                "experiment_number": row["experiment_number"],
                "error_number": row["error_number"],
                "status": row["status"],
                "error": row["error"],
                "start": row["experiment_start_time"],
                "duration": duration,
                "records": row["records"],
                "info": {name: _json_value(row[name]) for name in info_columns},
            })
        return {"columns": info_columns, "runs": table}

    def stats(self, metric: str, x: str = "") -> dict[str, Any]:
        """Last (in ``x`` order, else the records' order), min and max of ``metric`` per run.

        A stopped run's figures are computed once; later calls read them from memory.
        """
        with self._lock:
            views = self._views()
            infos = self._runs_of(views)
            metric = self._numeric_column(views, infos, metric, "metric")
            if x:
                x = self._numeric_column(views, infos, x, "x")
            keys = {info["id"]: (info["id"], info["records"], metric, x) for info in infos
                    if info["status"] != DAMAGED}
            missing = [run_id for run_id, key in keys.items() if key not in self._stats]
            if missing:
                order = f" ORDER BY r.{_name(x)}" if x else ""
                y = f"r.{_name(metric)}"
                query = (f"SELECT e.run_id, last({y}{order}), min({y}), max({y}) FROM records AS r "
                         f"JOIN experiments AS e USING ({', '.join(RUN_KEY)}) "
                         f"WHERE e.run_id IN ({', '.join(map(_literal, missing))}) AND isfinite({y}) GROUP BY e.run_id")
                found = {run_id: {"last": _json_value(last), "min": _json_value(low), "max": _json_value(high)}
                         for run_id, last, low, high in self._also(views, query).fetchall()}
                stopped = {info["id"] for info in infos if info["status"] != RUNNING}
                for run_id in missing:
                    if run_id in stopped:
                        self._stats[keys[run_id]] = found.get(run_id)
            else:
                found = {}
            return {"metric": metric, "x": x,
                    "stats": {run_id: found[run_id] if run_id in found else self._stats.get(key)
                              for run_id, key in keys.items()}}

    # -- columns -------------------------------------------------------------------------------

    def columns(self) -> dict[str, Any]:
        """The records' own numeric columns (metrics), the x choices and the group-by columns."""
        with self._lock:
            views = self._views()
            infos = self._runs_of(views)
            metrics = self._metric_columns(views, infos)
            groups = [name for name in views.columns if name not in RUN_COLUMNS]
        default_x = next((name for name in STEP_COLUMNS if name in metrics), "")
        return {"collection": str(self.collection.path), "metrics": metrics, "x": metrics, "default_x": default_x,
                "groups": groups}

    def _metric_columns(self, views: duckdb.DuckDBPyRelation, infos: list[dict[str, Any]]) -> list[str]:
        """Numeric columns that records hold themselves (not inherited info).

        Binding ``records`` opens every run's file, so the answer is kept until a run starts,
        stops or is compacted, and for at most a few seconds while runs are running.
        """
        signature = self._signature(infos)
        running = any(info["status"] == RUNNING for info in infos)
        cached = self._columns
        if cached and cached[0] == signature and not (running and time.monotonic() - cached[1] > _LIVE_COLUMNS_AGE):
            return cached[2]
        if "columns" in {name for (name,) in self._also(views, "SHOW TABLES").fetchall()}:
            # The view says which columns hold the records' own values (source 'record', or
            # 'record and inherited' for a key that records and recorders both hold).
            typed = self._also(views, "SELECT name, type FROM columns WHERE part = 'value' AND source LIKE 'record%'")
            metrics = [name for name, kind in typed.fetchall() if kind.startswith(NUMERIC_TYPES)]
        else:  # a flat view without the `columns` table: what its lineage table lacks is the records' own
            types = dict(self._also(views, "SELECT column_name, column_type FROM (DESCRIBE records)").fetchall())
            inherited = set(self._also(views, "SELECT * FROM lineage LIMIT 0").columns)
            metrics = [name for name, kind in types.items()
                       if name not in inherited and name not in BOOKKEEPING and kind.startswith(NUMERIC_TYPES)]
        self._columns = (signature, time.monotonic(), metrics)
        return metrics

    def _numeric_column(self, views: duckdb.DuckDBPyRelation, infos: list[dict[str, Any]], name: str,
                        role: str) -> str:
        known = self._metric_columns(views, infos)
        if name not in known:
            raise DashboardError(f"unknown {role} column {name!r}; the records' numeric columns: {', '.join(known)}")
        return name

    # -- curves --------------------------------------------------------------------------------

    def curves(self, run_ids: Sequence[str], y: str, x: str = "", buckets: int = 800, smoothing: float = 0.0,
               x_range: tuple[float, float] | None = None, relative: bool = False,
               group_by: str = "") -> dict[str, Any]:
        """Downsampled curves of ``y`` against ``x`` (default: the records' order), one per run
        or, with ``group_by``, a mean line and min-max band per value of that info column.

        ``smoothing`` in [0, 1) is the weight of TensorBoard's debiased exponential moving
        average, applied to every point before downsampling. Each curve keeps at most the
        first, last, min and max point of each of ``buckets`` equal slices of the x range
        (``x_range`` when zoomed, else all of it): at most 4 x ``buckets`` points.
        """
        if not 0 <= smoothing < 1:
            raise DashboardError(f"smoothing must be in [0, 1), not {smoothing!r}")
        buckets = max(1, min(int(buckets), MAX_BUCKETS))
        with self._lock:
            views = self._views()
            runs = self._runs_of(views)
            infos = {info["id"]: info for info in runs}
            unknown = [run_id for run_id in run_ids if run_id not in infos]
            if unknown:
                raise DashboardError(f"no run {unknown[0]!r} in {str(self.collection.path)!r}")
            y = self._numeric_column(views, runs, y, "y")
            if x:
                x = self._numeric_column(views, runs, x, "x")
            groups = self._group_values(views, run_ids, group_by) if group_by else {}
            curves = self._load_curves(views, [infos[run_id] for run_id in run_ids], y, x)
        for run_id, curve in curves.items():
            smoothed = debiased_ema(curve.y, smoothing) if smoothing else curve.y
            xs = curve.x - curve.x[0] if relative and len(curve.x) else curve.x
            curves[run_id] = (Curve(xs, smoothed), Curve(xs, curve.y))
        low, high = x_range if x_range else _extent([pair[0].x for pair in curves.values()])
        with self._buckets.cursor() as database:  # one per request: requests bucket at the same time
            if group_by:
                series = self._grouped(database, curves, groups, low, high, buckets)
            else:
                series = []
                for run_id, (smoothed, raw) in curves.items():
                    series.append({"run_id": run_id, "kind": "line", **self._m4(database, smoothed, low, high, buckets)})
                    if smoothing:
                        series.append({"run_id": run_id, "kind": "raw", **self._m4(database, raw, low, high, buckets)})
        return {"series": series, "buckets": buckets, "x_range": [_json_value(low), _json_value(high)],
                "points": sum(len(item["x"]) for item in series)}

    def _load_curves(self, views: duckdb.DuckDBPyRelation, infos: list[dict[str, Any]], y: str,
                     x: str) -> dict[str, Curve]:
        """Each run's finite (x, y) in x order; a stopped run's from the cache when there."""
        found: dict[str, Curve] = {}
        missing = []
        for info in infos:
            key = (info["id"], info["records"], y, x)
            if info["status"] != RUNNING and key in self._curves:
                self._curves.move_to_end(key)
                found[info["id"]] = self._curves[key]
            else:
                missing.append(info)
        for info in [info for info in missing if info["status"] == DAMAGED]:  # nothing readable
            found[info["id"]] = Curve(np.empty(0), np.empty(0))
            missing.remove(info)
        if missing:
            # A run is its (experiment_number, error_number): a filter on the lineage side of the view.
            which = [f"experiment_number = {int(info['experiment_number'])} AND error_number = "
                     f"{int(info['error_number'])}" for info in missing]
            position = " ".join(f"WHEN {condition} THEN {index}" for index, condition in enumerate(which, start=1))
            x_value = f"CAST({_name(x)} AS DOUBLE)" if x else "NULL::DOUBLE"
            table = self._also(
                views,
                f"SELECT CASE {position} END AS run, {x_value} AS x, CAST({_name(y)} AS DOUBLE) AS y FROM records "
                f"WHERE ({' OR '.join(f'({condition})' for condition in which)}) AND isfinite({_name(y)})"
                + (f" AND {_name(x)} IS NOT NULL" if x else "")
            ).to_arrow_table()
            runs = table.column("run").to_numpy()
            xs = table.column("x").to_numpy(zero_copy_only=False)
            ys = table.column("y").to_numpy(zero_copy_only=False)
            for position, info in enumerate(missing, start=1):
                mine = slice(None) if len(missing) == 1 else runs == position
                curve_y = ys[mine]
                if x:
                    curve_x = xs[mine]
                    if len(curve_x) > 1 and not (np.diff(curve_x) >= 0).all():
                        order = np.argsort(curve_x, kind="stable")  # stable: records' order among equal x
                        curve_x, curve_y = curve_x[order], curve_y[order]
                    curve = Curve(curve_x, curve_y)
                else:
                    curve = Curve(np.arange(len(curve_y), dtype=np.float64), curve_y)
                found[info["id"]] = curve
                if info["status"] != RUNNING:
                    self._remember((info["id"], info["records"], y, x), curve)
        return {info["id"]: found[info["id"]] for info in infos}  # in the order asked

    def _remember(self, key: tuple[Any, ...], curve: Curve) -> None:
        self._curves[key] = curve
        while sum(len(item.x) * 2 for item in self._curves.values()) > _CACHED_VALUES and len(self._curves) > 1:
            self._curves.popitem(last=False)

    def _group_values(self, views: duckdb.DuckDBPyRelation, run_ids: Sequence[str], column: str) -> dict[str, Any]:
        names = views.columns
        if column not in names or column in RUN_COLUMNS:
            known = ", ".join(name for name in names if name not in RUN_COLUMNS)
            raise DashboardError(f"unknown group-by column {column!r}; experiment info columns: {known}")
        ids = ", ".join(_literal(run_id) for run_id in run_ids)
        rows = self._also(views, f"SELECT run_id, {_name(column)} FROM experiments WHERE run_id IN ({ids})")
        return {run_id: _json_value(value) for run_id, value in rows.fetchall()}

    @staticmethod
    def _m4(database: duckdb.DuckDBPyConnection, curve: Curve, low: float, high: float,
            buckets: int) -> dict[str, list[Any]]:
        """The first, last, min and max point of each x bucket, plus the nearest point outside
        the range on each side (so that a zoomed line reaches the chart's edges)."""
        start = int(np.searchsorted(curve.x, low, side="left"))
        stop = int(np.searchsorted(curve.x, high, side="right"))
        edges = [index for index in (start - 1, stop) if 0 <= index < len(curve.x)]
        xs, ys = [curve.x[edges]], [curve.y[edges]]
        if stop > start:
            database.register("points", pa.table({"x": curve.x[start:stop], "y": curve.y[start:stop]}))
            picked = database.execute(
                "SELECT min(x), arg_min(y, x), max(x), arg_max(y, x), arg_min(x, y), min(y), arg_max(x, y), max(y) "
                "FROM points GROUP BY least(floor((x - $low) / $width * $buckets), $buckets - 1)",
                {"low": low, "width": (high - low) or 1.0, "buckets": buckets},
            ).fetchnumpy()
            database.unregister("points")
            columns = [np.asarray(column, dtype=np.float64) for column in picked.values()]
            xs.extend(columns[0::2])
            ys.extend(columns[1::2])
        points = np.unique(np.column_stack([np.concatenate(xs), np.concatenate(ys)]), axis=0)  # sorted by x, then y
        return {"x": points[:, 0].tolist(), "y": points[:, 1].tolist()}

    @staticmethod
    def _grouped(database: duckdb.DuckDBPyConnection, curves: dict[str, tuple[Curve, Curve]], groups: dict[str, Any],
                 low: float, high: float, buckets: int) -> list[dict[str, Any]]:
        """Per group value: per x bucket, the mean over runs of each run's mean, and the min and max."""
        parts = []
        for run_id, (smoothed, _) in curves.items():
            inside = (smoothed.x >= low) & (smoothed.x <= high)
            parts.append(pa.table({"run": pa.array([run_id] * int(inside.sum()), pa.string()),
                                   "x": smoothed.x[inside], "y": smoothed.y[inside]}))
        if not parts:
            return []
        database.register("points", pa.concat_tables(parts))
        database.register("groups", pa.table({"run": list(groups),
                                                   "label": [_label(value) for value in groups.values()]}))
        rows = database.execute(
            "WITH per_run AS (SELECT label, run, least(floor((x - $low) / $width * $buckets), $buckets - 1) AS b, "
            "avg(x) AS x, avg(y) AS mean, min(y) AS low, max(y) AS high FROM points JOIN groups USING (run) "
            "GROUP BY ALL) "
            "SELECT label, b, avg(x), avg(mean), min(low), max(high), count(*) FROM per_run GROUP BY label, b "
            "ORDER BY label, b",
            {"low": low, "width": (high - low) or 1.0, "buckets": buckets},
        ).fetchall()
        database.unregister("points")
        database.unregister("groups")
        series: dict[str, dict[str, Any]] = {}
        for label, _, x, mean, lowest, highest, runs in rows:
            members = sorted(run_id for run_id, value in groups.items() if _label(value) == label)
            item = series.setdefault(label, {"group": label, "runs": members, "kind": "group",
                                             "x": [], "y": [], "min": [], "max": [], "count": []})
            for field, value in (("x", x), ("y", mean), ("min", lowest), ("max", highest), ("count", runs)):
                item[field].append(_json_value(value))
        return list(series.values())

    # -- the SQL box -------------------------------------------------------------------------

    def query(self, sql: str, max_rows: int = MAX_RESULT_ROWS) -> dict[str, Any]:
        """Run one read-only statement; its columns and first ``max_rows`` rows."""
        _check_select(sql)
        with self._lock:
            relation = _sql_errors(lambda: self.collection.sql(sql))
            rows = _sql_errors(lambda: relation.limit(max_rows + 1).fetchall())
        return {"columns": relation.columns, "rows": [[_json_value(value) for value in row] for row in rows[:max_rows]],
                "truncated": len(rows) > max_rows}


def _check_select(sql: str) -> None:
    """Refuse anything but exactly one SELECT statement (WITH, DESCRIBE, SHOW parse as SELECT)."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as error:
        raise DashboardError(str(error)) from None
    if len(statements) != 1:
        raise DashboardError(f"give exactly one statement, not {len(statements)}")
    if statements[0].type != duckdb.StatementType.SELECT:
        raise DashboardError(f"only SELECT, WITH, DESCRIBE or SHOW may run here, not {statements[0].type.name}")


def _sql_errors(work: Any) -> Any:
    """``work()``, with DuckDB's errors (bad SQL, a refused file) as DashboardError."""
    try:
        return work()
    except duckdb.Error as error:
        raise DashboardError(str(error)) from None


def debiased_ema(values: np.ndarray, weight: float) -> np.ndarray:
    """TensorBoard's debiased exponential moving average: ``s_i = w s_(i-1) + (1 - w) y_i``
    from ``s_(-1) = 0``, divided by ``1 - w^(i+1)`` so that the start is not pulled to zero.

    Computed in blocks with numpy: within a block, ``s`` is a cumulative sum scaled by powers
    of ``w``, the block length kept short enough that ``w^-length`` stays finite.
    """
    if not 0 <= weight < 1:
        raise ValueError(f"smoothing weight must be in [0, 1), not {weight!r}")
    if weight == 0 or not len(values):
        return values.astype(np.float64, copy=True)
    block = int(min(1024, max(1, 600 / -math.log(weight))))
    result = np.empty(len(values), dtype=np.float64)
    carry = 0.0
    powers = weight ** np.arange(1, block + 1, dtype=np.float64)
    for start in range(0, len(values), block):
        chunk = np.asarray(values[start:start + block], dtype=np.float64)
        scale = powers[: len(chunk)]
        result[start:start + len(chunk)] = scale * carry + (1 - weight) * scale * np.cumsum(chunk / scale)
        carry = result[start + len(chunk) - 1]
    result /= 1 - weight ** np.arange(1, len(values) + 1, dtype=np.float64)
    return result


def _extent(arrays: Sequence[np.ndarray]) -> tuple[float, float]:
    present = [array for array in arrays if len(array)]
    if not present:
        return 0.0, 1.0
    return float(min(array[0] for array in present)), float(max(array[-1] for array in present))


def _label(value: Any) -> str:
    return "NULL" if value is None else f"{value:.6g}" if isinstance(value, float) else str(value)


def _json_value(value: Any) -> Any:
    """A value JSON can carry: NaN and infinities as null, dates and bytes as text."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (datetime.date, datetime.time, datetime.timedelta)):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, (list, tuple)):
        return [_json_value(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _json_value(item) for key, item in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)
