// Laps compared: the engineer's page. Laps of one car at one track, from any of its sessions, are
// picked from a list (time, driver, setup version, session); the server resamples each by distance
// (GET /api/v1/compare: a few thousand points a lap, never every frame) and answers the delta trace
// of each against the first picked (the reference). Charts: the delta, then each channel against the
// reference's distance, one line per lap; the map: the reference's path coloured by where the lap
// shown gained (green) or lost (red) time. Below, the car's setup versions at the track side by side.
//
// The page is opened as /compare?session_id=... (its car and track) or /compare?car_id=...&track_id=...
// What the charts hold is exposed as window.__compare for tests and tools.
import {
  CHANNEL_ORDER, apiGet, cssVar, el, fmtDelta, fmtLapTime, fmtWhen, initTheme, labelOf, setConn, setText,
  showBanner, unitOf,
} from "./common.js";
import { boundsOf, drawTrackLines, fitCanvas, project, trackLines } from "./mapview.js";

const MAX_LAPS = 6; // as the API: laps in one comparison
const DEFAULT_CHANNELS = ["speed", "gps_speed", "rpm", "throttle"];
const NOT_CHANNELS = new Set(["lat", "lon"]); // the map draws those
const PALETTE = ["--series-1", "--series-2", "--series-3", "--series-4", "--warn", "--muted"];
const CHART_HEIGHT = 150;
const POINTS = 2000;

const state = {
  car: null,
  track: null, // TrackOut
  laps: [], // CarLap items
  picked: [], // "sid:lap", in the order ticked (the first is the reference)
  channels: new Set(DEFAULT_CHANNELS),
  result: null, // the Comparison
  mapLap: 0, // index into result.deltas shown on the map
  charts: [], // uPlot instances
  request: 0,
};
window.__compare = { loaded: false, result: null, delta: {}, channels: {} };

const $ = (id) => document.getElementById(id);
const keyOf = (lap) => `${lap.session_id}:${lap.lap}`;
const color = (i) => cssVar(PALETTE[i % PALETTE.length]) || "#0047ab";

function lapName(lap) {
  const session = lap.session_name || `Session ${lap.session_id.slice(0, 8)}`;
  return `${session} · lap ${lap.lap}`;
}

function findLap(key) {
  return state.laps.find((l) => keyOf(l) === key) || null;
}

// ---------------------------------------------------------------- the picker
function flagsOf(lap) {
  const flags = [];
  if (lap.is_best) flags.push(["best", "best"]);
  if (lap.clean) flags.push(["clean", "clean"]);
  if (lap.out_lap) flags.push(["out", "out-lap"]);
  if (lap.in_lap) flags.push(["in", "in-lap"]);
  if (lap.interrupted) flags.push(["broken", lap.interrupted === "gap" ? "gap" : "GPS jump"]);
  if (lap.pit) flags.push(["pit", "pit"]);
  if (lap.flagged) flags.push(["flagged", "flagged"]);
  if (lap.setup_changed) flags.push(["setup", "setup changed"]);
  return flags;
}

function renderPicker() {
  const rows = state.laps.map((lap) => {
    const key = keyOf(lap);
    const id = `pick-${lap.session_id}-${lap.lap}`;
    const box = el("input", { attrs: { type: "checkbox", id, value: key, "aria-label": `Compare ${lapName(lap)}` } });
    box.checked = state.picked.includes(key);
    box.addEventListener("change", () => togglePick(key, box));
    const order = state.picked.indexOf(key);
    const cell = (label, props, ...children) => el("td", { ...props, dataset: { label } }, ...children);
    return el(
      "tr",
      { dataset: { key, picked: order >= 0 ? String(order) : "", fastest: lap.is_best } },
      el("td", { class: "cell-pick" }, box, order === 0 ? el("span", { class: "ref-mark", text: "ref" }) : null),
      cell("Session", { class: "cell-session" }, el("label", { attrs: { for: id }, text: lap.session_name || lap.session_id.slice(0, 8) }),
        el("span", { class: "muted small", text: ` ${fmtWhen(lap.session_created_at)}` })),
      cell("Lap", { class: "num", text: lap.lap }),
      cell("Time", { class: "num cell-time", text: fmtLapTime(lap.lap_time) }),
      cell("Driver", { text: lap.driver_id || "—" }),
      cell("Setup", { text: lap.car_setup_version ? `v${lap.car_setup_version}` : "—" }),
      cell("Flags", {}, ...flagsOf(lap).map(([kind, text]) => el("span", { class: "pill flag", text, dataset: { flag: kind } }))),
    );
  });
  $("pick-body").replaceChildren(...rows);
  $("pick-empty").hidden = state.laps.length > 0;
}

function togglePick(key, box) {
  if (box.checked) {
    if (state.picked.length >= MAX_LAPS) {
      box.checked = false;
      showBanner(`At most ${MAX_LAPS} laps at once: untick one first.`, "warn");
      return;
    }
    state.picked.push(key);
  } else {
    state.picked = state.picked.filter((k) => k !== key);
  }
  renderPicker();
  compare();
}

// -------------------------------------------------------------- the channels
function renderChannelPicker() {
  const names = CHANNEL_ORDER.filter((n) => !NOT_CHANNELS.has(n));
  $("compare-channels").replaceChildren(...names.map((name) => {
    const id = `cmp-ch-${name}`;
    const box = el("input", { attrs: { type: "checkbox", id, value: name } });
    box.checked = state.channels.has(name);
    box.addEventListener("change", () => {
      if (box.checked) state.channels.add(name);
      else state.channels.delete(name);
      compare();
    });
    const unit = unitOf(name);
    return el("label", { class: "check", attrs: { for: id } }, box, ` ${labelOf(name)}${unit ? ` (${unit})` : ""}`);
  }));
}

// ------------------------------------------------------------- the comparison
async function compare() {
  const request = ++state.request;
  if (!state.picked.length) {
    show(null);
    return;
  }
  const params = new URLSearchParams({ laps: state.picked.join(","), points: String(POINTS) });
  const channels = [...state.channels].slice(0, 8);
  if (channels.length) params.set("channels", channels.join(","));
  document.body.dataset.comparing = "true";
  try {
    const result = await apiGet(`/compare?${params}`);
    if (request === state.request) show(result);
  } catch (err) {
    if (request === state.request) showBanner(`Could not compare the laps: ${err.message}`, "error");
  } finally {
    if (request === state.request) document.body.dataset.comparing = "false";
  }
}

function destroyCharts() {
  for (const u of state.charts) u.destroy();
  state.charts = [];
}

function chart(container, title, unit, xs, series, name) {
  const wrap = el("div", { class: "strip", dataset: { chart: name } });
  container.append(wrap);
  const fg = cssVar("--fg");
  const grid = cssVar("--grid");
  const axis = { stroke: fg, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 }, font: "12px system-ui, sans-serif" };
  const u = new uPlot({
    width: Math.max(200, container.clientWidth),
    height: CHART_HEIGHT,
    title: unit ? `${title} (${unit})` : title,
    legend: { show: true, live: true },
    cursor: { sync: { key: "compare" }, drag: { x: false, y: false } },
    scales: { x: { time: false } },
    series: [
      { label: "m", value: (uu, v) => (v === null || v === undefined ? "—" : `${Math.round(v)} m`) },
      ...series.map((s) => ({
        label: s.label, stroke: s.color, width: s.width || 2, spanGaps: false, points: { show: false },
        value: (uu, v) => (v === null || v === undefined ? "—" : String(+v.toFixed(3))),
      })),
    ],
    axes: [{ ...axis, size: 28, values: (uu, splits) => splits.map((v) => `${Math.round(v)} m`) }, { ...axis, size: 56 }],
  }, [xs, ...series.map((s) => s.values)], wrap);
  state.charts.push(u);
  return u;
}

function show(result) {
  state.result = result;
  destroyCharts();
  $("delta-chart").replaceChildren();
  $("overlay-charts").replaceChildren();
  window.__compare.result = result;
  window.__compare.delta = {};
  window.__compare.channels = {};
  $("compare-empty").hidden = Boolean(result && result.deltas.length);
  setText($("delta-final"), "");
  if (!result) {
    drawMap();
    return;
  }
  const xs = result.distance_m;
  const ref = result.laps[0];
  const labelOfLap = (trace) => {
    const lap = findLap(`${trace.session_id}:${trace.lap}`);
    return `${lap ? lapName(lap) : `lap ${trace.lap}`} (${fmtLapTime(trace.lap_time)})`;
  };
  if (result.deltas.length) {
    const series = result.deltas.map((d, i) => ({
      label: labelOfLap(result.laps[i + 1]), color: color(i + 1), values: d.delta_s,
    }));
    chart($("delta-chart"), `Delta to ${labelOfLap(ref)}`, "s", xs, series, "delta");
    for (const [i, d] of result.deltas.entries()) {
      window.__compare.delta[`${d.session_id}:${d.lap}`] = { distance_m: xs, delta_s: d.delta_s, final_s: d.final_s, index: i };
    }
    const first = result.deltas[0];
    const final = $("delta-final");
    setText(final, `${fmtDelta(first.final_s, 3)} s at the line`);
    final.dataset.final = String(first.final_s);
    final.dataset.sign = first.final_s > 0 ? "loss" : first.final_s < 0 ? "gain" : "even";
  }
  for (const name of state.channels) {
    const present = result.laps.some((l) => (l.channels[name] || []).some((v) => v !== null));
    if (!present) continue; // none of these laps logged it
    const series = result.laps.map((l, i) => ({ label: labelOfLap(l), color: color(i), values: l.channels[name] || [], width: i === 0 ? 3 : 2 }));
    chart($("overlay-charts"), labelOf(name), unitOf(name), xs, series, name);
    window.__compare.channels[name] = result.laps.map((l) => l.channels[name]);
  }
  if (!$("overlay-charts").children.length) {
    $("overlay-charts").append(el("p", { class: "muted", text: "None of these laps logged the channels ticked." }));
  }
  const select = $("map-lap");
  state.mapLap = Math.min(state.mapLap, Math.max(0, result.deltas.length - 1));
  select.replaceChildren(...result.deltas.map((d, i) => el("option", { attrs: { value: String(i) }, text: labelOfLap(result.laps[i + 1]) })));
  select.value = String(state.mapLap);
  $("map-lap-label").hidden = result.deltas.length < 2;
  drawMap();
  window.__compare.shown = (window.__compare.shown || 0) + 1;
}

// ------------------------------------------------------------------- the map
function drawMap() {
  const canvas = $("compare-map");
  const fitted = fitCanvas(canvas);
  const result = state.result;
  $("compare-map-empty").hidden = Boolean(result);
  if (!fitted || !result) return;
  const { ctx, w, h } = fitted;
  const ref = result.laps[0];
  const bounds = boundsOf(ref.lat, ref.lon);
  if (!bounds) return;
  const { px, py } = project(bounds, w, h);
  const line = (from, to) => {
    ctx.beginPath();
    let started = false;
    for (let i = from; i <= to; i++) {
      if (ref.lat[i] === null || ref.lon[i] === null) continue;
      if (!started) ctx.moveTo(px(ref.lon[i]), py(ref.lat[i]));
      else ctx.lineTo(px(ref.lon[i]), py(ref.lat[i]));
      started = true;
    }
  };
  ctx.lineJoin = "round";
  ctx.lineCap = "round";
  line(0, ref.lat.length - 1);
  ctx.strokeStyle = cssVar("--map-trail");
  ctx.lineWidth = 10;
  ctx.stroke();
  const delta = result.deltas[state.mapLap];
  const counts = { gain: 0, loss: 0, even: 0 };
  for (const s of delta ? delta.segments : []) {
    line(s.start_index, s.end_index);
    ctx.strokeStyle = cssVar(s.verdict === "gain" ? "--ok" : s.verdict === "loss" ? "--danger" : "--muted");
    ctx.lineWidth = 6;
    ctx.stroke();
    counts[s.verdict] += 1;
  }
  drawTrackLines(ctx, trackLines(state.track), px, py);
  canvas.dataset.gain = String(counts.gain);
  canvas.dataset.loss = String(counts.loss);
  canvas.dataset.even = String(counts.even);
}

// ------------------------------------------------------------------ setups
function renderSetups(table) {
  const cell = (label, props, ...children) => el("td", { ...props, dataset: { label } }, ...children);
  const changed = (c) => {
    const keys = Object.keys(c || {});
    if (!keys.length) return "—";
    return keys.map((k) => `${k}: ${c[k].from ?? "—"} → ${c[k].to ?? "—"}`).join("; ");
  };
  const sign = (v) => (v === null || v === undefined ? "" : v < 0 ? "gain" : v > 0 ? "loss" : "even");
  $("setups-body").replaceChildren(...table.items.map((s) => el(
    "tr",
    { dataset: { version: s.car_setup_version ?? "" } },
    cell("Setup", { text: s.car_setup_version ? `v${s.car_setup_version}` : "none" }),
    cell("Laps", { class: "num", text: s.laps }),
    cell("Clean", { class: "num", text: s.clean_laps }),
    cell("Best", { class: "num", text: fmtLapTime(s.best) }),
    cell("Mean (clean)", { class: "num", text: fmtLapTime(s.mean_clean) }),
    cell("±", { class: "num", text: s.consistency === null ? "—" : s.consistency.toFixed(3) }),
    cell("Δ best", { class: "num cmp-delta", text: fmtDelta(s.best_change, 3), dataset: { sign: sign(s.best_change) } }),
    cell("Δ mean", { class: "num cmp-delta", text: fmtDelta(s.mean_change, 3), dataset: { sign: sign(s.mean_change) } }),
    cell("Changed", { class: "cell-changed", text: changed(s.changed) }),
  )));
  $("setups-empty").hidden = table.items.length > 0;
  setText($("pick-rule"), `Clean lap rule: ${table.rule}.`);
}

// ------------------------------------------------------------------- start
async function start() {
  initTheme(() => show(state.result));
  setConn("rest", "REST");
  renderChannelPicker();
  const query = new URLSearchParams(location.search);
  let car = query.get("car_id");
  let trackId = query.get("track_id");
  try {
    if (query.get("session_id")) {
      const session = await apiGet(`/sessions/${encodeURIComponent(query.get("session_id"))}`);
      car = car || session.car_id;
      trackId = trackId || session.track_id;
    }
    if (!car) {
      showBanner("Open this page from a session (its car and track): /compare?session_id=…", "warn");
      return;
    }
    const trackQuery = trackId ? `?track_id=${encodeURIComponent(trackId)}` : "";
    const [list, setups] = await Promise.all([
      apiGet(`/cars/${encodeURIComponent(car)}/laps${trackQuery}`),
      apiGet(`/cars/${encodeURIComponent(car)}/setups/compare${trackQuery}`),
    ]);
    state.car = car;
    state.laps = list.items;
    state.track = list.track_id ? await apiGet(`/tracks/${encodeURIComponent(list.track_id)}`) : null;
    setText($("compare-where"), `${car} at ${list.track_name || "no track"}`);
    renderPicker();
    renderSetups(setups);
  } catch (err) {
    showBanner(`Could not load the laps: ${err.message}`, "error");
  } finally {
    document.body.dataset.loaded = "true";
    window.__compare.loaded = true;
  }
}

$("map-lap").addEventListener("change", (e) => {
  state.mapLap = Number(e.target.value) || 0;
  drawMap();
});
new ResizeObserver(() => {
  for (const u of state.charts) {
    const width = Math.max(200, u.root.parentElement.parentElement.clientWidth);
    if (u.width !== width) u.setSize({ width, height: CHART_HEIGHT });
  }
  drawMap();
}).observe($("main"));
start();
