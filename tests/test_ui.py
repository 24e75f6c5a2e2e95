"""The dashboard's server: what it reads, how it downsamples, what it refuses (no browser here)."""

from __future__ import annotations

import ast
import datetime
import hashlib
import importlib.metadata
import math
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from rigorous_recorder import ExperimentCollection, Recorder, cli  # noqa: E402
from rigorous_recorder.store.catalog import PACK_MIN_RUNS  # noqa: E402
from rigorous_recorder.store.journal import JournalDamage, JournalWriter, read_journal, tree_frame  # noqa: E402
from rigorous_recorder.ui import serve  # noqa: E402
from rigorous_recorder.ui._curves import Curve, debiased_ema, m4  # noqa: E402
from rigorous_recorder.ui._data import DashboardData  # noqa: E402
from rigorous_recorder.ui._views import MAX_VIEWS, StoppedView  # noqa: E402

STATIC = Path(__file__).resolve().parents[1] / "src" / "rigorous_recorder" / "ui" / "static"
UPLOT_VERSION = "1.6.32"
SPIKE = 1000.0
LONG_RUN = 20_000

CRASHING_RUN = """
import os, signal, sys
from rigorous_recorder import ExperimentCollection, Recorder
collection = ExperimentCollection(sys.argv[1], quiet=True)
experiment = collection.new_experiment(lr=0.5, model="rnn")
train = Recorder(stage="train").set_parent(experiment.recorder)
for step in range(7):
    train.push(step=step, loss=2.0)
collection.flush()
os.kill(os.getpid(), signal.SIGKILL)
"""


def record_crashed_run(path: Path) -> None:
    """A run whose process is killed with SIGKILL after flushing 7 records."""
    result = subprocess.run([sys.executable, "-c", CRASHING_RUN, str(path)], capture_output=True, timeout=120)
    assert result.returncode == -signal.SIGKILL, result.stderr


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Two good runs (the first with one spike), a long run, a failed run, a crashed run."""
    path = tmp_path_factory.mktemp("ui") / "study"
    collection = ExperimentCollection(path, quiet=True)
    for lr in (0.1, 0.01):
        with collection.new_experiment(lr=lr, model="mlp") as experiment:
            train = Recorder(stage="train").set_parent(experiment)
            test = Recorder(stage="test").set_parent(experiment)
            for step in range(1000):
                train.push(step=step, loss=SPIKE if (lr, step) == (0.1, 500) else 1 / (step + 1))
            test.push(step=999, accuracy=0.9)
    with collection.new_experiment(lr=0.001, model="long") as experiment:
        train = Recorder(stage="train").set_parent(experiment)
        for step in range(LONG_RUN):
            train.push(step=step, loss=float(step % 100))
    with pytest.raises(ValueError), collection.new_experiment(lr=0.5, model="rnn") as experiment:
        Recorder(stage="train").set_parent(experiment).push(step=0, loss=3.0)
        raise ValueError("diverged")
    record_crashed_run(path)
    return path


@pytest.fixture(scope="module")
def data(study):
    return DashboardData(study)


@pytest.fixture(scope="module")
def dashboard(study):
    running = serve(study)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(dashboard):
    with httpx.Client(base_url=dashboard.url.split("?")[0], timeout=30) as session:
        assert session.get("/", params={"token": token_of(dashboard)}).status_code == 200  # sets the cookie
        yield session


def http_rows(answer: dict) -> list[dict]:
    """The rows of an /api/runs answer, from its column-by-column ``changed`` part."""
    changed = dict(answer["changed"])
    info = changed.pop("info")
    rows = [dict(zip(changed, values)) for values in zip(*changed.values())]
    for index, row in enumerate(rows):
        row["info"] = {name: values[index] for name, values in info.items()}
    return rows


def token_of(dashboard) -> str:
    return dashboard.url.split("token=")[1]


def run_ids(data: DashboardData, model: str | None = None) -> list[str]:
    return [run["run_id"] for run in data.runs()["runs"] if model is None or run["info"]["model"] == model]


# -- the runs table --------------------------------------------------------------------------


def test_runs_table_has_every_run_with_its_status_and_error(data):
    """Each run appears once with its status; the failed run shows its exception."""
    runs = data.runs()["runs"]
    assert [(run["info"]["model"], run["status"]) for run in runs] == [
        ("mlp", "ok"), ("mlp", "ok"), ("long", "ok"), ("rnn", "error"), ("rnn", "crashed")]
    assert runs[3]["error"] == "ValueError: diverged"
    assert runs[4]["error"] and runs[4]["records"] == 7
    assert [run["records"] for run in runs[:3]] == [1001, 1001, LONG_RUN]
    assert [(run["experiment_number"], run["error_number"]) for run in runs] == [(1, 0), (2, 0), (3, 0), (4, 1), (4, 2)]
    starts = [run["start"] for run in runs]
    assert starts == sorted(starts) and time.time() - 600 < starts[0]
    assert all(run["duration"] >= 0 for run in runs[:4])  # seconds; the crashed run's as its run.json has it


def test_a_damaged_run_is_listed_with_the_reason(tmp_path):
    """A run whose run.json cannot be read shows as damaged, names the problem, and plots nothing."""
    collection = ExperimentCollection(tmp_path / "damaged", quiet=True)
    with collection.new_experiment(model="fine") as experiment:
        Recorder().set_parent(experiment).push(step=0, loss=1.0)
    (run,) = collection.runs
    broken = collection.path / "runs" / run["id"].replace("000001-", "000002-")
    shutil.copytree(collection.path / "runs" / run["id"], broken)
    (broken / "run.json").write_text("{ not json")
    data = DashboardData(tmp_path / "damaged")
    runs = data.runs()["runs"]
    assert [entry["status"] for entry in runs] == ["ok", "damaged"]
    assert "run.json" in runs[1]["error"]
    curves = data.curves([entry["run_id"] for entry in runs], "loss", "step")
    assert [len(series["x"]) for series in curves["series"]] == [1, 0]
    assert data.stats("loss", "step")["stats"] == {runs[0]["run_id"]: {"last": 1.0, "min": 1.0, "max": 1.0}}


def test_runs_where_filters_with_sql_over_experiments(data):
    """The where box is SQL over the experiments view."""
    assert [run["info"]["lr"] for run in data.runs(where="lr < 0.05 AND status = 'ok'")["runs"]] == [0.01, 0.001]


def test_where_reads_no_file(data):
    """The where box runs on a database as locked as the SQL box's."""
    with pytest.raises(ValueError, match="Permission Error"):
        data.runs(where="run_id IN (SELECT * FROM read_csv('/etc/passwd'))")


def test_views_of_runs_that_stop_one_by_one_stay_few(tmp_path):
    """Each run that stops joins a small view of its own; past MAX_VIEWS the smaller half is
    merged, so the views stay few and the big one is not rebuilt for each new run."""
    collection = ExperimentCollection(tmp_path / "sweep", quiet=True, record_context=False)
    data = DashboardData(tmp_path / "sweep")
    for index in range(MAX_VIEWS + 2):  # one merge
        with collection.new_experiment(seed=index) as experiment:
            Recorder().set_parent(experiment).push(step=0, loss=float(index))
        data._scanned = -math.inf
        assert data.stats("loss")["stats"][data.runs()["runs"][-1]["run_id"]]["last"] == index
        assert len(data._views.views) <= MAX_VIEWS
    assert sorted(run_id for view in data._views.views for run_id in view.members) == run_ids(data)


def test_stats_give_last_min_max_of_the_metric(data):
    """last follows x; min and max see the spike."""
    stats = data.stats("loss", "step")["stats"]
    first = stats[run_ids(data, "mlp")[0]]
    assert first == {"last": 1 / 1000, "min": 1 / 1000, "max": SPIKE}


def test_the_same_figures_asked_at_once_are_queried_once(study, monkeypatch):
    """A reloaded page asks for last/min/max while the first page's query still runs: the
    second request waits for that query's figures instead of running it again."""
    data = DashboardData(study)
    queried = counted(monkeypatch, "stats")
    with ThreadPoolExecutor(max_workers=3) as pool:
        answers = list(pool.map(lambda _: data.stats("loss", "step"), range(3)))
    assert answers[0] == answers[1] == answers[2] and answers[0]["stats"]
    assert len(queried) == len(data._views.views)


def test_the_same_curves_asked_at_once_are_read_once(study, monkeypatch):
    """Two requests for curves not yet in memory (the page's first request while the server
    prepares them): the second waits for the first's read instead of reading them again."""
    data = DashboardData(study)
    read = counted(monkeypatch, "curves")
    runs = run_ids(data, "mlp")
    with ThreadPoolExecutor(max_workers=3) as pool:
        answers = list(pool.map(lambda _: data.curves(runs, "loss", "step", buckets=100), range(3)))
    assert answers[0] == answers[1] == answers[2] and answers[0]["points"] > 0
    assert read == [2]


def test_prepare_reads_what_the_first_page_asks_for(study, monkeypatch):
    """After prepare() (the server runs it while the user opens the page), the first page's
    request reads no run again: it only downsamples the curves in memory."""
    data = DashboardData(study)
    data.prepare()
    read = counted(monkeypatch, "curves")
    first = data.start(buckets=900)
    assert first["curves"]["points"] > 0 and len(first["selection"]) == 3
    assert read == []


def counted(monkeypatch, method: str) -> list[int]:
    """The number of runs each call of a StoppedView method was given; each call takes 0.3 s,
    as a read of many runs does."""
    calls = []
    real = getattr(StoppedView, method)

    def slow(view, run_ids, *args):
        calls.append(len(run_ids))
        time.sleep(0.3)
        return real(view, run_ids, *args)

    monkeypatch.setattr(StoppedView, method, slow)
    return calls


def test_metrics_are_the_records_own_numeric_columns(data):
    """Inherited info (lr) is not offered as a metric; step is the default x."""
    columns = data.columns()
    assert set(columns["metrics"]) == {"step", "loss", "accuracy"}
    assert columns["default_x"] == "step"
    assert {"lr", "model"} <= set(columns["groups"])


# -- curves ----------------------------------------------------------------------------------


def test_downsampling_keeps_spikes_and_stays_within_four_points_per_bucket(data):
    """M4: first, last, min and max of each bucket survive; never more than 4 x buckets points."""
    curves = data.curves(run_ids(data, "mlp")[:1], "loss", "step", buckets=50)
    (series,) = curves["series"]
    assert 0 < len(series["x"]) <= 4 * 50
    assert SPIKE in series["y"] and series["x"][0] == 0 and series["x"][-1] == 999
    long = data.curves(run_ids(data, "long"), "loss", "step", buckets=100)["series"][0]
    assert len(long["x"]) <= 400 and min(long["y"]) == 0 and max(long["y"]) == 99


def test_zoom_returns_every_point_of_the_visible_range(data):
    """A zoomed range narrower than the buckets comes back at full resolution (plus one point each side)."""
    (series,) = data.curves(run_ids(data, "long"), "loss", "step", buckets=800, x_range=(5000, 5100))["series"]
    assert series["x"] == [float(step) for step in range(4999, 5102)]


def test_smoothing_is_applied_before_downsampling(data):
    """The smoothed value at a step is the same zoomed in or not: zooming does not change the curve."""
    run = run_ids(data, "long")
    whole = data.curves(run, "loss", "step", buckets=100, smoothing=0.9)["series"]
    zoomed = data.curves(run, "loss", "step", buckets=800, smoothing=0.9, x_range=(0, LONG_RUN / 2))["series"]
    line = dict(zip(zoomed[0]["x"], zoomed[0]["y"]))
    shared = [(x, y) for x, y in zip(whole[0]["x"], whole[0]["y"]) if x in line]
    assert shared and all(line[x] == pytest.approx(y, rel=1e-12) for x, y in shared)
    assert [item["kind"] for item in whole] == ["line", "raw"]


@pytest.mark.parametrize("weight", [0.0, 0.01, 0.5, 0.9, 0.999])
def test_smoothing_is_tensorboards_debiased_ema(weight):
    """Same values as TensorBoard's loop: last = last * w + (1 - w) * y; shown last / (1 - w^(i+1))."""
    values = np.random.default_rng(1).normal(size=5000).cumsum()
    expected, last = [], 0.0
    for index, value in enumerate(values):
        last = last * weight + (1 - weight) * value
        expected.append(last / (1 - weight ** (index + 1)))
    assert debiased_ema(values, weight) == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_group_by_gives_mean_line_and_min_max_band(data):
    """Grouped by model, the two mlp runs give one mean line between their min and max."""
    curves = data.curves(run_ids(data, "mlp"), "loss", "step", buckets=2000, group_by="model")
    (group,) = curves["series"]
    assert group["group"] == "mlp" and len(group["runs"]) == 2
    at = group["x"].index(10.0)
    assert (group["min"][at], group["y"][at], group["max"][at]) == (1 / 11, 1 / 11, 1 / 11)
    spike = group["x"].index(500.0)
    assert (group["min"][spike], group["max"][spike]) == (1 / 501, SPIKE)
    assert group["y"][spike] == pytest.approx((SPIKE + 1 / 501) / 2)


def test_concurrent_curve_requests_all_answer(data):
    """The server answers requests on several threads: none may trip over another's downsampling."""
    runs = run_ids(data, "mlp")
    requests = [{"group_by": "model"}, {}, {"smoothing": 0.5}, {"x_range": (10.0, 500.0)}] * 4
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda options: data.curves(runs, "loss", "step", buckets=300, **options), requests))
    assert all(answer["points"] > 0 for answer in answers)
    assert answers[1] == answers[5] == answers[13]


def test_without_a_step_column_x_is_the_records_order(tmp_path):
    """Records pushed without any step column are plotted in the order they were recorded."""
    collection = ExperimentCollection(tmp_path / "ordered", quiet=True)
    values = np.random.default_rng(2).permutation(50_000).astype(float)
    with collection.new_experiment() as experiment:
        recorder = Recorder().set_parent(experiment)
        for value in values:
            recorder.push(value=value)
    data = DashboardData(tmp_path / "ordered")
    (series,) = data.curves(run_ids(data), "value", "", buckets=1000, x_range=(1000.0, 1999.0))["series"]
    assert series["x"] == [float(index) for index in range(999, 2001)]
    assert series["y"] == values[999:2001].tolist()


def test_unknown_columns_and_runs_are_named(data):
    with pytest.raises(ValueError, match="unknown y column 'lr'; the records' numeric columns: "):
        data.curves(run_ids(data)[:1], "lr", "step")
    with pytest.raises(ValueError, match="no run 'nope'"):
        data.curves(["nope"], "loss", "step")


def test_m4_keeps_first_last_min_and_max_of_every_bucket():
    """Against a plain loop over random values with ties: every bucket's four points are kept."""
    rng = np.random.default_rng(3)
    x = np.sort(rng.integers(0, 500, 5000)).astype(float)
    curve = Curve(x, rng.integers(0, 20, 5000).astype(float))
    answer = m4(curve, 100.0, 400.0, 37)
    kept = list(zip(answer["x"], answer["y"]))
    assert kept == sorted(kept, key=lambda point: point[0]) and len(kept) <= 4 * 37 + 2
    bucket = np.minimum(np.floor((x - 100) / 300 * 37), 36)
    inside = (x >= 100) & (x <= 400)
    for index in range(37):
        members = np.flatnonzero(inside & (bucket == index))
        if len(members):
            ys = curve.y[members]
            assert (x[members[0]], ys[0]) in kept and (x[members[-1]], ys[-1]) in kept
            assert min(point[1] for point in kept if bucket_of(point[0]) == index) == ys.min()
            assert max(point[1] for point in kept if bucket_of(point[0]) == index) == ys.max()
    outside = [point for point in kept if not 100 <= point[0] <= 400]
    assert [point[0] for point in outside] == [x[inside.argmax() - 1], x[len(x) - inside[::-1].argmax()]]


def bucket_of(x: float) -> float:
    return min(np.floor((x - 100) / 300 * 37), 36)


# -- wall time -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def timed(tmp_path_factory):
    """A run that pushes wall_time with each record, two that record a timestamp column
    (aware, and naive local time), and one that records no time."""
    path = tmp_path_factory.mktemp("timed") / "study"
    collection = ExperimentCollection(path, quiet=True)
    with collection.new_experiment(model="wall") as experiment:
        train = Recorder().set_parent(experiment)
        for step in range(100):
            train.push(step=step, loss=1.0 / (step + 1), wall_time=WALL_START + step * 0.5)
    for model, zone, key in (("aware", datetime.timezone.utc, "at"), ("naive", None, "when")):
        with collection.new_experiment(model=model) as experiment:
            train = Recorder().set_parent(experiment)
            for step in range(10):
                train.push({"step": step, "loss": float(step), key: datetime.datetime.fromtimestamp(WALL_START + step, tz=zone)})
    with collection.new_experiment(model="untimed") as experiment:
        Recorder().set_parent(experiment).push(step=0, loss=1.0)
    return DashboardData(path)


WALL_START = 1_790_000_000.0


def test_runs_name_their_time_column(timed):
    """wall_time first, else a timestamp column; a run without either has none."""
    runs = timed.runs()["runs"]
    assert [(run["info"]["model"], run["time"]) for run in runs] == [
        ("wall", "wall_time"), ("aware", "at"), ("naive", "when"), ("untimed", None)]
    assert timed.columns()["time"] is True


def test_wall_time_axis_reads_each_runs_time_column(timed):
    """x = wall time is seconds since the epoch: wall_time as pushed, timestamps (naive ones
    read as local time) converted; a run without time plots nothing and is named."""
    ids = run_ids(timed)
    curves = timed.curves(ids, "loss", buckets=1000, time_axis="wall")
    lines = {series["run_id"]: series for series in curves["series"]}
    assert lines[ids[0]]["x"] == [WALL_START + step * 0.5 for step in range(100)]
    assert lines[ids[1]]["x"] == lines[ids[2]]["x"] == [WALL_START + step for step in range(10)]
    assert lines[ids[3]]["x"] == [] and curves["untimed"] == [ids[3]]


def test_relative_time_axis_counts_from_the_runs_start(timed):
    """x = relative time is wall_time - experiment_start_time, per run."""
    run = timed.runs()["runs"][0]
    (series,) = timed.curves([run["run_id"]], "loss", buckets=1000, time_axis="relative")["series"]
    assert series["x"] == pytest.approx([WALL_START + step * 0.5 - run["start"] for step in range(100)])
    with pytest.raises(ValueError, match="time axis must be one of wall, relative, not 'absolute'"):
        timed.curves([run["run_id"]], "loss", time_axis="absolute")


# -- following running runs --------------------------------------------------------------------


def journal_bytes(collection: ExperimentCollection, run_id: str) -> int:
    journal = collection.path / "runs" / run_id / "journal"
    return sum(path.stat().st_size for path in journal.iterdir()) if journal.is_dir() else 0


def test_a_running_run_is_read_a_flush_at_a_time(tmp_path):
    """Each look decodes only the frames flushed since the last one (no more bytes than the
    journal grew by), the curve and the figures grow, the stopped runs' views stay as built,
    and only the plotted columns' values are kept."""
    collection = ExperimentCollection(tmp_path / "live", quiet=True)
    with collection.new_experiment(model="done") as experiment:
        Recorder().set_parent(experiment).push(step=0, loss=5.0)
    experiment = collection.new_experiment(model="live")
    train = Recorder().set_parent(experiment.recorder)
    data = DashboardData(tmp_path / "live")
    views = list(data._views.views)
    live = run_ids(data, "live")[0]
    assert data.curves([live], "loss", "step")["series"][0]["x"] == []
    grown = []
    for flush in range(3):
        before = (data._tails[live].decoded_bytes, journal_bytes(collection, live))
        for step in range(flush * 1000, flush * 1000 + 1000):
            train.push(step=step, loss=float(step), unplotted=1.0)
        experiment.flush()
        data._scanned = -math.inf  # the next request scans again, as the next poll does
        (series,) = data.curves([live], "loss", "step", buckets=4000)["series"]
        decoded = data._tails[live].decoded_bytes - before[0]
        assert 0 < decoded <= journal_bytes(collection, live) - before[1]
        grown.append((series["x"][-1], data.stats("loss", "step")["stats"][live]))
        assert data._views.views == views
    assert grown[-1] == (2999.0, {"last": 2999.0, "min": 0.0, "max": 2999.0})
    assert "unplotted" in data.columns()["metrics"]  # known, but its values are not kept until plotted
    assert all(set(chunk) <= {"step", "loss"} for chunk in data._tails[live]._chunks)
    (series,) = data.curves([live], "unplotted", "step", buckets=4000)["series"]
    assert len(series["x"]) == 3000
    assert [run["records"] for run in data.runs()["runs"]] == [1, 3000]
    experiment.finish()


def test_read_journal_from_a_frames_end_reads_only_the_later_frames(tmp_path):
    """``read_journal(path, start=)`` (what the tail uses) starts at a frame boundary, yields
    nothing at the file's end, and calls a start inside a frame damage."""
    path = tmp_path / "1-0.rrj"
    writer = JournalWriter(path)
    offsets = writer.append([tree_frame(b"[1]"), tree_frame(b"[22]"), tree_frame(b"[333]")])
    writer.close()
    after_first = offsets[0] + len(b"[1]")
    assert [(frame.offset, payload) for frame, payload in read_journal(path, start=after_first)] == [
        (offsets[1], b"[22]"), (offsets[2], b"[333]")]
    assert list(read_journal(path, start=path.stat().st_size)) == []
    with pytest.raises(JournalDamage, match=f"no frame at byte {after_first + 1}"):
        list(read_journal(path, start=after_first + 1))


def test_a_running_runs_earlier_frames_are_not_read_again(tmp_path):
    """A look reads the journal from where the last one stopped: frames already decoded are
    not read again (bytes damaged in them after they were read do not stop the new records)."""
    collection = ExperimentCollection(tmp_path / "live", quiet=True)
    experiment = collection.new_experiment(model="live")
    train = Recorder().set_parent(experiment.recorder)
    for step in range(100):
        train.push(step=step, loss=float(step))
    experiment.flush()
    data = DashboardData(tmp_path / "live")
    live = run_ids(data)[0]
    assert len(data.curves([live], "loss", "step", buckets=1000)["series"][0]["x"]) == 100
    (journal,) = (collection.path / "runs" / live / "journal").iterdir()
    read = journal.read_bytes()
    journal.write_bytes(read[:-8] + bytes(byte ^ 0xFF for byte in read[-8:]))  # the last frame read
    for step in range(100, 150):
        train.push(step=step, loss=float(step))
    experiment.flush()
    data._scanned = -math.inf
    (series,) = data.curves([live], "loss", "step", buckets=1000)["series"]
    assert series["x"] == [float(step) for step in range(150)]
    experiment.finish()


def test_a_resumed_run_shows_its_earlier_and_its_new_records(tmp_path):
    """A resumed run is running again: its records file and its new journal make one curve,
    and its info keeps the views' names (an info key named like a run column gets ~2)."""
    collection = ExperimentCollection(tmp_path / "resumed", quiet=True)
    with collection.new_experiment(model="a", status="mine") as experiment:
        train = Recorder(stage="train").set_parent(experiment)
        for step in range(100):
            train.push(step=step, loss=float(step))
    (run,) = collection.runs
    again = collection.resume(run["id"])
    more = Recorder(stage="more").set_parent(again.recorder)
    for step in range(100, 150):
        more.push(step=step, loss=float(step))
    again.flush()
    data = DashboardData(tmp_path / "resumed")
    (row,) = data.runs()["runs"]
    assert (row["status"], row["records"], row["info"]) == ("running", 150, {"model": "a", "status~2": "mine"})
    (series,) = data.curves([run["id"]], "loss", "step", buckets=1000)["series"]
    assert series["x"] == [float(step) for step in range(150)]
    again.finish()
    data._scanned = -math.inf
    assert data.runs()["runs"] == [{**row, "status": "ok", "duration": data.runs()["runs"][0]["duration"]}]


def test_runs_since_sends_only_the_rows_that_changed(tmp_path):
    """The page's poll gets every row once, then only the rows that changed since its version
    (and the runs' order only when it changed)."""
    collection = ExperimentCollection(tmp_path / "delta", quiet=True)
    for model in ("a", "b"):
        with collection.new_experiment(model=model) as experiment:
            Recorder().set_parent(experiment).push(step=0, loss=1.0)
    experiment = collection.new_experiment(model="live")
    train = Recorder().set_parent(experiment.recorder)
    data = DashboardData(tmp_path / "delta")
    first = data.runs_since()
    assert first["changed"]["info"]["model"] == ["a", "b", "live"] and len(first["order"]) == 3
    data._scanned = -math.inf
    quiet = data.runs_since(since=first["version"])
    assert quiet["changed"]["run_id"] == [] and quiet["order"] is None  # the same runs in the same order
    train.push(step=0, loss=2.0)
    experiment.flush()
    data._scanned = -math.inf
    later = data.runs_since(since=first["version"])
    assert later["changed"]["run_id"] == [first["order"][2]] and later["changed"]["records"] == [1]
    assert later["order"] is None and later["auto"] == first["order"]
    assert [run["info"]["model"] for run in data.runs(where="model = 'live' AND records = 1")["runs"]] == ["live"]
    experiment.finish()


# -- the SQL box -----------------------------------------------------------------------------


def test_sql_box_answers_a_select(data):
    result = data.query("SELECT count(*) AS n FROM records WHERE loss IS NOT NULL")
    assert result == {"columns": ["n"], "rows": [[1000 + 1000 + LONG_RUN + 1 + 7]], "truncated": False}


@pytest.mark.parametrize(("sql", "message"), [
    ("SELEC 1", 'syntax error at or near "SELEC"'),
    ("SELECT nope FROM records", 'Referenced column "nope" not found'),
    ("DELETE FROM experiments", "only SELECT, WITH, DESCRIBE or SHOW may run here, not DELETE"),
    ("SELECT 1; SELECT 2", "give exactly one statement, not 2"),
    ("COPY (SELECT 1) TO 'out.csv'", "not COPY"),
    ("SET enable_external_access = true", "not SET"),
    ("ATTACH 'other.db'", "not ATTACH"),
    ("SELECT * FROM read_csv('/etc/passwd')", "Permission Error"),
    ("SELECT * FROM read_text('{collection}/collection.json')", "Permission Error"),
])
def test_sql_box_refuses_writes_and_other_files(data, sql, message):
    """One SELECT only, and DuckDB reads no file outside the collection's runs."""
    with pytest.raises(ValueError, match=re.escape(message)):
        data.query(sql.format(collection=data.collection.path))


@pytest.mark.slow
def test_sql_box_reads_a_collection_whose_runs_the_catalog_packed(tmp_path):
    """Once the catalog packs finished runs (catalog/ beside runs/), the SQL box reads its packs,
    and still no other file."""
    collection = ExperimentCollection(tmp_path / "packed", quiet=True, record_context=False)
    for index in range(PACK_MIN_RUNS + 1):
        with collection.new_experiment(seed=index) as experiment:
            Recorder().set_parent(experiment).push(step=0, loss=float(index))
    collection.sql("SELECT 1")  # a maintaining reader packs them
    assert any((collection.path / "catalog").glob("*.parquet"))
    data = DashboardData(tmp_path / "packed")
    assert data.query("SELECT count(*), sum(loss) FROM records")["rows"] == [
        [PACK_MIN_RUNS + 1, sum(range(PACK_MIN_RUNS + 1))]]
    with pytest.raises(ValueError, match="Permission Error"):
        data.query("SELECT * FROM read_csv('/etc/passwd')")


# -- the server ------------------------------------------------------------------------------


def test_the_dashboard_never_changes_the_collection(study, client):
    """Every endpoint only reads: no file is written, not even for the crashed run."""
    def files() -> dict[str, tuple[int, int]]:
        return {str(path): (path.stat().st_size, path.stat().st_mtime_ns) for path in study.parent.rglob("*")
                if path.is_file()}

    before = files()
    runs = http_rows(client.get("/api/runs").json())
    ids = ",".join(run["run_id"] for run in runs)
    assert client.get("/api/columns").status_code == 200
    assert client.get("/api/start", params={"buckets": 300}).json()["curves"]["points"] > 0
    untimed = client.get("/api/start", params={"buckets": 300, "time": "relative"}).json()  # no run records time
    assert untimed["curves"]["points"] == 0 and untimed["curves"]["untimed"] == untimed["selection"]
    assert client.get("/api/stats", params={"metric": "loss", "x": "step"}).status_code == 200
    assert client.get("/api/curves", params={"runs": ids, "y": "loss", "x": "step"}).status_code == 200
    assert client.post("/api/sql", json={"sql": "SELECT count(*) FROM records"}).status_code == 200
    assert files() == before
    assert runs[-1]["status"] == "crashed"


def test_curves_over_http_stay_within_the_bucket_bound(client):
    """Bytes per curve follow the chart's width, not the run's length."""
    runs = http_rows(client.get("/api/runs").json())
    long = next(run["run_id"] for run in runs if run["info"]["model"] == "long")
    narrow = client.get("/api/curves", params={"runs": long, "y": "loss", "x": "step", "buckets": 200})
    wide = client.get("/api/curves", params={"runs": long, "y": "loss", "x": "step", "buckets": 800})
    assert len(narrow.json()["series"][0]["x"]) <= 800 and len(wide.json()["series"][0]["x"]) <= 3200
    assert len(narrow.content) < len(wide.content) < 100_000


def test_refused_or_failing_sql_answers_with_the_reason(client):
    """The user's mistakes come back as {"error": ...} (the page shows them; the browser logs nothing)."""
    assert "not DROP" in client.post("/api/sql", json={"sql": "DROP TABLE lineage"}).json()["error"]
    assert '"nope" not found' in client.get("/api/runs", params={"where": "nope = 1"}).json()["error"]
    assert client.get("/api/curves", params={"buckets": "many"}).status_code == 400


def test_requests_without_the_token_are_refused(dashboard):
    """The token opens the page once (then a cookie); without either, 403."""
    base = dashboard.url.split("?")[0]
    assert httpx.get(base).status_code == 403
    assert httpx.get(base + "api/runs").status_code == 403
    assert httpx.get(base, params={"token": "wrong"}).status_code == 403
    first = httpx.get(dashboard.url)
    assert first.status_code == 200 and "HttpOnly" in first.headers["set-cookie"]
    assert httpx.get(base + "api/runs", cookies=first.cookies).status_code == 200


@pytest.mark.parametrize(("host", "status"), [("evil.example", 403), ("evil.example:80", 403),
                                              ("localhost", 200), ("127.0.0.1:1234", 200), ("[::1]:1234", 200)])
def test_foreign_host_headers_are_refused(dashboard, host, status):
    """A page on another domain that rebinds its name to 127.0.0.1 gets nothing (DNS rebinding)."""
    assert httpx.get(dashboard.url, headers={"Host": host}).status_code == status


FIRST_REQUEST = """
import sys, urllib.request
from rigorous_recorder.ui import serve
dashboard = serve(sys.argv[1])
before = set(sys.modules)
with urllib.request.urlopen(dashboard.url) as page:
    page.read()
print(" ".join(sorted(name for name in set(sys.modules) - before
                      if name.split(".")[0] in ("anyio", "starlette", "uvicorn", "h11", "sniffio"))))
dashboard.stop()
"""


def test_the_users_first_request_finds_the_server_warm(study):
    """serve() answers a request of its own before giving out the URL: the user's first page
    does not wait for the server's lazy imports (anyio's backend alone is ~0.1 s)."""
    result = subprocess.run([sys.executable, "-c", FIRST_REQUEST, str(study)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_binds_loopback_by_default(dashboard):
    assert dashboard.url.startswith("http://127.0.0.1:")


def test_collection_ui_serves_its_dashboard(study):
    """``collection.ui()`` (Python, Jupyter) serves the collection's dashboard from a thread,
    on the port asked for, and shows as a link in Jupyter."""
    port = free_port()
    dashboard = ExperimentCollection(study, quiet=True, recover=False).ui(port=port)
    try:
        assert dashboard.url.startswith(f"http://127.0.0.1:{port}/?token=")
        page = httpx.get(dashboard.url)
        assert page.status_code == 200 and "uPlot.iife.min.js" in page.text
        runs = http_rows(httpx.get(dashboard.url.split("?")[0] + "api/runs", cookies=page.cookies).json())
        assert [run["status"] for run in runs] == ["ok", "ok", "ok", "error", "crashed"]
        assert f'href="{dashboard.url}"' in dashboard._repr_html_()
    finally:
        dashboard.stop()


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# -- shipped files ---------------------------------------------------------------------------

#: External addresses allowed in shipped files, each where it is and why.
ALLOWED_URLS = {("vendor/uPlot.iife.min.js", "https://github.com/leeoniya/uPlot"): "uPlot's banner comment"}


def test_shipped_files_load_nothing_from_the_network():
    """No http(s) URL in any file the dashboard ships, except the whitelisted comments."""
    package = STATIC.parent
    found = set()
    for path in package.rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts:
            for url in re.findall(r"https?://[^\s\"'`)<>]+", path.read_text(encoding="utf-8", errors="replace")):
                found.add((path.relative_to(STATIC).as_posix() if STATIC in path.parents else path.name, url))
    local = {(name, url) for name, url in found if re.match(r"https?://(\{|127\.0\.0\.1[:/])", url)}  # its own
    assert found - local == set(ALLOWED_URLS)
    banner = (STATIC / "vendor" / "uPlot.iife.min.js").read_text(encoding="utf-8").splitlines()[0]
    assert banner == f"/*! https://github.com/leeoniya/uPlot (v{UPLOT_VERSION}) */"


def test_vendored_uplot_is_the_recorded_npm_package():
    """The vendored files are the ones whose version and hashes the vendor README records."""
    readme = (STATIC / "vendor" / "README").read_text(encoding="utf-8")
    assert f"npm pack uplot@{UPLOT_VERSION}" in readme
    hashes = dict((name, digest) for digest, name in re.findall(r"sha256 ([0-9a-f]{64})  (\S+)", readme))
    assert set(hashes) == {"uPlot.iife.min.js", "uPlot.min.css", "LICENSE"}
    for name, digest in hashes.items():
        assert hashlib.sha256((STATIC / "vendor" / name).read_bytes()).hexdigest() == digest, name
    assert "MIT License" in (STATIC / "vendor" / "LICENSE").read_text(encoding="utf-8")


def test_the_ui_extra_declares_every_package_the_dashboard_imports():
    """``pip install "rigorous-recorder[ui]"`` brings what the dashboard needs: every package
    its modules import is a dependency of the core or of the ``ui`` extra."""
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((STATIC.parents[3] / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = {re.split(r"[<>=!~\[; ]", requirement)[0].lower()
                for requirement in [*project["dependencies"], *project["optional-dependencies"]["ui"]]}
    imported = set()
    for path in STATIC.parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    distributions = importlib.metadata.packages_distributions()
    third_party = {name for name in imported if name not in sys.stdlib_module_names and name != "__future__"}
    assert {"starlette", "uvicorn", "numpy", "duckdb", "pyarrow"} <= third_party
    undeclared = {name for name in third_party
                  if not any(distribution.lower() in declared for distribution in distributions.get(name, [name]))}
    assert undeclared == set()


# -- the command -----------------------------------------------------------------------------


@pytest.mark.slow
def test_command_serves_until_interrupted(study):
    """`rigorous-recorder ui PATH --host H --port N` prints the URL, serves the page, and Ctrl-C
    ends it with code 0."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "rigorous_recorder", "ui", str(study), "--host", "127.0.0.1",
                                "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        url = re.search(rf"http://127\.0\.0\.1:{port}/\?token=\S+", line)
        assert url, line + process.stderr.read()
        page = httpx.get(url.group(0), timeout=30)
        assert page.status_code == 200 and "uPlot.iife.min.js" in page.text
    finally:
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=30)
    assert code == 0


def test_command_names_a_missing_collection(tmp_path, capsys):
    assert cli.main(["ui", str(tmp_path / "none")]) == 2
    assert capsys.readouterr().err == textwrap.dedent(f"""\
        rigorous-recorder ui: error: {str(tmp_path / 'none.collection')!r} is not a rigorous_recorder collection
        """)
