"""The command line under attack: every command against paths that are not collections, damaged
and unreadable collections, hostile SQL and arguments, a closed stdout and Ctrl-C.

Each wrong case must exit non-zero with one clear line on stderr naming the file, key or value
and the problem, never a traceback; a damaged run is listed, not fatal. Most cases call
``cli.main`` in this process; broken pipes, Ctrl-C and another user's permissions need real
processes of the console script.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from rigorous_recorder import ExperimentCollection, cli

SCRIPT = Path(sys.executable).with_name("rigorous-recorder")
SETPRIV = shutil.which("setpriv")
#: What every command needs besides PATH; {tmp} is the test's folder.
COMMANDS = {
    "ls": [],
    "show": ["1"],
    "sql": ["SELECT count(*) FROM records"],
    "export": ["-o", "{tmp}/out.csv"],
    "plot": ["--y", "loss", "-o", "{tmp}/out.png"],
    "recover": [],
}
#: A query that keeps DuckDB busy for minutes with almost no memory (cross join, one sum).
ENDLESS_QUERY = "SELECT sum(a.range * b.range) FROM range(100000000) AS a, range(1000) AS b"
#: CPU seconds after which a command is past its imports (~0.5 s) and inside its query or its writing.
BUSY_CPU_S = 2.0


def run(*args: object) -> subprocess.CompletedProcess[str]:
    """The command line in this process: its exit code, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main([str(arg) for arg in args])
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def run_parser(*args: object) -> subprocess.CompletedProcess[str]:
    """The command line in this process when argparse refuses the arguments (it exits)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exit_:
        cli.main([str(arg) for arg in args])
    return subprocess.CompletedProcess(args, exit_.value.code, out.getvalue(), err.getvalue())


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    """Exit 2, nothing on stdout, one line on stderr holding every fragment, no traceback."""
    assert (result.returncode, result.stdout) == (2, ""), result
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith(f"rigorous-recorder {result.args[0]}: error: "), result.stderr
    assert "unexpected error" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def fill(path: Path) -> Path:
    """Three finished runs of two epochs of three steps."""
    collection = ExperimentCollection(path, quiet=True)
    for model in ("mlp", "cnn", "rnn"):
        with collection.new_experiment(model=model) as experiment:
            for epoch in range(2):
                recorder = experiment.sub_recorder(epoch=epoch)
                for step in range(3):
                    recorder.push(step=step, loss=1 / (1 + step))
    return path


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fill(tmp_path_factory.mktemp("attack") / "study")


def copy_of(study: Path, tmp_path: Path, name: str = "copy") -> Path:
    shutil.copytree(f"{study}.collection", tmp_path / f"{name}.collection")
    return tmp_path / name


def second_run_folder(path: Path) -> Path:
    return sorted((Path(f"{path}.collection") / "runs").iterdir())[1]


def arguments(command: str, path: Path, tmp_path: Path) -> list[str]:
    return [command, str(path), *(arg.format(tmp=tmp_path) for arg in COMMANDS[command])]


# -- paths that are not collections ---------------------------------------------------------


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("kind", ["missing", "empty folder", "file", "folder named .collection"])
def test_every_command_refuses_a_path_that_is_not_a_collection(command, kind, tmp_path):
    """A missing path, an empty folder, a file or an empty ``.collection`` folder: one line naming it."""
    path = tmp_path / "target"
    if kind == "empty folder":
        path.mkdir()
    elif kind == "file":
        path.write_text("not a collection")
    elif kind == "folder named .collection":
        Path(f"{path}.collection").mkdir()
    assert_one_line_error(run(*arguments(command, path, tmp_path)), "target.collection' is not a rigorous_recorder")
    assert not Path(f"{path}.collection").exists() or kind == "folder named .collection"  # nothing created


# -- damaged runs -----------------------------------------------------------------------------


def truncate_records(folder: Path) -> str:
    records = next(folder.glob("records-*.parquet"))
    with open(records, "r+b") as file:
        file.truncate(100)
    return records.name


def break_run_json(folder: Path) -> str:
    (folder / "run.json").write_text("{broken")
    return "run.json"


def delete_records(folder: Path) -> str:
    records = next(folder.glob("records-*.parquet"))
    records.unlink()
    return records.name


def delete_run_json(folder: Path) -> str:
    (folder / "run.json").unlink()
    return "run.json"


@pytest.mark.parametrize("damage", [truncate_records, break_run_json, delete_records, delete_run_json])
def test_a_damaged_run_is_listed_with_its_file_and_the_others_answer(damage, study, tmp_path):
    """ls, show and sql name the damaged file; the other runs' records are all there; exit 0."""
    path = copy_of(study, tmp_path)
    name = damage(second_run_folder(path))
    listing = run("ls", path)
    assert (listing.returncode, listing.stderr) == (0, "")
    lines = listing.stdout.splitlines()
    assert re.fullmatch(rf" +2 +damaged +\S+{re.escape(name)}: .+", lines[3]), lines[3]
    assert re.fullmatch(r" +1 +0  ok +\S+ \S+ +\d+ms +6  model=mlp", lines[2]), lines[2]  # numbers right-aligned
    shown = run("show", path, 2)
    assert shown.returncode == 0
    assert re.fullmatch(r"experiment 2, run 000002-\w+: damaged", shown.stdout.splitlines()[0]), shown.stdout
    assert name in shown.stdout.splitlines()[1]
    counts = run("sql", path, "SELECT experiment_number, count(*) FROM records GROUP BY ALL ORDER BY 1")
    assert [line.split() for line in counts.stdout.splitlines()[2:4]] == [["1", "6"], ["3", "6"]]
    exported = run("export", path, "-o", tmp_path / "out.csv")
    assert exported.returncode == 0 and (tmp_path / "out.csv").read_text().count("\n") == 1 + 12
    for command in ("plot", "recover"):
        assert run(*arguments(command, path, tmp_path)).returncode == 0


@pytest.fixture
def public_folder() -> Iterator[Path]:
    """A folder that user nobody can reach (pytest's own tmp folders are root's alone)."""
    folder = Path(tempfile.mkdtemp(prefix="rr-attack-", dir="/tmp"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder)


@pytest.mark.skipif(os.geteuid() != 0 or SETPRIV is None, reason="needs root and setpriv to act as nobody")
@pytest.mark.parametrize(("locked", "outcome"), [
    ("collection folder", "error: Permission denied: "),
    ("runs folder", "error: Permission denied: "),
    ("run folder", "damaged"),
    ("records file", "damaged"),
])
def test_a_folder_another_user_cannot_read(locked, outcome, study, public_folder):
    """As ``nobody``: an unreadable collection or runs folder is one line naming it; an unreadable run is
    listed damaged, naming its file."""
    as_nobody = [SETPRIV, "--reuid", "nobody", "--regid", "nogroup", "--clear-groups", SCRIPT]
    runs = subprocess.run([*as_nobody, "--version"], capture_output=True, text=True, timeout=60)
    if runs.returncode != 0:  # a checkout in a folder only its owner may enter (as mktemp -d makes)
        pytest.skip(f"user nobody cannot run this checkout's command: {(runs.stderr.strip().splitlines() or ['?'])[-1]}")
    path = copy_of(study, public_folder)
    for folder, _, files in os.walk(f"{path}.collection"):
        os.chmod(folder, 0o755)
        for name in files:
            os.chmod(os.path.join(folder, name), 0o644)
    target = {"collection folder": Path(f"{path}.collection"), "runs folder": Path(f"{path}.collection") / "runs",
              "run folder": second_run_folder(path),
              "records file": next(second_run_folder(path).glob("records-*.parquet"))}[locked]
    target.chmod(0)
    result = subprocess.run([*as_nobody, "ls", path], capture_output=True, text=True, timeout=60)
    assert "Traceback" not in result.stderr
    if outcome == "damaged":
        assert result.returncode == 0 and "damaged" in result.stdout and "Permission denied" in result.stdout
    else:
        assert (result.returncode, result.stdout) == (2, "") and result.stderr.count("\n") == 1
        assert outcome in result.stderr and ".collection" in result.stderr


def test_a_collection_whose_folder_was_emptied_lists_nothing(study, tmp_path):
    """runs/ deleted: ls and sql answer with no rows, show says which experiments there are."""
    path = copy_of(study, tmp_path)
    shutil.rmtree(Path(f"{path}.collection") / "runs")
    assert run("ls", path).stdout.count("\n") == 2
    assert "(0 rows)" in run("sql", path, "SELECT * FROM records").stdout
    assert_one_line_error(run("show", path, 1), "no experiment 1 in", "(no experiments)")


# -- hostile SQL -----------------------------------------------------------------------------


@pytest.mark.parametrize("query", ["", "   ", "\n"])
def test_an_empty_query_is_an_error(query, study):
    """An empty QUERY says so instead of printing nothing."""
    assert_one_line_error(run("sql", study, query), "QUERY is empty")


@pytest.mark.parametrize(("query", "message"), [
    ("SELEC 1", "Parser Error"),
    ("SELECT nope FROM records", 'Referenced column "nope" not found'),
    ("SELECT error('boom')", "boom"),
    ("SELECT * FROM no_such_table", "no_such_table"),
    ("SELECT 'a' + 1", "Error"),
])
def test_bad_sql_is_one_line(query, message, study):
    assert_one_line_error(run("sql", study, query), message)


def test_zero_rows_print_the_header_and_the_count(study):
    result = run("sql", study, "SELECT step, loss FROM records WHERE false")
    assert result.stdout.splitlines() == ["step  loss", "----  ----", "(0 rows)"]


def test_odd_types_print_in_a_table_and_write_to_csv_and_json(study, tmp_path):
    """Structs, maps, intervals, huge ints, decimals, blobs, NaN and time zones: printed, and written."""
    query = ("SELECT {'a': 1} AS s, map([1], [2]) AS m, INTERVAL 3 DAY AS i, (1::HUGEINT << 100) AS h, "
             "1.5::DECIMAL(10, 3) AS d, '\\x00'::BLOB AS b, 'nan'::DOUBLE AS f, TIMESTAMPTZ '2020-01-01 00:00:00+00' AS t")
    table = run("sql", study, query)
    assert table.returncode == 0 and "1267650600228229401496703205376" in table.stdout
    for fmt in ("csv", "json"):
        written = run("sql", study, query, "-o", tmp_path / f"odd.{fmt}")
        assert (written.returncode, written.stderr) == (0, "")
        assert "1267650600228229401496703205376" in (tmp_path / f"odd.{fmt}").read_text()


def test_parquet_output_of_an_interval_names_the_column_and_leaves_no_file(study, tmp_path):
    """Parquet has no interval type: one line naming the column; no empty file is left."""
    output = tmp_path / "odd.parquet"
    result = run("sql", study, "SELECT 1 AS n, INTERVAL 3 DAY AS wait", "-o", output)
    assert_one_line_error(result, "column 'wait'", "interval")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_write_keeps_the_file_that_was_there(study, tmp_path):
    """-o over an existing file: a write that fails leaves it as it was."""
    output = tmp_path / "result.csv"
    output.write_text("precious\n")
    failing = "SELECT CASE WHEN range < 100000 THEN range ELSE error('boom') END AS n FROM range(300000)"
    assert_one_line_error(run("sql", study, failing, "-o", output), "boom")
    assert output.read_text() == "precious\n" and list(tmp_path.iterdir()) == [output]


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_disk_names_the_output(study):
    assert_one_line_error(run("sql", study, "SELECT * FROM records", "--format", "csv", "-o", "/dev/full"),
                          "No space left on device", "'/dev/full'")


def test_control_characters_in_values_and_names_are_escaped(tmp_path):
    """A value or key holding ESC or a newline cannot recolour the terminal or break the table's lines."""
    collection = ExperimentCollection(tmp_path / "study", quiet=True)
    with collection.new_experiment(note="\x1b[31mred") as experiment:
        experiment.push(**{"loss\nkey": 1.0, "text": "two\nlines\x1b[2J"})
    for args in (["ls"], ["show", "1"], ["sql", 'SELECT "loss\nkey", text, note FROM records']):
        result = run(args[0], tmp_path / "study", *args[1:])
        assert result.returncode == 0 and "\x1b" not in result.stdout, result.stdout
        assert "\\x1b[31mred" in result.stdout
    table = run("sql", tmp_path / "study", 'SELECT "loss\nkey", text FROM records').stdout.splitlines()
    assert table[0].split() == ["loss\\nkey", "text"] and table[2].split() == ["1.0", "two\\nlines\\x1b[2J"]


# -- hostile arguments -------------------------------------------------------------------------


def test_a_unicode_path_and_a_dash_path_after_double_dash(study, tmp_path, monkeypatch):
    unicode = copy_of(study, tmp_path, "ünï cödé 🚀")
    assert run("ls", unicode).stdout.count("\n") == 5
    monkeypatch.chdir(tmp_path)
    copy_of(study, tmp_path, "-dash")
    assert run("ls", "--", "-dash").stdout.count("\n") == 5
    assert run("sql", "--", "-dash", "SELECT 1").returncode == 0


@pytest.mark.parametrize("path", ["a" * 5000, "/".join(["a" * 200] * 30)])
def test_a_path_too_long_is_one_line(path):
    assert_one_line_error(run("ls", path), "File name too long")


@pytest.mark.parametrize(("args", "message"), [
    (["sql", "{study}", "SELECT 1", "--max-rows", "-3"], "argument --max-rows: -3 is not in 0.."),
    (["plot", "{study}", "--y", "loss", "--dpi", "0", "-o", "{tmp}/x.png"], "argument --dpi: 0 is not in 1.."),
    (["ui", "{study}", "--port", "99999"], "argument --port: 99999 is not in 0..65535"),
    (["ui", "{study}", "--port", "-1"], "argument --port: -1 is not in 0..65535"),
    (["show", "{study}", "abc"], "argument N: invalid int value: 'abc'"),
])
def test_argparse_refuses_numbers_out_of_range(args, message, study, tmp_path):
    """Out-of-range numbers are refused before anything runs: usage and one error line, exit 2."""
    result = run_parser(*(arg.format(study=study, tmp=tmp_path) for arg in args))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == f"rigorous-recorder {args[0]}: error: {message}"


def test_plot_to_a_format_matplotlib_does_not_write_is_one_line(study, tmp_path):
    assert_one_line_error(run("plot", study, "--y", "loss", "-o", tmp_path / "curves.xyz"),
                          "cannot write", "curves.xyz", "'xyz' is not supported")


def test_show_of_numbers_beyond_any_experiment(study):
    for number in ("99999999999999999999999", "-1", "0"):
        assert_one_line_error(run("show", study, number), f"no experiment {number} in", "(experiments 1 to 3)")


# -- real processes: a closed stdout, Ctrl-C ---------------------------------------------------


def limited_memory() -> None:
    """In the child: at most 4 GB of address space, so that a runaway query cannot take the machine."""
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One run of 100,000 records: more output than a pipe holds."""
    path = tmp_path_factory.mktemp("big") / "big"
    with ExperimentCollection(path, quiet=True).new_experiment() as experiment:
        for step in range(100_000):
            experiment.push(step=step, text="y" * 20)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("args", [["sql", "{big}", "SELECT * FROM records", "--max-rows", "0"],
                                  ["sql", "{big}", "SELECT * FROM records", "--format", "csv"],
                                  ["export", "{big}", "-o", "/dev/stdout", "--format", "csv"]])
def test_stdout_closed_early_exits_quietly(args, big):
    """``... | head -1``: the command stops when the reader goes, exit 0, nothing on stderr."""
    process = subprocess.Popen([SCRIPT, *(arg.format(big=big) for arg in args)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, preexec_fn=limited_memory)
    process.stdout.readline()
    process.stdout.close()
    _, err = process.communicate(timeout=60)
    assert (process.returncode, err.decode()) == (0, "")


@pytest.mark.slow
@pytest.mark.parametrize("command", ["sql", "export"])
def test_ctrl_c_stops_a_long_query_at_once(command, study, tmp_path):
    """SIGINT while DuckDB runs a query: the query stops, one line, exit 130, no partial output file."""
    output = tmp_path / "out.csv"
    args = ["sql", study, ENDLESS_QUERY, "-o", output] if command == "sql" else ["export", study, "-o", output]
    if command == "export":  # interrupted while it writes: enough records to take several seconds
        path = tmp_path / "slow"
        with ExperimentCollection(path, quiet=True).new_experiment() as experiment:
            for step in range(500_000):
                experiment.push(step=step, text="y" * 20)
        args = ["export", path, "-o", output]
    process = subprocess.Popen([SCRIPT, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, preexec_fn=limited_memory)
    try:
        watched, deadline = psutil.Process(process.pid), time.monotonic() + 120
        while sum(watched.cpu_times()[:2]) < BUSY_CPU_S:  # wall time would depend on the machine's load
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.05)
        sent = time.monotonic()
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert time.monotonic() - sent < 10
    assert (process.returncode, out, err) == (130, "", f"rigorous-recorder {command}: interrupted\n")
    assert [path.name for path in tmp_path.iterdir() if path.name.startswith((".out", "out"))] == []


# -- an unbounded table streams ------------------------------------------------------------------

#: Rows of the streamed queries: enough that holding them as Python rows takes over a gigabyte.
STREAMED_ROWS = 3_000_000
#: The most a command streaming :data:`STREAMED_ROWS` rows may hold. Its imports and DuckDB take ~80 MB
#: and a batch of 65,536 rows in Python some tens; holding every row took 1.2 GB.
STREAMED_MAX_RSS_MB = 400


def max_rss_mb(args: list[str], stdout: Path) -> float:
    """Run the console script with ``args``, stdout to a file, in a fresh parent process whose children's
    peak RSS is the command's alone (this test process's children include other tests' processes)."""
    measure = ("import resource, subprocess, sys; "
               "code = subprocess.run(sys.argv[2:], stdout=open(sys.argv[1], 'w')).returncode; "
               "print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    result = subprocess.run([sys.executable, "-c", measure, str(stdout), str(SCRIPT), *args], capture_output=True,
                            text=True, timeout=300)
    code, kilobytes = result.stdout.split()
    assert (code, result.stderr) == ("0", ""), result
    return int(kilobytes) / 1024


@pytest.mark.slow
@pytest.mark.parametrize("to_file", [False, True])
def test_an_unbounded_table_streams_in_bounded_memory(to_file, study, tmp_path):
    """``sql --max-rows 0`` of three million rows: the table (or the -o file) holds every row, while the
    process's memory stays that of one batch of rows, not of all of them."""
    query = f"SELECT range AS i FROM range({STREAMED_ROWS})"
    stdout, output = tmp_path / "stdout.txt", tmp_path / "rows.csv"
    args = ["sql", str(study), query, "--max-rows", "0", *(["-o", str(output)] if to_file else [])]
    peak = max_rss_mb(args, stdout)
    lines = (output if to_file else stdout).read_text().splitlines()
    if to_file:
        assert lines[0] == "i" and lines[1:] == [str(number) for number in range(STREAMED_ROWS)]
    else:
        width = len(str(cli._BATCH_ROWS - 1))  # the first batch sets the widths; a longer number widens its line
        assert lines[:2] == ["i".rjust(width), "-" * width]
        assert lines[2:-1] == [str(number).rjust(width) for number in range(STREAMED_ROWS)]
        assert lines[-1] == f"({STREAMED_ROWS} rows)"
    assert peak < STREAMED_MAX_RSS_MB, f"{peak:.0f} MB"


@pytest.mark.slow
@pytest.mark.parametrize("reader", ["reads on", "stopped reading"])
def test_ctrl_c_while_a_table_streams(reader, study):
    """SIGINT while ``sql --max-rows 0`` prints rows, to a reader that keeps reading or to a full pipe
    (``| less`` paused): one line, exit 130, no traceback, even with the printing thread stuck in a write."""
    query = "SELECT range AS i, repeat('y', 50) AS text FROM range(100000000)"
    process = subprocess.Popen([SCRIPT, "sql", study, query, "--max-rows", "0"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, preexec_fn=limited_memory)
    try:
        assert process.stdout.readline().split() == [b"i", b"text"]
        if reader == "reads on":
            process.stdout.read(10_000_000)  # well inside the rows
        else:
            time.sleep(1)  # the pipe fills; the printing thread waits in its write
        process.send_signal(signal.SIGINT)
        sent = time.monotonic()
        if reader == "stopped reading":
            process.wait(timeout=30)  # stdout is never read again
        _, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert time.monotonic() - sent < 10
    assert (process.returncode, err.decode()) == (130, "rigorous-recorder sql: interrupted\n")


@pytest.mark.parametrize("query", [
    "SELECT * FROM records ORDER BY ALL",
    "SELECT step, loss FROM records WHERE false",
    "SELECT {'a': 1} AS s, map([1], [2]) AS m, INTERVAL 3 DAY AS i, (1::HUGEINT << 100) AS h, "
    "1.5::DECIMAL(10, 3) AS d, '\\x00'::BLOB AS b, 'nan'::DOUBLE AS f, TIMESTAMPTZ '2020-01-01 00:00:00+00' AS t, 'a\\nb\\x1b' AS c, NULL AS n",
    "CREATE TEMP TABLE t AS SELECT 1 AS a; SELECT a, 'it''s' AS q FROM t",
])
def test_a_streamed_table_of_one_batch_prints_what_the_bounded_table_prints(query, study):
    """--max-rows 0 and a --max-rows beyond one batch stream the rows; a result within one batch prints
    exactly as the default table does: the same values, widths and alignment."""
    bounded = run("sql", study, query)
    assert (bounded.returncode, bounded.stderr) == (0, ""), bounded
    for max_rows in (0, cli._BATCH_ROWS + 1):
        streamed = run("sql", study, query, "--max-rows", max_rows)
        assert (streamed.returncode, streamed.stdout, streamed.stderr) == (0, bounded.stdout, "")


@pytest.mark.parametrize(("rows", "max_rows", "note"), [
    (70_000, 0, "(70000 rows)"),
    (70_000, 70_000, "(70000 rows)"),
    (70_001, 70_000, "(first 70000 rows shown; --max-rows 0 shows all)"),
    (200_000, 65_537, "(first 65537 rows shown; --max-rows 0 shows all)"),
])
def test_a_streamed_table_stops_at_max_rows_and_says_so(rows, max_rows, note, study):
    """Past one batch the table streams: every row up to --max-rows, then the note of a cut table."""
    result = run("sql", study, f"SELECT range AS i FROM range({rows})", "--max-rows", max_rows)
    lines = result.stdout.splitlines()
    shown = rows if max_rows == 0 else min(rows, max_rows)
    assert (result.returncode, result.stderr, lines[-1]) == (0, "", note)
    assert [int(line) for line in lines[2:-1]] == list(range(shown))
