/* The driver display: polls the monitor's /api/state, shows the car's own timing and the pit's message,
   sends what the driver saw and answered. Keys: Y/Enter/F1 yes (or OK), N/Escape/F2 no, F3 night/day. */
"use strict";
(function () {
  const POLL_MS = 250; // four updates a second: the running lap time moves in tenths
  const TIMEOUT_MS = 2000; // a poll slower than this counts as no monitor
  const THEME_KEY = "driver-display-theme";
  const $ = (id) => document.getElementById(id);
  const root = document.documentElement;
  const darkQuery = window.matchMedia ? window.matchMedia("(prefers-color-scheme: dark)") : null;

  let shown = null; // the message on screen
  const seenSent = new Set(); // message ids whose "seen" was sent (once each)
  const answered = new Set(); // answered here: hidden at once, before the next poll says so

  // ------------------------------------------------------------------ night mode
  function applyTheme() {
    const chosen = localStorage.getItem(THEME_KEY); // "night" | "day" | null: follow the system
    const night = chosen ? chosen === "night" : Boolean(darkQuery && darkQuery.matches);
    root.dataset.theme = night ? "night" : "day";
    $("night-toggle").textContent = night ? "DAY" : "NIGHT";
  }
  function toggleTheme() {
    localStorage.setItem(THEME_KEY, root.dataset.theme === "night" ? "day" : "night");
    applyTheme();
  }

  // ------------------------------------------------------------------ figures
  function lapTime(seconds, digits) { // running time in tenths (floored: it never shows time not yet driven)
    if (seconds === null || seconds === undefined) return "--";
    const scale = Math.pow(10, digits);
    const units = Math.floor(seconds * scale + 1e-6);
    const minutes = Math.floor(units / (60 * scale));
    const rest = (units - minutes * 60 * scale) / scale;
    return minutes > 0 ? minutes + ":" + rest.toFixed(digits).padStart(digits + 3, "0") : rest.toFixed(digits);
  }
  function delta(seconds) {
    if (seconds === null || seconds === undefined) return "--";
    return (seconds > 0 ? "+" : seconds < 0 ? "\u2212" : "\u00b1") + Math.abs(seconds).toFixed(2);
  }
  function showTiming(timing) {
    const timed = timing && timing.track;
    $("lap").textContent = !timed || timing.lap === null ? "--" : timing.out_lap ? "OUT" : String(timing.lap);
    $("elapsed").textContent = timed ? lapTime(timing.elapsed, 1) : "--";
    $("last-lap").textContent = timed ? lapTime(timing.last_lap, 2) : "--";
    const d = timed ? timing.delta : null;
    $("delta").textContent = delta(d);
    $("delta").dataset.sign = d === null || d === undefined ? "none" : d < 0 ? "ahead" : d > 0 ? "behind" : "even";
  }
  function showLinks(links) {
    const up = Boolean(links && links.main_up);
    $("link").dataset.up = String(up);
    $("link").textContent = up ? "LINK UP" : "LINK DOWN";
    const radio = links && links.radio;
    $("radio").hidden = !radio;
    $("radio").textContent = radio ? "RADIO " + String(radio).toUpperCase() : "";
  }

  // ------------------------------------------------------------------ the pit's message
  function showMessages(messages) {
    const open = (messages || []).filter((m) => !answered.has(m.id));
    const top = open.length ? open[0] : null;
    document.body.dataset.message = String(Boolean(top));
    $("message").hidden = !top;
    shown = top;
    if (!top) return;
    $("message").dataset.id = top.id;
    $("message").dataset.priority = top.priority;
    $("message-text").textContent = top.text;
    const takes = top.answers || [];
    $("answer-yes").hidden = !takes.includes("yes");
    $("answer-no").hidden = !takes.includes("no");
    $("answer-ok").hidden = !takes.includes("ok");
    $("message-buttons").hidden = takes.length === 0;
    $("message-note").hidden = takes.length !== 0; // a BOX call: closes when the car is in the pit lane
    $("message-more").hidden = open.length < 2;
    $("message-more").textContent = "+" + (open.length - 1) + " MORE";
    if (!top.seen && !seenSent.has(top.id)) {
      seenSent.add(top.id);
      post("/api/messages/" + encodeURIComponent(top.id) + "/seen", {}).catch(() => seenSent.delete(top.id));
    }
  }
  function answer(kind) {
    const message = shown;
    if (!message) return;
    const takes = message.answers || [];
    const value = kind === "yes" && !takes.includes("yes") ? "ok" : kind;
    if (!takes.includes(value)) return;
    answered.add(message.id);
    showMessages(lastMessages);
    post("/api/messages/" + encodeURIComponent(message.id) + "/answer", { answer: value })
      .catch(() => { answered.delete(message.id); showMessages(lastMessages); });
  }

  // ------------------------------------------------------------------ the monitor
  async function post(path, body) {
    const answer = await fetch(path, { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body), cache: "no-store" });
    if (!answer.ok) throw new Error("HTTP " + answer.status);
    return answer.json();
  }
  let lastMessages = [];
  async function poll() {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), TIMEOUT_MS);
    try {
      const reply = await fetch("/api/state", { cache: "no-store", signal: abort.signal });
      if (!reply.ok) throw new Error("HTTP " + reply.status);
      const state = await reply.json();
      lastMessages = state.messages || [];
      showTiming(state.timing);
      showLinks(state.links);
      showMessages(lastMessages);
      $("monitor").hidden = true;
      document.body.dataset.ready = "true";
    } catch (err) {
      $("monitor").hidden = false; // the monitor is not answering: what is on screen is old
    } finally {
      clearTimeout(timer);
      setTimeout(poll, POLL_MS);
    }
  }

  // ------------------------------------------------------------------ keys and buttons
  const KEYS = { y: "yes", Y: "yes", Enter: "yes", F1: "yes", n: "no", N: "no", Escape: "no", F2: "no" };
  function onKey(event) {
    if (event.key === "F3") {
      event.preventDefault();
      toggleTheme();
      return;
    }
    const kind = KEYS[event.key];
    if (!kind) return;
    event.preventDefault(); // F1 is the browser's help; Enter would also click a focused button
    if (!$("help").hidden && kind === "no") { $("help").hidden = true; return; }
    answer(kind);
  }

  document.addEventListener("DOMContentLoaded", () => {
    applyTheme();
    if (darkQuery && darkQuery.addEventListener) darkQuery.addEventListener("change", applyTheme);
    document.addEventListener("keydown", onKey);
    for (const button of document.querySelectorAll("button.answer")) {
      button.addEventListener("click", () => answer(button.dataset.answer));
    }
    $("night-toggle").addEventListener("click", toggleTheme);
    $("help-toggle").addEventListener("click", () => { $("help").hidden = !$("help").hidden; });
    $("help").addEventListener("click", () => { $("help").hidden = true; });
    poll();
  });
})();
