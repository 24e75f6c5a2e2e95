"""Collections with many runs: new_experiment(), open, first SQL and `ls`, at 100 and 10,000 runs.

Targets (issue #10): at 10,000 runs, new_experiment() <= 50 ms, open <= 0.5 s, first SQL <= 1 s,
`rigorous-recorder ls` <= 1 s. Each run is a real finished run (2 recorders, 20 records) made
once and copied under new ids, so building 10,000 runs takes seconds, not an hour.

    .venv/bin/python benchmarks/many_runs.py [--runs 100 10000]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

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


def measure(runs: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        path = build(Path(folder) / "study", runs)
        figures = {}
        start = time.perf_counter()
        collection = ExperimentCollection(path, quiet=True)
        figures["open"] = time.perf_counter() - start
        start = time.perf_counter()
        count = collection.sql("SELECT count(*) FROM records").fetchall()[0][0]
        figures["first SQL"] = time.perf_counter() - start
        assert count == 20 * runs, count
        start = time.perf_counter()
        experiment = collection.new_experiment(lr=0.2)
        figures["new_experiment()"] = time.perf_counter() - start
        experiment.finish()
        start = time.perf_counter()
        subprocess.run([*CLI, "ls", str(path)], check=True, stdout=subprocess.DEVNULL)
        figures["ls (process)"] = time.perf_counter() - start
        return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, nargs="+", default=[100, 10_000])
    args = parser.parse_args()
    results = {runs: measure(runs) for runs in args.runs}
    targets = {"new_experiment()": 0.05, "open": 0.5, "first SQL": 1.0, "ls (process)": 1.0}
    print(f"`{' '.join(['.venv/bin/python', *sys.argv])}`\n")
    print("| work | " + " | ".join(f"{runs:,} runs" for runs in results) + " | target at 10,000 |")
    print("| --- | " + " | ".join("---:" for _ in results) + " | ---: |")
    for name, target in targets.items():
        cells = " | ".join(f"{results[runs][name] * 1000:,.0f} ms" for runs in results)
        print(f"| {name} | {cells} | {target * 1000:,.0f} ms |")


if __name__ == "__main__":
    main()
