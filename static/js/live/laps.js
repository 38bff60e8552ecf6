// The laps panel: one row per lap (newest first) with its time, delta to the
// best, sectors and the setup version in force; the best lap and the best
// sectors highlighted; the theoretical best; a summary per setup version (and a
// filter) to compare setups; and the live delta to the best lap, big, green when
// faster and red when slower, with the predicted lap time.
//
// Best lap, best sectors and theoretical best are computed here from the laps
// held (as the server does), so they stay right as laps arrive one by one and
// when a replay shows only the laps completed so far.
import { el, fmtDelta, fmtLapTime, setText } from "../common.js";

const MAX_LAPS = 2000; // a 24 h race at 45 s a lap; more and the oldest are dropped

/** A lap that counts for bests: line to line, not an out- or in-lap. */
export function isTimed(lap) {
  return !lap.out_lap && !lap.in_lap && Number.isFinite(lap.lap_time);
}

/** Best lap, best sectors and theoretical best of a list of laps. */
export function summarise(laps) {
  const timed = laps.filter(isTimed);
  let best = null;
  for (const lap of timed) if (!best || lap.lap_time < best.lap_time) best = lap;
  const count = Math.max(0, ...timed.map((lap) => (lap.sectors || []).length));
  const bestSectors = [];
  for (let i = 0; i < count; i++) {
    let b = null;
    for (const lap of timed) {
      const s = (lap.sectors || [])[i];
      if (Number.isFinite(s) && (b === null || s < b)) b = s;
    }
    bestSectors.push(b);
  }
  const theoretical = bestSectors.length && bestSectors.every((s) => s !== null) ? bestSectors.reduce((a, b) => a + b, 0) : null;
  return { best, bestSectors, theoretical };
}

function versionKey(lap) {
  return lap.setup_version === null || lap.setup_version === undefined ? "none" : String(lap.setup_version);
}

function versionLabel(key) {
  return key === "none" ? "no setup" : `v${key}`;
}

export class LapsPanel {
  constructor() {
    this.laps = new Map(); // lap number -> lap
    this.cutoff = null; // replay: only laps ended by this time are shown
    this.timing = null; // the latest `timing` payload (live)
    this.lastSector = null; // the latest `sector` payload (live)
    this.filter = ""; // setup version key, "" for all
    this.dirty = true;
    this.els = {
      table: document.getElementById("laps-table"),
      empty: document.getElementById("laps-empty"),
      delta: document.getElementById("delta"),
      deltaValue: document.getElementById("delta-value"),
      predicted: document.getElementById("lap-predicted"),
      current: document.getElementById("lap-current"),
      best: document.getElementById("lap-best"),
      theoretical: document.getElementById("lap-theoretical"),
      sector: document.getElementById("lap-sector"),
      filter: document.getElementById("laps-setup"),
      bySetup: document.getElementById("laps-by-setup"),
    };
    this.els.filter.addEventListener("change", () => {
      this.filter = this.els.filter.value;
      this.dirty = true;
      this.render();
    });
  }

  /** The whole list (GET /laps, or the `laps` event after a track change). */
  setAll(payload) {
    this.laps.clear();
    for (const lap of (payload && payload.items) || []) this.laps.set(lap.lap, lap);
    if (payload && "timing" in payload) this.timing = payload.timing || null;
    this.lastSector = null;
    this.trim();
    this.dirty = true;
  }

  /** A lap just completed (live `lap` event). */
  addLap(lap) {
    if (!lap || typeof lap.lap !== "number") return;
    this.laps.set(lap.lap, lap);
    this.trim();
    this.dirty = true;
  }

  addSector(sector) {
    this.lastSector = sector;
    this.dirty = true;
  }

  setTiming(timing) {
    this.timing = timing || null;
    this.dirty = true;
  }

  /** Replay: show the laps completed by `t` (null: all of them, live). */
  setCutoff(t) {
    if (t === this.cutoff) return;
    this.cutoff = t;
    this.dirty = true;
  }

  trim() {
    while (this.laps.size > MAX_LAPS) this.laps.delete(Math.min(...this.laps.keys()));
  }

  /** The laps in lap order (those of the replay so far when replaying). */
  visible() {
    const all = [...this.laps.values()].sort((a, b) => a.lap - b.lap);
    if (this.cutoff === null) return all;
    return all.filter((lap) => lap.end_t <= this.cutoff + 1e-6);
  }

  /** Laps in lap order, for the replay timeline. */
  all() {
    return [...this.laps.values()].sort((a, b) => a.lap - b.lap);
  }

  render() {
    if (!this.dirty) return;
    this.dirty = false;
    const laps = this.visible();
    const { best, bestSectors, theoretical } = summarise(laps);
    this.renderFilter(laps);
    this.renderTable(laps, best, bestSectors);
    this.renderBySetup(laps);
    setText(this.els.best, best ? `${fmtLapTime(best.lap_time)} (lap ${best.lap})` : "—");
    setText(this.els.theoretical, fmtLapTime(theoretical));
    this.els.best.dataset.value = best ? String(best.lap_time) : "";
    this.renderDelta(laps);
  }

  renderDelta(laps) {
    const live = this.cutoff === null ? this.timing : null;
    const delta = live && Number.isFinite(live.delta) ? live.delta : null;
    const box = this.els.delta;
    box.dataset.sign = delta === null ? "none" : delta < 0 ? "faster" : delta > 0 ? "slower" : "even";
    box.dataset.value = delta === null ? "" : String(delta);
    setText(this.els.deltaValue, fmtDelta(delta));
    setText(this.els.predicted, live ? fmtLapTime(live.predicted_lap_time) : "—");
    if (live && Number.isFinite(live.elapsed)) {
      setText(this.els.current, `Lap ${live.lap} · ${fmtLapTime(live.elapsed, 1)}`);
    } else if (this.cutoff !== null && laps.length) {
      const last = laps[laps.length - 1];
      setText(this.els.current, `Lap ${last.lap + 1} · ${fmtLapTime(Math.max(0, this.cutoff - last.end_t), 1)}`);
    } else {
      setText(this.els.current, "—");
    }
    const s = this.cutoff === null ? this.lastSector : null;
    setText(this.els.sector, s ? `Lap ${s.lap} S${s.sector} ${fmtLapTime(s.time)}${s.is_best ? " (best)" : ""}` : "—");
  }

  renderFilter(laps) {
    const keys = [...new Set(laps.map(versionKey))].sort((a, b) => (a === "none" ? -1 : b === "none" ? 1 : Number(a) - Number(b)));
    const want = ["", ...keys];
    const sel = this.els.filter;
    const have = [...sel.options].map((o) => o.value);
    if (have.join("|") !== want.join("|")) {
      sel.replaceChildren(
        el("option", { text: "All setups", attrs: { value: "" } }),
        ...keys.map((k) => el("option", { text: versionLabel(k), attrs: { value: k } })),
      );
      if (!want.includes(this.filter)) this.filter = "";
      sel.value = this.filter;
    }
  }

  renderTable(laps, best, bestSectors) {
    const nSectors = bestSectors.length > 1 ? bestSectors.length : 0; // one sector is the lap itself
    const head = el(
      "tr",
      {},
      el("th", { text: "Lap", attrs: { scope: "col" } }),
      el("th", { text: "Time", attrs: { scope: "col" }, class: "num" }),
      el("th", { text: "Δ best", attrs: { scope: "col" }, class: "num" }),
      ...Array.from({ length: nSectors }, (_, i) => el("th", { text: `S${i + 1}`, attrs: { scope: "col" }, class: "num" })),
      el("th", { text: "Setup", attrs: { scope: "col" } }),
    );
    this.els.table.tHead.replaceChildren(head);
    const rows = [];
    const shown = this.filter ? laps.filter((lap) => versionKey(lap) === this.filter) : laps;
    for (const lap of [...shown].reverse()) {
      const timed = isTimed(lap);
      const kind = lap.out_lap ? "out" : lap.in_lap ? "in" : "timed";
      const isBest = best !== null && lap.lap === best.lap;
      const label = lap.out_lap ? "Out"
        : lap.interrupted ? `${lap.lap} cut (${lap.interrupted})` // no fixes for a while, or a GPS jump: not timed
        : lap.in_lap ? `${lap.lap} In` : String(lap.lap);
      const delta = timed && best ? lap.lap_time - best.lap_time : null;
      const sectors = [];
      for (let i = 0; i < nSectors; i++) {
        const s = (lap.sectors || [])[i];
        const bestS = timed && Number.isFinite(s) && bestSectors[i] !== null && Math.abs(s - bestSectors[i]) < 1e-9;
        sectors.push(el("td", { class: "num", text: fmtLapTime(s), dataset: { best: bestS } }));
      }
      const setup = el("td", { class: "setup", text: versionLabel(versionKey(lap)) });
      if (lap.setup_changed) setup.append(el("span", { class: "tag", text: "changed", attrs: { title: "setup changed during this lap" } }));
      rows.push(
        el(
          "tr",
          { dataset: { lap: lap.lap, kind, best: isBest, setup: versionKey(lap) } },
          el("th", { text: label, attrs: { scope: "row" } }),
          el("td", { class: "num lap-time", text: fmtLapTime(lap.lap_time), dataset: { value: lap.lap_time } }),
          el("td", { class: "num lap-delta", text: delta === null ? "" : delta === 0 ? "best" : fmtDelta(delta, 3) }),
          ...sectors,
          setup,
        ),
      );
    }
    this.els.table.tBodies[0].replaceChildren(...rows);
    this.els.empty.hidden = laps.length > 0;
    this.els.table.dataset.laps = String(laps.length);
  }

  /** Per setup version: timed laps, best and mean lap time; the fastest version marked. */
  renderBySetup(laps) {
    const groups = new Map();
    for (const lap of laps.filter(isTimed)) {
      const k = versionKey(lap);
      if (!groups.has(k)) groups.set(k, []);
      groups.get(k).push(lap.lap_time);
    }
    const rows = [];
    let fastest = null;
    for (const [k, times] of groups) {
      const b = Math.min(...times);
      if (!fastest || b < fastest.best) fastest = { k, best: b };
    }
    for (const [k, times] of [...groups].sort()) {
      const mean = times.reduce((a, b) => a + b, 0) / times.length;
      rows.push(
        el(
          "tr",
          { dataset: { setup: k, best: groups.size > 1 && fastest.k === k } },
          el("th", { text: versionLabel(k), attrs: { scope: "row" } }),
          el("td", { class: "num", text: String(times.length) }),
          el("td", { class: "num", text: fmtLapTime(Math.min(...times)) }),
          el("td", { class: "num", text: fmtLapTime(mean) }),
        ),
      );
    }
    this.els.bySetup.tBodies[0].replaceChildren(...rows);
    this.els.bySetup.hidden = rows.length === 0;
  }
}
