"""bench.team_browser: the team overview with 20 cars at 20 Hz in chromium, against one car's live page.

The cars of ``bench.team`` (python-socketio clients on /monitor, one frame per ``telemetry`` event at
``--hz``, the bundled recording's laps of Orlando Kart Center on the built-in track) drive a throwaway
``dashboard serve``. Two pages are open at the same time in Debian chromium (headless, one context
each): the team overview (``/team``: every car) and the first car's live page (``/sessions/{id}``).
Over ``--duration`` seconds, for each page:

- the Socket.IO event messages it receives a second (WebSocket frames carrying an event, counted by
  Playwright; pings left out);
- its main thread's busy time a second (Chrome's Performance metrics over the window: all tasks, and the
  script, style and layout parts of them) — what rendering the updates costs the page;
- its frame timing (requestAnimationFrame intervals collected in the page: frames a second, p99 and max);
- the team page's own update handler (``team.update`` in, the cards and map drawn; timed in the page
  with performance.now() through its ``window.dashboardTeamStats`` hook): calls, mean, p99, max ms.

    python -m bench.team_browser [--cars 20] [--hz 20] [--duration 60] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from bench.servers import Server
from bench.team import car

CHROMIUM = os.environ.get("DASHBOARD_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
                 "--disable-backgrounding-occluded-windows"]
VIEWPORT = {"width": 1920, "height": 1080}
BUSY = ("TaskDuration", "ScriptDuration", "RecalcStyleDuration", "LayoutDuration")

COLLECT = """() => {
  window.__raf = [];
  window.__upd = [];
  let last = 0;
  const tick = (t) => { if (last) window.__raf.push(t - last); last = t; requestAnimationFrame(tick); };
  requestAnimationFrame(tick);
  window.dashboardTeamStats = (ms) => window.__upd.push(ms);
}"""


def quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Watched:
    """One page under measure: its event messages, Chrome's busy-time metrics, its frame timings."""

    def __init__(self, browser: Any, url: str, ready: str) -> None:
        self.context = browser.new_context(viewport=VIEWPORT)
        self.page = self.context.new_page()
        self.messages = 0
        self.counting = False
        self.page.on("websocket", lambda ws: ws.on("framereceived", self._frame))
        self.page.goto(url)
        self.page.wait_for_selector(ready, timeout=30_000)
        self.cdp = self.context.new_cdp_session(self.page)
        self.cdp.send("Performance.enable")
        self.before: dict[str, float] = {}

    def _frame(self, payload: Any) -> None:
        text = payload if isinstance(payload, str) else payload.decode("utf-8", "replace")
        if self.counting and text.startswith("42"):  # an event (not a ping, not an ack)
            self.messages += 1

    def metrics(self) -> dict[str, float]:
        return {m["name"]: m["value"] for m in self.cdp.send("Performance.getMetrics")["metrics"]}

    def begin(self) -> None:
        self.page.evaluate(COLLECT)
        self.before = self.metrics()
        self.counting = True

    def end(self, window: float) -> dict[str, Any]:
        self.counting = False
        after = self.metrics()
        raf = self.page.evaluate("window.__raf")
        updates = self.page.evaluate("window.__upd")
        out: dict[str, Any] = {"messages_per_s": round(self.messages / window, 2)}
        for name in BUSY:
            out[f"{name.removesuffix('Duration').lower()}_ms_per_s"] = round(
                (after.get(name, 0.0) - self.before.get(name, 0.0)) * 1000 / window, 1)
        out["frames_per_s"] = round(len(raf) / window, 1)
        out["frame_p99_ms"] = round(quantile(raf, 0.99) or 0.0, 1)
        out["frame_max_ms"] = round(max(raf, default=0.0), 1)
        if updates:
            out["update_handler_calls"] = len(updates)
            out["update_handler_mean_ms"] = round(sum(updates) / len(updates), 2)
            out["update_handler_p99_ms"] = round(quantile(updates, 0.99) or 0.0, 2)
            out["update_handler_max_ms"] = round(max(updates), 2)
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cars", type=int, default=20)
    parser.add_argument("--hz", type=float, default=20.0)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    server = Server("ours").start()
    stop, start = threading.Event(), threading.Event()
    sessions: list[str | None] = [None] * args.cars
    sent = [0] * args.cars
    threads = [threading.Thread(target=car, args=(server.url, i, args.hz, start, stop, sessions, sent), daemon=True)
               for i in range(args.cars)]
    try:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while None in sessions and time.monotonic() < deadline:
            time.sleep(0.05)
        if None in sessions:
            raise SystemExit("not every car started its session")
        start.set()
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            team = Watched(browser, f"{server.url}/team", f".team-car >> nth={args.cars - 1}")
            one = Watched(browser, f"{server.url}/sessions/{sessions[0]}", "body")
            time.sleep(3.0)  # the pages settled, the cars at their pace
            sent_before = sum(sent)
            team.begin()
            one.begin()
            began = time.monotonic()
            while time.monotonic() - began < args.duration:
                team.page.wait_for_timeout(500)  # Playwright's events are handled while it waits
            window = time.monotonic() - began
            figures: dict[str, Any] = {"cars": args.cars, "hz": args.hz, "duration_s": round(window, 1),
                                       "frames_sent_per_s": round((sum(sent) - sent_before) / window, 1),
                                       "team_page": team.end(window), "one_car_live_page": one.end(window)}
            browser.close()
    finally:
        stop.set()
        for thread in threads:
            thread.join(20)
        server.stop()
    print(json.dumps(figures, indent=2))
    if args.out:
        args.out.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
