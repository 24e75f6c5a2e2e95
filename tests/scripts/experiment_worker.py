"""Run one experiment of a collection in its own process, for crash and concurrency tests.

Usage: ``python experiment_worker.py PATH MODE RECORDS [FLUSH_INTERVAL]``

MODE ``finish``: push RECORDS records in a ``with`` block and exit normally.
MODE ``flush``: push RECORDS records, call ``collection.flush()``, print "ready", then keep
pushing (one record a millisecond) until killed.
MODE ``recorder-flush``: the same, calling the recorder's ``flush()`` instead.
MODE ``wait``: push RECORDS records, sleep 1.5 flush intervals (no explicit flush), print
"ready", then keep pushing (one record a millisecond) until killed.
MODE ``memory``: push RECORDS two-key records and print the RSS growth in bytes.
"""

from __future__ import annotations

import itertools
import os
import sys
import time

from rigorous_recorder import ExperimentCollection, Recorder


def resident_bytes() -> int:
    """The resident set size of this process, from /proc/self/statm."""
    with open("/proc/self/statm") as file:
        return int(file.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main() -> None:
    path, mode, records = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if len(sys.argv) > 4:
        flush_interval = float(sys.argv[4])
        collection = ExperimentCollection(path, quiet=True, flush_interval=flush_interval)
    else:  # the default interval
        flush_interval = 1.0
        collection = ExperimentCollection(path, quiet=True)
    if mode == "finish":
        with collection.new_experiment(worker=os.getpid()) as experiment:
            worker = Recorder(role="worker").set_parent(experiment)
            for index in range(records):
                worker.push(index=index)
        return
    if mode == "memory":
        with collection.new_experiment() as experiment:
            worker = Recorder(role="worker").set_parent(experiment)
            worker.push(index=0, loss=0.5)
            before = resident_bytes()
            for index in range(1, records):
                worker.push(index=index, loss=0.5)
            print(resident_bytes() - before, flush=True)
        return
    experiment = collection.new_experiment(worker=os.getpid())
    worker = Recorder(role="worker").set_parent(experiment.recorder)
    for index in range(records):
        worker.push(index=index)
    if mode == "flush":
        collection.flush()
    elif mode == "recorder-flush":
        worker.flush()
    else:
        time.sleep(1.5 * flush_interval)
    print("ready", flush=True)
    for index in itertools.count(records):  # slowly: no automatic 4,096-row batch is written
        worker.push(index=index)
        time.sleep(0.001)


if __name__ == "__main__":
    main()
