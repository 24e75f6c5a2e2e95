"""Finished runs are read from their footers, decoded in Python without pyarrow: a fresh process
that only queries sees the same views as a process that loaded pyarrow, for every kind of value,
for files of several row groups, and for files written before trees listed their columns; the
decoder reads what pyarrow reads, and names a damaged file instead of misreading it."""

from __future__ import annotations

import datetime
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rigorous_recorder import ExperimentCollection
from rigorous_recorder.errors import DamagedFileError
from rigorous_recorder.store.footer import TREE_KEY
from rigorous_recorder.store.parquet_footer import read_footer


#: Dumps the views of the collection at argv[1] as JSON lines (columns, repr of each row; the big
#: run's records summed up), then the heavy modules the process loaded.
DUMP = """
import json, sys
from rigorous_recorder import ExperimentCollection
collection = ExperimentCollection(sys.argv[1], quiet=True)
for query in ("SELECT * FROM records WHERE experiment_number < 3", "SELECT * FROM experiments", "SELECT * FROM columns",
              'SELECT count(*), sum(big), list("big~json") FILTER (WHERE "big~json" IS NOT NULL) FROM records'):
    relation = collection.sql(query)
    print(json.dumps([relation.columns, sorted(map(repr, relation.fetchall()))]))
print(json.dumps(sorted(name for name in ("pyarrow", "numpy", "pandas") if name in sys.modules)))
"""

#: Rows of the run whose last row group alone holds a wide int, and the rows of a row group
#: of its file (rewritten so: a run writes 2**17 rows a group).
MANY, GROUP_ROWS = 300, 64


def _record(path: Path) -> None:
    collection = ExperimentCollection(path, quiet=True)
    when = datetime.datetime(2020, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    with collection.new_experiment(lr=0.1, tag="a") as run:
        model = run.sub_recorder(model="mlp")
        for step in range(20):
            model.push(step=step, loss=step / 3, when=when, day=when.date(), blob=b"\x00x", flag=step % 2 == 0,
                       ints=[step, -step], nested=[[step / 2]], mixed=["a", 1, {"k": [1]}, None][step % 4],
                       nan=float("nan"))
    with collection.new_experiment(lr=2, tag=None) as run:
        model = run.sub_recorder(model=7)
        for step in range(5):
            model.push(step=step + 0.5, loss=step, mixed=2**70, ints=[2**60], when=str(step), big=0.5)
    with collection.new_experiment(lr=0.01) as run:
        run.push(step=0, loss=[1.0])
        for step in range(MANY):  # the last row group alone holds an int beyond 2**53 (big is DOUBLE)
            run.push(big=step if step < MANY - 1 else 2**60 + 1)


def _dump(path: Path, first: str = "") -> tuple[list, list[str]]:
    """The views of the collection at ``path`` from a fresh process that runs ``first`` first,
    and the heavy modules it loaded."""
    result = subprocess.run([sys.executable, "-c", first + DUMP, str(path)], capture_output=True, text=True,
                            check=True)
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    return lines[:-1], lines[-1]


def _rewritten(records: Path, tree_change=lambda tree: None) -> None:
    """Rewrite a records file in row groups of :data:`GROUP_ROWS` rows, its tree changed by ``tree_change``."""
    table = pq.read_table(records)
    tree = json.loads(table.schema.metadata[TREE_KEY])
    tree_change(tree)
    table = table.replace_schema_metadata({**table.schema.metadata, TREE_KEY: json.dumps(tree).encode()})
    pq.write_table(table, records, row_group_size=GROUP_ROWS, write_page_checksum=True)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("footer") / "study"
    _record(path)
    last = sorted(path.with_suffix(".collection").glob("runs/*/records-*.parquet"))[-1]
    _rewritten(last)
    assert pq.read_metadata(last).num_row_groups > 2
    ExperimentCollection(path, quiet=True).sql("SELECT 1 FROM records").fetchall()  # its pages checked once
    return path


def test_a_fresh_query_loads_no_pyarrow_and_sees_what_a_pyarrow_process_sees(recorded):
    fresh, loaded = _dump(recorded)
    with_pyarrow, loaded_first = _dump(recorded, first="import pyarrow\n")
    assert loaded == [] and "pyarrow" in loaded_first
    assert fresh == with_pyarrow
    exact = ExperimentCollection(recorded, quiet=True).sql(
        'SELECT max(big), list("big~json") FILTER (WHERE "big~json" IS NOT NULL) FROM records').fetchall()
    assert exact == [(MANY - 2, [str(2**60 + 1)])]


def test_files_written_before_trees_listed_their_columns_read_the_same(recorded, tmp_path):
    older = tmp_path / "older.collection"
    shutil.copytree(recorded.with_suffix(".collection"), older)
    files = sorted(older.glob("runs/*/records-*.parquet"))
    for records in files:
        _rewritten(records, lambda tree: tree.pop("columns"))  # as versions before the layout wrote it
    assert all("columns" not in json.loads(pq.read_schema(records).metadata[TREE_KEY]) for records in files)
    assert _dump(older)[0] == _dump(recorded)[0]


def test_a_damaged_footer_damages_its_run_only(recorded, tmp_path):
    copy = tmp_path / "copy.collection"
    shutil.copytree(recorded.with_suffix(".collection"), copy)
    first = sorted(copy.glob("runs/*/records-*.parquet"))[0]
    first.write_bytes(first.read_bytes()[:-40] + b"\x00" * 36 + b"PAR1")  # the footer's end overwritten
    collection = ExperimentCollection(copy, quiet=True)
    statuses = collection.sql("SELECT experiment_number, status, error FROM experiments ORDER BY 1").fetchall()
    assert [status for _, status, _ in statuses] == ["damaged", "ok", "ok"]
    assert first.name in statuses[0][2]
    assert collection.sql("SELECT count(*) FROM records").fetchall() == [(5 + 1 + MANY,)]


def test_a_tree_entry_of_the_wrong_shape_damages_its_run_only(recorded, tmp_path):
    copy = tmp_path / "shape.collection"
    shutil.copytree(recorded.with_suffix(".collection"), copy)
    first = sorted(copy.glob("runs/*/records-*.parquet"))[0]

    def count_as_text(tree: dict) -> None:
        entry = next(entry for entry in tree["recorders"] if entry["rows"])
        entry["rows"] = str(entry["rows"])

    _rewritten(first, count_as_text)  # both copies of the tree, and every page, whole
    collection = ExperimentCollection(copy, quiet=True)
    statuses = collection.sql("SELECT experiment_number, status, error FROM experiments ORDER BY 1").fetchall()
    assert [status for _, status, _ in statuses] == ["damaged", "ok", "ok"]
    assert first.name in statuses[0][2] and "tree metadata is damaged" in statuses[0][2]
    assert collection.sql("SELECT count(*) FROM records").fetchall() == [(5 + 1 + MANY,)]


def _as_pyarrow_reads(path: Path) -> tuple[list, dict, list]:
    """What pyarrow reads of the footer at ``path``, as :func:`read_footer` gives it."""
    metadata = pq.read_metadata(path)
    groups = []
    for index in range(metadata.num_row_groups):
        group = metadata.row_group(index)
        chunks = []
        for column in range(group.num_columns):
            statistics = group.column(column).statistics
            ints = statistics is not None and statistics.has_min_max and statistics.physical_type in ("INT32", "INT64")
            chunks.append((statistics.null_count if statistics is not None and statistics.has_null_count else None,
                           statistics.min_raw if ints else None, statistics.max_raw if ints else None))
        groups.append((group.num_rows, chunks))
    return metadata.schema.to_arrow_schema().names, dict(metadata.metadata or {}), groups


def _decoded(path: Path) -> tuple[list, dict, list]:
    footer = read_footer(path)
    return footer.names, footer.metadata, [(rows, [(chunk.nulls, chunk.least, chunk.greatest) for chunk in chunks])
                             for rows, chunks in footer.row_groups]


def test_the_decoder_reads_what_pyarrow_reads(recorded, tmp_path):
    files = sorted(recorded.with_suffix(".collection").glob("runs/*/records-*.parquet"))
    wide = tmp_path / "wide.parquet"  # a footer past the decoder's first read
    pq.write_table(pa.table({f"key {index}": [index, None, -2**63] for index in range(600)}), wide)
    empty = tmp_path / "empty.parquet"  # no row group
    pq.ParquetWriter(empty, pa.schema({"x": pa.int64()})).close()
    without = tmp_path / "without.parquet"  # no statistics
    pq.write_table(pa.table({"x": [1, 2], "y": ["a", None]}), without, write_statistics=False)
    nested = tmp_path / "nested.parquet"  # top-level names past nested columns
    pq.write_table(pa.table({"a": [[1, 2]], "b c": [{"x": 1, "y": [[2]]}], "d": [1.0]}), nested)
    assert wide.stat().st_size > 64 * 1024 and pq.read_metadata(empty).num_row_groups == 0
    for path in [*files, wide, empty, without, nested]:
        assert _decoded(path) == _as_pyarrow_reads(path), path
    assert _decoded(wide)[2][0][1][5] == (1, -2**63, 5)
    assert _decoded(nested)[0] == ["a", "b c", "d"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_damaged_footer_is_named_never_misread(recorded, tmp_path, data):
    original = sorted(recorded.with_suffix(".collection").glob("runs/*/records-*.parquet"))[0].read_bytes()
    length = int.from_bytes(original[-8:-4], "little")
    damaged = bytearray(original)
    if data.draw(st.booleans(), label="truncated"):
        damaged = damaged[:data.draw(st.integers(0, len(original) - 1), label="kept")]
    else:
        for _ in range(data.draw(st.integers(1, 8), label="flips")):
            at = data.draw(st.integers(len(original) - 8 - length, len(original) - 1), label="at")
            damaged[at] ^= data.draw(st.integers(1, 255), label="mask")
    path = tmp_path / "damaged.parquet"
    path.write_bytes(bytes(damaged))
    try:
        read_footer(path)
    except DamagedFileError as error:
        assert str(path) in str(error)
    else:
        assert len(damaged) == len(original)  # a flip in a field the decoder skips or a value it takes as is


@pytest.mark.parametrize("footer", [b"\x0c" * 100_000, b"\x19\xfc" + b"\xff" * 20, b"\x15" + b"\x80" * 20, b""])
def test_a_hostile_footer_is_damage(tmp_path, footer):
    path = tmp_path / "hostile.parquet"  # nested structs past any stack, a list of 2**60 items, a 20-byte varint
    path.write_bytes(b"PAR1" + footer + len(footer).to_bytes(4, "little") + b"PAR1")
    with pytest.raises(DamagedFileError, match="hostile.parquet"):
        read_footer(path)
