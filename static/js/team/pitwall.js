// The pit wall's inputs and the stint table, shared by the team overview's cards and the live page:
// a driver change (picked from the car's roster: POST /sessions/{id}/driver-change), the crew's
// "filled 40 l" (POST /sessions/{id}/fuel/refill), and the stint summaries (GET /sessions/{id}/stints).
// Changes go through apiPost: the write key is asked once and kept for the tab (sessionStorage).
import { apiGet, apiPost, el, fmtDuration, fmtLapTime, setText } from "../common.js";

const enc = encodeURIComponent;

/** The car's roster as [{driver_id, name}] (none without a car id). */
export async function rosterOf(carId) {
  if (!carId) return [];
  const answer = await apiGet(`/cars/${enc(carId)}/drivers`);
  return answer.items || answer || [];
}

function fmtNumber(v, digits, unit = "") {
  return v === null || v === undefined || !Number.isFinite(v) ? "—" : `${v.toFixed(digits)}${unit}`;
}

/** The stint summaries as a table body's rows (driver names from the roster). */
export function stintRows(items, names) {
  return items.map((s) => el("tr", { dataset: { stint: s.stint } },
    el("td", { text: String(s.stint) }),
    el("td", { dataset: { col: "driver" }, text: s.driver_id === null ? "—" : names.get(s.driver_id) || s.driver_id }),
    el("td", { class: "num", dataset: { col: "laps" }, text: String(s.laps) }),
    el("td", { class: "num", dataset: { col: "best" }, text: fmtLapTime(s.best) }),
    el("td", { class: "num", dataset: { col: "mean_clean" }, text: fmtLapTime(s.mean_clean) }),
    el("td", { class: "num", dataset: { col: "consistency" }, text: fmtNumber(s.consistency, 2, " s") }),
    el("td", { class: "num", dataset: { col: "fuel_used" }, text: fmtNumber(s.fuel_used, 1) }),
    el("td", { class: "num", dataset: { col: "duration" },
      text: fmtDuration((s.end_t === null ? Date.now() / 1000 : s.end_t) - s.start_t) })));
}

/**
 * The pit wall's panel of one session: driver change, refill, stints. Returns {node, refresh(row)};
 * refresh is called with the car's latest team row (its laps changed: the stints are read again).
 */
export function pitWallPanel(sessionId, carId, { status }) {
  const select = el("select", { class: "pw-driver", attrs: { "aria-label": "Driver getting in" } });
  const change = el("button", { class: "btn pw-change", text: "Driver change", attrs: { type: "button" } });
  const litres = el("input", { class: "pw-litres", attrs: { type: "number", min: "0", max: "1000", step: "any",
    inputmode: "decimal", "aria-label": "Litres added", placeholder: "litres" } });
  const filled = el("button", { class: "btn pw-filled", text: "Filled", attrs: { type: "button" } });
  const full = el("button", { class: "btn pw-full", text: "Filled to full", attrs: { type: "button" } });
  const body = el("tbody", { class: "pw-stints" });
  const names = new Map();
  let lastLaps = null;
  let loading = null;

  const say = (text, kind = "ok") => {
    status.dataset.kind = kind;
    setText(status, text);
  };

  async function loadRoster() {
    try {
      const drivers = await rosterOf(carId);
      names.clear();
      drivers.forEach((d) => names.set(d.driver_id, d.name || d.driver_id));
      const chosen = select.value;
      select.replaceChildren(...drivers.map((d) => el("option", { text: d.name || d.driver_id,
        attrs: { value: d.driver_id } })));
      if (chosen && names.has(chosen)) select.value = chosen;
      select.disabled = change.disabled = drivers.length === 0;
      if (!drivers.length) select.append(el("option", { text: "No drivers: add them to the car's roster" }));
    } catch (err) {
      say(`Could not read the roster: ${err.message}`, "error");
    }
  }

  async function loadStints() {
    if (loading) return loading;
    loading = apiGet(`/sessions/${enc(sessionId)}/stints`).then((answer) => {
      body.replaceChildren(...stintRows(answer.items, names));
    }).catch((err) => say(`Could not read the stints: ${err.message}`, "error")).finally(() => { loading = null; });
    return loading;
  }

  change.addEventListener("click", async () => {
    const driverId = select.value;
    if (!driverId) return;
    change.disabled = true;
    try {
      await apiPost(`/sessions/${enc(sessionId)}/driver-change`, { driver_id: driverId });
      say(`${names.get(driverId) || driverId} is in`);
      loadStints();
    } catch (err) {
      say(`Driver change not saved: ${err.message}`, "error");
    } finally {
      change.disabled = false;
    }
  });

  async function refill(body, text) {
    try {
      await apiPost(`/sessions/${enc(sessionId)}/fuel/refill`, body);
      say(text);
      litres.value = "";
    } catch (err) {
      say(`Refill not saved: ${err.message}`, "error");
    }
  }
  filled.addEventListener("click", () => {
    const added = Number(litres.value);
    if (litres.value === "" || !Number.isFinite(added) || added < 0 || added > 1000) {
      say("Litres added: a number from 0 to 1000", "error");
      litres.focus();
      return;
    }
    refill({ added }, `Filled ${added} l`);
  });
  full.addEventListener("click", () => refill({ to_full: true }, "Filled to full"));

  const node = el("div", { class: "pitwall", dataset: { sessionId } },
    el("div", { class: "pw-row" }, select, change),
    el("div", { class: "pw-row" }, litres, filled, full),
    el("div", { class: "table-wrap" }, el("table", { class: "stints" },
      el("caption", { class: "muted", text: "Stints" }),
      el("thead", {}, el("tr", {},
        ...["#", "Driver", "Laps", "Best", "Clean mean", "Consistency", "Fuel used", "Time"].map((h, i) =>
          el("th", { class: i >= 2 ? "num" : "", text: h, attrs: { scope: "col" } })))),
      body)));

  let started = false;
  return {
    node,
    /** Start (roster, stints) when first shown; then the stints again whenever the laps or driver change. */
    refresh(row) {
      const key = row ? `${row.laps}/${row.driver ? row.driver.driver_id : ""}` : null;
      if (!started) {
        started = true;
        loadRoster().then(loadStints);
        lastLaps = key;
        return;
      }
      if (key !== lastLaps) {
        lastLaps = key;
        loadStints();
      }
    },
  };
}
