"""The ServiceManager: wires sources → store → assembler → outbox → uplink, and keeps them alive.

Stages are crash-isolated: a source whose thread dies is logged, counted and
restarted with backoff; after ``max_source_failures`` crashes in a row it is
given up (status error) and the others go on. Server ``command`` events are
obeyed: ``stop`` pauses collecting, ``start`` resumes, ``end`` pauses until
the next start. A session status the uplink learns from the server's answers
(stopped or ended while the car was away) reaches us as the same command.
The uplink decides what leaves the outbox meanwhile (nothing while paused).
SIGINT/SIGTERM stop everything cleanly; frames not yet acked stay in the
outbox for the next run.
"""
from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from typing import Any, Callable

from dashboard.car.assembler import FrameAssembler
from dashboard.car.backoff import Backoff
from dashboard.car.clock import GpsClock, system_clock_synced, trusted
from dashboard.car.display import DriverDisplay, parse_address
from dashboard.car.gps_source import GpsSource
from dashboard.car.inbox_control import InboxControl
from dashboard.car.mesh import MeshLink
from dashboard.car.messages import CarMessages
from dashboard.car.obd_source import ObdSource
from dashboard.car.outbox import Outbox
from dashboard.car.settings import MonitorSettings
from dashboard.car.source import BACKOFF_INITIAL_S, BACKOFF_MAX_S, ChannelStore, Source, SourceState
from dashboard.car.timing import CarTiming
from dashboard.car.track_source import FETCH_TIMEOUT_S, TrackFetcher, kept_track, read_track_file, wanted_key
from dashboard.car.uplink import LinkState, Uplink
from dashboard.telemetry import downlink, lora

log = logging.getLogger(__name__)

SUPERVISE_S = 0.5  # how often crashed sources are looked for
HEALTHY_AFTER_S = 60.0  # a source running this long since its last crash has its crash count reset


class ServiceManager:
    """Starts, supervises and stops the monitor's stages; start()/stop() safe to call twice."""

    def __init__(
        self,
        sources: list[Source],
        store: ChannelStore,
        outbox: Outbox,
        uplink: Uplink | None,
        *,
        rate_hz: float = 10.0,
        clock: GpsClock | None = None,
        max_source_failures: int = 5,
        mesh: MeshLink | None = None,
        inbox: CarMessages | None = None,
        inbox_socket: str | None = None,
        timing: CarTiming | None = None,
        display: DriverDisplay | None = None,
        track_fetcher: TrackFetcher | None = None,
    ) -> None:
        self.sources = sources
        # pit-to-car messages: what the driver display shows and answers (manager.inbox.pending/answer)
        self.inbox = inbox if inbox is not None else (uplink.messages if uplink is not None else None)
        self.inbox_control = InboxControl(inbox_socket, self.inbox) if inbox_socket and self.inbox else None
        self.timing = timing  # the car's own lap timing, fed every frame (the driver display's lap and delta)
        self.display = display
        self.track_fetcher = track_fetcher
        self.store = store
        self.outbox = outbox
        self.uplink = uplink
        self.mesh = mesh
        self.max_source_failures = max_source_failures
        self.assembler = FrameAssembler(store, outbox, rate_hz=rate_hz, clock=clock, on_frame=self._on_frame)
        self.collecting = False
        self.given_up: set[str] = set()
        self._failures: dict[str, int] = {s.name: 0 for s in sources}
        self._restart_at: dict[str, float] = {}
        self._backoff: dict[str, Backoff] = {s.name: Backoff(BACKOFF_INITIAL_S, BACKOFF_MAX_S) for s in sources}
        self._started_at: dict[str, float] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._started = False

    def _on_frame(self, seq: int) -> None:
        """A frame is in the outbox: wake the uplink, and hand it to the LoRa link."""
        if self.uplink is not None:
            self.uplink.wake(seq)
        if self.timing is not None:
            for committed in self.assembler.last_committed:  # every frame, in seq order, as the server times them
                self.timing.feed(committed)
        frame = self.assembler.last_frame
        if self.mesh is not None and frame is not None and frame["t"] is not None:  # never a frame without a time
            statuses = self.source_status()
            status = lora.make_status(
                uplink=self.uplink is not None and self.uplink.state is LinkState.CONNECTED,
                backlog=self.outbox.count() > 0, recording=self.collecting,
                obd=statuses.get("obd", "").startswith("reading"), gps=statuses.get("gps", "").startswith("reading"))
            self.mesh.update(self.uplink.session_id if self.uplink else None, frame, status)

    def links(self) -> dict[str, Any]:
        """The links' state for the driver display: the main link (up when attached to a session), the radio."""
        state = self.uplink.state if self.uplink is not None else None
        return {"main": state.value if state is not None else None, "main_up": state is LinkState.CONNECTED,
                "radio": self.mesh.status if self.mesh is not None else None}

    def source_status(self) -> dict[str, str]:
        """Status of every source as text, for heartbeats and the log."""
        out = {}
        for source in self.sources:
            out[source.name] = "error: given up" if source.name in self.given_up else str(source.status)
        return out

    def start(self) -> None:
        """Start the uplink and collecting; no-op when started."""
        with self._lock:
            if self._started:
                return
            self._started = True
            self._stop.clear()
        if self.uplink is not None:
            self.uplink.start()
        if self.inbox_control is not None:
            self.inbox_control.start()
        if self.mesh is not None:
            self.mesh.start()
        if self.track_fetcher is not None:
            self.track_fetcher.start()
        if self.display is not None:
            try:
                self.display.start()
            except OSError as exc:  # the data matter more than the screen: the monitor goes on without it
                log.error("the driver display could not listen on %s:%d (%s); the monitor runs without it",
                          self.display.host, self.display.port, exc.strerror or exc)
        self.start_collecting()

    def start_collecting(self) -> None:
        """Start the sources and the assembler (after a `start` command)."""
        for source in self.sources:
            if source.name not in self.given_up:
                self._start_source(source)
        self.assembler.start()
        self.collecting = True

    def stop_collecting(self) -> None:
        """Stop the assembler and the sources (after a `stop` or `end` command)."""
        self.assembler.stop()
        for source in self.sources:
            self._stop_source(source)
        self.collecting = False

    def stop(self) -> None:
        """Stop everything; the outbox keeps what was not acked. No-op when stopped."""
        with self._lock:
            if not self._started:
                return
            self._started = False
            self._stop.set()
        self.stop_collecting()
        if self.display is not None:
            self.display.stop()
        if self.track_fetcher is not None:
            self.track_fetcher.stop(FETCH_TIMEOUT_S + 1.0)
        if self.inbox_control is not None:
            self.inbox_control.stop()
        if self.mesh is not None:
            self.mesh.stop()
        if self.uplink is not None:
            self.uplink.stop()

    def _start_source(self, source: Source) -> None:
        try:
            source.start()
            self._started_at[source.name] = time.monotonic()
        except Exception:  # isolation: a source that cannot even start is counted like a crash
            log.exception("source %s failed to start", source.name)
            self._failures[source.name] += 1

    def _stop_source(self, source: Source) -> None:
        try:
            source.stop()
        except Exception:
            log.exception("source %s failed to stop", source.name)

    def supervise(self) -> None:
        """Restart crashed sources with backoff; give up after too many crashes in a row."""
        now = time.monotonic()
        if not self.collecting:
            return
        for source in self.sources:
            name = source.name
            if name in self.given_up:
                continue
            if source.running and now - self._started_at.get(name, now) > HEALTHY_AFTER_S:
                self._failures[name] = 0
                self._backoff[name].reset()
            if not source.crashed:
                continue
            if name not in self._restart_at:
                self._failures[name] += 1
                if self._failures[name] >= self.max_source_failures:
                    self.given_up.add(name)
                    log.error("source %s crashed %d times in a row: given up (%s)",
                              name, self._failures[name], source.crash_reason)
                    self._stop_source(source)
                    continue
                self._restart_at[name] = now + self._backoff[name].next()
            elif now >= self._restart_at[name]:
                del self._restart_at[name]
                log.info("restarting source %s", name)
                source.stop()
                self._start_source(source)

    def handle_command(self, action: str) -> None:
        """Obey a server command (or the uplink's word for one): stop and end pause collecting, start resumes."""
        if action == "start" and not self.collecting:
            self.start_collecting()
        elif action in ("stop", "end") and self.collecting:
            self.stop_collecting()

    def run(self, stop_event: threading.Event | None = None) -> None:
        """Start, then supervise and obey commands until ``stop_event`` (or SIGINT/SIGTERM)."""
        stop_event = stop_event or threading.Event()
        restore = _install_signal_handlers(stop_event)
        self.start()
        try:
            while not stop_event.is_set():
                self.supervise()
                if self.uplink is not None:
                    try:
                        command = self.uplink.commands.get(timeout=SUPERVISE_S)
                    except queue.Empty:
                        continue
                    self.handle_command(command.action)
                else:
                    stop_event.wait(SUPERVISE_S)
        finally:
            self.stop()
            restore()


def _install_signal_handlers(stop_event: threading.Event) -> Any:
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum: int, _frame: Any) -> None:
        log.info("signal %d: stopping", signum)
        stop_event.set()

    for sig in previous:
        signal.signal(sig, handler)

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore


def build_monitor(settings: MonitorSettings) -> ServiceManager:
    """A ServiceManager for a real car: OBD, GPS and/or CAN sources from the settings."""
    store = ChannelStore()
    clock = GpsClock(synced=trusted if settings.trust_system_clock else system_clock_synced)
    outbox = Outbox(settings.outbox_path, settings.outbox_max_frames)
    if outbox.moved_aside is not None:  # the crew hears of it in the session's log, not only the car's
        outbox.add_event("outbox.replaced", {"moved_aside": outbox.moved_aside.name})
    if outbox.unstamped_moved:
        outbox.add_event("outbox.unstamped", {"frames": outbox.unstamped_moved})
    messages = CarMessages(outbox)
    uplink = Uplink(
        settings.server_url, settings.car_id, outbox, api_key=settings.api_key, messages=messages,
        session_name=settings.session_name, track=settings.track, track_id=settings.track_id,
        batch_max=settings.batch_max,
        ack_timeout_s=settings.ack_timeout_s, heartbeat_s=settings.heartbeat_s, backlog_fps=settings.backlog_fps,
        ca_cert=settings.ca_cert,
    )
    sources: list[Source] = []
    if settings.obd_port:
        sources.append(ObdSource(
            settings.obd_port, store, commands=settings.obd_commands, protocol=settings.obd_protocol,
            baudrate=settings.obd_baudrate, dtc_interval_s=settings.dtc_interval_s, on_event=uplink.queue_event,
        ))
    if settings.gps_port:
        sources.append(GpsSource(settings.gps_port, store, baudrate=settings.gps_baudrate, clock=clock))
    if settings.can_bus:  # python-can and cantools (the [can] extra) are imported only here
        from dashboard.car.can_decoder import load_decoder
        from dashboard.car.can_source import CanSource

        sources.append(CanSource(settings.can_bus, store, load_decoder(settings.can_dbc, settings.can_map),
                                 bitrate=settings.can_bitrate))
    mesh = MeshLink(settings.mesh_port, settings.car_id, interval_s=settings.mesh_interval_s) \
        if settings.mesh_port else None
    timing, fetcher = _car_timing(settings, outbox, uplink) if settings.display else (None, None)
    if settings.track_file and not settings.display:
        log.info("track_file times laps for the driver display only: not used without display")
    manager = ServiceManager(sources, store, outbox, uplink, rate_hz=settings.rate_hz, clock=clock,
                             max_source_failures=settings.max_source_failures, mesh=mesh,
                             inbox_socket=str(settings.inbox_socket) if settings.inbox_socket else None,
                             timing=timing, track_fetcher=fetcher)
    if settings.display and timing is not None:
        host, port = parse_address(settings.display)
        manager.display = DriverDisplay(host, port, messages, timing.snapshot, manager.links)
    uplink.sources_status = manager.source_status
    messages.on_change = uplink.wake
    messages.position = lambda: last_position(manager)
    if mesh is not None:
        wire_lora_messages(mesh, messages, settings.car_id, main_link_up=lambda: uplink.state is LinkState.CONNECTED,
                           session_of=lambda: uplink.session_id)
    return manager


def wire_lora_messages(mesh: MeshLink, messages: CarMessages, car_id: str, *, main_link_up: Callable[[], bool],
                       session_of: Callable[[], str | None]) -> None:
    """Pit-to-car messages over the radio: what it hears goes to the inbox, the inbox's reports go back over it.

    A message heard over LoRa is answered over LoRa at once (delivered, or the newest state again when the pit
    repeats it); the driver's seen and answered go over LoRa while the main link is down (they are in the outbox
    for the main link as well: the server applies each state once, whichever link brings it first).
    """
    def on_downlink(packet: downlink.Packet) -> None:
        report = messages.from_lora(packet, car_id, session_of())
        if report is not None:
            mesh.send_report(report)

    def on_report(report: dict[str, Any]) -> None:
        if not main_link_up():
            mesh.send_report(report)

    mesh.on_downlink = on_downlink
    messages.on_report = on_report


def _car_timing(settings: MonitorSettings, outbox: Outbox, uplink: Uplink) -> tuple[CarTiming, TrackFetcher | None]:
    """The car's own lap timing and where its track comes from: the track file, else the kept and fetched one."""
    if settings.track_file:
        track = read_track_file(settings.track_file)  # ConfigError: the monitor stops, saying why
        log.info("car timing on track %r (from %s)", track.name, settings.track_file)
        return CarTiming(track), None
    wanted = wanted_key(settings.track, settings.track_id)
    timing = CarTiming(kept_track(outbox, wanted))
    if timing.track is not None:
        log.info("car timing on track %r (kept from the server)", timing.track.name)
    if wanted is None:
        return timing, None
    fetcher = TrackFetcher(timing, outbox, settings.server_url, track=settings.track, track_id=settings.track_id,
                           api_key=settings.api_key, ca_cert=settings.ca_cert,
                           link_up=lambda: uplink.state is LinkState.CONNECTED)
    return timing, fetcher


def last_position(manager: ServiceManager) -> dict[str, Any]:
    """The car's position in its last frame (for a message report), or nothing."""
    frame = manager.assembler.last_frame
    channels = frame.get("channels", {}) if frame else {}
    return {"lat": channels.get("lat"), "lon": channels.get("lon")}


def run_monitor(settings: MonitorSettings, stop_event: threading.Event | None = None) -> None:
    """Run the in-car monitor until stopped."""
    manager = build_monitor(settings)
    if not manager.sources:
        log.warning("no source configured (--obd / --gps / --can): frames will not be made")
    log.info("monitor for car %s: sources %s, outbox %s (%d frames waiting, last seq %d)",
             settings.car_id, [s.name for s in manager.sources] or "none", settings.outbox_path,
             manager.outbox.count(), manager.outbox.last_seq)
    try:
        manager.run(stop_event)
    finally:
        manager.outbox.close()


__all__ = ["ServiceManager", "SourceState", "build_monitor", "run_monitor", "wire_lora_messages"]
