"""Attacks on the read path: what ``sql()`` and ``records`` show must be what was recorded.

Differential: hostile studies are recorded through the public API, then read back by a fresh
``python -I`` process that never loads pyarrow (finished runs' footers read through DuckDB),
by a process with pyarrow loaded, in this process through ``collection.records``, after
packing, and while runs still record; every way must give back the recorded values, and the
two processes the very same views. Then files are damaged: every other run must still read
whole, and the damaged one be listed as damaged, its error naming the file.
"""

from __future__ import annotations

import datetime
import json
import math
import pickle
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from rigorous_recorder import ExperimentCollection, Recorder
from rigorous_recorder._naming import JSON_TAG, parse
from rigorous_recorder._values import from_json, normalize
from rigorous_recorder.errors import RecorderError
from rigorous_recorder.query import RUN_COLUMNS
from rigorous_recorder.store import catalog
from rigorous_recorder.store.footer import ARROW_SCHEMA_KEY, TREE_KEY
from rigorous_recorder.store.layout import BOOKKEEPING_KEYS

from .conftest import huge_int_among_floats

#: Reads collections named on its stdin (one JSON command a line) and pickles their views to
#: the file the command names: ``records``, ``experiments`` and ``columns`` as (columns, rows),
#: ``python``: every record of ``collection.records`` as a dict (asked for with "records"), and
#: the heavy modules loaded so far. A collection opened with "recover" false never packs.
READER = r"""
import json, pickle, sys
from rigorous_recorder import ExperimentCollection
for line in sys.stdin:
    command = json.loads(line)
    result = {}
    try:
        collection = ExperimentCollection(command["path"], quiet=True, create=False, recover=command["recover"])
        for view in ("records", "experiments", "columns"):
            relation = collection.sql(f"SELECT * FROM {view}")
            result[view] = (relation.columns, relation.fetchall())
        if command.get("records"):
            result["python"] = [dict(record.items()) for record in collection.records]
    except Exception as error:
        result["error"] = f"{type(error).__name__}: {error}"
    result["modules"] = sorted(name for name in ("pyarrow", "numpy", "pandas") if name in sys.modules)
    with open(command["out"], "wb") as file:
        pickle.dump(result, file)
    print("done", flush=True)
"""


class Reader:
    """A long-lived reading process (``python -I``; ``first``: code it runs first)."""

    def __init__(self, first: str = "") -> None:
        self.process = subprocess.Popen([sys.executable, "-I", "-c", first + READER], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)
        self._out = Path(tempfile.mkdtemp(prefix="reader-"))

    def read(self, path: Path, records: bool = False, recover: bool = True) -> dict[str, Any]:
        """The views of the collection at ``path`` as this process reads them (and its records)."""
        out = self._out / "result.pickle"
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps({"path": str(path), "out": str(out), "records": records, "recover": recover}) + "\n")
        self.process.stdin.flush()
        assert self.process.stdout.readline() == "done\n", "the reading process died"
        return pickle.loads(out.read_bytes())

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=30)
        shutil.rmtree(self._out, ignore_errors=True)


@pytest.fixture(scope="module")
def fresh() -> Iterator[Reader]:
    """A process that reads without ever importing pyarrow (unless a read needs it)."""
    reader = Reader()
    yield reader
    reader.close()


@pytest.fixture(scope="module")
def unloaded() -> Iterator[Reader]:
    """A process that did not import pyarrow before reading packs (whose pages it checks with pyarrow)."""
    reader = Reader()
    yield reader
    reader.close()


@pytest.fixture(scope="module")
def loaded() -> Iterator[Reader]:
    """A process that imported pyarrow (and so numpy) before reading."""
    reader = Reader("import pyarrow\n")
    yield reader
    reader.close()


# -- what was recorded ----------------------------------------------------------------------

#: The key each record carries to be found again.
ORDINAL = "ordinal"
LONG_KEY = "k" * 300 + "é"
HOSTILE_KEYS = [
    "loss", "Loss", "LOSS", "step", "x y", "a.b", 'quo"te', "it's", "a~b", "k~json", "k~2", "~source", "~recorder",
    "select", "from", "order", "NULL", "1", "1e5", "nan", "-0", "ünï", "ÜNÏ", "日本", "😀", LONG_KEY,
    "run_id", "status", "records", "error", "file_index", "c0", "c1", *BOOKKEEPING_KEYS,
    "__recorder__", "", "ordinal~2",
]
ALPHABET = "aAbB_~.\"' é日😀-$0"
KEYS = st.one_of(st.sampled_from(HOSTILE_KEYS), st.text(ALPHABET, min_size=1, max_size=5))
INT_EDGES = [0, 1, -1, 2**31, 2**53, 2**53 + 1, -(2**53) - 1, 2**63 - 1, -(2**63), 2**63, -(2**63) - 1, 2**64, 10**30]
TIMEZONES = st.sampled_from([datetime.timezone.utc, datetime.timezone(datetime.timedelta(hours=5, minutes=30)),
                             datetime.timezone(datetime.timedelta(hours=-8))])
DATES = st.dates(datetime.date(1, 1, 1), datetime.date(9999, 12, 31))
NAIVE = st.datetimes(datetime.datetime(1900, 1, 1), datetime.datetime(2200, 1, 1))
AWARE = st.datetimes(datetime.datetime(1900, 1, 1), datetime.datetime(2200, 1, 1), timezones=TIMEZONES)
SCALARS = st.one_of(
    st.none(), st.booleans(), st.sampled_from(INT_EDGES), st.integers(-(2**70), 2**70), st.integers(-3, 3),
    st.sampled_from([float("nan"), float("inf"), float("-inf"), -0.0, 0.0, 5e-324, 1.7976931348623157e308]),
    st.floats(), st.sampled_from(["", "1", "1.5", "nan", "true", "null", "NULL", "[]", "{}", '{"$bytes": "AA=="}']),
    st.text(ALPHABET, max_size=4), st.binary(max_size=3), DATES, NAIVE, AWARE,
)
VALUES = st.one_of(
    SCALARS,
    st.lists(st.one_of(st.none(), st.sampled_from(INT_EDGES), st.floats(-2, 2)), max_size=3),
    st.lists(st.text(ALPHABET, max_size=2), max_size=2),
    st.lists(st.one_of(DATES, st.binary(max_size=2), AWARE), max_size=2),
    st.lists(st.lists(st.one_of(st.integers(-2, 2), st.none()), max_size=2), max_size=2),
    st.dictionaries(st.text(ALPHABET, max_size=3), st.one_of(st.integers(-2, 2), st.text(ALPHABET, max_size=2),
                                                             DATES, st.just([])), max_size=2),
)
DATA = st.dictionaries(KEYS, VALUES, max_size=4)


@st.composite
def studies(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Runs: experiment info, recorders (each below the experiment or an earlier recorder) with
    local data, row shapes to push in turn, and data set after the pushes."""
    plan = []
    for _ in range(draw(st.integers(1, 3))):
        recorders = []
        for index in range(draw(st.integers(1, 3))):
            recorders.append({"parent": draw(st.integers(-1, index - 1)), "data": draw(DATA),
                              "shapes": draw(st.lists(DATA, min_size=1, max_size=4)),
                              "pushes": draw(st.integers(0, 12)), "late": draw(DATA)})
        plan.append({"info": draw(DATA), "recorders": recorders})
    return plan


def accepted(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` without the keys a recorder refuses; each refusal must name its key."""
    kept = {}
    for key, value in data.items():
        try:
            Recorder().push({key: value})
        except RecorderError as error:
            assert repr(key) in str(error), f"refusal of {key!r} does not name it: {error}"
        else:
            kept[key] = normalize(key, value)
    return kept


class Recorded:
    """What a study recorded: each record's values (its lineage and own, nearest wins) by
    ordinal, the keys whose ints may have widened to floats (documented: a recorder pushed
    floats and ints under them), and each run's experiment info."""

    def __init__(self) -> None:
        self.records: dict[int, dict[str, Any]] = {}
        self.widening: dict[int, set[str]] = {}
        self.info: list[dict[str, Any]] = []


def record(path: Path, plan: list[dict[str, Any]], finish: bool = True) -> tuple[Recorded, list[Any]]:
    """Record ``plan`` into the collection at ``path``; returns what was recorded and the
    experiments (still running unless ``finish``)."""
    collection = ExperimentCollection(path, quiet=True, record_context=False)
    recorded = Recorded()
    experiments = []
    for run in plan:
        info = accepted(run["info"])
        recorded.info.append(info)
        experiment = collection.new_experiment(info)
        experiments.append(experiment)
        made: list[tuple[Recorder, dict[str, Any], list[int]]] = []
        for spec in run["recorders"]:
            parent, lineage, _ = made[spec["parent"]] if spec["parent"] >= 0 else (experiment.recorder, info, [])
            data = accepted(spec["data"])
            recorder = Recorder(data).set_parent(parent)
            shapes = [accepted(shape) for shape in spec["shapes"]]
            if huge_int_among_floats(shapes):  # the known hot-path packing into float64, left out
                shapes = [{key: value for key, value in shape.items() if type(value) is not float} for shape in shapes]
            floats = {key for shape in shapes for key, value in shape.items() if type(value) is float}
            ordinals = []
            for index in range(spec["pushes"]):
                own = shapes[index % len(shapes)]
                ordinal = len(recorded.records)
                recorder.push({**own, ORDINAL: ordinal})
                recorded.records[ordinal] = own
                recorded.widening[ordinal] = floats
                ordinals.append(ordinal)
            late = accepted(spec["late"])
            for key, value in late.items():
                recorder[key] = value
            made.append((recorder, {**lineage, **data, **late}, ordinals))
        for _, lineage, ordinals in made:
            for ordinal in ordinals:
                own = recorded.records[ordinal]
                recorded.records[ordinal] = {**lineage, **{key: value for key, value in own.items() if value is not None},
                                             ORDINAL: ordinal}
        if finish:
            experiment.finish()
    return recorded, experiments


# -- comparing ------------------------------------------------------------------------------


def same(expected: Any, actual: Any, widen: bool = False) -> bool:
    """``actual`` is the value recorded: floats bit for bit (NaN, -0.0), an int may read as
    its float (exactly; with ``widen`` beyond 2**53 the nearest), datetimes the same instant
    and both aware or both naive."""
    if type(expected) is float:
        return type(actual) is float and (math.isnan(expected) and math.isnan(actual)
                                          or expected == actual and math.copysign(1, expected) == math.copysign(1, actual))
    if type(expected) is int:
        if type(actual) is float:
            return float(expected) == actual and (widen or abs(expected) <= 2**53)
        return type(actual) is int and expected == actual
    if type(expected) is list:
        return type(actual) is list and len(expected) == len(actual) and all(
            same(item, read, widen) for item, read in zip(expected, actual))
    if type(expected) is dict:
        return type(actual) is dict and expected.keys() == actual.keys() and all(
            same(value, actual[key]) for key, value in expected.items())
    if type(expected) is datetime.datetime:
        return (type(actual) is datetime.datetime and (expected.utcoffset() is None) == (actual.utcoffset() is None)
                and expected == actual)
    return type(expected) is type(actual) and expected == actual


def flat(view: tuple[list[str], list[tuple[Any, ...]]], columns: tuple[list[str], list[tuple[Any, ...]]]
         ) -> dict[int, dict[str, Any]]:
    """Rows of ``records`` as {key: value} by ordinal: the typed value, else the companion's."""
    names, rows = view
    described = [(name, key, kind) for name, key, _, _, kind in columns[1]]
    assert [name for name, _, _ in described] == names, "columns does not list the columns of records"
    found = {}
    for row in rows:
        cells = dict(zip(names, row))
        values: dict[str, Any] = {}
        for name, key, kind in described:
            if key is not None and cells[name] is not None:
                assert key not in values, f"key {key!r} has a value in both of its columns: {cells!r}"
                values[key] = from_json(cells[name]) if kind == "JSON" else cells[name]
        ordinal = values[ORDINAL]
        assert ordinal not in found, f"record {ordinal} read twice"
        found[ordinal] = values
    return found


def compare(recorded: Recorded, found: dict[int, dict[str, Any]], way: str) -> None:
    """Every record read, with exactly its recorded values (the bookkeeping keys the run gives aside)."""
    assert sorted(found) == sorted(recorded.records), f"{way}: records {sorted(found)}, recorded {sorted(recorded.records)}"
    for ordinal, expected in recorded.records.items():
        actual = found[ordinal]
        for key, value in expected.items():
            assert same(value, actual.get(key), key in recorded.widening[ordinal]), (
                f"{way}: record {ordinal} key {key!r}: recorded {value!r}, read {actual.get(key)!r}")
        extra = {key: value for key, value in actual.items() if key not in expected and key not in BOOKKEEPING_KEYS}
        assert not extra, f"{way}: record {ordinal} reads values never recorded: {extra!r}"


def check_views(recorded: Recorded, read: dict[str, Any], way: str) -> None:
    """The views read somewhere hold every record and every run's info as recorded."""
    assert "error" not in read, f"{way}: {read['error']}"
    compare(recorded, flat(read["records"], read["columns"]), way)
    kinds = {key: kind for _, key, part, _, kind in read["columns"][1] if part == "value"}  # info keys are inherited
    names, rows = read["experiments"]
    assert len(rows) == len(recorded.info), f"{way}: {len(rows)} runs, recorded {len(recorded.info)}"
    for row, info in zip(rows, recorded.info):
        cells = dict(zip(names, row))
        assert cells["status"] in ("ok", "running"), f"{way}: run {cells['run_id']} is {cells['status']}: {cells['error']}"
        shown: dict[str, Any] = {}
        for name in names[len(RUN_COLUMNS):]:
            key, part = parse(name)
            if cells[name] is not None:
                assert key not in shown, f"{way}: info {key!r} has a value in both of its columns"
                json = part == JSON_TAG or kinds[key] == "JSON"
                shown[key] = from_json(cells[name]) if json else cells[name]
        assert shown.keys() == {key for key, value in info.items() if value is not None}, (
            f"{way}: run {cells['run_id']} shows info {shown!r}, recorded {info!r}")
        for key, value in shown.items():
            assert same(info[key], value), f"{way}: info {key!r}: recorded {info[key]!r}, read {value!r}"


def assert_same_views(first: dict[str, Any], second: dict[str, Any], what: str) -> None:
    """The two reads give the very same views (rows in any order; JSON text compared as the
    values it holds, see test_json_text_is_spelled_one_way)."""
    for view in ("records", "experiments", "columns"):
        (names, rows), (other_names, other_rows) = first[view], second[view]
        if view == "experiments":  # a packed run's info may bring a companion column of NULLs alone
            names, other_names = _holding_values(first, view), _holding_values(second, view)
        assert names == other_names, f"{what}: {view} has columns {other_names}, not {names}"
        rows, other_rows = _canonical(first, view), _canonical(second, view)
        differ = [(row, other) for row, other in zip(rows, other_rows) if row != other]
        assert len(rows) == len(other_rows) and not differ, f"{what}: {view} differs: {differ[:2]}"


def _holding_values(read: dict[str, Any], view: str) -> list[str]:
    """The columns of ``view`` that hold a value in some row."""
    names, rows = read[view]
    return [name for index, name in enumerate(names) if any(row[index] is not None for row in rows)]


def _canonical(read: dict[str, Any], view: str) -> list[str]:
    """The rows of ``view``, sorted, each as the repr of its cells (only of the columns that
    hold values, for ``experiments``), JSON text as the repr of its value."""
    names, rows = read[view]
    if view == "records":
        json_columns = {name for name, _, _, _, kind in read["columns"][1] if kind == "JSON"}
    elif view == "experiments":  # an info key's typed column has the type of its column in records
        kinds = {key: kind for _, key, part, _, kind in read["columns"][1] if part == "value"}
        json_columns = {name for name in names[len(RUN_COLUMNS):]
                        if parse(name)[1] == JSON_TAG or kinds.get(parse(name)[0]) == "JSON"}
        kept = [names.index(name) for name in _holding_values(read, view)]
        names, rows = [names[index] for index in kept], [[row[index] for index in kept] for row in rows]
    else:
        json_columns = set()
    decode = [name in json_columns for name in names]
    return sorted(repr([_comparable(from_json(cell) if json else cell) for json, cell in zip(decode, row)]) for row in rows)


def values_by_run(read: dict[str, Any]) -> dict[str, list[str]]:
    """Each run's records as read, by run id: the repr of each record's {key: value} (typed,
    else companion; aware datetimes in UTC), sorted; the columns the records spread over aside."""
    names, rows = read["records"]
    described = [(names.index(name), key, kind) for name, key, _, _, kind in read["columns"][1] if key is not None]
    runs: dict[str, list[str]] = {}
    for row in rows:
        values = {key: _comparable(from_json(row[index]) if kind == "JSON" else row[index])
                  for index, key, kind in described if row[index] is not None}
        runs.setdefault(row[names.index("run_id")], []).append(repr(sorted(values.items())))
    return {run: sorted(records) for run, records in runs.items()}


def _comparable(value: Any) -> Any:
    """``value`` as two reads of one recorded value may both give it: each aware datetime in
    UTC (JSON text keeps the offset pushed, a TIMESTAMPTZ does not), each int within ±2**53
    as its float (the view's column of a key is DOUBLE or BIGINT as every run's values vote)."""
    if type(value) is list:
        return [_comparable(item) for item in value]
    if type(value) is dict:
        return {key: _comparable(item) for key, item in value.items()}
    if type(value) is datetime.datetime and value.utcoffset() is not None:
        return value.astimezone(datetime.timezone.utc)
    if type(value) is int and abs(value) <= 2**53:
        return float(value)
    return value


# -- hostile studies read back every way ---------------------------------------------------


def read_every_way(path: Path, recorded: Recorded, fresh: Reader, loaded: Reader) -> None:
    """Read the finished study at ``path`` without pyarrow, with pyarrow, through
    ``collection.records``, and again after packing its runs: all give what was recorded."""
    without = fresh.read(path)
    assert without["modules"] == [], f"a fresh query of finished runs loaded {without['modules']}"
    check_views(recorded, without, "sql() without pyarrow")
    with_pyarrow = loaded.read(path, records=True)
    check_views(recorded, with_pyarrow, "sql() with pyarrow")
    assert_same_views(without, with_pyarrow, "with pyarrow loaded")
    compare(recorded, {record[ORDINAL]: record for record in with_pyarrow["python"]}, "records")


def pack(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Gather every finished run of the collection at ``path`` into packs."""
    with monkeypatch.context() as patched:
        patched.setattr(catalog, "PACK_MIN_RUNS", 1)
        ExperimentCollection(path, quiet=True).sql("SELECT 1").fetchall()
    assert list((path.with_suffix(".collection") / "catalog").glob("pack-*.runs.json")), "nothing was packed"


def _examples(count: int):  # noqa: ANN202 - a hypothesis decorator
    return settings(max_examples=count, derandomize=True, deadline=None, database=None, phases=[Phase.generate],
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])


def _study_reads_back(plan: list[dict[str, Any]], readers: tuple[Reader, Reader, Reader],
                      monkeypatch: pytest.MonkeyPatch) -> None:
    fresh, unloaded, loaded = readers
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "study"
        recorded, _ = record(path, plan)
        read_every_way(path, recorded, fresh, loaded)
        unpacked = fresh.read(path)
        pack(path, monkeypatch)
        check_views(recorded, unloaded.read(path), "sql() without pyarrow first, packed")
        from_packs = loaded.read(path, records=True)
        check_views(recorded, from_packs, "sql() with pyarrow, packed")
        assert_same_views(unpacked, from_packs, "packed")


def test_hostile_studies_read_back_the_same_every_way(fresh, unloaded, loaded, monkeypatch):
    """A few hostile studies: the fresh, the pyarrow and the Python reads give what was recorded."""
    readers = (fresh, unloaded, loaded)
    _examples(2)(given(studies())(lambda plan: _study_reads_back(plan, readers, monkeypatch)))()


@pytest.mark.slow
def test_many_hostile_studies_read_back_the_same_every_way(fresh, unloaded, loaded, monkeypatch):
    """The same, over many more studies."""
    readers = (fresh, unloaded, loaded)
    _examples(6)(given(studies())(lambda plan: _study_reads_back(plan, readers, monkeypatch)))()


# -- damage: the damaged run is named, every other run reads whole --------------------------


def _record_damage_study(path: Path) -> None:
    """Three runs; the second, the one damaged, has nested recorders and values of every kind."""
    collection = ExperimentCollection(path, quiet=True, record_context=False)
    for number in range(3):
        with collection.new_experiment(lr=0.1 * (number + 1), tag=f"run {number}", big=2**64) as experiment:
            model = experiment.sub_recorder(model="mlp", layers=[number, 2])
            for step in range(30):
                model.push(step=step, loss=1 / (step + 1), flag=step % 2 == 0, note=["a", 1, None, {"k": [1]}][step % 4],
                           when=datetime.datetime(2020, 1, 1, step % 24, tzinfo=datetime.timezone.utc), blob=b"\x00x")
            experiment.push(final=number, wide=2**60 + number)


@pytest.fixture(scope="module")
def damage_study(tmp_path_factory: pytest.TempPathFactory, loaded: Reader) -> tuple[Path, dict[str, Any]]:
    """The study damaged, and its views and records read before any damage."""
    path = tmp_path_factory.mktemp("damage") / "study"
    _record_damage_study(path)
    return path, loaded.read(path, records=True)


def _target(collection: Path) -> tuple[str, Path]:
    """The damaged run's id and records file."""
    folder = sorted((collection / "runs").iterdir())[1]
    return folder.name, next(folder.glob("records-*.parquet"))


def _records_by_run(read: dict[str, Any]) -> dict[int, list[str]]:
    """``collection.records`` as read, by experiment number: each record's items, sorted."""
    runs: dict[int, list[str]] = {}
    for record in read["python"]:
        runs.setdefault(record["experiment_number"], []).append(repr(sorted(map(repr, record.items()))))
    return {number: sorted(records) for number, records in runs.items()}


def assert_contained(before: dict[str, Any], read: dict[str, Any], target: str, names: tuple[str, ...], way: str) -> str:
    """The damage to run ``target`` is contained: every other run reads as before, through the
    views and (when read) ``collection.records``; the damaged run is listed as damaged with an
    error naming one of ``names``, or reads exactly as before. Returns what became of it."""
    assert "error" not in read, f"{way}: reading failed: {read['error']}"
    runs = {row[0]: dict(zip(read["experiments"][0], row)) for row in read["experiments"][1]}
    earlier = {row[0]: dict(zip(before["experiments"][0], row)) for row in before["experiments"][1]}
    assert runs.keys() == earlier.keys(), f"{way}: runs {sorted(runs)}, before {sorted(earlier)}"
    values, values_before = values_by_run(read), values_by_run(before)
    for run, info in earlier.items():
        if run != target:
            assert runs[run] == info, f"{way}: undamaged run {run} lists {runs[run]}, before {info}"
            assert values.get(run) == values_before[run], f"{way}: undamaged run {run} reads other records"
    damaged = runs[target]
    if damaged["status"] == "damaged":
        assert any(name in damaged["error"] for name in names), f"{way}: the error names none of {names}: {damaged['error']}"
        assert target not in values, f"{way}: the damaged run adds records"
        outcome = "damaged"
    else:
        assert damaged == earlier[target] and values.get(target) == values_before[target], (
            f"{way}: run {target} reads other values than recorded, and is not marked damaged: {damaged}")
        outcome = "unchanged"
    if "python" in read:
        number = damaged["experiment_number"]
        records, records_before = _records_by_run(read), _records_by_run(before)
        for run_number, found in records_before.items():
            if run_number != number:
                assert records.get(run_number) == found, f"{way}: collection.records of run {run_number} changed"
        assert records.get(number) in (None, records_before[number]), (
            f"{way}: collection.records of damaged run {target} reads other records than recorded")
    return outcome


def _damaged_copy(study: Path, where: Path, damage: Any) -> tuple[Path, str, Path]:
    """A copy of the study at ``where`` with ``damage(records_file, run_folder)`` done to its target run."""
    copy = where / "copy.collection"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(study.with_suffix(".collection"), copy)
    target, records = _target(copy)
    damage(records, records.parent)
    return copy.with_suffix(""), target, records


def _flip(path: Path, position: int, mask: int = 1) -> None:
    data = bytearray(path.read_bytes())
    data[position] ^= mask
    path.write_bytes(bytes(data))


def _footer_start(path: Path) -> int:
    data = path.read_bytes()
    return len(data) - 8 - int.from_bytes(data[-8:-4], "little")


def _in_tree(path: Path, text: bytes) -> int:
    """The position of ``text`` in the footer's own copy of the tree."""
    data = path.read_bytes()
    return data.index(text, data.index(TREE_KEY, _footer_start(path)))


def _arrow_copy_position(path: Path) -> int:
    """A position inside the base64 text of the Arrow schema's copy of the tree (its middle)."""
    data = path.read_bytes()
    start = data.index(ARROW_SCHEMA_KEY, _footer_start(path)) + len(ARROW_SCHEMA_KEY)
    return (start + len(data) - 8) // 2


def _swap_in_other_run(records: Path, folder: Path) -> None:
    other = sorted(folder.parent.iterdir())[0]
    shutil.copyfile(next(other.glob("records-*.parquet")), records)


def _lie_about_count(records: Path, folder: Path) -> None:
    info = json.loads((folder / "run.json").read_text())
    info["records_count"] += 5
    (folder / "run.json").write_text(json.dumps(info))


DAMAGES = {
    "a value in the footer's tree": lambda records, _: _flip(records, _in_tree(records, b'"run 1"') + 5),
    "a key in the footer's tree": lambda records, _: _flip(records, _in_tree(records, b'"layers"') + 2),
    "a count in the footer's tree": lambda records, _: _flip(records, _in_tree(records, b'"rows": 30') + 9),
    "the Arrow schema's copy of the tree": lambda records, _: _flip(records, _arrow_copy_position(records)),
    "the footer's length": lambda records, _: _flip(records, records.stat().st_size - 6),
    "a data page": lambda records, _: _flip(records, _footer_start(records) // 2, 0x10),
    "truncated to half": lambda records, _: records.write_bytes(records.read_bytes()[:records.stat().st_size // 2]),
    "truncated footer, magic kept": lambda records, _: records.write_bytes(records.read_bytes()[:-200] + b"PAR1"),
    "emptied": lambda records, _: records.write_bytes(b""),
    "deleted": lambda records, _: records.unlink(),
    "run.json deleted": lambda _, folder: (folder / "run.json").unlink(),
    "run.json not JSON": lambda _, folder: (folder / "run.json").write_text('{"id": '),
    "another run's records file swapped in": _swap_in_other_run,
    "run.json lying about its count": _lie_about_count,
}

#: The damages the fast subset tries; the others are marked slow.
FAST_DAMAGES = {"a value in the footer's tree", "the Arrow schema's copy of the tree", "a data page", "run.json lying about its count",
                "truncated footer, magic kept"}


@pytest.mark.parametrize("damage", [pytest.param(damage, marks=() if name in FAST_DAMAGES else pytest.mark.slow)
                                    for name, damage in DAMAGES.items()], ids=DAMAGES.keys())
def test_a_damaged_run_is_named_and_the_others_read_whole(damage_study, tmp_path, unloaded, loaded, damage):
    """Every damage: read without pyarrow first and with it, the other runs read as before and
    the damaged run is listed as damaged, its error naming the file, or reads as recorded."""
    study, before = damage_study
    copy, target, records = _damaged_copy(study, tmp_path, damage)
    names = (records.name, "run.json")
    outcomes = {assert_contained(before, reader.read(copy, records=records_too), target, names, way)
                for reader, records_too, way in ((unloaded, False, "without pyarrow first"),
                                                 (loaded, True, "with pyarrow"))}
    assert outcomes == {"damaged"}, f"the damage went unseen: {outcomes}"


def _flip_that_only_duckdb_refuses(records: Path, _: Path) -> None:
    """Flip the first bit of the footer that leaves it readable to the Python footer decoder
    and to pyarrow (every page checked) but not to DuckDB."""
    import duckdb

    from rigorous_recorder.errors import DamagedFileError
    from rigorous_recorder.store.parquet_footer import read_footer
    from rigorous_recorder.store.tree_file import check_every_page

    data = records.read_bytes()
    connection = duckdb.connect()
    for position in range(_footer_start(records), len(data) - 8):
        records.write_bytes(data[:position] + bytes([data[position] ^ 1]) + data[position + 1:])
        try:
            read_footer(records)
            check_every_page(records)
        except DamagedFileError:
            continue
        try:
            connection.execute("SELECT count(*) FROM parquet_metadata($1)", [str(records)]).fetchall()
        except duckdb.Error:
            return
    raise AssertionError("no flip of the footer is refused by DuckDB alone")


def test_a_footer_only_duckdb_refuses_damages_its_run_only(damage_study, tmp_path, unloaded):
    """A flipped bit in the footer's schema that only DuckDB reads: the run is damaged, the others answer."""
    study, before = damage_study
    copy, target, records = _damaged_copy(study, tmp_path, _flip_that_only_duckdb_refuses)
    assert assert_contained(before, unloaded.read(copy), target, (records.name,), "without pyarrow first") == "damaged"


def test_json_text_is_spelled_one_way(tmp_path):
    """``k~json`` holds one text per value, whether the value comes from a run's tree, a list
    column or a JSON column: ``WHERE "k~json" = ...`` and ``GROUP BY`` see equal values as equal."""
    collection = ExperimentCollection(tmp_path / "study", quiet=True)
    for _ in range(3):
        with collection.new_experiment() as experiment:
            experiment.push(k=1.5)
    with collection.new_experiment(k=["a", "b"]) as experiment:  # inherited: split in Python
        experiment.sub_recorder().push(o=0)
    with collection.new_experiment() as experiment:  # a VARCHAR[] column: DuckDB writes the JSON
        experiment.push(k=["a", "b"])
    with collection.new_experiment() as experiment:  # a JSON text column (the key drifted in the run)
        experiment.push(k=["a", "b"]).push(k="x")
    texts = collection.sql('SELECT DISTINCT "k~json" FROM records WHERE "k~json" LIKE \'[%\'').fetchall()
    assert len(texts) == 1, f"one list, several texts: {texts}"


def test_packing_keeps_the_columns_of_experiments(tmp_path, monkeypatch):
    """``experiments`` has the same columns before and after its runs are packed."""
    collection = ExperimentCollection(tmp_path / "study", quiet=True)
    with collection.new_experiment(tag=1) as experiment:
        experiment.sub_recorder(tag="model").push(o=0)
    columns = collection.sql("SELECT * FROM experiments").columns
    pack(tmp_path / "study", monkeypatch)
    assert ExperimentCollection(tmp_path / "study", quiet=True).sql("SELECT * FROM experiments").columns == columns


# -- while the runs still record ----------------------------------------------------------


def _active_study_reads_back(plan: list[dict[str, Any]], readers: tuple[Reader, Reader]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "study"
        recorded, experiments = record(path, plan, finish=False)
        try:
            for experiment in experiments:
                experiment.flush()
            for reader, way in zip(readers, ("another process", "another process with pyarrow")):
                read = reader.read(path, records=True)
                check_views(recorded, read, f"{way}, running")
                assert {row[7] for row in read["experiments"][1]} == {"running"}, f"{way}: {read['experiments'][1]}"
                compare(recorded, {record[ORDINAL]: record for record in read["python"]}, f"records in {way}, running")
            here = ExperimentCollection(path, quiet=True)
            relation = here.sql("SELECT * FROM records")
            rows = (relation.columns, relation.fetchall())
            columns = here.sql("SELECT * FROM columns")
            compare(recorded, flat(rows, (columns.columns, columns.fetchall())), "sql() in the recording process, running")
        finally:
            for experiment in experiments:
                experiment.finish()
        check_views(recorded, readers[0].read(path), "another process, finished")


def test_running_studies_read_back_as_recorded(unloaded, loaded):
    """Runs still recording (flushed): another process, with or without pyarrow, and the
    recording process itself read what was recorded so far; then finished, the same."""
    _examples(2)(given(studies())(lambda plan: _active_study_reads_back(plan, (unloaded, loaded))))()


@pytest.mark.slow
def test_many_running_studies_read_back_as_recorded(unloaded, loaded):
    """The same, over many more studies."""
    _examples(4)(given(studies())(lambda plan: _active_study_reads_back(plan, (unloaded, loaded))))()


# -- many runs of many layouts --------------------------------------------------------------

#: Runs of the many-layouts study, and the runs a pack waits for while it records: more than one pack's worth.
MANY_RUNS, PACK_AFTER = 12, 8


def _layout_plan(run: int) -> dict[str, Any]:
    """Run ``run`` of the many-layouts study: wide (200 keys a record), narrow (one key, many
    records) or one tiny recorder per episode (300 of them), its ``loss`` drifting by run."""
    loss = [1, 0.5, "high", [1.5], None, 2**62][run % 6]
    if run % 3 == 0:
        shape = {f"k{index}~{run % 5}": index * run for index in range(200)}
        recorders = [{"parent": -1, "data": {"kind": "wide"}, "shapes": [{**shape, "loss": loss}], "pushes": 3,
                      "late": {}}]
    elif run % 3 == 1:
        recorders = [{"parent": -1, "data": {"kind": "narrow"}, "shapes": [{"loss": loss}], "pushes": 200, "late": {}}]
    else:
        recorders = [{"parent": -1, "data": {"kind": "episodes"}, "shapes": [{}], "pushes": 0, "late": {}}]
        recorders += [{"parent": 0, "data": {"episode": episode, "Loss": loss}, "shapes": [{"reward": episode / 7}],
                       "pushes": 1, "late": {}} for episode in range(300)]
    return {"info": {"run": run, "lr": [0.1, 1, "x"][run % 3]}, "recorders": recorders}


@pytest.mark.slow
def test_many_runs_of_many_layouts_read_back_packed_and_not(tmp_path, fresh, unloaded, loaded, monkeypatch):
    """Runs wide, narrow and of thousands of tiny recorders, whose keys drift in type: the
    first ones packed by the finish of the last of them, read without pyarrow, with it and
    through ``records``, and the same without the catalog (every run read from its folder)."""
    path = tmp_path / "study"
    monkeypatch.setattr(catalog, "PACK_MIN_RUNS", PACK_AFTER)
    recorded, _ = record(path, [_layout_plan(run) for run in range(MANY_RUNS)])
    assert list((tmp_path / "study.collection" / "catalog").glob("pack-*.runs.json")), "nothing was packed"
    packed = unloaded.read(path)
    check_views(recorded, packed, "packed, without pyarrow first")
    with_pyarrow = loaded.read(path, records=True)
    check_views(recorded, with_pyarrow, "packed, with pyarrow")
    compare(recorded, {record[ORDINAL]: record for record in with_pyarrow["python"]}, "records, packed")
    shutil.rmtree(tmp_path / "study.collection" / "catalog")
    unpacked = fresh.read(path, recover=False)  # which never packs
    assert unpacked["modules"] == [], f"a fresh query of finished runs loaded {unpacked['modules']}"
    check_views(recorded, unpacked, "in folders, without pyarrow")
    assert_same_views(unpacked, packed, "packed")


def _rename_a_column(records: Path, _: Path) -> None:
    """Rename column ``final`` to ``fin4l`` in the Parquet schema of the footer (the tree, the
    Arrow schema and every page unchanged)."""
    data = records.read_bytes()
    position = data.index(b"final", _footer_start(records))
    assert position < data.index(TREE_KEY, _footer_start(records)), "not the Parquet schema's name"
    records.write_bytes(data[:position + 3] + b"4" + data[position + 4:])


def test_a_column_renamed_in_one_footer_damages_its_run_only(damage_study, tmp_path, unloaded, loaded):
    """One run's file names a column otherwise than its tree: that run is damaged, the others answer."""
    study, before = damage_study
    copy, target, records = _damaged_copy(study, tmp_path, _rename_a_column)
    for reader, way in ((unloaded, "without pyarrow first"), (loaded, "with pyarrow")):
        assert assert_contained(before, reader.read(copy), target, (records.name,), way) == "damaged"


#: Bytes of the damaged run's footer, and of its pages, that the flip sweep flips (one bit each).
FOOTER_FLIPS, PAGE_FLIPS = 12, 4


@pytest.mark.slow
def test_every_flip_of_a_footer_or_page_is_named_or_harmless(damage_study, tmp_path, unloaded, loaded, capsys):
    """Single-bit flips spread across the damaged run's footer and its pages, each
    read without pyarrow first and with it: the run is named damaged or reads as recorded, and
    the other runs read whole (flips only DuckDB refuses and renamed columns too)."""
    study, before = damage_study
    copy, target, records = _damaged_copy(study, tmp_path, lambda records, folder: None)
    data = records.read_bytes()
    start = _footer_start(records)
    positions = [*range(start, len(data), max(1, (len(data) - start) // FOOTER_FLIPS)),
                 *range(4, start, max(1, start // PAGE_FLIPS))]
    outcomes: Counter[str] = Counter()
    for position in positions:
        records.write_bytes(data[:position] + bytes([data[position] ^ 1]) + data[position + 1:])
        for reader, records_too, way in ((unloaded, False, "without pyarrow first"), (loaded, True, "with pyarrow")):
            where = f"{way}, bit 0 of byte {position} ({position - start} into the footer)"
            outcomes[assert_contained(before, reader.read(copy, records=records_too), target, (records.name,), where)] += 1
    with capsys.disabled():
        print(f"\nflips of {len(positions)} bytes of a records file: {dict(outcomes)}")
