// The track map: the GPS trail drawn on a canvas as the track outline, the last
// seconds of it highlighted, and the car's position and heading. No tiles: at a
// track there is no internet, and the outline the car drives is the map.
import { cssVar } from "../common.js";
import { drawTrackLines, fitCanvas, project, trackLines } from "../mapview.js";

const MAX_POINTS = 20000; // past this, every other point is dropped: the outline stays, memory stays flat
const MIN_STEP_M = 1.0; // closer points add nothing visible and cost drawing time
const RECENT_S = 20; // the highlighted tail behind the car
const EARTH_M_PER_DEG = 111320;

export class TrackMap {
  constructor(canvas, emptyEl) {
    this.canvas = canvas;
    this.emptyEl = emptyEl;
    this.lat = [];
    this.lon = [];
    this.t = [];
    this.car = null; // {lat, lon, heading, t}
    this.bounds = null;
    this.lines = []; // [{a: [lat, lon], b: [lat, lon], kind: "finish" | "sector"}] of the session's track
    this.draft = []; // points of a start/finish line being drawn: [[lat, lon], ...]
    this.view = null; // the last projection, to turn a click back into lat/lon
    new ResizeObserver(() => this.draw()).observe(canvas);
  }

  /** Add a GPS fix; positions must come in time order (older ones only move nothing). */
  add(lat, lon, t, heading) {
    if (!Number.isFinite(lat) || !Number.isFinite(lon) || (lat === 0 && lon === 0)) return false;
    if (this.car && t < this.car.t) return false;
    this.car = { lat, lon, heading: Number.isFinite(heading) ? heading : null, t };
    const n = this.lat.length;
    if (n) {
      const dy = (lat - this.lat[n - 1]) * EARTH_M_PER_DEG;
      const dx = (lon - this.lon[n - 1]) * EARTH_M_PER_DEG * Math.cos((lat * Math.PI) / 180);
      if (dx * dx + dy * dy < MIN_STEP_M * MIN_STEP_M) return true;
    }
    this.lat.push(lat);
    this.lon.push(lon);
    this.t.push(t);
    const b = this.bounds;
    if (!b) this.bounds = { minLat: lat, maxLat: lat, minLon: lon, maxLon: lon };
    else {
      b.minLat = Math.min(b.minLat, lat);
      b.maxLat = Math.max(b.maxLat, lat);
      b.minLon = Math.min(b.minLon, lon);
      b.maxLon = Math.max(b.maxLon, lon);
    }
    if (this.lat.length > MAX_POINTS) this.decimate();
    return true;
  }

  /** Forget the trail (a replay jumping back). */
  reset() {
    this.lat = [];
    this.lon = [];
    this.t = [];
    this.car = null;
    this.bounds = null;
  }

  /** The session's track: its start/finish line and sector lines (null: none). */
  setTrack(track) {
    this.lines = trackLines(track);
    this.canvas.dataset.lines = String(this.lines.length);
  }

  setDraft(points) {
    this.draft = points.filter((p) => p && Number.isFinite(p[0]) && Number.isFinite(p[1]));
  }

  /** The [lat, lon] under a point of the canvas (CSS pixels), or null before anything was drawn. */
  toLatLon(x, y) {
    const v = this.view;
    if (!v) return null;
    return [v.b.minLat + (v.h - y - v.oy) / v.scale, v.b.minLon + (x - v.ox) / (v.kx * v.scale)];
  }

  /** Start over from the buffer's columns (after the join snapshot). */
  rebuild(buffer) {
    this.lat = [];
    this.lon = [];
    this.t = [];
    this.car = null;
    this.bounds = null;
    const lat = buffer.cols.get("lat");
    const lon = buffer.cols.get("lon");
    if (!lat || !lon) return;
    const heading = buffer.cols.get("heading");
    for (let i = 0; i < buffer.t.length; i++) {
      if (typeof lat[i] === "number" && typeof lon[i] === "number") this.add(lat[i], lon[i], buffer.t[i], heading ? heading[i] : null);
    }
  }

  decimate() {
    const keep = (arr) => arr.filter((_, i) => i % 2 === 0 || i === arr.length - 1);
    this.lat = keep(this.lat);
    this.lon = keep(this.lon);
    this.t = keep(this.t);
  }

  draw() {
    const canvas = this.canvas;
    const fitted = fitCanvas(canvas);
    if (!fitted) return;
    const { ctx } = fitted;
    const n = this.lat.length;
    this.emptyEl.hidden = n > 0;
    if (!n) {
      this.view = null;
      return;
    }

    const { px, py, view } = project(this.bounds, fitted.w, fitted.h);
    this.view = view;

    const path = (from) => {
      ctx.beginPath();
      ctx.moveTo(px(this.lon[from]), py(this.lat[from]));
      for (let i = from + 1; i < n; i++) ctx.lineTo(px(this.lon[i]), py(this.lat[i]));
    };
    ctx.lineJoin = "round";
    ctx.lineCap = "round";
    path(0);
    ctx.strokeStyle = cssVar("--map-trail");
    ctx.lineWidth = 6;
    ctx.stroke();

    const lastT = this.t[n - 1];
    let from = n - 1;
    while (from > 0 && this.t[from - 1] >= lastT - RECENT_S) from--;
    if (from < n - 1) {
      path(from);
      ctx.strokeStyle = cssVar("--accent");
      ctx.lineWidth = 3;
      ctx.stroke();
    }

    this.drawLines(ctx, px, py);

    const car = this.car;
    const cx = px(car.lon);
    const cy = py(car.lat);
    if (car.heading !== null) {
      const a = (car.heading * Math.PI) / 180; // 0 = north, clockwise
      ctx.beginPath();
      ctx.moveTo(cx + Math.sin(a) * 18, cy - Math.cos(a) * 18);
      ctx.lineTo(cx + Math.sin(a + 2.5) * 10, cy - Math.cos(a + 2.5) * 10);
      ctx.lineTo(cx + Math.sin(a - 2.5) * 10, cy - Math.cos(a - 2.5) * 10);
      ctx.closePath();
      ctx.fillStyle = cssVar("--fg");
      ctx.fill();
    }
    ctx.beginPath();
    ctx.arc(cx, cy, 8, 0, 2 * Math.PI);
    ctx.fillStyle = cssVar("--danger");
    ctx.fill();
    ctx.lineWidth = 3;
    ctx.strokeStyle = cssVar("--bg");
    ctx.stroke();

    canvas.dataset.points = String(n);
    canvas.dataset.drawnLines = String(this.lines.length);
    canvas.dataset.car = `${car.lat.toFixed(6)},${car.lon.toFixed(6)}`;
  }

  /** The start/finish line (black and white, like the flag), sector lines, and a line being drawn. */
  drawLines(ctx, px, py) {
    drawTrackLines(ctx, this.lines, px, py);
    const seg = (a, b) => {
      ctx.beginPath();
      ctx.moveTo(px(a[1]), py(a[0]));
      ctx.lineTo(px(b[1]), py(b[0]));
    };
    if (this.draft.length) {
      ctx.strokeStyle = cssVar("--focus");
      ctx.fillStyle = cssVar("--focus");
      ctx.lineWidth = 4;
      for (let i = 0; i + 1 < this.draft.length; i += 2) { // lines of two points each (S/F; pit in, pit out)
        seg(this.draft[i], this.draft[i + 1]);
        ctx.stroke();
      }
      for (const p of this.draft) {
        ctx.beginPath();
        ctx.arc(px(p[1]), py(p[0]), 6, 0, 2 * Math.PI);
        ctx.fill();
      }
    }
    ctx.lineCap = "round";
  }
}
