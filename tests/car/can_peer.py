"""A CAN peer in its own process: frames of a DBC's messages, made with cantools, sent on a python-can bus.

    python -m tests.car.can_peer --bus udp_multicast:239.74.163.2 --dbc tests/data/can/abs.dbc --rate 100

Every (non-multiplexed) message of the DBC, or those named with ``--message``, is sent ``--rate`` times a
second on a fixed grid. Signal values are raw integers stepping through a small cycle (``raw_value``), so a
test knows every value the monitor may decode. ``--count N`` stops after N rounds; SIGTERM stops at once.
It prints ``ready`` when the bus is open and, at the end, ``sent N``.
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from typing import Any

RAW_CYCLE = 16  # each signal's raw value goes 1, 2, ... 16, 1, ...: small enough for every signal's width


def raw_value(signal: Any, round_no: int) -> int:
    """The raw value a signal carries in round ``round_no`` (fits the signal, signed or not; never 0)."""
    bits = signal.length - (1 if signal.is_signed else 0)
    return 1 + round_no % min(RAW_CYCLE, max(1, (1 << bits) - 1))


def decoded_values(signal: Any) -> set[float]:
    """Every value of a signal this peer sends, decoded (raw × scale + offset)."""
    return {raw_value(signal, n) * signal.scale + signal.offset for n in range(RAW_CYCLE)}


def messages_of(db: Any, names: list[str] | None) -> list[Any]:
    """The messages to send: those named, or every one with signals that is not multiplexed."""
    if names:
        return [db.get_message_by_name(name) for name in names]
    return [m for m in db.messages if m.signals and not m.is_multiplexed()]


def main(argv: list[str] | None = None) -> int:
    """Send until stopped (or ``--count`` rounds)."""
    import can
    import cantools

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bus", required=True, help="INTERFACE:CHANNEL")
    parser.add_argument("--dbc", required=True)
    parser.add_argument("--rate", type=float, default=100.0, help="rounds a second (each message once a round)")
    parser.add_argument("--message", action="append", help="send only these messages (repeatable)")
    parser.add_argument("--count", type=int, default=0, help="stop after this many rounds (0: never)")
    parser.add_argument("--garbage", action="store_true", help="also send a frame of a DBC id with the wrong "
                        "length and one of an id the DBC lacks, every round")
    args = parser.parse_args(argv)
    interface, _, channel = args.bus.partition(":")
    db = cantools.database.load_file(args.dbc, strict=False)
    messages = messages_of(db, args.message)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    bus = can.Bus(interface=interface, channel=channel)
    print("ready", flush=True)
    sent = 0
    period = 1.0 / args.rate
    next_round = time.monotonic()
    round_no = 0
    try:
        while not stop.is_set() and (not args.count or round_no < args.count):
            for message in messages:
                data = message.encode({s.name: raw_value(s, round_no) for s in message.signals}, scaling=False,
                                      strict=False)
                bus.send(can.Message(arbitration_id=message.frame_id, data=data,
                                     is_extended_id=message.is_extended_frame))
                sent += 1
            if args.garbage:
                bus.send(can.Message(arbitration_id=messages[0].frame_id, data=b"\x01\x02",
                                     is_extended_id=messages[0].is_extended_frame))
                bus.send(can.Message(arbitration_id=0x7FF, data=b"\x00" * 8, is_extended_id=False))
            round_no += 1
            next_round += period
            stop.wait(max(0.0, next_round - time.monotonic()))
    finally:
        bus.shutdown()
    print(f"sent {sent}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())


class CanPeer:
    """This program as a process of a test: ``start()`` waits for ``ready``; ``stop()`` is SIGTERM (safe twice).

    ``port`` isolates the tests' udp_multicast buses from each other (python-can's CAN_CONFIG variable,
    which the monitor's python-can reads too).
    """

    def __init__(self, bus: str, dbc: str, *args: str, port: int) -> None:
        import os
        from pathlib import Path

        repo = Path(__file__).resolve().parents[2]
        self.args = [sys.executable, "-m", "tests.car.can_peer", "--bus", bus, "--dbc", dbc, *args]
        self.env = dict(os.environ, CAN_CONFIG=f'{{"port": {port}}}',
                        PYTHONPATH=str(repo) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.cwd = repo
        self.proc: Any = None

    def start(self, timeout: float = 30.0) -> "CanPeer":
        """Start sending; returns once the bus is open."""
        import subprocess

        self.proc = subprocess.Popen(self.args, cwd=self.cwd, env=self.env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        ready: list[str] = []
        reader = threading.Thread(target=lambda: ready.append(self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout)
        if not ready or ready[0].strip() != "ready":
            self.proc.kill()
            raise AssertionError(f"CAN peer did not start: {ready} {self.proc.stdout.read()}")
        return self

    def stop(self) -> str:
        """SIGTERM, wait; returns what it printed after ``ready`` (``sent N``)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return ""
        proc.terminate()
        out, _ = proc.communicate(timeout=15)
        return out
