// The dashboard page: runs table, curves (uPlot), SQL box. State lives in the URL's hash;
// the server does the work (downsampling, smoothing); the page polls it twice a second and
// gets only the table rows that changed. The first paint's data was asked for by index.html
// before this script loaded (window.rrStart).
"use strict";
(() => {
  const POLL_MS = 500;  // a poll is one scan of the runs folder: news shows within 2 s even on a busy machine
  const STATS_EVERY = 2;  // polls between two refreshes of a running run's last/min/max (read from its curve)
  const PAGE_ROWS = 100;  // rows the table shows at first, and per "show more": a long table lays out slowly
  const CHART_HEIGHT = 360;
  const PIXELS_PER_BUCKET = 2;  // the server keeps first, last, min and max of a bucket: <= 2 points per pixel, no spike lost
  const FAILED = new Set(["error", "crashed", "damaged"]);
  const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf"];
  const $ = (id) => document.getElementById(id);

  // What the tests (and a curious user, from the console) can read.
  const view = window.rrDashboard = {
    state: readState(), runs: [], infoColumns: [], columns: null, stats: null, curves: null, chart: null,
    buckets: 0, polls: 0, curveFetches: 0, draws: 0, version: 0,
  };
  const state = view.state;
  const rowsById = new Map();
  let curveSignature = "";
  let curveRequest = 0;
  let shownRows = PAGE_ROWS;
  // Without a selection in the URL, the chart follows the latest runs that did not fail, new ones
  // included, until the user picks runs.
  let autoSelect = state.sel === null;

  // -- state in the URL ------------------------------------------------------------------

  function readState() {
    const p = new URLSearchParams(location.hash.slice(1));
    return {
      sel: p.has("sel") ? p.get("sel").split(",").filter(Boolean) : null,
      y: p.get("y") || "", x: p.has("x") ? p.get("x") : null, time: p.get("time") || "", rel: p.get("rel") === "1",
      by: p.get("by") || "",
      smooth: Number(p.get("smooth") || 0), log: p.get("log") === "1",
      zoom: p.get("zoom") ? p.get("zoom").split(",").map(Number) : null,
      where: p.get("where") || "", hide: p.get("hide") === "1", sort: p.get("sort") || "", sql: p.get("sql") || "",
    };
  }

  function writeState() {
    const p = new URLSearchParams();
    if (state.sel && !autoSelect) p.set("sel", state.sel.join(","));
    for (const key of ["y", "time", "by", "where", "sort", "sql"]) if (state[key]) p.set(key, state[key]);
    if (state.x !== null) p.set("x", state.x);
    if (state.rel) p.set("rel", "1");
    if (state.smooth) p.set("smooth", String(state.smooth));
    if (state.log) p.set("log", "1");
    if (state.hide) p.set("hide", "1");
    if (state.zoom) p.set("zoom", state.zoom.join(","));
    history.replaceState(null, "", location.pathname + location.search + "#" + p.toString());
  }

  // -- talking to the server -------------------------------------------------------------

  async function api(path, options) {
    const response = await fetch(path, options);
    const body = await response.json();
    if (!response.ok || body.error) {
      const failure = new Error(body.error || response.statusText);
      failure.answered = response.ok;  // the server works; the request (the user's SQL) was wrong
      throw failure;
    }
    return body;
  }

  const esc = (value) => String(value).replace(/[&<>"']/g,
    (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);

  function fmt(value) {
    if (value === null || value === undefined) return "";
    if (typeof value === "number" && !Number.isInteger(value)) return Number(value.toPrecision(6)).toString();
    if (typeof value === "object") return JSON.stringify(value);
    return String(value);
  }

  function fmtDuration(seconds) {
    if (seconds === null || seconds === undefined) return "";
    if (seconds < 1) return `${Math.round(seconds * 1000)}ms`;
    if (seconds < 60) return `${seconds.toFixed(1)}s`;
    const minutes = Math.floor(seconds / 60);
    if (minutes < 60) return `${minutes}m${String(Math.floor(seconds % 60)).padStart(2, "0")}s`;
    return `${Math.floor(minutes / 60)}h${String(minutes % 60).padStart(2, "0")}m`;
  }

  function fmtTime(seconds) {
    const d = new Date(seconds * 1000);
    const two = (n) => String(n).padStart(2, "0");
    return `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())} ${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
  }

  // -- the runs table --------------------------------------------------------------------

  function runColumns() {
    const metric = state.y || "metric";
    return [
      { key: "experiment_number", label: "#", num: true, get: (r) => r.experiment_number },
      { key: "error_number", label: "err", num: true, get: (r) => r.error_number },
      { key: "status", label: "status", get: (r) => r.status,
        html: (r) => `<span class="badge ${esc(r.status)}" title="${esc(r.error || "")}">${esc(r.status)}</span>` },
      { key: "error", label: "error", get: (r) => r.error || "", cls: "error-text" },
      { key: "run_id", label: "run", get: (r) => r.run_id },
      { key: "start", label: "start", get: (r) => r.start, text: (r) => (r.start === null ? "" : fmtTime(r.start)) },
      { key: "duration", label: "duration", num: true, get: duration, text: (r) => fmtDuration(duration(r)) },
      { key: "records", label: "records", num: true, get: (r) => r.records },
      ...view.infoColumns.map((name) => ({ key: `info.${name}`, label: name, get: (r) => r.info[name] })),
      ...["last", "min", "max"].map((which) => ({
        key: `metric.${which}`, label: `${which} ${metric}`, num: true,
        get: (r) => (view.stats && view.stats.stats[r.run_id] ? view.stats.stats[r.run_id][which] : null),
      })),
    ];
  }

  function selection() {
    return state.sel || [];
  }

  function renderRuns() {
    const columns = runColumns();
    const [sortKey, sortDir] = state.sort ? state.sort.split(":") : ["", ""];
    let rows = view.runs.filter((r) => !(state.hide && FAILED.has(r.status)));
    const column = columns.find((c) => c.key === sortKey);
    if (column) {
      const sign = sortDir === "desc" ? -1 : 1;
      rows = rows.slice().sort((a, b) => {
        const va = column.get(a), vb = column.get(b);
        if (va === vb) return 0;
        if (va === null || va === undefined) return 1;
        if (vb === null || vb === undefined) return -1;
        return (va < vb ? -1 : 1) * sign;
      });
    }
    const total = rows.length;
    rows = rows.slice(0, shownRows);
    $("more-runs").hidden = total <= rows.length;
    $("runs-count").textContent = total > rows.length ? `showing ${rows.length} of ${total} runs` : `${total} runs`;
    const selected = selection();
    const head = `<tr><th></th>${columns.map((c) => `<th data-key="${esc(c.key)}">${esc(c.label)}${
      c.key === sortKey ? (sortDir === "desc" ? " ▼" : " ▲") : ""}</th>`).join("")}</tr>`;
    const body = rows.map((r) => {
      const index = selected.indexOf(r.run_id);
      const swatch = index >= 0 ? `<span class="swatch" style="background:${PALETTE[index % PALETTE.length]}"></span>` : "";
      const cells = columns.map((c) => {
        const content = c.html ? c.html(r) : esc(c.text ? c.text(r) : fmt(c.get(r)));
        const cls = [c.num ? "number" : "", c.cls || ""].join(" ").trim();
        return `<td${cls ? ` class="${cls}"` : ""}>${content}</td>`;
      }).join("");
      return `<tr data-run="${esc(r.run_id)}" data-status="${esc(r.status)}"${index >= 0 ? ' class="selected"' : ""}>` +
        `<td>${swatch}<input type="checkbox" data-run="${esc(r.run_id)}"${index >= 0 ? " checked" : ""}></td>${cells}</tr>`;
    }).join("");
    $("runs").tHead.innerHTML = head;
    $("runs").tBodies[0].innerHTML = body;
  }

  async function refreshStats() {
    if (!state.y) return;
    const params = new URLSearchParams({ metric: state.y, x: state.x || "" });
    try {
      view.stats = await api(`api/stats?${params}`);
    } catch (error) {
      view.stats = null;
      $("runs-message").textContent = error.message;
    }
    renderRuns();
  }

  // A running run's duration grows between polls: the page counts it from the run's start.
  const duration = (r) => (r.duration === null && r.status === "running" && r.start !== null
    ? Date.now() / 1000 - r.start : r.duration);

  // An /api/runs answer holds the runs in order and, column by column, the rows that changed
  // since the version the page last saw: a poll of 1,000 quiet runs sends a few bytes.
  function applyRuns(result) {
    const changed = result.changed;
    const fields = Object.keys(changed).filter((key) => key !== "info");
    const count = changed.run_id.length;
    for (let i = 0; i < count; i += 1) {
      const row = { info: {} };
      for (const field of fields) row[field] = changed[field][i];
      for (const name of Object.keys(changed.info)) row.info[name] = changed.info[name][i];
      rowsById.set(row.run_id, row);
    }
    const order = result.order || view.runs.map((r) => r.run_id);  // null: the order did not change
    const news = count > 0 || result.order !== null || result.columns.join(",") !== view.infoColumns.join(",");
    view.runs = order.map((id) => rowsById.get(id)).filter(Boolean);
    view.infoColumns = result.columns;
    // A run the page never got (hidden by an earlier where box) is asked for again in full.
    view.version = view.runs.length === order.length ? result.version : 0;
    view.auto = result.auto;
    if (autoSelect) state.sel = result.auto;
    return news;
  }

  async function refreshRuns() {
    const params = new URLSearchParams({ where: state.where, since: String(view.version) });
    let result;
    try {
      result = await api(`api/runs?${params}`);
      $("runs-message").textContent = "";
    } catch (error) {
      $("runs-message").textContent = error.message;
      return Boolean(error.answered);
    }
    if (applyRuns(result) || view.runs.some((r) => r.status === "running")) {
      renderRuns();
      fillX();
    }
    return true;
  }

  // -- columns and controls --------------------------------------------------------------

  function fillSelect(select, options, value) {
    select.innerHTML = options.map(([v, label]) => `<option value="${esc(v)}">${esc(label)}</option>`).join("");
    select.value = value;
  }

  function applyColumns(columns) {
    const text = JSON.stringify(columns);
    if (view.columns && JSON.stringify(view.columns) === text) return;
    view.columns = columns;
    $("collection").textContent = columns.collection;
    document.title = `${columns.collection} - rigorous-recorder`;
    if (!columns.metrics.includes(state.y)) state.y = columns.default_y;
    if ((state.x === null && columns.default_x) || (state.x && !columns.x.includes(state.x))) {
      state.x = columns.default_x;  // null until the records have a step-like column: then it is picked
    }
    fillSelect($("y"), columns.metrics.map((m) => [m, m]), state.y);
    fillSelect($("by"), [["", "(each run)"], ...columns.groups.map((g) => [g, g])], state.by);
    fillX();
    writeState();
  }

  async function refreshColumns() {
    applyColumns(await api("api/columns"));
  }

  // x: the records' order, a numeric column, or each run's wall-clock time (dates) or time
  // since its start, offered when every chosen run records one (wall_time or a timestamp).
  function fillX() {
    if (!view.columns) return;
    const choices = [["order:", "record order"], ...view.columns.x.map((m) => [`column:${m}`, m]),
      ["time:wall", "wall time"], ["time:relative", "relative time (s)"]];
    const untimed = selection().map((id) => rowsById.get(id)).filter((r) => r && !r.time);
    const why = !view.columns.time
      ? "no run records its time: push wall_time=time.time() with each record (the Lightning and Keras adapters do)"
      : !selection().length ? "select runs first"
        : untimed.length ? `runs ${untimed.map((r) => runLabel(r.run_id)).join(", ")} record no wall_time or timestamp` : "";
    const value = state.time ? `time:${state.time}` : state.x ? `column:${state.x}` : "order:";
    const select = $("x");
    const text = JSON.stringify([choices, why, value]);
    if (select.dataset.shown === text) return;
    select.dataset.shown = text;
    select.innerHTML = choices.map(([v, label]) => {
      const off = v.startsWith("time:") && why && v !== value;
      return `<option value="${esc(v)}"${off ? ` disabled title="${esc(why)}"` : ""}>${esc(label)}</option>`;
    }).join("");
    select.value = value;
    select.title = why;
  }

  // -- the chart -------------------------------------------------------------------------

  function runLabel(runId) {
    const run = view.runs.find((r) => r.run_id === runId);
    if (!run) return runId;
    return `#${run.experiment_number}${run.error_number ? `.${run.error_number}` : ""}`;
  }

  function withAlpha(color, alpha) {
    return color + Math.round(alpha * 255).toString(16).padStart(2, "0");
  }

  function buildPlot(curves) {
    const selected = selection();
    const tables = [];
    const series = [{ label: xLabel() }];
    const bands = [];
    let column = 1;
    curves.series.forEach((item, position) => {
      const ys = state.log ? item.y.map((v) => (v > 0 ? v : null)) : item.y;
      if (item.kind === "group") {
        const color = PALETTE[position % PALETTE.length];
        const clip = (values) => (state.log ? values.map((v) => (v > 0 ? v : null)) : values);
        tables.push([item.x, ys, clip(item.min), clip(item.max)]);
        series.push({ label: `${state.by}=${item.group} (${item.runs.length} runs)`, stroke: color, width: 2, spanGaps: true });
        series.push({ label: "min", stroke: withAlpha(color, 0.3), width: 1, spanGaps: true });
        series.push({ label: "max", stroke: withAlpha(color, 0.3), width: 1, spanGaps: true });
        bands.push({ series: [column + 2, column + 1], fill: withAlpha(color, 0.15) });
        column += 3;
        return;
      }
      const index = selected.indexOf(item.run_id);
      const color = PALETTE[(index >= 0 ? index : position) % PALETTE.length];
      tables.push([item.x, ys]);
      const raw = item.kind === "raw";
      series.push({
        label: raw ? `${runLabel(item.run_id)} raw` : runLabel(item.run_id), stroke: raw ? withAlpha(color, 0.25) : color,
        width: raw ? 1 : 1.5, spanGaps: true,
      });
      column += 1;
    });
    const data = tables.length ? uPlot.join(tables) : [[]];
    return { data, series, bands };
  }

  function xLabel() {
    const name = state.time === "wall" ? "wall time" : state.time === "relative" ? "seconds since the run started"
      : state.x || "record order";
    return state.rel ? `${name} (relative)` : name;
  }

  function chartWidth() {
    return Math.max(200, $("chart").clientWidth || 800);
  }

  function drawChart(curves) {
    const { data, series, bands } = buildPlot(curves);
    const isTime = state.time === "wall" && !state.rel;  // dates on the axis
    const shape = JSON.stringify([series.map((s) => s.label), state.log, isTime, chartWidth()]);
    let chart = view.chart;
    if (chart && chart.rrShape === shape) {
      chart.setData(data, !state.zoom);
      if (state.zoom) chart.setScale("x", { min: state.zoom[0], max: state.zoom[1] });
      return;
    }
    if (chart) chart.destroy();
    $("chart").innerHTML = "";
    const options = {
      width: chartWidth(), height: CHART_HEIGHT, series, bands,
      scales: { x: { time: isTime }, y: { distr: state.log ? 3 : 1 } },
      axes: [{ label: xLabel() }, { label: state.y }],
      // A drag selects a range that the page fetches (onSelect); a double click resets the zoom.
      cursor: { drag: { x: true, y: false, setScale: false }, bind: { dblclick: () => null } },
      hooks: { setSelect: [onSelect], draw: [() => { view.draws += 1; }] },
    };
    chart = new uPlot(options, data, $("chart"));
    if (state.zoom) chart.setScale("x", { min: state.zoom[0], max: state.zoom[1] });
    chart.rrShape = shape;
    chart.over.addEventListener("dblclick", resetZoom);
    view.chart = chart;
  }

  function onSelect(chart) {
    const { left, width } = chart.select;
    if (width < 2) return;
    state.zoom = [chart.posToVal(left, "x"), chart.posToVal(left + width, "x")];
    chart.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
    chart.setScale("x", { min: state.zoom[0], max: state.zoom[1] });
    writeState();
    refreshCurves();  // full resolution for the visible range
  }

  function resetZoom() {
    if (!state.zoom) return;
    state.zoom = null;
    writeState();
    refreshCurves();
  }

  async function refreshCurves() {
    const selected = selection();
    const request = ++curveRequest;
    if (!state.y || !selected.length) {
      if (view.chart) view.chart.destroy();
      view.chart = null;
      view.curves = null;
      $("chart").innerHTML = "";
      $("chart-message").textContent = state.y ? "select runs in the table to plot them" : "no numeric columns yet";
      return;
    }
    const buckets = Math.round(chartWidth() / PIXELS_PER_BUCKET);
    const params = new URLSearchParams({
      runs: selected.join(","), y: state.y, x: state.x || "", time: state.time, buckets: String(buckets),
      smooth: String(state.smooth), relative: state.rel ? "1" : "0", by: state.by,
    });
    if (state.zoom) {
      params.set("lo", String(state.zoom[0]));
      params.set("hi", String(state.zoom[1]));
    }
    curveSignature = curvesSignature();
    let curves;
    try {
      curves = await api(`api/curves?${params}`);
    } catch (error) {
      if (request === curveRequest) $("chart-message").textContent = error.message;
      return;
    }
    if (request !== curveRequest) return;  // a newer request is on its way
    showCurves(curves, buckets);
  }

  function showCurves(curves, buckets) {
    const untimed = (curves.untimed || []).map(runLabel);
    $("chart-message").textContent = untimed.length ? `no wall-clock time in runs ${untimed.join(", ")}` : "";
    view.curves = curves;
    view.buckets = buckets;
    view.curveFetches += 1;
    drawChart(curves);
    if (!performance.getEntriesByName("rr-first-chart").length) performance.mark("rr-first-chart");
  }

  function runsSignature() {
    return JSON.stringify(view.runs.map((r) => [r.run_id, r.status]));
  }

  function curvesSignature() {
    return JSON.stringify(selection().map((id) => {
      const run = view.runs.find((r) => r.run_id === id);
      return run ? [id, run.status, run.records] : [id];
    }));
  }

  // -- the SQL box -----------------------------------------------------------------------

  async function runSql() {
    state.sql = $("sql").value;
    writeState();
    const error = $("sql-error");
    const table = $("sql-result");
    try {
      const result = await api("api/sql", {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ sql: state.sql }),
      });
      error.hidden = true;
      table.innerHTML = `<thead><tr>${result.columns.map((c) => `<th>${esc(c)}</th>`).join("")}</tr></thead><tbody>${
        result.rows.map((row) => `<tr>${row.map((v) => `<td${typeof v === "number" ? ' class="number"' : ""}>${
          esc(fmt(v))}</td>`).join("")}</tr>`).join("")}</tbody>`;
      table.dataset.rows = String(result.rows.length);
    } catch (failure) {
      table.innerHTML = "";
      table.dataset.rows = "";
      error.textContent = failure.message;
      error.hidden = false;
    }
  }

  // -- wiring ----------------------------------------------------------------------------

  function bind() {
    $("where").value = state.where;
    $("hide-failed").checked = state.hide;
    $("relative").checked = state.rel;
    $("log").checked = state.log;
    $("smooth").value = String(state.smooth);
    $("smooth-value").textContent = String(state.smooth);
    $("sql").value = state.sql;

    $("where").addEventListener("change", () => {
      state.where = $("where").value.trim();
      writeState();
      view.version = 0;
      refreshRuns();
    });
    $("hide-failed").addEventListener("change", () => {
      state.hide = $("hide-failed").checked;
      writeState();
      renderRuns();
    });
    $("select-all").addEventListener("click", () => {
      state.sel = view.runs.filter((r) => !(state.hide && FAILED.has(r.status))).map((r) => r.run_id);
      selectionChanged();
    });
    $("select-none").addEventListener("click", () => {
      state.sel = [];
      selectionChanged();
    });
    $("runs").tBodies[0].addEventListener("change", (event) => {
      const runId = event.target.dataset.run;
      if (!runId) return;
      const selected = selection().filter((id) => id !== runId);
      if (event.target.checked) selected.push(runId);
      state.sel = selected;
      selectionChanged();
    });
    $("runs").tHead.addEventListener("click", (event) => {
      const key = event.target.closest("th") && event.target.closest("th").dataset.key;
      if (!key) return;
      const [current, dir] = state.sort.split(":");
      state.sort = `${key}:${current === key && dir !== "desc" ? "desc" : "asc"}`;
      writeState();
      renderRuns();
    });
    const curveControl = (id, read) => $(id).addEventListener("change", async () => {
      read();
      state.zoom = null;
      writeState();
      if (id === "y" || id === "x") refreshStats();  // the table's metric columns follow y (last in x order)
      refreshCurves();
    });
    curveControl("y", () => { state.y = $("y").value; });
    curveControl("x", () => {
      const [kind, name] = [$("x").value.split(":")[0], $("x").value.slice($("x").value.indexOf(":") + 1)];
      state.time = kind === "time" ? name : "";
      if (kind !== "time") state.x = name;
    });
    curveControl("by", () => { state.by = $("by").value; });
    curveControl("relative", () => { state.rel = $("relative").checked; });
    curveControl("log", () => { state.log = $("log").checked; });
    curveControl("smooth", () => { state.smooth = Number($("smooth").value); });
    $("smooth").addEventListener("input", () => { $("smooth-value").textContent = $("smooth").value; });
    $("more-runs").addEventListener("click", () => {
      shownRows += PAGE_ROWS;
      renderRuns();
    });
    $("reset-zoom").addEventListener("click", resetZoom);
    $("run-sql").addEventListener("click", runSql);
    $("sql").addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) runSql();
    });
    let resizeTimer = 0;
    window.addEventListener("resize", () => {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(refreshCurves, 200);
    });
  }

  function selectionChanged() {
    autoSelect = false;
    writeState();
    renderRuns();
    fillX();
    refreshCurves();
  }

  const inFlight = new Set();

  async function besidePolls(name, work) {
    if (inFlight.has(name)) return;
    inFlight.add(name);
    try {
      await work();
    } finally {
      inFlight.delete(name);
    }
  }

  async function poll() {
    const began = performance.now();
    try {
      const known = runsSignature();
      const ok = await refreshRuns();
      // The rest runs beside the polls, one of each at a time: a slow curve never delays the table's news.
      if (ok && (runsSignature() !== known || !view.columns)) {  // a run started or stopped
        besidePolls("columns", async () => {
          await refreshColumns();
          await refreshStats();
        });
      } else if (ok && view.polls % STATS_EVERY === 0 && view.runs.some((r) => r.status === "running")) {
        besidePolls("stats", refreshStats);  // a running run's figures, from its curve in the server's memory
      }
      if (ok && curvesSignature() !== curveSignature) besidePolls("curves", refreshCurves);
      $("live").classList.toggle("stale", !ok);
      $("live").textContent = ok ? "live" : "server not answering";
    } catch (error) {
      $("live").classList.add("stale");
      $("live").textContent = "server not answering";
    }
    view.polls += 1;
    // Every POLL_MS, unless answering took longer: then the server rests as long as it worked (a big
    // collection with a running run costs a scan of every run per poll; training needs the cores).
    setTimeout(poll, Math.max(POLL_MS, performance.now() - began));
  }

  // The answer to a request index.html sent before the scripts loaded; null if it failed.
  async function early(request) {
    try {
      const response = await request;
      const body = await response.json();
      return response.ok && !body.error ? body : null;
    } catch (error) {
      return null;
    }
  }

  async function start() {
    bind();
    try {
      const runs = await early(window.rrStart.runs);
      if (runs) {
        applyRuns(runs);
        renderRuns();
      } else {
        await refreshRuns();
      }
      performance.mark("rr-first-table");
      const first = await early(window.rrStart.chart);  // the columns, and the curves of the runs shown
      if (first) {
        applyColumns(first.columns);
        if (autoSelect) state.sel = first.selection;
        fillX();
        renderRuns();
      } else {
        await refreshColumns();
      }
      if (first && first.curves && !first.curves.error && first.y === state.y && first.x === (state.x || "")
          && JSON.stringify(first.selection) === JSON.stringify(selection())) {
        curveSignature = curvesSignature();
        showCurves(first.curves, first.curves.buckets);
      } else {
        await refreshCurves();
      }
      await refreshStats();
      if (state.sql) runSql();
    } finally {
      setTimeout(poll, POLL_MS);  // a failed start is retried by the polls (they fetch the columns again)
    }
  }

  start();
})();
