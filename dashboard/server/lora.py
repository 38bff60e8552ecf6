"""The server's end of the LoRa link: values a pit gateway heard over the radio, merged into a session.

The session is found by its id prefix (and the car's hash or id); a channel's latest value is
replaced only when the LoRa sample is newer (a higher seq: the car numbers both links' frames); the frame sequence is
never touched. The summary is kept in the event log, and viewers get it with its age.
"""
from __future__ import annotations

from typing import Any

from dashboard.errors import NotFound
from dashboard.server.changes import Change
from dashboard.server.lifecycle import LifecycleService
from dashboard.server.service import Service, Shared
from dashboard.telemetry.frames import parse_frame
from dashboard.telemetry.lora import car_hash as hash_of


class LoraService(Service):
    """Merges summaries relayed by pit gateways."""

    def __init__(self, shared: Shared, lifecycle: LifecycleService) -> None:
        super().__init__(shared)
        self.lifecycle = lifecycle

    def merge(self, car_id: str | None, car_hash: int | None, prefix: str, raw_frame: Any, received_at: float,
              status: dict[str, bool] | None = None) -> dict[str, Any]:
        """Take a frame that came over LoRa; the ``lora`` message viewers get (LoraBroadcast)."""
        frame = parse_frame(raw_frame)
        matches = [row for row in self.store.sessions_by_prefix(prefix)
                   if (car_id is None or row["car_id"] == car_id)
                   and (car_hash is None or row["car_id"] is None or hash_of(row["car_id"]) == car_hash)]
        if len(matches) != 1:
            raise NotFound(f"no single live session matches prefix {prefix}", field="session_prefix")
        live = self.cache.get(matches[0]["id"], fresh=False)
        with live.lock:
            newer = {}
            for name, value in frame.channels.items():
                old = live.latest.get(name)
                if value is not None and (old is None or old[2] is None or frame.seq > old[2]):
                    live.latest[name] = (value, frame.t, frame.seq)
                    newer[name] = value
            live.lora_at = self.clock()
            if live.status == "active":
                self.lifecycle.touch(live)
        payload = {"seq": frame.seq, "t": frame.t, "channels": frame.channels, "received_at": received_at,
                   "status": status, "updated": sorted(newer)}
        self.events.log(live.id, "lora.frame", payload)
        out = {"session_id": live.id, "link": "lora",
               "frame": {"seq": frame.seq, "t": frame.t, "channels": frame.channels},
               "received_at": received_at, "age_s": round(max(0.0, self.clock() - frame.t), 3), "status": status}
        self.bus.tell(Change.LORA, out)
        return out
