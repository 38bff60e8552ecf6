// One channel's samples for a strip chart, taken from the FrameBuffer's
// frame-aligned columns. Pure: no DOM, no uPlot.
//
// A frame that lacks a channel is no sample of it (a GPS fix frame carries only
// position channels; a sampled frame may lack what its sources did not read):
// it is skipped, neither drawn as null nor as zero. A gap is drawn as a break:
// a null value (the channel was stale) already is one for uPlot (spanGaps:
// false), and where the channel has no sample for longer than gapAfter() of its
// usual interval, a null is put between the two samples.

export const GAP_MIN_S = 2.0; // a silence shorter than this is never a gap (a 10 Hz car missing a few frames)
export const GAP_INTERVALS = 5; // ... nor one shorter than five of the channel's usual intervals (a 0.5 Hz channel)
const INTERVAL_SAMPLES = 64; // intervals looked at to find the usual one (spread over the stretch)
const LOOK_BACK_FRAMES = 2000; // how far back before the window a channel's previous sample is looked for

/** The usual interval between samples of xs (median of up to 64 intervals spread over it); null with fewer than 2. */
export function usualInterval(xs) {
  const n = xs.length;
  if (n < 2) return null;
  const count = Math.min(INTERVAL_SAMPLES, n - 1);
  const step = (n - 1) / count;
  const dts = [];
  for (let k = 0; k < count; k++) {
    const i = 1 + Math.floor(k * step);
    const dt = xs[i] - xs[i - 1];
    if (dt > 0) dts.push(dt);
  }
  if (!dts.length) return null;
  dts.sort((a, b) => a - b);
  return dts[dts.length >> 1];
}

/** The silence that makes a gap, for a channel sampled every `interval` seconds. */
export function gapAfter(interval) {
  return Math.max(GAP_MIN_S, GAP_INTERVALS * (interval || 0));
}

/** First index of the sorted array `t` whose value is at least `x`. */
function lowerBound(t, x) {
  let lo = 0;
  let hi = t.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (t[mid] < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/**
 * The samples of one channel from `start` to `end` (epoch seconds), from the
 * sample times `t` (ascending) and the channel's column `col` (aligned with t,
 * undefined where a frame lacks the channel). Returns {x, y, samples, gaps}:
 * x ascending, y a number or null (a break), with the last sample before the
 * window first so the line enters from the left edge.
 */
export function chartSeries(t, col, start, end) {
  let i = lowerBound(t, start);
  for (let j = i - 1; j >= 0 && j >= i - LOOK_BACK_FRAMES; j--) {
    if (col[j] !== undefined) {
      i = j;
      break;
    }
  }
  const xs = [];
  const ys = [];
  for (; i < t.length && t[i] <= end; i++) {
    const v = col[i];
    if (v === undefined) continue; // not a sample of this channel
    xs.push(t[i]);
    ys.push(typeof v === "number" && Number.isFinite(v) ? v : null);
  }
  const limit = gapAfter(usualInterval(xs));
  const x = [];
  const y = [];
  let gaps = 0;
  for (let k = 0; k < xs.length; k++) {
    if (k && xs[k] - xs[k - 1] > limit && ys[k] !== null && ys[k - 1] !== null) {
      x.push((xs[k] + xs[k - 1]) / 2); // a silence: the line breaks here
      y.push(null);
      gaps++;
    }
    x.push(xs[k]);
    y.push(ys[k]);
  }
  return { x, y, samples: xs.length, gaps };
}
