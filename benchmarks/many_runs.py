"""Collections with many runs: new_experiment(), open, first SQL and `ls`, at 100 and 10,000 runs.

Targets (issue #10): at 10,000 runs, new_experiment() <= 50 ms, open <= 0.5 s, first SQL <= 1 s,
`rigorous-recorder ls` <= 1 s. Each run is a real finished run (2 recorders, 20 records) made
once and copied under new ids, so building 10,000 runs takes seconds, not an hour. Copied runs
were never finished in this collection, so the first query ever gathers them into the catalog's
packs (what their own finish() would have done 64 at a time); that one-time cost is shown too.
Each figure is wall time, with the CPU time of the process (all its threads) in parentheses:
the CPU time says more on a busy machine. Open, first SQL and new_experiment() are timed in a
fresh process after the imports (shown apart:
they cost the same whatever the collection; the first
new_experiment() of a process, which also reads git and package versions once, is shown apart;
its time does not grow with the collection); `ls` is the whole command, Python's start included.

    .venv/bin/python benchmarks/many_runs.py [--runs 100 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from rigorous_recorder import ExperimentCollection, Recorder

CLI = [sys.executable, "-m", "rigorous_recorder"]


def build(path: Path, runs: int) -> Path:
    """A collection of ``runs`` finished runs, copies of one real run."""
    collection = ExperimentCollection(path, quiet=True)
    with collection.new_experiment(lr=0.1, model="mlp") as experiment:
        train = Recorder(stage="train").set_parent(experiment)
        for step in range(20):
            train.push(step=step, loss=1 / (step + 1))
    template = collection.path / "runs" / collection.runs[0]["id"]
    info = json.loads((template / "run.json").read_text())
    for number in range(2, runs + 1):
        run_id = f"{number:06d}-{uuid.uuid4().hex[:10]}"
        shutil.copytree(template, collection.path / "runs" / run_id)
        (collection.path / "runs" / run_id / "run.json").write_text(json.dumps(
            {**info, "id": run_id, "experiment_number": number, "experiment_start_time": info["experiment_start_time"] + number}))
    return collection.path


def reader(path: str) -> None:
    """In a fresh process: open the collection, run the first query, start a run; print timings."""
    begin = time.perf_counter(), time.process_time()
    import duckdb  # noqa: F401 - what any first query loads, once per process, whatever the collection
    import pyarrow.parquet  # noqa: F401
    imported = time.perf_counter(), time.process_time()
    collection = ExperimentCollection(path, quiet=True)
    opened = time.perf_counter(), time.process_time()
    count = collection.sql("SELECT count(*) FROM records").fetchall()[0][0]
    queried = time.perf_counter(), time.process_time()
    collection.new_experiment(lr=0.2).finish()
    first_started = time.perf_counter(), time.process_time()
    experiment = collection.new_experiment(lr=0.3)
    started = time.perf_counter(), time.process_time()
    experiment.finish()
    print(json.dumps({"imports a query needs (duckdb, pyarrow; once per process)": _spent(begin, imported),
                      "open": _spent(imported, opened), "first SQL": _spent(opened, queried),
                      "new_experiment()": _spent(first_started, started),
                      "first new_experiment() of a process": _spent(queried, first_started), "count": count}))


def _spent(start: tuple[float, float], end: tuple[float, float]) -> list[float]:
    """Wall and CPU seconds from ``start`` to ``end`` (each a perf_counter, process_time pair)."""
    return [end[0] - start[0], end[1] - start[1]]


def in_fresh_process(path: Path) -> dict[str, float]:
    output = subprocess.run([sys.executable, __file__, "--reader", str(path)], check=True, capture_output=True, text=True)
    return json.loads(output.stdout)


def measure(runs: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        path = build(Path(folder) / "study", runs)
        start = time.perf_counter()
        first = in_fresh_process(path)  # copied runs were never finished here: this query packs them, once
        figures: dict[str, Any] = {"first SQL ever (packs the runs, once)": first["first SQL"]}
        assert first["count"] == 20 * runs, first
        figures.update(in_fresh_process(path))
        start, children = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run([*CLI, "ls", str(path)], check=True, stdout=subprocess.DEVNULL)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        figures["ls (process)"] = [time.perf_counter() - start, after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime]
        return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, nargs="+", default=[100, 10_000])
    parser.add_argument("--reader", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reader:
        reader(args.reader)
        return
    results = {runs: measure(runs) for runs in args.runs}
    targets = {"new_experiment()": 0.05, "open": 0.5, "first SQL": 1.0, "ls (process)": 1.0,
               "first new_experiment() of a process": None, "first SQL ever (packs the runs, once)": None,
               "imports a query needs (duckdb, pyarrow; once per process)": None}
    print(f"`{' '.join(['.venv/bin/python', *sys.argv])}` (load average {os.getloadavg()[0]:.1f} at the end)\n")
    print("| work (wall, CPU) | " + " | ".join(f"{runs:,} runs" for runs in results) + " | target at 10,000 |")
    print("| --- | " + " | ".join("---:" for _ in results) + " | ---: |")
    for name, target in targets.items():
        cells = " | ".join(f"{results[runs][name][0] * 1000:,.0f} ms ({results[runs][name][1] * 1000:,.0f} ms)"
                           for runs in results)
        print(f"| {name} | {cells} | {'-' if target is None else f'{target * 1000:,.0f} ms'} |")


if __name__ == "__main__":
    main()
