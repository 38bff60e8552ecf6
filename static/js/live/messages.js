// Messages to the driver: the team's canned buttons, free text with a yes/no toggle,
// and the session's messages with their state (queued → sent → delivered → seen →
// answered | cancelled | expired | closed) and the answer with its lap. Sending and
// cancelling use the key kept for this tab (apiPost asks for one when refused);
// states arrive live as `message` events on the session's room.
import { apiGet, apiPost, el, fmtClockT, setText } from "../common.js";

export const STATE_LABEL = {
  queued: "queued", sent: "sent", delivered: "on the car", seen: "seen", answered: "answered",
  cancelled: "cancelled", expired: "expired", closed: "closed (pit lane)",
};
export const FINAL = new Set(["answered", "cancelled", "expired", "closed"]);

/** "answered YES (lap 12)", "on the car", ...: a message's state as the pit reads it. */
export function stateText(m) {
  const answer = m.state === "answered" && m.answer
    ? ` ${m.answer.toUpperCase()}${m.answered_lap !== null && m.answered_lap !== undefined ? ` (lap ${m.answered_lap})` : ""}`
    : "";
  return `${STATE_LABEL[m.state] || m.state}${answer}`;
}

/** Keep the newer of two views of one message (a send's answer may come after the live event). */
export function newer(known, m) {
  return !known || known.events.length <= m.events.length;
}
const MAX_SHOWN = 30;

export class MessagesPanel {
  constructor(sessionId, root) {
    this.sessionId = sessionId;
    this.root = root;
    this.items = new Map(); // id -> MessageOut
    this.canned = root.querySelector("#msg-canned");
    this.list = root.querySelector("#msg-list");
    this.status = root.querySelector("#msg-status");
    this.form = root.querySelector("#msg-form");
    this.text = root.querySelector("#msg-text");
    this.ask = root.querySelector("#msg-ask");
    this.form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const text = this.text.value.trim();
      if (!text) return;
      this.send({ text, asks_answer: this.ask.checked }).then((ok) => {
        if (ok) this.text.value = "";
      });
    });
  }

  path(suffix = "") {
    return `/sessions/${encodeURIComponent(this.sessionId)}/messages${suffix}`;
  }

  async load() {
    try {
      const [canned, list] = await Promise.all([apiGet("/messages/canned"), apiGet(this.path())]);
      this.showCanned(canned.items);
      for (const m of list.items) this.items.set(m.id, m);
      this.render();
    } catch (err) {
      setText(this.status, `Messages could not be read: ${err.message}`);
    }
  }

  showCanned(items) {
    this.canned.replaceChildren(...items.map((c, i) => el("button", {
      class: `msg-canned prio-${c.priority}`, dataset: { canned: i },
      attrs: { type: "button", title: c.asks_answer ? "asks yes/no" : c.close_on === "box" ? "closes when the car enters the pit lane" : null },
      on: { click: () => this.send({ canned: i }) },
    }, c.text)));
  }

  async send(body) {
    setText(this.status, "Sending…");
    try {
      const m = await apiPost(this.path(), body);
      this.upsert(m);
      setText(this.status, `Sent: ${m.text}`);
      return true;
    } catch (err) {
      setText(this.status, `Not sent: ${err.message}`);
      return false;
    }
  }

  async cancel(id) {
    try {
      this.upsert(await apiPost(this.path(`/${encodeURIComponent(id)}/cancel`)));
    } catch (err) {
      setText(this.status, `Not cancelled: ${err.message}`);
    }
  }

  /** A live `message` event (or an answer to a send). */
  upsert(m) {
    if (!m || m.session_id !== this.sessionId) return;
    if (!newer(this.items.get(m.id), m)) return;
    this.items.set(m.id, m);
    this.render();
  }

  render() {
    const rows = [...this.items.values()].sort((a, b) => b.created_t - a.created_t).slice(0, MAX_SHOWN);
    this.list.replaceChildren(...rows.map((m) => {
      const cancel = FINAL.has(m.state) ? null : el("button", {
        class: "msg-cancel", attrs: { type: "button" }, on: { click: () => this.cancel(m.id) },
      }, "Cancel");
      return el("li", { class: `msg state-${m.state}`, dataset: { messageId: m.id, state: m.state } },
        el("time", {}, fmtClockT(m.created_t)),
        el("span", { class: "msg-text" }, m.text, m.asks_answer ? " (yes/no)" : null),
        el("span", { class: "msg-state" }, stateText(m)),
        cancel);
    }));
  }
}
