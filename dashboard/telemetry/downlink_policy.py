"""When the pit gateway transmits a downlink packet: repeats, their limit, and each car's airtime budget. Pure.

The server hands the gateway a message (or its close) while the car's main link is down or stale
(``dashboard/server/messages.py``); the gateway asks this policy what to put on the air and when
(``dashboard/car/mesh_gateway.py``, ``DownlinkSender``). No clock is read: every time is passed in.

The rules
    - A message goes out at once, then again every ``REPEAT_S`` (30 s) until the car's report
      (delivered, seen or answered) arrives over either link (``reported``: the gateway heard it
      over LoRa, or the server says the message moved on), at most ``MAX_SENDS`` (4) times in all:
      about 1.5 minutes of trying, 3.5 s of airtime for the longest message.
    - A close (cancelled, expired, closed) stops the message's repeats and goes out ``CLOSE_SENDS``
      (2) times, ``REPEAT_S`` apart: the car does not answer a close, so it is sent twice blind.
    - Per car, the downlink's airtime over the last hour stays under ``BUDGET_SHARE`` (1%, 36 s):
      a packet that would pass it waits (it is sent when older transmissions leave the window).
      The uplink summary takes 3.4% of the hour per car (``dashboard/car/mesh.py``); the downlink's
      share is under a third of it, so five cars' downlinks at their cap keep the gateway's radio
      under the 5% the firmware allows routine traffic. 36 s is ten messages at their four sends.
    - A message reported, closed or sent its ``MAX_SENDS`` times is remembered (the last
      ``MEMORY`` of them): the server handing it again changes nothing.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Union

from dashboard.telemetry import downlink
from dashboard.telemetry.lora import MESH_OVERHEAD_BYTES, airtime_s

REPEAT_S = 30.0  # a message with no report yet goes out again this long after its last transmission
MAX_SENDS = 4  # transmissions of one message at most (the first and three repeats)
CLOSE_SENDS = 2  # transmissions of a close (the car does not answer it)
BUDGET_SHARE = 0.01  # of each hour, per car: under a third of the uplink summary's 3.4%
WINDOW_S = 3600.0  # the budget's window
MEMORY = 1024  # finished (car, short id, kind) keys remembered, so a repeated hand-off is not sent again

Outgoing = Union[downlink.DownlinkMessage, downlink.DownlinkClose]
Key = tuple[int, int, str]  # (car hash, short id, "message" | "close")


def packet_airtime_s(packet: downlink.Packet) -> float:
    """Seconds on air of one packet on LongFast, Meshtastic's header included."""
    return airtime_s(len(downlink.encode(packet)) + MESH_OVERHEAD_BYTES)


def key_of(packet: Outgoing) -> Key:
    """The packet's key: its car, its message and its kind."""
    kind = "message" if isinstance(packet, downlink.DownlinkMessage) else "close"
    return packet.car_hash, packet.short_id, kind


@dataclass
class _Pending:
    packet: Outgoing
    airtime_s: float
    limit: int
    offered_t: float
    sends: int = 0
    last_t: float | None = None


class DownlinkPolicy:
    """Which downlink packets are due now, within each car's repeats and airtime budget."""

    def __init__(self, *, repeat_s: float = REPEAT_S, max_sends: int = MAX_SENDS, close_sends: int = CLOSE_SENDS,
                 share: float = BUDGET_SHARE, window_s: float = WINDOW_S) -> None:
        if repeat_s <= 0 or max_sends < 1 or close_sends < 1 or not 0 < share <= 1 or window_s <= 0:
            raise ValueError("repeat_s, window_s and share must be positive, share at most 1, sends at least 1")
        self.repeat_s = repeat_s
        self.max_sends = max_sends
        self.close_sends = close_sends
        self.budget_s = share * window_s
        self.window_s = window_s
        self._pending: dict[Key, _Pending] = {}
        self._finished: collections.OrderedDict[Key, str] = collections.OrderedDict()  # key -> why
        self._aired: dict[int, collections.deque[tuple[float, float]]] = {}  # car hash -> (t, airtime s)

    # ------------------------------------------------------------ what the server hands down
    def offer(self, packet: Outgoing, now: float) -> bool:
        """Take a packet to transmit; False when it is pending already or was finished (a repeated hand-off).

        A close also stops its message's repeats.
        """
        key = key_of(packet)
        if isinstance(packet, downlink.DownlinkClose):
            self._finish((packet.car_hash, packet.short_id, "message"), "closed")
        if key in self._pending or key in self._finished:
            return False
        limit = self.max_sends if key[2] == "message" else self.close_sends
        self._pending[key] = _Pending(packet, packet_airtime_s(packet), limit, now)
        return True

    def reported(self, car_hash: int, short_id: int) -> bool:
        """The car's report arrived (over either link): the message is not repeated; True if it was pending."""
        return self._finish((car_hash, short_id, "message"), "reported")

    def pending(self) -> list[Outgoing]:
        """Every packet still to transmit (once or again)."""
        return [p.packet for p in self._pending.values()]

    def finished(self, packet: Outgoing) -> str | None:
        """Why the packet is not sent any more (``reported``, ``closed``, ``sent``), or None."""
        return self._finished.get(key_of(packet))

    # ------------------------------------------------------------ what goes on the air
    def due(self, now: float) -> list[Outgoing]:
        """The packets to transmit now, closes first then oldest first, all within their car's budget.

        The caller transmits them and calls ``sent`` for each that went out.
        """
        out: list[Outgoing] = []
        planned: dict[int, float] = {}
        order = sorted(self._pending.items(), key=lambda kv: (kv[0][2] != "close", kv[1].offered_t))
        for key, item in order:
            if item.last_t is not None and now - item.last_t < self.repeat_s:
                continue
            car = key[0]
            used = self.used_s(car, now) + planned.get(car, 0.0)
            if used + item.airtime_s > self.budget_s:
                continue  # waits until older transmissions leave the window
            planned[car] = planned.get(car, 0.0) + item.airtime_s
            out.append(item.packet)
        return out

    def sent(self, packet: Outgoing, now: float) -> None:
        """The packet went on the air at ``now``: counted against its car's budget and its send limit."""
        key = key_of(packet)
        item = self._pending.get(key)
        airtime = item.airtime_s if item is not None else packet_airtime_s(packet)
        self._aired.setdefault(packet.car_hash, collections.deque()).append((now, airtime))
        if item is None:
            return
        item.sends += 1
        item.last_t = now
        if item.sends >= item.limit:
            self._finish(key, "sent")

    def used_s(self, car_hash: int, now: float) -> float:
        """The car's downlink airtime in the window ending at ``now``."""
        aired = self._aired.get(car_hash)
        if not aired:
            return 0.0
        while aired and aired[0][0] <= now - self.window_s:
            aired.popleft()
        return sum(a for _, a in aired)

    def next_due_s(self, now: float) -> float | None:
        """Seconds until a pending packet's next repeat (0 when one is due, None when nothing is pending)."""
        waits = [0.0 if p.last_t is None else max(0.0, p.last_t + self.repeat_s - now) for p in self._pending.values()]
        return min(waits) if waits else None

    def _finish(self, key: Key, why: str) -> bool:
        was_pending = self._pending.pop(key, None) is not None
        if key not in self._finished:
            self._finished[key] = why
            while len(self._finished) > MEMORY:
                self._finished.popitem(last=False)
        return was_pending
