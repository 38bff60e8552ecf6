// Alerts the pit cannot miss: a stack under the top bar, critical ones first and
// loudest, each with its value, threshold, lap and time. An alert stays until it
// is both cleared and acknowledged: a cleared but unacknowledged one stays,
// visibly different (dashed, greyed), until someone presses Acknowledge. The
// name of who acknowledges is asked once and kept for this tab.
//
// And a small per-car rules editor: threshold, hold time, enabled; saved with
// PUT /alert-rules/{id}?car_id=.
import { apiGet, apiPost, apiPut, askText, el, fmtClockT, setText, unitOf } from "../common.js";

const BY_STORAGE = "dashboard.ackBy";
const MAX_ALERTS = 500; // alerts held for the replay timeline; the oldest off-screen ones go first
const MAX_CARDS = 12; // cards on screen at once; more is noise (the count says how many)
const REPLAY_CLEARED_S = 8; // replay: a cleared alert stays this long (replay time) before it goes
const SEVERITY_RANK = { critical: 0, warning: 1, info: 2 };

function fmtNum(v) {
  if (!Number.isFinite(v)) return "—";
  return Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 10 ? v.toFixed(1) : v.toFixed(2);
}

function withUnit(channel, v) {
  const unit = channel === "link.silence" ? "s" : unitOf(channel);
  return unit ? `${fmtNum(v)} ${unit}` : fmtNum(v);
}

/** One line describing an alert, for the event feed and the timeline. */
export function describeAlert(a) {
  return `${a.name}: ${a.channel} ${withUnit(a.channel, a.value)} ${a.comparison} ${withUnit(a.channel, a.threshold)}${
    a.lap !== null && a.lap !== undefined ? ` (lap ${a.lap})` : ""}`;
}

export class AlertsPanel {
  constructor(sessionId, stackEl) {
    this.sessionId = sessionId;
    this.stack = stackEl;
    this.alerts = new Map(); // alert_id -> AlertOut
    this.cutoff = null; // replay time, or null when live
    this.dirty = true;
    this.busy = new Set(); // alert ids being acknowledged
  }

  /** Replace with a list (the join snapshot's on-screen alerts, or GET /alerts). */
  setAll(items, { merge = false } = {}) {
    if (!merge) this.alerts.clear();
    for (const a of items || []) this.alerts.set(a.alert_id, a);
    this.trim();
    this.dirty = true;
  }

  /** A live `alert` event: raised, cleared or acknowledged. */
  upsert(a) {
    if (!a || a.session_id !== this.sessionId) return;
    this.alerts.set(a.alert_id, a);
    this.trim();
    this.dirty = true;
  }

  setCutoff(t) {
    if (t === this.cutoff) return;
    this.cutoff = t;
    this.dirty = true;
  }

  trim() {
    if (this.alerts.size <= MAX_ALERTS) return;
    const gone = [...this.alerts.values()].filter((a) => !a.on_screen).sort((a, b) => a.raised_t - b.raised_t);
    for (const a of gone) {
      if (this.alerts.size <= MAX_ALERTS) break;
      this.alerts.delete(a.alert_id);
    }
  }

  /** Every alert, oldest first (the replay timeline's markers). */
  all() {
    return [...this.alerts.values()].sort((a, b) => a.raised_t - b.raised_t);
  }

  /** What is on screen now: live, the unfinished ones; in a replay, those up at the replay time. */
  onScreen() {
    const t = this.cutoff;
    const out = [];
    for (const a of this.alerts.values()) {
      if (t === null) {
        if (a.on_screen) out.push({ a, cleared: !a.active });
      } else if (a.raised_t <= t) {
        const cleared = a.cleared_t !== null && a.cleared_t <= t;
        if (!cleared || t - a.cleared_t < REPLAY_CLEARED_S) out.push({ a, cleared });
      }
    }
    out.sort(
      (x, y) =>
        (SEVERITY_RANK[x.a.severity] ?? 3) - (SEVERITY_RANK[y.a.severity] ?? 3) ||
        Number(x.cleared) - Number(y.cleared) ||
        y.a.raised_t - x.a.raised_t,
    );
    return out;
  }

  render() {
    if (!this.dirty) return;
    this.dirty = false;
    const shown = this.onScreen();
    const focusedId = this.stack.contains(document.activeElement) ? document.activeElement.closest("[data-alert-id]")?.dataset.alertId : null;
    const cards = shown.slice(0, MAX_CARDS).map(({ a, cleared }) => this.card(a, cleared));
    if (shown.length > MAX_CARDS) cards.push(el("p", { class: "alert-more", text: `+ ${shown.length - MAX_CARDS} more alerts` }));
    this.stack.replaceChildren(...cards);
    this.stack.hidden = cards.length === 0;
    this.stack.dataset.count = String(shown.length);
    if (focusedId) this.stack.querySelector(`[data-alert-id="${CSS.escape(focusedId)}"] button`)?.focus();
  }

  card(a, cleared) {
    const when = `raised ${fmtClockT(a.raised_t)}${a.lap !== null && a.lap !== undefined ? ` · lap ${a.lap}` : ""}${
      cleared ? ` · cleared ${fmtClockT(a.cleared_t)}` : ""}`;
    const state = cleared ? "cleared" : "active";
    const card = el(
      "div",
      { class: "alert-card", attrs: { role: "group", "aria-label": `${a.severity} alert: ${a.name}` }, dataset: { alertId: a.alert_id, ruleId: a.rule_id, severity: a.severity, state } },
      el("span", { class: "alert-sev", text: a.severity.toUpperCase() }),
      el(
        "div",
        { class: "alert-body" },
        el("strong", { class: "alert-name", text: a.name }),
        el(
          "span",
          { class: "alert-value" },
          el("span", { text: `${a.channel} ` }),
          el("b", { class: "alert-reading", text: withUnit(a.channel, a.value), dataset: { value: a.value } }),
          el("span", { text: ` ${a.comparison} ${withUnit(a.channel, a.threshold)}` }),
        ),
        el("span", { class: "alert-when", text: when }),
        el("span", { class: "alert-state", text: cleared ? (a.acked_by ? "CLEARED" : "CLEARED — acknowledge to dismiss") : "ACTIVE" }),
      ),
    );
    if (a.acked_by) {
      card.append(el("span", { class: "alert-acked", text: `Acknowledged by ${a.acked_by}` }));
    } else if (a.on_screen) {
      const busy = this.busy.has(a.alert_id);
      card.append(
        el("button", {
          class: "btn alert-ack",
          text: busy ? "Acknowledging…" : "Acknowledge",
          attrs: { type: "button", disabled: busy, "aria-label": `Acknowledge ${a.name}` },
          on: { click: () => this.ack(a) },
        }),
      );
    }
    return card;
  }

  async ack(a) {
    let by = sessionStorage.getItem(BY_STORAGE);
    if (!by) {
      by = await askText("Acknowledge alert", "Your initials or role (kept for this tab, recorded with each acknowledgement).", {
        label: "Acknowledged by",
        maxLength: 80,
      });
      if (!by) return;
      sessionStorage.setItem(BY_STORAGE, by.slice(0, 80));
    }
    this.busy.add(a.alert_id);
    this.dirty = true;
    this.render();
    try {
      const out = await apiPost(`/sessions/${encodeURIComponent(this.sessionId)}/alerts/${a.alert_id}/ack`, { by });
      this.alerts.set(out.alert_id, out);
    } catch (err) {
      this.stack.append(el("p", { class: "alert-more", text: `Acknowledge failed: ${err.message}`, attrs: { role: "alert" } }));
    } finally {
      this.busy.delete(a.alert_id);
      this.dirty = true;
      this.render();
    }
  }
}

// ------------------------------------------------------------- rules editor
/** The per-car rules editor: list, edit threshold / hold / enabled, save one rule at a time. */
export class RulesEditor {
  constructor(root) {
    this.root = root;
    this.body = root.querySelector("tbody");
    this.msg = document.getElementById("rules-msg");
    this.carId = null;
    this.sessionId = null;
    this.scope = document.getElementById("rules-scope");
    this.loaded = false;
    root.closest("details")?.addEventListener("toggle", (ev) => {
      if (ev.target.open) this.load();
    });
    this.scope?.addEventListener("change", () => this.load());
  }

  setSession(sessionId) {
    this.sessionId = sessionId;
  }

  setCar(carId) {
    if (carId === this.carId) return;
    this.carId = carId;
    this.loaded = false;
    if (this.root.closest("details")?.open) this.load();
  }

  /** Rules of this session only (on top of the car's), or of the car. */
  query() {
    if (this.scope?.value === "session" && this.sessionId) return `?session_id=${encodeURIComponent(this.sessionId)}`;
    return this.carId ? `?car_id=${encodeURIComponent(this.carId)}` : "";
  }

  async load() {
    try {
      const list = await apiGet(`/alert-rules${this.query()}`);
      this.body.replaceChildren(...(list.items || []).map((item) => this.row(item)));
      this.loaded = true;
      this.root.dataset.loaded = "true";
      const forSession = this.scope?.value === "session" && this.sessionId;
      setText(this.msg, forSession ? "Rules for this session (saved rules apply to it only)"
        : this.carId ? `Rules for car ${this.carId}` : "Rules for every car");
    } catch (err) {
      setText(this.msg, `Could not load rules: ${err.message}`);
    }
  }

  row({ rule, source }) {
    const id = rule.id;
    const num = (name, value, step, label) =>
      el("input", { class: `rule-${name}`, attrs: { type: "number", step, value, "aria-label": `${label} of ${rule.name}`, inputmode: "decimal" } });
    const threshold = num("threshold", rule.threshold, "any", "Threshold");
    const hold = num("hold", rule.hold_s, "any", "Hold seconds");
    hold.min = "0";
    const enabled = el("input", { class: "rule-enabled", attrs: { type: "checkbox", "aria-label": `${rule.name} enabled` } });
    enabled.checked = rule.enabled;
    const status = el("span", { class: "rule-source", text: source });
    const save = el("button", { class: "btn btn-small", text: "Save", attrs: { type: "button", "aria-label": `Save ${rule.name}` } });
    save.addEventListener("click", async () => {
      const body = {
        name: rule.name,
        channel: rule.channel,
        comparison: rule.comparison,
        threshold: Number(threshold.value),
        hold_s: Number(hold.value),
        hysteresis: rule.hysteresis,
        severity: rule.severity,
        enabled: enabled.checked,
      };
      if (!Number.isFinite(body.threshold) || !Number.isFinite(body.hold_s) || body.hold_s < 0) {
        setText(status, "bad number");
        return;
      }
      setText(status, "saving…");
      try {
        const out = await apiPut(`/alert-rules/${encodeURIComponent(id)}${this.query()}`, body);
        setText(status, `saved (${out.source || "car"})`);
        status.dataset.saved = "true";
      } catch (err) {
        setText(status, `failed: ${err.message}`);
      }
    });
    const unit = rule.channel === "link.silence" ? "s" : unitOf(rule.channel);
    return el(
      "tr",
      { dataset: { ruleId: id, severity: rule.severity } },
      el("th", { attrs: { scope: "row" } }, el("span", { text: rule.name }), el("small", { class: "muted", text: ` ${rule.channel} ${rule.comparison}${unit ? ` (${unit})` : ""}` })),
      el("td", {}, threshold),
      el("td", {}, hold),
      el("td", {}, enabled),
      el("td", {}, save, " ", status),
    );
  }
}
