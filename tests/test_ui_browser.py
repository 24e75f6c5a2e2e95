"""The dashboard in a real browser (Debian's chromium, driven by Playwright), on a real collection
with good, failed, crashed and live runs."""

from __future__ import annotations

import math
import os
import queue
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote, urlencode

import pytest

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium: apt-get install chromium"),
]
playwright = pytest.importorskip("playwright.sync_api")
pytest.importorskip("starlette")

from rigorous_recorder import ExperimentCollection, Recorder  # noqa: E402
from rigorous_recorder.ui import serve  # noqa: E402

from .test_ui import record_crashed_run  # noqa: E402


CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
#: Where `RIGOROUS_RECORDER_UI_SCREENSHOT=docs/ui.png pytest tests/test_ui_browser.py` puts the README's picture.
SCREENSHOT = os.environ.get("RIGOROUS_RECORDER_UI_SCREENSHOT")
LIVE_SECONDS = 2.0  # issue #14: new records and a kill show within 2 s, without a reload
TRAINING_SECONDS = 30.0  # the wall-clock time the good runs' wall_time values span

LIVE_RUN = """
import sys, time
from rigorous_recorder import ExperimentCollection, Recorder
collection = ExperimentCollection(sys.argv[1], quiet=True, flush_interval=60)
experiment = collection.new_experiment(lr=0.05, model="live")
train = Recorder(stage="train").set_parent(experiment.recorder)
step = 0
while True:
    for _ in range(50):
        train.push(step=step, loss=1 / (step + 1))
        step += 1
    experiment.flush()
    print("flushed", step, time.time(), flush=True)
    time.sleep(0.3)
"""


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Three good runs that push wall_time, a failed one and a crashed one (killed with SIGKILL)."""
    path = tmp_path_factory.mktemp("browser") / "study"
    collection = ExperimentCollection(path, quiet=True)
    noise = random.Random(0)
    for model, lr in (("mlp", 0.1), ("mlp", 0.01), ("cnn", 0.01)):
        with collection.new_experiment(lr=lr, model=model) as experiment:
            train = Recorder(stage="train").set_parent(experiment)
            begun = time.time()
            for step in range(3000):
                loss = 0.2 + 2 * math.exp(-step * lr / 20) + noise.gauss(0, 0.08) + (3.0 if step == 1500 else 0.0)
                train.push(step=step, loss=loss, wall_time=begun + step * TRAINING_SECONDS / 3000)
    with pytest.raises(ZeroDivisionError), collection.new_experiment(lr=1.0, model="rnn") as experiment:
        Recorder(stage="train").set_parent(experiment).push(step=0, loss=9.0)
        _ = 1 / 0
    record_crashed_run(path)
    return path


class LiveRun:
    """A run recording in another process, flushing every 50 records, until it is killed."""

    def __init__(self, study: Path) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", LIVE_RUN, str(study)], stdout=subprocess.PIPE,
                                        text=True)
        self.flushes: queue.Queue[tuple[int, float]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.flushes.get(timeout=120)  # it started

    def _read(self) -> None:
        for line in self.process.stdout:
            _, step, at = line.split()
            self.flushes.put((int(step), float(at)))

    def next_flush(self) -> tuple[int, float]:
        """(records flushed so far, when) of the next flush from now."""
        now = time.time()
        while True:
            flushed, at = self.flushes.get(timeout=30)
            if at > now:
                return flushed, at


@pytest.fixture(scope="module")
def live_run(study):
    live = LiveRun(study)
    yield live
    live.process.kill()
    live.process.wait(timeout=30)


@pytest.fixture(scope="module")
def dashboard(study, live_run):
    running = serve(study)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as driver:
        chromium = driver.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def console():
    """Every console error and uncaught exception of the page."""
    return []


@pytest.fixture(scope="module")
def page(browser, dashboard, console):
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    tab = context.new_page()
    tab.on("console", lambda message: console.append(message.text) if message.type == "error" else None)
    tab.on("pageerror", lambda error: console.append(str(error)))
    tab.goto(dashboard.url)
    tab.wait_for_function("window.rrDashboard && rrDashboard.chart && rrDashboard.stats")
    yield tab
    context.close()


@pytest.fixture(autouse=True)
def no_console_errors(console):
    yield
    assert console == []


def rows(page) -> list[dict]:
    return page.eval_on_selector_all("#runs tbody tr", """rows => rows.map(row => ({
        run: row.dataset.run, status: row.dataset.status, badge: row.querySelector('.badge').textContent,
        error: row.querySelector('td.error-text').textContent, checked: row.querySelector('input').checked}))""")


def select_all(page) -> None:
    """Select every run; return once the chart has drawn the new curves (a fetch begun for an earlier
    selection may end first: wait until the curves are those of the whole selection)."""
    fetches, draws = page.evaluate("[rrDashboard.curveFetches, rrDashboard.draws]")
    page.click("#select-all")
    page.wait_for_function(f"rrDashboard.curveFetches > {fetches}")
    page.wait_for_function(f"rrDashboard.draws > {draws}")
    page.wait_for_function("rrDashboard.curves.series.map(s => s.run_id).join() === rrDashboard.state.sel.join()"
                           " && rrDashboard.chart.series.length - 1 === rrDashboard.state.sel.length")


def test_table_shows_every_run_with_its_badge_and_error(page):
    """Six runs: three ok, the failed one with its exception, the crashed one, the live one."""
    page.wait_for_function("document.querySelectorAll('#runs tbody tr').length === 6")
    table = rows(page)
    assert [row["badge"] for row in table] == ["ok", "ok", "ok", "error", "crashed", "running"]
    assert [row["status"] for row in table] == [row["badge"] for row in table]
    assert table[3]["error"] == "ZeroDivisionError: division by zero"
    assert "process" in table[4]["error"]
    assert page.text_content("#runs thead").count("loss") == 3  # last, min and max of the metric


def test_where_filters_the_table_and_shows_duckdbs_error(page):
    """The where box filters runs with SQL over experiments; bad SQL is named, and the page stays live."""
    page.fill("#where", "model = 'mlp'")
    page.press("#where", "Enter")
    page.wait_for_function("document.querySelectorAll('#runs tbody tr').length === 2")
    assert "where=model+%3D+%27mlp%27" in page.url  # the query lives in the URL
    page.fill("#where", "nope = 1")
    page.press("#where", "Enter")
    page.wait_for_function("document.querySelector('#runs-message').textContent.includes('\"nope\" not found')")
    polls = page.evaluate("rrDashboard.polls")
    page.wait_for_function(f"rrDashboard.polls > {polls} + 1")
    assert page.text_content("#live") == "live"
    page.fill("#where", "")
    page.press("#where", "Enter")
    page.wait_for_function("document.querySelectorAll('#runs tbody tr').length === 6")
    assert page.text_content("#runs-message") == ""


def test_sort_by_a_header_and_hide_failed_runs_live_in_the_url(page):
    """A click on a header sorts (again: descending); "hide failed" drops the error and
    crashed runs; both are kept in the URL."""
    page.click('#runs th[data-key="info.lr"]')
    page.wait_for_function("rrDashboard.state.sort === 'info.lr:asc'")
    lrs = column_values(page, "info.lr")
    assert lrs == sorted(lrs) and len(lrs) == 6
    page.click('#runs th[data-key="info.lr"]')
    page.wait_for_function("rrDashboard.state.sort === 'info.lr:desc'")
    assert column_values(page, "info.lr") == sorted(lrs, reverse=True)
    page.check("#hide-failed")
    page.wait_for_function("document.querySelectorAll('#runs tbody tr').length === 4")
    assert {row["status"] for row in rows(page)} == {"ok", "running"}
    assert "sort=info.lr%3Adesc" in page.url and "hide=1" in page.url
    page.uncheck("#hide-failed")
    page.wait_for_function("document.querySelectorAll('#runs tbody tr').length === 6")


def column_values(page, key: str) -> list[float]:
    """The numbers of one column of the runs table, top to bottom."""
    return [float(text) for text in page.evaluate(f"""() => {{
        const at = [...document.querySelectorAll('#runs thead th')].findIndex(th => th.dataset.key === '{key}');
        return [...document.querySelectorAll('#runs tbody tr')].map(row => row.cells[at].textContent);
    }}""")]


def test_chart_has_one_series_per_selected_run_within_the_bucket_bound(page):
    """0 < points <= 2 x the chart's pixel columns for each run's curve (buckets two pixels wide,
    at most first, last, min and max of each), and the canvas really drew the lines."""
    select_all(page)
    view = page.evaluate("""({selected: rrDashboard.state.sel, buckets: rrDashboard.buckets,
        pixels: document.getElementById('chart').clientWidth,
        series: rrDashboard.curves.series.map(s => ({run: s.run_id, kind: s.kind, points: s.x.length})),
        plotted: rrDashboard.chart.series.length - 1})""")
    assert [series["run"] for series in view["series"]] == view["selected"] and len(view["selected"]) == 6
    assert view["plotted"] == 6 and view["pixels"] >= 400 and view["buckets"] <= view["pixels"] / 2 + 1
    assert all(0 < series["points"] <= 4 * view["buckets"] <= 2 * view["pixels"] + 4 for series in view["series"])
    assert colored_pixels(page) > 500


def colored_pixels(page) -> int:
    """How many pixels of the chart's canvas are opaque and coloured: curves, not the grey grid or axes."""
    return page.evaluate("""() => {
        const canvas = document.querySelector('#chart canvas');
        const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
        let count = 0;
        for (let i = 0; i < pixels.length; i += 4) {
            const [r, g, b, a] = [pixels[i], pixels[i + 1], pixels[i + 2], pixels[i + 3]];
            if (a > 200 && Math.max(r, g, b) - Math.min(r, g, b) > 60) count++;
        }
        return count;
    }""")


def test_hovering_the_chart_shows_the_values_under_the_cursor(page):
    """The legend shows x and each curve's y at the cursor's position."""
    box = page.locator("#chart .u-over").bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5)
    page.wait_for_function("rrDashboard.chart.cursor.idx !== null && rrDashboard.chart.cursor.idx !== undefined")
    index = page.evaluate("rrDashboard.chart.cursor.idx")
    x = page.evaluate(f"rrDashboard.chart.data[0][{index}]")
    shown = page.eval_on_selector_all(".u-legend .u-value", "cells => cells.map(cell => cell.textContent)")
    assert shown[0].replace(",", "") == f"{x:g}" or float(shown[0].replace(",", "")) == pytest.approx(x)
    assert any(re.fullmatch(r"-?[0-9.,]+(e-?[0-9]+)?", value) for value in shown[1:])
    page.mouse.move(0, 0)


def test_group_by_draws_a_mean_line_and_band_per_value_on_a_log_scale(page):
    """Grouped by model: one mean line with a min-max band per model among the selected runs."""
    page.select_option("#by", "model")
    page.wait_for_function("rrDashboard.curves.series.every(s => s.kind === 'group')")
    page.check("#log")
    page.wait_for_function("rrDashboard.chart.scales.y.distr === 3")
    assert "by=model" in page.url and "log=1" in page.url
    groups = page.evaluate("rrDashboard.curves.series.map(s => s.group)")
    assert groups == ["cnn", "live", "mlp", "rnn"]
    assert page.evaluate("rrDashboard.chart.bands.length") == len(groups)
    assert page.evaluate("rrDashboard.chart.series.length") == 1 + 3 * len(groups)  # x, then mean, min, max
    page.uncheck("#log")
    page.select_option("#by", "")
    page.wait_for_function("rrDashboard.curves.series.every(s => s.kind === 'line')")


def test_zoom_fetches_the_visible_range_and_lives_in_the_url(page):
    """Dragging over the chart asks for the zoomed range; a reload keeps selection, axes and zoom."""
    box = page.locator("#chart .u-over").bounding_box()
    before, whole = page.evaluate("[rrDashboard.curveFetches, rrDashboard.curves.x_range]")
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.2, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.3, y, steps=5)
    page.mouse.up()
    page.wait_for_function(f"""rrDashboard.curveFetches > {before} && rrDashboard.state.zoom
        && rrDashboard.curves.x_range[0] === rrDashboard.state.zoom[0]""")  # a poll's fetch may land first
    zoom = page.evaluate("rrDashboard.state.zoom")
    assert page.evaluate("rrDashboard.curves.x_range") == zoom
    assert 0 < zoom[1] - zoom[0] < 0.2 * (whole[1] - whole[0])  # a tenth of the width was dragged over
    state = page.evaluate("rrDashboard.state")
    page.reload()
    page.wait_for_function("window.rrDashboard && rrDashboard.chart")
    again = page.evaluate("rrDashboard.state")
    assert (again["sel"], again["y"], again["x"], again["zoom"]) == (state["sel"], state["y"], state["x"], zoom)
    page.dblclick("#chart .u-over")
    page.wait_for_function("rrDashboard.state.zoom === null")


def test_x_is_wall_time_or_relative_time_when_every_chosen_run_records_it(page):
    """With runs that record no wall_time chosen, the time choices are disabled and say why;
    with only runs that push wall_time, x shows dates, or seconds since each run started."""
    select_all(page)
    wall = page.locator('#x option[value="time:wall"]')
    assert wall.is_disabled() and "record no wall_time or timestamp" in wall.get_attribute("title")
    assert page.locator('#x option[value="time:relative"]').is_disabled()
    timed = [row["run"] for row in rows(page) if row["status"] == "ok"]
    page.click("#select-none")
    for run in timed:
        fetches = page.evaluate("rrDashboard.curveFetches")
        page.check(f'#runs input[data-run="{run}"]')
        page.wait_for_function(f"rrDashboard.curveFetches > {fetches}")
    assert not wall.is_disabled()
    page.select_option("#x", "time:wall")
    page.wait_for_function("rrDashboard.state.time === 'wall' && rrDashboard.curves.series.length === 3 "
                           "&& rrDashboard.curves.series.every(s => s.x[0] > 1e9)")
    assert page.evaluate("rrDashboard.chart.scales.x.time") is True  # dates on the axis
    page.select_option("#x", "time:relative")
    page.wait_for_function("rrDashboard.state.time === 'relative' && rrDashboard.curves.x_range[0] < 1e9")
    low, high = page.evaluate("rrDashboard.curves.x_range")
    assert 0 <= low < 5 and TRAINING_SECONDS * 0.99 < high < TRAINING_SECONDS + 5
    assert page.evaluate("rrDashboard.chart.scales.x.time") is False
    assert "time=relative" in page.url
    page.select_option("#x", "column:step")
    page.wait_for_function("rrDashboard.state.time === '' && rrDashboard.curves.x_range[1] === 2999")


def test_sql_box_shows_a_result_and_duckdb_errors(page):
    page.fill("#sql", "SELECT count(*) AS n FROM records WHERE model = 'mlp'")
    page.click("#run-sql")
    page.wait_for_function("document.querySelector('#sql-result').dataset.rows === '1'")
    assert page.text_content("#sql-result tbody td") == "6000"
    page.fill("#sql", "SELECT nope FROM records")
    page.click("#run-sql")
    page.wait_for_selector("#sql-error:not([hidden])")
    assert 'Referenced column "nope" not found' in page.text_content("#sql-error")
    assert page.inner_html("#sql-result") == ""


def test_screenshot(page, dashboard, tmp_path):
    """The README's picture, from this browser (written to docs/ only when asked): smoothed
    curves of the good runs and the live one over their faint raw values, and a query."""
    shown = [row["run"] for row in rows(page) if row["status"] in ("ok", "running")]
    query = "SELECT model, count(*) AS runs, sum(records) AS records FROM experiments GROUP BY model ORDER BY model"
    state = urlencode({"sel": ",".join(shown), "y": "loss", "x": "step", "smooth": 0.9, "sql": query}, quote_via=quote)
    page.goto(f"{dashboard.url}#{state}")
    page.reload()
    page.wait_for_function("window.rrDashboard && rrDashboard.chart && rrDashboard.stats && rrDashboard.draws > 0")
    page.wait_for_function("document.querySelector('#sql-result').dataset.rows === '4'")
    kinds = page.evaluate("rrDashboard.curves.series.map(s => s.kind)")
    assert kinds == ["line", "raw"] * len(shown)
    target = Path(SCREENSHOT) if SCREENSHOT else tmp_path / "ui.png"
    page.screenshot(path=str(target), full_page=True)
    assert target.stat().st_size > 10_000


def test_live_run_grows_and_a_kill_shows_as_crashed(page, live_run):
    """Flushed records reach the chart within 2 s; after a SIGKILL the badge says crashed within 2 s."""
    live = rows(page)[-1]["run"]
    if live not in page.evaluate("rrDashboard.state.sel"):
        select_all(page)
    last_step = curve_end(page, live)
    flushed, at = live_run.next_flush()
    page.wait_for_function(f"""rrDashboard.curves.series.some(s => s.run_id === '{live}'
        && s.x[s.x.length - 1] >= {flushed - 1})""", timeout=10_000)
    seen = time.time()
    assert seen - at < LIVE_SECONDS, f"flushed records took {seen - at:.2f} s to show"
    assert curve_end(page, live) > last_step
    live_run.process.send_signal(signal.SIGKILL)
    killed = time.time()
    page.wait_for_function(f"""document.querySelector('#runs tr[data-run="{live}"]').dataset.status === 'crashed'""",
                           timeout=10_000)
    assert time.time() - killed < LIVE_SECONDS, f"the kill took {time.time() - killed:.2f} s to show"


def test_a_page_opened_on_an_empty_collection_follows_its_first_run(browser, console, tmp_path):
    """Opened before any run exists, the page shows the first run, with step as x, without a reload."""
    collection = ExperimentCollection(tmp_path / "new", quiet=True)
    dashboard = serve(collection)
    context = browser.new_context()
    try:
        page = context.new_page()
        page.on("console", lambda message: console.append(message.text) if message.type == "error" else None)
        page.goto(dashboard.url)
        page.wait_for_function("rrDashboard.polls > 0")
        assert page.text_content("#chart-message") == "no numeric columns yet"
        with collection.new_experiment(model="first") as experiment:
            Recorder().set_parent(experiment).push(step=5, loss=1.0)
        finished = time.time()
        page.wait_for_function("rrDashboard.draws > 0 && rrDashboard.curves.series.length === 1", timeout=10_000)
        assert time.time() - finished < LIVE_SECONDS
        assert page.evaluate("[rrDashboard.state.x, rrDashboard.curves.series[0].x]") == ["step", [5]]
    finally:
        context.close()
        dashboard.stop()


def curve_end(page, run_id: str) -> float:
    """The last x of the run's curve (its point count stops growing at 4 x buckets; its end does not)."""
    return page.evaluate(f"rrDashboard.curves.series.filter(s => s.run_id === '{run_id}')[0].x.at(-1)")
