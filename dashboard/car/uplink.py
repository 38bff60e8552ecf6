"""The uplink: drains the outbox to the server's ``/monitor`` namespace, store-and-forward.

One thread owns the server link (``link.ServerLink``, a python-socketio
client) and does every emit (so emits never interleave), following the
plan's protocol:

1. connect with ``auth={"car_id", "api_key"}`` (websocket transport);
2. ``session.start {record_id}``: the record_id is persisted in the outbox, so
   a reconnect or a monitor restart resumes the same session;
3. ``telemetry {session_id, frames}`` with ``call()`` and a timeout; on the ack
   the whole batch leaves the outbox (rejected frames too: they are logged,
   a resend would be rejected again);
4. ``heartbeat {session_id, backlog, rtt_ms, sources}`` every few seconds;
5. queued session events (trouble codes, outbox overflow) as ``event``.

Live first: frames made after the (re)connect are sent before the backlog,
so the crew sees the car at once; the backlog drains oldest first behind them
at ``backlog_fps`` at most. Reconnection is our own loop (capped exponential
backoff with jitter) rather than python-socketio's, because that one does not
retry a refused or failed first connect; the client never buffers while
disconnected: the outbox is the buffer.

The server's session lifecycle is obeyed wherever the car learns of it: a
``command`` event, the status in the ``session.start`` answer, or the
``session_status`` of a ``telemetry`` ack. Stopped: *paused*, attached to the
session, no frames sent (they wait in the outbox), heartbeats and events go
on, until a ``start``. Ended: no new session until a ``start`` names one; the
frames still waiting are offered to the ended session (the server decides
whether it takes them). Expired (the server timed it out): a fresh session.
Each change is also put on ``commands`` so the ServiceManager stops or
resumes collecting. Answers that are not refusals of the data:
``unavailable`` (the same call again after ``retry_after``, same
connection), ``too_large`` (smaller batches for this connection) and
``seq_conflict`` (the outbox renumbered from the server's ``next_seq``).
"""
from __future__ import annotations

import enum
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import socketio

from dashboard.car.backoff import Backoff
from dashboard.car.link import ACK_TIMEOUT_S, ClientFactory, ServerError, ServerLink
from dashboard.car.messages import REPORT_EVENT, CarMessages
from dashboard.car.outbox import Outbox
from dashboard.car.worker import Worker

log = logging.getLogger(__name__)

LIVE_SPAN_S = 600.0  # live frames older than the newest by more than this are sent as backfill

BATCH_MAX = 200  # frames per telemetry emit: 20 s of data at 10 Hz, ~40 KB of JSON
HEARTBEAT_S = 3.0  # the dashboard shows link health this fresh
BACKLOG_FPS = 1000.0  # backlog drain cap (frames/s): an hour's outage refills in ~36 s without starving live
EVENT_RETRY_S = 30.0  # an event the server refused or did not ack is tried again after this
IDLE_WAIT_S = 0.5  # longest sleep when nothing is pending (a new frame wakes us at once)
RECONNECT_MIN_S = 0.5  # first reconnect attempt
RECONNECT_MAX_S = 8.0  # reconnect attempts never further apart than this


class LinkState(str, enum.Enum):
    """Connection state of the uplink."""

    STOPPED = "stopped"
    CONNECTING = "connecting"
    CONNECTED = "connected"  # connected and attached to a session
    DISCONNECTED = "disconnected"


@dataclass(frozen=True)
class Command:
    """A server ``command`` event: start/stop/end for a session."""

    action: str
    session_id: str


class Uplink(Worker):
    """Store-and-forward link to the server; start()/stop() safe to call twice."""

    def __init__(
        self,
        server_url: str,
        car_id: str,
        outbox: Outbox,
        *,
        api_key: str | None = None,
        session_name: str = "",
        track: str | None = None,
        track_id: str | None = None,
        batch_max: int = BATCH_MAX,
        ack_timeout_s: float = ACK_TIMEOUT_S,
        heartbeat_s: float = HEARTBEAT_S,
        backlog_fps: float = BACKLOG_FPS,
        sources_status: Callable[[], dict[str, str]] | None = None,
        client_factory: ClientFactory | None = None,
        ca_cert: str | Path | None = None,
        messages: CarMessages | None = None,
    ) -> None:
        super().__init__("uplink")
        self.messages = messages  # pit-to-car messages: held in the car's inbox, acked, reports sent as events
        self.server_url = server_url
        self.car_id = car_id
        self.api_key = api_key
        self.outbox = outbox
        self.session_name = session_name
        self.track = track
        self.track_id = track_id
        self.track_refused = False  # the server knew no such track: sessions start untimed (logged once)
        self.batch_max = batch_max
        self.ack_timeout_s = ack_timeout_s
        self.heartbeat_s = heartbeat_s
        self.backlog_fps = backlog_fps
        self.sources_status = sources_status or dict
        self.link = ServerLink(server_url, client_factory=client_factory, ack_timeout=ack_timeout_s,
                               handlers={"command": self._on_command, "disconnect": self._on_disconnect,
                                         "message": self._on_message},
                               ca_cert=ca_cert)
        self.commands: queue.Queue[Command] = queue.Queue()  # for the ServiceManager
        self._inbox: queue.Queue[Command] = queue.Queue()
        self.state = LinkState.STOPPED
        self.session_id: str | None = outbox.get_meta("uplink.session_id")
        self.session: dict[str, Any] | None = None
        self.rtt_ms: float | None = None
        self.last_error: str | None = None
        self.sent_frames = 0
        self.acked_batches = 0
        self.rejected_frames = 0
        self.connects = 0
        self.want_session = True  # false after an `end` command until a `start`
        self.paused = False  # the session is stopped: no frames until a `start`
        self.unavailable_waits = 0  # calls the server answered "unavailable" (retried after its retry_after)
        self._batch_size = batch_max  # smaller after a too_large answer, until the next connect
        self._wake = threading.Event()
        self._live_from = 0
        self._next_backlog = 0.0
        self._next_heartbeat = 0.0
        self._next_event = 0.0
        self._reported_dropped = int(outbox.get_meta("uplink.reported_dropped") or 0)

    # ------------------------------------------------------------- lifecycle
    def stop(self, timeout: float | None = ACK_TIMEOUT_S + 5.0) -> None:
        """Disconnect and stop; frames not yet acked stay in the outbox. No-op when stopped."""
        super().stop(timeout)

    def _stopping(self) -> None:
        self._wake.set()

    def _stopped(self) -> None:
        self._disconnect()
        self.state = LinkState.STOPPED

    def wake(self, _seq: int | None = None) -> None:
        """A new frame is in the outbox: send it now (the assembler's on_frame)."""
        self._wake.set()

    def queue_event(self, event_type: str, payload: dict[str, Any]) -> str:
        """Queue a session event durably; it is sent when connected. Returns its record_id."""
        record_id = self.outbox.add_event(event_type, payload)
        self._next_event = 0.0
        self._wake.set()
        return record_id

    def health(self) -> dict[str, Any]:
        """Link health: state, session, rtt, backlog and the age of the oldest unsent frame."""
        oldest = self.outbox.oldest_t()
        return {
            "state": self.state.value,
            "session_id": self.session_id,
            "rtt_ms": self.rtt_ms,
            "backlog": self.outbox.count(),
            "oldest_age_s": None if oldest is None else max(0.0, round(time.time() - oldest, 3)),
            "last_error": self.last_error,
            "paused": self.paused,
        }

    # ------------------------------------------------------------ main loop
    def _run(self) -> None:
        backoff = Backoff(RECONNECT_MIN_S, RECONNECT_MAX_S)
        while not self._stop.is_set():
            if self.state is not LinkState.CONNECTED:
                try:
                    self._connect()
                    backoff.reset()
                except _Stopping:
                    break
                except Exception as exc:  # noqa: BLE001 - any connect/session failure: back off, retry
                    self._fail(f"connect: {exc}")
                    self._stop.wait(backoff.next())
                    continue
            try:
                busy = self._pump()
            except _Stopping:
                break
            except Exception as exc:  # noqa: BLE001 - timeout, dropped link: reconnect; the outbox keeps all
                self._fail(str(exc) or type(exc).__name__)
                self._stop.wait(backoff.next())
                continue
            if not busy:
                self._wake.wait(IDLE_WAIT_S)
                self._wake.clear()

    def _fail(self, reason: str) -> None:
        if self.last_error != reason:
            log.warning("uplink for car %s: %s", self.car_id, reason)
        self.last_error = reason
        self._disconnect()
        self.state = LinkState.DISCONNECTED

    def _connect(self) -> None:
        self.state = LinkState.CONNECTING
        self.link.connect({"car_id": self.car_id, "api_key": self.api_key})
        self.connects += 1
        self._live_from = self.outbox.last_seq  # frames above this were made while connected: live
        self._batch_size = self.batch_max  # a too_large answer counts for one connection
        if self.want_session:
            self._start_session()
        self.state = LinkState.CONNECTED
        self.last_error = None
        self._next_heartbeat = 0.0
        self._next_event = 0.0
        log.info("uplink for car %s connected, session %s%s, backlog %d", self.car_id, self.session_id,
                 " (paused)" if self.paused else "", self.outbox.count())

    def _disconnect(self) -> None:
        self.link.close()

    def _on_disconnect(self, *_args: Any) -> None:
        if self.state is LinkState.CONNECTED:
            self.state = LinkState.DISCONNECTED
            self._wake.set()

    def _on_command(self, data: Any = None) -> None:
        if not isinstance(data, dict) or data.get("action") not in ("start", "stop", "end"):
            log.warning("uplink: ignored malformed command")
            return
        command = Command(str(data["action"]), str(data.get("session_id") or ""))
        log.info("command %s for session %s", command.action, command.session_id)
        self._inbox.put(command)  # applied by the uplink thread, so session state has one writer
        self.commands.put(command)
        self._wake.set()

    def _on_message(self, data: Any = None) -> dict[str, Any]:
        """A pit-to-car message: held in the inbox (saved) before the ack, which the server takes as delivered."""
        if self.messages is None:
            return {"ok": False, "error": {"code": "unavailable", "message": "this monitor has no inbox"}}
        return self.messages.receive(data)

    def _apply_commands(self) -> None:
        while True:
            try:
                command = self._inbox.get_nowait()
            except queue.Empty:
                return
            self._apply(command)

    def _apply(self, command: Command) -> None:
        """What a start/stop/end means for the uplink (the ServiceManager gets the same command)."""
        if command.action == "stop" and command.session_id == self.session_id:
            self.paused = True  # frames wait in the outbox for the start; heartbeats and events go on
        elif command.action == "end" and command.session_id == self.session_id:
            self.want_session = False
            self.paused = False  # the waiting frames are offered to the ended session, not carried to the next
        elif command.action == "start":
            self.want_session = True
            self.paused = False
            if command.session_id and command.session_id != self.session_id:
                self._adopt(None, command.session_id, new_record=True)  # attach to it now

    def _obey(self, action: str, session_id: str) -> None:
        """The server's answer said what a command would have: act on it, and tell the ServiceManager."""
        command = Command(action, session_id)
        self._apply(command)
        self.commands.put(command)

    # ------------------------------------------------------------- protocol
    def _call(self, event: str, data: dict[str, Any]) -> dict[str, Any]:
        """One call, made again after the server's retry_after for as long as it answers "unavailable"."""
        waits = 0
        while True:
            try:
                return self.link.call(event, data, timeout=self.ack_timeout_s)
            except ServerError as exc:
                delay = exc.retry_after
                if delay is None:
                    raise
                if waits == 0:
                    log.warning("server unavailable for %s of car %s (%s); same call again in %.1f s",
                                event, self.car_id, exc.error.get("message"), delay)
            waits += 1
            self.unavailable_waits += 1
            if self._stop.wait(delay):
                raise _Stopping()

    def _start_session(self) -> None:
        record_id = self.outbox.get_meta("uplink.record_id")
        if record_id is None:
            record_id = uuid.uuid4().hex
            self.outbox.set_meta("uplink.record_id", record_id)
        body: dict[str, Any] = {"record_id": record_id, "name": self.session_name}
        if self.session_id:
            body["session_id"] = self.session_id
        try:
            session = self._session_start(body)
        except ServerError as exc:
            if exc.error.get("field") in ("session_id", "record_id", "status"):
                # the remembered session is gone, refused (field status) or another car's: start afresh
                session = self._start_fresh_session()
            else:
                raise
        if session.get("status") == "expired":  # the server timed it out while we were away: not the pit's call
            log.info("session %s of car %s expired; starting a new one", session.get("session_id"), self.car_id)
            session = self._start_fresh_session()
        self._adopt(session, session["session_id"])
        last_seq = (session.get("stats") or {}).get("last_seq")
        if isinstance(last_seq, int) and last_seq > self.outbox.last_seq:
            log.warning("server holds seq %d above the outbox's %d (outbox lost?): seq jumps", last_seq,
                        self.outbox.last_seq)
            self.outbox.bump_seq(last_seq)
        status = session.get("status")
        if status == "stopped":
            if not self.paused:
                log.info("session %s of car %s was stopped by the pit: paused until it starts it",
                         self.session_id, self.car_id)
            self._obey("stop", session["session_id"])
        elif status == "ended":
            log.info("session %s of car %s was ended by the pit: waiting for a start", self.session_id, self.car_id)
            self._obey("end", session["session_id"])
        elif self.paused:  # active again: the start command came while we were away
            log.info("session %s of car %s is active again: resuming", self.session_id, self.car_id)
            self._obey("start", session["session_id"])

    def _start_fresh_session(self) -> dict[str, Any]:
        self._adopt(None, None, new_record=True)
        return self._session_start({"record_id": self.outbox.get_meta("uplink.record_id"), "name": self.session_name})

    def _session_start(self, body: dict[str, Any]) -> dict[str, Any]:
        """``session.start`` with the car's track, by id or name; the session answered.

        A track the server does not know is logged once and the session started untimed: the car's data
        matter more than its lap times, and the pit can set the track afterwards (every lap is then timed
        from the stored frames). Refusing would leave the car without a session until its settings change.
        """
        track = {} if self.track_refused else {k: v for k, v in (("track", self.track), ("track_id", self.track_id))
                                                if v}
        try:
            return self._call("session.start", {**body, **track})["session"]
        except ServerError as exc:
            if not track or exc.error.get("field") not in ("track", "track_id"):
                raise
            reason = exc.error.get("message")
        self.track_refused = True
        log.error("car %s: the server refused its track (%s); its sessions start untimed until the monitor is "
                  "restarted with a known track or track_id. The pit can set the track on the session (its laps are "
                  "then timed from the stored frames)", self.car_id, reason)
        return self._call("session.start", body)["session"]

    def _adopt(self, session: dict[str, Any] | None, session_id: str | None, new_record: bool = False) -> None:
        if new_record:
            self.outbox.set_meta("uplink.record_id", uuid.uuid4().hex)
        self.session = session
        self.session_id = session_id
        self.outbox.set_meta("uplink.session_id", session_id)

    def _pump(self) -> bool:
        """One round of sending; True when something was sent (call again at once)."""
        if not self.link.connected:
            raise ConnectionError("link lost")
        self._apply_commands()
        if self.session is None or self.session.get("session_id") != self.session_id:
            if not self.want_session:
                return False
            self._start_session()
        busy = False
        now = time.monotonic()
        if not self.paused:
            busy = self._send_frames(now)
            if self.session is None:
                return True  # it expired: a fresh session first
        if now >= self._next_event:
            self._send_events()
        if now >= self._next_heartbeat:
            self._heartbeat()
            self._next_heartbeat = now + self.heartbeat_s
        return busy

    def _send_frames(self, now: float) -> bool:
        """Live frames, then (at most ``backlog_fps``) the backlog; True when something was sent."""
        live_from = max(self._live_from, self.outbox.restamped_through)  # frames dated late are backlog, not live
        live = self.outbox.after(live_from, self._batch_size)
        if live:
            # frames made before a pause (a session the pit stopped, then started again hours later) are late:
            # sent as live, a server refuses them past its max_clock_behind_s (clock_behind) and they would be lost
            newest = live[-1]["t"]
            late = [f for f in live if f["t"] < newest - LIVE_SPAN_S]
            if late:
                if not self._send(late, backfill=True):
                    return True
                live = [f for f in live if f["t"] >= newest - LIVE_SPAN_S]
            if live and not self._send(live):
                return True
        if now >= self._next_backlog:
            backlog = self.outbox.oldest(self._batch_size, upto=live_from)
            if backlog:
                if not self._send(backlog, backfill=True):
                    return True
                self._next_backlog = now + len(backlog) / self.backlog_fps
                return True
        return bool(live)

    def _send(self, frames: list[dict[str, Any]], backfill: bool = False) -> bool:
        """Send ``frames`` in batches; False when the round must stop (the session changed, seqs renumbered)."""
        while frames:
            batch = frames[:self._batch_size]
            body: dict[str, Any] = {"session_id": self.session_id, "frames": batch}
            if backfill:
                body["backfill"] = True
            started = time.monotonic()
            try:
                ack = self._call("telemetry", body)
            except ServerError as exc:
                if exc.code == "too_large" and len(batch) > 1:
                    self._shrink_batches(exc.error.get("max_frames"), len(batch))
                    continue
                next_seq = exc.error.get("next_seq")
                if exc.code == "seq_conflict" and type(next_seq) is int and next_seq >= 0:
                    self._renumber(next_seq)
                    return False
                raise
            self.rtt_ms = round((time.monotonic() - started) * 1000.0, 1)
            rejected = ack.get("rejected") or []
            if rejected:
                self.rejected_frames += len(rejected)
                log.warning("server rejected %d frames of car %s in session %s (first: %s)", len(rejected),
                            self.car_id, self.session_id, rejected[0])
            self.outbox.delete(f["seq"] for f in batch)
            if log.isEnabledFor(logging.DEBUG):  # read by the power-cut test: every acked seq must be on the server
                log.debug("acked seq %s", ",".join(str(f["seq"]) for f in batch))
            self.sent_frames += len(batch)
            self.acked_batches += 1
            frames = frames[len(batch):]
            status = ack.get("session_status")
            if status not in (None, "active"):
                self._session_not_active(str(status))
                return False
        return True

    def _shrink_batches(self, max_frames: Any, sent: int) -> None:
        """too_large: at most ``max_frames`` per batch (half of ``sent`` when not given) on this connection."""
        wanted = max_frames if type(max_frames) is int and max_frames >= 1 else sent // 2
        self._batch_size = max(1, min(wanted, sent - 1))
        log.warning("server refused %d frames in one batch from car %s: %d per batch on this connection",
                    sent, self.car_id, self._batch_size)

    def _renumber(self, next_seq: int) -> None:
        """seq_conflict: the server stores some of these seqs with other content; nothing of the batch was stored."""
        count = self.outbox.renumber(next_seq)
        self._live_from = self.outbox.last_seq  # all of them are backlog now, sent oldest first
        log.warning("seq conflict for car %s in session %s (reinstalled monitor?): %d waiting frames renumbered "
                    "from %d", self.car_id, self.session_id, count, next_seq)

    def _session_not_active(self, status: str) -> None:
        """A telemetry ack says the session is no longer active: as for the matching command."""
        session_id = self.session_id or ""
        if status == "stopped":
            log.info("session %s of car %s was stopped: paused until it starts", session_id, self.car_id)
            self._obey("stop", session_id)
        elif status == "ended":
            if self.want_session:
                log.info("session %s of car %s was ended: waiting for a start", session_id, self.car_id)
                self._obey("end", session_id)
        elif status == "expired":
            log.info("session %s of car %s expired: starting a new one", session_id, self.car_id)
            self._adopt(None, None, new_record=True)
        else:
            log.warning("unknown session_status %r for session %s of car %s", status, session_id, self.car_id)

    def _heartbeat(self) -> None:
        health = self.health()
        body: dict[str, Any] = {"session_id": self.session_id, "backlog": health["backlog"]}
        for key in ("rtt_ms", "oldest_age_s"):
            if health[key] is not None:
                body[key] = health[key]
        sources = self.sources_status()
        if sources:
            body["sources"] = sources
        self._call("heartbeat", body)

    def _send_events(self) -> None:
        dropped = self.outbox.dropped
        if dropped > self._reported_dropped:
            self.outbox.add_event("outbox.overflow", {"dropped_total": dropped,
                                                      "dropped_new": dropped - self._reported_dropped})
            self._reported_dropped = dropped
            self.outbox.set_meta("uplink.reported_dropped", str(dropped))
        for event in self.outbox.events():
            if event.event_type == REPORT_EVENT:
                if not self._send_report(event.payload):
                    self._next_event = time.monotonic() + EVENT_RETRY_S
                    return
                self.outbox.delete_event(event.record_id)
                continue
            body = {"session_id": self.session_id, "record_id": event.record_id,
                    "event_type": event.event_type, "payload": event.payload}
            try:
                self._call("event", body)
            except (ServerError, socketio.exceptions.TimeoutError) as exc:
                log.warning("event %s not accepted (%s); retry in %.0f s", event.event_type, exc, EVENT_RETRY_S)
                self._next_event = time.monotonic() + EVENT_RETRY_S
                return
            self.outbox.delete_event(event.record_id)

    def _send_report(self, report: dict[str, Any]) -> bool:
        """A driver's seen or answer as ``message.report``; False to try again later (no ack, server unavailable).

        A refusal (the pit cancelled it first, a state the message does not take) is final: logged, not resent.
        """
        body = {**report, "session_id": report.get("session_id") or self.session_id}
        try:
            ack = self._call("message.report", body)
        except socketio.exceptions.TimeoutError:
            return False
        except ServerError as exc:
            if exc.code == "unavailable":
                return False
            log.warning("message %s: %s report refused (%s)", report.get("message_id"), report.get("state"),
                        exc.code)
            return True
        if ack.get("duplicate"):
            log.info("message %s: %s was known to the server", report.get("message_id"), report.get("state"))
        return True


class _Stopping(Exception):
    """stop() was called while the uplink waited for an unavailable server: unwind the thread."""
