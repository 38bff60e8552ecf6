"""The cars' monitors as the pit sees them: online or not, their link health, what they report."""
from __future__ import annotations

from typing import Any

from dashboard.server.changes import Change
from dashboard.server.lifecycle import LifecycleService
from dashboard.server.service import Service, Shared
from dashboard.server.views import presence


class MonitorService(Service):
    """Presence, heartbeats and events of the in-car monitors."""

    def __init__(self, shared: Shared, lifecycle: LifecycleService) -> None:
        super().__init__(shared)
        self.lifecycle = lifecycle

    def set_online(self, session_id: str, online: bool) -> None:
        """The car's monitor connected to (or went away from) the session: logged and told."""
        live = self.cache.get(session_id, fresh=False)
        with live.lock:
            if bool(live.monitor.get("online")) == online:
                return
            live.monitor["online"] = online
            health = dict(live.monitor)
        self.events.log(live.id, "monitor.online" if online else "monitor.offline", {})
        self.bus.tell(Change.MONITOR, presence(live.id, health))

    def heartbeat(self, session_id: str, info: dict[str, Any]) -> None:
        """The monitor's heartbeat: the session is alive, and its link health is kept and told."""
        live = self.cache.get(session_id, fresh=False)
        with live.lock:
            self.lifecycle.touch(live)
            live.monitor.update({k: v for k, v in info.items() if v is not None})
            health = dict(live.monitor)
        self.bus.tell(Change.MONITOR, presence(live.id, health))

    def car_event(self, session_id: str, record_id: str, event_type: str, payload: dict[str, Any]) -> bool:
        """Something the car noticed (a trouble code...); False (nothing logged) if its record_id was seen."""
        live = self.cache.get(session_id, fresh=False)
        return self.events.record(live.id, record_id, event_type, payload)
