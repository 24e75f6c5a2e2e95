"""Record into a collection in its own process, telling the parent what is committed.

Usage: ``python durability_writer.py PATH WORKLOAD [options]`` (``--help`` lists them).

Every record carries ``seq``, a number unique within this process (0, 1, 2, ...), so that
a reader can count each record once. The writer prints, flushed, on stdout:

- ``run ID`` when a run starts;
- ``committed N T`` after each ``flush()`` it made, and every ``--report-every`` seconds
  while it records: N records (seq 0..N-1) were committed by time T (``time.time()``);
- ``finishing N T`` just before ``finish()``, ``finished N T`` after it;
- ``ready N T`` when a ``hold`` writer has recorded and waits to be signalled.

Workloads (the experiment info is ``workload=<name>`` plus ``--info KEY=VALUE`` pairs):

- ``exit``: push ``--records`` records and end normally without ``finish()``;
- ``raise``: the same, then raise an uncaught ``RuntimeError`` (see ``FAILURE``);
- ``hold``: push ``--records`` records (``--flush``: then flush), print ``ready``, sleep;
- ``small``: small runs one after another (``--records`` each, ``with`` blocks), ``--runs``
  of them or forever;
- ``episodes``: one run, one recorder per episode (``--episodes``, 3 records each);
- ``big``: one run, one recorder, ``--records`` records;
- ``manykeys``: one run, one recorder, ``--records`` records of 8 keys out of 400,
  with type drift (a key holds ints, then floats, then strings).

``--nofile N`` lowers this process's open-file limit (``ulimit -n``) before recording.
"""

from __future__ import annotations

import argparse
import itertools
import random
import resource
import sys
import time
from typing import Any

from rigorous_recorder import ExperimentCollection, Recorder

#: The text of the uncaught exception of the ``raise`` workload (the parent looks for it).
FAILURE = "deliberate failure of the durability writer"
RECORDS_PER_EPISODE = 3
KEY_POOL = 400
KEYS_PER_RECORD = 8


class Progress:
    """Numbers records and prints ``committed`` lines to the parent."""

    def __init__(self, collection: ExperimentCollection, report_every: float) -> None:
        self.collection = collection
        self.report_every = report_every
        self.committed = 0
        self._last_report = time.time()

    def tell(self, word: str) -> None:
        print(f"{word} {self.committed} {time.time():.6f}", flush=True)

    def next_seq(self) -> int:
        """The seq of the record about to be committed; call :meth:`done` after the commit."""
        return self.committed

    def done(self) -> None:
        """One more record is committed; report now and then."""
        self.committed += 1
        if self.committed % 256 == 0 and time.time() - self._last_report >= self.report_every:
            self._last_report = time.time()
            self.tell("committed")

    def flush(self, recorder: Recorder | None = None) -> None:
        """Flush (the collection's, or one recorder's), then report."""
        if recorder is None:
            self.collection.flush()
        else:
            recorder.flush()
        self.tell("committed")


def started(collection: ExperimentCollection, workload: str, info: dict[str, str]) -> Any:
    experiment = collection.new_experiment(workload=workload, **info)
    print(f"run {experiment.id}", flush=True)
    return experiment


def finish(experiment: Any, progress: Progress) -> None:
    progress.tell("finishing")
    experiment.finish()
    progress.tell("finished")


def push_simple(recorder: Recorder, progress: Progress, records: int) -> None:
    for index in range(records):
        recorder.push(seq=progress.next_seq(), index=index, loss=1.0 / (index + 1))
        progress.done()


def run_exit(collection: ExperimentCollection, progress: Progress, args: argparse.Namespace) -> None:
    experiment = started(collection, "exit", args.info)
    push_simple(experiment.recorder.sub_recorder(role="worker"), progress, args.records)
    progress.tell("committed")


def run_raise(collection: ExperimentCollection, progress: Progress, args: argparse.Namespace) -> None:
    experiment = started(collection, "raise", args.info)
    push_simple(experiment.recorder.sub_recorder(role="worker"), progress, args.records)
    progress.tell("committed")
    raise RuntimeError(FAILURE)


def run_hold(collection: ExperimentCollection, progress: Progress, args: argparse.Namespace) -> None:
    experiment = started(collection, "hold", args.info)
    push_simple(experiment.recorder.sub_recorder(role="worker"), progress, args.records)
    if args.flush:
        progress.flush()
    progress.tell("ready")
    while True:
        time.sleep(3600)


def run_small(collection: ExperimentCollection, progress: Progress, args: argparse.Namespace) -> None:
    for run in itertools.count() if args.runs is None else range(args.runs):
        experiment = started(collection, "small", args.info)
        with experiment as recorder:
            worker = recorder.sub_recorder(role="worker", run=run)
            for index in range(args.records):
                worker.push(seq=progress.next_seq(), index=index)
                progress.done()
                if index % 50 == 49:
                    progress.flush()
        progress.tell("finished")


def run_episodes(collection: ExperimentCollection, progress: Progress, args: argparse.Namespace) -> None:
    experiment = started(collection, "episodes", args.info)
    for episode in range(args.episodes):
        recorder = Recorder(episode=episode).set_parent(experiment.recorder)
        for step in range(RECORDS_PER_EPISODE):
            recorder.push(seq=progress.next_seq(), step=step, reward=episode * 0.5 + step)
            progress.done()
        if episode % 1_000 == 999:
            progress.flush()
    finish(experiment, progress)


def run_big(collection: ExperimentCollection, progress: Progress, args: argparse.Namespace) -> None:
    experiment = started(collection, "big", args.info)
    worker = experiment.recorder.sub_recorder(role="worker")
    for index in range(args.records):
        worker.push(seq=progress.next_seq(), x=index * 0.5, y=index)
        progress.done()
        if index % 100_000 == 99_999:
            progress.flush(worker)
    progress.flush()
    finish(experiment, progress)


def run_manykeys(collection: ExperimentCollection, progress: Progress, args: argparse.Namespace) -> None:
    experiment = started(collection, "manykeys", args.info)
    worker = experiment.recorder.sub_recorder(role="worker")
    chooser = random.Random(7)
    for index in range(args.records):
        keys = chooser.sample(range(KEY_POOL), KEYS_PER_RECORD)
        drift = index * 3 // args.records  # ints, then floats, then strings
        values = {f"key_{key}": (index, index + 0.5, f"text {index}")[drift] for key in keys}
        worker.add(values)
        worker.add(seq=progress.next_seq())
        worker.commit()
        progress.done()
        if index % 50_000 == 49_999:  # rarely: the automatic flush is what keeps these records
            progress.flush()
    finish(experiment, progress)


WORKLOADS = {
    "exit": run_exit,
    "raise": run_raise,
    "hold": run_hold,
    "small": run_small,
    "episodes": run_episodes,
    "big": run_big,
    "manykeys": run_manykeys,
}


def info_pair(text: str) -> tuple[str, str]:
    key, _, value = text.partition("=")
    return key, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path")
    parser.add_argument("workload", choices=sorted(WORKLOADS))
    parser.add_argument("--records", type=int, default=1_000)
    parser.add_argument("--episodes", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=None, help="small: how many runs (default: forever)")
    parser.add_argument("--flush", action="store_true", help="hold: flush before saying ready")
    parser.add_argument("--flush-interval", type=float, default=None, help="default: the collection's")
    parser.add_argument("--report-every", type=float, default=0.1, help="seconds between committed lines")
    parser.add_argument("--nofile", type=int, default=None, help="the open-file limit to record under")
    parser.add_argument("--info", type=info_pair, action="append", default=[], help="KEY=VALUE experiment info")
    args = parser.parse_args()
    args.info = dict(args.info)
    if args.nofile is not None:
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (args.nofile, hard))
    options = {} if args.flush_interval is None else {"flush_interval": args.flush_interval}
    collection = ExperimentCollection(args.path, quiet=True, **options)
    progress = Progress(collection, args.report_every)
    WORKLOADS[args.workload](collection, progress, args)


if __name__ == "__main__":
    sys.exit(main())
