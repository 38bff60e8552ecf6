// The live session view. Joins the session's room on /dashboard, applies the
// join snapshot (session, setup, latest values, the last 60 s of frames), then
// the live events. Incoming frames only go into bounded buffers and set dirty
// flags; drawing happens once per animation frame, so a 50 Hz feed costs one
// redraw per screen refresh at most, and memory stays flat for hours.
import {
  apiGet, apiPost, authorisedDownload, connectDashboard, el, fmtClock, fmtDuration, fmtLapTime, fmtWhen, initTheme,
  parseIso, setText, showBanner,
} from "./common.js";
import { AlertsPanel, RulesEditor, describeAlert } from "./live/alerts.js";
import { FrameBuffer } from "./live/buffer.js";
import { StripCharts } from "./live/charts.js";
import { Readouts } from "./live/gauges.js";
import { LapsPanel } from "./live/laps.js";
import { LinkState } from "./live/link.js";
import { MessagesPanel } from "./live/messages.js";
import { LivePitWall } from "./live/pitwall.js";
import { Replay } from "./live/replay.js";
import { SetupPanel } from "./live/setup.js";
import { TrackPanel } from "./live/trackedit.js";
import { TrackMap } from "./live/trackmap.js";

const SESSION_ID = document.body.dataset.sessionId;
const AGE_TICK_MS = 250; // ages and staleness move with the clock, not only with data
const MAX_FEED = 200; // event feed entries kept in the page
const JOIN_TIMEOUT_MS = 10000;
const JOIN_RETRY_MS = 2000;
const CONFIRM_END_MS = 4000; // "End" needs a second press within this time

const buffer = new FrameBuffer();
const readouts = new Readouts(document.getElementById("gauges"), document.getElementById("numbers"));
const charts = new StripCharts(document.getElementById("charts"), document.getElementById("chart-channels"), buffer);
const link = new LinkState(document.getElementById("link-state"));
const track = new TrackMap(document.getElementById("track"), document.getElementById("track-empty"));
const setup = new SetupPanel(SESSION_ID);
const laps = new LapsPanel();
const alerts = new AlertsPanel(SESSION_ID, document.getElementById("alerts"));
const rules = new RulesEditor(document.getElementById("rules-table"));
const FINAL_STATUSES = ["ended", "expired"];
authorisedDownload(document.getElementById("export-csv")); // the export carries the viewer token like every read
new LivePitWall(SESSION_ID); // driver, stint, fuel; driver change and refill (the team page's panel)
window.__charts = charts; // what each chart draws (charts.data(name)), for tests and tools

const state = {
  session: null,
  sessionAt: 0, // Date.now() when `session` was received (durations tick from there)
  framesAtSession: 0, // buffer.received when `session` was received
  clockOffsetS: 0, // browser clock minus server clock, from the snapshot
  monitor: { online: false, backlog: null, rtt_ms: null },
  joined: false,
  everJoined: false,
  feedShown: new Map(), // event type -> [{id, when}] shown, to show each event once
  dirty: { values: false, charts: false, track: false, info: false, laps: false, alerts: false },
  trackName: null, // name of the session's track (track_id), when it has one
  lora: null, // {t}: newest values that came over LoRa
  raf: 0,
};

/** Now on the server's clock (epoch seconds): sample ages are measured against it. */
function serverNow() {
  if (replay.active && replay.loaded) return replay.pos; // a replay's "now" is its clock
  return Date.now() / 1000 - state.clockOffsetS;
}

// ------------------------------------------------------------------- drawing
function schedule(...what) {
  for (const w of what) state.dirty[w] = true;
  if (!state.raf) state.raf = requestAnimationFrame(draw);
}

function draw() {
  state.raf = 0;
  const d = state.dirty;
  const now = serverNow();
  if (d.values) readouts.update(buffer.latest, now);
  if (d.charts) charts.update();
  if (d.track) track.draw();
  if (d.info || d.values) renderInfo(now);
  if (d.laps) laps.render();
  if (d.alerts) alerts.render();
  state.dirty = { values: false, charts: false, track: false, info: false, laps: false, alerts: false };
  document.body.dataset.lastSeq = String(buffer.lastSeq);
  document.body.dataset.buffered = String(buffer.length);
}

/** Add frames (snapshot or live) to the buffers and the map; returns how many were new. */
function ingest(frames) {
  let added = 0;
  for (const f of frames || []) {
    if (!buffer.add(f)) continue;
    added++;
    const c = f.channels;
    if (c && typeof c.lat === "number" && typeof c.lon === "number") track.add(c.lat, c.lon, f.t, c.heading);
    for (const name of Object.keys(c || {})) charts.offer(name);
  }
  if (added) schedule("values", "charts", "track");
  return added;
}

// ------------------------------------------------------------- session header
const ctl = {
  start: document.getElementById("ctl-start"),
  stop: document.getElementById("ctl-stop"),
  end: document.getElementById("ctl-end"),
  msg: document.getElementById("ctl-msg"),
};

function applySession(s) {
  if (!s || s.session_id !== SESSION_ID) return;
  state.session = s;
  state.sessionAt = Date.now();
  state.framesAtSession = buffer.received;
  if (typeof s.monitor_online === "boolean") state.monitor.online = s.monitor_online;
  const title = s.name || `Session ${s.session_id.slice(0, 8)}`;
  setText(document.getElementById("session-name"), title);
  document.title = `${title} · Race dashboard`;
  const badge = document.getElementById("session-status");
  setText(badge, s.status);
  badge.dataset.status = s.status;
  setText(document.getElementById("info-car"), s.car_id || "—");
  setText(document.getElementById("info-driver"), s.driver || "—");
  trackPanel.setSessionTrack(s.track_id);
  rules.setSession(s.session_id);
  rules.setCar(s.car_id || null);
  renderTrackName();
  setText(document.getElementById("info-started"), fmtWhen(s.started_at));
  ctl.start.disabled = !["created", "stopped"].includes(s.status);
  ctl.stop.disabled = s.status !== "active";
  ctl.end.disabled = FINAL_STATUSES.includes(s.status);
  if (FINAL_STATUSES.includes(s.status)) replay.enable();
  schedule("info");
}

function renderTrackName() {
  const s = state.session;
  const parts = [s && s.track, state.trackName].filter(Boolean);
  if (parts.length === 2 && parts[0] === parts[1]) parts.pop();
  setText(document.getElementById("info-track"), parts.length ? parts.join(" · ") : "—");
}

function renderInfo(now) {
  const s = state.session;
  if (s) {
    const live = s.status === "active" ? (Date.now() - state.sessionAt) / 1000 : 0;
    setText(document.getElementById("info-duration"), fmtDuration((s.stats ? s.stats.duration_s : 0) + live));
    // live: the stored count plus what arrived since; a replay plays stored frames, it adds none
    const frames = (s.stats ? s.stats.frames : 0) + (replay.active ? 0 : buffer.received - state.framesAtSession);
    setText(document.getElementById("info-frames"), frames.toLocaleString());
  }
  link.render({ monitor: state.monitor, lastT: buffer.lastT, loraT: state.lora ? state.lora.t : null, now, rate: buffer.rate() });
}

async function control(action, button) {
  if (action === "end" && button.dataset.confirm !== "true") {
    button.dataset.confirm = "true";
    setText(button, "Confirm end");
    setTimeout(() => {
      button.dataset.confirm = "false";
      setText(button, "End");
    }, CONFIRM_END_MS);
    return;
  }
  button.dataset.confirm = "false";
  if (action === "end") setText(button, "End");
  setText(ctl.msg, `${action}…`);
  try {
    const s = await apiPost(`/sessions/${encodeURIComponent(SESSION_ID)}/${action}`, {});
    applySession(s);
    setText(ctl.msg, "");
  } catch (err) {
    setText(ctl.msg, `${action} failed: ${err.message}`);
  }
}
for (const b of [ctl.start, ctl.stop, ctl.end]) b.addEventListener("click", () => control(b.dataset.action, b));

// ------------------------------------------------------------------- event feed
const feedEl = document.getElementById("feed");
const WARN_EVENT = /dtc|trouble|fault|alert\.raised|error|warn/i;

const DUP_WINDOW_MS = 1500; // the same event type twice within this is one event (see addEvent)

/** One feed line, newest first (history that arrives late is slotted in by time). */
function addFeed({ kind, text, when }) {
  const item = el(
    "li",
    { class: WARN_EVENT.test(kind) || WARN_EVENT.test(text) ? "feed-warn" : "", dataset: { kind, when: when ?? "" } },
    el("time", { text: fmtClock(when) }),
    el("span", { class: "feed-kind", text: kind }),
    el("span", { class: "feed-text", text }),
  );
  const after = [...feedEl.children].find((c) => Number(c.dataset.when || 0) < (when ?? 0));
  feedEl.insertBefore(item, after || null);
  while (feedEl.children.length > MAX_FEED) feedEl.lastElementChild.remove();
}

function summarise(payload, kind = "") {
  if (!payload || typeof payload !== "object") return "";
  if (kind === "alert.raised" && payload.name) return describeAlert(payload);
  if (kind === "alert.cleared") return `${payload.name || payload.rule_id || "alert"} cleared`;
  if (kind === "alert.acked") return `${payload.rule_id || "alert"} acknowledged`;
  if (kind === "lap.completed") {
    const what = payload.out_lap ? "Out lap" : payload.in_lap ? `In lap ${payload.lap}` : `Lap ${payload.lap}`;
    const v = payload.setup_version === null || payload.setup_version === undefined ? "" : ` · setup v${payload.setup_version}`;
    return `${what}: ${fmtLapTime(payload.lap_time)}${v}`;
  }
  const parts = [];
  for (const [k, v] of Object.entries(payload)) {
    parts.push(`${k}=${typeof v === "string" ? v : JSON.stringify(v)}`);
    if (parts.length >= 6) break;
  }
  return parts.join(" ");
}

/**
 * An EventOut, live or from GET /events. Stored events have an id; the live
 * copies of transitions and setup changes come with id 0 and their own
 * timestamp, so they are matched to history by type and time instead.
 */
function addEvent(ev) {
  if (!ev || ev.session_id !== SESSION_ID) return;
  const when = parseIso(ev.timestamp) ?? Date.now();
  const id = ev.id || 0;
  const shown = state.feedShown.get(ev.event_type) || [];
  const dup = shown.some((o) => (id && o.id === id) || ((!id || !o.id) && Math.abs(o.when - when) < DUP_WINDOW_MS));
  if (dup) return;
  shown.push({ id, when });
  if (shown.length > MAX_FEED) shown.shift();
  state.feedShown.set(ev.event_type, shown);
  addFeed({ kind: ev.event_type, text: summarise(ev.payload, ev.event_type), when });
}

async function loadEvents() {
  try {
    const list = await apiGet(`/sessions/${encodeURIComponent(SESSION_ID)}/events`);
    for (const ev of list.items || []) addEvent(ev);
  } catch {
    // the feed fills from live events anyway
  }
}

// ---------------------------------------------------------------- socket events
function applySnapshot(snap) {
  if (!snap) return;
  const tele = snap.telemetry;
  if (tele && tele.channels) {
    // the server's now = a value's t + its age: that gives our clock's offset
    const any = Object.values(tele.channels)[0];
    if (any) state.clockOffsetS = Date.now() / 1000 - (any.t + any.age_s);
    buffer.seedLatest(tele.channels);
    for (const name of Object.keys(tele.channels)) charts.offer(name);
  }
  if (!replay.active) {
    ingest(snap.recent);
    if (!state.everJoined) track.rebuild(buffer);
  }
  if (snap.alerts) {
    alerts.setAll(snap.alerts, { merge: true });
    schedule("alerts");
  }
  applySession(snap.session);
  if (snap.setup) setup.add(snap.setup);
  schedule("values", "charts", "track", "info");
}

async function join(socket) {
  state.joined = false;
  document.body.dataset.joined = "false";
  try {
    const ack = await socket.timeout(JOIN_TIMEOUT_MS).emitWithAck("join", { session_id: SESSION_ID });
    if (!ack || !ack.ok) {
      const err = (ack && ack.error) || {};
      const notFound = err.code === "not_found" || /not.?found/i.test(err.message || "");
      showBanner(notFound ? "This session does not exist (or was deleted)." : `Could not join: ${err.message || "unknown error"}`, "error");
      if (!notFound) setTimeout(() => socket.connected && join(socket), JOIN_RETRY_MS);
      return;
    }
    applySnapshot(ack.snapshot);
    state.joined = true;
    state.everJoined = true;
    document.body.dataset.joined = "true";
    setup.loadHistory();
    loadEvents();
    loadLaps();
    loadAlerts();
  } catch {
    if (socket.connected) setTimeout(() => socket.connected && join(socket), JOIN_RETRY_MS); // ack timed out
  }
}

const socket = connectDashboard({
  onConnect: (sock) => join(sock),
  onDisconnect: () => {
    state.joined = false;
    state.monitor.online = null; // unknown until the server tells us again
    document.body.dataset.joined = "false";
    schedule("info");
  },
});

socket.on("telemetry", (msg) => {
  if (msg && msg.session_id === SESSION_ID) ingest(msg.frames);
});
socket.on("session", (s) => applySession(s));
socket.on("sessions", (s) => applySession(s));
socket.on("setup", (s) => {
  if (!s || s.session_id !== SESSION_ID) return;
  setup.add(s);
});
socket.on("monitor", (m) => {
  if (!m || m.session_id !== SESSION_ID) return;
  state.monitor = { online: !!m.online, backlog: m.backlog ?? state.monitor.backlog, rtt_ms: m.rtt_ms ?? state.monitor.rtt_ms };
  schedule("info");
});
socket.on("event", addEvent);
socket.on("lora", (msg) => {
  if (!msg || msg.session_id !== SESSION_ID || !msg.frame) return;
  const f = msg.frame;
  const values = {};
  for (const [name, value] of Object.entries(f.channels || {})) {
    if (typeof value === "number") values[name] = { value, t: f.t };
  }
  buffer.seedLatest(values); // newer than what the main link last gave: shown, with its age
  const c = f.channels || {};
  if (typeof c.lat === "number" && typeof c.lon === "number") track.add(c.lat, c.lon, f.t, c.heading);
  if (!state.lora || f.t > state.lora.t) state.lora = { t: f.t };
  document.body.dataset.loraSeq = String(f.seq);
  schedule("values", "track", "info");
});
socket.on("lap", (lap) => {
  if (!lap || lap.session_id !== SESSION_ID) return;
  laps.addLap(lap);
  markersChanged();
  schedule("laps");
});
socket.on("sector", (s) => {
  if (!s || s.session_id !== SESSION_ID) return;
  laps.addSector(s);
  schedule("laps");
});
socket.on("timing", (t) => {
  if (!t || t.session_id !== SESSION_ID) return;
  laps.setTiming(t);
  schedule("laps");
});
socket.on("laps", (list) => {
  if (!list || list.session_id !== SESSION_ID) return;
  laps.setAll(list);
  markersChanged();
  schedule("laps");
  // the track changed (maybe from another page): the session says which, for the map's lines
  apiGet(`/sessions/${encodeURIComponent(SESSION_ID)}`).then(applySession, () => {});
});
socket.on("deleted", (d) => {
  if (!d || d.session_id !== SESSION_ID) return;
  document.body.dataset.deleted = "true";
  showBanner("This session was deleted: its data is gone from the server.", "error");
});
const messages = new MessagesPanel(SESSION_ID, document.getElementById("messages"));
messages.load();
socket.on("message", (m) => messages.upsert(m));
socket.on("alert", (a) => {
  alerts.upsert(a);
  markersChanged();
  schedule("alerts");
});

// ------------------------------------------------------------ laps and alerts
async function loadLaps() {
  try {
    laps.setAll(await apiGet(`/sessions/${encodeURIComponent(SESSION_ID)}/laps`));
    markersChanged();
    schedule("laps");
  } catch {
    // live `lap` events fill the table anyway
  }
}

async function loadAlerts() {
  try {
    const list = await apiGet(`/sessions/${encodeURIComponent(SESSION_ID)}/alerts`);
    alerts.setAll(list.items || []);
    markersChanged();
    schedule("alerts");
  } catch {
    // the snapshot's alerts and live events stand
  }
}

function markersChanged() {
  if (replay.active) replay.setMarkers(laps.all(), alerts.all());
}

// ------------------------------------------------------------------- the track
const trackPanel = new TrackPanel(SESSION_ID, track, {
  onTrack: (t) => {
    track.setTrack(t);
    state.trackName = t ? t.name : null;
    renderTrackName();
    schedule("track");
  },
  onLaps: (list) => {
    laps.setAll(list);
    markersChanged();
    schedule("laps");
  },
});
trackPanel.load();

// ------------------------------------------------------------------- replay
const replay = new Replay(SESSION_ID, {
  onSeek: (frames, end, t) => {
    buffer.clear();
    track.reset();
    // the map gets the whole trail so far; the buffers only what they would hold live
    for (let i = 0; i < end; i++) {
      const c = frames[i].channels;
      if (c && typeof c.lat === "number" && typeof c.lon === "number") track.add(c.lat, c.lon, frames[i].t, c.heading);
    }
    let i0 = end;
    while (i0 > 0 && frames[i0 - 1].t >= t - buffer.historyS) i0--;
    for (let i = i0; i < end; i++) {
      buffer.add(frames[i]);
      for (const name of Object.keys(frames[i].channels || {})) charts.offer(name);
    }
    schedule("values", "charts", "track", "info");
  },
  onAdvance: (frames) => ingest(frames),
  onTime: (t) => {
    laps.setCutoff(t);
    alerts.setCutoff(t);
    schedule("laps", "alerts", "values", "info");
  },
});

// ---------------------------------------------------------------------- UI glue
for (const b of document.querySelectorAll("[data-window]")) {
  b.addEventListener("click", () => {
    for (const o of document.querySelectorAll("[data-window]")) o.setAttribute("aria-pressed", String(o === b));
    charts.setWindow(Number(b.dataset.window));
  });
}

initTheme(() => {
  charts.rebuild();
  readouts.redrawAll();
  schedule("track");
});

setInterval(() => schedule("values", "info"), AGE_TICK_MS);
