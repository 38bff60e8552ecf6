"""bench.fixes: what framing every GPS fix costs the car: frames a second, CPU, bytes, fixes lost.

A 25 Hz receiver (the recording tests/data/okc-tillotson-plain.nmea, written at its own pace into a
pseudo-terminal) is read by the monitor's GpsSource, and a FrameAssembler at ``--rate`` (10 Hz) puts
every fix frame and tick frame into an outbox on disk, as a car does (no uplink: the outbox is
what a car pays for; the server's share is the frames a second it prints; ``cpu_share`` is this whole
process, the pty writer included). Half-way through the
assembler is held for ``--stall-s`` seconds, as a slow disk would; every fix must still be framed.

    python -m bench.fixes [--duration 30] [--rate 10] [--stall-s 2] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
import tty
from pathlib import Path
from typing import Any

from dashboard.car.assembler import FrameAssembler
from dashboard.car.clock import GpsClock
from dashboard.car.gps_source import GpsSource
from dashboard.car.outbox import Outbox
from dashboard.car.source import ChannelStore
from dashboard.telemetry.gps import NmeaDecoder

REPO = Path(__file__).resolve().parent.parent
RECORDING = REPO / "tests" / "data" / "okc-tillotson-plain.nmea"
FIRST_LINE = 1700  # on track


def epochs(lines: list[str]) -> list[tuple[float, str]]:
    """The recording as (GPS time, sentences of that time), in order."""
    out: list[tuple[float, str]] = []
    decoder = NmeaDecoder()
    for line in lines:
        readings = decoder.decode_line(line)
        t = readings[0].time if readings and readings[0].time is not None else None
        if out and (t is None or t == out[-1][0]):
            out[-1] = (out[-1][0], out[-1][1] + line)
        elif t is not None:
            out.append((t, line))
    return out


def run(duration_s: float, rate_hz: float, stall_s: float) -> dict[str, Any]:
    """Feed, frame and measure; the figures as a dict."""
    master, slave = os.openpty()
    tty.setraw(slave)
    folder = Path(tempfile.mkdtemp(prefix="bench-fixes-"))
    store = ChannelStore()
    clock = GpsClock()
    source = GpsSource(os.ttyname(slave), store, clock=clock)
    outbox = Outbox(folder / "outbox.sqlite")
    assembler = FrameAssembler(store, outbox, rate_hz=rate_hz, clock=clock)
    feed = epochs(RECORDING.read_text().splitlines(keepends=True)[FIRST_LINE:])
    sent: list[float] = []
    stop = threading.Event()

    def write() -> None:
        start, t0 = time.monotonic(), feed[0][0]
        for t, text in feed:
            if stop.wait(max(0.0, start + (t - t0) - time.monotonic())):
                return
            data = text.encode("ascii")
            while data:
                data = data[os.write(master, data):]
            sent.append(t)

    source.start()
    assembler.start()
    writer = threading.Thread(target=write, daemon=True)
    cpu0, wall0 = time.process_time(), time.monotonic()
    writer.start()
    time.sleep(duration_s / 2)
    assembler.stop()  # a stall of the framing: the fixes must wait in the store, not be lost
    time.sleep(stall_s)
    assembler.start()
    time.sleep(duration_s / 2)
    stop.set()
    writer.join()
    time.sleep(0.5)  # the last sentences read and framed
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    assembler.stop()
    source.stop()
    frames = outbox.oldest(10**7)
    fixes = [f for f in frames if f["channels"].get("lat") is not None]
    ticks = [f for f in frames if f["channels"].get("lat") is None]
    framed = {round(f["t"], 3) for f in fixes}
    lost = [t for t in sent if round(t, 3) not in framed]
    outbox.close()
    os.close(master)
    os.close(slave)

    def mean_json(rows: list[dict[str, Any]]) -> float:
        return sum(len(json.dumps(r, separators=(",", ":"))) for r in rows) / max(1, len(rows))

    return {"duration_s": round(wall, 1), "rate_hz": rate_hz, "stall_s": stall_s,
            "fixes_sent": len(sent), "fixes_framed": len(fixes), "fixes_lost": len(lost),
            "fix_frames_per_s": round(len(fixes) / wall, 1), "tick_frames_per_s": round(len(ticks) / wall, 1),
            "frames_per_s": round(len(frames) / wall, 1), "cpu_share": round(cpu / wall, 3),
            "fix_frame_json_bytes": round(mean_json(fixes)), "tick_frame_json_bytes": round(mean_json(ticks))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--stall-s", type=float, default=2.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result = run(args.duration, args.rate, args.stall_s)
    for key, value in result.items():
        print(f"{key:24} {value}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
