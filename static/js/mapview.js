// What every track map draws with: a canvas sized to its box at the screen's pixel density, an
// equirectangular projection of lat/lon bounds into it (metres square, around the middle latitude),
// and the track's start/finish, sector and pit-in/pit-out lines. Used by the live page's map (live/trackmap.js) and
// the lap comparison's map (compare.js). No tiles: at a track there is no internet.
import { cssVar } from "./common.js";

export const PAD_PX = 16;

/** The canvas's 2D context at devicePixelRatio, and its CSS size; null while it has no size. */
export function fitCanvas(canvas) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth;
  const h = canvas.clientHeight;
  if (!w || !h) return null;
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.fillStyle = cssVar("--map-bg");
  ctx.fillRect(0, 0, w, h);
  return { ctx, w, h };
}

/** Bounds ``b`` (or null) widened to take the point (la, lo) when both are finite; the bounds, or null. */
export function widen(b, la, lo) {
  if (!Number.isFinite(la) || !Number.isFinite(lo)) return b;
  if (!b) return { minLat: la, maxLat: la, minLon: lo, maxLon: lo };
  b.minLat = Math.min(b.minLat, la);
  b.maxLat = Math.max(b.maxLat, la);
  b.minLon = Math.min(b.minLon, lo);
  b.maxLon = Math.max(b.maxLon, lo);
  return b;
}

/** {minLat, maxLat, minLon, maxLon} of the finite points of two columns; null when there is none. */
export function boundsOf(lat, lon) {
  let b = null;
  for (let i = 0; i < lat.length; i++) b = widen(b, lat[i], lon[i]);
  return b;
}

/** The projection of ``b`` into a w x h box: px(lon), py(lat), and the view to turn pixels back. */
export function project(b, w, h, pad = PAD_PX) {
  const midLat = ((b.minLat + b.maxLat) / 2) * (Math.PI / 180);
  const kx = Math.cos(midLat);
  const spanX = Math.max((b.maxLon - b.minLon) * kx, 1e-6);
  const spanY = Math.max(b.maxLat - b.minLat, 1e-6);
  const scale = Math.min((w - 2 * pad) / spanX, (h - 2 * pad) / spanY);
  const ox = (w - spanX * scale) / 2;
  const oy = (h - spanY * scale) / 2;
  return {
    px: (lon) => ox + (lon - b.minLon) * kx * scale,
    py: (lat) => h - (oy + (lat - b.minLat) * scale),
    view: { b, kx, scale, ox, oy, h },
  };
}

/** The start/finish line (black and white, like the flag) and sector lines: [{a, b, kind}], a/b [lat, lon]. */
export function drawTrackLines(ctx, lines, px, py) {
  const seg = (a, b) => {
    ctx.beginPath();
    ctx.moveTo(px(a[1]), py(a[0]));
    ctx.lineTo(px(b[1]), py(b[0]));
  };
  ctx.lineCap = "butt";
  for (const line of lines) {
    seg(line.a, line.b);
    if (line.kind === "finish") {
      ctx.setLineDash([]);
      ctx.strokeStyle = cssVar("--fg");
      ctx.lineWidth = 9;
      ctx.stroke();
      ctx.setLineDash([5, 5]);
      ctx.strokeStyle = cssVar("--bg");
      ctx.lineWidth = 5;
      ctx.stroke();
      ctx.setLineDash([]);
      ctx.font = "bold 13px system-ui, sans-serif";
      ctx.fillStyle = cssVar("--fg");
      ctx.fillText("S/F", px(line.b[1]) + 8, py(line.b[0]) - 6);
    } else if (line.kind === "pit_in" || line.kind === "pit_out") {
      ctx.setLineDash([8, 4]);
      ctx.strokeStyle = cssVar("--accent");
      ctx.lineWidth = 5;
      ctx.stroke();
      ctx.setLineDash([]);
      ctx.font = "bold 13px system-ui, sans-serif";
      ctx.fillStyle = cssVar("--accent");
      ctx.fillText(line.kind === "pit_in" ? "Pit in" : "Pit out", px(line.b[1]) + 8, py(line.b[0]) + 14);
    } else {
      ctx.strokeStyle = cssVar("--warn");
      ctx.lineWidth = 4;
      ctx.stroke();
    }
  }
  ctx.lineCap = "round";
}

/** A track's lines as drawTrackLines takes them (a TrackOut; null: none): start/finish, sectors, pit in/out. */
export function trackLines(track) {
  const lines = [];
  if (track && track.a && track.b) {
    lines.push({ a: track.a, b: track.b, kind: "finish" });
    for (const s of track.sectors || []) lines.push({ a: s.a, b: s.b, kind: "sector" });
    const lane = track.pit_lane;
    if (lane && lane.pit_in && lane.pit_out) {
      lines.push({ a: lane.pit_in.a, b: lane.pit_in.b, kind: "pit_in" });
      lines.push({ a: lane.pit_out.a, b: lane.pit_out.b, kind: "pit_out" });
    }
  }
  return lines;
}
