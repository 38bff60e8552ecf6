// The team overview: every active session (every car on this server) on one track map and as
// one card each, live. `team.join` gives the rows; `team.update` brings the cars that changed
// (whole rows, or only their changed fields) at most twice a second, whatever the cars' frame
// rates. The running clocks (stint time, a stop's time, link and position age) are advanced here
// each second from when the row came. A card's figures are redrawn; its pit-wall panel (driver
// change, refill, stints: team/pitwall.js) is kept, so a half-typed entry survives the updates.
import { apiGet, connectDashboard, el, fmtAge, fmtDelta, fmtDuration, fmtLapTime, initTheme, setText, showBanner }
  from "./common.js";
import { CAR_COLOURS, STALE_POSITION_S, TeamMap } from "./team/map.js";
import { carMessages } from "./team/messages.js";
import { pitWallPanel } from "./team/pitwall.js";

const grid = document.getElementById("team-cars");
const empty = document.getElementById("team-empty");
const summary = document.getElementById("team-summary");
const map = new TeamMap(document.getElementById("team-map"), document.getElementById("team-legend"));
const rows = new Map(); // session_id -> {row, seen: local ms when it came}
const cards = new Map(); // session_id -> {node, figs, head, alerts, panel}
const tracks = new Map(); // track_id -> TrackOut | null (asked) | undefined (not yet)
let mapTrack = null;
let outlineOf = null; // the track whose outline is on the map (read once a car has driven a lap there)
const OUTLINE_FRAMES = 3000; // stored frames from the start: at 10-20 Hz, minutes of driving, laps of outline

const LINK_STALE_S = 3.0; // as the server's team.py: no frame for longer, the link is not live
const PIT_TEXT = { on_track: "On track", in_lane: "In pit lane", stopped: "Stopped" };
const LINK_TEXT = { live: "Live", lora: "LoRa", stale: "Stale", none: "No data" };

function figure(field, label, value, sub = null) {
  return { field, label, value, sub };
}

/** Build the card's figures once; afterwards only their text changes (no new nodes: less style and layout). */
function showFigures(box, figs) {
  if (box.children.length !== figs.length) {
    box.replaceChildren(...figs.map((f) => el("div", { class: "team-fig", dataset: { field: f.field } },
      el("span", { class: "team-fig-label", text: f.label }),
      el("span", { class: "team-fig-value" }),
      el("span", { class: "team-fig-sub" }))));
  }
  figs.forEach((f, i) => {
    const node = box.children[i];
    setText(node.children[1], f.value);
    setText(node.children[2], f.sub);
    node.children[2].hidden = f.sub === null;
  });
}

function running(entry, seconds) {
  if (seconds === null || seconds === undefined) return null;
  return seconds + (Date.now() - entry.seen) / 1000;
}

/** The short label on the map and the card: the car id when short (a race number), else its place. */
function labelOf(row, index) {
  const id = row.car_id || "";
  return id && id.length <= 4 ? id : String(index + 1);
}

/** The position's age: how long since the fix (the link's age, plus how far the fix lags the car's newest value). */
function positionAge(entry) {
  const r = entry.row;
  if (!r.position) return null;
  const link = running(entry, r.link.age_s);
  return (link === null ? 0 : link) + (r.position.lag_s || 0);
}

/** The link's state now: the server sends a car's row when it changes, so a car that went quiet is aged here. */
function linkState(entry) {
  const state = entry.row.link.state;
  const age = running(entry, entry.row.link.age_s);
  return state === "live" && age !== null && age > LINK_STALE_S ? "stale" : state;
}

function figures(entry) {
  const r = entry.row;
  const stint = r.stint;
  const leftS = stint && stint.left_s !== null ? stint.left_s - (Date.now() - entry.seen) / 1000 : null;
  const fuel = r.fuel;
  const fuelText = !fuel || fuel.level === null ? "—" : `${Math.round(fuel.percent ?? fuel.level)} %`;
  const litres = fuel && fuel.unit !== "%" && fuel.level !== null ? `${fuel.level.toFixed(1)} l` : null;
  const lapsLeft = fuel && fuel.laps_left !== null ? `${fuel.laps_left.toFixed(1)} laps` : "—";
  const pit = r.pit || { status: "on_track", running_s: null, stops: 0 };
  const pitText = PIT_TEXT[pit.status] + (pit.running_s !== null && pit.status !== "on_track"
    ? ` ${fmtDuration(running(entry, pit.running_s))}` : "");
  const age = running(entry, r.link.age_s);
  const linkText = LINK_TEXT[linkState(entry)] + (age !== null ? ` · ${fmtAge(age)}` : "");
  return [
    figure("laps", "Laps", String(r.laps)),
    figure("last_lap", "Last", fmtLapTime(r.last_lap_s)),
    figure("best_lap", "Best", fmtLapTime(r.best_lap_s)),
    figure("delta", "Delta", fmtDelta(r.delta_s)),
    figure("gap", "Gap to best", r.gap_to_best_s === null ? "—" : fmtDelta(r.gap_to_best_s)),
    figure("stint", "Stint", stint ? fmtDuration(running(entry, stint.elapsed_s)) : "—"),
    figure("stint_left", "Stint left", leftS === null ? "—" : fmtDuration(Math.max(0, leftS)) + (leftS < 0 ? " over" : "")),
    figure("fuel", "Fuel", fuelText, litres),
    figure("fuel_laps", "Fuel laps", lapsLeft),
    figure("pit", "Pit", pitText),
    figure("link", "Link", linkText),
  ];
}

function cardOf(entry) {
  const r = entry.row;
  let card = cards.get(r.session_id);
  if (card) return card;
  const href = `/sessions/${encodeURIComponent(r.session_id)}`;
  const status = el("p", { class: "pw-status", attrs: { role: "status" } });
  const panel = pitWallPanel(r.session_id, r.car_id, { status });
  const details = el("details", { class: "team-pitwall" }, el("summary", { text: "Driver, fuel, stints" }), panel.node, status);
  details.addEventListener("toggle", () => { if (details.open) panel.refresh(rows.get(r.session_id)?.row); });
  card = {
    messages: carMessages(r.session_id),
    badge: el("span", { class: "team-badge" }),
    name: el("a", { class: "team-car-name", attrs: { href } }),
    driver: el("span", { class: "team-driver", dataset: { field: "driver" } }),
    figs: el("div", { class: "team-figs" }),
    alerts: el("ul", { class: "team-alerts", dataset: { field: "alerts" } }),
    details,
    panel,
  };
  card.node = el("article", { class: "team-car", dataset: { sessionId: r.session_id } },
    el("header", { class: "team-car-head" }, card.badge, card.name, card.driver), card.figs, card.alerts,
    card.messages.node, details);
  cards.set(r.session_id, card);
  return card;
}

function fill(entry, index) {
  const r = entry.row;
  const card = cardOf(entry);
  const pit = r.pit || { status: "on_track" };
  card.node.dataset.pit = pit.status;
  card.node.dataset.link = linkState(entry);
  setText(card.badge, labelOf(r, index));
  card.badge.style.setProperty("--car", CAR_COLOURS[index % CAR_COLOURS.length]);
  setText(card.name, r.car_id || r.name || r.session_id.slice(0, 8));
  setText(card.driver, r.driver ? (r.driver.name || r.driver.driver_id) : "—");
  showFigures(card.figs, figures(entry));
  const alertKey = JSON.stringify(r.alerts);
  if (card.alertKey !== alertKey) {
    card.alertKey = alertKey;
    card.alerts.replaceChildren(...r.alerts.map((a) =>
      el("li", { dataset: { severity: a.severity || "warning" }, text: a.name || a.rule_id })));
  }
  if (card.details.open) card.panel.refresh(r);
  return card.node;
}

/** The map's track: the one most cars are on (its lines fetched once). */
function chooseTrack(entries) {
  const counts = new Map();
  for (const { row } of entries) if (row.track_id) counts.set(row.track_id, (counts.get(row.track_id) || 0) + 1);
  const best = [...counts.entries()].sort((a, b) => b[1] - a[1])[0];
  const id = best ? best[0] : null;
  if (id && tracks.get(id) === undefined) {
    tracks.set(id, null);
    apiGet(`/tracks/${encodeURIComponent(id)}`).then((track) => {
      tracks.set(id, track);
      if (mapTrack === id) map.setTrack(track);
    }).catch(() => tracks.delete(id));
  }
  if (id !== mapTrack) {
    mapTrack = id;
    map.setTrack(id ? tracks.get(id) || null : null);
    map.setOutline([]);
    outlineOf = null;
  }
  const lapped = entries.find(({ row }) => row.track_id === id && row.laps >= 2);
  if (lapped && outlineOf !== id) {
    outlineOf = id;
    apiGet(`/sessions/${encodeURIComponent(lapped.row.session_id)}/frames?limit=${OUTLINE_FRAMES}`)
      .then((answer) => { if (mapTrack === id) map.setOutline(answer.items); })
      .catch(() => { outlineOf = null; });
  }
  return id;
}

function render() {
  const entries = [...rows.values()].sort((a, b) => (a.row.car_id || "").localeCompare(b.row.car_id || "")
    || a.row.session_id.localeCompare(b.row.session_id));
  const nodes = entries.map(fill);
  if (nodes.length !== grid.children.length || nodes.some((n, i) => grid.children[i] !== n)) grid.replaceChildren(...nodes);
  const trackId = chooseTrack(entries);
  map.setCars(entries.filter(({ row }) => !trackId || !row.track_id || row.track_id === trackId).map((entry, i) => {
    const r = entry.row;
    const age = positionAge(entry);
    return {
      id: r.session_id, label: labelOf(r, entries.indexOf(entry)),
      colour: CAR_COLOURS[entries.indexOf(entry) % CAR_COLOURS.length],
      lat: r.position ? r.position.lat : NaN, lon: r.position ? r.position.lon : NaN, age_s: age,
      hollow: linkState(entry) !== "live" || (age !== null && age > STALE_POSITION_S), index: i,
    };
  }));
  empty.hidden = entries.length > 0;
  setText(summary, `${entries.length} car${entries.length === 1 ? "" : "s"}`);
  document.body.dataset.loaded = "true";
}

function take(row) {
  rows.set(row.session_id, { row, seen: Date.now() });
  map.addPosition(row.session_id, row.position);
}

function drop(id) {
  rows.delete(id);
  cards.delete(id);
  map.forget(id);
}

function onSnapshot(snapshot) {
  for (const id of [...rows.keys()]) if (!snapshot.cars.some((c) => c.session_id === id)) drop(id);
  snapshot.cars.forEach(take);
  render();
}

function onUpdate(update) {
  const t0 = performance.now();
  update.cars.forEach(take);
  for (const change of update.changes) {
    const entry = rows.get(change.session_id);
    if (entry) take({ ...entry.row, ...change });
  }
  for (const id of update.ended) drop(id);
  render();
  window.dashboardTeamStats?.(performance.now() - t0); // the browser bench's hook (bench/team_browser.py)
}

initTheme(() => map.draw());
connectDashboard({
  onConnect: (socket) => {
    socket.emit("team.join", {}, (ack) => {
      if (ack && ack.ok) onSnapshot(ack.snapshot);
      else showBanner(`Could not join the team view: ${ack && ack.error ? ack.error.message : "no answer"}`, "error");
    });
  },
}).on("team.update", onUpdate).on("message", (m) => cards.get(m.session_id)?.messages.upsert(m));
setInterval(() => { if (!document.hidden) render(); }, 1000);
