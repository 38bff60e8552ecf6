"""bench.team: what the team view costs its browser: 20 cars at 20 Hz against one car's live page.

Starts ``dashboard serve`` (a throwaway SQLite instance), then ``--cars`` python-socketio clients as
cars on /monitor, each sending one frame per ``telemetry`` event at ``--hz``, each waiting for its ack
as a car's uplink does. Each car drives the bundled recording's laps of Orlando Kart Center (its GPS
fixes, one per frame, so at 20 Hz a bit faster than recorded; each car starts at another point of
it) with 12 channels, timed on the built-in track: laps complete and the live delta changes with
every frame, as in a race (the team rows change all the time). Two viewers on /dashboard:
one in the team room (``team.join``: every car), one in a single car's room (``join``: that car's
live page today). For ``--duration`` seconds it counts the messages each receives and their size
(the JSON text of each message's arguments, the bulk of what crosses the wire), and prints per second:

    python -m bench.team [--cars 20] [--hz 20] [--duration 20] [--out FILE]

The team view's rate is bounded by the server's ``team_interval_s`` (0.5 s: two ``team.update`` a
second, each carrying the rows of the cars that changed), whatever the number of cars or their rate.
"""
from __future__ import annotations

import argparse
import json
import math
import threading
import time
from pathlib import Path
from typing import Any

import socketio

from bench.servers import API_KEY, REPO, Server
from dashboard.server.tracks import ORLANDO_TRACK_ID
from dashboard.telemetry.gps import read_log

RECORDING = REPO / "dashboard" / "data" / "okc-2023-4laps.nmea"
FIXES = [(r.values["lat"], r.values["lon"], r.values.get("gps_speed") or 0.0)
         for r in read_log(RECORDING) if r.sentence == "RMC" and r.values.get("lat") is not None]
START_FIX = 300  # after the way out of the pits: on the lap
CAR_SPACING = 97  # fixes between two cars' starting points


def frame(seq: int, t: float, car: int) -> dict[str, Any]:
    """One 12-channel frame of car ``car``: the recording's fixes in a loop over its laps."""
    lap_fixes = len(FIXES) - START_FIX
    lat, lon, speed = FIXES[START_FIX + (seq + car * CAR_SPACING) % lap_fixes]
    return {"seq": seq, "t": t, "channels": {
        "lat": lat, "lon": lon, "gps_speed": speed, "speed": speed, "rpm": 6000.0 + seq % 500,
        "throttle": float(seq % 100), "coolant_temp": 90.0, "oil_temp": 100.0,
        "fuel_level": 80.0 - seq / 2000 + 2 * math.sin(seq / 7), "gear": 3.0, "brake": 0.0, "battery_v": 13.8}}


class Counter:
    """Messages and their JSON bytes received by one viewer, by event name."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.messages = 0
        self.bytes = 0
        self.counting = False

    def record(self, event: str, data: Any = None) -> None:
        if not self.counting:
            return
        size = len(json.dumps(data, separators=(",", ":"))) + len(event) + 4
        with self.lock:
            self.messages += 1
            self.bytes += size


def viewer(url: str) -> tuple[socketio.Client, Counter]:
    counter = Counter()
    client = socketio.Client(reconnection=False)
    client.on("*", counter.record, namespace="/dashboard")
    client.connect(url, namespaces=["/dashboard"], transports=["websocket"], wait_timeout=10)
    return client, counter


def car(url: str, index: int, hz: float, start: threading.Event, stop: threading.Event,
        sessions: list[str | None], sent: list[int]) -> None:
    client = socketio.Client(reconnection=False)
    car_id = f"BENCH-{index:02d}"
    client.connect(url, namespaces=["/monitor"], auth={"car_id": car_id, "api_key": API_KEY},
                   transports=["websocket"], wait_timeout=10)
    try:
        ack = client.call("session.start", {"record_id": f"bench-{index}", "track_id": ORLANDO_TRACK_ID},
                          namespace="/monitor", timeout=15)
        sid = ack["session"]["session_id"]
        sessions[index] = sid
        start.wait()
        seq, next_at = 0, time.monotonic()
        while not stop.is_set():
            client.call("telemetry", {"session_id": sid, "frames": [frame(seq, time.time(), index)]},
                        namespace="/monitor", timeout=15)
            seq += 1
            sent[index] = seq
            next_at += 1.0 / hz
            time.sleep(max(0.0, next_at - time.monotonic()))
    finally:
        client.disconnect()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cars", type=int, default=20)
    parser.add_argument("--hz", type=float, default=20.0)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    server = Server("ours").start()
    threads: list[threading.Thread] = []
    stop, start = threading.Event(), threading.Event()
    sessions: list[str | None] = [None] * args.cars
    sent = [0] * args.cars
    try:
        for i in range(args.cars):
            thread = threading.Thread(target=car, args=(server.url, i, args.hz, start, stop, sessions, sent),
                                      daemon=True)
            thread.start()
            threads.append(thread)
        deadline = time.monotonic() + 30
        while None in sessions and time.monotonic() < deadline:
            time.sleep(0.05)
        if None in sessions:
            raise SystemExit("not every car started its session")
        team_client, team = viewer(server.url)
        assert team_client.call("team.join", {}, namespace="/dashboard", timeout=15)["ok"]
        car_client, one = viewer(server.url)
        assert car_client.call("join", {"session_id": sessions[0]}, namespace="/dashboard", timeout=15)["ok"]
        start.set()
        time.sleep(2.0)  # cars at their pace before counting
        sent_before = sum(sent)
        team.counting = one.counting = True
        began = time.monotonic()
        time.sleep(args.duration)
        team.counting = one.counting = False
        window = time.monotonic() - began
        frames_per_s = (sum(sent) - sent_before) / window
        stop.set()
        for thread in threads:
            thread.join(20)
        team_client.disconnect()
        car_client.disconnect()
        figures = {
            "cars": args.cars, "hz": args.hz, "duration_s": round(window, 1),
            "frames_sent_per_s": round(frames_per_s, 1),
            "team_viewer_messages_per_s": round(team.messages / window, 2),
            "team_viewer_bytes_per_s": round(team.bytes / window),
            "one_car_viewer_messages_per_s": round(one.messages / window, 2),
            "one_car_viewer_bytes_per_s": round(one.bytes / window),
        }
        figures["team_over_one_car_messages"] = round(figures["team_viewer_messages_per_s"]
                                                      / max(figures["one_car_viewer_messages_per_s"], 1e-9), 3)
        figures["team_over_one_car_bytes"] = round(figures["team_viewer_bytes_per_s"]
                                                   / max(figures["one_car_viewer_bytes_per_s"], 1), 3)
    finally:
        stop.set()
        server.stop()
    width = max(len(k) for k in figures)
    for key, value in figures.items():
        print(f"{key:<{width}}  {value}")
    if args.out:
        args.out.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
