"""README.md and docs/cli.md run as written, and print what they show.

The blocks are parsed from the files at test time; nothing is copied here.

- **Python**: every ```python block of README.md runs, in README order, in a fresh working
  directory: the Quick start's blocks in one process, the later sections' in a second one that
  first runs the Quick start block defining ``collection`` (the Queries block uses it), as a
  user's script and a later notebook would. A line ``EXPRESSION   # VALUE`` whose comment is a Python literal is
  README's claim of the value: it runs as ``assert (EXPRESSION) == (VALUE)``. Other comments are
  prose.
- **Commands**: every ```bash / ```console block of both files that holds a ``rigorous-recorder``
  command runs for real with bash, in the same working directory, after the Python blocks
  recorded ``data/my_study`` and ``tests/scripts/readme_study.py`` recorded ``data/study`` (the
  study docs/cli.md shows). A ```console block's ``$ `` lines are commands and the lines up to
  the next ``$ `` are their output (stdout and stderr together), compared after :func:`normalise`
  (times, durations, run ids, pids, URLs and the working directory vary); a ```bash block shows
  no output, so each command must exit 0. Install commands (``pip install``, ``python3 -m venv``)
  are skipped, and so is every line of a block without a ``rigorous-recorder`` command.
  ``rigorous-recorder ui`` serves until Ctrl-C: it runs until it prints its first line, then gets
  SIGINT.

The commands run in document order (docs/cli.md first: its ``recover`` must find the crashed run).
"""

from __future__ import annotations

import ast
import io
import json
import os
import re
import signal
import subprocess
import sys
import tokenize
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CLI_DOCS = ROOT / "docs" / "cli.md"
SCRIPTS = Path(__file__).resolve().parent / "scripts"
#: The working directory docs/cli.md's commands ran in (its error messages name it).
DOCS_WORKING_DIRECTORY = "/tmp/docsdemo"
COMMAND = "rigorous-recorder"
INSTALL_COMMANDS = ("pip install", "python3 -m venv")
#: argparse wraps --help at the terminal's width; docs/cli.md shows 80 columns.
TERMINAL_COLUMNS = "80"
PYTHON_BLOCKS_TIMEOUT_S = 600
COMMAND_TIMEOUT_S = 120
#: A command that names this reads a collection that README's Python blocks record.
PYTHON_BLOCK_DATA = re.compile(r"data/(my_study|lightning_|keras_)")


@dataclass
class Block:
    """One fenced code block: its language, the file and line of its first line of code, its text."""

    language: str
    path: Path
    line: int
    text: str

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def fenced_blocks(path: Path) -> list[Block]:
    """Every fenced code block of a Markdown file, in order."""
    blocks, language, start, body = [], None, 0, []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if language is None and line.startswith("```"):
            language, start, body = line[3:].strip(), number + 1, []
        elif language is not None and line.startswith("```"):
            blocks.append(Block(language, path, start, "\n".join(body) + "\n"))
            language = None
        elif language is not None:
            body.append(line)
    return blocks


def with_value_claims_asserted(source: str, name: str, first_line: int = 1) -> str:
    """``source`` (line ``first_line`` of file ``name``) with each ``EXPRESSION   # LITERAL`` line turned
    into an assert (same line numbers)."""
    lines = source.splitlines()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type != tokenize.COMMENT:
            continue
        row, column = token.start
        code = lines[row - 1][:column].rstrip()
        try:
            statement = ast.parse(code).body
            expected = ast.literal_eval(token.string[1:].strip())
        except (SyntaxError, ValueError):
            continue
        if len(statement) == 1 and isinstance(statement[0], ast.Expr) and code == code.lstrip():
            message = f"{name}:{first_line + row - 1}: {code} is {{actual!r}}, the docs say {expected!r}"
            lines[row - 1] = (f"actual = ({code}); assert actual == ({expected!r}), "
                              f"{json.dumps(message)}.format(actual=actual)")
    return "\n".join(lines) + "\n"


def python_blocks() -> list[Block]:
    """README's Python blocks, value claims asserted."""
    return [Block("python", README, block.line, with_value_claims_asserted(block.text, README.name, block.line))
            for block in fenced_blocks(README) if block.language == "python"]


def python_groups() -> dict[str, list[Block]]:
    """README's Python blocks in the processes they run in: the Quick start's in one; the later
    sections' in another, after the Quick start block that defines the ``collection`` they use
    (it records one more experiment into data/my_study, alongside the first process)."""
    headings = [(number, line) for number, line in enumerate(README.read_text().splitlines(), start=1)
                if line.startswith("## ")]
    quick_start = [number for number, line in headings if line == "## Quick start"][0]
    after = min(number for number, _ in headings if number > quick_start)
    blocks = [block for block in python_blocks() if block.line > quick_start]
    setup = [block for block in blocks if re.search(r"^collection = ", block.text, re.M)]
    return {"quick start": [block for block in blocks if block.line < after],
            "later sections": setup[:1] + [block for block in blocks if block.line > after]}


def is_install(command: str) -> bool:
    return command.startswith(INSTALL_COMMANDS)


@dataclass
class Command:
    """One command of the docs and the output they show (None: a ```bash block, no output shown)."""

    block: Block
    line: int
    command: str
    expected: str | None

    @property
    def where(self) -> str:
        return f"{self.block.path.relative_to(ROOT)}:{self.line}"


def documented_commands() -> list[Command]:
    """The commands of every block that runs ``rigorous-recorder``, docs/cli.md first, in order."""
    commands = []
    for path in (CLI_DOCS, README):
        for block in fenced_blocks(path):
            if block.language not in ("bash", "console") or not re.search(rf"^\$? ?{COMMAND} ", block.text, re.M):
                continue
            if block.language == "bash":
                commands += [Command(block, block.line + offset, line, None)
                             for offset, line in enumerate(block.text.splitlines())
                             if line.strip() and not is_install(line)]
                continue
            lines = block.text.splitlines()
            starts = [offset for offset, line in enumerate(lines) if line.startswith("$ ")]
            for start, end in zip(starts, [*starts[1:], len(lines)]):
                if not is_install(lines[start][2:]):
                    commands.append(Command(block, block.line + start, lines[start][2:],
                                            "\n".join(lines[start + 1:end])))
    return commands


def normalise(output: str, working_directory: str) -> str:
    """Output with what varies between runs replaced by placeholders, runs of spaces made one."""
    output = output.replace(working_directory, DOCS_WORKING_DIRECTORY)
    for pattern, placeholder in [
        (r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", "<time>"),
        (r"\b\d{6}-[0-9a-f]{10}\b", "<run id>"),
        (r"\b\d{10}\.\d+\b|\b\d+\.\d{6,}\b", "<float>"),  # timestamps (repr drops trailing zeros) and durations
        (r"\b(\d+(\.\d)?(ms|s)|\d+[mh]\d\d[sm])\b", "<duration>"),
        (r"\(pid \d+ on [^)]+\)", "(pid <pid> on <host>)"),
        (r"http://127\.0\.0\.1:\d+/\?token=\S+", "<url>"),
        (r" +", " "),  # column widths follow the durations' lengths
    ]:
        output = re.sub(pattern, placeholder, output)
    return "\n".join(line.rstrip() for line in output.strip("\n").splitlines())


def environment() -> dict[str, str]:
    """This environment with the virtualenv's scripts first on PATH and the docs' terminal width."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "COLUMNS": TERMINAL_COLUMNS, "KERAS_BACKEND": "torch"}


def run_command(command: str, working_directory: Path) -> tuple[int, str]:
    """Run ``command`` with bash: its exit code and its stdout and stderr together."""
    if command.startswith(f"{COMMAND} ui "):
        return run_until_first_line(command, working_directory)
    result = subprocess.run(["bash", "-c", command], cwd=working_directory, env=environment(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=COMMAND_TIMEOUT_S)
    return result.returncode, result.stdout


def run_until_first_line(command: str, working_directory: Path) -> tuple[int, str]:
    """Start a command that serves until Ctrl-C, read its first line, then press Ctrl-C."""
    process = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=working_directory, env=environment(),
                               text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        first_line = process.stdout.readline()
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=COMMAND_TIMEOUT_S)
    finally:
        process.kill()
    return (0 if first_line.startswith(f"{COMMAND} ui: serving") else 1), first_line


@pytest.fixture(scope="module")
def working_directory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh folder holding ``data/study``, the collection docs/cli.md shows."""
    folder = tmp_path_factory.mktemp("readme")
    subprocess.run([sys.executable, SCRIPTS / "readme_study.py"], cwd=folder, env=environment(), check=True,
                   timeout=COMMAND_TIMEOUT_S)
    return folder


@pytest.fixture(scope="module")
def python_processes(working_directory: Path) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    """Each group of README's Python blocks, started in its own process in ``working_directory``
    (they run while the commands that do not need their data run)."""
    processes = {}
    for index, (group, blocks) in enumerate(python_groups().items()):
        listing = working_directory / f"readme_blocks_{index}.json"
        listing.write_text(json.dumps([[block.line, block.text] for block in blocks]))
        with open(listing.with_suffix(".log"), "w") as log:  # a pipe could fill up and stall it
            processes[group] = subprocess.Popen(
                [sys.executable, SCRIPTS / "readme_blocks.py", listing], cwd=working_directory,
                env=environment(), stdout=log, stderr=subprocess.STDOUT)
    yield processes
    for process in processes.values():
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def python_runs(python_processes: dict[str, subprocess.Popen[bytes]], working_directory: Path,
                ) -> dict[str, tuple[int, str]]:
    """The exit code and output of each group of README's Python blocks."""
    results = {}
    for index, (group, process) in enumerate(python_processes.items()):
        process.wait(timeout=PYTHON_BLOCKS_TIMEOUT_S)
        results[group] = process.returncode, (working_directory / f"readme_blocks_{index}.log").read_text()
    return results


@pytest.fixture(scope="module")
def command_results(working_directory: Path, python_processes, request) -> dict[int, tuple[int, str]]:
    """Each documented command's exit code and output, run in document order; a command that
    reads a collection the Python blocks record waits for them."""
    results = {}
    for index, command in enumerate(documented_commands()):
        if PYTHON_BLOCK_DATA.search(command.command):
            request.getfixturevalue("python_runs")
        results[index] = run_command(command.command, working_directory)
    return results


def test_the_docs_have_blocks_to_run():
    """The extraction finds README's Python blocks and the commands of both files."""
    assert len(python_blocks()) >= 6
    assert sorted(block.line for group in python_groups().values() for block in group) == sorted(
        [block.line for block in python_blocks()] + [python_groups()["later sections"][0].line])
    assert {command.block.path for command in documented_commands()} == {README, CLI_DOCS}
    assert sum(command.expected is not None for command in documented_commands()) >= 15


def test_a_value_claim_becomes_an_assert():
    """``EXPRESSION   # LITERAL`` is checked; a prose comment is not."""
    source = 'x = 1\nx + 1   # 2\nprint(x)   # prints it\n'
    rewritten = with_value_claims_asserted(source, "here")
    assert rewritten.splitlines()[0] == "x = 1" and rewritten.splitlines()[2] == "print(x)   # prints it"
    exec(compile(rewritten, "here", "exec"), {})
    with pytest.raises(AssertionError, match="here:2: x \\+ 1 is 3, the docs say 4"):
        exec(compile(with_value_claims_asserted("x = 2\nx + 1   # 4\n", "here"), "here", "exec"), {})


def test_normalise_keeps_what_matters():
    """Placeholders hide times and ids, not values."""
    line = "         4      2  crashed  2026-11-27 08:02:47  9ms             7  model=rnn lr=0.05"
    assert normalise(line, "/x") == " 4 2 crashed <time> <duration> 7 model=rnn lr=0.05"
    assert normalise("0.143 1.0677 3.2s", "/x") == "0.143 1.0677 <duration>"


@pytest.mark.slow
@pytest.mark.parametrize("index, command", list(enumerate(documented_commands())),
                         ids=lambda value: value.where if isinstance(value, Command) else str(value))
def test_documented_command_prints_what_the_docs_show(index, command, command_results, working_directory):
    """Each command runs; where the docs show its output, it prints that output."""
    code, output = command_results[index]
    if command.expected is None:
        assert code == 0, f"{command.where}: `{command.command}` exited {code}:\n{output}"
        return
    directory = str(working_directory)
    assert normalise(output, directory) == normalise(command.expected, directory), (
        f"{command.where}: `{command.command}` printed:\n{output}")


@pytest.mark.slow
@pytest.mark.parametrize("group", list(python_groups()))
def test_readme_python_blocks_run(group, python_runs):
    """Every Python block of README.md runs as written, and each value it claims is the value."""
    code, output = python_runs[group]
    assert code == 0, output[-8000:]
