"""The catalog: finished runs gathered into packs read the same as in their folders, and a
pack that is stale, damaged or half-written never changes what a reader sees."""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import pytest

from rigorous_recorder import ExperimentCollection, Recorder
from rigorous_recorder.store import catalog

RUNS = 6
#: Finished runs that make a pack here (the library's 64 would need far bigger studies).
PACK_RUNS = 3
QUERIES = [
    "SELECT * EXCLUDE (experiment_start_time, experiment_end_time, experiment_duration) FROM records "
    "ORDER BY experiment_number, error_number, step NULLS FIRST, loss NULLS FIRST",
    "SELECT run_id, experiment_number, error_number, status, records, error, lr, model FROM experiments "
    "ORDER BY run_id",
    "SELECT name, key, part, source, type FROM columns ORDER BY name",
]


@pytest.fixture(autouse=True)
def few_runs_make_a_pack(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(catalog, "PACK_MIN_RUNS", PACK_RUNS)


def record_study(path: Path, runs: int = RUNS, steps: int = 5) -> Path:
    """Finished runs of two shapes, one failed; packing is held back until they exist."""
    collection = ExperimentCollection(path, quiet=True, recover=False)  # recover=False: no packing yet
    for number in range(runs):
        experiment = collection.new_experiment(lr=0.1 * (number + 1), model="mlp" if number % 2 else "cnn")
        train = Recorder(stage="train").set_parent(experiment.recorder)
        for step in range(steps):
            train.push(step=step, loss=1 / (step + 1 + number))
        if number % 3 == 2:
            experiment.recorder.push(note="a text", loss="diverged")  # another schema, a drifted value
        experiment.finish(ValueError("boom") if number == 1 else None)
    return collection.path


def answers(path: Path) -> list[list[tuple[Any, ...]]]:
    """What a reader of the collection at ``path`` sees, read by a fresh collection object."""
    collection = ExperimentCollection(path, quiet=True, recover=False)
    return [collection.sql(query).fetchall() for query in QUERIES] + [[tuple(sorted(run.items())) for run in collection.runs]]  # type: ignore[list-item]


def packs(path: Path) -> list[Path]:
    """The records files of the packs (each has three companions: runs, entries, lineage)."""
    return sorted(p for p in (path / "catalog").glob("pack-*.parquet") if p.name.count(".") == 1)


def pack_now(path: Path) -> None:
    ExperimentCollection(path, quiet=True).sql("SELECT 1").fetchall()


def listing(path: Path) -> str:
    return subprocess.run([sys.executable, "-m", "rigorous_recorder", "ls", str(path)], capture_output=True,
                          text=True, check=True).stdout


def test_packed_runs_read_as_their_folders(tmp_path: Path) -> None:
    path = record_study(tmp_path / "study")
    before, shown = answers(path), listing(path)
    pack_now(path)
    assert len(packs(path)) == 2  # one pack per schema
    assert answers(path) == before
    assert listing(path) == shown


def test_runs_whose_keys_came_in_another_order_share_a_pack(tmp_path: Path) -> None:
    collection = ExperimentCollection(tmp_path / "study", quiet=True, recover=False)
    for number in range(RUNS):
        experiment = collection.new_experiment(lr=number, model="mlp")
        for step in range(3):
            values = {"step": step, "loss": number + step / 10, "note": f"run {number}"}
            experiment.recorder.push(**dict(sorted(values.items(), reverse=number % 2 == 1)))
        experiment.finish()
    path = collection.path
    before = answers(path)
    pack_now(path)
    assert len(packs(path)) == 1
    for records_file in path.glob("runs/*/records-*.parquet"):
        records_file.unlink()  # read from the pack alone
    assert answers(path) == before


def test_a_pack_is_named_after_every_pack_there_whatever_the_clocks(tmp_path: Path) -> None:
    """A run is read from the newest pack holding it (the last by name): a host whose clock is
    behind another's still names its packs after theirs."""
    path = record_study(tmp_path / "study")
    pack_now(path)
    ahead = 10**19  # a pack of a host whose clock is far ahead
    for old in (path / "catalog").glob("pack-*"):
        stem = old.name.split(".")[0]
        old.rename(old.with_name(old.name.replace(stem, f"pack-{ahead + int(stem[5:25]) % 1000:020d}{stem[25:]}")))
    before = {p.name for p in packs(path)}
    collection = ExperimentCollection(path, quiet=True)
    run_id = collection.runs[0]["id"]
    with collection.resume(run_id) as experiment:  # its copy in the packs is stale now
        experiment.push(step=99, loss=0.0)
    record_study(tmp_path / "study", runs=PACK_RUNS)  # enough runs wait to pack again
    pack_now(path)
    newer = sorted({p.name for p in packs(path)} - before)
    assert newer and all(name > max(before) for name in newer)
    reader = ExperimentCollection(path, quiet=True, recover=False)
    assert reader.sql(f"SELECT count(*) FROM records WHERE run_id = '{run_id}'").fetchall() == [(6,)]


def test_records_are_read_from_the_pack(tmp_path: Path) -> None:
    path = record_study(tmp_path / "study")
    pack_now(path)
    for records_file in path.glob("runs/*/records-*.parquet"):
        records_file.write_bytes(b"")  # only the pack holds them now
    collection = ExperimentCollection(path, quiet=True, recover=False)
    assert collection.sql("SELECT count(*) FROM records").fetchall() == [(RUNS * 5 + 2,)]


def test_a_resumed_run_is_read_from_its_folder_once(tmp_path: Path) -> None:
    path = record_study(tmp_path / "study")
    pack_now(path)
    collection = ExperimentCollection(path, quiet=True)
    run_id = collection.runs[0]["id"]
    with collection.resume(run_id) as experiment:
        experiment.push(step=99, loss=0.0)
    count = ExperimentCollection(path, quiet=True, recover=False).sql(
        f"SELECT count(*), count(DISTINCT step) FROM records WHERE run_id = '{run_id}'").fetchall()
    assert count == [(6, 6)]
    total = ExperimentCollection(path, quiet=True, recover=False).sql("SELECT count(*) FROM records").fetchall()
    assert total == [(RUNS * 5 + 2 + 1,)]
    for number in range(3):  # three new runs wait: the next pack takes them and the resumed run
        with collection.new_experiment(lr=number) as experiment:
            experiment.push(step=0, loss=1.0)
    for records_file in path.glob("runs/*/records-*.parquet"):
        records_file.write_bytes(b"")  # every run is read from a pack now, the resumed one too
    reader = ExperimentCollection(path, quiet=True, recover=False)
    assert reader.sql("SELECT count(*) FROM records").fetchall() == [(RUNS * 5 + 2 + 1 + 3,)]


def test_a_deleted_run_leaves_the_view(tmp_path: Path) -> None:
    path = record_study(tmp_path / "study")
    pack_now(path)
    collection = ExperimentCollection(path, quiet=True)
    gone = collection.runs[-1]["id"]
    shutil.rmtree(path / "runs" / gone)
    reader = ExperimentCollection(path, quiet=True, recover=False)
    assert reader.sql(f"SELECT count(*) FROM records WHERE run_id = '{gone}'").fetchall() == [(0,)]
    assert gone not in [run["id"] for run in reader.runs]


@pytest.fixture(scope="module")
def bigger_study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[list[tuple[Any, ...]]]]:
    """An unpacked study of 2,000 steps per run, recorded once, and what a reader sees of it.

    A test packs a copy: a pack made before copying would be stale in the copy (run.json's inode
    is part of what a pack remembers of each run), so ignored whether damaged or not.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(catalog, "PACK_MIN_RUNS", PACK_RUNS)
        path = record_study(tmp_path_factory.mktemp("bigger") / "study", steps=2000)
        return path, answers(path)


@pytest.mark.parametrize("file", ["data", "runs", "entries", "lineage"])
@pytest.mark.parametrize("damage", ["garbage in the pages", "truncated", "emptied", "missing"])
def test_a_damaged_pack_is_ignored(tmp_path: Path, bigger_study, file: str, damage: str) -> None:
    template, before = bigger_study
    path = shutil.copytree(template, tmp_path / template.name)
    pack_now(path)
    assert len(packs(path)) == 2
    for data in packs(path):
        damaged = data if file == "data" else data.with_name(data.name.replace(
            ".parquet", ".runs.json" if file == "runs" else f".{file}.parquet"))
        if damage == "garbage in the pages":  # past the magic bytes, not the footer
            content = bytearray(damaged.read_bytes())
            content[100:164] = bytes(64)
            damaged.write_bytes(bytes(content))
        elif damage == "truncated":
            damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])
        elif damage == "emptied":
            damaged.write_bytes(b"")
        else:
            damaged.unlink()
    assert answers(path) == before


def test_a_pack_unreadable_for_a_moment_is_read_once_it_can_be(tmp_path: Path) -> None:
    path = record_study(tmp_path / "study")
    pack_now(path)
    shelf = catalog.Catalog(path)
    everything = set(shelf.runs())
    data = packs(path)[0]
    content = data.read_bytes()
    data.unlink()
    data.mkdir()  # open() fails with an OSError, as with too many open files
    missing = everything - set(shelf.runs(queryable=True))
    assert missing  # that pack's runs are read from their folders meanwhile
    data.rmdir()
    data.write_bytes(content)
    assert set(shelf.runs(queryable=True)) == everything


@pytest.mark.slow
def test_packers_killed_midway_lose_and_double_nothing(tmp_path: Path) -> None:
    path = record_study(tmp_path / "study", runs=12)
    before = answers(path)
    script = ("import sys\nfrom rigorous_recorder import ExperimentCollection\nfrom rigorous_recorder.store import catalog\n"
              "import duckdb, filelock, pyarrow.parquet\ncatalog.PACK_MIN_RUNS = 3\nprint('ready', flush=True)\n"
              "ExperimentCollection(sys.argv[1], quiet=True).sql('SELECT 1').fetchall()\n")
    randomness = random.Random(7)
    left = set()  # what the killed packers left: the kills must land at different moments
    for _ in range(8):
        shutil.rmtree(path / "catalog", ignore_errors=True)
        process = subprocess.Popen([sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE)
        assert process.stdout is not None and process.stdout.readline() == b"ready\n"
        time.sleep(randomness.uniform(0.0, 0.4))
        process.send_signal(signal.SIGKILL)
        process.wait()
        left.add(len(packs(path)) if (path / "catalog").exists() else -1)
        assert answers(path) == before
    assert len(left) >= 2, left
    pack_now(path)  # a later packer finishes the work and clears what a killed one left
    assert not [p for p in (path / "catalog").iterdir() if p.name.endswith(".tmp")]
    assert answers(path) == before


def test_packs_of_an_earlier_format_are_removed_and_their_runs_packed_again(tmp_path: Path) -> None:
    path = record_study(tmp_path / "study")
    before = answers(path)
    (path / "catalog").mkdir()
    old = ["pack-00000000000000000001-0123abcd.parquet", "pack-00000000000000000001-0123abcd.runs.parquet"]
    for name in old:
        (path / "catalog" / name).write_bytes(b"PAR1 an earlier format's pack PAR1")
    pack_now(path)
    assert not [name for name in old if (path / "catalog" / name).exists()]
    assert len(packs(path)) == 2
    assert answers(path) == before


def test_packs_of_the_format_before_are_removed_and_their_runs_packed_again(tmp_path: Path) -> None:
    path = record_study(tmp_path / "study")
    before = answers(path)
    pack_now(path)
    old = packs(path)
    for data in old:  # whole listings, of the format before this one (whose files list no layout)
        runs = data.with_name(data.name.replace(".parquet", ".runs.json"))
        listed = json.loads(runs.read_text().partition("\n")[2])
        text = json.dumps({**listed, "format": listed["format"] - 1})
        runs.write_text(f"{zlib.crc32(text.encode()):08x}\n{text}")
    assert answers(path) == before  # read in place meanwhile
    pack_now(path)
    assert not [p for p in (path / "catalog").iterdir() if p.name.split(".")[0] in {data.stem for data in old}]
    assert len(packs(path)) == 2
    assert answers(path) == before


def test_a_fresh_reader_of_packed_runs_loads_no_pyarrow(tmp_path: Path) -> None:
    """The packer remembers the pages it wrote as checked, and each pack file lists its layout:
    a later process reads packs by their footers, as it reads runs' records files, and loads what
    a fresh query of the runs in place loads ([] with DuckDB 2; DuckDB 1's floors, with pandas
    installed, load numpy and pyarrow for any query)."""
    script = ("import sys\nfrom rigorous_recorder import ExperimentCollection\n"
              "collection = ExperimentCollection(sys.argv[1], quiet=True, recover=sys.argv[2] == 'recover')\n"
              f"print(repr([collection.sql(query).fetchall() for query in {QUERIES!r}]))\n"
              "print(sorted(name for name in ('pyarrow', 'numpy') if name in sys.modules))\n")

    def fresh_query(recover: str = "") -> list[str]:
        return subprocess.run([sys.executable, "-I", "-c", script, str(path), recover], capture_output=True, text=True,
                              check=True).stdout.splitlines()

    path = record_study(tmp_path / "study")
    fresh_query("recover")  # checks every records file's pages once, and remembers them (too few runs to pack)
    in_place = fresh_query()[1]
    pack_now(path)
    before = answers(path)
    for records_file in path.glob("runs/*/records-*.parquet"):
        records_file.unlink()  # read from the packs alone
    shown, loaded = fresh_query()
    assert shown == repr(before[:len(QUERIES)])
    assert loaded == in_place


def test_two_packers_at_once_count_each_run_once(tmp_path: Path) -> None:
    path = record_study(tmp_path / "study", runs=12)
    script = ("import sys\nfrom rigorous_recorder import ExperimentCollection\nfrom rigorous_recorder.store import catalog\n"
              "catalog.PACK_MIN_RUNS = 3\nExperimentCollection(sys.argv[1], quiet=True).sql('SELECT 1').fetchall()\n")
    processes = [subprocess.Popen([sys.executable, "-c", script, str(path)]) for _ in range(2)]
    assert [process.wait() for process in processes] == [0, 0]
    reader = ExperimentCollection(path, quiet=True, recover=False)
    assert reader.sql("SELECT count(*), count(DISTINCT run_id) FROM records").fetchall() == [(12 * 5 + 4, 12)]


def test_a_reader_that_must_not_write_packs_nothing(tmp_path: Path) -> None:
    path = record_study(tmp_path / "study")
    ExperimentCollection(path, quiet=True, recover=False).sql("SELECT 1").fetchall()
    assert not (path / "catalog").exists()


@pytest.mark.slow
def test_a_reader_loops_while_sixteen_writers_finish_and_pack(tmp_path: Path) -> None:
    path = tmp_path / "study"
    ExperimentCollection(path, quiet=True)
    writer = ("import sys\nfrom rigorous_recorder import ExperimentCollection\nfrom rigorous_recorder.store import catalog\n"
              "catalog.PACK_MIN_RUNS = 3\ncollection = ExperimentCollection(sys.argv[1], quiet=True)\n"
              "for run in range(4):\n"
              "    with collection.new_experiment(writer=int(sys.argv[2]), run=run) as experiment:\n"
              "        for step in range(50):\n"
              "            experiment.push(step=step, loss=step / 50)\n")
    writers = [subprocess.Popen([sys.executable, "-c", writer, str(path), str(index)]) for index in range(16)]
    reader = ExperimentCollection(path, quiet=True, recover=False)
    seen = []
    while any(process.poll() is None for process in writers):
        count, runs = reader.sql("SELECT count(*), count(DISTINCT run_id) FROM records WHERE status = 'ok'").fetchall()[0]
        assert count == 50 * runs  # a finished run is there whole or not at all
        assert len(reader.records) >= count and len(reader.runs) >= runs
        seen.append(count)
    assert [process.returncode for process in writers] == [0] * 16
    final = ExperimentCollection(path, quiet=True, recover=False)
    assert final.sql("SELECT count(*), count(DISTINCT run_id) FROM records").fetchall() == [(16 * 4 * 50, 64)]
    assert len(final.records) == 16 * 4 * 50
    assert packs(final.path), "the writers packed their finished runs"
    assert seen == sorted(seen)  # what a reader counts never goes back


def record_wide_study(path: Path, runs: int, keys: int = 400, records: int = 600,
                      expect: bool = True) -> list[tuple[Any, ...]]:
    """Finished runs of ``records`` records (at least ``keys``), each holding ``step`` and one of
    ``keys`` keys (ints, floats, texts or bools by key), in a shuffled order, the same in every
    run (one layout) but the last. Returns every record as (experiment_number, step, each key's value)
    (``expect``; else nothing)."""
    collection = ExperimentCollection(path, quiet=True, recover=False)  # recover=False: no packing yet
    expected = []
    for number in range(runs):
        order = list(range(keys))
        random.Random(5 if number < runs - 1 else 6).shuffle(order)
        with collection.new_experiment(run=number) as experiment_recorder:
            recorder = Recorder(model="wide").set_parent(experiment_recorder)
            for step in range(records):
                key = order[step % keys]
                value = [step * 1000 + number, (step + number) / 7, f"run {number} step {step}", step % 3 == 0][key % 4]
                recorder.push({"step": step, f"k{key}": value})
                if expect:
                    expected.append((number + 1, step, *(value if each == key else None for each in range(keys))))
    return expected


def wide_records(path: Path, keys: int = 400) -> list[tuple[Any, ...]]:
    columns = ", ".join(f"k{key}" for key in range(keys))
    return ExperimentCollection(path, quiet=True, recover=False).sql(
        f"SELECT experiment_number, step, {columns} FROM records ORDER BY experiment_number, step").fetchall()


@pytest.fixture(scope="module")
def wide_study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[Any, ...]]]:
    """Six unpacked runs of 400 keys (:func:`record_wide_study`), read back whole from their
    folders, recorded once: each test packs a copy."""
    path = tmp_path_factory.mktemp("wide") / "study"
    expected = record_wide_study(path, runs=6)
    assert wide_records(path.with_suffix(".collection")) == expected
    return path.with_suffix(".collection"), expected


@pytest.mark.parametrize("limits", ["the library's", "a row group a run, two a pack"])
def test_wide_sparse_runs_are_packed_and_read_back_value_for_value(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  wide_study, limits: str) -> None:
    """Runs of 400 keys, one in each record, packed (their columns held as pieces, not as
    400 x 600 cells each): read from the packs alone, every value comes back in its place."""
    template, expected = wide_study
    path = shutil.copytree(template, tmp_path / template.name)
    if limits != "the library's":  # a run costs ~50,000 cells (~1,200 pieces), the pack 404 columns
        monkeypatch.setattr(catalog, "PACK_CELLS", 2 * 75_000)
        monkeypatch.setattr(catalog, "PACK_COLUMN_CHUNKS", 1_000)
    pack_now(path)
    import pyarrow.parquet as pq

    row_groups = [pq.ParquetFile(pack).metadata.num_row_groups for pack in packs(path)]
    if limits == "the library's":
        assert row_groups == [1]  # one layout: the last run's keys came in another order, its columns are the same
    else:
        assert row_groups == [2, 2, 2]  # six runs, a row group each, two a pack
    for records_file in path.glob("runs/*/records-*.parquet"):
        records_file.write_bytes(b"")  # only the packs hold them now
    assert wide_records(path) == expected


def test_a_run_costing_more_than_the_packer_may_hold_is_read_in_place(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A run whose records would cost more cells than half of PACK_CELLS is left out of packs;
    the others are packed, and all read back the same."""
    expected = record_wide_study(tmp_path / "study", runs=4, keys=40, records=200)
    path = tmp_path / "study.collection"
    big = ExperimentCollection(path, quiet=True, recover=False)
    with big.new_experiment(run=4) as experiment_recorder:
        for step in range(6000):
            experiment_recorder.push(step=step, k0=step, k1=float(step), k2="x", k3=True)
            expected.append((5, step, step, float(step), "x", True, *[None] * 36))
    monkeypatch.setattr(catalog, "PACK_CELLS", 2 * 20_000)  # the small runs cost ~9,000 cells, the big one ~42,000
    pack_now(path)
    packed = catalog.Catalog(path).runs()
    assert len(packed) == 4 and all(run.info["records_count"] == 200 for run in packed.values())
    assert wide_records(path, keys=40) == expected


#: A fresh process packs the collection given and prints the peak RSS growth while packing.
_PACK_PEAK = """
import json, sys
import duckdb, filelock, pyarrow, pyarrow.compute, pyarrow.parquet
from rigorous_recorder import ExperimentCollection
from rigorous_recorder.store import catalog

def status(key):
    with open("/proc/self/status") as lines:
        return next(int(line.split()[1]) * 1024 for line in lines if line.startswith(key))

catalog.PACK_MIN_RUNS = int(sys.argv[2])
collection = ExperimentCollection(sys.argv[1], quiet=True)
before = status("VmRSS:")
with open("/proc/self/clear_refs", "w") as clear_refs:
    clear_refs.write("5")  # VmHWM starts again from now
print(json.dumps({"packed": collection._pack(), "peak_growth": status("VmHWM:") - before}))
"""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's /proc/self/clear_refs")
def test_packing_wide_sparse_runs_takes_what_the_packer_may_hold_not_runs_x_keys_x_records(tmp_path: Path) -> None:
    """Twelve runs of issue #13's sparse shape (2,000 keys, 2,000 records of one key each, one
    layout): a fresh process packs them all under 100 MB of peak growth (~50-70 MB measured;
    holding each run whole took ~29 MB a run: ~350 MB here, ~1.8 GB for 64 runs)."""
    runs = 12
    record_wide_study(tmp_path / "study", runs=runs + 1, keys=2_000, records=2_000, expect=False)
    result = subprocess.run([sys.executable, "-c", _PACK_PEAK, str(tmp_path / "study"), str(runs)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    measured = json.loads(result.stdout)
    assert measured["packed"] is True and len(catalog.Catalog(tmp_path / "study.collection").runs()) == runs + 1
    assert measured["peak_growth"] < 100e6, f"{measured['peak_growth'] / 1e6:.0f} MB"


@pytest.mark.parametrize("lie", ["count", "other run's file"])
def test_a_run_whose_files_disagree_is_never_packed(tmp_path: Path, lie: str) -> None:
    """A run.json that lies about its count, or a records file copied from another run: the
    packer leaves the run out (a pack would hide the disagreement), and it is read as damaged."""
    path = record_study(tmp_path / "study")
    folders = sorted((path / "runs").iterdir())
    if lie == "count":
        info = json.loads((folders[1] / "run.json").read_text())
        info["records_count"] += 1
        (folders[1] / "run.json").write_text(json.dumps(info))
    else:
        shutil.copyfile(next(folders[0].glob("records-*.parquet")), next(folders[1].glob("records-*.parquet")))
    pack_now(path)
    assert packs(path), "nothing was packed"
    packed = (path / "catalog").glob("pack-*.runs.json")
    assert not any(folders[1].name in listing_file.read_text() for listing_file in packed)
    statuses = ExperimentCollection(path, quiet=True).sql("SELECT run_id, status FROM experiments").fetchall()
    assert dict(statuses)[folders[1].name] == "damaged"
    assert {status for run, status in statuses if run != folders[1].name} <= {"ok", "error"}
