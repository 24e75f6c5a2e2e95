"""The ``rigorous-recorder`` command: look at a collection from the terminal.

A thin layer over :class:`~rigorous_recorder.ExperimentCollection`: each command opens the
collection, calls the library, and prints. A library error (bad path, not a collection, bad
SQL, unknown column) becomes one line on stderr and exit code 2, never a traceback.

    rigorous-recorder ls data/study
    rigorous-recorder show data/study 3
    rigorous-recorder sql data/study "SELECT model, min(loss) FROM records GROUP BY model"
    rigorous-recorder export data/study -o records.parquet
    rigorous-recorder plot data/study --y loss --x step --by model -o curves.png
    rigorous-recorder recover data/study
    rigorous-recorder ui data/study
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from ._gc import paused
from .errors import RecorderError
from .store.layout import BOOKKEEPING_KEYS, CRASHED, DAMAGED, EXPERIMENT_NODE, RUN_NODE, RUNNING

if TYPE_CHECKING:
    from .collection import ExperimentCollection

#: Formats that ``sql --format`` and ``export`` write, and the file extensions that pick them.
FORMATS = ("csv", "json", "parquet")
_EXTENSIONS = {".csv": "csv", ".json": "json", ".parquet": "parquet", ".pq": "parquet"}
_BATCH_ROWS = 64 * 1024
#: The commands that query, run in a worker thread so that Ctrl-C reaches them (see _run).
_QUERYING = frozenset({"ls", "show", "sql", "export", "plot"})
#: Seconds an interrupted command gets to stop its query and remove its partial output.
_INTERRUPT_WAIT = 5.0
#: The largest TCP port, for ``ui --port``.
_MAX_PORT = 65535


class CommandError(Exception):
    """A mistake in how a command was called; shown as one line, exit code 2."""


# -- the commands ------------------------------------------------------------------------


def command_ls(args: argparse.Namespace) -> None:
    with paused():  # a row of cells per run: thousands of objects that live to the end
        _print_runs(_open(args.path))


def _print_runs(collection: ExperimentCollection) -> None:
    rows = []
    for info in collection.runs:
        duration = info.get("experiment_duration")
        if duration is None and info["status"] == RUNNING:
            duration = time.time() - info["experiment_start_time"]
        if info["status"] == DAMAGED:
            count, details = "", info["error"]
        else:
            count = collection.records_count(info["id"]) if info["status"] in (RUNNING, CRASHED) \
                else info["records_count"]
            details = " ".join(f"{key}={_text(value)}" for key, value in (info.get("experiment") or {}).items())
        rows.append([info["experiment_number"], "" if info["error_number"] is None else info["error_number"],
                     info["status"], _when(info["experiment_start_time"]), _duration(duration), count, details])
    print(_table(["experiment", "error", "status", "start", "duration", "records", "info"], rows))


def command_show(args: argparse.Namespace) -> None:
    collection = _open(args.path)
    runs = [info for info in collection.runs if info["experiment_number"] == args.number]
    if not runs:
        numbers = collection.experiment_numbers
        known = f"experiments {numbers[0]} to {numbers[-1]}" if numbers else "no experiments"
        raise CommandError(f"no experiment {args.number} in {str(collection.path)!r} ({known})")
    blocks = []
    for info in runs:
        errors = "" if info["error_number"] is None else f" (error {info['error_number']})"
        header = f"experiment {info['experiment_number']}{errors}, run {info['id']}: {info['status']}"
        if info["experiment_start_time"] is not None:
            header += f", started {_when(info['experiment_start_time'])}"
        if info.get("experiment_duration") is not None:
            header += f", took {_duration(info['experiment_duration'])}"
        lines = [header] + ([f"error: {info['error']}"] if info.get("error") else [])
        if info["status"] != DAMAGED:
            _draw(collection.tree(info["id"]), lines, "", "", 0)
        blocks.append("\n".join(_printable(line) for line in lines))
    print("\n\n".join(blocks))


_TIME_KEYS = BOOKKEEPING_KEYS[3:]  # start, end, duration: the header of `show` gives them


def _draw(recorder: Any, lines: list[str], lead: str, branch: str, depth: int) -> None:
    """Append the lines of ``recorder``'s subtree, drawn with box characters."""
    role = {RUN_NODE: "run", EXPERIMENT_NODE: "experiment"}.get(recorder.node_id, "recorder") \
        if depth < 2 else "recorder"
    data = " ".join(f"{key}={_text(value)}" for key, value in recorder.local_data.items()
                    if not (depth == 0 and key in _TIME_KEYS))
    rows, keys = len(recorder), recorder.own_keys()
    line = f"{lead}{branch}{role} #{recorder.node_id}" + (f"  {data}" if data else "")
    lines.append(line + f"  [{rows} record{'s' * (rows != 1)}" + (f": {', '.join(keys)}]" if keys else "]"))
    below = recorder.children
    lead += {"": "", "├─ ": "│  ", "└─ ": "   "}[branch]
    for index, child in enumerate(below):
        _draw(child, lines, lead, "└─ " if index == len(below) - 1 else "├─ ", depth + 1)


def command_sql(args: argparse.Namespace) -> None:
    if not args.query.strip():
        raise CommandError("QUERY is empty; for example: \"SELECT * FROM experiments\"")
    collection = _open(args.path)
    relation = collection.sql(args.query)
    if relation is None:  # a statement without a result
        return
    if (args.format or "table") != "table" or args.output:
        _write(relation, args.output, _format_of(args.output, args.format), quiet=args.quiet)
        return
    if 0 < args.max_rows <= _BATCH_ROWS:
        rows = relation.limit(args.max_rows + 1).fetchall()
        more = len(rows) > args.max_rows
        rows = rows[: args.max_rows] if more else rows
        print(_table(relation.columns, [[_cell(value) for value in row] for row in rows]))
        count = len(rows)
    else:
        count, more = _print_table_streamed(collection.execute(relation.sql_query()), args.max_rows)
    note = f"first {args.max_rows} rows shown; --max-rows 0 shows all" if more else \
        f"{count} row{'s' * (count != 1)}"
    print(f"({note})")


def _print_table_streamed(result: Any, max_rows: int) -> tuple[int, bool]:
    """Print the rows of DuckDB's ``result`` as a table a batch at a time (all of them when
    ``max_rows`` is 0), so that memory holds one batch whatever the row count: the first batch sets
    the widths and alignment, a longer value later widens only its own line. Returns the rows
    printed and whether more were left."""
    batch = [[_cell(value) for value in row] for row in result.fetchmany(_BATCH_ROWS)]
    cells = _printed(batch)
    header = [_printable(str(column[0])) for column in result.description]
    widths, numeric = _layout(header, batch, cells)
    print(_line(header, widths, numeric))
    print(_line(["-" * width for width in widths], widths, numeric))
    count = 0
    while cells:
        if _stopping.is_set():  # Ctrl-C while this thread printed: stop at once, not at the query's next chunk
            raise KeyboardInterrupt
        more = bool(max_rows) and count + len(cells) > max_rows
        if more:
            cells = cells[: max_rows - count]
        sys.stdout.write("".join(_line(row, widths, numeric) + "\n" for row in cells))
        count += len(cells)
        if more:
            return count, True
        cells = _printed([_cell(value) for value in row] for row in result.fetchmany(_BATCH_ROWS))
    return count, False


def command_export(args: argparse.Namespace) -> None:
    collection = _open(args.path)
    fmt = _format_of(args.output, args.format)
    if fmt == "json":
        raise CommandError("export writes parquet or csv; for JSON use: sql PATH 'SELECT * FROM records' --format json")
    collection.sql("SET threads = 1")  # one thread writes the runs in order, each in its order (runs at once)
    relation = collection.sql("SELECT * FROM records")
    count = _write(relation, args.output, fmt, quiet=args.quiet,
                   total=lambda: collection.sql("SELECT count(*) FROM records").fetchall()[0][0])
    print(f"wrote {count} record{'s' * (count != 1)} to {args.output}", file=sys.stderr)


def command_recover(args: argparse.Namespace) -> None:
    collection = _open(args.path, recover=False)
    recovered = collection.recover()
    by_id = {info["id"]: info for info in collection.runs}
    for run_id in recovered:
        info = by_id[run_id]
        print(f"recovered experiment {info['experiment_number']} (error {info['error_number']}), run {run_id}: "
              f"{info.get('records_count', 0)} records kept")
    still = [info for info in by_id.values() if info["status"] == RUNNING]
    summary = f"{len(recovered)} crashed run{'s' * (len(recovered) != 1)} recovered"
    if still:
        summary += f"; {len(still)} still running"
    print(summary)


def command_plot(args: argparse.Namespace) -> None:
    from .plot import plot_curves

    collection = _open(args.path)
    by = [name.strip() for name in args.by.split(",") if name.strip()] if args.by else []
    figure = plot_curves(collection, y=args.y, x=args.x, by=by, where=args.where, smooth=args.smooth)
    try:
        figure.savefig(args.output, dpi=args.dpi)
    except ValueError as error:  # an image format matplotlib does not write
        raise CommandError(f"cannot write {args.output!r}: {_one_line(error)}") from error
    except MemoryError as error:
        raise CommandError(f"the image {args.output!r} is too large at --dpi {args.dpi}; lower --dpi") from error
    lines = len(figure.axes[0].get_lines())
    print(f"wrote {lines} line{'s' * (lines != 1)} to {args.output}", file=sys.stderr)


def command_ui(args: argparse.Namespace) -> None:
    from .ui import serve

    dashboard = serve(args.path, host=args.host, port=args.port)
    print(f"rigorous-recorder ui: serving {args.path} at {dashboard.url} (Ctrl-C stops)", flush=True)
    dashboard.wait()


# -- helpers -----------------------------------------------------------------------------


_opened: list[ExperimentCollection] = []  # what this command opened: the queries Ctrl-C stops
_stopping = threading.Event()  # set by Ctrl-C: a command printing as it fetches stops at its next batch


def _open(path: str, recover: bool = True) -> Any:
    from .collection import ExperimentCollection

    collection = ExperimentCollection(path, quiet=True, create=False, recover=recover)
    _opened.append(collection)
    return collection


def _stop_queries() -> None:
    """Interrupt the DuckDB queries of the collections this command opened."""
    _stopping.set()
    for collection in _opened:
        collection.interrupt()


def _rows(relation: Any) -> list[dict[str, Any]]:
    columns = relation.columns
    return [dict(zip(columns, row)) for row in relation.fetchall()]


def _format_of(output: str | None, fmt: str | None) -> str:
    if fmt and fmt != "table":
        return fmt
    if output is None:
        raise CommandError("give --format csv|json|parquet, or -o FILE ending in .csv, .json or .parquet")
    found = _EXTENSIONS.get(Path(output).suffix.lower())
    if found is None:
        raise CommandError(f"cannot tell the format of {output!r} from its extension; add --format csv|json|parquet")
    return found


def _text(value: Any) -> str:
    """A value as ``key=value`` shows it: floats short, strings bare unless they need quotes."""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, str):
        return value if value and not any(char.isspace() or char in "='\"" for char in value) else repr(value)
    return str(value)


def _printable(text: str) -> str:
    """``text`` with its control characters escaped (``\\n``, ``\\x1b``): a value never moves the cursor
    or recolours the terminal."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def _cell(value: Any) -> Any:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return float(f"{value:.10g}")
    return value


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return ""
    return datetime.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, seconds = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Rows aligned under ``header``: numbers to the right, the rest to the left."""
    header = [_printable(str(name)) for name in header]
    cells = _printed(rows)
    widths, numeric = _layout(header, rows, cells)
    return "\n".join(_line(values, widths, numeric)
                     for values in [header, ["-" * width for width in widths], *cells])


def _printed(rows: Iterable[Sequence[Any]]) -> list[list[str]]:
    """Each cell of ``rows`` as the table prints it."""
    return [[_printable(str(value)) for value in row] for row in rows]


def _layout(header: Sequence[str], rows: Sequence[Sequence[Any]],
            cells: Sequence[Sequence[str]]) -> tuple[list[int], list[bool]]:
    """Each column's width (of ``header`` and ``cells``, the ``rows`` as printed) and whether it is
    right-aligned (it holds numbers, NULL or nothing)."""
    numeric = [bool(rows) and all(isinstance(row[i], (int, float)) and not isinstance(row[i], bool)
                                  or row[i] in ("NULL", "") for row in rows) for i in range(len(header))]
    widths = [max([len(name), *(len(row[i]) for row in cells)]) for i, name in enumerate(header)]
    return widths, numeric


def _line(values: Sequence[str], widths: Sequence[int], numeric: Sequence[bool]) -> str:
    return "  ".join(value.rjust(width) if right else value.ljust(width)
                     for value, width, right in zip(values, widths, numeric)).rstrip()


class _Bar:
    def update(self, count: int = 1) -> None:
        pass

    def __enter__(self) -> _Bar:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def _progress(total: int | None, description: str, unit: str, quiet: bool = False,
              stream: TextIO | None = None) -> Any:
    """A tqdm bar on stderr, only on a terminal and only once the work has taken a second."""
    stream = sys.stderr if stream is None else stream
    if quiet or not stream.isatty():
        return _Bar()
    from tqdm import tqdm

    return tqdm(total=total, desc=description, unit=unit, unit_scale=True, file=stream, delay=1.0, leave=False)


def _write(relation: Any, output: str | None, fmt: str, quiet: bool = False, total: Any = None) -> int:
    """Stream ``relation`` to ``output`` (stdout when None) as ``fmt``; returns the row count."""
    if fmt == "parquet" and output is None:
        raise CommandError("parquet needs a file: add -o FILE")
    # DuckDB 2 names it to_arrow_reader (fetch_record_batch is deprecated there); 1.4 has only the old name
    reader = getattr(relation, "to_arrow_reader", relation.fetch_record_batch)(_BATCH_ROWS)
    bar = _progress(None, "writing", "rows", quiet=quiet)
    if not isinstance(bar, _Bar) and total is not None:
        bar.total = total()
    count = 0
    with bar, _replacing(output) as path:
        if fmt == "parquet":
            count = _write_parquet(reader, path, bar)
        else:
            stream = sys.stdout if path is None else open(path, "w", encoding="utf-8", newline="")  # noqa: SIM115
            try:
                writer = _write_csv if fmt == "csv" else _write_json
                count = writer(reader, stream, bar)
            finally:
                if path is not None:
                    stream.close()
    return count


@contextlib.contextmanager
def _replacing(output: str | None) -> Iterator[str | None]:
    """The path to write ``output`` through: a temporary file renamed over it once whole, so that a failed
    or interrupted write leaves no partial file and an existing file as it was (a device or a pipe is
    written directly). An OSError names ``output``."""
    if output is None:
        yield None
        return
    target = Path(output)
    direct = target.exists() and not target.is_file()
    temporary = target if direct else target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        yield str(temporary)
        if not direct:
            os.replace(temporary, target)
    except OSError as error:  # pyarrow raises a query's error while streaming as an OSError without errno
        if error.errno is not None and error.filename in (None, str(temporary)):
            raise OSError(error.errno, error.strerror, output) from error
        raise
    finally:
        if not direct:
            temporary.unlink(missing_ok=True)


def _write_parquet(reader: Any, output: str, bar: Any) -> int:
    """Parquet that Spark reads: microsecond timestamps, no all-null (NullType) columns."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    intervals = [field.name for field in reader.schema if pa.types.is_interval(field.type)]
    if intervals:
        raise CommandError(f"parquet has no interval type: column {', '.join(map(repr, intervals))}; "
                           "cast it to VARCHAR, or write csv or json")
    fields = [pa.field(field.name, pa.string()) if pa.types.is_null(field.type) else field for field in reader.schema]
    schema = pa.schema(fields)
    count = 0
    with pq.ParquetWriter(output, schema, compression="zstd", coerce_timestamps="us",
                          allow_truncated_timestamps=True) as writer:
        for batch in reader:
            writer.write_batch(pa.RecordBatch.from_arrays(
                [column.cast(field.type) for column, field in zip(batch.columns, fields)], schema=schema))
            count += batch.num_rows
            bar.update(batch.num_rows)
    return count


def _write_csv(reader: Any, stream: TextIO, bar: Any) -> int:
    import csv

    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(reader.schema.names)
    count = 0
    for batch in reader:
        for row in batch.to_pylist():
            writer.writerow([_csv_value(value) for value in row.values()])
        count += batch.num_rows
        bar.update(batch.num_rows)
    return count


def _csv_value(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return json.dumps(_json_safe(value), default=str)
    return "" if value is None else value


def _write_json(reader: Any, stream: TextIO, bar: Any) -> int:
    """A JSON array of objects, one per row; NaN and infinities become null."""
    count = 0
    stream.write("[")
    for batch in reader:
        for row in batch.to_pylist():
            stream.write(("\n" if count == 0 else ",\n") + json.dumps(_json_safe(row), default=str))
            count += 1
        bar.update(batch.num_rows)
    stream.write("\n]\n" if count else "]\n")
    return count


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_safe(item) for item in value]
    return value


# -- the parser --------------------------------------------------------------------------

_PATH_HELP = "the collection (what you gave ExperimentCollection; the .collection suffix is optional)"
_COMMANDS: dict[str, tuple[Any, str, str]] = {
    "ls": (command_ls, "list the runs: number, error number, status, start, duration, records, info",
           "example:\n  rigorous-recorder ls data/study"),
    "show": (command_show, "show one experiment's tree: recorders, their data, record counts, columns",
             "example:\n  rigorous-recorder show data/study 3"),
    "sql": (command_sql, "run DuckDB SQL over the views `records` and `experiments`",
            "examples:\n"
            "  rigorous-recorder sql data/study \"SELECT model, min(loss) FROM records GROUP BY model\"\n"
            "  rigorous-recorder sql data/study \"SELECT * FROM experiments\" --format csv -o runs.csv"),
    "export": (command_export, "write the flat table of every record as Parquet (Spark-readable) or CSV",
               "examples:\n  rigorous-recorder export data/study -o records.parquet\n"
               "  rigorous-recorder export data/study -o records.csv"),
    "plot": (command_plot, "draw line plots of one column (needs matplotlib: the `plot` extra)",
             "example:\n  rigorous-recorder plot data/study --y loss --x step --by model,lr "
             "--where \"epoch < 10\" --smooth 5 -o curves.png\n\n"
             "Each line is one group of --by (default: one per run); y is averaged over the\n"
             "records that share a group and an x."),
    "recover": (command_recover, "finish crashed runs now (opening a collection does it too)",
                "example:\n  rigorous-recorder recover data/study"),
    "ui": (command_ui, "serve a dashboard of the runs in the browser (needs the `ui` extra)",
           "example:\n  rigorous-recorder ui data/study\n\n"
           "Prints the page's URL with its access token; serves until Ctrl-C. Read-only."),
}


def _at_least(low: int, high: int | None = None) -> Any:
    """An argparse type: an int from ``low`` to ``high``."""
    def parse(text: str) -> int:
        number = int(text)
        if number < low or (high is not None and number > high):
            raise argparse.ArgumentTypeError(f"{number} is not in {low}..{'' if high is None else high}")
        return number

    parse.__name__ = "int"  # argparse names the type in "invalid int value"
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rigorous-recorder", description="Look at a rigorous_recorder collection.",
        epilog="example:\n  rigorous-recorder ls data/study\n\n"
               "Run 'rigorous-recorder COMMAND --help' for each command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    from . import __version__
    from ._hotpath import COMPILED

    hot_path = "compiled" if COMPILED else "pure Python"
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__} (hot path: {hot_path})")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    sub = {}
    for name, (function, summary, epilog) in _COMMANDS.items():
        sub[name] = commands.add_parser(name, help=summary, description=summary[0].upper() + summary[1:] + ".",
                                        epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
        sub[name].set_defaults(function=function)
        sub[name].add_argument("path", metavar="PATH", help=_PATH_HELP)
    sub["show"].add_argument("number", metavar="N", type=int, help="the experiment number (see ls)")
    sub["sql"].add_argument("query", metavar="QUERY", help="the SQL; views: records, experiments")
    sub["sql"].add_argument("--format", choices=("table", *FORMATS), default=None,
                            help="table (default) prints; csv, json (to stdout or -o) and parquet write the result")
    sub["sql"].add_argument("-o", "--output", metavar="FILE", help="write the result here (format from the extension)")
    sub["sql"].add_argument("--max-rows", type=_at_least(0), default=100, metavar="N",
                            help="rows a table shows (default 100; 0 for all)")
    sub["export"].add_argument("-o", "--output", metavar="FILE", required=True,
                               help="the file: .parquet or .csv (or say --format)")
    sub["export"].add_argument("--format", choices=("parquet", "csv"), help="instead of the file's extension")
    sub["plot"].add_argument("--y", required=True, metavar="COLUMN", help="the column on the y axis")
    sub["plot"].add_argument("--x", default="step", metavar="COLUMN", help="the column on the x axis (default: step)")
    sub["plot"].add_argument("--by", metavar="COLUMNS",
                             help="comma-separated columns; one line per combination (default: one per run)")
    sub["plot"].add_argument("--where", metavar="SQL", help="keep only the records where this SQL is true")
    sub["plot"].add_argument("--smooth", type=int, default=1, metavar="N", help="moving average over N points")
    sub["plot"].add_argument("-o", "--output", metavar="FILE", required=True, help="the image: .png, .svg or .pdf")
    sub["plot"].add_argument("--dpi", type=_at_least(1), default=100, help="resolution of a .png (default 100)")
    sub["ui"].add_argument("--host", default="127.0.0.1",
                           help="the address to listen on (default 127.0.0.1: this machine only)")
    sub["ui"].add_argument("--port", type=_at_least(0, _MAX_PORT), default=0,
                           help="the port (default 0: a free one)")
    for name in ("sql", "export", "recover"):
        sub[name].add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0, or 2 after an error)."""
    args = build_parser().parse_args(argv)
    _opened.clear()
    _stopping.clear()
    try:
        _run(args)
    except BrokenPipeError:  # `... | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (RecorderError, CommandError, OSError) as error:
        print(f"rigorous-recorder {args.command}: error: {_one_line(error)}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as error:
        print(f"rigorous-recorder {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rigorous-recorder {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - the command line never prints a traceback
        duckdb = sys.modules.get("duckdb")  # a bad query; imported only by commands that query
        if duckdb is not None and isinstance(error, duckdb.Error):
            print(f"rigorous-recorder {args.command}: error: {_one_line(error)}", file=sys.stderr)
            return 2
        print(f"rigorous-recorder {args.command}: unexpected error ({type(error).__name__}: {_one_line(error)}); "
              "please report it with the command you ran", file=sys.stderr)
        return 2
    return 0


def _run(args: argparse.Namespace) -> None:
    """Run the command; one that queries runs in a worker thread, because DuckDB returns to Python only
    when a query ends: Ctrl-C reaches this thread at once, stops the queries and raises KeyboardInterrupt."""
    if args.command not in _QUERYING:
        args.function(args)
        return
    failures: list[BaseException] = []
    done = threading.Event()  # not Thread.join: a join that Ctrl-C interrupts marks a running thread stopped

    def work() -> None:
        try:
            args.function(args)
        except BaseException as error:  # noqa: BLE001 - raised again in the main thread
            failures.append(error)
        finally:
            done.set()

    threading.Thread(target=work, name=f"rigorous-recorder {args.command}", daemon=True).start()
    try:
        done.wait()
    except KeyboardInterrupt:
        _stop_queries()
        done.wait(_INTERRUPT_WAIT)
        raise
    if failures:
        raise failures[0]


def _one_line(error: BaseException) -> str:
    if isinstance(error, OSError) and error.filename is not None:
        return f"{error.strerror or error}: {error.filename!r}"
    lines: Iterator[str] = (line.strip() for line in str(error).splitlines())
    return next((line for line in lines if line), type(error).__name__)


if __name__ == "__main__":
    sys.exit(main())
