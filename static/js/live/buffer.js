// Bounded telemetry history for the live view: frames as columns (one array of
// sample times, one array per channel), in time order, without duplicates.
//
// A frame that arrives out of time order (a GPS fix frame carries its fix's
// own time, older than the sample sent before it) is slotted in by time. The
// charts take each channel's own samples out of the columns (series.js). The
// buffer keeps the chart's longest window plus a margin, and never more than
// MAX_FRAMES frames, so memory stays flat over a session of hours at any rate.

export const HISTORY_S = 330; // the 5 min chart window plus 30 s of margin
export const MAX_FRAMES = 20000; // 5 min at 50 Hz is 15000 frames
const TRIM_SLACK = 512; // trim in chunks: one splice per few hundred frames, not one per frame

export class FrameBuffer {
  constructor({ historyS = HISTORY_S, maxFrames = MAX_FRAMES } = {}) {
    this.historyS = historyS;
    this.maxFrames = maxFrames;
    this.t = [];
    this.seq = [];
    this.cols = new Map(); // channel -> values aligned with t (undefined where a frame lacks it)
    this.lastSeq = -1;
    this.latest = new Map(); // channel -> {value, t}: newest sample of each channel
    this.received = 0; // frames accepted since the page opened
  }

  get length() {
    return this.t.length;
  }

  get lastT() {
    return this.t.length ? this.t[this.t.length - 1] : null;
  }

  column(name) {
    let col = this.cols.get(name);
    if (!col) {
      col = new Array(this.t.length); // holes read as undefined: no sample of the channel (series.js skips them)
      this.cols.set(name, col);
    }
    return col;
  }

  /** Add one frame {seq, t, channels}; returns false for a frame already held. */
  add(frame) {
    const { seq, t, channels } = frame;
    if (typeof seq !== "number" || typeof t !== "number" || !channels) return false;
    let i = this.t.length;
    if (seq <= this.lastSeq || (i && t < this.t[i - 1])) {
      // late or repeated (a rejoin snapshot overlaps what we hold): insert in time order
      i = this.indexAfter(t);
      for (let j = i - 1; j >= 0 && this.t[j] === t; j--) if (this.seq[j] === seq) return false;
      for (let j = i - 1; j >= 0 && j > i - 64; j--) if (this.seq[j] === seq) return false;
      if (this.t.length && t < this.t[0] && this.t.length >= this.maxFrames) return false;
    }
    for (const name of Object.keys(channels)) this.column(name);
    const atEnd = i === this.t.length;
    if (atEnd) {
      this.t.push(t);
      this.seq.push(seq);
      for (const [name, col] of this.cols) col.push(channels[name]);
    } else {
      this.t.splice(i, 0, t);
      this.seq.splice(i, 0, seq);
      for (const [name, col] of this.cols) col.splice(i, 0, channels[name]);
    }
    if (seq > this.lastSeq) this.lastSeq = seq;
    for (const [name, value] of Object.entries(channels)) {
      const cur = this.latest.get(name);
      if (!cur || t >= cur.t) this.latest.set(name, { value, t });
    }
    this.received += 1;
    this.trim();
    return true;
  }

  /** Forget every frame (a replay jumping in time); the charts keep their columns. */
  clear() {
    this.t = [];
    this.seq = [];
    for (const name of this.cols.keys()) this.cols.set(name, []);
    this.lastSeq = -1;
    this.latest = new Map();
  }

  /** Seed latest values from the snapshot's telemetry (channels: {name: {value, t}}). */
  seedLatest(channels) {
    for (const [name, c] of Object.entries(channels || {})) {
      const cur = this.latest.get(name);
      if (!cur || c.t >= cur.t) this.latest.set(name, { value: c.value, t: c.t });
    }
  }

  /** First index whose time is greater than t (binary search). */
  indexAfter(t) {
    let lo = 0;
    let hi = this.t.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.t[mid] <= t) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** First index whose time is at least t. */
  indexAtOrAfter(t) {
    let lo = 0;
    let hi = this.t.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.t[mid] < t) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  trim() {
    const n = this.t.length;
    if (!n) return;
    let drop = Math.max(0, n - this.maxFrames);
    const horizon = this.t[n - 1] - this.historyS;
    if (this.t[0] < horizon) drop = Math.max(drop, this.indexAtOrAfter(horizon));
    if (drop < TRIM_SLACK && n <= this.maxFrames + TRIM_SLACK) return;
    if (drop <= 0) return;
    this.t.splice(0, drop);
    this.seq.splice(0, drop);
    for (const col of this.cols.values()) col.splice(0, drop);
  }

  /** Frames per second over the last `spanS` seconds of samples. */
  rate(spanS = 5) {
    const n = this.t.length;
    if (n < 2) return null;
    const end = this.t[n - 1];
    const i = this.indexAtOrAfter(end - spanS);
    const span = end - this.t[i];
    return span > 0 ? (n - 1 - i) / span : null;
  }
}
