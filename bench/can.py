"""bench.can: what a CAN bus at 100 Hz with 40 mapped signals costs the car's monitor, on one core.

A peer process (tests/car/can_peer.py) sends the 11 plain messages of tests/data/can/abs.dbc (50 signals)
every 10 ms, 1,100 CAN frames a second, on python-can's udp_multicast bus on loopback (this machine has no
vcan). Two measurements, each pinned to one core of this machine (standing in for a Pi-class budget):

* ``source``: in this process, the monitor's CanSource (python-can + cantools, a map of 40 of the signals)
  and a FrameAssembler at ``--rate`` into an outbox on disk (no uplink): this process's CPU.
* ``monitor`` (``--whole``): ``dashboard monitor --can ... --rate R`` as a process, streaming to a real
  ``dashboard serve`` on loopback (uplink included): the monitor process's CPU, and the frames the server
  stored per second.

    python -m bench.can [--duration 20] [--rate 100] [--whole] [--out FILE]

Prints JSON: cpu_percent_of_one_core, frames_per_s (frames made), can_frames_per_s (read from the bus),
decoded_per_s, decode_errors.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cantools

from dashboard.car.assembler import FrameAssembler
from dashboard.car.can_decoder import CanDecoder
from dashboard.car.can_map import build_routes, channel_name_of
from dashboard.car.can_source import CanSource
from dashboard.car.outbox import Outbox
from dashboard.car.source import ChannelStore
from tests.car.can_peer import CanPeer, messages_of

REPO = Path(__file__).resolve().parent.parent
DBC = REPO / "tests" / "data" / "can" / "abs.dbc"
SIGNALS = 40  # mapped of the 50 the peer sends; the other 10 are decoded-and-ignored as a real map leaves some
WARMUP_S = 3.0
MONITOR_CORE = 0  # the monitor (or this process) on one core; the peer and the server on the other


def write_map(path: Path) -> dict[str, dict[str, Any]]:
    """A map of the first SIGNALS signals the peer sends, each as a custom channel named after it."""
    db = cantools.database.load_file(str(DBC), strict=False)
    names = [f"{m.name}.{s.name}" for m in messages_of(db, None) for s in m.signals][:SIGNALS]
    mapping = {name: {"channel": channel_name_of(name.split(".", 1)[1])} for name in names}
    path.write_text("".join(f'[signals."{name}"]\nchannel = "{entry["channel"]}"\n' for name, entry in mapping.items()))
    return mapping


def pin(core: int) -> None:
    """This process (and the threads it starts) on one core."""
    os.sched_setaffinity(0, {core % os.cpu_count()})


def bench_source(bus: str, duration: float, rate: float, folder: Path) -> dict[str, Any]:
    """CanSource + FrameAssembler + Outbox in this process, on one core."""
    pin(MONITOR_CORE)
    db = cantools.database.load_file(str(DBC), strict=False)
    mapping = write_map(folder / "map.toml")
    decoder = CanDecoder(db, build_routes(db, mapping))
    store = ChannelStore()
    outbox = Outbox(folder / "outbox.sqlite")
    source = CanSource(bus, store, decoder)
    assembler = FrameAssembler(store, outbox, rate_hz=rate)
    source.start()
    assembler.start()
    try:
        time.sleep(WARMUP_S)
        cpu0, wall0 = time.process_time(), time.monotonic()
        frames0, seen0, decoded0 = assembler.frames, decoder.frames, decoder.decoded
        time.sleep(duration)
        cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
        frames, seen, decoded = assembler.frames - frames0, decoder.frames - seen0, decoder.decoded - decoded0
    finally:
        assembler.stop()
        source.stop()
        outbox.close()
    last = assembler.last_frame or {"channels": {}}
    return {"what": "source", "rate_hz": rate, "signals_mapped": len(decoder.channels),
            "cpu_percent_of_one_core": round(100 * cpu / wall, 1), "frames_per_s": round(frames / wall, 1),
            "can_frames_per_s": round(seen / wall, 1), "decoded_per_s": round(decoded / wall, 1),
            "decode_errors": decoder.decode_errors, "skipped_ticks": assembler.skipped_ticks,
            "channels_in_last_frame": len([v for v in last["channels"].values() if v is not None])}


def bench_monitor(bus: str, port: int, duration: float, rate: float, folder: Path) -> dict[str, Any]:
    """`dashboard monitor --can` as a process on one core, streaming to a real server."""
    import psutil
    import requests

    from bench.servers import API_KEY, Server

    write_map(folder / "map.toml")
    server = Server("ours").start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASHBOARD_")}
    env.update({"DASHBOARD_API_KEY": API_KEY, "CAN_CONFIG": f'{{"port": {port}}}', "DASHBOARD_LOG_LEVEL": "WARNING",
                "PYTHONPATH": str(REPO)})
    car_id = f"bench-can-{random.randint(0, 99999)}"
    monitor = subprocess.Popen(
        [sys.executable, "-m", "dashboard", "monitor", "--server", server.url, "--car-id", car_id, "--can", bus,
         "--dbc", str(DBC), "--can-map", str(folder / "map.toml"), "--rate", str(rate),
         "--outbox", str(folder / "monitor-outbox.sqlite")],
        cwd=folder, env=env, stdout=open(folder / "monitor.log", "wb"), stderr=subprocess.STDOUT,
        preexec_fn=lambda: pin(MONITOR_CORE))
    try:
        ps = psutil.Process(monitor.pid)
        time.sleep(WARMUP_S + 2)

        def stored() -> int:
            items = requests.get(f"{server.url}/api/v1/sessions", params={"car_id": car_id}, timeout=10).json()
            return sum((s.get("stats") or {}).get("frames") or 0 for s in items["items"])

        t0, stored0 = ps.cpu_times(), stored()
        wall0 = time.monotonic()
        time.sleep(duration)
        t1, stored1 = ps.cpu_times(), stored()
        wall = time.monotonic() - wall0
        if monitor.poll() is not None:
            raise RuntimeError((folder / "monitor.log").read_text()[-2000:])
    finally:
        monitor.terminate()
        monitor.wait(30)
        server.stop()
    cpu = (t1.user + t1.system) - (t0.user + t0.system)
    return {"what": "monitor", "rate_hz": rate, "signals_mapped": SIGNALS,
            "cpu_percent_of_one_core": round(100 * cpu / wall, 1),
            "frames_stored_per_s": round((stored1 - stored0) / wall, 1)}


def main(argv: list[str] | None = None) -> int:
    """Run the peer and the measurements; print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--rate", type=float, default=100.0, help="the bus's rate and the monitor's frames/s")
    parser.add_argument("--whole", action="store_true", help="also the whole monitor process against a server")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args(argv)
    port = random.randint(44000, 44999)
    os.environ["CAN_CONFIG"] = f'{{"port": {port}}}'
    bus = f"udp_multicast:239.76.{random.randint(0, 255)}.{random.randint(1, 254)}"
    peer = CanPeer(bus, str(DBC), "--rate", str(args.rate), port=port)
    peer.start()
    try:
        os.sched_setaffinity(peer.proc.pid, {(MONITOR_CORE + 1) % os.cpu_count()})
        with tempfile.TemporaryDirectory(prefix="bench-can-") as tmp:
            results = [bench_source(bus, args.duration, args.rate, Path(tmp))]
            if args.whole:
                results.append(bench_monitor(bus, port, args.duration, args.rate, Path(tmp)))
    finally:
        peer.stop()
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
