"""Benchmark of the dashboard (``rigorous-recorder ui``): the figures of issue #14, and the cost of a live poll.

The server runs in its own process (``python -m rigorous_recorder ui``, as a user starts it);
the page in Debian's headless Chromium, driven by Playwright. Beside the times, the server's CPU
seconds over the same stretch: on a shared machine they move much less than wall times.

1. First paint of one 1,000,000-record run: from the navigation (``page.goto``) to the chart
   drawn, on a fresh server as soon as it printed its URL (the browser already running; the
   server is still reading the default view's curves), after a reload, and for a page asking
   for a curve not read yet (x = the records' order instead of step), read on the page's own clock
   (``performance.timeOrigin`` plus its mark ``rr-first-chart``); beside it the mark from the
   page's navigation start and the time Playwright saw (its script injection and polling add
   to it), and the time from the command to the URL printed.
2. Table load of a collection of 1,000 runs: the /api/runs answer, and the navigation to the
   table's first rows in the page, read the same way (mark ``rr-first-table``); once with the
   runs as the catalog packed them when they finished, once on a copy without ``catalog/``
   (every run read from its own folder).
3. Bytes per curve: the /api/curves answer for the 1,000,000-record run and for a 10,000-record
   run at several chart widths (buckets): bounded by the width, not the run's length.
4. A live poll while a run records into a copy of the 1,000-run collection (it starts with
   ``--live-records`` records and flushes 1,000 more every 0.3 s): what the page asks twice a
   second, /api/runs since its last version and the running run's /api/curves. The copy's
   run.json files are new files, so the catalog's packs do not serve them: every run is read
   from its folder, as in a collection without packs.

Each row says the load average when it was measured.

Run: ``.venv/bin/python benchmarks/ui.py [--runs 1000] [--records 1000000] [--data DIR]``;
``--data`` keeps the recorded collections there and reuses them. ``--source DIR`` serves from
another source tree (``DIR/src``, e.g. an older commit from ``git archive``) to compare.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, closing, contextmanager
from pathlib import Path
from typing import Iterator

import httpx
import psutil

from rigorous_recorder import ExperimentCollection, Recorder
from rigorous_recorder.store.layout import CATALOG_FOLDER

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
WIDTHS = (400, 800, 1600)
POLLS = 20
POLL_SECONDS = 0.5

LIVE_RUN = """
import sys, time
from rigorous_recorder import ExperimentCollection, Recorder
from rigorous_recorder.store.layout import CATALOG_FOLDER
collection = ExperimentCollection(sys.argv[1], quiet=True, flush_interval=60)
experiment = collection.new_experiment(lr=0.05, model="live")
train = Recorder(stage="train").set_parent(experiment.recorder)
step = 0
while True:
    for _ in range(int(sys.argv[2]) if step == 0 else 1000):
        train.push(step=step, loss=1 / (step + 1), wall_time=time.time())
        step += 1
    experiment.flush()
    print(step, flush=True)
    time.sleep(0.3)
"""


def record_long_run(path: Path, records: int) -> None:
    """One run of ``records`` noisy, decaying losses with a rare spike."""
    collection = ExperimentCollection(path, quiet=True)
    rng = random.Random(0)
    with collection.new_experiment(lr=0.01, model="long") as experiment:
        train = Recorder(stage="train").set_parent(experiment)
        for step in range(records):
            spike = 10.0 if rng.random() < 1e-5 else 0.0
            train.push(step=step, loss=1 / math.sqrt(step + 1) + rng.random() * 0.05 + spike)


def record_many_runs(path: Path, runs: int, per_run: int = 100) -> None:
    """``runs`` runs of ``per_run`` records each, with three info columns."""
    collection = ExperimentCollection(path, quiet=True)
    rng = random.Random(1)
    for index in range(runs):
        with collection.new_experiment(lr=rng.choice([0.1, 0.01, 0.001]), model=rng.choice(["mlp", "cnn"]),
                                       seed=index) as experiment:
            train = Recorder(stage="train").set_parent(experiment)
            for step in range(per_run):
                train.push(step=step, loss=rng.random())


def cpu_seconds(process: psutil.Process) -> float:
    """The CPU time a process has used so far, user and system."""
    times = process.cpu_times()
    return times.user + times.system


@contextmanager
def server(path: Path, source: Path | None) -> Iterator[tuple[str, httpx.Client, psutil.Process, float]]:
    """``rigorous-recorder ui path`` in its own process: its URL, a client holding its cookie,
    the process (for its CPU time), and the seconds from the command to its URL printed."""
    environment = dict(os.environ, PYTHONPATH=str(source / "src")) if source else None
    began = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "rigorous_recorder", "ui", str(path)], stdout=subprocess.PIPE,
                               text=True, env=environment)
    try:
        url = re.search(r"http://\S+", process.stdout.readline()).group(0)
        started = time.perf_counter() - began
        client = httpx.Client(base_url=url.split("?")[0], timeout=120)
        client.get("/", params={"token": url.split("token=")[1]}).raise_for_status()
        with closing(client):
            yield url, client, psutil.Process(process.pid), started
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)


def timed_get(client: httpx.Client, path: str, **params: object) -> tuple[float, httpx.Response]:
    start = time.perf_counter()
    response = client.get(path, params=params)
    response.raise_for_status()
    return time.perf_counter() - start, response


def run_ids(client: httpx.Client) -> list[str]:
    """The runs of the collection, oldest first (either shape of /api/runs: rows, or columns of changed rows)."""
    answer = client.get("/api/runs").json()
    return answer["order"] if "order" in answer else [run["run_id"] for run in answer["runs"]]


@contextmanager
def chromium_page() -> Iterator[object]:
    """A page of Debian's headless Chromium, driven by Playwright, on about:blank."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto("about:blank")
        try:
            yield page
        finally:
            browser.close()


def paint_times(page: object, url: str, ready: str, mark: str, served_by: psutil.Process,
                other_view: str = "") -> list[tuple[float, float, float, float]]:
    """For a first visit as soon as the server printed its URL, after a reload, and (given
    ``other_view``, a URL hash) for a page asking for another view: (seconds from the
    navigation's start in Python to the page's ``mark``, read on the page's own clock
    (``performance.timeOrigin`` + the mark: no Playwright round trip in it), the mark in
    seconds from the page's navigation start, seconds until Playwright saw ``ready`` (its
    script injection and polling included), the server's CPU seconds meanwhile)."""
    times = []
    navigations = [lambda: page.goto(url), page.reload]
    if other_view:
        navigations.append(lambda: (page.goto("about:blank"), page.goto(f"{url}#{other_view}")))
    for navigate in navigations:
        cpu = cpu_seconds(served_by)
        issued, start = time.time(), time.perf_counter()
        navigate()
        page.wait_for_function(ready, timeout=120_000, polling=10)
        seen = time.perf_counter() - start
        origin, marked = page.evaluate(
            f"[performance.timeOrigin, performance.getEntriesByName('{mark}').map(m => m.startTime)[0]]")
        times.append(((origin + marked) / 1000 - issued, marked / 1000, seen, cpu_seconds(served_by) - cpu))
    return times


def shown(times: list[tuple[float, float, float, float]]) -> str:
    return " / ".join(f"{drawn:.2f} s (mark {marked:.2f} s, Playwright {seen:.2f} s), server CPU {cpu:.2f} s"
                      for drawn, marked, seen, cpu in times)


def live_polls(many: Path, live_records: int, source: Path | None) -> list[tuple[str, str, str]]:
    """Median and worst poll while a run records into a copy of the many-runs collection."""
    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / "polls"
        shutil.copytree(many.with_name(many.name + ".collection"), copy.with_name("polls.collection"))
        recorder = subprocess.Popen([sys.executable, "-c", LIVE_RUN, str(copy), str(live_records)],
                                    stdout=subprocess.PIPE, text=True)
        try:
            recorder.stdout.readline()  # its first records are flushed
            with server(copy, source) as (_, client, served_by, _):
                live = run_ids(client)[-1]
                version, runs, curves, sizes = 0, [], [], []
                cpu = cpu_seconds(served_by)
                for _ in range(POLLS):
                    began = time.perf_counter()
                    seconds, answer = timed_get(client, "/api/runs", since=version)
                    version = answer.json().get("version", 0)
                    runs.append(seconds)
                    seconds, curve = timed_get(client, "/api/curves", runs=live, y="loss", x="step", buckets=1238)
                    curves.append(seconds)
                    sizes.append((len(answer.content), curve.json()["series"][0]["x"][-1]))
                    time.sleep(max(0.0, POLL_SECONDS - (time.perf_counter() - began)))
                cpu = cpu_seconds(served_by) - cpu
        finally:
            recorder.kill()
            recorder.wait(timeout=60)
    grown = f"{sizes[0][1] + 1:,.0f} to {sizes[-1][1] + 1:,.0f}"
    return [
        (f"live poll, 1,000 runs (a copy: no pack matches its files) + 1 running ({grown} records): "
         "/api/runs since the last poll, median / worst",
         f"{statistics.median(runs) * 1000:.0f} / {max(runs) * 1000:.0f} ms, "
         f"{statistics.median(size for size, _ in sizes) / 1024:.1f} KiB", ""),
        ("same polls: the running run's /api/curves, median / worst",
         f"{statistics.median(curves) * 1000:.0f} / {max(curves) * 1000:.0f} ms", ""),
        ("same polls: the server's CPU per poll (both requests)", f"{cpu / POLLS * 1000:.0f} ms", ""),
    ]


class Rows(list):
    """The table's rows, each with the load average when it was measured."""

    def append(self, row: tuple[str, str, str]) -> None:
        super().append((*row, f"{os.getloadavg()[0]:.1f}"))

    def extend(self, rows: list[tuple[str, str, str]]) -> None:
        for row in rows:
            self.append(row)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000, help="records of the long run")
    parser.add_argument("--runs", type=int, default=1_000, help="runs of the many-runs collection")
    parser.add_argument("--live-records", type=int, default=500_000, help="records the live run starts with")
    parser.add_argument("--data", type=Path, help="keep the recorded collections here, and reuse them")
    parser.add_argument("--source", type=Path, help="serve from this source tree (its src/ folder)")
    args = parser.parse_args()
    browser = CHROMIUM.exists()
    if not browser:
        print("(no /usr/bin/chromium: browser timings skipped)", file=sys.stderr)
    with tempfile.TemporaryDirectory() as folder:
        root = args.data or Path(folder)
        for name, record, size in (("long", record_long_run, args.records), ("short", record_long_run, 10_000),
                                   ("many", record_many_runs, args.runs)):
            if not (root / f"{name}.collection").exists():
                start = time.perf_counter()
                record(root / name, size)
                print(f"recorded {name} ({size:,}) in {time.perf_counter() - start:.1f} s", file=sys.stderr)

        rows = Rows()
        with ExitStack() as stack:
            page = stack.enter_context(chromium_page()) if browser else None
            url, client, served_by, started = stack.enter_context(server(root / "long", args.source))
            if browser:
                times = paint_times(page, url, "window.rrDashboard && rrDashboard.draws > 0", "rr-first-chart",
                                    served_by, other_view="x=")
                rows.append((f"first paint, one {args.records:,}-record run (fresh server / reload / x = record "
                             "order, a curve not read yet)", shown(times), "1.5 s"))
            rows.append((f"server start, one {args.records:,}-record run (command to URL printed)", f"{started:.2f} s",
                         ""))
            (run,) = run_ids(client)
            for width in WIDTHS:
                seconds, answer = timed_get(client, "/api/curves", runs=run, y="loss", x="step", buckets=width)
                points = len(answer.json()["series"][0]["x"])
                rows.append((f"/api/curves, {args.records:,} records, {width} px wide (warm)",
                             f"{len(answer.content) / 1024:.0f} KiB, {points:,} points, {seconds * 1000:.0f} ms",
                             f"<= {4 * width:,} points"))
        with server(root / "short", args.source) as (url, client, _, _):
            (run,) = run_ids(client)
            for width in WIDTHS:
                _, answer = timed_get(client, "/api/curves", runs=run, y="loss", x="step", buckets=width)
                points = len(answer.json()["series"][0]["x"])
                rows.append((f"/api/curves, 10,000 records, {width} px wide",
                             f"{len(answer.content) / 1024:.0f} KiB, {points:,} points", f"<= {4 * width:,} points"))

        unpacked = root / "many-unpacked"
        if not unpacked.with_name(unpacked.name + ".collection").exists():  # the same runs, each read from its folder
            shutil.copytree(root / "many.collection", unpacked.with_name(unpacked.name + ".collection"),
                            ignore=lambda folder, names: [CATALOG_FOLDER] if Path(folder).parent == root else [])
        for collection, how in ((root / "many", "packed by the catalog"), (unpacked, "no packs")):
            with server(collection, args.source) as (url, client, _, started):
                rows.append((f"server start, {args.runs:,} runs, {how} (command to URL printed)", f"{started:.2f} s",
                             ""))
                first, _ = timed_get(client, "/api/runs")
                warm, answer = timed_get(client, "/api/runs")
                rows.append((f"/api/runs, {args.runs:,} runs, {how} (first / again)", f"{first:.2f} s / {warm:.2f} s, "
                             f"{len(answer.content) / 1024:.0f} KiB", ""))
                stats, _ = timed_get(client, "/api/stats", metric="loss", x="step")
                cached, _ = timed_get(client, "/api/stats", metric="loss", x="step")
                rows.append((f"/api/stats (last/min/max of loss), {args.runs:,} runs, {how} (first / cached)",
                             f"{stats:.2f} s / {cached:.2f} s", ""))
            if browser:
                with chromium_page() as page, server(collection, args.source) as (url, client, served_by, _):
                    ready = f"document.querySelector('#runs-count').textContent.endsWith('of {args.runs} runs')"
                    times = paint_times(page, url, ready, "rr-first-table", served_by)
                    rows.append((f"table load in the page, {args.runs:,} runs, {how}, first 100 rows "
                                 "(fresh server / reload)", shown(times), "1 s"))
        rows.extend(live_polls(root / "many", args.live_records, args.source))

    print("| figure | measured | target | load |")
    print("| --- | ---: | ---: | ---: |")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
