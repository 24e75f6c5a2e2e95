"""Benchmark of the dashboard (``rigorous-recorder ui``), the three figures of issue #14.

1. First paint of one 1,000,000-record run: from the page's navigation to the chart drawn, in
   Debian's headless Chromium, on a fresh server (nothing cached) and again after a reload.
2. Table load of a collection of 1,000 runs: the /api/runs answer, and navigation to 1,000
   rows in the page.
3. Bytes per curve: the /api/curves answer for the 1,000,000-record run and for a 10,000-record
   run at several chart widths (buckets): bounded by the width, not the run's length.

Run: ``.venv/bin/python benchmarks/ui.py [--runs 1000] [--records 1000000]``
"""

from __future__ import annotations

import argparse
from contextlib import closing
import math
import random
import sys
import tempfile
import time
from pathlib import Path

import httpx

from rigorous_recorder import ExperimentCollection, Recorder
from rigorous_recorder.ui import serve

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
WIDTHS = (400, 800, 1600)


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


def timed_get(client: httpx.Client, path: str, **params: object) -> tuple[float, httpx.Response]:
    start = time.perf_counter()
    response = client.get(path, params=params)
    response.raise_for_status()
    return time.perf_counter() - start, response


def client_for(dashboard) -> httpx.Client:
    """A client of ``dashboard`` holding its token cookie (httpx sends the token once, as a browser)."""
    client = httpx.Client(base_url=dashboard.url.split("?")[0], timeout=120)
    client.get("/", params={"token": dashboard.url.split("token=")[1]}).raise_for_status()
    return client


def paint_times(url: str, ready: str) -> tuple[float, float]:
    """Seconds from navigation to ``ready`` (a JS condition): first visit, then after a reload."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto("about:blank")
        start = time.perf_counter()
        page.goto(url)
        page.wait_for_function(ready, timeout=120_000, polling=10)
        first = time.perf_counter() - start
        start = time.perf_counter()
        page.reload()
        page.wait_for_function(ready, timeout=120_000, polling=10)
        again = time.perf_counter() - start
        browser.close()
    return first, again


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000, help="records of the long run")
    parser.add_argument("--runs", type=int, default=1_000, help="runs of the many-runs collection")
    args = parser.parse_args()
    browser = CHROMIUM.exists()
    if not browser:
        print("(no /usr/bin/chromium: browser timings skipped)", file=sys.stderr)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        start = time.perf_counter()
        record_long_run(root / "long", args.records)
        record_long_run(root / "short", 10_000)
        print(f"recorded {args.records:,} records in {time.perf_counter() - start:.1f} s", file=sys.stderr)
        start = time.perf_counter()
        record_many_runs(root / "many", args.runs)
        print(f"recorded {args.runs:,} runs in {time.perf_counter() - start:.1f} s", file=sys.stderr)

        rows = []
        dashboard = serve(root / "long")
        try:
            if browser:
                first, again = paint_times(dashboard.url, "window.rrDashboard && rrDashboard.draws > 0")
                rows.append((f"first paint, one {args.records:,}-record run (fresh server / reload)",
                             f"**{first:.2f} s** / {again:.2f} s", "1.5 s"))
            with closing(client_for(dashboard)) as client:
                (run,) = client.get("/api/runs").json()["runs"]
                for width in WIDTHS:
                    seconds, answer = timed_get(client, "/api/curves", runs=run["run_id"], y="loss", x="step",
                                                buckets=width)
                    points = len(answer.json()["series"][0]["x"])
                    rows.append((f"/api/curves, {args.records:,} records, {width} px wide (warm)",
                                 f"{len(answer.content) / 1024:.0f} KiB, {points:,} points, {seconds * 1000:.0f} ms",
                                 f"<= {4 * width:,} points"))
        finally:
            dashboard.stop()
        dashboard = serve(root / "short")
        try:
            with closing(client_for(dashboard)) as client:
                (run,) = client.get("/api/runs").json()["runs"]
                for width in WIDTHS:
                    _, answer = timed_get(client, "/api/curves", runs=run["run_id"], y="loss", x="step",
                                          buckets=width)
                    points = len(answer.json()["series"][0]["x"])
                    size = f"{len(answer.content) / 1024:.0f} KiB, {points:,} points"
                    rows.append((f"/api/curves, 10,000 records, {width} px wide", size, f"<= {4 * width:,} points"))
        finally:
            dashboard.stop()

        dashboard = serve(root / "many")
        try:
            with closing(client_for(dashboard)) as client:
                first, _ = timed_get(client, "/api/runs")
                warm, answer = timed_get(client, "/api/runs")
                count = len(answer.json()["runs"])
                rows.append((f"/api/runs, {count:,} runs (first / again)", f"{first:.2f} s / {warm:.2f} s", ""))
                stats, _ = timed_get(client, "/api/stats", metric="loss", x="step")
                cached, _ = timed_get(client, "/api/stats", metric="loss", x="step")
                rows.append((f"/api/stats (last/min/max of loss), {count:,} runs (first / cached)",
                             f"{stats:.2f} s / {cached:.2f} s", ""))
            if browser:
                ready = f"document.querySelector('#runs-count').textContent.endsWith('of {args.runs} runs')"
                first, again = paint_times(dashboard.url, ready)
                rows.append((f"table load in the page, {args.runs:,} runs, first 100 rows (first visit / reload)",
                             f"**{first:.2f} s** / {again:.2f} s", "1 s"))
        finally:
            dashboard.stop()

    print("| figure | measured | target |")
    print("| --- | ---: | ---: |")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
