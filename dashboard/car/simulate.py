"""The simulated car: a real recorded GPS log replayed through the real monitor pipeline.

GPS channels come from the log as recorded; rpm, gear, throttle, engine load,
coolant and fuel are derived from its speed and acceleration by the pure
EngineModel. Frames go through the same assembler, outbox and uplink as a
real car's, so `dashboard simulate` shows the whole system working without
a car. Frame times keep the recording's own time base, shifted to now
(``replay.ReplayTimeline``: the first pass ends now, later passes follow it),
so laps last what they lasted on the track at any ``speedup``; above 1× the
frames of later passes run ahead of the wall clock, at most
``replay.MAX_AHEAD_S`` (the replay slows to real pace there).

The simulated car takes the pit's messages as a car does (its inbox in its outbox) and, with
``display``, serves the driver display timed on the bundled log's track (Orlando Kart Center), so
the demo shows the whole loop: a message sent from the pit page, seen and answered on the display.
"""
from __future__ import annotations

import logging
import re
import threading
import time
from pathlib import Path
from typing import Any

from dashboard.car.display import DriverDisplay, parse_address
from dashboard.car.messages import CarMessages
from dashboard.car.monitor import ServiceManager, last_position
from dashboard.car.outbox import Outbox
from dashboard.car.replay import BUNDLED_LOG, ReplaySource
from dashboard.car.source import ChannelStore
from dashboard.car.timing import CarTiming
from dashboard.car.uplink import Uplink
from dashboard.telemetry.engine_model import EngineModel
from dashboard.telemetry.gps import GpsReading
from dashboard.telemetry.laps import ORLANDO_KART_CENTER

log = logging.getLogger(__name__)

DEFAULT_CAR_ID = "sim-1"
DEFAULT_INSTANCE = Path("instance")
DRAIN_TIMEOUT_S = 30.0  # after a single pass, wait this long for the server to ack the rest
POLL_S = 0.2


def engine_processor(model: EngineModel | None = None) -> Any:
    """A replay processor deriving engine channels from each RMC's speed."""
    model = model or EngineModel()

    def process(reading: GpsReading) -> dict[str, float | None]:
        speed = reading.values.get("gps_speed")
        if reading.sentence != "RMC" or speed is None or reading.time is None:
            return {}
        return dict(model.update(reading.time, speed))

    process.model = model  # type: ignore[attr-defined]
    return process


def default_outbox_path(car_id: str) -> Path:
    """Per-car outbox of the simulator, so seq continues across runs of the same car."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", car_id)
    return DEFAULT_INSTANCE / f"simulate-{safe}.outbox.sqlite"


def build_simulation(
    server_url: str | None,
    car_id: str = DEFAULT_CAR_ID,
    api_key: str | None = None,
    *,
    speedup: float = 1.0,
    log_path: str | Path | None = None,
    loop: bool = True,
    outbox_path: str | Path | None = None,
    rate_hz: float = 10.0,
    session_name: str = "Simulated car",
    heartbeat_s: float = 3.0,
    ca_cert: str | Path | None = None,
    display: str | None = None,
) -> ServiceManager:
    """A ServiceManager fed by the replay source (no uplink when ``server_url`` is None).

    ``display`` ([HOST:]PORT) serves the driver display, its laps timed on the bundled log's track (another
    log has no track here: lap and delta show "--").
    """
    store = ChannelStore()
    outbox = Outbox(outbox_path or default_outbox_path(car_id))
    messages = CarMessages(outbox)
    uplink = None
    if server_url:
        uplink = Uplink(server_url, car_id, outbox, api_key=api_key, session_name=session_name,
                        heartbeat_s=heartbeat_s, ca_cert=ca_cert, messages=messages)
        messages.on_change = uplink.wake
    model = EngineModel()
    replay = ReplaySource(store, log_path or BUNDLED_LOG, speedup=speedup, loop=loop,
                          processors=[engine_processor(model)], on_loop=model.reset_motion)
    timing = None
    if display:
        timing = CarTiming(ORLANDO_KART_CENTER if log_path is None or Path(log_path) == BUNDLED_LOG else None)
    manager = ServiceManager([replay], store, outbox, uplink, rate_hz=rate_hz, clock=replay.clock, inbox=messages,
                             timing=timing)
    if display and timing is not None:
        host, port = parse_address(display)
        manager.display = DriverDisplay(host, port, messages, timing.snapshot, manager.links)
    if uplink is not None:
        uplink.sources_status = manager.source_status
    messages.position = lambda: last_position(manager)
    return manager


def run_simulation(
    server_url: str,
    car_id: str = DEFAULT_CAR_ID,
    api_key: str | None = None,
    speedup: float = 1.0,
    log_path: str | Path | None = None,
    stop_event: threading.Event | None = None,
    loop: bool = True,
    *,
    outbox_path: str | Path | None = None,
    rate_hz: float = 10.0,
    session_name: str = "Simulated car",
    ready: threading.Event | None = None,
    ca_cert: str | Path | None = None,
    display: str | None = None,
) -> dict[str, Any]:
    """Replay a log as a car feeding ``server_url`` until stopped (or, with loop=False, until sent).

    Returns a summary: session_id, frames made, frames still in the outbox.
    """
    stop_event = stop_event or threading.Event()
    manager = build_simulation(server_url, car_id, api_key, speedup=speedup, log_path=log_path, loop=loop,
                               outbox_path=outbox_path, rate_hz=rate_hz, session_name=session_name,
                               ca_cert=ca_cert, display=display)
    replay = manager.sources[0]
    assert isinstance(replay, ReplaySource)
    log.info("simulating car %s from %s at %.1fx", car_id, replay.path.name, speedup)
    runner = threading.Thread(target=manager.run, args=(stop_event,), name="simulation", daemon=True)
    runner.start()
    try:
        if ready is not None:
            while not stop_event.is_set() and not (manager.uplink and manager.uplink.session_id):
                stop_event.wait(POLL_S)
            ready.set()
        while not stop_event.is_set() and runner.is_alive():
            if not loop and replay.finished:
                manager.assembler.stop()
                deadline = time.monotonic() + DRAIN_TIMEOUT_S
                while manager.outbox.count() and time.monotonic() < deadline and not stop_event.is_set():
                    stop_event.wait(POLL_S)
                break
            stop_event.wait(POLL_S)
    except KeyboardInterrupt:
        pass
    finally:
        stop_event.set()
        runner.join()
        summary = {
            "session_id": manager.uplink.session_id if manager.uplink else None,
            "frames": manager.assembler.frames,
            "backlog": manager.outbox.count(),
            "last_seq": manager.outbox.last_seq,
        }
        manager.outbox.close()
    return summary
