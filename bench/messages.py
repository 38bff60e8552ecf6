"""bench.messages: how long a pit-to-car message takes to reach the driver's screen, and the answer to come back.

Starts ``dashboard serve`` (a throwaway SQLite instance) and a simulated car as its own process
(``dashboard simulate --display``: the real uplink, outbox, inbox and driver display, replaying the
bundled laps), optionally with ``--load-cars`` other cars streaming at 20 Hz (bench.team's cars). Then
``--messages`` times, one after the other: the pit POSTs a yes/no message over REST; the bench polls the
car's driver display (``GET /api/state``, every 5 ms) until the message is there; it answers on the display
(``POST /api/messages/{id}/answer``, what the YES button sends) and polls the server's REST until the pit
sees ``answered``. Prints p50 / p95 / max of each leg. The display's page polls its state every 250 ms
(``display.js``): a message is on the screen at most that much after it is in the state.

    python -m bench.messages [--messages 30] [--load-cars 0] [--out FILE]

Over the main link the issue asks for "within a second" on the driver's screen.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests

from bench.servers import API_KEY, REPO, Server, free_port
from bench.team import car as load_car

PAGE_POLL_S = 0.25  # display.js: the page reads the state four times a second
POLL_S = 0.005
TIMEOUT_S = 30.0


def wait(predicate: Any, what: str, timeout: float = TIMEOUT_S) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(POLL_S)


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"p50_ms": round(statistics.median(ordered) * 1000, 1), "p95_ms": round(p95 * 1000, 1),
            "max_ms": round(ordered[-1] * 1000, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=30)
    parser.add_argument("--load-cars", type=int, default=0, help="other cars streaming 1 frame per event at 20 Hz")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    server = Server("ours").start()
    folder = Path(tempfile.mkdtemp(prefix="bench-messages-"))
    port = free_port()
    display = f"http://127.0.0.1:{port}/"
    env = {**os.environ, "DASHBOARD_API_KEY": API_KEY, "DASHBOARD_LOG_LEVEL": "WARNING",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    car_log = open(folder / "simulate.log", "wb")
    car = subprocess.Popen([sys.executable, "-m", "dashboard", "simulate", "--server", server.url, "--car-id",
                            "bench-msg", "--display", f"127.0.0.1:{port}", "--outbox", str(folder / "outbox.sqlite")],
                           cwd=folder, env=env, stdout=car_log, stderr=subprocess.STDOUT)
    stop, start = threading.Event(), threading.Event()
    sessions: list[str | None] = [None] * args.load_cars
    sent = [0] * args.load_cars
    threads = [threading.Thread(target=load_car, args=(server.url, i, 20.0, start, stop, sessions, sent),
                                daemon=True) for i in range(args.load_cars)]
    http = requests.Session()
    headers = {"X-API-Key": API_KEY}
    to_screen: list[float] = []
    to_pit: list[float] = []
    try:
        for thread in threads:
            thread.start()
        wait(lambda: None not in sessions, "the load cars' sessions")
        start.set()

        def session_id() -> str | None:
            items = http.get(f"{server.url}/api/v1/sessions", params={"car_id": "bench-msg"}, timeout=5).json()
            return items["items"][0]["session_id"] if items["items"] else None

        sid = wait(session_id, "the simulated car's session")

        def display_up() -> bool:
            try:
                return http.get(display + "api/state", timeout=2).ok
            except requests.RequestException:
                return False

        wait(display_up, "the driver display")
        time.sleep(2.0)  # the car streaming at its pace before measuring
        for i in range(args.messages):
            began = time.perf_counter()
            answer = http.post(f"{server.url}/api/v1/sessions/{sid}/messages", headers=headers, timeout=10,
                               json={"text": f"FUEL OK {i}?", "asks_answer": True})
            answer.raise_for_status()
            mid = answer.json()["id"]
            wait(lambda mid=mid: any(m["id"] == mid for m in http.get(display + "api/state", timeout=5).json()
                                     ["messages"]), f"message {i} on the display")
            to_screen.append(time.perf_counter() - began)
            pressed = time.perf_counter()
            done = http.post(f"{display}api/messages/{mid}/answer", json={"answer": "yes"}, timeout=5)
            if not done.ok or not done.json().get("applied"):
                raise SystemExit(f"the display refused the answer: {done.text}")

            def answered(mid: str = mid) -> bool:
                items = http.get(f"{server.url}/api/v1/sessions/{sid}/messages", timeout=5).json()["items"]
                return any(m["id"] == mid and m["state"] == "answered" for m in items)

            wait(answered, f"answer {i} at the pit")
            to_pit.append(time.perf_counter() - pressed)
    finally:
        stop.set()
        car.terminate()
        try:
            car.wait(20)
        except subprocess.TimeoutExpired:
            car.kill()
        car_log.close()
        server.stop()
    screen = percentiles(to_screen)
    figures = {
        "messages": args.messages, "load_cars": args.load_cars,
        "pit_to_display_state": screen,
        "pit_to_screen_worst_ms": round(screen["max_ms"] + PAGE_POLL_S * 1000, 1),
        "display_answer_to_pit": percentiles(to_pit),
    }
    print(json.dumps(figures, indent=2))
    if args.out:
        args.out.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
