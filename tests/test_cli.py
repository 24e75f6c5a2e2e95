"""The ``rigorous-recorder`` command line.

Most tests call ``cli.main`` in this process (a subprocess costs a second of imports); the
tests of the installed console script, ``python -m`` and ``--version`` start real processes,
and one checks that the console script prints exactly what ``cli.main`` prints.
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import io
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rigorous_recorder import ExperimentCollection, cli

SCRIPT = Path(sys.executable).with_name("rigorous-recorder")
DOCS = Path(__file__).resolve().parents[1] / "docs" / "cli.md"
COMMANDS = ["ls", "show", "sql", "export", "plot", "recover"]


def run(*args: object) -> subprocess.CompletedProcess[str]:
    """Run the command line with ``args`` in this process: its exit code, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main([str(arg) for arg in args])
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def run_script(*args: object, **environment: str) -> subprocess.CompletedProcess[str]:
    """Run the installed console script with ``args`` in a subprocess."""
    return subprocess.run([str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **environment})


def fill(path: Path) -> Path:
    """Two good runs (mlp, cnn) with two epochs of five steps, then one failing run (rnn)."""
    collection = ExperimentCollection(path, quiet=True)
    for model, lr, scale in [("mlp", 0.1, 1.0), ("cnn", 0.01, 2.0)]:
        with collection.new_experiment(model=model, lr=lr, note=None) as experiment:
            for epoch in range(2):
                recorder = experiment.sub_recorder(epoch=epoch)
                for step in range(epoch * 5, epoch * 5 + 5):
                    recorder.push(step=step, loss=scale / (1 + step))
    with pytest.raises(RuntimeError), collection.new_experiment(model="rnn", lr=0.5, note=None) as experiment:
        experiment.push(step=0, loss=3.0)
        raise RuntimeError("diverged")
    return path


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fill(tmp_path_factory.mktemp("cli") / "study")


def assert_clean_error(result: subprocess.CompletedProcess[str], message: str) -> None:
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert message in result.stderr


def test_the_console_script_prints_what_main_prints(study):
    """The installed console script runs ``cli.main``: the same output, the same exit codes."""
    for args in [("ls", study), ("sql", study, "SELEC 1")]:
        script, in_process = run_script(*args), run(*args)
        assert (script.returncode, script.stdout, script.stderr) == (
            in_process.returncode, in_process.stdout, in_process.stderr)


@pytest.mark.parametrize(("pure_python", "hot_path"), [("0", "compiled"), ("1", "pure Python")])
def test_version_tells_which_hot_path_is_in_use(pure_python, hot_path):
    """--version names the release and whether push runs the compiled loops."""
    from rigorous_recorder import __version__

    result = run_script("--version", RIGOROUS_RECORDER_PURE_PYTHON=pure_python)
    assert result.stdout == f"rigorous-recorder {__version__} (hot path: {hot_path})\n"


def test_ls_lists_one_line_per_run(study):
    """ls shows number, error number, status, start, duration, record count and info."""
    result = run("ls", study)
    assert (result.returncode, result.stderr) == (0, "")
    starts = [datetime.datetime.fromtimestamp(info["experiment_start_time"]).strftime("%Y-%m-%d %H:%M:%S")
              for info in ExperimentCollection(study, quiet=True, create=False).runs]
    lines = result.stdout.splitlines()
    assert re.fullmatch(r"experiment  error  status  start {16}duration  records  info", lines[0])
    assert re.fullmatch(r"[- ]+", lines[1])
    expected = [("1", "0", "ok", "10", "model=mlp lr=0.1 note=None"),
                ("2", "0", "ok", "10", "model=cnn lr=0.01 note=None"),
                ("3", "1", "error", "1", "model=rnn lr=0.5 note=None")]
    assert len(lines) == 2 + len(expected)
    for line, (number, errors, status, count, info), start in zip(lines[2:], expected, starts):
        assert line.split()[:4] == [number, errors, status, start.split()[0]]
        assert re.fullmatch(rf" +{number} +{errors}  {status} +{start}  \d+ms +{count}  {info}", line)


def test_path_may_name_the_collection_folder(study):
    """PATH works with the .collection suffix and a trailing slash too."""
    assert run("ls", f"{study}.collection/").stdout == run("ls", study).stdout


def test_show_draws_the_experiment_tree(study):
    """show prints each recorder with its local data, record count and columns."""
    result = run("show", study, "1")
    assert result.returncode == 0
    assert result.stdout.splitlines()[1:] == [
        "run #0  experiment_number=1 error_number=0 had_error=False  [0 records]",
        "└─ experiment #1  model=mlp lr=0.1 note=None  [0 records]",
        "   ├─ recorder #2  epoch=0  [5 records: step, loss]",
        "   └─ recorder #3  epoch=1  [5 records: step, loss]",
    ]
    assert re.fullmatch(r"experiment 1 \(error 0\), run 000001-\w+: ok, started .*, took \d+ms",
                        result.stdout.splitlines()[0])


def test_show_gives_the_error_of_a_failed_run(study):
    """show of a failed run says why it failed."""
    lines = run("show", study, "3").stdout.splitlines()
    assert lines[1] == "error: RuntimeError: diverged"
    assert lines[3] == "└─ experiment #1  model=rnn lr=0.5 note=None  [1 record: step, loss]"


def test_show_of_an_unknown_experiment_is_one_line(study):
    """show N for a number that does not exist exits 2 with the known range."""
    assert_clean_error(run("show", study, "9"), "no experiment 9 in ")


def test_sql_prints_a_table(study):
    """sql prints an aligned table, numbers to the right, and a row count."""
    result = run("sql", study, "SELECT model, lr, min(loss) AS best, count(*) AS n FROM records "
                               "GROUP BY ALL ORDER BY model")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == textwrap.dedent("""\
        model    lr  best   n
        -----  ----  ----  --
        cnn    0.01   0.2  10
        mlp     0.1   0.1  10
        rnn     0.5   3.0   1
        (3 rows)
        """)


def test_sql_max_rows_cuts_a_long_table(study):
    """--max-rows limits the rows shown and says so."""
    lines = run("sql", study, "SELECT step FROM records ORDER BY step", "--max-rows", "2").stdout.splitlines()
    assert lines == ["step", "----", "   0", "   0", "(first 2 rows shown; --max-rows 0 shows all)"]


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_sql_writes_the_result_to_a_file(study, tmp_path, fmt):
    """--format with -o writes the result instead of printing it."""
    output = tmp_path / f"result.{fmt}"
    result = run("sql", study, "SELECT experiment_number, status, error FROM experiments ORDER BY 1",
                 "--format", fmt, "-o", output)
    assert (result.returncode, result.stdout) == (0, "")
    expected = [{"experiment_number": 1, "status": "ok", "error": None},
                {"experiment_number": 2, "status": "ok", "error": None},
                {"experiment_number": 3, "status": "error", "error": "RuntimeError: diverged"}]
    if fmt == "csv":
        rows = list(csv.DictReader(output.open()))
        assert rows == [{key: "" if value is None else str(value) for key, value in row.items()} for row in expected]
    elif fmt == "json":
        assert json.loads(output.read_text()) == expected
    else:
        assert pq.read_table(output).to_pylist() == expected


def test_sql_csv_goes_to_stdout_without_a_file(study):
    """--format csv without -o prints CSV."""
    result = run("sql", study, "SELECT model, count(*) AS n FROM records GROUP BY model ORDER BY model",
                 "--format", "csv")
    assert result.stdout == "model,n\ncnn,10\nmlp,10\nrnn,1\n"


@pytest.mark.parametrize("name", ["records.parquet", "records.csv"])
def test_export_writes_the_flat_table(study, tmp_path, name):
    """export writes every record with its lineage, format from the extension, and no progress bar off a TTY."""
    output = tmp_path / name
    result = run("export", study, "-o", output)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", f"wrote 21 records to {output}\n")
    if name.endswith(".csv"):
        rows = list(csv.DictReader(output.open()))
    else:
        rows = pq.read_table(output).to_pylist()
    assert len(rows) == 21
    assert {"experiment_number", "had_error", "model", "lr", "epoch", "step", "loss"} <= set(rows[0])
    assert sorted(str(row["model"]) for row in rows) == ["cnn"] * 10 + ["mlp"] * 10 + ["rnn"]


def test_export_parquet_has_no_types_spark_cannot_read(study, tmp_path):
    """All-null columns become strings; timestamps are stored in microseconds."""
    output = tmp_path / "records.parquet"
    run("export", study, "-o", output, "--format", "parquet")
    schema = pq.read_schema(output)
    assert schema.field("note").type == pa.string()
    assert not any(pa.types.is_null(field.type) for field in schema)
    assert not any(pa.types.is_timestamp(field.type) and field.type.unit == "ns" for field in schema)


def test_plot_writes_a_png(study, tmp_path):
    """plot writes a real PNG of the requested size."""
    image = pytest.importorskip("matplotlib.image")
    output = tmp_path / "curves.png"
    result = run("plot", study, "--y", "loss", "--x", "step", "--by", "model", "--smooth", "2", "-o", output)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", f"wrote 3 lines to {output}\n")
    assert image.imread(output).shape == (500, 800, 4)


def test_plot_draws_one_labelled_line_per_group(study):
    """Each --by combination is one line; axes and legend are labelled."""
    pytest.importorskip("matplotlib")
    from rigorous_recorder.plot import plot_curves

    collection = ExperimentCollection(study, quiet=True, create=False)
    axes = plot_curves(collection, y="loss", by=["model", "lr"], where="epoch = 0").axes[0]
    assert [line.get_label() for line in axes.get_lines()] == ["cnn, 0.01", "mlp, 0.1"]  # rnn has no epoch
    assert list(axes.get_lines()[1].get_xdata()) == [0, 1, 2, 3, 4]
    assert (axes.get_xlabel(), axes.get_ylabel(), axes.get_legend().get_title().get_text()) == ("step", "loss", "model, lr")


def test_plot_defaults_to_one_line_per_run_and_smooths(study):
    """Without --by each run is a line; --smooth is a trailing moving average."""
    pytest.importorskip("matplotlib")
    from rigorous_recorder.plot import plot_curves

    collection = ExperimentCollection(study, quiet=True, create=False)
    lines = plot_curves(collection, y="loss", smooth=2, where="step < 3").axes[0].get_lines()
    assert [line.get_label() for line in lines] == ["experiment 1", "experiment 2", "experiment 3 (error 1)"]
    assert list(lines[0].get_ydata()) == pytest.approx([1.0, 0.75, (1 / 2 + 1 / 3) / 2])


def test_plot_without_matplotlib_says_how_to_install(study, monkeypatch, capsys):
    """A missing matplotlib is one line naming the extra."""
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)
    assert cli.main(["plot", str(study), "--y", "loss", "-o", "x.png"]) == 2
    assert capsys.readouterr().err == ("rigorous-recorder plot: error: plot needs matplotlib: "
                                       "pip install 'rigorous-recorder[plot]'\n")


def test_recover_finishes_a_crashed_run(tmp_path):
    """recover marks a run whose process died as crashed and keeps its flushed records."""
    path = fill(tmp_path / "study")
    crash = f"""
import os
from rigorous_recorder import ExperimentCollection
experiment = ExperimentCollection({str(path)!r}, quiet=True).new_experiment(model="gru")
experiment.recorder.push(step=0, loss=9.0)
experiment.flush()
os._exit(1)
"""
    subprocess.run([sys.executable, "-c", crash], check=False, timeout=60)
    result = run("recover", path)
    assert (result.returncode, result.stderr) == (0, "")
    assert re.fullmatch(r"recovered experiment 3 \(error 2\), run 000003-\w+: 1 records kept\n"
                        r"1 crashed run recovered\n", result.stdout)
    assert run("ls", path).stdout.splitlines()[-1].split()[2] == "crashed"
    assert run("recover", path).stdout == "0 crashed runs recovered\n"


@pytest.mark.parametrize(("args", "message"), [
    (["ls", "{tmp}/missing"], "missing.collection' is not a rigorous_recorder collection"),
    (["ls", "{tmp}/file.txt"], "file.txt.collection' is not a rigorous_recorder collection"),
    (["sql", "{study}", "SELEC * FROM records"], 'Parser Error: syntax error at or near "SELEC"'),
    (["sql", "{study}", "SELECT nope FROM records"], 'Referenced column "nope" not found'),
    (["plot", "{study}", "--y", "lossx", "-o", "{tmp}/x.png"], "unknown column 'lossx' for y; columns: "),
    (["plot", "{study}", "--y", "model", "-o", "{tmp}/x.png"], "column 'model' holds VARCHAR, not numbers"),
    (["export", "{study}", "-o", "{tmp}/records.xlsx"], "cannot tell the format of"),
    (["export", "{study}", "-o", "{tmp}/no/such/folder/records.csv"], "No such file or directory"),
])
def test_errors_are_one_line_and_exit_2(study, tmp_path, args, message):
    """Bad paths, non-collections, bad SQL and unknown columns: one line on stderr, exit 2."""
    (tmp_path / "file.txt").write_text("not a collection")
    result = run(*(arg.format(tmp=tmp_path, study=study) for arg in args))
    assert_clean_error(result, message)
    assert result.stderr.startswith(f"rigorous-recorder {args[0]}: error: ")


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(command, capsys):
    """--help of each command describes it and shows an example call."""
    with pytest.raises(SystemExit) as exit_:
        cli.main([command, "--help"])
    text = capsys.readouterr().out
    assert exit_.value.code == 0
    assert "example" in text and f"  rigorous-recorder {command} data/study" in text


def test_every_command_is_documented():
    """docs/cli.md has a section for each command."""
    text = DOCS.read_text()
    assert all(f"## rigorous-recorder {command}" in text for command in COMMANDS)


def test_python_dash_m_runs_the_command_line():
    """python -m rigorous_recorder is the same command."""
    result = subprocess.run([sys.executable, "-m", "rigorous_recorder", "--help"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0 and "rigorous-recorder ls data/study" in result.stdout
    assert all(command in result.stdout for command in COMMANDS)


def test_progress_bar_only_on_a_terminal():
    """The bar is tqdm on a TTY and a silent stand-in elsewhere (pipes, tests, CI logs)."""
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    from tqdm import tqdm

    with cli._progress(10, "writing", "rows", stream=Terminal()) as bar:
        assert isinstance(bar, tqdm)
    assert isinstance(cli._progress(10, "writing", "rows", stream=io.StringIO()), cli._Bar)
    assert isinstance(cli._progress(10, "writing", "rows", quiet=True, stream=Terminal()), cli._Bar)
