"""Writes to the car's card: the assembler and outbox at 10, 25 and 100 Hz, one commit per frame vs grouped.

    python -m bench.outbox [--seconds 10] [--rates 10,25,100] [--dir PATH]

Each run is a child process under ``strace -f -c`` (fsync and fdatasync counted by the kernel's
word, not estimated) running a real FrameAssembler into a real Outbox in ``--dir`` (put it on
the card to measure the card; the default is a folder under the current directory). It prints,
per rate and mode: frames/s, commits/s, fsyncs/s and bytes written to storage per second
(``write_bytes`` of /proc/self/io: what reached the block layer, WAL and checkpoints included).

Modes:
- ``per-frame``: one transaction per frame (the monitor before group commits);
- ``per-frame+acks``: the monitor before, streaming live: each frame also deleted at once in a
  transaction with its own fsync, as the uplink did on the server's ack;
- ``grouped``: one transaction per max(tick, 100 ms) (the monitor now);
- ``grouped+acks``: the monitor now, streaming live: each committed group also deleted at once,
  as the uplink does on the server's ack (without an fsync of its own).

It also prints the cost of the DEBUG "committed seq" log line the power-cut test reads, and how
long opening an outbox with a long outage's backlog takes (``PRAGMA quick_check`` reads it all).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MODES = ("per-frame", "per-frame+acks", "grouped", "grouped+acks")
CHANNELS = {"rpm": 6123.0, "speed": 101.5, "throttle_pos": 78.0, "engine_load": 64.0, "coolant_temp": 92.0,
            "intake_temp": 31.0, "fuel_level": 55.0, "gear": 4.0, "lat": 28.41234567, "lon": -81.38123456,
            "gps_speed": 101.2, "heading": 271.3}  # a car's frame: OBD channels and a GPS fix


def _write_bytes() -> int:
    with open("/proc/self/io") as f:
        return int(next(line for line in f if line.startswith("write_bytes:")).split()[1])


def child(rate: float, mode: str, seconds: float, folder: Path) -> dict[str, Any]:
    """One run in this process: the real assembler and outbox for ``seconds``; counters as a dict."""
    from dashboard.car.assembler import FrameAssembler
    from dashboard.car.clock import GpsClock, trusted
    from dashboard.car.outbox import Outbox
    from dashboard.car.source import ChannelStore

    store = ChannelStore()
    store.update(CHANNELS)
    path = folder / f"outbox-{rate:g}-{mode}.sqlite"
    for part in folder.glob(path.name + "*"):
        part.unlink()
    box = Outbox(path)
    assembler = FrameAssembler(store, box, rate_hz=rate, clock=GpsClock(synced=trusted))
    if mode.startswith("per-frame"):
        assembler.group_ticks = 1
    if mode == "grouped+acks":
        assembler.on_frame = lambda seq: box.delete(range(max(1, seq - 2 * assembler.group_ticks), seq + 1))
    if mode == "per-frame+acks":
        assembler.on_frame = lambda seq: _synced_delete(box, seq)
    refresh = _refresher(store)
    before = _write_bytes()
    started = time.monotonic()
    assembler.start()
    while time.monotonic() - started < seconds:
        refresh()
        time.sleep(0.05)
    assembler.stop()
    elapsed = time.monotonic() - started
    written = _write_bytes() - before
    box.close()
    return {"rate": rate, "mode": mode, "seconds": round(elapsed, 2), "frames": assembler.frames,
            "commits": assembler.commits, "write_bytes": written}


def _synced_delete(box: Any, seq: int) -> None:
    """The uplink's delete as it was before: a transaction with synchronous=FULL, so an fsync of its own."""
    with box._lock:
        box._db.execute("BEGIN IMMEDIATE")
        box._db.execute("DELETE FROM frames WHERE seq = ?", (seq,))
        box._db.execute("COMMIT")


def _refresher(store: Any) -> Any:
    def refresh() -> None:
        store.update(CHANNELS)  # values stay fresh (a stale channel would be null)
    return refresh


def debug_line_cost(n: int = 20000) -> tuple[float, float]:
    """µs per ``log.debug("committed seq %d..%d")``: enabled (to a file) and disabled (INFO level)."""
    log = logging.getLogger("bench.outbox.debug")
    log.propagate = False
    with tempfile.TemporaryDirectory() as tmp:
        handler = logging.FileHandler(Path(tmp) / "log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        log.addHandler(handler)
        costs = []
        for level in (logging.DEBUG, logging.INFO):
            log.setLevel(level)
            started = time.perf_counter()
            for i in range(n):
                if log.isEnabledFor(logging.DEBUG):
                    log.debug("committed seq %d..%d", i, i + 9)
            costs.append((time.perf_counter() - started) / n * 1e6)
        log.removeHandler(handler)
        handler.close()
    return costs[0], costs[1]


def _strace_counts(path: Path) -> dict[str, int]:
    counts = {}
    for line in path.read_text().splitlines():
        match = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)$", line)
        if match and match.group(2) != "total":
            counts[match.group(2)] = int(match.group(1))
    return counts


def run(seconds: float, rates: list[float], folder: Path) -> list[dict[str, Any]]:
    """Every rate × mode in a child under strace; the rows printed as they come."""
    strace = shutil.which("strace")
    rows = []
    print(f"{'rate':>5} {'mode':<15} {'frames/s':>9} {'commits/s':>10} {'fsyncs/s':>9} {'KB written/s':>13}")
    for rate in rates:
        for mode in MODES:
            out = folder / f"strace-{rate:g}-{mode}.txt"
            cmd = [sys.executable, "-m", "bench.outbox", "--child", "--rate", str(rate), "--mode", mode,
                   "--seconds", str(seconds), "--dir", str(folder)]
            if strace:
                cmd = [strace, "-f", "-c", "-o", str(out), "-e", "trace=fsync,fdatasync", *cmd]
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            row = json.loads(done.stdout.strip().splitlines()[-1])
            syncs = _strace_counts(out) if strace else {}
            row["fsyncs"] = sum(syncs.values()) if strace else None
            per_s = row["seconds"]
            row.update(frames_per_s=round(row["frames"] / per_s, 1), commits_per_s=round(row["commits"] / per_s, 1),
                       fsyncs_per_s=None if row["fsyncs"] is None else round(row["fsyncs"] / per_s, 1),
                       kb_written_per_s=round(row["write_bytes"] / per_s / 1024, 1))
            rows.append(row)
            fsyncs = "n/a" if row["fsyncs_per_s"] is None else f"{row['fsyncs_per_s']:.1f}"
            print(f"{rate:>5g} {mode:<15} {row['frames_per_s']:>9.1f} {row['commits_per_s']:>10.1f} "
                  f"{fsyncs:>9} {row['kb_written_per_s']:>13.1f}", flush=True)
    return rows


def open_time(folder: Path, frames: int) -> float:
    """Seconds to open (quick_check included) an outbox holding ``frames`` frames: a long outage's backlog."""
    from dashboard.car.outbox import Outbox

    path = folder / "outbox-open.sqlite"
    for part in folder.glob(path.name + "*"):
        part.unlink()
    box = Outbox(path, max_frames=frames + 1)
    for first in range(0, frames, 10_000):
        box.append_many([(1.7e9 + i / 10, CHANNELS) for i in range(first, min(frames, first + 10_000))])
    box.close()
    started = time.perf_counter()
    Outbox(path).close()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rates", default="10,25,100")
    parser.add_argument("--dir", default="instance/bench-outbox", help="where the outboxes go (the card, on a car)")
    parser.add_argument("--open-frames", type=int, default=360_000, help="backlog of the open-time figure "
                        "(default: 10 h at 10 Hz)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    folder = Path(args.dir)
    folder.mkdir(parents=True, exist_ok=True)
    if args.child:
        print(json.dumps(child(args.rate, args.mode, args.seconds, folder)))
        return
    print(f"python -m bench.outbox: {args.seconds:g} s per run in {folder.resolve()} "
          f"(pid {os.getpid()}, strace {'yes' if shutil.which('strace') else 'missing: no fsync counts'})")
    run(args.seconds, [float(r) for r in args.rates.split(",")], folder)
    enabled, disabled = debug_line_cost()
    print(f"DEBUG 'committed seq' line: {enabled:.1f} µs each when logged to a file, {disabled:.2f} µs at INFO "
          f"(one per commit: at most 10 a second)")
    print(f"open (quick_check included) of an outbox holding {args.open_frames:,} frames: "
          f"{open_time(folder, args.open_frames):.2f} s")


if __name__ == "__main__":
    main()
