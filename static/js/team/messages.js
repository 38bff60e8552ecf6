// Messages to the driver on a team card: the team's canned messages as buttons (one tap sends to
// that car), and the car's newest message with its state and answer ("FUEL OK? · answered YES
// (lap 12)"), kept live by the `message` events the team's room gets. Free text and the full
// list are on the car's own page (live/messages.js); the rules are the same.
import { apiGet, apiPost, el, setText } from "../common.js";
import { FINAL, newer, stateText } from "../live/messages.js";

const PRIORITY = { low: 0, normal: 1, high: 2, urgent: 3 };
let cannedOnce = null; // the team's canned messages, read once for every card

function canned() {
  if (!cannedOnce) cannedOnce = apiGet("/messages/canned").then((a) => a.items).catch((err) => {
    cannedOnce = null;
    throw err;
  });
  return cannedOnce;
}

/** One card's messages: {node, upsert(MessageOut)}. */
export function carMessages(sessionId) {
  const path = `/sessions/${encodeURIComponent(sessionId)}/messages`;
  const items = new Map();
  const buttons = el("div", { class: "msg-buttons team-msg-buttons" });
  const last = el("p", { class: "team-msg", dataset: { field: "message" }, attrs: { "aria-live": "polite" } });
  const status = el("p", { class: "team-msg-status", attrs: { role: "status" } });
  const node = el("div", { class: "team-messages" }, last, buttons, status);

  function render() {
    // what the driver has on top now (the car's order: highest priority, then oldest), else the last word
    const open = [...items.values()].filter((m) => !FINAL.has(m.state))
      .sort((a, b) => (PRIORITY[b.priority] ?? 1) - (PRIORITY[a.priority] ?? 1) || a.created_t - b.created_t);
    const ended = [...items.values()].filter((m) => FINAL.has(m.state)).sort((a, b) => b.created_t - a.created_t);
    const shown = open[0] || ended[0];
    last.hidden = !shown;
    if (!shown) return;
    last.dataset.state = shown.state;
    last.dataset.messageId = shown.id;
    const more = open.length > 1 ? ` · +${open.length - 1}` : "";
    setText(last, `${shown.text} · ${stateText(shown)}${more}`);
  }

  function upsert(m) {
    if (!m || m.session_id !== sessionId || !newer(items.get(m.id), m)) return;
    items.set(m.id, m);
    render();
  }

  async function send(index, text) {
    status.dataset.kind = "ok";
    setText(status, `Sending ${text}…`);
    try {
      upsert(await apiPost(path, { canned: index }));
      setText(status, `Sent: ${text}`);
    } catch (err) {
      status.dataset.kind = "error";
      setText(status, `Not sent: ${err.message}`);
    }
  }

  canned().then((list) => buttons.replaceChildren(...list.map((c, i) => el("button", {
    class: `btn msg-canned prio-${c.priority}`, dataset: { canned: i },
    attrs: { type: "button", title: c.asks_answer ? "asks yes/no" : null },
    on: { click: () => send(i, c.text) },
  }, c.text)))).catch(() => setText(status, "Canned messages could not be read"));
  apiGet(path).then((list) => list.items.forEach(upsert)).catch(() => {});
  return { node, upsert };
}
