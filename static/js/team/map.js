// The team map: every car's last position on one track map, each in its colour with its
// number; a car whose position is stale (its link not live, or its GPS fix old) drawn hollow
// with its age. The outline is the cars' own trails (no tiles at a track) and the track's
// start/finish, sector and pit-in/pit-out lines (mapview.js, shared with the other maps).
import { cssVar, el, fmtAge, setText } from "../common.js";
import { drawTrackLines, fitCanvas, project, trackLines, widen } from "../mapview.js";

export const STALE_POSITION_S = 5.0; // a fix older than this is not where the car is now
const TRAIL_POINTS = 1200; // per car: ten minutes at the team view's two updates a second
const MARKER_R = 13;
const OUTLINE_POINTS = 2500;

// Distinct in day and night and for the common colour blindnesses (Okabe-Ito, then extras).
export const CAR_COLOURS = ["#e69f00", "#56b4e9", "#009e73", "#f0e442", "#0072b2", "#d55e00", "#cc79a7",
  "#999999", "#8c564b", "#17becf"];

export class TeamMap {
  constructor(canvas, legend) {
    this.canvas = canvas;
    this.legend = legend;
    this.track = null; // TrackOut of the map's track (null: none known)
    this.trails = new Map(); // session_id -> {lat: [], lon: []}
    this.outline = null; // {lat: [], lon: []}: a lap a car drove on this track, as stored (every fix)
    this.cars = []; // [{id, label, colour, lat, lon, age_s, hollow}]
    new ResizeObserver(() => this.draw()).observe(canvas);
  }

  setTrack(track) {
    this.track = track;
    this.draw();
  }

  /** The outline: the fixes of stored frames ([{channels: {lat, lon}}]) of a car that drove a lap here. */
  setOutline(frames) {
    const lat = [];
    const lon = [];
    for (const f of frames) {
      const c = f.channels || {};
      if (Number.isFinite(c.lat) && Number.isFinite(c.lon) && !(c.lat === 0 && c.lon === 0)) {
        lat.push(c.lat);
        lon.push(c.lon);
      }
    }
    const step = Math.ceil(lat.length / OUTLINE_POINTS); // drawn at every update: a few thousand points at most
    this.outline = lat.length > 1 ? { lat: lat.filter((_, i) => i % step === 0), lon: lon.filter((_, i) => i % step === 0) }
      : null;
    this.draw();
  }

  /** Keep a car's trail (positions as they come: the outline the cars drive). */
  addPosition(id, position) {
    if (!position || !Number.isFinite(position.lat) || !Number.isFinite(position.lon)) return;
    let trail = this.trails.get(id);
    if (!trail) this.trails.set(id, (trail = { lat: [], lon: [] }));
    const n = trail.lat.length;
    if (n && trail.lat[n - 1] === position.lat && trail.lon[n - 1] === position.lon) return;
    trail.lat.push(position.lat);
    trail.lon.push(position.lon);
    if (trail.lat.length > TRAIL_POINTS) {
      trail.lat.shift();
      trail.lon.shift();
    }
  }

  forget(id) {
    this.trails.delete(id);
  }

  /** The cars to mark: [{id, label, colour, lat, lon, age_s, hollow}] (a car without a position: none). */
  setCars(cars) {
    this.cars = cars.filter((c) => Number.isFinite(c.lat) && Number.isFinite(c.lon));
    const legendKey = JSON.stringify(cars.map((c) => [c.id, c.label, c.colour, c.hollow, Number.isFinite(c.lat),
      c.hollow && c.age_s !== null ? fmtAge(c.age_s) : ""]));
    if (legendKey !== this.legendKey) { // rebuilt only when what it shows changed
      this.legendKey = legendKey;
      this.legend.replaceChildren(...cars.map((c) => el("li", {
        class: "team-legend-car",
        dataset: { sessionId: c.id, stale: String(Boolean(c.hollow)), placed: String(Number.isFinite(c.lat)) },
      },
      el("span", { class: "team-swatch", dataset: { hollow: String(Boolean(c.hollow)) } }),
      el("span", { class: "team-legend-label", text: c.label }),
      el("span", { class: "team-legend-age", text: c.hollow && c.age_s !== null ? fmtAge(c.age_s) : "" }))));
      // colours through CSSOM (the CSP forbids inline style attributes from markup, not from script)
      this.legend.querySelectorAll(".team-swatch").forEach((swatch, i) => {
        swatch.style.setProperty("--car", cars[i].colour);
      });
    }
    this.draw();
  }

  /** What is drawn as the track: the stored outline when there is one, else the trails the updates brought. */
  paths() {
    return this.outline ? [this.outline] : [...this.trails.values()];
  }

  bounds() {
    let b = null;
    for (const line of trackLines(this.track)) {
      b = widen(b, line.a[0], line.a[1]);
      b = widen(b, line.b[0], line.b[1]);
    }
    for (const trail of this.paths()) for (let i = 0; i < trail.lat.length; i++) b = widen(b, trail.lat[i], trail.lon[i]);
    for (const c of this.cars) b = widen(b, c.lat, c.lon);
    return b;
  }

  draw() {
    const fit = fitCanvas(this.canvas);
    if (!fit) return;
    const { ctx, w, h } = fit;
    const b = this.bounds();
    const markers = [];
    if (b) {
      const { px, py } = project(b, w, h, MARKER_R * 2 + 8);
      ctx.lineJoin = "round";
      ctx.lineCap = "round";
      ctx.strokeStyle = cssVar("--grid");
      ctx.lineWidth = 6;
      for (const trail of this.paths()) {
        ctx.beginPath();
        for (let i = 0; i < trail.lat.length; i++) {
          if (i === 0) ctx.moveTo(px(trail.lon[i]), py(trail.lat[i]));
          else ctx.lineTo(px(trail.lon[i]), py(trail.lat[i]));
        }
        ctx.stroke();
      }
      const lines = trackLines(this.track);
      drawTrackLines(ctx, lines, px, py);
      this.canvas.dataset.lines = JSON.stringify(lines.map((l) => ({
        kind: l.kind, a: [px(l.a[1]), py(l.a[0])], b: [px(l.b[1]), py(l.b[0])] })));
      // the live cars on top of the stale ones
      for (const c of [...this.cars].sort((x, y) => Number(y.hollow) - Number(x.hollow))) {
        const x = px(c.lon);
        const y = py(c.lat);
        ctx.beginPath();
        ctx.arc(x, y, MARKER_R, 0, Math.PI * 2);
        if (c.hollow) {
          ctx.fillStyle = cssVar("--map-bg");
          ctx.fill();
          ctx.lineWidth = 4;
          ctx.strokeStyle = c.colour;
          ctx.stroke();
        } else {
          ctx.fillStyle = c.colour;
          ctx.fill();
          ctx.lineWidth = 2;
          ctx.strokeStyle = cssVar("--fg");
          ctx.stroke();
        }
        ctx.font = "bold 16px system-ui, sans-serif";
        ctx.textBaseline = "middle";
        const text = c.hollow && c.age_s !== null ? `${c.label} · ${fmtAge(c.age_s)}` : c.label;
        const tw = ctx.measureText(text).width;
        const tx = x + MARKER_R + 4 + tw > w ? x - MARKER_R - 4 - tw : x + MARKER_R + 4;
        ctx.lineWidth = 4;
        ctx.strokeStyle = cssVar("--map-bg");
        ctx.strokeText(text, tx, y);
        ctx.fillStyle = cssVar("--fg");
        ctx.fillText(text, tx, y);
        markers.push({ id: c.id, x: Math.round(x * 10) / 10, y: Math.round(y * 10) / 10, hollow: Boolean(c.hollow) });
      }
      ctx.textBaseline = "alphabetic";
    }
    // where each marker is drawn, for tests and tools (the canvas itself is pixels)
    this.canvas.dataset.markers = JSON.stringify(markers);
    this.canvas.dataset.outline = String(this.outline ? this.outline.lat.length : 0);
    setText(this.canvas, "");
  }
}
