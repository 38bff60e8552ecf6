// The session's track: a selector of the stored tracks (PUT /sessions/{id}/track
// times every lap again), and a start/finish line drawn by clicking two points on
// the track map, either side of the track (or typed, for the keyboard), saved as
// a new track (POST /tracks) and put on the session; and the track's pit lane, a
// line across its entry and one across its exit, drawn by clicking four points
// (PUT /tracks/{id}: every session on the track is timed again).
import { apiGet, apiPost, apiPut, el, setText } from "../common.js";

const COORD_DIGITS = 8;
// what PUT /tracks/{id} takes (TrackIn): the rest of a TrackOut is the server's
const TRACK_FIELDS = new Set(["name", "a", "b", "direction", "sectors", "min_lap_time_s", "max_speed_kmh", "pit_lane"]);

export class TrackPanel {
  /** onTrack(track|null) is told the session's track (to draw its lines); onLaps(laps) the recomputed laps. */
  constructor(sessionId, map, { onTrack, onLaps }) {
    this.sessionId = sessionId;
    this.map = map;
    this.onTrack = onTrack;
    this.onLaps = onLaps;
    this.tracks = new Map(); // track_id -> TrackOut
    this.trackId = null;
    this.picking = false;
    this.points = [];
    const $ = (id) => document.getElementById(id);
    this.els = {
      select: $("track-select"),
      use: $("track-use"),
      msg: $("track-msg"),
      pick: $("sf-pick"),
      name: $("sf-name"),
      coords: ["sf-a-lat", "sf-a-lon", "sf-b-lat", "sf-b-lon"].map($),
      form: $("sf-form"),
      save: $("sf-save"),
      sfMsg: $("sf-msg"),
      canvas: map.canvas,
    };
    this.els.use.addEventListener("click", () => this.use(this.els.select.value || null));
    this.els.pick.addEventListener("click", () => this.setPicking(!this.picking));
    this.els.canvas.addEventListener("click", (ev) => this.onMapClick(ev));
    for (const input of this.els.coords) input.addEventListener("input", () => this.fromInputs());
    this.els.form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      this.save();
    });
    this.pit = { picking: false, points: [], pick: $("pit-pick"), msg: $("pit-msg"), clear: $("pit-clear") };
    if (this.pit.pick) {
      this.pit.pick.addEventListener("click", () => this.setPitPicking(!this.pit.picking));
      $("pit-form").addEventListener("submit", (ev) => {
        ev.preventDefault();
        this.savePitLane(this.pit.points);
      });
      this.pit.clear.addEventListener("click", () => this.savePitLane(null));
    }
  }

  async load() {
    try {
      const list = await apiGet("/tracks");
      this.tracks = new Map((list.items || []).map((t) => [t.track_id, t]));
      this.renderSelect();
      this.announce();
    } catch (err) {
      setText(this.els.msg, `Could not load tracks: ${err.message}`);
    }
  }

  /** The session names its track (from the session object). */
  setSessionTrack(trackId) {
    trackId = trackId || null;
    if (trackId === this.trackId) return;
    this.trackId = trackId;
    if (trackId && !this.tracks.has(trackId)) {
      this.load();
      return;
    }
    this.renderSelect();
    this.announce();
  }

  announce() {
    const track = this.trackId ? this.tracks.get(this.trackId) || null : null;
    this.onTrack(track);
  }

  renderSelect() {
    const sel = this.els.select;
    const items = [...this.tracks.values()].sort((a, b) => a.name.localeCompare(b.name));
    sel.replaceChildren(
      el("option", { text: "No track (no lap timing)", attrs: { value: "" } }),
      ...items.map((t) => el("option", { text: t.name, attrs: { value: t.track_id } })),
    );
    sel.value = this.trackId || "";
    sel.dataset.current = this.trackId || "";
  }

  async use(trackId) {
    setText(this.els.msg, "Timing the laps again…");
    try {
      const laps = await apiPut(`/sessions/${encodeURIComponent(this.sessionId)}/track`, { track_id: trackId });
      this.trackId = trackId;
      this.renderSelect();
      this.announce();
      this.onLaps(laps);
      const n = (laps.items || []).length;
      setText(this.els.msg, trackId ? `Track set: ${n} lap${n === 1 ? "" : "s"}` : "No track");
    } catch (err) {
      setText(this.els.msg, `Could not set the track: ${err.message}`);
    }
  }

  // ---------------------------------------------------------- the S/F line
  setPicking(on) {
    this.picking = on;
    this.els.pick.setAttribute("aria-pressed", String(on));
    setText(this.els.pick, on ? "Picking: click the map (Esc to stop)" : "Pick on map");
    this.els.canvas.dataset.picking = String(on);
    if (on) {
      this.points = [];
      this.sync();
      setText(this.els.sfMsg, "Click the first point, on one side of the track.");
      this.onKey = (ev) => {
        if (ev.key === "Escape") this.setPicking(false);
      };
      document.addEventListener("keydown", this.onKey);
    } else if (this.onKey) {
      document.removeEventListener("keydown", this.onKey);
      this.onKey = null;
    }
  }

  onMapClick(ev) {
    if (this.pit.picking) {
      this.onPitClick(ev);
      return;
    }
    if (!this.picking) return;
    const rect = this.els.canvas.getBoundingClientRect();
    const p = this.map.toLatLon(ev.clientX - rect.left, ev.clientY - rect.top);
    if (!p) {
      setText(this.els.sfMsg, "The map has no GPS trail yet: type the points instead.");
      return;
    }
    if (this.points.length >= 2) this.points = [];
    this.points.push(p);
    this.sync();
    if (this.points.length === 2) {
      this.setPicking(false);
      setText(this.els.sfMsg, "Line drawn. Name it and save.");
      this.els.name.focus();
    } else {
      setText(this.els.sfMsg, "Now the second point, on the other side of the track.");
    }
  }

  /** Points -> inputs and the map's draft line. */
  sync() {
    const [a, b] = this.points;
    const vals = [a?.[0], a?.[1], b?.[0], b?.[1]];
    this.els.coords.forEach((input, i) => {
      input.value = Number.isFinite(vals[i]) ? vals[i].toFixed(COORD_DIGITS) : "";
    });
    this.map.setDraft(this.points);
    this.map.draw();
  }

  /** Typed coordinates -> points and the draft line. */
  fromInputs() {
    const v = this.els.coords.map((input) => (input.value.trim() === "" ? NaN : Number(input.value)));
    this.points = [];
    if (Number.isFinite(v[0]) && Number.isFinite(v[1])) this.points.push([v[0], v[1]]);
    if (Number.isFinite(v[2]) && Number.isFinite(v[3])) this.points.push([v[2], v[3]]);
    this.map.setDraft(this.points);
    this.map.draw();
  }

  async save() {
    this.fromInputs();
    const name = this.els.name.value.trim();
    if (this.points.length !== 2) {
      setText(this.els.sfMsg, "Two points are needed: click them on the map or type them.");
      return;
    }
    if (!name) {
      setText(this.els.sfMsg, "Give the track a name.");
      this.els.name.focus();
      return;
    }
    this.els.save.disabled = true;
    setText(this.els.sfMsg, "Saving…");
    try {
      const track = await apiPost("/tracks", { name, a: this.points[0], b: this.points[1] });
      this.tracks.set(track.track_id, track);
      this.points = [];
      this.map.setDraft([]);
      await this.use(track.track_id);
      setText(this.els.sfMsg, `Saved “${track.name}”.`);
    } catch (err) {
      setText(this.els.sfMsg, `Could not save: ${err.message}`);
    } finally {
      this.els.save.disabled = false;
    }
  }

  // ---------------------------------------------------------- the pit lane
  setPitPicking(on) {
    if (on && !this.trackId) {
      setText(this.pit.msg, "Choose the session's track first: the pit lane belongs to a track.");
      return;
    }
    if (on && this.picking) this.setPicking(false);
    this.pit.picking = on;
    this.pit.pick.setAttribute("aria-pressed", String(on));
    setText(this.pit.pick, on ? "Picking: click the map (Esc to stop)" : "Pick on map");
    this.els.canvas.dataset.picking = String(on);
    if (on) {
      this.pit.points = [];
      this.map.setDraft([]);
      this.map.draw();
      setText(this.pit.msg, "Pit entry: click a point on one side of the lane.");
      this.onPitKey = (ev) => {
        if (ev.key === "Escape") this.setPitPicking(false);
      };
      document.addEventListener("keydown", this.onPitKey);
    } else if (this.onPitKey) {
      document.removeEventListener("keydown", this.onPitKey);
      this.onPitKey = null;
    }
  }

  onPitClick(ev) {
    const rect = this.els.canvas.getBoundingClientRect();
    const p = this.map.toLatLon(ev.clientX - rect.left, ev.clientY - rect.top);
    if (!p) {
      setText(this.pit.msg, "The map has no GPS trail yet.");
      return;
    }
    this.pit.points.push(p);
    this.map.setDraft(this.pit.points);
    this.map.draw();
    const steps = ["Pit entry: now the other side of the lane.", "Pit exit: a point on one side of the lane.",
      "Pit exit: now the other side of the lane."];
    if (this.pit.points.length < 4) {
      setText(this.pit.msg, steps[this.pit.points.length - 1]);
      return;
    }
    this.setPitPicking(false);
    setText(this.pit.msg, "Pit lane drawn: save it.");
  }

  /** Put ``points`` (pit-in A, B, pit-out A, B) on the session's track as its pit lane; null removes it. */
  async savePitLane(points) {
    const track = this.trackId ? this.tracks.get(this.trackId) : null;
    if (!track) {
      setText(this.pit.msg, "Choose the session's track first: the pit lane belongs to a track.");
      return;
    }
    if (points && points.length !== 4) {
      setText(this.pit.msg, "Four points are needed: two across the pit entry, two across the pit exit.");
      return;
    }
    const pitLane = points ? { pit_in: { a: points[0], b: points[1] }, pit_out: { a: points[2], b: points[3] } } : null;
    const body = { ...track, pit_lane: pitLane };
    delete body.track_id;
    for (const key of Object.keys(body)) if (!TRACK_FIELDS.has(key)) delete body[key];
    setText(this.pit.msg, "Saving and timing again…");
    try {
      const saved = await apiPut(`/tracks/${encodeURIComponent(track.track_id)}`, body);
      this.tracks.set(saved.track_id, saved);
      this.pit.points = [];
      this.map.setDraft([]);
      this.announce();
      setText(this.pit.msg, pitLane ? "Pit lane saved." : "Pit lane removed.");
    } catch (err) {
      setText(this.pit.msg, `Could not save: ${err.message}`);
    }
  }
}
