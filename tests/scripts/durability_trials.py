"""Durability trials shared by tests/test_durability.py and benchmarks/durability.py.

Everything here drives the library through its public API and its command line, with
real processes: ``durability_writer.py`` records and reports what it committed; a trial
kills it (or a recovering process) with SIGKILL, damages files, or fills a small tmpfs,
then opens the collection and counts what is there.
"""

from __future__ import annotations

import io
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from rigorous_recorder import ExperimentCollection

WRITER = Path(__file__).with_name("durability_writer.py")
#: Seconds: a record committed this long before a kill -9 must survive (flush_interval 1.0 s).
SAFE_AGE = 1.5
#: Seconds to wait for a writer's line or a process's end before calling the trial hung.
PATIENCE = 120.0
#: Records of the big run killed inside finish(), and of the killed run whose recovery is killed.
FINISHED_RECORDS = 300_000
RECOVERED_RECORDS = 200_000
#: The folder suffix README's on-disk format documents (``data/s`` is stored in ``data/s.collection``).
SUFFIX = ".collection"


def collection_folder(path: Path) -> Path:
    """Where ``ExperimentCollection(path)`` keeps its files."""
    return path if path.name.endswith(SUFFIX) else path.with_name(path.name + SUFFIX)


def cli_command() -> list[str]:
    """The ``rigorous-recorder`` console script of the interpreter running now."""
    script = Path(sys.executable).with_name("rigorous-recorder")
    return [str(script)] if script.exists() else [sys.executable, "-m", "rigorous_recorder"]


def run_cli(*args: str, timeout: float = PATIENCE) -> subprocess.CompletedProcess[str]:
    """Run ``rigorous-recorder ARGS`` in its own process, to its end."""
    return subprocess.run([*cli_command(), *args], capture_output=True, text=True, timeout=timeout)


def run_cli_here(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the ``rigorous-recorder`` entry point in this process (no interpreter start-up).

    An exception escaping it is what the console script would print as a traceback.
    """
    from rigorous_recorder.cli import main

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as leaving:
            code = leaving.code if isinstance(leaving.code, int) else 1
        except Exception:
            code = 1
            import traceback

            err.write(traceback.format_exc())
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


# -- the writer process --------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    """One line a writer printed: ``word n time``, or ``run ID``."""

    word: str
    count: int
    moment: float
    text: str


class Writer:
    """A running ``durability_writer.py`` and the lines it has printed so far."""

    def __init__(self, path: Path, workload: str, *options: str, prefix: tuple[str, ...] = ()) -> None:
        command = [*prefix, sys.executable, str(WRITER), str(path), workload, *options]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[Line] = []
        self.stderr = ""
        self._changed = threading.Condition()
        self._readers = [threading.Thread(target=self._read_stdout, daemon=True),
                         threading.Thread(target=self._read_stderr, daemon=True)]
        for reader in self._readers:
            reader.start()

    def _read_stdout(self) -> None:
        for text in self.process.stdout:
            word, _, rest = text.strip().partition(" ")
            parts = rest.split()
            if word == "run" or len(parts) != 2:
                line = Line(word, -1, time.time(), rest)
            else:
                line = Line(word, int(parts[0]), float(parts[1]), rest)
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def _read_stderr(self) -> None:
        self.stderr = self.process.stderr.read()

    def wait_for(self, word: str, timeout: float = PATIENCE) -> Line | None:
        """The first line starting with ``word``; None if the writer ended without printing one."""
        deadline = time.time() + timeout
        with self._changed:
            while True:
                found = next((line for line in self.lines if line.word == word), None)
                if found is not None:
                    return found
                if self.process.poll() is not None and not self._readers[0].is_alive():
                    return None
                if time.time() > deadline:
                    raise TimeoutError(f"the writer printed no {word!r} line in {timeout} s: {self.tail()}")
                self._changed.wait(0.05)

    def kill(self, sig: int = signal.SIGKILL) -> float:
        """Send ``sig`` now (if the writer still runs), wait for its end; returns the moment sent."""
        moment = time.time()
        if self.process.poll() is None:
            self.process.send_signal(sig)
        self.end()
        return moment

    def end(self, timeout: float = PATIENCE) -> int:
        """Wait for the writer's end and its output; its exit code."""
        code = self.process.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout)
        return code

    @property
    def run_ids(self) -> list[str]:
        """The ids of the runs the writer started."""
        return [line.text for line in self.lines if line.word == "run"]

    def must_survive(self, killed_at: float) -> int:
        """Records (seq 0..N-1) known committed more than SAFE_AGE before ``killed_at``, or flushed.

        Every line says "N records committed by time T" after the writer's own flush() or
        in between; a writer that ended by itself must keep everything it committed.
        """
        ended = self.process.returncode is not None and self.process.returncode >= 0
        limit = float("inf") if ended else killed_at - SAFE_AGE
        counts = [line.count for line in self.lines if line.count >= 0 and line.moment <= limit]
        return max(counts, default=0)

    def tail(self) -> str:
        return (self.stderr or "")[-2000:]

    def failure(self) -> str | None:
        """The last line of stderr if the writer ended by itself with an error, else None."""
        if self.process.returncode is None or self.process.returncode <= 0:
            return None
        return _last_line(self.stderr or "") or f"exit code {self.process.returncode}"


# -- counting --------------------------------------------------------------------------------


@dataclass
class Count:
    """What a reader finds in a collection after a trial, counted three ways."""

    sql: int = 0
    length: int = 0
    records: int = 0
    distinct: int = 0
    kept_below: int = 0
    statuses: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def agree(self) -> bool:
        return self.sql == self.length == self.records

    @property
    def doubled(self) -> int:
        return max(self.sql, self.length, self.records) - self.distinct


def count_records(path: Path, floor: int) -> Count:
    """Open the collection at ``path`` and count its records (``seq`` values below ``floor`` too)."""
    try:
        collection = ExperimentCollection(path, quiet=True)
        statuses = [run["status"] for run in collection.runs]
        if "seq" not in collection.sql("SELECT * FROM records LIMIT 0").columns:
            sql = collection.sql("SELECT count(*) FROM records").fetchall()[0][0]
            return Count(sql, len(collection), len(collection.records), 0, 0, statuses)
        sql, distinct, below = collection.sql(
            f"SELECT count(*), count(DISTINCT seq), count(DISTINCT seq) FILTER (WHERE seq < {floor}) FROM records"
        ).fetchall()[0]
        seqs = [record["seq"] for record in collection.records]
        return Count(sql, len(collection), len(seqs), min(distinct, len(set(seqs))), below, statuses)
    except Exception as error:  # a trial reports what broke instead of stopping the others
        return Count(error=f"{type(error).__name__}: {error}")


@dataclass
class Trial:
    """One kill -9 trial: what had to survive and what did."""

    workload: str
    must_survive: int
    count: Count
    moment: str = ""
    writer_failure: str | None = None  # the writer's last stderr line if it failed by itself

    @property
    def lost(self) -> int:
        return self.must_survive - self.count.kept_below if self.count.error is None else self.must_survive

    def problems(self) -> list[str]:
        """Each broken promise, in words (empty when the trial kept its promises)."""
        count = self.count
        found = [] if self.writer_failure is None else [f"{self.workload}: the writer failed: {self.writer_failure}"]
        if count.error is not None:
            return [*found, f"{self.workload} ({self.moment}): reading failed: {count.error}"]
        if self.lost:
            found.append(f"{self.workload} ({self.moment}): lost {self.lost:,} of {self.must_survive:,} records")
        if count.doubled:
            found.append(f"{self.workload} ({self.moment}): {count.doubled:,} records counted twice")
        if not count.agree:
            found.append(f"{self.workload} ({self.moment}): sql {count.sql:,}, len {count.length:,}, "
                         f"records {count.records:,} disagree")
        if "running" in count.statuses:
            found.append(f"{self.workload} ({self.moment}): a killed run is still 'running': {count.statuses}")
        return found


#: Writer options per workload, sized to record for a few seconds on a slow 2-core machine.
WORKLOAD_OPTIONS = {
    "small": ("--records", "200"),
    "episodes": ("--episodes", "20000", "--nofile", "1024"),
    "big": ("--records", "3000000"),
    "manykeys": ("--records", "300000"),
}


def kill_trial(folder: Path, workload: str, delay: float) -> Trial:
    """Start a writer, SIGKILL it ``delay`` seconds after it first said it committed, count what survived."""
    path = folder / "study"
    writer = Writer(path, workload, *WORKLOAD_OPTIONS[workload])
    if writer.wait_for("committed") is None:
        writer.end()
        raise RuntimeError(f"the {workload} writer failed to start: {writer.tail()}")
    time.sleep(delay)
    killed_at = writer.kill()
    must = writer.must_survive(killed_at)
    return Trial(workload, must, count_records(path, must), f"kill -9 at {delay:.2f} s", writer.failure())


def _killed_holding(path: Path, records: int, tag: str) -> Writer:
    """A ``hold`` writer that flushed ``records`` records into a run tagged ``tag``, SIGKILLed."""
    writer = Writer(path, "hold", "--records", str(records), "--flush", "--flush-interval", "600",
                    "--info", f"tag={tag}")
    if writer.wait_for("ready") is None:
        writer.end()
        raise RuntimeError(f"the hold writer failed: {writer.tail()}")
    writer.kill()
    return writer


def _killed_inside_finish(path: Path, delay: float, records: int) -> tuple[Writer, Line]:
    """A ``big`` writer of ``records`` at ``path``, SIGKILLed ``delay`` seconds into its finish();
    returns it and its "finishing" message (the records it had flushed)."""
    writer = Writer(path, "big", "--records", str(records))
    finishing = writer.wait_for("finishing")
    if finishing is None:
        writer.end()
        raise RuntimeError(f"the big writer ended before finish(): {writer.tail()}")
    time.sleep(delay)
    writer.kill()
    return writer, finishing


def finish_kill_trial(folder: Path, delay: float, records: int = FINISHED_RECORDS) -> Trial:
    """SIGKILL a ``big`` writer ``delay`` seconds into its ``finish()`` (every record flushed before)."""
    path = folder / "study"
    writer, finishing = _killed_inside_finish(path, delay, records)
    done = "after it returned" if writer.wait_for("finished", 0) else "inside it"
    return Trial("big", finishing.count, count_records(path, finishing.count),
                 f"kill -9 {delay:.2f} s after finish() began, {done}", writer.failure())


def finish_seconds(folder: Path, records: int = FINISHED_RECORDS) -> float:
    """How long a ``big`` writer's finish() takes, undisturbed (it must end well)."""
    writer = Writer(folder / "study", "big", "--records", str(records))
    if writer.end() != 0:
        raise RuntimeError(f"the big writer failed: {writer.tail()}")
    return writer.wait_for("finished").moment - writer.wait_for("finishing").moment


def crashed_collection(folder: Path, records: int, flush_interval: float = 600.0) -> tuple[Path, str]:
    """A collection whose one run flushed exactly ``records`` records and was killed; its run id."""
    path = folder / "study"
    writer = Writer(path, "hold", "--records", str(records), "--flush", "--flush-interval", str(flush_interval))
    if writer.wait_for("ready") is None:
        writer.end()
        raise RuntimeError(f"the hold writer failed: {writer.tail()}")
    writer.kill()
    return path, writer.run_ids[0]


OPEN_TO_RECOVER = (
    "import sys\n"
    "from rigorous_recorder import ExperimentCollection\n"
    "ExperimentCollection(sys.argv[1], quiet=True)\n"
)


def recover_command(path: Path, how: str) -> list[str]:
    """A command that recovers the collection at ``path``: the CLI, or opening it from Python."""
    if how == "cli":
        return [*cli_command(), "recover", str(path)]
    return [sys.executable, "-c", OPEN_TO_RECOVER, str(path)]


def timed(command: list[str]) -> float:
    """Seconds ``command`` takes to run to its end (it must succeed)."""
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=PATIENCE)
    if done.returncode != 0:
        raise RuntimeError(f"{command[-2:]} failed: {done.stderr[-2000:]}")
    return time.perf_counter() - start


def recovery_kill_trial(template: Path, folder: Path, records: int, how: str, delay: float) -> Trial:
    """Copy a crashed collection, SIGKILL a process recovering it after ``delay`` s, count."""
    path = folder / "study"
    shutil.copytree(collection_folder(template), collection_folder(path))
    process = subprocess.Popen(recover_command(path, how), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    process.kill()
    process.wait(PATIENCE)
    return Trial(f"recovery ({how})", records, count_records(path, records), f"kill -9 at {delay:.2f} s")


# -- damage ------------------------------------------------------------------------------------


def kind_of(relative: Path) -> str:
    """A file's kind: its path inside the run folder with every digit run written as N."""
    return re.sub(r"\d+", "N", relative.as_posix())


def file_kinds(run_folder: Path) -> dict[str, Path]:
    """One file of each kind found in ``run_folder`` (relative paths)."""
    kinds: dict[str, Path] = {}
    for path in sorted(run_folder.rglob("*")):
        if path.is_file():
            kinds.setdefault(kind_of(path.relative_to(run_folder)), path.relative_to(run_folder))
    return kinds


def _garbage(path: Path, chooser: random.Random) -> None:
    path.write_bytes(bytes(chooser.randrange(256) for _ in range(max(path.stat().st_size, 64))))


def _garbage_in_middle(path: Path, chooser: random.Random) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 16] = bytes(chooser.randrange(256) for _ in range(16))
    path.write_bytes(bytes(data))


def _truncated(path: Path, chooser: random.Random) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _non_utf8(path: Path, chooser: random.Random) -> None:
    data = path.read_bytes()
    middle = len(data) // 2
    path.write_bytes(data[:middle] + b"\xff\xfe\xc3(" + data[middle:])


#: Damage that any file can take.
FILE_DAMAGES = {
    "garbage": _garbage,
    "garbage in the middle": _garbage_in_middle,
    "truncated": _truncated,
    "empty": lambda path, chooser: path.write_bytes(b""),
    "non-UTF-8 bytes": _non_utf8,
    "missing": lambda path, chooser: path.unlink(),
}


#: Damages after which a killed run may show as running until its heartbeat times out.
LIVENESS_DAMAGES = frozenset(f"key {key!r} missing" for key in ("host", "pid", "pid_start"))
def json_damages(data: Any) -> dict[str, Any]:
    """Ways to damage a JSON file that still parses: wrong shape, each key missing, wrong types."""
    damages: dict[str, Any] = {"not an object": [1, 2, 3], "no keys": {}}
    if isinstance(data, dict):
        for key in data:
            damages[f"key {key!r} missing"] = {other: value for other, value in data.items() if other != key}
        for key in ("experiment_number", "experiment_start_time", "status"):
            if key in data:
                damages[f"key {key!r} of the wrong type"] = {**data, key: "garbled"}
    return damages


def names_files(data: Any, folder: Path) -> list[list[Any]]:
    """Key paths of a JSON value whose strings name files in ``folder`` (records files, parts)."""
    found: list[list[Any]] = []

    def walk(value: Any, keys: list[Any]) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(inner, [*keys, key])
        elif isinstance(value, list):
            for index, inner in enumerate(value):
                walk(inner, [*keys, index])
        elif isinstance(value, str) and value and "/" not in value and (folder / value).is_file():
            found.append(keys)

    walk(data, [])
    return found


def with_value(data: Any, keys: list[Any], value: Any) -> Any:
    """A copy of ``data`` with the value at ``keys`` replaced."""
    data = json.loads(json.dumps(data))
    inner = data
    for key in keys[:-1]:
        inner = inner[key]
    inner[keys[-1]] = value
    return data


#: Where a damaged run.json points outside its run folder; a valid Parquet file lies there.
OUTSIDE = "../../outside.parquet"
OUTSIDE_MARKER = "read_from_outside_the_run_folder"


@dataclass
class Damage:
    """One way to damage a run folder: a name, and a function doing it to a run folder."""

    kind: str
    damage: str
    apply: Any
    names: str | None = None  # the file name the run's error should mention

    @property
    def label(self) -> str:
        return f"{self.kind}: {self.damage}"


def damages_of(run_folder: Path) -> list[Damage]:
    """Every damage to try on a run folder like ``run_folder``: each file kind x each damage kind."""
    found = []
    for kind, relative in file_kinds(run_folder).items():
        for name, function in FILE_DAMAGES.items():
            found.append(Damage(kind, name, _file_damage(relative, function), relative.name))
        if relative.suffix == ".json":
            try:
                data = json.loads((run_folder / relative).read_text(encoding="utf-8"))
            except ValueError:
                continue
            for name, value in json_damages(data).items():
                found.append(Damage(kind, name, _json_write(relative, value), relative.name))
            for keys in names_files(data, run_folder):
                label = f"{'.'.join(map(str, keys))} = {OUTSIDE!r}"
                found.append(Damage(kind, label, _json_write(relative, with_value(data, keys, OUTSIDE)),
                                    relative.name))
    found.append(Damage("run folder", "emptied", _emptied))
    return found


def _file_damage(relative: Path, function: Any) -> Any:
    def apply(run_folder: Path, chooser: random.Random) -> None:
        function(run_folder / relative, chooser)

    return apply


def _json_write(relative: Path, value: Any) -> Any:
    def apply(run_folder: Path, chooser: random.Random) -> None:
        (run_folder / relative).write_text(json.dumps(value), encoding="utf-8")

    return apply


def _emptied(run_folder: Path, chooser: random.Random) -> None:
    for path in list(run_folder.iterdir()):
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def write_outside_file(collection_path: Path) -> None:
    """The valid Parquet file that OUTSIDE points to, with a column no run has."""
    table = pa.table({"seq": [10**9], OUTSIDE_MARKER: [True], "__recorder__": [1]})
    pq.write_table(table, collection_path / Path(OUTSIDE).name)


def add_stray_files(collection_path: Path) -> list[Path]:
    """A stray file or folder of several kinds in every folder of the collection."""
    made = []
    for folder in [collection_path, *sorted(path for path in collection_path.rglob("*") if path.is_dir())]:
        for name, data in (("notes.txt", b"hello"), ("backup.json~", b"{not json"), (".DS_Store", b"\x00\x01"),
                           ("copy.parquet", b"PAR1garbagePAR1"), ("0-0.arrow", b"\xff" * 40),
                           ("0.json", b"\xff\xfe")):
            (folder / name).write_bytes(data)
            made.append(folder / name)
        (folder / "stray-folder").mkdir(exist_ok=True)
        (folder / "stray-folder" / "run.json").write_text("{}")
        made.append(folder / "stray-folder")
    return made


@dataclass
class Pristine:
    """What the undamaged collection holds: records per run tag, runs, and the target run."""

    per_tag: dict[str, int]
    runs: list[dict[str, Any]]
    target: dict[str, Any]
    target_tag: str


def pristine_state(path: Path, target_tag: str) -> Pristine:
    """Read the undamaged collection (a copy: opening may recover)."""
    collection = ExperimentCollection(path, quiet=True)
    per_tag = dict(collection.sql("SELECT tag, count(*) FROM records GROUP BY tag").fetchall())
    runs = collection.runs
    target = next(run for run in runs if _tag(collection, run) == target_tag)
    return Pristine(per_tag, runs, target, target_tag)


def _tag(collection: ExperimentCollection, run: dict[str, Any]) -> str | None:
    run_id = run.get("id")
    rows = collection.sql(f"SELECT tag FROM experiments WHERE {_run_id_column(collection)} = '{run_id}'").fetchall()
    return rows[0][0] if rows else None


def _run_id_column(collection: ExperimentCollection) -> str:
    columns = collection.sql("SELECT * FROM experiments LIMIT 0").columns
    return "run_id" if "run_id" in columns else "id"


def check_damaged(path: Path, target_id: str, pristine: Pristine, damage: Damage | None,
                  cli: Any = run_cli_here) -> list[str]:
    """Every broken promise after ``damage`` was done to run ``target_id`` (None: stray files only).

    ``cli`` runs the command line: :func:`run_cli_here` (fast) or :func:`run_cli` (its own process).
    """
    label = damage.label if damage else "stray files everywhere"
    problems: list[str] = []
    target = None
    try:
        collection = ExperimentCollection(path, quiet=True)
    except Exception as error:
        return [f"{label}: the collection fails to open: {type(error).__name__}: {error}"]
    try:
        runs = {run.get("id"): run for run in collection.runs}
        target = runs.get(target_id)
        if target is None:
            problems.append(f"{label}: the run is silently dropped from collection.runs")
        elif target.get("status") == "damaged":
            if damage is None:
                problems.append(f"{label}: the run is marked damaged by stray files: {target.get('error')}")
            elif damage.names and damage.names not in str(target.get("error")):
                problems.append(f"{label}: the damaged run's error does not name {damage.names!r}: "
                                f"{target.get('error')!r}")
            elif not target.get("error"):
                problems.append(f"{label}: the damaged run has no error")
        else:
            problems += _check_readable_target(collection, target, pristine, label, damage)
        per_tag = dict(collection.sql("SELECT tag, count(*) FROM records GROUP BY tag").fetchall())
        for tag, count in pristine.per_tag.items():
            if tag != pristine.target_tag and per_tag.get(tag) != count:
                problems.append(f"{label}: run {tag} reads {per_tag.get(tag)} records instead of {count}")
        if OUTSIDE_MARKER in collection.sql("SELECT * FROM records LIMIT 0").columns:
            problems.append(f"{label}: a file outside the run folder was read as records")
        total = collection.sql("SELECT count(*) FROM records").fetchall()[0][0]
        lengths = (total, len(collection), len(collection.records))
        if len(set(lengths)) != 1:
            problems.append(f"{label}: sql, len() and records disagree: {lengths}")
        id_column = _run_id_column(collection)
        listed = dict(collection.sql(f"SELECT {id_column}, status FROM experiments").fetchall())
        if target is not None and listed.get(target_id) != target.get("status"):
            problems.append(f"{label}: the experiments view says {listed.get(target_id)!r}, "
                            f"collection.runs says {target.get('status')!r}")
    except Exception as error:
        problems.append(f"{label}: reading fails: {type(error).__name__}: {error}")
    problems += _check_cli(path, pristine, label, cli)
    problems += _check_numbering(path, pristine, target, label)
    return problems


def _check_readable_target(collection: ExperimentCollection, target: dict[str, Any], pristine: Pristine,
                           label: str, damage: Damage | None) -> list[str]:
    """A damaged run not marked damaged must read as before (a crashed run: a prefix of it)."""
    count = collection.sql(f"SELECT count(*) FROM records WHERE tag = '{pristine.target_tag}'").fetchall()[0][0]
    expected = pristine.per_tag.get(pristine.target_tag, 0)
    before = pristine.target.get("status")
    if target.get("status") == "running" and damage is not None and damage.damage in LIVENESS_DAMAGES:
        return []  # its liveness is its heartbeat now: "crashed" once that is older than the timeout
    if target.get("status") != before:
        return [f"{label}: the run's status changed from {before!r} to {target.get('status')!r}, not 'damaged'"]
    if before == "crashed" and damage is not None:
        return [] if count <= expected else [f"{label}: the crashed run grew from {expected} to {count} records"]
    if count != expected:
        return [f"{label}: the run reads {count} records instead of {expected}, without being marked damaged"]
    return []


def _check_cli(path: Path, pristine: Pristine, label: str, cli: Any) -> list[str]:
    problems = []
    listing = cli("ls", str(path))
    if listing.returncode != 0 or "Traceback" in listing.stderr:
        problems.append(f"{label}: `rigorous-recorder ls` exits {listing.returncode}: {_last_line(listing.stderr)}")
    else:
        shown = [line for line in listing.stdout.splitlines()[2:] if line.strip()]
        if len(shown) != len(pristine.runs):
            problems.append(f"{label}: `rigorous-recorder ls` shows {len(shown)} runs instead of {len(pristine.runs)}")
    number = pristine.target["experiment_number"]
    shown = cli("show", str(path), str(number))
    if "Traceback" in shown.stderr or shown.returncode not in (0, 2):
        problems.append(f"{label}: `rigorous-recorder show` exits {shown.returncode}: {_last_line(shown.stderr)}")
    elif shown.returncode == 2 and len(shown.stderr.strip().splitlines()) != 1:
        problems.append(f"{label}: `rigorous-recorder show` prints {len(shown.stderr.splitlines())} error lines")
    return problems


def _check_numbering(path: Path, pristine: Pristine, target: dict[str, Any] | None, label: str) -> list[str]:
    """The next run's number follows the seed's rule, and never reuses a damaged run's number."""
    try:
        collection = ExperimentCollection(path, quiet=True)
        with collection.new_experiment(tag="next") as recorder:
            recorder.push(seq=0)
        number = collection.runs[-1]["experiment_number"]
    except Exception as error:
        return [f"{label}: new_experiment() fails: {type(error).__name__}: {error}"]
    damaged = target is None or target.get("status") == "damaged"
    runs = [run if run["id"] != pristine.target["id"] else {**run, "status": target["status"]}
            for run in pristine.runs] if not damaged else pristine.runs
    expected = pristine.target["experiment_number"] + 1 if damaged else _next_number(runs)
    if number != expected:
        return [f"{label}: the next run is experiment {number}, not {expected}"
                + (": the damaged run's number is reused" if damaged and number <= expected - 1 else "")]
    return []


def _next_number(runs: list[dict[str, Any]]) -> int:
    """The seed's numbering rule: a failed or crashed latest run's number again, else the next."""
    top = max(run["experiment_number"] for run in runs)
    latest = max((run for run in runs if run["experiment_number"] == top), key=lambda run: run["experiment_start_time"])
    return top if latest["status"] in ("error", "crashed") else top + 1


def _last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else ""


# -- full disk --------------------------------------------------------------------------------


class MountNotPermitted(Exception):
    """This machine does not let us mount a tmpfs."""


@contextmanager
def small_tmpfs(mount_point: Path, size: str = "8m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``mount_point`` for the block; always unmounted after."""
    mount_point.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise MountNotPermitted(done.stderr.strip() or f"mount exited {done.returncode}")
    try:
        yield mount_point
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(mount_point)], capture_output=True)
        if subprocess.run(["umount", str(mount_point)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


def fill_disk(mount_point: Path) -> Path:
    """Write a ballast file until the disk is full; returns it (delete it to free the space)."""
    ballast = mount_point / "ballast"
    chunk = os.urandom(64 * 1024)
    with ballast.open("wb", buffering=0) as file:
        for size in (len(chunk), 4096, 1):
            while True:
                try:
                    file.write(chunk[:size])
                except OSError:
                    break
    return ballast


@dataclass
class FullDisk:
    """One full-disk trial: what was committed, flushed, kept, and what went wrong."""

    committed: int = 0
    flushed: int = 0
    kept: int = 0
    status: str | None = None
    first_error: str | None = None
    problems: list[str] = field(default_factory=list)
    corrupt_files: list[str] = field(default_factory=list)
    ok_with_missing: bool = False


def full_disk_trial(mount_point: Path, first_call: str = "push", flush_interval: float = 0.1,
                    read_while_full: bool = True, finish_while_full: bool = False) -> FullDisk:
    """Record into a collection on a small disk until it is full; check every promise.

    The flusher thread hits the full disk (no explicit flush after the disk fills); the
    first ``first_call`` (push, add, commit or flush) afterwards must raise an error that
    names the collection and the cause. ``read_while_full``: also open and query the
    collection from another process while the disk is full. ``finish_while_full``: call
    finish() before freeing space too (it may raise; it must not mark the run ok short of
    records), then again after.
    """
    result = FullDisk()
    path = mount_point / "study"
    collection = ExperimentCollection(path, quiet=True, flush_interval=flush_interval)
    experiment = collection.new_experiment(tag="full")
    worker = experiment.recorder.sub_recorder(role="worker")
    text = os.urandom(300).hex()
    stager = experiment.recorder.sub_recorder(role="stager")
    stager.add(seq=-1, text=text)  # staged before the failure, for a first_call of "commit"
    for seq in range(2_000):
        worker.push(seq=seq, text=text)
    collection.flush()
    result.committed = result.flushed = 2_000
    ballast = fill_disk(mount_point)
    for seq in range(2_000, 2_100):  # pending rows the flusher cannot write: each its own random text,
        worker.push(seq=seq, text=os.urandom(300).hex())  # else compressed they fit in the file's last page
    result.committed = 2_100
    time.sleep(flush_interval * 5 + 0.3)  # several flushes fail meanwhile
    call = {
        "push": lambda: worker.push(seq=result.committed, text=text),
        "add": lambda: worker.add(seq=result.committed, text=text),
        "commit": stager.commit,
        "flush": collection.flush,
    }[first_call]
    try:
        call()
        if first_call in ("push", "commit"):
            result.committed += 1
        result.problems.append(f"{first_call}() raised nothing after the flusher failed to write to a full disk")
    except Exception as error:
        result.first_error = f"{type(error).__name__}: {error}"
        if not isinstance(error, OSError) and "RecorderError" not in [k.__name__ for k in type(error).__mro__]:
            result.problems.append(f"{first_call}() raised {result.first_error}: neither RecorderError nor OSError")
        cause = str(error) + str(error.__cause__ or "")
        if str(collection.path) not in cause and collection.path.name not in cause:
            result.problems.append(f"{first_call}()'s error does not name the collection: {result.first_error}")
        if os.strerror(28) not in cause and "ENOSPC" not in cause:
            result.problems.append(f"{first_call}()'s error does not name the cause (no space): {result.first_error}")
    if read_while_full:
        result.problems += reader_problems(path, "while the disk is full", result.flushed)
    if finish_while_full:
        try:
            experiment.finish()
        except Exception:  # refusing to finish on a full disk is allowed
            pass
        _check_kept(path, result, "finish() on the full disk")
    ballast.unlink()
    try:
        experiment.finish()  # a second call after a finished run does nothing
    except Exception as error:
        result.problems.append(f"finish() after space came back raised {type(error).__name__}: {error}")
    _check_kept(path, result, "finish() after space came back")
    result.corrupt_files = corrupt_files(collection_folder(path))
    result.problems += [f"corrupt file {name}" for name in result.corrupt_files]
    return result


COUNTER = (
    "import json, sys\n"
    "from rigorous_recorder import ExperimentCollection\n"
    "collection = ExperimentCollection(sys.argv[1], quiet=True)\n"
    "total, distinct = collection.sql('SELECT count(*), count(DISTINCT seq) FROM records').fetchall()[0]\n"
    "print(json.dumps([total, distinct, collection.runs[-1]['status']]))\n"
)


def _check_kept(path: Path, result: FullDisk, when: str) -> None:
    """Count the run's records from another process: flushed ones kept, none twice, never "ok" short."""
    done = subprocess.run([sys.executable, "-c", COUNTER, str(path)], capture_output=True, text=True,
                          timeout=PATIENCE)
    if done.returncode != 0:
        result.problems.append(f"reading after {when} failed: {_last_line(done.stderr)}")
        return
    total, result.kept, result.status = json.loads(done.stdout)
    if result.kept < result.flushed:
        result.problems.append(f"after {when}: only {result.kept:,} of {result.flushed:,} flushed records kept")
    if total != result.kept:
        result.problems.append(f"after {when}: {total - result.kept:,} records counted twice")
    if result.status == "ok" and result.kept < result.committed:
        result.ok_with_missing = True
        result.problems.append(f"{when} marked the run ok with {result.kept:,} of {result.committed:,} records")


def corrupt_files(folder: Path) -> list[str]:
    """Parquet files that pyarrow cannot read whole, or that hold invalid data (bad UTF-8)."""
    bad = []
    for path in sorted(folder.rglob("*.parquet")):
        try:
            pq.read_table(path).validate(full=True)
        except Exception as error:
            bad.append(f"{path.relative_to(folder)} ({type(error).__name__}: {error})")
    return bad


READER = (
    "import sys\n"
    "from rigorous_recorder import ExperimentCollection\n"
    "collection = ExperimentCollection(sys.argv[1], quiet=True)\n"
    "print(collection.sql('SELECT count(*) FROM records').fetchall()[0][0], len(collection.runs))\n"
)


def reader_problems(path: Path, when: str, at_least: int) -> list[str]:
    """Open and query the collection from another process; what went wrong."""
    done = subprocess.run([sys.executable, "-c", READER, str(path)], capture_output=True, text=True, timeout=PATIENCE)
    if done.returncode != 0:
        return [f"opening and querying {when} fails: {_last_line(done.stderr)}"]
    records = int(done.stdout.split()[0])
    if records < at_least:
        return [f"a reader {when} sees {records:,} records, fewer than the {at_least:,} flushed"]
    return []


def read_only_problems(mount_point: Path, path: Path, at_least: int) -> list[str]:
    """Remount ``mount_point`` read-only, open and query the collection, remount read-write."""
    done = subprocess.run(["mount", "-o", "remount,ro", str(mount_point)], capture_output=True, text=True)
    if done.returncode != 0:
        return [f"cannot remount read-only: {done.stderr.strip()}"]
    try:
        return reader_problems(path, "on a read-only disk", at_least)
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(mount_point)], capture_output=True)


def run_folder_of(collection_path: Path, run_id: str) -> Path:
    """The folder of run ``run_id`` inside a collection, wherever the store keeps it."""
    return next(path for path in collection_folder(collection_path).rglob(run_id) if path.is_dir())


def damage_matrix(template: Path, target_id: str, target_tag: str, work: Path,
                  cli: Any = run_cli_here) -> dict[str, list[str]]:
    """Each damage of :func:`damages_of` done to a copy of ``template``'s run ``target_id``.

    Returns each damage's label with the promises it broke (an empty list: none).
    """
    pristine_copy = work / "pristine" / "study"
    shutil.copytree(collection_folder(template), collection_folder(pristine_copy))
    pristine = pristine_state(pristine_copy, target_tag)
    results = {}
    for index, damage in enumerate(damages_of(run_folder_of(template, target_id))):
        case = work / f"case-{index}" / "study"
        shutil.copytree(collection_folder(template), collection_folder(case))
        damage.apply(run_folder_of(case, target_id), random.Random(index))
        write_outside_file(collection_folder(case))
        results[damage.label] = check_damaged(case, target_id, pristine, damage, cli)
        shutil.rmtree(case.parent, ignore_errors=True)
    return results


def stray_files_problems(template: Path, target_id: str, target_tag: str, work: Path,
                         cli: Any = run_cli_here) -> list[str]:
    """Stray files and folders in every folder of a copy of ``template``: the promises broken."""
    pristine_copy = work / "pristine" / "study"
    shutil.copytree(collection_folder(template), collection_folder(pristine_copy))
    pristine = pristine_state(pristine_copy, target_tag)
    case = work / "stray" / "study"
    shutil.copytree(collection_folder(template), collection_folder(case))
    add_stray_files(collection_folder(case))
    return check_damaged(case, target_id, pristine, None, cli)


def finished_template(path: Path, records: int = 300) -> str:
    """Three finished runs tagged a, b and target (in that order); the id of the target run."""
    collection = ExperimentCollection(path, quiet=True)
    for tag in ("a", "b", "target"):
        with collection.new_experiment(tag=tag) as recorder:
            worker = recorder.sub_recorder(role="worker")
            for seq in range(records):
                worker.push(seq=seq, text=f"value {seq}", loss=1.0 / (seq + 1))
    return collection.runs[-1]["id"]


def crashed_template(path: Path, records: int = 300) -> str:
    """Runs a and b finished, then a run tagged target killed after a flush, not yet recovered."""
    collection = ExperimentCollection(path, quiet=True)
    for tag in ("a", "b"):
        with collection.new_experiment(tag=tag) as recorder:
            worker = recorder.sub_recorder(role="worker")
            for seq in range(records):
                worker.push(seq=seq, text=f"value {seq}")
    return _killed_holding(path, records, "target").run_ids[0]


# -- the catalog: packs under attack ---------------------------------------------------------

#: Finished runs that wait outside every pack in the collections packed under a kill -9 (the
#: run that finishes makes them PACK_MIN_RUNS), and the records of each.
WAITING_RUNS = 63
WAITING_RECORDS = 15_000
#: Runs of the collection whose files outside the run folders are damaged: more than one pack's worth.
PACKED_TEMPLATE_RUNS = 66
#: What a reader sees of a collection, compared whole before and after damage.
COLLECTION_QUERIES = (
    "SELECT * FROM records ORDER BY run_id, seq",
    "SELECT * FROM experiments ORDER BY run_id",
    "SELECT name, key, part, source, type FROM columns ORDER BY name",
)


def waiting_template(path: Path, runs: int = WAITING_RUNS, records: int = WAITING_RECORDS,
                     first_run: int = 0) -> int:
    """Finished runs written without packing (``recover=False``), seq -1, -2, ... (a writer's
    seqs are 0, 1, ...; ``first_run``: runs added later go on below); returns how many records
    they hold."""
    collection = ExperimentCollection(path, quiet=True, recover=False)
    for run in range(first_run, first_run + runs):
        with collection.new_experiment(tag=f"waiting {run}") as recorder:
            worker = recorder.sub_recorder(role="worker")
            for index in range(records):
                worker.push(seq=-1 - run * records - index, loss=1.0 / (index + 1))
    return runs * records


#: Where a packer killed midway stopped (see :func:`packing_phase`).
NOT_YET, WRITING, PACKED = "before a pack file was written", "while a pack was being written", "after a pack was written"


def packing_phase(path: Path) -> str:
    """Where a packer killed now stopped, judged from what it left in ``catalog/``."""
    catalog = collection_folder(path) / "catalog"
    names = set(os.listdir(catalog)) if catalog.is_dir() else set()
    if any(name.endswith(".tmp") for name in names):
        return WRITING
    listings = {name[:-len(".runs.json")] for name in names if name.endswith(".runs.json")}
    if listings - {name[:-len(".parquet")] for name in names if name.startswith("pack-") and name.count(".") == 1}:
        return WRITING
    return PACKED if listings else NOT_YET


def pack_in_finish_kill_trial(template: Path, folder: Path, waiting: int, delay: float,
                              records: int = 2_000) -> Trial:
    """SIGKILL a writer ``delay`` s into the finish() that packs its run and the ``waiting`` records
    of the runs of ``template`` (copied); count every record of the collection."""
    path = folder / "study"
    shutil.copytree(collection_folder(template), collection_folder(path))
    writer, finishing = _killed_inside_finish(path, delay, records)
    phase = "after finish() returned" if writer.wait_for("finished", 0) else packing_phase(path)
    must = waiting + finishing.count
    return Trial("finish() packing", must, count_records(path, finishing.count),
                 f"kill -9 {delay:.2f} s after finish() began, {phase}", writer.failure())


def pack_in_finish_seconds(template: Path, folder: Path, records: int = 2_000) -> float:
    """How long the finish() that packs takes, undisturbed, on a copy of ``template``."""
    path = folder / "study"
    shutil.copytree(collection_folder(template), collection_folder(path))
    writer = Writer(path, "big", "--records", str(records))
    if writer.end() != 0:
        raise RuntimeError(f"the big writer failed: {writer.tail()}")
    if packing_phase(path) != PACKED:
        raise RuntimeError(f"the writer's finish() did not pack: {os.listdir(collection_folder(path))}")
    return writer.wait_for("finished").moment - writer.wait_for("finishing").moment


#: Opens a collection, says so, then runs the first query (which packs the runs that wait).
FIRST_QUERY = (
    "import sys, time\n"
    "from rigorous_recorder import ExperimentCollection\n"
    "import duckdb, filelock, pyarrow.parquet\n"
    "collection = ExperimentCollection(sys.argv[1], quiet=True)\n"
    "print('ready', time.time(), flush=True)\n"
    "collection.sql('SELECT count(*) FROM records').fetchall()\n"
    "print('done', time.time(), flush=True)\n"
)


def first_query_seconds(template: Path, folder: Path) -> float:
    """How long a fresh process's first sql() takes on a copy of ``template`` (it packs)."""
    path = folder / "study"
    shutil.copytree(collection_folder(template), collection_folder(path))
    done = subprocess.run([sys.executable, "-c", FIRST_QUERY, str(path)], capture_output=True, text=True,
                          timeout=PATIENCE)
    if done.returncode != 0:
        raise RuntimeError(f"the first query failed: {done.stderr[-2000:]}")
    if packing_phase(path) != PACKED:
        raise RuntimeError(f"the first query did not pack: {os.listdir(collection_folder(path))}")
    moments = dict(line.split() for line in done.stdout.splitlines())
    return float(moments["done"]) - float(moments["ready"])


def pack_in_query_kill_trial(template: Path, folder: Path, waiting: int, delay: float) -> Trial:
    """SIGKILL a process ``delay`` s into its first sql(), which packs the runs of a copy of
    ``template``; count every record."""
    path = folder / "study"
    shutil.copytree(collection_folder(template), collection_folder(path))
    process = subprocess.Popen([sys.executable, "-c", FIRST_QUERY, str(path)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    ready = process.stdout.readline() if process.stdout is not None else ""
    if not ready.startswith("ready"):
        process.kill()
        raise RuntimeError(f"the querying process failed to start: {process.communicate()[1][-2000:]}")
    time.sleep(delay)
    process.kill()
    output, _ = process.communicate(timeout=PATIENCE)
    phase = "after the query returned" if "done" in output else packing_phase(path)
    return Trial("first sql() packing", waiting, count_records(path, 0), f"kill -9 at {delay:.2f} s, {phase}")


def packed_template(path: Path, runs: int = PACKED_TEMPLATE_RUNS, records: int = 100) -> None:
    """A collection with every file kind outside the run folders: a pack of 64 runs (and runs
    that wait for the next), a killed run's active marker, and a temporary file like the one a
    packer killed midway leaves (half a pack)."""
    collection = ExperimentCollection(path, quiet=True)
    for run in range(runs):
        with collection.new_experiment(tag=f"run {run}") as recorder:
            worker = recorder.sub_recorder(role="worker")
            for index in range(records):
                worker.push(seq=run * records + index, text=f"value {index}", loss=1.0 / (index + 1))
    _killed_holding(path, records, "killed")
    catalog = collection_folder(path) / "catalog"
    (pack,) = [file for file in catalog.iterdir() if file.name.startswith("pack-") and file.name.count(".") == 1]
    data = pack.read_bytes()
    (catalog / f".{pack.name}.{os.urandom(8).hex()}.tmp").write_bytes(data[: len(data) // 2])


def collection_kind(relative: Path) -> str:
    """A file's kind outside the run folders: its path with pack, run and random ids written as words."""
    text = re.sub(r"pack-\d+-[0-9a-f]+", "pack-ID", relative.as_posix())
    text = re.sub(r"\.[0-9a-f]{16}\.tmp$", ".RANDOM.tmp", text)
    return re.sub(r"\d{6}-[0-9a-f]{10}", "RUN", text)


def collection_files(collection_path: Path) -> dict[str, Path]:
    """One file of each kind outside the run folders (relative paths)."""
    kinds: dict[str, Path] = {}
    for path in sorted(collection_path.rglob("*")):
        relative = path.relative_to(collection_path)
        if path.is_file() and relative.parts[0] != "runs":
            kinds.setdefault(collection_kind(relative), relative)
    return kinds


def collection_damages(collection_path: Path) -> list[Damage]:
    """Every damage to try on the files outside the run folders: each file kind x each damage
    kind, a Parquet file replaced by another valid one, JSON that parses but is wrong."""
    found = []
    some_records_file = next(collection_path.glob("runs/*/records-*.parquet")).relative_to(collection_path)
    for kind, relative in collection_files(collection_path).items():
        for name, function in FILE_DAMAGES.items():
            found.append(Damage(kind, name, _file_damage(relative, function)))
        if relative.suffix == ".parquet":
            found.append(Damage(kind, "a run's records file in its place", _copied_over(some_records_file, relative)))
        if relative.suffix == ".json" and not relative.name.endswith(".runs.json"):  # a pack listing leads with its CRC
            data = json.loads((collection_path / relative).read_text(encoding="utf-8"))
            for name, value in json_damages(data).items():
                found.append(Damage(kind, name, _json_write(relative, value)))
    return found


def _copied_over(source: Path, relative: Path) -> Any:
    def apply(collection_path: Path, chooser: random.Random) -> None:
        shutil.copyfile(collection_path / source, collection_path / relative)

    return apply


@dataclass
class Answers:
    """Everything a reader sees of a collection: each query's rows, the runs, the next number."""

    rows: list[list[tuple[Any, ...]]]
    runs: list[tuple[str, str]]
    next_number: int


def collection_answers(path: Path) -> Answers:
    """Read the collection at ``path`` every way (opening may recover and pack), then start a run."""
    collection = ExperimentCollection(path, quiet=True)
    rows = [collection.sql(query).fetchall() for query in COLLECTION_QUERIES]
    runs = [(run["id"], run["status"]) for run in collection.runs]
    with collection.new_experiment(tag="next") as recorder:
        recorder.push(seq=-1)
    return Answers(rows, runs, collection.runs[-1]["experiment_number"])


def copy_with_current_packs(template: Path, path: Path) -> None:
    """Copy the collection at ``template`` to ``path``, its packs still current there.

    A pack knows each of its runs by its run.json's inode, size and mtime: in a plain copy every
    pack is stale, so ignored, damaged or not. run.json files are hard-linked instead, which is
    safe as the library only ever replaces a run.json (renames a new one over it).
    """
    def link_run_json(source: str, target: str) -> None:
        if os.path.basename(source) == "run.json":
            os.link(source, target)
        else:
            shutil.copy2(source, target)

    shutil.copytree(collection_folder(template), collection_folder(path), copy_function=link_run_json)


def collection_damage_matrix(template: Path, work: Path, cli: Any = run_cli_here) -> dict[str, list[str]]:
    """Each damage of :func:`collection_damages` done to a copy of ``template`` (its packs current
    in the copy): what it broke."""
    pristine_copy = work / "pristine" / "study"
    copy_with_current_packs(template, pristine_copy)
    pristine = collection_answers(pristine_copy)
    results = {}
    for index, damage in enumerate(collection_damages(collection_folder(template))):
        case = work / f"case-{index}" / "study"
        copy_with_current_packs(template, case)
        damage.apply(collection_folder(case), random.Random(index))
        results[damage.label] = check_collection_damage(case, pristine, damage.label, cli)
        shutil.rmtree(case.parent, ignore_errors=True)
    return results


def check_collection_damage(path: Path, pristine: Answers, label: str, cli: Any = run_cli_here) -> list[str]:
    """Every broken promise of a collection whose files outside the run folders were damaged:
    it must open, list every run, and answer every query as the undamaged collection does."""
    try:
        collection = ExperimentCollection(path, quiet=True)
        runs = [(run["id"], run["status"]) for run in collection.runs]
    except Exception as error:
        return [f"{label}: the collection fails to open: {type(error).__name__}: {error}"]
    problems = []
    dropped = {run_id for run_id, _ in pristine.runs} - {run_id for run_id, _ in runs}
    if dropped:
        problems.append(f"{label}: runs silently dropped: {sorted(dropped)}")
    elif runs != pristine.runs:
        problems.append(f"{label}: the runs read {runs}, not {pristine.runs}")
    listing = cli("ls", str(path))
    shown = [line for line in listing.stdout.splitlines()[2:] if line.strip()]
    if listing.returncode != 0 or "Traceback" in listing.stderr:
        problems.append(f"{label}: `rigorous-recorder ls` exits {listing.returncode}: {_last_line(listing.stderr)}")
    elif len(shown) != len(pristine.runs):
        problems.append(f"{label}: `rigorous-recorder ls` shows {len(shown)} runs, not {len(pristine.runs)}")
    try:
        lengths = (collection.sql("SELECT count(*) FROM records").fetchall()[0][0], len(collection),
                   len(collection.records))
        if len(set(lengths)) != 1:
            problems.append(f"{label}: sql, len() and records disagree: {lengths}")
        answers = collection_answers(path)
    except Exception as error:
        return [*problems, f"{label}: reading fails: {type(error).__name__}: {error}"]
    for query, before, after in zip(COLLECTION_QUERIES, pristine.rows, answers.rows):
        if len(after) != len(before):
            problems.append(f"{label}: {query!r} answers {len(after)} rows, the undamaged collection {len(before)}")
        elif after != before:
            problems.append(f"{label}: {query!r} answers other values than the undamaged collection")
    if answers.next_number != pristine.next_number:
        problems.append(f"{label}: the next run is experiment {answers.next_number}, not {pristine.next_number}")
    return problems
