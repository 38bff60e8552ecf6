// The sessions list: one page of GET /api/v1/sessions, kept live by the
// /dashboard `sessions` event (status changes) and a light periodic refresh
// (frame counts and last update move without a status change).
import {
  apiGet, connectDashboard, el, fmtAge, fmtDuration, fmtWhen, initTheme, parseIso, setText, showBanner,
} from "./common.js";

const PAGE_SIZE = 20;
const REFRESH_MS = 5000; // frames and last-update counts; cheap: one indexed query per page
const RELOAD_DEBOUNCE_MS = 300; // a burst of status changes causes one reload

const body = document.getElementById("sessions-body");
const empty = document.getElementById("sessions-empty");
const summary = document.getElementById("sessions-summary");
const prev = document.getElementById("page-prev");
const next = document.getElementById("page-next");
const statusFilter = document.getElementById("status-filter");

const state = { offset: 0, total: 0, items: new Map(), loading: null, reloadTimer: null };

function sessionLabel(s) {
  return s.name || `Session ${s.session_id.slice(0, 8)}`;
}

function monitorCell(s) {
  return el("span", { class: "pill", text: s.monitor_online ? "online" : "offline", dataset: { online: s.monitor_online } });
}

function renderRow(s) {
  const href = `/sessions/${encodeURIComponent(s.session_id)}`;
  const lastMs = parseIso(s.last_update);
  const cell = (label, props, ...children) => el("td", { ...props, dataset: { ...(props.dataset || {}), label } }, ...children);
  const tr = el(
    "tr",
    { dataset: { sessionId: s.session_id, status: s.status } },
    cell("Session", { class: "cell-name" }, el("a", { text: sessionLabel(s), attrs: { href } }),
      s.stats && s.stats.laps ? el("a", { class: "compare-link", text: "compare laps", attrs: {
        href: `/compare?session_id=${encodeURIComponent(s.session_id)}`, "aria-label": `Compare laps of ${sessionLabel(s)}` } }) : null),
    cell("Car", { class: "cell-car", text: s.car_id || "—" }),
    cell("Driver", { class: "cell-driver", text: s.driver || "—" }),
    cell("Track", { class: "cell-track", text: s.track || "—" }),
    cell("Status", {}, el("span", { class: "status-badge", text: s.status, dataset: { status: s.status } })),
    cell("Monitor", {}, monitorCell(s)),
    cell("Start", { text: fmtWhen(s.started_at || s.created_at) }),
    cell("Duration", { text: fmtDuration(s.stats ? s.stats.duration_s : null) }),
    cell("Frames", { class: "num cell-frames", text: s.stats ? s.stats.frames.toLocaleString() : "0" }),
    cell("Last update", { class: "cell-last", dataset: { ms: lastMs ?? "" }, text: lastMs === null ? "—" : fmtAge((Date.now() - lastMs) / 1000) + " ago" }),
  );
  return tr;
}

function render(list) {
  state.total = list.total;
  state.items = new Map(list.items.map((s) => [s.session_id, s]));
  // a refresh must not steal the keyboard focus from a session link
  const focused = body.contains(document.activeElement) ? document.activeElement.closest("tr")?.dataset.sessionId : null;
  body.replaceChildren(...list.items.map(renderRow));
  if (focused) body.querySelector(`tr[data-session-id="${CSS.escape(focused)}"] a`)?.focus();
  empty.hidden = list.items.length > 0;
  const first = list.items.length ? state.offset + 1 : 0;
  const last = state.offset + list.items.length;
  setText(summary, `${first}–${last} of ${list.total}`);
  prev.disabled = state.offset === 0;
  next.disabled = last >= list.total;
  document.body.dataset.loaded = "true";
}

async function load() {
  const params = new URLSearchParams({ limit: PAGE_SIZE, offset: state.offset });
  if (statusFilter.value) params.set("status", statusFilter.value);
  try {
    const list = await apiGet(`/sessions?${params}`);
    // a page past the end (sessions deleted): step back
    if (!list.items.length && state.offset > 0 && list.total > 0) {
      state.offset = Math.max(0, Math.floor((list.total - 1) / PAGE_SIZE) * PAGE_SIZE);
      return load();
    }
    render(list);
  } catch (err) {
    showBanner(`Could not load sessions: ${err.message}`, "error");
  }
}

function scheduleReload() {
  clearTimeout(state.reloadTimer);
  state.reloadTimer = setTimeout(load, RELOAD_DEBOUNCE_MS);
}

/** A SessionOut from the `sessions` event: update its row in place, or reload the page of rows. */
function onSession(s) {
  const row = body.querySelector(`tr[data-session-id="${CSS.escape(s.session_id)}"]`);
  const filtered = statusFilter.value && statusFilter.value !== s.status;
  if (row && !filtered) {
    state.items.set(s.session_id, s);
    const hadFocus = row.contains(document.activeElement);
    const fresh = renderRow(s);
    row.replaceWith(fresh);
    if (hadFocus) fresh.querySelector("a").focus();
  } else if (row || state.offset === 0) {
    scheduleReload(); // a new session, or one leaving the filter
  }
}

function tickAges() {
  for (const td of body.querySelectorAll("td.cell-last")) {
    const ms = Number(td.dataset.ms);
    if (td.dataset.ms) setText(td, fmtAge((Date.now() - ms) / 1000) + " ago");
  }
}

prev.addEventListener("click", () => {
  state.offset = Math.max(0, state.offset - PAGE_SIZE);
  load();
});
next.addEventListener("click", () => {
  state.offset += PAGE_SIZE;
  load();
});
statusFilter.addEventListener("change", () => {
  state.offset = 0;
  load();
});

initTheme();
connectDashboard({
  onConnect: (socket, again) => {
    if (again) load(); // catch up on what changed while we were away
  },
}).on("sessions", onSession).on("deleted", (d) => {
  const row = d && body.querySelector(`tr[data-session-id="${CSS.escape(d.session_id)}"]`);
  if (row) scheduleReload(); // it leaves the list, and the page refills
});
load();
setInterval(() => {
  if (!document.hidden) load();
}, REFRESH_MS);
setInterval(tickAges, 1000);
