"""Benchmark of the core recorder: push speed, memory per record, analysis.

Workload (the seed README's use case): 3 experiments x 10 episodes x 100,000
steps of ``push(x=random(), y=random())`` into standalone recorders
``root -> Recorder(experiment=e) -> Recorder(episode=k)``, then the average of
x over episode 2 read back from ``root.all_records``.

Each contender runs in its own fresh process (see ``_harness.py``):

- bare floor: ``push(**kw)`` appending to a ``defaultdict(list)`` per episode
- ours: ``Recorder.push``, ``add()`` + ``add({...})`` + ``commit()``, and a
  10-key ``push`` (against a 10-key bare floor); ``push`` once more on the
  pure-Python loops, as installed where no C compiler was found
- rigorous-recorder 1.4.4 in its own venv, same shapes at a smaller size
  (it is ~100x slower), plus its separate ``RecordKeeper`` class

Sparse records (issue #13): 2,000 distinct keys, 20,000 records holding one
key each, pushed into a standalone recorder and into a run of a collection;
the peak RSS growth while recording, then while finishing (``save_to`` /
``finish()``), each in a fresh process; then reading the records back
(``Recorder.load_from`` / ``collection.records``, and the run through SQL),
each in a fresh process. Then 64 finished runs of that shape (2,000 records
each) packed into the catalog in a fresh process: the peak RSS growth of packing.

Run: ``.venv/bin/python benchmarks/core.py [--quick] [--repeats N] [--only dense|sparse]``
"""

from __future__ import annotations

import argparse
import os
import random as random_module
import shutil
import sys
import tempfile
from collections import defaultdict
from random import random
from time import perf_counter, process_time
from types import SimpleNamespace

import _harness as H

EXPERIMENTS = 3
EPISODES = 10
ANALYSED_EPISODE = 2
TEN_KEYS = ("x", "y", "k2", "k3", "k4", "k5", "k6", "k7", "k8", "k9")


# --------------------------------------------------------------------------
# the timed loops: one per record shape, identical for every contender
# --------------------------------------------------------------------------

def push_xy(episode, columns: list[list[float]]) -> tuple[float, float]:
    """Time ``episode.push(x=..., y=...)`` over pre-generated values: (wall, CPU) seconds."""
    xs, ys = columns
    start, cpu = perf_counter(), process_time()
    for x, y in zip(xs, ys):
        episode.push(x=x, y=y)
    return perf_counter() - start, process_time() - cpu


def add_commit_xy(episode, columns: list[list[float]]) -> tuple[float, float]:
    """Time ``add(x=...)``, ``add({"y": ...})``, ``commit()`` per record: (wall, CPU) seconds."""
    xs, ys = columns
    start, cpu = perf_counter(), process_time()
    for x, y in zip(xs, ys):
        episode.add(x=x)
        episode.add({"y": y})
        episode.commit()
    return perf_counter() - start, process_time() - cpu


def push_ten(episode, columns: list[list[float]]) -> tuple[float, float]:
    """Time ``episode.push`` of 10 float keys over pre-generated values: (wall, CPU) seconds."""
    start, cpu = perf_counter(), process_time()
    for x, y, k2, k3, k4, k5, k6, k7, k8, k9 in zip(*columns):
        episode.push(x=x, y=y, k2=k2, k3=k3, k4=k4, k5=k5, k6=k6, k7=k7, k8=k8, k9=k9)
    return perf_counter() - start, process_time() - cpu


SHAPES = {"push": (push_xy, 2), "add_commit": (add_commit_xy, 2), "push10": (push_ten, 10)}


# --------------------------------------------------------------------------
# contenders: how to make an episode recorder and how to analyse the result
# --------------------------------------------------------------------------

def bare_episode() -> SimpleNamespace:
    """The floor: columns in a defaultdict(list) and a push that appends."""
    columns = defaultdict(list)

    def push(**kw):
        for k, v in kw.items():
            columns[k].append(v)

    return SimpleNamespace(push=push, columns=columns)


class BareTree:
    """Bare-floor hierarchy: a list of (episode number, episode) pairs."""

    def __init__(self) -> None:
        self.episodes: list[tuple[int, SimpleNamespace]] = []

    def new_episode(self, experiment: int, episode: int) -> SimpleNamespace:
        """A fresh bare episode, remembered with its episode number."""
        recorder = bare_episode()
        self.episodes.append((episode, recorder))
        return recorder

    def average_x(self, episode: int) -> tuple[float, int]:
        """Average x over one episode number, straight from the columns."""
        total, count = 0.0, 0
        for number, recorder in self.episodes:
            if number == episode:
                for x in recorder.columns["x"]:
                    total += x
                    count += 1
        return total / count, count


class LibraryTree:
    """The library's hierarchy: root -> experiment -> episode recorders."""

    def __init__(self, class_name: str) -> None:
        import rigorous_recorder
        try:  # 2.x loads pyarrow at a recorder's first batch: load it now, so neither time nor memory counts it
            import rigorous_recorder._columns  # noqa: F401
        except ImportError:  # 1.4.4
            pass
        self.recorder_class = getattr(rigorous_recorder, class_name)
        self.root = self.recorder_class()
        self.experiments: dict[int, object] = {}

    def new_episode(self, experiment: int, episode: int):
        """A fresh episode recorder under its experiment's recorder."""
        if experiment not in self.experiments:
            recorder = self.recorder_class(experiment=experiment).set_parent(self.root)
            self.experiments[experiment] = recorder
        return self.recorder_class(episode=episode).set_parent(self.experiments[experiment])

    def average_x(self, episode: int) -> tuple[float, int]:
        """Average x over one episode number, read from ``root.all_records``."""
        return average_x_of(self.root.all_records, episode)


class CollectionTree:
    """The library's hierarchy inside an ExperimentCollection: one run per experiment, its
    episode recorders below the run's experiment recorder, every record written to disk."""

    def __init__(self) -> None:
        import tempfile

        import rigorous_recorder._columns  # noqa: F401 - pyarrow, loaded before memory is measured
        from rigorous_recorder import ExperimentCollection, Recorder
        self.recorder_class = Recorder
        self.folder = tempfile.TemporaryDirectory()
        self.collection = ExperimentCollection(f"{self.folder.name}/study", quiet=True)
        self.experiments: dict[int, object] = {}

    def new_episode(self, experiment: int, episode: int):
        """A fresh episode recorder under its experiment's run."""
        if experiment not in self.experiments:
            self.experiments[experiment] = self.collection.new_experiment(experiment=experiment)
        return self.recorder_class(episode=episode).set_parent(self.experiments[experiment].recorder)

    def average_x(self, episode: int) -> tuple[float, int]:
        """Finish the runs, then average x over one episode number from ``collection.records``."""
        for run in self.experiments.values():
            run.finish()
        return average_x_of(self.collection.records, episode)


def average_x_of(records, episode: int) -> tuple[float, int]:  # noqa: ANN001 - 1.4.4's or ours
    """Average x over the records of one episode number, each read as a dict."""
    total, count = 0.0, 0
    for record in records:
        if record["episode"] == episode:
            total += record["x"]
            count += 1
    return total / count, count


# --------------------------------------------------------------------------
# the workload, run in a fresh process per contender
# --------------------------------------------------------------------------

def workload(contender: str, shape: str, steps: int, pure_python: bool = False) -> dict:
    """Record EXPERIMENTS x EPISODES x ``steps`` records, then analyse.

    ``contender`` is ``"bare"`` or the library class to use (``"Recorder"``
    or ``"RecordKeeper"``); ``pure_python`` keeps ours off its C extension.
    Values are generated per episode, outside the timed loop; memory is the
    RSS growth from before the first record to after the last one (both
    after ``gc.collect()``), before the analysis.
    """
    if pure_python:
        os.environ["RIGOROUS_RECORDER_PURE_PYTHON"] = "1"
    loop, key_count = SHAPES[shape]
    tree = BareTree() if contender == "bare" else CollectionTree() if contender == "Collection" \
        else LibraryTree(contender)
    info = {} if contender == "bare" else H.loaded_library()
    rss_before = H.rss_bytes()
    push_seconds = push_cpu_seconds = 0.0
    for experiment in range(1, EXPERIMENTS + 1):
        for episode_number in range(1, EPISODES + 1):
            episode = tree.new_episode(experiment, episode_number)
            columns = [[random() for _ in range(steps)] for _ in range(key_count)]
            wall, cpu = loop(episode, columns)
            push_seconds += wall
            push_cpu_seconds += cpu
            del columns
    rss_after = H.rss_bytes()
    records = EXPERIMENTS * EPISODES * steps
    start = perf_counter()
    average, matched = tree.average_x(ANALYSED_EPISODE)
    analysis_seconds = perf_counter() - start
    if matched != EXPERIMENTS * steps:
        raise AssertionError(f"episode {ANALYSED_EPISODE} matched {matched} records, "
                             f"expected {EXPERIMENTS * steps}")
    return {**info, "records": records, "push_ns": push_seconds / records * 1e9,
            "push_cpu_ns": push_cpu_seconds / records * 1e9,
            "bytes_per_record": (rss_after - rss_before) / records,
            "analysis_ms": analysis_seconds * 1e3,
            "analysis_ns": analysis_seconds / records * 1e9, "average_x": average}


SPARSE_KEYS, SPARSE_RECORDS = 2_000, 20_000


def peak_rss_reset() -> None:
    """Start measuring the peak RSS from now (Linux: writing 5 to clear_refs resets VmHWM)."""
    H.rss_bytes()
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def peak_rss_bytes() -> int:
    """The peak RSS since the last :func:`peak_rss_reset` (VmHWM)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def sparse_workload(where: str, keys: int, records: int, folder: str) -> dict:
    """Push ``records`` records of one key each, drawn from ``keys`` keys, into a standalone
    recorder (``where="memory"``, saved to ``folder``/records.parquet) or a run of a new
    collection (``"collection"``, ``folder``/study), left there for :func:`sparse_read_workload`.

    Memory: RSS growth from before the first record to its peak while recording, then to its
    peak while finishing (``save_to`` for the standalone recorder, ``finish()`` for the run).
    """
    from rigorous_recorder import ExperimentCollection, Recorder
    import rigorous_recorder._columns  # noqa: F401 - pyarrow, loaded before memory is measured
    chooser = random_module.Random(1)
    rows = [{f"k{chooser.randrange(keys)}": chooser.random()} for _ in range(records)]
    experiment = None
    if where == "collection":
        experiment = ExperimentCollection(f"{folder}/study", quiet=True).new_experiment()
        recorder = Recorder().set_parent(experiment.recorder)
    else:
        recorder = Recorder()
    before = H.rss_bytes()
    peak_rss_reset()
    start = perf_counter()
    for row in rows:
        recorder.push(row)
    record_seconds = perf_counter() - start
    recording_peak = peak_rss_bytes()
    start = perf_counter()
    if experiment is not None:
        experiment.finish()
    else:
        recorder.save_to(f"{folder}/records.parquet")
    finish_seconds = perf_counter() - start
    finish_peak = peak_rss_bytes()
    return {**H.loaded_library(), "push_ns": record_seconds / records * 1e9,
            "recording_peak_mb": (recording_peak - before) / 1e6, "finish_peak_mb": (finish_peak - before) / 1e6,
            "finish_s": finish_seconds}


#: The SQL read-backs of the sparse run, each in a fresh process: (label, query, how its rows come back).
SPARSE_QUERIES = [
    ("sql: SELECT count(*)", "SELECT count(*) FROM records", "fetchall"),
    ("sql: two columns (avg(k5), count(k7))", "SELECT avg(k5), count(k7) FROM records", "fetchall"),
    ("sql: SELECT * as Python rows", "SELECT * FROM records", "fetchall"),
    ("sql: SELECT * as an Arrow table", "SELECT * FROM records", "to_arrow_table"),
]


def sparse_read_workload(where: str, folder: str, query: str | None = None, fetch: str | None = None) -> dict:
    """Read back what :func:`sparse_workload` left in ``folder``: the saved recorder through
    ``Recorder.load_from`` (``where="memory"``), the run through ``collection.records``
    (``"collection"``), every record's values; or, given ``query``, its rows through ``fetch``.

    Memory: peak RSS growth over the RSS before (libraries loaded, the collection opened).
    """
    import duckdb  # noqa: F401 - loaded before memory is measured, as pyarrow is
    import pyarrow.compute  # noqa: F401
    import pyarrow.parquet  # noqa: F401
    from rigorous_recorder import ExperimentCollection, Recorder
    collection = ExperimentCollection(f"{folder}/study", quiet=True) if where == "collection" else None
    before = H.rss_bytes()
    peak_rss_reset()
    start, cpu = perf_counter(), process_time()
    if query is not None:
        got = len(getattr(collection.sql(query), fetch)())
    else:
        if collection is not None:
            records = collection.records
        else:
            records = Recorder.load_from(f"{folder}/records.parquet").records
        got = sum(len(record.own_data()) for record in records)
    return {"read_s": perf_counter() - start, "read_cpu_s": process_time() - cpu,
            "read_peak_mb": (peak_rss_bytes() - before) / 1e6, "got": got}


#: Finished sparse runs packed into the catalog at once (it packs once ``catalog.PACK_MIN_RUNS``
#: of them wait), each of ``PACKED_SPARSE_RECORDS`` records of one key drawn from the sparse keys,
#: drawn in the same order in every run (one layout: they share a pack); and the bound on packing.
PACKED_SPARSE_RUNS, PACKED_SPARSE_RECORDS = 64, 2_000
PACKING_LIMIT_MB = 100


def sparse_runs_workload(folder: str, runs: int, keys: int, records: int) -> dict:
    """Record ``runs`` finished runs of ``records`` records of one key each, drawn from ``keys``
    keys in the same order in every run, into a collection at ``folder``/study opened with
    ``recover=False`` (which packs nothing): left for :func:`sparse_pack_workload`."""
    from rigorous_recorder import ExperimentCollection, Recorder
    collection = ExperimentCollection(f"{folder}/study", quiet=True, recover=False)
    start = process_time()
    for run in range(runs):
        chooser = random_module.Random(1)
        with collection.new_experiment(run=run) as experiment_recorder:
            recorder = Recorder().set_parent(experiment_recorder)
            for _ in range(records):
                recorder.push({f"k{chooser.randrange(keys)}": chooser.random()})
    return {"record_cpu_s": process_time() - start}


def sparse_pack_workload(folder: str) -> dict:
    """Pack the finished runs :func:`sparse_runs_workload` left in ``folder``, as a run's finish
    or a query does once enough of them wait: the peak RSS growth and the time of packing, over
    the RSS before (libraries loaded, the collection opened)."""
    import duckdb  # noqa: F401 - loaded before memory is measured, as pyarrow is
    import filelock  # noqa: F401
    import pyarrow.compute  # noqa: F401
    import pyarrow.parquet  # noqa: F401
    from rigorous_recorder import ExperimentCollection
    from rigorous_recorder.store.catalog import Catalog
    collection = ExperimentCollection(f"{folder}/study", quiet=True)
    before = H.rss_bytes()
    peak_rss_reset()
    start, cpu = perf_counter(), process_time()
    collection._pack()  # what finish() and sql() call
    return {**H.loaded_library(), "pack_s": perf_counter() - start, "pack_cpu_s": process_time() - cpu,
            "pack_peak_mb": (peak_rss_bytes() - before) / 1e6, "packed_runs": len(Catalog(collection.path).runs())}


def run_sparse_packing(quick: bool, repeats: int) -> dict:
    """Record the finished sparse runs once, then pack a copy of them ``repeats`` times, each in a
    fresh process; the medians."""
    keys, records = (200, 200) if quick else (SPARSE_KEYS, PACKED_SPARSE_RECORDS)
    results = []
    with tempfile.TemporaryDirectory(prefix="rr-sparse-runs-") as recorded:
        print(f"sparse: recording {PACKED_SPARSE_RUNS} finished runs to pack ...", file=sys.stderr, flush=True)
        made = H.run_workload(H.ours_python(), __file__, "sparse_runs_workload", folder=recorded,
                              runs=PACKED_SPARSE_RUNS, keys=keys, records=records)
        if "error" in made:
            return made
        for repeat in range(repeats):
            with tempfile.TemporaryDirectory(prefix="rr-sparse-pack-") as folder:
                print(f"[{repeat + 1}/{repeats}] sparse: packing ...", file=sys.stderr, flush=True)
                shutil.copytree(f"{recorded}/study.collection", f"{folder}/study.collection")
                results.append(H.run_workload(H.ours_python(), __file__, "sparse_pack_workload", folder=folder))
    return H.median_of(results)


def sparse_packing_table(result: dict, quick: bool) -> str:
    """The markdown table of packing the finished sparse runs."""
    keys, records = (200, 200) if quick else (SPARSE_KEYS, PACKED_SPARSE_RECORDS)
    shape = f"{PACKED_SPARSE_RUNS} runs x {keys:,} keys x {records:,} records of one key"
    row = ([shape, "ERROR", "", "", ""] if "error" in result else
           [shape, f"{result['packed_runs']}", H.fmt(result["pack_peak_mb"]), H.fmt(result["pack_cpu_s"], 2),
            H.fmt(result["pack_s"], 2)])
    return H.markdown_table(["finished runs packed", "runs in packs", "peak growth packing (MB)", "CPU s", "wall s"],
                            [row])


SPARSE_ENTRIES = [("ours push, standalone", "memory"), ("ours push, inside a collection", "collection")]
SPARSE_READ_BACK = {"memory": "Recorder.load_from", "collection": "collection.records"}


def run_sparse(quick: bool, repeats: int) -> tuple[dict[str, dict], dict[str, dict]]:
    """Every sparse contender ``repeats`` times, interleaved, each in a fresh process, then its
    records read back in fresh processes (and the run through SQL); medians of both."""
    keys, records = (200, 2_000) if quick else (SPARSE_KEYS, SPARSE_RECORDS)
    runs: dict[str, list[dict]] = {label: [] for label, _ in SPARSE_ENTRIES}
    reads: dict[str, list[dict]] = {label: [] for label, _, _ in SPARSE_QUERIES}
    for repeat in range(repeats):
        for label, where in SPARSE_ENTRIES:
            with tempfile.TemporaryDirectory(prefix="rr-sparse-") as folder:
                print(f"[{repeat + 1}/{repeats}] sparse: {label} ...", file=sys.stderr, flush=True)
                result = H.run_workload(H.ours_python(), __file__, "sparse_workload",
                                        where=where, keys=keys, records=records, folder=folder)
                if "error" not in result:
                    read = H.run_workload(H.ours_python(), __file__, "sparse_read_workload", where=where, folder=folder)
                    result = read if "error" in read else {**result, **read}
                runs[label].append(result)
                if where == "collection" and "error" not in result:
                    for query_label, query, fetch in SPARSE_QUERIES:
                        reads[query_label].append(H.run_workload(H.ours_python(), __file__, "sparse_read_workload",
                                                                 where=where, folder=folder, query=query, fetch=fetch))
    return ({label: H.median_of(results) for label, results in runs.items()},
            {label: H.median_of(results) for label, results in reads.items() if results})


def sparse_table(results: dict[str, dict]) -> str:
    """The markdown table of the sparse workload."""
    rows = []
    for label, where in SPARSE_ENTRIES:
        result = results[label]
        if "error" in result:
            rows.append([label, "ERROR", "", "", "", "", "", "", ""])
            continue
        rows.append([label, result["library_version"], H.fmt(result["push_ns"]), H.fmt(result["recording_peak_mb"]),
                     H.fmt(result["finish_peak_mb"]), H.fmt(result["finish_s"], 2), SPARSE_READ_BACK[where],
                     H.fmt(result["read_peak_mb"]), H.fmt(result["read_cpu_s"], 2)])
    return H.markdown_table(["contender", "version", "push ns/record", "peak growth recording (MB)",
                             "peak growth finishing (MB)", "finish s", "read back through",
                             "peak growth reading back (MB)", "read back CPU s"], rows)


def sparse_sql_table(reads: dict[str, dict]) -> str:
    """The markdown table of the sparse run read back through SQL."""
    rows = [[label, "ERROR", "", ""] if "error" in result else
            [label, H.fmt(result["read_peak_mb"]), H.fmt(result["read_cpu_s"], 2), f"{result['got']:,}"]
            for label, result in reads.items()]
    return H.markdown_table(["the run read back through", "peak growth (MB)", "CPU s", "rows"], rows)


# --------------------------------------------------------------------------
# the driver
# --------------------------------------------------------------------------

FLOOR_2, FLOOR_10 = "bare floor, push 2 keys", "bare floor, push 10 keys"
IN_COLLECTION_PUSH = "ours push, inside a collection"
IN_COLLECTION_ADD = "ours add+add+commit, inside a collection"
ENTRY_FIELDS = ("label", "python", "contender", "shape", "steps", "floor", "pure_python")


def contenders(quick: bool) -> list[dict]:
    """Every contender: label, interpreter, workload arguments, floor to compare.

    A contender whose ``floor`` is None is itself a floor.
    """
    steps = 1_000 if quick else 100_000
    old_steps = 100 if quick else 10_000
    ours, old = H.ours_python(), H.baseline_python()
    rows = [
        (FLOOR_2, ours, "bare", "push", steps, None, False),
        ("ours Recorder.push", ours, "Recorder", "push", steps, FLOOR_2, False),
        ("ours Recorder.add+commit", ours, "Recorder", "add_commit", steps, FLOOR_2, False),
        (IN_COLLECTION_PUSH, ours, "Collection", "push", steps, FLOOR_2, False),
        (IN_COLLECTION_ADD, ours, "Collection", "add_commit", steps, FLOOR_2, False),
        (FLOOR_10, ours, "bare", "push10", steps, None, False),
        ("ours Recorder.push 10 keys", ours, "Recorder", "push10", steps, FLOOR_10, False),
        ("ours Recorder.push, pure Python", ours, "Recorder", "push", steps, FLOOR_2, True),
        ("1.4.4 Recorder.push", old, "Recorder", "push", old_steps, FLOOR_2, False),
        ("1.4.4 Recorder.add+commit", old, "Recorder", "add_commit", old_steps, FLOOR_2, False),
        ("1.4.4 Recorder.push 10 keys", old, "Recorder", "push10", old_steps, FLOOR_10, False),
        ("1.4.4 RecordKeeper.push", old, "RecordKeeper", "push", old_steps, FLOOR_2, False),
    ]
    return [dict(zip(ENTRY_FIELDS, row)) for row in rows]


def run_all(entries: list[dict], repeats: int) -> dict[str, dict]:
    """Run every contender ``repeats`` times, interleaved; keep the medians."""
    runs: dict[str, list[dict]] = {entry["label"]: [] for entry in entries}
    for repeat in range(repeats):
        for entry in entries:
            print(f"[{repeat + 1}/{repeats}] {entry['label']} ...", file=sys.stderr, flush=True)
            runs[entry["label"]].append(H.run_workload(
                entry["python"], __file__, "workload",
                contender=entry["contender"], shape=entry["shape"], steps=entry["steps"],
                pure_python=entry["pure_python"]))
    return {label: H.median_of(results) for label, results in runs.items()}


def table(entries: list[dict], results: dict[str, dict]) -> str:
    """The markdown table of per-record figures."""
    rows = []
    for entry in entries:
        result = results[entry["label"]]
        size = f"{EXPERIMENTS}x{EPISODES}x{entry['steps']:,}"
        if "error" in result:
            rows.append([entry["label"], "", size, "ERROR", "", "", "", "", "", ""])
            continue
        floor = results[entry["floor"]] if entry["floor"] else result
        marker = "" if entry["floor"] else " (floor)"
        rows.append([entry["label"], result.get("library_version", "-"), size,
                     H.fmt(result["push_ns"]), H.fmt(push_ratio(result, floor), 2) + marker,
                     H.fmt(result["push_cpu_ns"]), H.fmt(push_ratio(result, floor, "push_cpu_ns"), 2) + marker,
                     H.fmt(result["bytes_per_record"]), H.fmt(result["analysis_ms"]),
                     H.fmt(result["analysis_ns"])])
    return H.markdown_table(
        ["contender", "version", "records (exp x ep x steps)", "push ns/record", "x bare floor",
         "push CPU ns/record", "x floor (CPU)", "memory B/record", "analysis ms (avg x, episode 2)",
         "analysis ns/record"], rows)


def push_ratio(result: dict, floor: dict, measure: str = "push_ns") -> float | None:
    """Push time (``measure``: wall or CPU) per record over the floor's, None if either run failed."""
    if measure in result and measure in floor:
        return result[measure] / floor[measure]
    return None


def check_targets(results: dict[str, dict], targets: H.Targets) -> None:
    """PASS/FAIL for: push <= 1.5x bare floor, memory <= 24 B/record; inside a collection (issue #13)
    push <= 1.5x and add+add+commit <= 2.5x the bare floor."""
    ours = results["ours Recorder.push"]
    targets.check("ours push time vs bare floor (x)", push_ratio(ours, results[FLOOR_2]), 1.5, "x")
    targets.check("push inside a collection vs bare floor (x)",
                  push_ratio(results[IN_COLLECTION_PUSH], results[FLOOR_2]), 1.5, "x")
    targets.check("add+add+commit inside a collection vs bare floor (x)",
                  push_ratio(results[IN_COLLECTION_ADD], results[FLOOR_2]), 2.5, "x")
    for label, limit in [(IN_COLLECTION_PUSH, 1.5), (IN_COLLECTION_ADD, 2.5)]:  # robust to a busy machine
        targets.check(f"{label} vs bare floor, CPU time (x)",
                      push_ratio(results[label], results[FLOOR_2], "push_cpu_ns"), limit, "x")
    targets.check("ours memory per record while recording", ours.get("bytes_per_record"), 24, " B")


def main() -> int:
    """Run the benchmark and print the tables and verdicts; 1 if any FAIL."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a smoke test in seconds")
    parser.add_argument("--repeats", type=int, default=None,
                        help="interleaved runs per contender, medians shown (default 3, quick 1)")
    parser.add_argument("--only", choices=["dense", "sparse"], default=None,
                        help="run only the dense push workload or only the sparse one")
    args = parser.parse_args()
    repeats = args.repeats or (1 if args.quick else 3)
    targets = H.Targets()
    sections = []
    if args.only != "sparse":
        entries = contenders(args.quick)
        results = run_all(entries, repeats)
        sections.append(f"- median of {repeats} interleaved run(s), each contender in a fresh process;"
                        " 1.4.4 at the smaller size shown, its ratio is per record against the floor's"
                        f" larger run\n\n{table(entries, results)}")
        check_targets(results, targets)
    if args.only != "dense":
        sparse, sparse_reads = run_sparse(args.quick, repeats)
        keys, records = (200, 2_000) if args.quick else (SPARSE_KEYS, SPARSE_RECORDS)
        sections.append(f"Sparse records: {keys:,} keys, {records:,} records of one key each"
                        f" (median of {repeats}, each in a fresh process)\n\n{sparse_table(sparse)}"
                        f"\n\n{sparse_sql_table(sparse_reads)}")
        packing = run_sparse_packing(args.quick, repeats)
        sections.append(f"Packing finished sparse runs into the catalog (median of {repeats}, each in a fresh"
                        f" process)\n\n{sparse_packing_table(packing, args.quick)}")
        for label, where in SPARSE_ENTRIES:
            targets.check(f"sparse, {label}: peak memory growth while recording",
                          sparse[label].get("recording_peak_mb"), 50, " MB")
            targets.check(f"sparse, {label}: peak memory growth reading back ({SPARSE_READ_BACK[where]})",
                          sparse[label].get("read_peak_mb"), 50, " MB")
        targets.check(f"sparse, packing {PACKED_SPARSE_RUNS} finished runs: peak memory growth",
                      packing.get("pack_peak_mb"), PACKING_LIMIT_MB, " MB")
    print(f"## Core recorder benchmark{' (--quick)' if args.quick else ''}\n")
    print(H.machine_header(H.baseline_python()))
    print("\n\n".join(sections))
    if args.only != "sparse":
        H.print_errors(results)
    if args.only != "dense":
        H.print_errors(sparse)
        H.print_errors(sparse_reads)
        H.print_errors({"sparse packing": packing})
    print("\n" + targets.report())
    return 1 if targets.failed else 0


if __name__ == "__main__":
    sys.exit(main())
