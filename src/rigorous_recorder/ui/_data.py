"""What the dashboard reads: the runs table, the metric columns, downsampled curves, SQL.

Everything goes through a private, read-only :class:`ExperimentCollection` (opened with
``recover=False``: the dashboard never changes the collection). Each request starts from
``collection.runs`` (one scan of the runs folder, shared by the requests of one poll); the
stopped runs are read through :class:`~._views.StoppedViews`, built once per run that stops,
and each running run through a :class:`~._tail.RunningTail`, which decodes only what was
flushed since the last look. Every DuckDB database is locked down: files outside the
collection's ``runs/`` and ``catalog/`` folders cannot be read, the configuration cannot be changed back, and
the SQL box accepts one SELECT (``WITH``, ``DESCRIBE``, ``SHOW``, ``SUMMARIZE`` parse as
SELECT) and nothing else.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from ..collection import ExperimentCollection
from .._naming import view_names
from ..errors import RecorderError
from ..query import RUN_COLUMNS
from ..store.layout import DAMAGED, FAILED, RUNNING, RUNS_FOLDER
from ..store.run_folder import RunFolder
from ._curves import Curve, debiased_ema, extent, grouped, m4, numbers
from ._tail import RunningTail, tail_key
from ._views import StoppedView, StoppedViews, concat, lock_statements, locked_database, signature

#: Own columns picked as the x axis when present, in this order; else the records' order.
STEP_COLUMNS = ("step", "global_step", "epoch", "index")
#: The x axis choices that read each run's time column: seconds since the epoch, or since the run started.
TIME_AXES = ("wall", "relative")
#: Most rows the SQL box returns.
MAX_RESULT_ROWS = 1000
#: Most buckets (pixel columns) a curve request may ask for.
MAX_BUCKETS = 4000
#: Runs the chart shows when the page names none: the latest that did not fail.
AUTO_SELECTED = 10
#: The runs table's fields besides the experiment info, in the order the page gets them.
ROW_FIELDS = ("run_id", "experiment_number", "error_number", "status", "error", "start", "duration", "records", "time")
_SCAN_AGE = 0.25  # seconds a scan of the runs folder answers the requests of one poll
_CACHED_VALUES = 32_000_000  # x and y values of stopped runs kept in memory, all runs together


class DashboardError(RecorderError, ValueError):
    """A request the dashboard cannot answer: bad SQL, an unknown column or run."""


class DashboardData:
    """The read side of the dashboard over one collection; safe to call from several threads.

    Opening builds the views of the stopped runs and the table's rows (about a second of CPU
    for 1,000 runs), so that the first page is served without that wait.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.collection = ExperimentCollection(path, quiet=True, create=False, recover=False)
        self._lock = threading.Lock()
        self._views = StoppedViews(self.collection.path / RUNS_FOLDER)
        self._tails: dict[str, RunningTail] = {}
        self._infos: list[dict[str, Any]] = []
        self._scanned = -math.inf
        self._curves: OrderedDict[tuple[Any, ...], Curve] = OrderedDict()
        self._stats: dict[tuple[Any, ...], tuple[Any, Any, Any] | None] = {}
        self._stats_locks: dict[tuple[str, str], threading.Lock] = {}  # per (metric, x): one computation at a time
        self._loading_locks: dict[tuple[str, str], threading.Lock] = {}  # per (y, x): one read of stopped runs at a time
        self._rows: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] = {}  # stopped runs' rows
        self._versions: dict[str, tuple[dict[str, Any], int]] = {}
        self._orders: dict[str, tuple[tuple[str, ...], int]] = {}  # per where box: the runs' order, its version
        self._version = time.time_ns() // 1000  # a restarted server's versions follow the old ones
        self._where: tuple[tuple[Any, ...], set[str]] | None = None
        self._private = locked_database(self.collection.path / RUNS_FOLDER)  # the where box and group-by
        self._sql_locked = False
        with self._lock:
            for info in self._scan():
                self._row(info)  # the first page's table, made now
        # What the first curve needs, loaded now (pyarrow's numpy conversions import pandas: ~0.4 s).
        m4(Curve.of(numbers(pa.table({"x": np.arange(2.0)}).column("x")), np.arange(2.0)), 0.0, 1.0, 1)

    def wait_idle(self) -> None:
        """Return once no query is running (a query left running at interpreter exit aborts it)."""
        with self._lock:
            views = self._views
        views.wait_idle()

    # -- fresh state -------------------------------------------------------------------------

    def _scan(self) -> list[dict[str, Any]]:
        """Every run as ``collection.runs`` lists it now (a dead process's run reads as crashed);
        the views and tails follow. The requests of one poll share one scan."""
        if time.monotonic() - self._scanned < _SCAN_AGE:
            return self._infos
        infos = self.collection.runs
        self._views.update(infos)
        running = {info["id"]: info for info in infos if info["status"] == RUNNING}
        for run_id in set(self._tails) - running.keys():
            del self._tails[run_id]
        for run_id, info in running.items():
            tail = self._tails.get(run_id)
            if tail is not None and tail.key == tail_key(info):
                tail.update(info)
            else:
                self._tails[run_id] = RunningTail(RunFolder(self.collection.path / RUNS_FOLDER / run_id), info)
        self._infos, self._scanned = infos, time.monotonic()
        return infos

    # -- the runs table ----------------------------------------------------------------------

    def runs(self, where: str = "") -> dict[str, Any]:
        """Every run (or those of ``experiments`` matching the SQL ``where``): status, error,
        start, duration (None while running), records, time column and experiment info."""
        with self._lock:
            infos = self._scan()
            rows = [self._row(info) for info in infos]
            kept = self._matching(where, rows) if where.strip() else None
        return {"columns": self._info_columns(rows),
                "runs": [row for row in rows if kept is None or row["run_id"] in kept]}

    def runs_since(self, where: str = "", since: int = 0) -> dict[str, Any]:
        """What the page's table needs to catch up from ``version`` ``since``: the rows that
        changed since (column by column: ``changed``), the runs in order (``order``; None when
        it did not change since), the runs the chart shows by default (``auto``) and the
        version to ask from next."""
        table = self.runs(where)
        rows = table["runs"]
        changed = []
        with self._lock:
            for row in rows:
                known = self._versions.get(row["run_id"])
                if known is None or (known[0] is not row and known[0] != row):
                    self._version += 1
                    known = self._versions[row["run_id"]] = (row, self._version)
                if known[1] > since:
                    changed.append(row)
            order = tuple(row["run_id"] for row in rows)
            shown = self._orders.get(where)
            if shown is None or shown[0] != order:
                self._version += 1
                shown = self._orders[where] = (order, self._version)
            version = self._version
        columnar: dict[str, Any] = {field: [row[field] for row in changed] for field in ROW_FIELDS}
        columnar["info"] = {name: [row["info"].get(name) for row in changed] for name in table["columns"]}
        return {"version": version, "columns": table["columns"], "order": list(order) if shown[1] > since else None,
                "changed": columnar, "auto": auto_selection(rows)}

    def _row(self, info: dict[str, Any]) -> dict[str, Any]:
        """A run's row of the table; a stopped run's is made once."""
        run_id = info["id"]
        tail = self._tails.get(run_id) if info["status"] == RUNNING else None
        if tail is None and (cached := self._rows.get(run_id)) is not None and cached[0] == signature(info):
            return cached[1]
        if tail is not None:  # its info named as the views name it (a key such as "status" is "status~2")
            records, time_column = tail.rows, tail.time_column
            names = view_names(tail.experiment_info, reserved=RUN_COLUMNS)
            extra = {names[key]: value for key, value in tail.experiment_info.items()}
        else:
            view = self._views.view_of(run_id)
            stored = view.rows.get(run_id, {}) if view else {}
            records = stored.get("records")
            extra = {name: value for name, value in stored.items() if name not in RUN_COLUMNS}
            time_column = view.time_of_run.get(run_id) if view else None
        row = {"run_id": run_id, "experiment_number": info["experiment_number"],
               "error_number": info["error_number"], "status": info["status"], "error": info.get("error"),
               "start": info.get("experiment_start_time"), "duration": info.get("experiment_duration"),
               "records": records, "time": time_column,
               "info": {name: json_value(value) for name, value in extra.items()}}
        if tail is None:
            self._rows[run_id] = (signature(info), row)
        return row

    @staticmethod
    def _info_columns(rows: list[dict[str, Any]]) -> list[str]:
        return list(dict.fromkeys(name for row in rows for name in row["info"]))

    def _matching(self, where: str, rows: list[dict[str, Any]]) -> set[str]:
        """The run ids of ``experiments`` rows matching the SQL ``where`` (running runs too)."""
        query = f"SELECT run_id FROM experiments WHERE {where}"
        check_select(query)
        running = [row for row in rows if row["status"] == RUNNING]
        key = (where, tuple(map(id, self._views.views)), json.dumps(running, sort_keys=True, default=str))
        if self._where is not None and self._where[0] == key:
            return self._where[1]
        tables = [table for table in [self._views.experiments()] if table is not None]
        infos = {info["id"]: info for info in self._infos}
        if running:
            tables.append(pa.Table.from_pylist([
                {"run_id": row["run_id"], **{name: infos[row["run_id"]].get(name) for name in RUN_COLUMNS
                                             if name not in ("run_id", "records")},
                 "records": row["records"], **row["info"]} for row in running]))
        if not tables:
            return set()
        with self._private.cursor() as database:
            database.register("experiments", concat(tables))
            kept = {run_id for (run_id,) in sql_errors(lambda: database.sql(query).fetchall())}
        self._where = (key, kept)
        return kept

    def stats(self, metric: str, x: str = "") -> dict[str, Any]:
        """Last (in ``x`` order, else the records' order), min and max of ``metric`` per run.

        A stopped run's figures are computed once (from its curve when it is in memory, else
        with one query per view for every run missing them); a running run's from its curve.
        Requests for the same figures wait for the one computing them (a reloaded page asks
        again while the first page's query still runs: a second query would double its cost).
        """
        with self._lock:
            self._scan()
            metric = self._numeric_column(metric, "metric")
            if x:
                x = self._numeric_column(x, "x")
            computing = self._stats_locks.setdefault((metric, x), threading.Lock())
        with computing:
            return self._stats_of(metric, x)

    def _stats_of(self, metric: str, x: str) -> dict[str, Any]:
        with self._lock:
            infos = self._scan()
            found: dict[str, tuple[Any, Any, Any] | None] = {}
            missing: dict[int, tuple[Any, list[str]]] = {}
            for info in infos:
                run_id = info["id"]
                if info["status"] == DAMAGED:
                    continue
                if info["status"] == RUNNING:
                    found[run_id] = _figures(self._tails[run_id].curve(metric, x)) if run_id in self._tails else None
                    continue
                key = (run_id, signature(info), metric, x)
                if key not in self._stats and key in self._curves:  # same key: (run, signature, y, x)
                    self._stats[key] = _figures(self._curves[key])
                if key in self._stats:
                    found[run_id] = self._stats[key]
                else:
                    view = self._views.view_of(run_id)
                    if view is not None:
                        missing.setdefault(id(view), (view, []))[1].append(run_id)
            signatures = {info["id"]: signature(info) for info in infos}
        for view, run_ids in missing.values():  # outside the lock: the table's polls go on meanwhile
            figures = view.stats(run_ids, metric, x)
            with self._lock:
                for run_id in run_ids:
                    found[run_id] = self._stats[(run_id, signatures[run_id], metric, x)] = figures.get(run_id)
        return {"metric": metric, "x": x,
                "stats": {run_id: None if figures is None else dict(zip(("last", "min", "max"), map(json_value, figures)))
                          for run_id, figures in found.items()}}

    # -- columns -------------------------------------------------------------------------------

    def columns(self) -> dict[str, Any]:
        """The records' own numeric columns (metrics), the x choices, the defaults, the
        group-by columns, and whether any run records its wall-clock time."""
        with self._lock:
            infos = self._scan()
            metrics = self._metrics()
            groups = self._info_columns([self._row(info) for info in infos])  # stopped runs' rows are kept
            timed = any(view.time_of_run.get(run_id) for view in self._views.views for run_id in view.members) or any(
                tail.time_column for tail in self._tails.values())
        default_x = next((name for name in STEP_COLUMNS if name in metrics), "")
        default_y = next((name for name in metrics if "loss" in name.lower()),
                         next((name for name in metrics if name != default_x), metrics[0] if metrics else ""))
        return {"collection": str(self.collection.path), "metrics": metrics, "x": metrics, "default_x": default_x,
                "default_y": default_y, "groups": groups, "time": timed}

    def _metrics(self) -> list[str]:
        """Numeric columns that records hold themselves (not inherited info)."""
        return list(dict.fromkeys([*self._views.metrics, *(name for tail in self._tails.values()
                                                            for name in tail.names())]))

    def _numeric_column(self, name: str, role: str) -> str:
        known = self._metrics()
        if name not in known:
            raise DashboardError(f"unknown {role} column {name!r}; the records' numeric columns: {', '.join(known)}")
        return name

    # -- curves --------------------------------------------------------------------------------

    def curves(self, run_ids: Sequence[str], y: str, x: str = "", buckets: int = 800, smoothing: float = 0.0,
               x_range: tuple[float, float] | None = None, relative: bool = False,
               group_by: str = "", time_axis: str = "") -> dict[str, Any]:
        """Downsampled curves of ``y`` against ``x`` (default: the records' order), one per run
        or, with ``group_by``, a mean line and min-max band per value of that info column.

        ``time_axis`` "wall" plots against each run's time column (``wall_time``, else a
        timestamp column: seconds since the epoch), "relative" against the seconds since the
        run started; ``x`` is then ignored. ``smoothing`` in [0, 1) is the weight of
        TensorBoard's debiased exponential moving average, applied to every point before
        downsampling. Each curve keeps at most the first, last, min and max point of each of
        ``buckets`` equal slices of the x range (``x_range`` when zoomed, else all of it).
        """
        if not 0 <= smoothing < 1:
            raise DashboardError(f"smoothing must be in [0, 1), not {smoothing!r}")
        if time_axis and time_axis not in TIME_AXES:
            raise DashboardError(f"time axis must be one of {', '.join(TIME_AXES)}, not {time_axis!r}")
        buckets = max(1, min(int(buckets), MAX_BUCKETS))
        with self._lock:
            infos = {info["id"]: info for info in self._scan()}
            unknown = [run_id for run_id in run_ids if run_id not in infos]
            if unknown:
                raise DashboardError(f"no run {unknown[0]!r} in {str(self.collection.path)!r}")
            y = self._numeric_column(y, "y")
            if x and not time_axis:
                x = self._numeric_column(x, "x")
            rows = {run_id: self._row(infos[run_id]) for run_id in run_ids}
            groups = self._group_values(rows, group_by) if group_by else {}
            x_of = {run_id: rows[run_id]["time"] if time_axis else x for run_id in run_ids}
            found, missing = self._curves_at_hand([infos[run_id] for run_id in run_ids], y, x_of)
        for (_, x_column), (view, members) in missing.items():  # outside the lock: the table's polls go on
            with self._lock:
                loading = self._loading_locks.setdefault((y, x_column), threading.Lock())
            with loading:  # a request for the curves another is reading waits for that read
                with self._lock:
                    members = self._not_remembered(members, y, x_column, found)
                if not members:
                    continue
                loaded = view.curves([info["id"] for info in members], y, x_column)
                with self._lock:
                    for info in members:
                        found[info["id"]] = loaded[info["id"]]
                        self._remember((info["id"], signature(info), y, x_column), loaded[info["id"]])
        curves = {run_id: found[run_id] for run_id in run_ids}  # in the order asked
        untimed = [run_id for run_id in run_ids if time_axis and not x_of[run_id]]
        pairs = {}
        for run_id, curve in curves.items():
            if time_axis == "relative":
                curve = curve.shifted(infos[run_id].get("experiment_start_time") or 0.0)
            if relative and len(curve.x):
                curve = curve.shifted(curve.x[0])
            smoothed = Curve(curve.x, debiased_ema(curve.y, smoothing)) if smoothing else curve
            pairs[run_id] = (smoothed, curve)
        low, high = x_range if x_range else extent([smoothed for smoothed, _ in pairs.values()])
        if group_by:
            with self._private.cursor() as database:  # one per request: requests bucket at the same time
                series = grouped(database, {run_id: smoothed for run_id, (smoothed, _) in pairs.items()}, groups,
                                 low, high, buckets)
        else:
            series = []
            for run_id, (smoothed, raw) in pairs.items():
                series.append({"run_id": run_id, "kind": "line", **m4(smoothed, low, high, buckets)})
                if smoothing:
                    series.append({"run_id": run_id, "kind": "raw", **m4(raw, low, high, buckets)})
        return {"series": series, "buckets": buckets, "x_range": [json_value(low), json_value(high)],
                "points": sum(len(item["x"]) for item in series), "untimed": untimed}

    def _curves_at_hand(self, infos: list[dict[str, Any]], y: str, x_of: dict[str, str | None]) -> tuple[
            dict[str, Curve], dict[tuple[int, str], tuple[StoppedView, list[dict[str, Any]]]]]:
        """Each run's finite (x, y) in x order that needs no query (a running run's, grown from
        its tail; a stopped run's in memory), and the stopped runs to read, by view and x column."""
        found: dict[str, Curve] = {}
        missing: dict[tuple[int, str], tuple[StoppedView, list[dict[str, Any]]]] = {}
        for info in infos:
            run_id, x = info["id"], x_of[info["id"]]
            view = self._views.view_of(run_id)
            if x is None or info["status"] == DAMAGED:  # no time column, or nothing readable
                found[run_id] = Curve.empty()
            elif info["status"] == RUNNING:
                tail = self._tails.get(run_id)
                found[run_id] = tail.curve(y, x) if tail is not None else Curve.empty()
            elif (key := (run_id, signature(info), y, x)) in self._curves:
                self._curves.move_to_end(key)
                found[run_id] = self._curves[key]
            elif view is None:
                found[run_id] = Curve.empty()
            else:
                missing.setdefault((id(view), x), (view, []))[1].append(info)
        return found, missing

    def _not_remembered(self, infos: list[dict[str, Any]], y: str, x: str,
                        found: dict[str, Curve]) -> list[dict[str, Any]]:
        """The runs of ``infos`` whose curve is not in memory; the others' curves go to ``found``."""
        missing = []
        for info in infos:
            curve = self._curves.get((info["id"], signature(info), y, x))
            if curve is None:
                missing.append(info)
            else:
                found[info["id"]] = curve
        return missing

    def _remember(self, key: tuple[Any, ...], curve: Curve) -> None:
        self._curves[key] = curve
        while sum(len(item.x) * 2 for item in self._curves.values()) > _CACHED_VALUES and len(self._curves) > 1:
            self._curves.popitem(last=False)

    def _group_values(self, rows: dict[str, dict[str, Any]], column: str) -> dict[str, Any]:
        known = self._info_columns([self._row(info) for info in self._infos])
        if column not in known:
            raise DashboardError(f"unknown group-by column {column!r}; experiment info columns: {', '.join(known)}")
        return {run_id: row["info"].get(column) for run_id, row in rows.items()}

    # -- the first paint -------------------------------------------------------------------------

    def start(self, where: str = "", selection: Sequence[str] | None = None, y: str = "", x: str | None = None,
              **curve_options: Any) -> dict[str, Any]:
        """What the page's chart needs first, in one answer: the columns and, for the chosen
        runs (else the default ones), y (else the default) and x (None: the default), the curves."""
        columns = self.columns()
        y = y if y in columns["metrics"] else columns["default_y"]
        x = x if x is not None and (x == "" or x in columns["x"]) else columns["default_x"]
        chosen = auto_selection(self.runs(where)["runs"]) if selection is None else list(selection)
        curves: dict[str, Any] | None = None
        if y and chosen:
            try:
                curves = self.curves(chosen, y, x, **curve_options)
            except DashboardError as error:
                curves = {"error": str(error)}
        return {"columns": columns, "y": y, "x": x, "selection": chosen, "curves": curves}

    def prepare(self) -> None:
        """Read into memory the curves that a page opened without a state asks for first (the
        latest runs, the default y and x), so that its first paint only downsamples them.
        The server does this while the user opens the page."""
        self.start(buckets=1)

    # -- the SQL box -------------------------------------------------------------------------

    def query(self, sql: str, max_rows: int = MAX_RESULT_ROWS) -> dict[str, Any]:
        """Run one read-only statement over ``records`` and ``experiments`` (every run, running
        ones too); its columns and first ``max_rows`` rows."""
        check_select(sql)
        with self._lock:
            if not self._sql_locked:
                self._lock_collection()
            relation = sql_errors(lambda: self.collection.sql(sql))
            rows = sql_errors(lambda: relation.limit(max_rows + 1).fetchall())
        return {"columns": relation.columns, "rows": [[json_value(value) for value in row] for row in rows[:max_rows]],
                "truncated": len(rows) > max_rows}

    def _lock_collection(self) -> None:
        for statement in lock_statements(self.collection.path / RUNS_FOLDER):
            self.collection.sql(statement)
        self._sql_locked = True


def auto_selection(rows: list[dict[str, Any]]) -> list[str]:
    """The runs the chart shows when the page names none: the latest that did not fail."""
    return [row["run_id"] for row in rows if row["status"] not in FAILED and row["status"] != DAMAGED][-AUTO_SELECTED:]


def _figures(curve: Curve) -> tuple[float, float, float] | None:
    """(last, min, max) of a curve's y; None without points."""
    if not len(curve.y):
        return None
    return float(curve.y[-1]), float(curve.y.min()), float(curve.y.max())


def check_select(sql: str) -> None:
    """Refuse anything but exactly one SELECT statement (WITH, DESCRIBE, SHOW parse as SELECT)."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as error:
        raise DashboardError(str(error)) from None
    if len(statements) != 1:
        raise DashboardError(f"give exactly one statement, not {len(statements)}")
    if statements[0].type != duckdb.StatementType.SELECT:
        raise DashboardError(f"only SELECT, WITH, DESCRIBE or SHOW may run here, not {statements[0].type.name}")


def sql_errors(work: Any) -> Any:
    """``work()``, with DuckDB's errors (bad SQL, a refused file) as DashboardError."""
    try:
        return work()
    except duckdb.Error as error:
        raise DashboardError(str(error)) from None


def json_value(value: Any) -> Any:
    """A value JSON can carry: NaN and infinities as null, dates and bytes as text."""
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (datetime.date, datetime.time, datetime.timedelta)):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, (list, tuple)):
        return [json_value(item) for item in value]
    if isinstance(value, dict):
        return {str(key): json_value(item) for key, item in value.items()}
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)
