"""The catalog under attack (issue #10): kill -9 while packing, every file outside the run
folders damaged every way, a records file with damaged data pages offered to the packer.

The trials live in tests/scripts/durability_trials.py, shared with benchmarks/durability.py.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from rigorous_recorder import ExperimentCollection
from rigorous_recorder.store import catalog

from .scripts import durability_trials as trials

#: Random kill moments are drawn from this seed, shown in every failure message.
SEED = int(os.environ.get("DURABILITY_SEED", random.randrange(10**6)))
#: Records per waiting run here (the benchmark packs more, to land more kills inside the writing).
WAITING_RECORDS = 2_000


@pytest.fixture(scope="module")
def waiting(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """63 finished runs outside every pack, and the number of their records."""
    path = tmp_path_factory.mktemp("waiting") / "study"
    return path, trials.waiting_template(path, records=WAITING_RECORDS)


@pytest.mark.slow
def test_kill_9_inside_the_finish_that_packs_loses_and_doubles_nothing(tmp_path, waiting):
    """The 64th finished run's finish() packs all 64: killed early, midway or late, every record
    of every run is there once, by SQL, len() and records alike."""
    template, records = waiting
    seconds = trials.pack_in_finish_seconds(template, tmp_path / "calibration")
    for index, fraction in enumerate((0.2, 0.6, random.Random(f"{SEED}-finish").uniform(0.0, 1.1))):
        trial = trials.pack_in_finish_kill_trial(template, tmp_path / str(index), records, fraction * seconds)
        assert trial.problems() == [], f"seed {SEED}, finish() took {seconds:.2f} s, {trial.moment}"
        assert trial.must_survive == records + 2_000


@pytest.mark.slow
def test_kill_9_inside_a_first_query_that_packs_loses_and_doubles_nothing(tmp_path, waiting):
    """A fresh process's first sql() packs 64 waiting runs: killed at any moment, nothing is
    lost or counted twice, and the next reader finishes the packing."""
    template, records = waiting
    path = tmp_path / "template" / "study"
    shutil.copytree(trials.collection_folder(template), trials.collection_folder(path))
    records += trials.waiting_template(path, runs=1, records=WAITING_RECORDS, first_run=trials.WAITING_RUNS)
    seconds = trials.first_query_seconds(path, tmp_path / "calibration")
    for index, fraction in enumerate((0.3, 0.7, random.Random(f"{SEED}-query").uniform(0.0, 1.1))):
        trial = trials.pack_in_query_kill_trial(path, tmp_path / str(index), records, fraction * seconds)
        assert trial.problems() == [], f"seed {SEED}, the first query took {seconds:.2f} s, {trial.moment}"
        assert trials.packing_phase(tmp_path / str(index) / "study") == trials.PACKED


#: Runs per pack in the collection damaged outside its run folders. The library packs 64; a pack of
#: 5 has the same files, and each of the ~70 damage cases reads every run of its copy several times.
DAMAGED_PACK_RUNS = 5


@pytest.fixture(scope="module")
def damage_outside_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """Every file kind outside the run folders x every damage kind: what each broke.

    As in benchmarks/durability.py's collection (66 runs, packs of 64): one pack, two finished
    runs and the killed one waiting, too few for the next pack even with the run each case adds.
    """
    folder = tmp_path_factory.mktemp("outside")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(catalog, "PACK_MIN_RUNS", DAMAGED_PACK_RUNS)
        trials.packed_template(folder / "template" / "study", runs=DAMAGED_PACK_RUNS + 2)
        return trials.collection_damage_matrix(folder / "template" / "study", folder / "cases")


#: The killed run of the template is recovered by an open through its active/ marker; without it,
#: by the first read that finds the run dead (which puts the marker back).
MARKER_LOST = "active/RUN: missing"


@pytest.mark.slow
def test_damage_outside_the_run_folders_changes_no_answer(damage_outside_runs):
    """collection.json, the locks, an active marker, a pack, its listing, a killed packer's
    temporary file, each damaged every way: the collection opens, lists every run, and every
    query answers as on the undamaged collection (a damaged pack falls back to the run folders)."""
    kinds = {label.split(": ")[0] for label in damage_outside_runs}
    assert {"catalog/pack-ID.parquet", "catalog/pack-ID.runs.json", "catalog/catalog.lock",
            "catalog/.pack-ID.parquet.RANDOM.tmp", "collection.json", "numbering.lock", "active/RUN"} <= kinds
    broken = [problem for label, problems in damage_outside_runs.items() for problem in problems
              if not label.startswith(MARKER_LOST)]
    assert broken == []


@pytest.mark.slow
def test_a_killed_run_whose_active_marker_is_lost_is_recovered_by_the_first_read(damage_outside_runs):
    """Without its active/ marker, a killed run is recovered when read: the same answers."""
    assert damage_outside_runs[MARKER_LOST] == []


def _damage_a_data_page(path: Path, column: str) -> None:
    """Overwrite 8 bytes inside ``column``'s data page (not its header): the file still reads
    without checks, only its page checksum tells the damage."""
    metadata = pq.ParquetFile(path).metadata.row_group(0)
    chunk = next(metadata.column(index) for index in range(metadata.num_columns)
                 if metadata.column(index).path_in_schema == column)
    end = (chunk.dictionary_page_offset or chunk.data_page_offset) + chunk.total_compressed_size
    middle = (chunk.data_page_offset + end) // 2
    data = bytearray(path.read_bytes())
    data[middle:middle + 8] = bytes(8)
    path.write_bytes(bytes(data))


def test_a_records_file_whose_pages_fail_their_checksums_is_never_packed(tmp_path, monkeypatch):
    """Values of a damaged data page (zstd keeps incompressible data raw, so it decodes) must not
    be copied into a pack, where fresh checksums would hide the damage from every reader."""
    monkeypatch.setattr(catalog, "PACK_MIN_RUNS", 3)
    collection = ExperimentCollection(tmp_path / "study", quiet=True, recover=False)  # no packing yet
    noise = random.Random(1)
    for run in range(3):
        with collection.new_experiment(run=run) as recorder:
            for step in range(2_000):
                recorder.push(step=step, noise=noise.random())
    damaged_id = collection.runs[-1]["id"]
    (records_file,) = (collection.path / "runs" / damaged_id).glob("records-*.parquet")
    _damage_a_data_page(records_file, "noise")
    pq.ParquetFile(records_file).read()  # the damage is only seen by the checksums
    with pytest.raises(OSError, match="CRC checksum verification failed"):
        pq.ParquetFile(records_file, page_checksum_verification=True).read()
    ExperimentCollection(tmp_path / "study", quiet=True).sql("SELECT 1").fetchall()  # packs
    packed = catalog.Catalog(collection.path).runs()
    assert len(packed) >= 2, "the two undamaged runs were not packed"
    assert damaged_id not in packed
