"""Curves in memory: (x, y) arrays in x order, smoothed, grown, and cut to per-pixel buckets.

Everything here is numpy over one run's values (no SQL): the dashboard keeps a stopped run's
curve in memory, grows a running run's curve by the records flushed since the last look,
and downsamples both the same way.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa


@dataclass
class Curve:
    """One run's (x, y) values in x order (records' order among equal x), y finite."""

    x: np.ndarray
    y: np.ndarray

    @classmethod
    def empty(cls) -> Curve:
        """A curve without points."""
        return cls(np.empty(0), np.empty(0))

    @classmethod
    def of(cls, x: np.ndarray | None, y: np.ndarray, first_index: int = 0) -> Curve:
        """The points of ``y`` whose y is finite (and x too), in x order; without ``x``,
        x is the point's position among them, counted from ``first_index``."""
        y = np.asarray(y, dtype=np.float64)
        if x is None:
            y = y[np.isfinite(y)]
            return cls(np.arange(first_index, first_index + len(y), dtype=np.float64), y)
        x = np.asarray(x, dtype=np.float64)
        kept = np.isfinite(y) & np.isfinite(x)
        x, y = x[kept], y[kept]
        if len(x) > 1 and not (np.diff(x) >= 0).all():
            order = np.argsort(x, kind="stable")  # stable: records' order among equal x
            x, y = x[order], y[order]
        return cls(x, y)

    def extended(self, more: Curve) -> Curve:
        """This curve followed by ``more`` (later records), still in x order."""
        if not len(more.x):
            return self
        x, y = np.concatenate([self.x, more.x]), np.concatenate([self.y, more.y])
        if len(self.x) and more.x[0] < self.x[-1]:
            order = np.argsort(x, kind="stable")  # earlier records first among equal x
            x, y = x[order], y[order]
        return Curve(x, y)

    def shifted(self, offset: float) -> Curve:
        """The curve with ``offset`` subtracted from every x."""
        return Curve(self.x - offset, self.y) if offset else self


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


def m4(curve: Curve, low: float, high: float, buckets: int) -> dict[str, list[float]]:
    """The first, last, min and max point of each of ``buckets`` equal slices of [low, high]
    (M4: no spike is ever lost), plus the nearest point outside the range on each side (so
    that a zoomed line reaches the chart's edges); in x order, at most 4 x buckets + 2 points."""
    x, y = curve.x, curve.y
    start = int(np.searchsorted(x, low, side="left"))
    stop = int(np.searchsorted(x, high, side="right"))
    picked = [np.array([index for index in (start - 1, stop) if 0 <= index < len(x)], dtype=np.int64)]
    if stop > start:
        inside = y[start:stop]
        bucket = np.minimum(np.floor((x[start:stop] - low) / ((high - low) or 1.0) * buckets), buckets - 1)
        firsts = np.flatnonzero(np.diff(bucket, prepend=-np.inf))  # x is sorted: each bucket is one stretch
        lasts = np.append(firsts[1:], len(inside)) - 1
        member = np.repeat(np.arange(len(firsts)), np.diff(np.append(firsts, len(inside))))
        for extreme in (np.minimum, np.maximum):
            hits = np.flatnonzero(inside == extreme.reduceat(inside, firsts)[member])
            picked.append(hits[np.diff(member[hits], prepend=-1) > 0])  # the first hit in each bucket
        picked.extend([firsts, lasts])
        picked[1:] = [indices + start for indices in picked[1:]]
    chosen = np.unique(np.concatenate(picked))
    return {"x": x[chosen].tolist(), "y": y[chosen].tolist()}


def grouped(database: duckdb.DuckDBPyConnection, curves: dict[str, Curve], groups: dict[str, Any],
            low: float, high: float, buckets: int) -> list[dict[str, Any]]:
    """Per group value: per x bucket, the mean over runs of each run's mean, and the min and max."""
    parts = []
    for run_id, curve in curves.items():
        inside = (curve.x >= low) & (curve.x <= high)
        parts.append(pa.table({"run": pa.array([run_id] * int(inside.sum()), pa.string()),
                               "x": curve.x[inside], "y": curve.y[inside]}))
    if not parts:
        return []
    database.register("points", pa.concat_tables(parts))
    database.register("groups", pa.table({"run": list(groups), "label": [label(value) for value in groups.values()]}))
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
    for name, _, x, mean, lowest, highest, runs in rows:
        members = sorted(run_id for run_id, value in groups.items() if label(value) == name)
        item = series.setdefault(name, {"group": name, "runs": members, "kind": "group",
                                        "x": [], "y": [], "min": [], "max": [], "count": []})
        for field, value in (("x", x), ("y", mean), ("min", lowest), ("max", highest), ("count", runs)):
            item[field].append(value)
    return list(series.values())


def extent(curves: Sequence[Curve]) -> tuple[float, float]:
    """The x range the curves span together; (0, 1) when none has a point."""
    present = [curve.x for curve in curves if len(curve.x)]
    if not present:
        return 0.0, 1.0
    return float(min(x[0] for x in present)), float(max(x[-1] for x in present))


def label(value: Any) -> str:
    """A group value as the chart's legend names it."""
    return "NULL" if value is None else f"{value:.6g}" if isinstance(value, float) else str(value)


def numbers(column: pa.Array | pa.ChunkedArray) -> np.ndarray | None:
    """A stored column's values as float64 (a missing value is NaN): numbers as they are,
    timestamps as seconds since the epoch (naive ones read as local time); None for any other type."""
    kind = column.type
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        return column.cast(pa.float64()).to_numpy(zero_copy_only=False)
    if pa.types.is_timestamp(kind):
        micros = column.cast(pa.timestamp("us", tz=kind.tz)).cast(pa.int64()).cast(pa.float64())
        seconds = micros.to_numpy(zero_copy_only=False) / 1e6
        return seconds if kind.tz is not None else local_epoch(seconds)
    return None


def local_epoch(seconds: np.ndarray) -> np.ndarray:
    """Seconds since the epoch of naive timestamps (read as if UTC), taking them as this
    machine's local time, as ``datetime.now()`` writes them."""
    finite = np.isfinite(seconds)
    hours, which = np.unique(np.floor(seconds[finite] / 3600), return_inverse=True)
    offsets = np.array([time.mktime(time.gmtime(hour * 3600)[:8] + (-1,)) - hour * 3600 for hour in hours])
    local = seconds.astype(np.float64, copy=True)
    local[finite] += offsets[which]
    return local
