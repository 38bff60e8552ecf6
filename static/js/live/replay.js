// Replay of a past session in the live view: the stored frames are paged in
// (GET /frames, 10 000 at a time) and played back through the same buffers,
// gauges, charts and map as live data, on a replay clock moved by
// requestAnimationFrame at 1×–16×. A timeline (a range input: keyboard works)
// carries lap and alert markers; jumping rebuilds the view at that time.
//
// Memory stays bounded: past MAX_FRAMES, every other frame is dropped (the
// whole session stays playable, at a lower rate), and the view's own buffers
// keep their usual bounds.
import { apiGet, el, fmtDuration, fmtLapTime, setText } from "../common.js";

const PAGE = 10000;
const MAX_FRAMES = 100000; // 2.3 h at 12 Hz, 33 min at 50 Hz at full rate; longer sessions are thinned
const SPEEDS = [1, 2, 4, 8, 16];
const MAX_STEP_S = 0.25; // a stalled tab does not jump the replay ahead

export class Replay {
  /**
   * hooks: onSeek(frames, end, t) rebuilds the view from frames[0..end) at replay time t;
   * onAdvance(frames, t) adds newly played frames; onTime(t) moves laps and alerts to t.
   */
  constructor(sessionId, hooks) {
    this.sessionId = sessionId;
    this.hooks = hooks;
    this.active = false;
    this.frames = [];
    this.stride = 1; // keep one frame in `stride` (thinning)
    this.kept = 0;
    this.cursor = 0; // frames[0..cursor) have been played
    this.pos = 0; // replay time, epoch seconds
    this.t0 = 0;
    this.t1 = 0;
    this.speed = 1;
    this.playing = false;
    this.raf = 0;
    this.lastTs = null;
    this.loaded = false;
    this.markers = { laps: [], alerts: [] };
    const $ = (id) => document.getElementById(id);
    this.els = {
      root: $("replay"),
      status: $("replay-status"),
      play: $("replay-play"),
      scrub: $("replay-scrub"),
      clock: $("replay-clock"),
      markers: $("replay-markers"),
      jump: $("replay-jump"),
      speeds: [...document.querySelectorAll("[data-speed]")],
    };
    this.els.play.addEventListener("click", () => (this.playing ? this.pause() : this.play()));
    this.els.scrub.addEventListener("input", () => this.seek(this.t0 + Number(this.els.scrub.value)));
    this.els.jump.addEventListener("change", () => {
      const t = Number(this.els.jump.value);
      if (Number.isFinite(t) && this.els.jump.value !== "") this.seek(t);
      this.els.jump.value = "";
    });
    for (const b of this.els.speeds) b.addEventListener("click", () => this.setSpeed(Number(b.dataset.speed)));
    this.setSpeed(1);
  }

  /** The session is over: show the replay bar and page the frames in. */
  async enable() {
    if (this.active) return;
    this.active = true;
    this.els.root.hidden = false;
    document.body.dataset.replay = "loading";
    this.els.play.disabled = true;
    this.els.scrub.disabled = true;
    let after = -1;
    try {
      for (;;) {
        const page = await apiGet(`/sessions/${encodeURIComponent(this.sessionId)}/frames?after_seq=${after}&limit=${PAGE}`);
        this.addPage(page.items || []);
        setText(this.els.status, `Loading… ${this.kept.toLocaleString()} frames`);
        if (page.next_after_seq === null || page.next_after_seq === undefined || !(page.items || []).length) break;
        after = page.next_after_seq;
      }
    } catch (err) {
      setText(this.els.status, `Could not load the frames: ${err.message}`);
      document.body.dataset.replay = "error";
      return;
    }
    this.loaded = true;
    // in time order: a GPS fix frame carries its fix's own time, older than the sample stored before it
    this.frames.sort((a, b) => a.t - b.t || a.seq - b.seq);
    if (!this.frames.length) {
      setText(this.els.status, "No frames stored for this session.");
      document.body.dataset.replay = "empty";
      return;
    }
    this.t0 = this.frames[0].t;
    this.t1 = this.frames[this.frames.length - 1].t;
    const span = Math.max(0.1, this.t1 - this.t0);
    this.els.scrub.max = String(Math.ceil(span * 10) / 10);
    this.els.scrub.disabled = false;
    this.els.play.disabled = false;
    setText(this.els.status, `${this.frames.length.toLocaleString()} frames${this.stride > 1 ? ` (1 in ${this.stride} kept)` : ""} · ${fmtDuration(span)}`);
    document.body.dataset.replay = "ready";
    this.renderMarkers();
    this.seek(this.t1); // the view as the session ended; Play starts over
  }

  addPage(items) {
    for (const f of items) {
      if (typeof f.t !== "number") continue;
      if (this.kept++ % this.stride) continue;
      this.frames.push(f);
    }
    if (this.frames.length > MAX_FRAMES) {
      this.frames = this.frames.filter((_, i) => i % 2 === 0);
      this.stride *= 2;
    }
  }

  /** Laps and alerts for the timeline (called again when they change). */
  setMarkers(laps, alerts) {
    this.markers = { laps: laps || [], alerts: alerts || [] };
    if (this.loaded) this.renderMarkers();
  }

  renderMarkers() {
    if (!this.frames.length) return;
    const span = Math.max(0.1, this.t1 - this.t0);
    const pct = (t) => `${Math.min(100, Math.max(0, ((t - this.t0) / span) * 100)).toFixed(3)}%`;
    const nodes = [];
    const options = [el("option", { text: "Jump to…", attrs: { value: "" } })];
    for (const lap of this.markers.laps) {
      const label = lap.out_lap ? "Out lap" : lap.in_lap ? `Lap ${lap.lap} (in)` : `Lap ${lap.lap}`;
      const b = el("button", {
        class: "marker marker-lap",
        text: lap.out_lap ? "O" : String(lap.lap),
        attrs: { type: "button", title: `${label} · ${fmtLapTime(lap.lap_time)}`, "aria-label": `Jump to ${label}` },
        dataset: { lap: lap.lap, t: lap.start_t },
        on: { click: () => this.seek(lap.start_t) },
      });
      b.style.left = pct(lap.start_t); // CSSOM, not a style attribute: allowed by the CSP
      nodes.push(b);
      options.push(el("option", { text: `${label} (${fmtLapTime(lap.lap_time)})`, attrs: { value: lap.start_t } }));
    }
    for (const a of this.markers.alerts) {
      const b = el("button", {
        class: "marker marker-alert",
        text: "!",
        attrs: { type: "button", title: a.name, "aria-label": `Jump to alert: ${a.name}` },
        dataset: { alertId: a.alert_id, severity: a.severity, t: a.raised_t },
        on: { click: () => this.seek(a.raised_t) },
      });
      b.style.left = pct(a.raised_t);
      nodes.push(b);
      options.push(el("option", { text: `Alert: ${a.name}${a.lap !== null && a.lap !== undefined ? ` (lap ${a.lap})` : ""}`, attrs: { value: a.raised_t } }));
    }
    this.els.markers.replaceChildren(...nodes);
    this.els.jump.replaceChildren(...options);
  }

  setSpeed(speed) {
    this.speed = SPEEDS.includes(speed) ? speed : 1;
    for (const b of this.els.speeds) b.setAttribute("aria-pressed", String(Number(b.dataset.speed) === this.speed));
    document.body.dataset.replaySpeed = String(this.speed);
  }

  /** First index whose time is after t. */
  indexAfter(t) {
    let lo = 0;
    let hi = this.frames.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.frames[mid].t <= t) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  seek(t) {
    if (!this.frames.length) return;
    this.pos = Math.min(this.t1, Math.max(this.t0, t));
    this.cursor = this.indexAfter(this.pos);
    this.hooks.onSeek(this.frames, this.cursor, this.pos);
    this.moved();
  }

  play() {
    if (!this.frames.length) return;
    if (this.pos >= this.t1) this.seek(this.t0);
    this.playing = true;
    this.lastTs = null;
    this.els.play.setAttribute("aria-pressed", "true");
    setText(this.els.play, "Pause");
    document.body.dataset.replay = "playing";
    if (!this.raf) this.raf = requestAnimationFrame((ts) => this.tick(ts));
  }

  pause() {
    this.playing = false;
    if (this.raf) cancelAnimationFrame(this.raf);
    this.raf = 0;
    this.els.play.setAttribute("aria-pressed", "false");
    setText(this.els.play, "Play");
    document.body.dataset.replay = "paused";
  }

  tick(ts) {
    this.raf = 0;
    if (!this.playing) return;
    const dt = this.lastTs === null ? 0 : Math.min(MAX_STEP_S, (ts - this.lastTs) / 1000);
    this.lastTs = ts;
    this.pos = Math.min(this.t1, this.pos + dt * this.speed);
    const end = this.indexAfter(this.pos);
    if (end > this.cursor) {
      this.hooks.onAdvance(this.frames.slice(this.cursor, end), this.pos);
      this.cursor = end;
    }
    this.moved();
    if (this.pos >= this.t1) {
      this.pause();
      document.body.dataset.replay = "ended";
      return;
    }
    this.raf = requestAnimationFrame((next) => this.tick(next));
  }

  moved() {
    const rel = this.pos - this.t0;
    this.els.scrub.value = String(rel);
    const text = `${fmtDuration(rel)} / ${fmtDuration(this.t1 - this.t0)}`;
    setText(this.els.clock, text);
    this.els.scrub.setAttribute("aria-valuetext", text);
    document.body.dataset.replayPos = rel.toFixed(1);
    this.hooks.onTime(this.pos >= this.t1 ? null : this.pos);
  }
}
