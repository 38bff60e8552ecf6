// The setup panel (current setup, version history, what changed between two
// versions) and the engineer's form (key/value rows or raw JSON) that POSTs a
// new version. Keys and values are user text: rendered with textContent only.
import { apiGet, apiPost, el, fmtWhen, parseIso, setText } from "../common.js";

const MAX_HISTORY = 200; // versions kept in the page; older ones stay in the API

/** A setup value as one line of text: strings as they are, everything else as JSON. */
export function showValue(v) {
  if (v === undefined) return "—";
  return typeof v === "string" ? v : JSON.stringify(v);
}

/** Flatten nested objects to dotted paths, so a diff names the exact setting that changed. */
export function flatten(obj, prefix = "", out = {}) {
  for (const [k, v] of Object.entries(obj || {})) {
    const path = prefix ? `${prefix}.${k}` : k;
    if (v && typeof v === "object" && !Array.isArray(v) && Object.keys(v).length) flatten(v, path, out);
    else out[path] = v;
  }
  return out;
}

/** Rows of {key, from, to, kind} for every setting that differs between two setups. */
export function diffSetups(a, b) {
  const fa = flatten(a);
  const fb = flatten(b);
  const keys = [...new Set([...Object.keys(fa), ...Object.keys(fb)])].sort();
  const rows = [];
  for (const key of keys) {
    const inA = Object.hasOwn(fa, key);
    const inB = Object.hasOwn(fb, key);
    if (inA && inB && JSON.stringify(fa[key]) === JSON.stringify(fb[key])) continue;
    rows.push({ key, from: fa[key], to: fb[key], kind: !inA ? "added" : !inB ? "removed" : "changed" });
  }
  return rows;
}

/** A form value: JSON when it parses (12, 1.5, true, [1,2], {"a":1}), else the text itself. */
export function parseValue(text) {
  const s = text.trim();
  if (s === "") return "";
  try {
    return JSON.parse(s);
  } catch {
    return text;
  }
}

export class SetupPanel {
  constructor(sessionId, { onSent } = {}) {
    this.sessionId = sessionId;
    this.onSent = onSent;
    this.versions = new Map(); // version -> SetupOut
    this.currentEl = document.querySelector("#setup-current tbody");
    this.versionEl = document.getElementById("setup-version");
    this.historyEl = document.getElementById("setup-history");
    this.fromSel = document.getElementById("diff-from");
    this.toSel = document.getElementById("diff-to");
    this.diffEl = document.querySelector("#setup-diff tbody");
    this.fromSel.addEventListener("change", () => this.renderDiff());
    this.toSel.addEventListener("change", () => this.renderDiff());
    this.form = new SetupForm(sessionId, this);
  }

  latest() {
    let best = null;
    for (const s of this.versions.values()) if (!best || s.version > best.version) best = s;
    return best;
  }

  /** Add or replace one version (SetupOut); re-render when it changes anything. */
  add(setupOut, render = true) {
    if (!setupOut || typeof setupOut.version !== "number") return;
    this.versions.set(setupOut.version, setupOut);
    if (this.versions.size > MAX_HISTORY) this.versions.delete(Math.min(...this.versions.keys()));
    if (render) this.render();
  }

  async loadHistory() {
    try {
      const list = await apiGet(`/sessions/${encodeURIComponent(this.sessionId)}/setups`);
      for (const s of list.items || []) this.add(s, false);
      this.render();
    } catch (err) {
      setText(this.versionEl, `history unavailable: ${err.message}`);
    }
  }

  render() {
    const cur = this.latest();
    document.getElementById("setup-title").closest("section").dataset.version = cur ? String(cur.version) : "";
    if (!cur) {
      setText(this.versionEl, "no setup yet");
      this.currentEl.replaceChildren();
    } else {
      setText(this.versionEl, `v${cur.version} · ${fmtWhen(cur.timestamp)}`);
      this.currentEl.replaceChildren(
        ...Object.entries(cur.setup).map(([k, v]) =>
          el("tr", { dataset: { key: k } }, el("th", { text: k, attrs: { scope: "row" } }), el("td", { text: showValue(v) })),
        ),
      );
    }
    const ordered = [...this.versions.values()].sort((a, b) => b.version - a.version);
    document.getElementById("setup-more").hidden = ordered.length === 0;
    this.historyEl.replaceChildren(
      ...ordered.map((s, i) => {
        const prev = ordered[i + 1];
        const changes = prev ? diffSetups(prev.setup, s.setup).length : Object.keys(flatten(s.setup)).length;
        const received = parseIso(s.received_at);
        return el(
          "li",
          { dataset: { version: s.version } },
          el("strong", { text: `v${s.version}` }),
          ` ${fmtWhen(s.timestamp)} · ${changes} ${changes === 1 ? "change" : "changes"}`,
          received ? el("span", { class: "muted", text: ` (received ${fmtWhen(s.received_at)})` }) : null,
        );
      }),
    );
    // compare selectors: keep the user's choice; default to the two newest
    const keepFrom = this.fromSel.value;
    const keepTo = this.toSel.value;
    const opts = () => ordered.map((s) => el("option", { text: `v${s.version}`, attrs: { value: s.version } }));
    this.fromSel.replaceChildren(...opts());
    this.toSel.replaceChildren(...opts());
    const has = (v) => v && this.versions.has(Number(v));
    this.toSel.value = has(keepTo) && this.userPicked ? keepTo : ordered.length ? String(ordered[0].version) : "";
    this.fromSel.value = has(keepFrom) && this.userPicked ? keepFrom : ordered.length > 1 ? String(ordered[1].version) : this.toSel.value;
    this.renderDiff();
  }

  renderDiff() {
    if (document.activeElement === this.fromSel || document.activeElement === this.toSel) this.userPicked = true;
    const a = this.versions.get(Number(this.fromSel.value));
    const b = this.versions.get(Number(this.toSel.value));
    if (!a || !b) {
      this.diffEl.replaceChildren();
      return;
    }
    const rows = diffSetups(a.setup, b.setup);
    if (!rows.length) {
      this.diffEl.replaceChildren(el("tr", {}, el("td", { text: "no differences", attrs: { colspan: 3 } })));
      return;
    }
    this.diffEl.replaceChildren(
      ...rows.map((r) =>
        el(
          "tr",
          { class: `diff-${r.kind}`, dataset: { key: r.key } },
          el("th", { text: r.key, attrs: { scope: "row" } }),
          el("td", { text: showValue(r.from) }),
          el("td", { text: showValue(r.to) }),
        ),
      ),
    );
  }
}

class SetupForm {
  constructor(sessionId, panel) {
    this.sessionId = sessionId;
    this.panel = panel;
    this.form = document.getElementById("setup-form");
    this.rows = document.getElementById("setup-rows");
    this.rowsEditor = document.getElementById("rows-editor");
    this.jsonEditor = document.getElementById("json-editor");
    this.json = document.getElementById("setup-json");
    this.msg = document.getElementById("setup-msg");
    this.modeRows = document.getElementById("mode-rows");
    this.modeJson = document.getElementById("mode-json");
    this.mode = "rows";
    document.getElementById("row-add").addEventListener("click", () => this.addRow("", "", true));
    document.getElementById("rows-load").addEventListener("click", () => this.loadCurrent());
    this.modeRows.addEventListener("click", () => this.setMode("rows"));
    this.modeJson.addEventListener("click", () => this.setMode("json"));
    this.form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      this.submit();
    });
    this.addRow("", "");
  }

  addRow(key, value, focus = false) {
    const n = this.rows.children.length + 1;
    const k = el("input", { class: "row-key", attrs: { type: "text", "aria-label": `Key ${n}`, placeholder: "key", autocomplete: "off" } });
    const v = el("input", { class: "row-value", attrs: { type: "text", "aria-label": `Value ${n}`, placeholder: "value", autocomplete: "off" } });
    k.value = key;
    v.value = value;
    const row = el("div", { class: "kv-row" }, k, v);
    row.append(
      el("button", {
        class: "btn btn-small btn-quiet",
        text: "✕",
        attrs: { type: "button", "aria-label": `Remove row ${n}` },
        on: { click: () => row.remove() },
      }),
    );
    this.rows.append(row);
    if (focus) k.focus();
  }

  setRows(obj) {
    this.rows.replaceChildren();
    for (const [k, v] of Object.entries(obj)) this.addRow(k, showValue(v));
    if (!this.rows.children.length) this.addRow("", "");
  }

  loadCurrent() {
    const cur = this.panel.latest();
    const setup = cur ? cur.setup : {};
    if (this.mode === "rows") this.setRows(setup);
    else this.json.value = JSON.stringify(setup, null, 2);
  }

  /** The setup the form describes, or throws an Error saying what is wrong. */
  read() {
    if (this.mode === "json") {
      let value;
      try {
        value = JSON.parse(this.json.value);
      } catch (err) {
        throw new Error(`not valid JSON: ${err.message}`);
      }
      if (!value || typeof value !== "object" || Array.isArray(value)) throw new Error("the setup must be a JSON object");
      return value;
    }
    const setup = {};
    for (const row of this.rows.children) {
      const key = row.querySelector(".row-key").value.trim();
      const raw = row.querySelector(".row-value").value;
      if (!key && !raw.trim()) continue;
      if (!key) throw new Error("a row has a value but no key");
      if (Object.hasOwn(setup, key)) throw new Error(`key "${key}" appears twice`);
      setup[key] = parseValue(raw);
    }
    if (!Object.keys(setup).length) throw new Error("the setup is empty");
    return setup;
  }

  setMode(mode) {
    if (mode === this.mode) return;
    try {
      if (mode === "json") {
        let setup = {};
        try {
          setup = this.read();
        } catch {
          setup = {};
        }
        this.json.value = JSON.stringify(setup, null, 2);
      } else {
        const value = JSON.parse(this.json.value || "{}");
        if (!value || typeof value !== "object" || Array.isArray(value)) throw new Error("the setup must be a JSON object");
        this.setRows(value);
      }
    } catch (err) {
      this.say(`Fix the JSON first: ${err.message}`, "error");
      return;
    }
    this.mode = mode;
    this.rowsEditor.hidden = mode !== "rows";
    this.jsonEditor.hidden = mode !== "json";
    this.modeRows.setAttribute("aria-pressed", String(mode === "rows"));
    this.modeJson.setAttribute("aria-pressed", String(mode === "json"));
    this.say("");
  }

  say(text, kind = "") {
    setText(this.msg, text);
    this.msg.dataset.kind = kind;
  }

  async submit() {
    let setup;
    try {
      setup = this.read();
    } catch (err) {
      this.say(err.message, "error");
      return;
    }
    const button = document.getElementById("setup-submit");
    button.disabled = true;
    this.say("Sending…");
    try {
      const out = await apiPost(`/sessions/${encodeURIComponent(this.sessionId)}/setup`, { setup });
      this.panel.add(out);
      this.say(`Saved as v${out.version}`, "ok");
      if (this.panel.onSent) this.panel.onSent(out);
    } catch (err) {
      const field = err.field ? ` (${err.field})` : "";
      this.say(`Not saved: ${err.message}${field}`, "error");
    } finally {
      button.disabled = false;
    }
  }
}
