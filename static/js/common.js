// Shared by every page: safe DOM building, formatting, the REST client with its
// viewer token and API key, the /dashboard Socket.IO connection with its
// reconnect banner, theme.
//
// Credentials: the viewer token (or any key) is asked once, kept in localStorage
// and sent as "Authorization: Bearer" on every REST call and in the Socket.IO
// auth; a key for changes is kept only for the tab (sessionStorage) and sent as
// X-API-Key. Neither ever goes into a URL. A 401 asks again.
//
// Rule of the house: text from users (names, setup keys and values, event
// payloads) only ever reaches the page through textContent / text nodes.
// Nothing here or in the pages assigns innerHTML.

export const API = "/api/v1";
const KEY_STORAGE = "dashboard.apiKey"; // sessionStorage: forgotten when the tab closes
const TOKEN_STORAGE = "dashboard.viewerToken"; // localStorage: asked once per browser
const THEME_STORAGE = "dashboard.theme";

/** The channel registry embedded by the page: name -> {order, label, unit, description, min, max, stale_after_s}. */
export const REGISTRY = JSON.parse(document.getElementById("channel-registry").textContent);
/** Registry channel names in the registry's own order (speed, rpm, throttle, ...). */
export const CHANNEL_ORDER = Object.keys(REGISTRY).sort((a, b) => REGISTRY[a].order - REGISTRY[b].order);
export const DEFAULT_STALE_AFTER_S = 5.0; // same as dashboard/telemetry/channels.py

export function staleAfter(name) {
  const c = REGISTRY[name];
  return c ? c.stale_after_s : DEFAULT_STALE_AFTER_S;
}

export function unitOf(name) {
  const c = REGISTRY[name];
  return c ? c.unit : "";
}

/** What a person reads for a channel: the registry's label ("Engine load"), a custom channel's own name. */
export function labelOf(name) {
  const c = REGISTRY[name];
  return (c && c.label) || name;
}

/**
 * Build an element. props: {class, text, attrs: {...}, dataset: {...}, on: {event: fn}}.
 * Children may be nodes or strings; strings become text nodes, never markup.
 */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  if (props.class) node.className = props.class;
  if (props.text !== undefined && props.text !== null) node.textContent = String(props.text);
  for (const [k, v] of Object.entries(props.attrs || {})) {
    if (v !== undefined && v !== null && v !== false) node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const [k, v] of Object.entries(props.dataset || {})) node.dataset[k] = String(v);
  for (const [k, fn] of Object.entries(props.on || {})) node.addEventListener(k, fn);
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

export function setText(node, text) {
  const s = text === null || text === undefined ? "" : String(text);
  if (node.textContent !== s) node.textContent = s;
}

// ------------------------------------------------------------------ formatting
/** Epoch milliseconds of an ISO timestamp from the API (naive ones are UTC). */
export function parseIso(iso) {
  if (!iso) return null;
  const hasZone = /[zZ]$|[+-]\d\d:?\d\d$/.test(iso);
  const ms = Date.parse(hasZone ? iso : iso + "Z");
  return Number.isNaN(ms) ? null : ms;
}

const pad = (n) => String(n).padStart(2, "0");

export function fmtClock(ms) {
  if (ms === null || ms === undefined) return "—";
  const d = new Date(ms);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** Start times: the clock for today, the date as well for older ones. */
export function fmtWhen(iso) {
  const ms = parseIso(iso);
  if (ms === null) return "—";
  const d = new Date(ms);
  const today = new Date();
  const sameDay = d.toDateString() === today.toDateString();
  const date = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
  return sameDay ? fmtClock(ms) : `${date} ${fmtClock(ms)}`;
}

export function fmtDuration(s) {
  if (s === null || s === undefined || !Number.isFinite(s)) return "—";
  s = Math.max(0, Math.floor(s));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  return h ? `${h}:${pad(m)}:${pad(sec)}` : `${m}:${pad(sec)}`;
}

/** A short age: 0.4 s, 12 s, 3 min, 2 h. */
export function fmtAge(s) {
  if (s === null || s === undefined || !Number.isFinite(s)) return "—";
  if (s < 0) s = 0;
  if (s < 10) return `${s.toFixed(1)} s`;
  if (s < 120) return `${Math.round(s)} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  return `${Math.round(s / 3600)} h`;
}

// ------------------------------------------------------------------- banner
const banner = document.getElementById("banner");
const conn = document.getElementById("conn");

/** Show the banner with a message and optional action buttons [{label, onClick}]. */
export function showBanner(message, kind = "warn", actions = []) {
  banner.replaceChildren(el("span", { text: message }));
  for (const a of actions) {
    banner.append(el("button", { class: "btn btn-small", text: a.label, attrs: { type: "button" }, on: { click: a.onClick } }));
  }
  banner.dataset.kind = kind;
  banner.hidden = false;
}

export function hideBanner() {
  banner.hidden = true;
  banner.replaceChildren();
}

export function setConn(state, text) {
  conn.dataset.state = state;
  setText(conn, text);
}

// --------------------------------------------------------------- secret dialog
const dialog = document.getElementById("key-dialog");

/** Ask for a secret in the page's dialog; resolves to the string, or null if cancelled. */
export function askSecret(title, text) {
  return askText(title, text, { secret: true, label: "Key", maxLength: 4096 });
}

/**
 * Ask for one line of text in the page's dialog (a password field when secret).
 * Resolves to the trimmed string, or null if cancelled or empty.
 */
export function askText(title, text, { secret = false, label = "Value", maxLength = 200, value = "" } = {}) {
  return new Promise((resolve) => {
    const input = document.getElementById("key-input");
    const form = document.getElementById("key-form");
    setText(document.getElementById("key-dialog-title"), title);
    setText(document.getElementById("key-dialog-text"), text);
    setText(document.querySelector('label[for="key-input"]'), label);
    input.type = secret ? "password" : "text";
    input.maxLength = maxLength;
    input.value = value;
    const done = (answer) => {
      form.removeEventListener("submit", onSubmit);
      cancel.removeEventListener("click", onCancel);
      dialog.removeEventListener("cancel", onCancel);
      if (dialog.open) dialog.close();
      resolve(answer);
    };
    const onSubmit = (ev) => {
      ev.preventDefault();
      done(input.value.trim() || null);
    };
    const onCancel = (ev) => {
      ev.preventDefault();
      done(null);
    };
    const cancel = document.getElementById("key-cancel");
    form.addEventListener("submit", onSubmit);
    cancel.addEventListener("click", onCancel);
    dialog.addEventListener("cancel", onCancel);
    dialog.showModal();
    input.focus();
  });
}

// ------------------------------------------------------------------ REST client
export class ApiError extends Error {
  constructor(status, body) {
    const err = (body && body.error) || {};
    super(err.message || `HTTP ${status}`);
    this.status = status;
    this.code = err.code || String(status);
    this.field = err.field;
    this.body = body;
  }
}

/** Headers carrying the viewer token (reads) and the key (changes), as far as this browser has them. */
export function authHeaders(key) {
  const headers = {};
  const token = localStorage.getItem(TOKEN_STORAGE);
  if (token) headers.Authorization = `Bearer ${token}`;
  if (key) headers["X-API-Key"] = key;
  return headers;
}

let tokenPrompt = null;

/**
 * Ask for the viewer token once, however many calls were refused at the same time;
 * kept in localStorage. Resolves to the token, or null if cancelled.
 */
export function askViewerToken(refused = false) {
  if (!tokenPrompt) {
    localStorage.removeItem(TOKEN_STORAGE);
    tokenPrompt = askSecret(
      "Viewer token",
      refused
        ? "The server refused that viewer token. Enter the viewer token (or your key)."
        : "This server needs a viewer token (or your key) to show its data. It is kept in this browser.",
    ).then((token) => {
      tokenPrompt = null;
      if (token) localStorage.setItem(TOKEN_STORAGE, token);
      return token;
    });
  }
  return tokenPrompt;
}

async function send(method, path, body, key) {
  const headers = { Accept: "application/json", ...authHeaders(key) };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(API + path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
    cache: "no-store",
  });
  let data = null;
  if (res.status !== 204) {
    try {
      data = await res.json();
    } catch {
      data = null;
    }
  }
  if (!res.ok) throw new ApiError(res.status, data);
  return data;
}

/** A read. On 401 (the server needs the viewer token, or refused the one kept) asks for it once and retries. */
export async function apiGet(path) {
  const key = sessionStorage.getItem(KEY_STORAGE);
  try {
    return await send("GET", path, undefined, key);
  } catch (err) {
    if (!(err instanceof ApiError) || err.status !== 401) throw err;
    if (err.field === "X-API-Key") sessionStorage.removeItem(KEY_STORAGE); // a revoked key: forget it
    const token = await askViewerToken(Boolean(localStorage.getItem(TOKEN_STORAGE)));
    if (!token) throw err;
    return send("GET", path, undefined, sessionStorage.getItem(KEY_STORAGE));
  }
}

/**
 * A mutating call. Tries with the key kept for this tab (or none: an open
 * server needs none); when refused (401: no key or not a valid one; 403: a key
 * or token whose role may not) asks for a key once, keeps it, and retries.
 */
export async function apiSend(method, path, body) {
  let key = sessionStorage.getItem(KEY_STORAGE);
  try {
    return await send(method, path, body, key);
  } catch (err) {
    if (!(err instanceof ApiError) || (err.status !== 401 && err.status !== 403)) throw err;
    sessionStorage.removeItem(KEY_STORAGE);
    key = await askSecret(
      "API key",
      err.status === 403
        ? `${err.message}. Enter a key that may.`
        : key ? "That API key was refused. Enter your API key." : "This server needs a key for changes. It is kept only in this browser tab.",
    );
    if (!key) throw err;
    const answer = await send(method, path, body, key);
    sessionStorage.setItem(KEY_STORAGE, key);
    return answer;
  }
}

/**
 * Let a download link carry the viewer token: a plain link cannot send a header,
 * so while a token is kept the file is fetched with it and saved from memory.
 */
export function authorisedDownload(link) {
  link.addEventListener("click", async (ev) => {
    const headers = authHeaders(sessionStorage.getItem(KEY_STORAGE));
    if (!Object.keys(headers).length) return; // nothing to send: the link works as it is
    ev.preventDefault();
    let res = await fetch(link.href, { headers, credentials: "same-origin", cache: "no-store" });
    if (res.status === 401 && (await askViewerToken(true))) {
      res = await fetch(link.href, { headers: authHeaders(sessionStorage.getItem(KEY_STORAGE)), cache: "no-store" });
    }
    if (!res.ok) {
      showBanner(`Could not export: HTTP ${res.status}`, "error");
      return;
    }
    const url = URL.createObjectURL(await res.blob());
    const save = el("a", { attrs: { href: url, download: link.getAttribute("download") || "" } });
    document.body.append(save);
    save.click();
    save.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  });
}

export function apiPost(path, body = {}) {
  return apiSend("POST", path, body);
}

export function apiPut(path, body = {}) {
  return apiSend("PUT", path, body);
}

export function apiDelete(path) {
  return apiSend("DELETE", path);
}

// --------------------------------------------------------- Socket.IO /dashboard
const AUTH_HINT = /auth|token|unauthori|forbidden|refused|rejected|401|403/i;
const RETRY_AFTER_REFUSAL_MS = 3000;

/**
 * Connect to /dashboard. Reconnects by itself (Socket.IO's backoff), shows the
 * banner while the link is down, asks for the viewer token when refused (the
 * same prompt as a refused REST call: one at a time), and calls onConnect on
 * every (re)connection so the page can re-join.
 */
export function connectDashboard({ onConnect, onDisconnect } = {}) {
  const socket = io("/dashboard", {
    transports: ["websocket"], // no long-polling: no sticky sessions needed behind a load balancer
    auth: (cb) => {
      const token = localStorage.getItem(TOKEN_STORAGE) || sessionStorage.getItem(KEY_STORAGE); // a key reads too
      cb(token ? { token } : {});
    },
    reconnectionDelay: 500,
    reconnectionDelayMax: 5000,
    timeout: 10000,
  });
  let everConnected = false;
  let retryTimer = null;

  socket.on("connect", () => {
    clearTimeout(retryTimer);
    hideBanner();
    setConn("live", "Live");
    document.body.dataset.socket = "connected";
    const again = everConnected;
    everConnected = true;
    if (onConnect) onConnect(socket, again);
  });

  socket.on("disconnect", (reason) => {
    document.body.dataset.socket = "disconnected";
    setConn("down", "Offline");
    showBanner("Connection to the server lost — reconnecting…", "warn");
    if (reason === "io server disconnect") socket.connect(); // the server dropped us; Socket.IO won't retry alone
    if (onDisconnect) onDisconnect(reason);
  });

  socket.io.on("reconnect_attempt", (n) => {
    showBanner(`Connection to the server lost — reconnecting (attempt ${n})…`, "warn");
  });

  socket.on("connect_error", (err) => {
    document.body.dataset.socket = "disconnected";
    setConn("down", "Offline");
    const message = (err && err.message) || "connection failed";
    if (socket.active) {
      // a transport failure: Socket.IO retries by itself
      showBanner(`Cannot reach the server — retrying… (${message})`, "warn");
      return;
    }
    // refused by the server: a viewer token is required, or too many failed attempts from here
    const data = (err && err.data) || {};
    if (data.code === "too_many") {
      showBanner(`Too many refused attempts from this address: trying again in ${Math.ceil(data.retry_after || 60)} s.`, "error");
      clearTimeout(retryTimer);
      retryTimer = setTimeout(() => socket.connect(), (data.retry_after || 60) * 1000);
      return;
    }
    const actions = [];
    const needsToken = data.code === "unauthorized" || AUTH_HINT.test(message);
    const tokenKept = Boolean(localStorage.getItem(TOKEN_STORAGE));
    const ask = async () => {
      if (await askViewerToken(tokenKept)) socket.connect();
    };
    if (needsToken) actions.push({ label: "Enter viewer token", onClick: ask });
    showBanner(
      needsToken
        ? tokenKept ? "The server refused the viewer token." : "This server needs a viewer token to show live data."
        : `The server refused the connection: ${message}`,
      "error",
      actions,
    );
    if (needsToken) {
      ask(); // asked at once; the banner's button asks again after a cancel
    } else {
      clearTimeout(retryTimer);
      retryTimer = setTimeout(() => socket.connect(), RETRY_AFTER_REFUSAL_MS);
    }
  });
  return socket;
}

// ---------------------------------------------------------------------- theme
export function initTheme(onChange) {
  const button = document.getElementById("theme-toggle");
  const apply = (theme) => {
    document.documentElement.dataset.theme = theme;
    button.setAttribute("aria-pressed", theme === "night" ? "true" : "false");
    setText(button, theme === "night" ? "Day" : "Night");
  };
  apply(localStorage.getItem(THEME_STORAGE) === "night" ? "night" : "day");
  button.addEventListener("click", () => {
    const next = document.documentElement.dataset.theme === "night" ? "day" : "night";
    localStorage.setItem(THEME_STORAGE, next);
    apply(next);
    if (onChange) onChange(next);
  });
}

/** A CSS custom property of the current theme (for canvas drawing). */
export function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

// ------------------------------------------------------------ lap formatting
/** A lap or sector time: 58.857, 1:02.345 (—for none). */
export function fmtLapTime(s, digits = 3) {
  if (s === null || s === undefined || !Number.isFinite(s)) return "—";
  const neg = s < 0;
  s = Math.abs(s);
  const m = Math.floor(s / 60);
  const rest = (s - m * 60).toFixed(digits);
  const text = m ? `${m}:${rest.padStart(digits + 3, "0")}` : rest;
  return neg ? `-${text}` : text;
}

/** A delta with its sign: +0.42, −1.07 (a real minus sign, readable from afar). */
export function fmtDelta(s, digits = 2) {
  if (s === null || s === undefined || !Number.isFinite(s)) return "—";
  const text = Math.abs(s).toFixed(digits);
  if (Number(text) === 0) return `±${text}`;
  return s < 0 ? `\u2212${text}` : `+${text}`;
}

/** A session time (epoch seconds) as the local clock with tenths: 14:03:27.4. */
export function fmtClockT(t) {
  if (t === null || t === undefined || !Number.isFinite(t)) return "—";
  return `${fmtClock(t * 1000)}.${Math.floor((t * 10) % 10)}`;
}
