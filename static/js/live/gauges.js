// Dial gauges (canvas arcs) for the four channels a driver's crew watches most,
// and the big numbers for every other channel. Values are written as text;
// each value element carries data-channel and data-value (the raw number) so
// tests and tools can read exactly what was received. Labels and units come
// from the channel registry the page embeds (dashboard/telemetry/channels.py):
// "Engine load %", never "engine_load"; a custom channel shows its own name.
//
// A component: give it any two containers (the live page's, a pit-wall
// screen's); how big it is, is the page's CSS (.gauges, .numbers).
import { CHANNEL_ORDER, cssVar, el, fmtAge, labelOf, REGISTRY, setText, staleAfter, unitOf } from "../common.js";

const SWEEP = 1.5 * Math.PI; // a 270° dial
const START = 0.75 * Math.PI; // from lower left, clockwise

/** The dials: range, and the bands drawn in colour (rpm redline, coolant warning); labels from the registry. */
export const GAUGES = [
  { name: "speed", min: 0, max: 300 },
  { name: "rpm", min: 0, max: 9000, bands: [{ from: 7000, to: 9000, color: "--danger" }] },
  { name: "throttle", min: 0, max: 100 },
  { name: "coolant_temp", min: 40, max: 130, bands: [{ from: 105, to: 130, color: "--warn" }] },
];
const GAUGE_NAMES = new Set(GAUGES.map((g) => g.name));

/** Decimals shown per channel; others get a sensible default from the magnitude. */
const DECIMALS = {
  speed: 0, rpm: 0, throttle: 0, engine_load: 0, coolant_temp: 0, intake_temp: 0, oil_temp: 0,
  fuel_level: 1, timing_advance: 1, maf: 1, lat: 6, lon: 6, gps_speed: 0, heading: 0, altitude: 0,
  gps_fix: 0, satellites: 0, hdop: 1, battery_voltage: 2, gear: 0,
};

export function formatValue(name, v) {
  if (v === null || v === undefined) return "—";
  if (name === "gear") return v === 0 ? "N" : v === -1 ? "R" : String(Math.round(v));
  let d = DECIMALS[name];
  if (d === undefined) d = Number.isInteger(v) ? 0 : Math.abs(v) >= 100 ? 1 : Math.abs(v) >= 1 ? 2 : 3;
  return v.toFixed(d);
}

/** Registry channels first in registry order, then custom ones alphabetically. */
function orderKey(name) {
  const i = CHANNEL_ORDER.indexOf(name);
  return i >= 0 ? `0${String(i).padStart(3, "0")}` : `1${name}`;
}

export class Readouts {
  constructor(gaugesEl, numbersEl) {
    this.gaugesEl = gaugesEl;
    this.numbersEl = numbersEl;
    this.tiles = new Map(); // channel -> {root, value, age, canvas?, gauge?, shown}
    for (const g of GAUGES) this.addGauge(g);
  }

  addGauge(g) {
    const canvas = el("canvas", { class: "gauge-dial", attrs: { "aria-hidden": "true" } });
    const value = el("span", { class: "value", text: "—", dataset: { channel: g.name, value: "" } });
    const age = el("span", { class: "age" });
    const root = el(
      "figure",
      { class: "gauge tile", dataset: { channel: g.name, stale: "true" }, attrs: { title: REGISTRY[g.name]?.description } },
      canvas,
      el("figcaption", {}, el("span", { class: "label", text: labelOf(g.name) }), value, el("span", { class: "unit", text: unitOf(g.name) }), age),
    );
    this.gaugesEl.append(root);
    this.tiles.set(g.name, { root, value, age, canvas, gauge: g, shown: undefined, drawn: undefined });
  }

  addNumber(name) {
    const value = el("span", { class: "value", text: "—", dataset: { channel: name, value: "" } });
    const age = el("span", { class: "age" });
    const root = el(
      "div",
      { class: "number tile", dataset: { channel: name, stale: "true", order: orderKey(name) }, attrs: { title: REGISTRY[name]?.description || name } },
      el("span", { class: "label", text: labelOf(name) }),
      el("span", { class: "reading" }, value, el("span", { class: "unit", text: unitOf(name) })),
      age,
    );
    // keep the tiles sorted
    const after = [...this.numbersEl.children].find((c) => c.dataset.order > root.dataset.order);
    this.numbersEl.insertBefore(root, after || null);
    const tile = { root, value, age, shown: undefined };
    this.tiles.set(name, tile);
    return tile;
  }

  /**
   * Bring every tile up to date: values from `latest` (channel -> {value, t}),
   * ages from `nowT` (the server's clock, epoch seconds).
   */
  update(latest, nowT) {
    for (const [name, cur] of latest) {
      let tile = this.tiles.get(name);
      if (!tile) tile = this.addNumber(name);
      if (tile.shown !== cur.value) {
        tile.shown = cur.value;
        const text = formatValue(name, cur.value);
        setText(tile.value, text);
        if (!tile.gauge) tile.value.classList.toggle("long", text.length > 7);
        tile.value.dataset.value = cur.value === null || cur.value === undefined ? "" : String(cur.value);
      }
      const age = Math.max(0, nowT - cur.t);
      const stale = cur.value === null || cur.value === undefined || age > staleAfter(name);
      const wasStale = tile.root.dataset.stale === "true";
      if (stale !== wasStale) tile.root.dataset.stale = String(stale);
      setText(tile.age, stale ? `stale · ${fmtAge(age)}` : fmtAge(age));
      tile.root.dataset.age = age.toFixed(1);
      if (tile.gauge && (tile.drawn !== cur.value || stale !== tile.drawnStale)) {
        this.drawGauge(tile, cur.value, stale);
      }
    }
    for (const g of GAUGES) {
      const tile = this.tiles.get(g.name);
      if (!latest.has(g.name) && tile.drawn === undefined) this.drawGauge(tile, null, true);
    }
  }

  redrawAll() {
    for (const tile of this.tiles.values()) if (tile.gauge) this.drawGauge(tile, tile.drawn ?? null, tile.drawnStale ?? true);
  }

  drawGauge(tile, value, stale) {
    const { canvas, gauge: g } = tile;
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth || 160;
    const h = canvas.clientHeight || 120;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const cx = w / 2;
    const r = Math.max(10, Math.min(w / 2 - 8, (h - 12) / (1 + Math.SQRT1_2)));
    const cy = 6 + r; // the arc's lowest points sit at cy + r·sin(45°)
    const lw = Math.max(8, r * 0.2);
    const frac = (v) => Math.min(1, Math.max(0, (v - g.min) / (g.max - g.min)));
    const arc = (from, to, color, width = lw) => {
      ctx.beginPath();
      ctx.arc(cx, cy, r, START + SWEEP * from, START + SWEEP * to);
      ctx.strokeStyle = color;
      ctx.lineWidth = width;
      ctx.lineCap = "butt";
      ctx.stroke();
    };
    arc(0, 1, cssVar("--gauge-track"));
    for (const b of g.bands || []) arc(frac(b.from), frac(b.to), cssVar(b.color), lw * 0.45);
    if (value !== null && value !== undefined) {
      let color = stale ? cssVar("--stale") : cssVar("--accent");
      for (const b of g.bands || []) if (!stale && value >= b.from) color = cssVar(b.color);
      arc(0, frac(value), color);
      // needle tip
      const a = START + SWEEP * frac(value);
      ctx.beginPath();
      ctx.moveTo(cx + Math.cos(a) * (r - lw), cy + Math.sin(a) * (r - lw));
      ctx.lineTo(cx + Math.cos(a) * (r + lw * 0.6), cy + Math.sin(a) * (r + lw * 0.6));
      ctx.strokeStyle = cssVar("--fg");
      ctx.lineWidth = 3;
      ctx.stroke();
    }
    tile.drawn = value;
    tile.drawnStale = stale;
    tile.root.dataset.drawn = "true";
  }
}

export function isGauge(name) {
  return GAUGE_NAMES.has(name);
}
