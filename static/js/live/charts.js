// Strip charts: one uPlot per chosen channel, stacked, sharing the time axis
// and the cursor. Each draws its channel's own samples in the window (60 s or
// 5 min, ending at the newest frame), taken from the FrameBuffer's columns by
// series.js: frames that lack the channel are skipped, and a gap (a stale null,
// or a silence) is drawn as a break, never as a straight line across it. The
// strips scroll as frames arrive and stand still when the car goes quiet.
import { CHANNEL_ORDER, cssVar, el, fmtClock, labelOf, unitOf } from "../common.js";
import { chartSeries } from "./series.js";

const DEFAULT_CHANNELS = ["speed", "rpm", "throttle"];
const MAX_CHARTS = 8; // beyond this a phone scrolls forever; pick fewer
const CHART_HEIGHT = 120;
const PREF_STORAGE = "dashboard.chartChannels";
const PALETTE = ["--series-1", "--series-2", "--series-3", "--series-4"];

/** A chart's name for people: the registry's label and unit ("Engine load (%)"), a custom channel's name. */
function caption(name) {
  const unit = unitOf(name);
  return unit ? `${labelOf(name)} (${unit})` : labelOf(name);
}

export class StripCharts {
  constructor(container, picker, buffer) {
    this.container = container;
    this.picker = picker;
    this.buffer = buffer;
    this.windowS = 60;
    this.charts = new Map(); // channel -> {u, wrap}
    this.known = new Set();
    this.sync = uPlot.sync("strips");
    let saved = null;
    try {
      saved = JSON.parse(localStorage.getItem(PREF_STORAGE));
    } catch {
      saved = null;
    }
    this.selected = new Set(Array.isArray(saved) ? saved : DEFAULT_CHANNELS);
    for (const name of CHANNEL_ORDER) this.offer(name);
    this.resizer = new ResizeObserver(() => this.resize());
    this.resizer.observe(container);
    for (const name of this.selected) this.open(name);
  }

  /** Offer a channel in the picker (registry channels at once, custom ones when first seen). */
  offer(name) {
    if (this.known.has(name)) return;
    this.known.add(name);
    const id = `chart-ch-${name.replace(/[^a-z0-9_]/g, "_")}`;
    const box = el("input", { attrs: { type: "checkbox", id, value: name } });
    box.checked = this.selected.has(name);
    box.addEventListener("change", () => this.toggle(name, box.checked, box));
    this.picker.append(el("label", { class: "check", attrs: { for: id } }, box, ` ${caption(name)}`));
  }

  toggle(name, on, box) {
    if (on && this.selected.size >= MAX_CHARTS) {
      box.checked = false;
      return;
    }
    if (on) {
      this.selected.add(name);
      this.open(name);
    } else {
      this.selected.delete(name);
      this.close(name);
    }
    localStorage.setItem(PREF_STORAGE, JSON.stringify([...this.selected]));
    this.update(true);
  }

  setWindow(seconds) {
    this.windowS = seconds;
    this.update(true);
  }

  width() {
    return Math.max(200, this.container.clientWidth);
  }

  open(name) {
    if (this.charts.has(name)) return;
    const color = cssVar(PALETTE[this.charts.size % PALETTE.length]) || "#0047ab";
    const wrap = el("div", { class: "strip", dataset: { channel: name, points: "0" } });
    this.container.append(wrap);
    const fg = cssVar("--fg");
    const grid = cssVar("--grid");
    const axis = { stroke: fg, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 }, font: "12px system-ui, sans-serif" };
    const opts = {
      width: this.width(),
      height: CHART_HEIGHT,
      legend: { show: true, live: true },
      cursor: { sync: { key: this.sync.key }, drag: { x: false, y: false } },
      scales: { x: { time: true } },
      series: [
        { label: "time", value: (u, v) => (v === null || v === undefined ? "—" : fmtClock(v * 1000)) },
        {
          label: caption(name),
          stroke: color,
          width: 2,
          spanGaps: false,
          points: { show: false },
          value: (u, v) => (v === null || v === undefined ? "—" : String(+v.toFixed(3))),
        },
      ],
      axes: [
        { ...axis, size: 28, values: (u, splits) => splits.map((v) => fmtClock(v * 1000)) },
        { ...axis, size: 56 },
      ],
      hooks: {
        draw: [
          (u) => {
            wrap.dataset.drawn = String(Number(wrap.dataset.drawn || 0) + 1);
          },
        ],
      },
    };
    const u = new uPlot(opts, [[], []], wrap);
    this.charts.set(name, { u, wrap });
  }

  close(name) {
    const c = this.charts.get(name);
    if (!c) return;
    c.u.destroy();
    c.wrap.remove();
    this.charts.delete(name);
  }

  /** Re-create every chart (after a theme change: colours are baked into uPlot). */
  rebuild() {
    for (const name of [...this.charts.keys()]) this.close(name);
    for (const name of this.selected) this.open(name);
    this.update(true);
  }

  resize() {
    const width = this.width();
    for (const { u } of this.charts.values()) if (u.width !== width) u.setSize({ width, height: CHART_HEIGHT });
  }

  /** Redraw from the buffer: called on an animation frame when frames arrived. */
  update() {
    const end = this.buffer.lastT;
    if (end === null) return;
    const start = end - this.windowS;
    for (const [name, { u, wrap }] of this.charts) {
      const series = chartSeries(this.buffer.t, this.buffer.column(name), start, end);
      u.batch(() => {
        u.setData([series.x, series.y], false);
        u.setScale("x", { min: start, max: end });
      });
      wrap.dataset.points = String(series.samples); // the channel's samples drawn, for tests and tools
      wrap.dataset.gaps = String(series.gaps);
    }
  }

  /** What a chart draws now, as uPlot holds it: [times, values (null: a break)]; null when not charted. */
  data(name) {
    const c = this.charts.get(name);
    return c ? [Array.from(c.u.data[0]), Array.from(c.u.data[1])] : null;
  }
}
