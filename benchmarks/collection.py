"""Benchmark of ExperimentCollection: record + save, analysis, open, query, disk.

Two workloads, each step in its own fresh process (see ``_harness.py``):

1. The seed README's collection example end to end: 1 experiment, 2 models,
   100,000 training and 500 test steps each (201,000 records); record + save
   (the ``with`` block's exit saves), then the README's analysis loop over
   ``collection.records``.  rigorous-recorder 1.4.4 is quadratic in the number
   of records, so it runs at a reduced size; ours runs at that size too and
   at full size.
2. A grid of 3 experiments x 10 episodes x 100,000 steps of ``push(x, y)``
   (3,000,000 records) recorded into a collection, with the recording
   process's RSS growth from open to the last save; then, in a NEW process,
   the time to open it and to answer "average x over episode 2": with
   ``collection.sql(...)`` for ours, with a loop over ``collection.records``
   for 1.4.4 (which has no SQL), at a size 1.4.4 can manage.

Run: ``.venv/bin/python benchmarks/collection.py [--quick]``
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from random import random
from time import perf_counter

import _harness as H

QUERY = "SELECT avg(x) FROM records WHERE episode = 2"
README_TEST_STEPS = 500
GRID_EXPERIMENTS = 3
GRID_EPISODES = 10


def collection_folder(path: str) -> Path:
    """Where ``ExperimentCollection(path)`` keeps its files."""
    return Path(path + ".collection")


# --------------------------------------------------------------------------
# workload 1: the seed README's example (record + save, then analysis)
# --------------------------------------------------------------------------

def readme_example(path: str, train_steps: int, test_steps: int) -> dict:
    """The seed README's collection example, sizes as parameters, timed."""
    from rigorous_recorder import RecordKeeper, ExperimentCollection

    from statistics import mean as average

    start = perf_counter()
    collection = ExperimentCollection(path, quiet=True)
    number_of_new_experiments = 1

    for _ in range(number_of_new_experiments):
        with collection.new_experiment() as experiment_recorder:
            model1_recorder = RecordKeeper(model="model1").set_parent(experiment_recorder)
            model2_recorder = RecordKeeper(model="model2").set_parent(experiment_recorder)

            # training
            model1_train_recorder = RecordKeeper(training=True).set_parent(model1_recorder)
            model2_train_recorder = RecordKeeper(training=True).set_parent(model2_recorder)
            for each_index in range(train_steps):
                model1_train_recorder.push(index=each_index, loss=random())

                model2_train_recorder.add(index=each_index)
                model2_train_recorder.add({"loss": random()})
                model2_train_recorder.commit()

            # testing
            model1_test_recorder = RecordKeeper(testing=True).set_parent(model1_recorder)
            model2_test_recorder = RecordKeeper(testing=True).set_parent(model2_recorder)
            for each_index in range(test_steps):
                model1_test_recorder.push(
                    index=each_index,
                    accuracy=random(),
                )

                model2_test_recorder.add(index=each_index, accuracy=random())
                model2_test_recorder.commit()
            recorded = perf_counter()
    saved = perf_counter()

    # Analysis (verbatim from the seed README)
    all_records = collection.records
    print("first record", all_records[0])  # behaves just like a regular dictionary

    # slice across both models (first 500 training records from both models)
    records_first_half_of_time = tuple(each for each in all_records if each["training"] and each["index"] < 500)
    # average loss across both models
    first_half_average_loss = average(tuple(each["loss"] for each in records_first_half_of_time))
    # average only for model 1
    model1_first_half_loss = average(tuple(each["loss"] for each in records_first_half_of_time if each["model"] == "model1"))
    # average only for model 2
    model2_first_half_loss = average(tuple(each["loss"] for each in records_first_half_of_time if each["model"] == "model2"))
    analysed = perf_counter()

    records = 2 * (train_steps + test_steps)
    if len(records_first_half_of_time) != 2 * min(train_steps, 500):
        raise AssertionError(f"README slice found {len(records_first_half_of_time)} records, "
                             f"expected {2 * min(train_steps, 500)}")
    return {**H.loaded_library(), "records": records,
            "record_s": recorded - start, "save_s": saved - recorded,
            "record_save_s": saved - start,
            "analysis_ms": (analysed - saved) * 1e3,
            "analysis_ns": (analysed - saved) / records * 1e9,
            "disk_bytes": H.folder_bytes(collection_folder(path)),
            "averages": [first_half_average_loss, model1_first_half_loss, model2_first_half_loss]}


# --------------------------------------------------------------------------
# workload 2: the 3 x 10 x steps grid (record in one process, query in another)
# --------------------------------------------------------------------------

def record_grid(path: str, steps: int) -> dict:
    """Record GRID_EXPERIMENTS x GRID_EPISODES x ``steps`` (x, y) records."""
    from rigorous_recorder import RecordKeeper, ExperimentCollection

    start = perf_counter()
    collection = ExperimentCollection(path, quiet=True)
    rss_before = H.rss_bytes()
    for _ in range(GRID_EXPERIMENTS):
        with collection.new_experiment() as experiment_recorder:
            for episode in range(1, GRID_EPISODES + 1):
                episode_recorder = RecordKeeper(episode=episode).set_parent(experiment_recorder)
                for _ in range(steps):
                    episode_recorder.push(x=random(), y=random())
    elapsed = perf_counter() - start
    rss_growth = H.rss_bytes() - rss_before
    records = GRID_EXPERIMENTS * GRID_EPISODES * steps
    return {**H.loaded_library(), "records": records, "record_save_s": elapsed,
            "rss_growth_bytes": rss_growth, "disk_bytes": H.folder_bytes(collection_folder(path))}


def query_grid(path: str, method: str) -> dict:
    """In a fresh process: import, open the collection, average x of episode 2.

    ``method`` is ``"sql"`` (``collection.sql(QUERY)`` and its result, run
    twice: cold right after open, then warm) or ``"python"`` (a loop over
    ``collection.records``, the only way 1.4.4 offers).  The SQL result is
    read with ``fetchall()``: DuckDB 2 relations have no ``fetchone()``.
    """
    start = perf_counter()
    from rigorous_recorder import ExperimentCollection
    imported = perf_counter()
    collection = ExperimentCollection(path, quiet=True)
    opened = perf_counter()
    if method == "sql":
        average = collection.sql(QUERY).fetchall()[0][0]
        queried = perf_counter()
        collection.sql(QUERY).fetchall()
        warm_query_ms = (perf_counter() - queried) * 1e3
    else:
        total, count = 0.0, 0
        for record in collection.records:
            if record["episode"] == 2:
                total += record["x"]
                count += 1
        average = total / count
        queried = perf_counter()
        warm_query_ms = None
    return {**H.loaded_library(), "import_ms": (imported - start) * 1e3,
            "open_ms": (opened - imported) * 1e3, "query_ms": (queried - opened) * 1e3,
            "warm_query_ms": warm_query_ms, "average_x": average}


# --------------------------------------------------------------------------
# the driver
# --------------------------------------------------------------------------

def sizes(quick: bool) -> dict:
    """Training steps per model (README) and steps per episode (grid)."""
    if quick:
        return dict(readme_full=2_000, readme_reduced=500, test_steps=50,
                    grid_full=1_000, grid_reduced=100)
    return dict(readme_full=100_000, readme_reduced=45_000, test_steps=README_TEST_STEPS,
                grid_full=100_000, grid_reduced=3_000)


def run_readme(scratch: Path, size: dict) -> list[tuple[str, dict]]:
    """The README example: ours full, ours reduced, 1.4.4 reduced."""
    runs = [("ours", H.ours_python(), size["readme_full"]),
            ("ours", H.ours_python(), size["readme_reduced"]),
            ("1.4.4", H.baseline_python(), size["readme_reduced"])]
    results = []
    for index, (name, python, train_steps) in enumerate(runs):
        label = f"{name}, {train_steps:,} train steps/model"
        print(f"README example: {label} ...", file=sys.stderr, flush=True)
        path = str(scratch / f"readme-{index}" / "my_study")
        results.append((label, H.run_workload(python, __file__, "readme_example", path=path,
                                              train_steps=train_steps,
                                              test_steps=size["test_steps"])))
    return results


def run_grid(scratch: Path, size: dict) -> list[tuple[str, dict]]:
    """The grid: record in one process, then open + query in a new one."""
    runs = [("ours", H.ours_python(), size["grid_full"], "sql"),
            ("ours", H.ours_python(), size["grid_reduced"], "sql"),
            ("ours", H.ours_python(), size["grid_reduced"], "python"),
            ("1.4.4", H.baseline_python(), size["grid_reduced"], "python")]
    results = []
    for index, (name, python, steps, method) in enumerate(runs):
        label = f"{name}, {GRID_EXPERIMENTS}x{GRID_EPISODES}x{steps:,}, query: {method}"
        print(f"grid: {label} ...", file=sys.stderr, flush=True)
        path = str(scratch / f"grid-{index}" / "study")
        recorded = H.run_workload(python, __file__, "record_grid", path=path, steps=steps)
        if "error" in recorded:
            results.append((label, recorded))
            continue
        queried = H.run_workload(python, __file__, "query_grid", path=path, method=method)
        results.append((label, queried if "error" in queried else {**recorded, **queried}))
    return results


def readme_table(results: list[tuple[str, dict]]) -> str:
    """Markdown table for the README example."""
    rows = []
    for label, result in results:
        if "error" in result:
            rows.append([label, "", "ERROR"] + [""] * 7)
            continue
        rows.append([label, result["library_version"], f"{result['records']:,}",
                     H.fmt(result["record_s"], 3), H.fmt(result["save_s"], 3),
                     H.fmt(result["record_save_s"], 3),
                     H.fmt(result["analysis_ms"]), H.fmt(result["analysis_ns"]),
                     H.fmt(result["disk_bytes"] / 1e6, 2),
                     H.fmt(result["disk_bytes"] / result["records"])])
    return H.markdown_table(
        ["contender", "version", "records", "record s", "save s", "record+save s", "analysis ms",
         "analysis ns/record", "disk MB", "disk B/record"], rows)


def grid_table(results: list[tuple[str, dict]]) -> str:
    """Markdown table for the grid (record, then open + query in a new process)."""
    rows = []
    for label, result in results:
        if "error" in result:
            rows.append([label, "", "ERROR"] + [""] * 8)
            continue
        rows.append([label, result["library_version"], f"{result['records']:,}",
                     H.fmt(result["record_save_s"], 3), H.fmt(result["rss_growth_bytes"] / 1e6, 1),
                     H.fmt(result["import_ms"]),
                     H.fmt(result["open_ms"]),
                     H.fmt(result["query_ms"]), H.fmt(result["warm_query_ms"]),
                     H.fmt(result["disk_bytes"] / 1e6, 2),
                     H.fmt(result["disk_bytes"] / result["records"])])
    return H.markdown_table(
        ["contender", "version", "records", "record+save s", "RSS growth MB", "import ms", "open ms",
         "first query ms", "warm query ms", "disk MB", "disk B/record"], rows)


def baseline_full_size_note(readme: list[tuple[str, dict]], grid: list[tuple[str, dict]],
                            size: dict) -> str:
    """Why 1.4.4 is not run at full size, with a quadratic extrapolation."""
    lines = []
    for (label, result), full_records in (
            (readme[2], 2 * (size["readme_full"] + size["test_steps"])),
            (grid[3], GRID_EXPERIMENTS * GRID_EPISODES * size["grid_full"])):
        if "record_save_s" in result:
            estimate = result["record_save_s"] * (full_records / result["records"]) ** 2
            lines.append(f"- 1.4.4 at {full_records:,} records: not run; its record+save is"
                         f" quadratic, extrapolating {label} gives ~{estimate:,.0f} s")
    return "\n".join(lines)


def ratio(numerator: dict, denominator: dict, key: str) -> float | None:
    """``numerator[key] / denominator[key]``, None if either run failed."""
    if key in numerator and key in denominator:
        return numerator[key] / denominator[key]
    return None


def check_targets(readme: list[tuple[str, dict]], grid: list[tuple[str, dict]]) -> H.Targets:
    """PASS/FAIL for the four collection targets."""
    (full_label, full), (reduced_label, reduced), (baseline_label, baseline) = readme
    (grid_label, grid_full) = grid[0]
    targets = H.Targets()
    targets.check(f"ours README record+save ({full_label})", full.get("record_save_s"), 2.0, " s")
    targets.check(f"README analysis ns/record, ours ({full_label}) / 1.4.4 ({baseline_label})",
                  ratio(full, baseline, "analysis_ns"), 0.5, "x")
    targets.check(f"README disk B/record at the same size, ours / 1.4.4 ({reduced_label})",
                  ratio(reduced, baseline, "disk_bytes"), 0.2, "x")
    targets.check(f"first SQL query after open ({grid_label})",
                  grid_full.get("query_ms"), 50, " ms")
    return targets


def main() -> int:
    """Run both workloads, print the tables and verdicts; 1 if any FAIL."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a smoke test in seconds")
    args = parser.parse_args()
    size = sizes(args.quick)
    with tempfile.TemporaryDirectory(prefix="rr-bench-collections-") as scratch:
        readme = run_readme(Path(scratch), size)
        grid = run_grid(Path(scratch), size)
    print(f"## ExperimentCollection benchmark{' (--quick)' if args.quick else ''}\n")
    print(H.machine_header(H.baseline_python()))
    print(f"- each step in a fresh process; {size['test_steps']} test steps per model;"
          " 1.4.4 runs only at the reduced sizes (it is quadratic in the record count)\n")
    print("### README example: record + save, then the README's analysis loop\n")
    print(readme_table(readme))
    print("\n### 3 experiments x 10 episodes: record, then open + average x of episode 2"
          " in a new process\n")
    print(grid_table(grid))
    print("\n" + baseline_full_size_note(readme, grid, size))
    H.print_errors(dict(readme + grid))
    targets = check_targets(readme, grid)
    print("\n" + targets.report())
    return 1 if targets.failed else 0


if __name__ == "__main__":
    sys.exit(main())
