// The team view: one card per active session (every car on this server), live.
// `team.join` gives the rows; `team.update` brings the cars that changed (whole
// rows, or only their changed fields) at most twice a second, whatever the cars'
// frame rates. The running clocks (stint time, a stop's time, link age) are
// advanced here each second from the update's generated_at.
import {
  connectDashboard, el, fmtAge, fmtDelta, fmtDuration, fmtLapTime, initTheme, setText, showBanner,
} from "./common.js";

const grid = document.getElementById("team-cars");
const empty = document.getElementById("team-empty");
const summary = document.getElementById("team-summary");
const rows = new Map(); // session_id -> {row, at: ms of the server's generated_at, seen: local ms}

const PIT_TEXT = { on_track: "On track", in_lane: "In pit lane", stopped: "Stopped" };
const LINK_TEXT = { live: "Live", lora: "LoRa", stale: "Stale", none: "No data" };

function figure(field, label, value, extra = {}) {
  return el("div", { class: "team-fig", dataset: { field, ...(extra.dataset || {}) } },
    el("span", { class: "team-fig-label", text: label }),
    el("span", { class: "team-fig-value", text: value }));
}

function running(entry, seconds) {
  if (seconds === null || seconds === undefined) return null;
  return seconds + (Date.now() - entry.seen) / 1000;
}

function card(entry) {
  const r = entry.row;
  const href = `/sessions/${encodeURIComponent(r.session_id)}`;
  const stint = r.stint;
  const stintText = stint ? fmtDuration(running(entry, stint.elapsed_s)) : "—";
  const leftS = stint && stint.left_s !== null ? stint.left_s - (Date.now() - entry.seen) / 1000 : null;
  const fuel = r.fuel;
  const fuelText = fuel && fuel.percent !== null ? `${Math.round(fuel.percent)} %` : "—";
  const lapsLeft = fuel && fuel.laps_left !== null ? `${fuel.laps_left.toFixed(1)} laps` : "—";
  const pit = r.pit || { status: "on_track", running_s: null, stops: 0 };
  const pitText = PIT_TEXT[pit.status] + (pit.running_s !== null && pit.status !== "on_track"
    ? ` ${fmtDuration(running(entry, pit.running_s))}` : "");
  const link = r.link;
  const age = running(entry, link.age_s);
  const linkText = LINK_TEXT[link.state] + (age !== null ? ` · ${fmtAge(age)}` : "");
  return el("article", { class: "team-car", dataset: { sessionId: r.session_id, pit: pit.status, link: link.state } },
    el("header", { class: "team-car-head" },
      el("a", { class: "team-car-name", text: r.car_id || r.name || r.session_id.slice(0, 8), attrs: { href } }),
      el("span", { class: "team-driver", dataset: { field: "driver" }, text: r.driver ? (r.driver.name || r.driver.driver_id) : "—" })),
    el("div", { class: "team-figs" },
      figure("laps", "Laps", String(r.laps)),
      figure("last_lap", "Last", fmtLapTime(r.last_lap_s)),
      figure("best_lap", "Best", fmtLapTime(r.best_lap_s)),
      figure("delta", "Delta", fmtDelta(r.delta_s)),
      figure("gap", "Gap to best", r.gap_to_best_s === null ? "—" : fmtDelta(r.gap_to_best_s)),
      figure("stint", "Stint", stintText),
      figure("stint_left", "Stint left", leftS === null ? "—" : fmtDuration(Math.max(0, leftS)) + (leftS < 0 ? " over" : "")),
      figure("fuel", "Fuel", fuelText),
      figure("fuel_laps", "Fuel laps", lapsLeft),
      figure("pit", "Pit", pitText),
      figure("link", "Link", linkText)),
    el("ul", { class: "team-alerts", dataset: { field: "alerts" } },
      ...r.alerts.map((a) => el("li", { dataset: { severity: a.severity || "warning" }, text: a.name || a.rule_id }))));
}

function render() {
  const entries = [...rows.values()].sort((a, b) => (a.row.car_id || "").localeCompare(b.row.car_id || ""));
  grid.replaceChildren(...entries.map(card));
  empty.hidden = entries.length > 0;
  setText(summary, `${entries.length} car${entries.length === 1 ? "" : "s"}`);
  document.body.dataset.loaded = "true";
}

function take(row) {
  rows.set(row.session_id, { row, seen: Date.now() });
}

function onSnapshot(snapshot) {
  rows.clear();
  snapshot.cars.forEach(take);
  render();
}

function onUpdate(update) {
  update.cars.forEach(take);
  for (const change of update.changes) {
    const entry = rows.get(change.session_id);
    if (entry) rows.set(change.session_id, { row: { ...entry.row, ...change }, seen: Date.now() });
  }
  for (const id of update.ended) rows.delete(id);
  render();
}

initTheme();
connectDashboard({
  onConnect: (socket) => {
    socket.emit("team.join", {}, (ack) => {
      if (ack && ack.ok) onSnapshot(ack.snapshot);
      else showBanner(`Could not join the team view: ${ack && ack.error ? ack.error.message : "no answer"}`, "error");
    });
  },
}).on("team.update", onUpdate);
setInterval(() => { if (!document.hidden) render(); }, 1000);
