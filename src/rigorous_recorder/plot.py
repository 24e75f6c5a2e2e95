"""Line plots of a collection's records, drawn with matplotlib's Agg (``rigorous-recorder plot``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .errors import QueryError
from .store.layout import BOOKKEEPING_KEYS
from .query_text import quote_name as _name

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .collection import ExperimentCollection

_NUMERIC = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER",
            "UBIGINT", "UHUGEINT", "FLOAT", "DOUBLE", "DECIMAL", "BOOLEAN")
_RUN = list(BOOKKEEPING_KEYS[:2])  # experiment_number, error_number: one line per run by default
_BOOKKEEPING = set(BOOKKEEPING_KEYS)


def plot_curves(collection: ExperimentCollection, y: str, x: str = "step", by: Sequence[str] = (),
                where: str | None = None, smooth: int = 1) -> Figure:
    """A figure with one line of ``y`` against ``x`` per group of ``by`` (default: per run).

    Records that share a group and an ``x`` are averaged; ``smooth`` > 1 is a trailing
    moving average over that many points of each line.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ModuleNotFoundError("plot needs matplotlib: pip install 'rigorous-recorder[plot]'",
                                  name="matplotlib") from None
    if smooth < 1:
        raise QueryError(f"smooth must be 1 or more, not {smooth}")
    empty = collection.sql("SELECT * FROM records LIMIT 0")
    types = dict(zip(empty.columns, (str(kind) for kind in empty.types)))
    groups = list(by) or _RUN
    for option, name in [("y", y), ("x", x), *(("by", name) for name in by)]:
        if name not in types:
            known = ", ".join(name for name in types if name not in _BOOKKEEPING)
            raise QueryError(f"unknown column {name!r} for {option}; columns: {known}")
    if not types[y].startswith(_NUMERIC):
        raise QueryError(f"column {y!r} holds {types[y]}, not numbers; y must be a numeric column")
    keys = ", ".join(_name(name) for name in groups)
    query = (f"SELECT {keys}, {_name(x)} AS __x, avg(CAST({_name(y)} AS DOUBLE)) AS __y FROM records "
             f"WHERE {_name(y)} IS NOT NULL AND {_name(x)} IS NOT NULL" + (f" AND ({where})" if where else "")
             + f" GROUP BY {keys}, __x ORDER BY {', '.join(f'{_name(name)} NULLS LAST' for name in groups)}, __x")
    rows = collection.sql(query).fetchall()
    if not rows:
        raise QueryError(f"no records have both {y!r} and {x!r}" + (f" where {where}" if where else ""))
    lines: dict[tuple[Any, ...], tuple[list[Any], list[float]]] = {}
    for row in rows:
        xs, ys = lines.setdefault(tuple(row[: len(groups)]), ([], []))
        xs.append(row[-2])
        ys.append(row[-1])

    figure = Figure(figsize=(8, 5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for group, (xs, ys) in lines.items():
        axes.plot(xs, _moving_average(ys, smooth), label=_label(group, by), marker="o" if len(xs) == 1 else None)
    axes.set_xlabel(x)
    axes.set_ylabel(y if smooth == 1 else f"{y} (moving average of {smooth})")
    axes.set_title(f"{y} by {x}" + (f" where {where}" if where else ""))
    axes.grid(True, alpha=0.3)
    axes.legend(title=", ".join(by) if by else None, fontsize="small")
    figure.tight_layout()
    return figure


def _moving_average(values: list[float], window: int) -> list[float]:
    averaged, total = [], 0.0
    for index, value in enumerate(values):
        total += value
        if index >= window:
            total -= values[index - window]
        averaged.append(total / min(index + 1, window))
    return averaged


def _label(group: tuple[Any, ...], by: Sequence[str]) -> str:
    if not by:
        number, errors = group
        return f"experiment {number}" + (f" (error {errors})" if errors else "")
    return ", ".join(f"{value:.6g}" if isinstance(value, float) else str(value) for value in group)
