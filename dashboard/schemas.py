"""Pydantic models of every REST body and Socket.IO message: the one source of truth.

The OpenAPI document (``/api/v1/openapi.json``) and the JSON Schemas in
``schemas/`` are generated from these models (``dashboard schemas``); a test
fails when the committed files drift from them.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from dashboard.telemetry.frames import Frame

CarId = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
Text = Annotated[str, StringConstraints(max_length=200)]
RecordId = Annotated[str, StringConstraints(min_length=1, max_length=128)]
SessionStatus = Literal["created", "active", "stopped", "ended", "expired"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------- REST bodies
class SessionCreate(Strict):
    """POST /api/v1/sessions."""

    name: Text = ""
    car_id: CarId
    driver: Text | None = None
    track: Text | None = None
    track_id: str | None = Field(None, description="a stored track: laps are timed on it")


class RecordRequest(Strict):
    """Optional body of start/stop/end/heartbeat: a client id making the call idempotent."""

    record_id: RecordId | None = None


class SetupIn(Strict):
    """POST /api/v1/sessions/{id}/setup, wrapped form. The body may also be the setup object itself (timestamp
    now); a body whose only keys are ``setup`` and, optionally, ``timestamp`` is read as this wrapped form."""

    setup: dict[str, Any]
    timestamp: float | str | None = Field(
        None, description="when the setup took effect: epoch seconds or ISO 8601 with its offset, between 2000 and "
                          "2100 (not milliseconds); default now")


class SessionStats(BaseModel):
    frames: int = 0
    last_seq: int | None = None
    duration_s: float = 0.0
    update_rate_hz: float = 0.0
    laps: int = 0
    best_lap_s: float | None = None
    distance_m: float = 0.0
    max_speed: float | None = None
    max_rpm: float | None = None
    gaps: int = Field(0, description="stretches of more than 1 s without frames")
    gap_s: float = 0.0
    backfilled_frames: int = Field(0, description="frames that arrived late from the monitor's backlog")


class MonitorHealth(BaseModel):
    """The car's monitor as last heard: online, outbox backlog, ack round trip, source status."""

    online: bool = False
    backlog: int | None = None
    rtt_ms: float | None = None
    oldest_age_s: float | None = None
    sources: dict[str, str] | None = None


class SessionOut(BaseModel):
    """A session as the API returns it."""

    session_id: str
    car_id: str | None
    name: str
    driver: str | None
    track: str | None
    status: SessionStatus
    created_at: str
    started_at: str | None
    ended_at: str | None
    last_activity_at: str | None
    end_reason: str | None
    setup: dict[str, Any] | None
    setup_timestamp: str | None
    setup_version: int | None
    telemetry: dict[str, float | None]
    last_update: str | None
    track_id: str | None = None
    monitor_online: bool = False
    monitor: MonitorHealth = Field(default_factory=lambda: MonitorHealth())
    stats: SessionStats


class SessionList(BaseModel):
    items: list[SessionOut]
    total: int
    limit: int
    offset: int


class SetupOut(BaseModel):
    session_id: str
    version: int
    timestamp: str
    received_at: str
    setup: dict[str, Any]


class SetupList(BaseModel):
    items: list[SetupOut]


class ChannelValue(BaseModel):
    value: float | None
    t: float
    age_s: float
    unit: str | None
    stale: bool


class TelemetryOut(BaseModel):
    session_id: str
    last_update: str | None
    channels: dict[str, ChannelValue]


class StoredFrame(BaseModel):
    seq: int
    t: float
    received_at: float
    channels: dict[str, float | None]


class FrameList(BaseModel):
    items: list[StoredFrame]
    next_after_seq: int | None


class EventOut(BaseModel):
    id: int
    session_id: str
    record_id: str | None
    event_type: str
    timestamp: str
    received_at: str
    payload: dict[str, Any]


class EventList(BaseModel):
    items: list[EventOut]


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


class Health(BaseModel):
    ok: bool
    database: bool


Latitude = Annotated[float, Field(ge=-90, le=90, allow_inf_nan=False)]
Longitude = Annotated[float, Field(ge=-180, le=180, allow_inf_nan=False)]
Point = tuple[Latitude, Longitude]
Direction = Literal["auto", "a_left", "a_right"]


class TimingLine(Strict):
    """A sector line: two [lat, lon] points; ``a_left``: driving forwards, A is on the driver's left."""

    a: Point
    b: Point
    direction: Direction = "auto"


class TrackIn(Strict):
    """POST/PUT /api/v1/tracks: a circuit's start/finish line A–B and optional sector lines in driving order."""

    name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    a: Point
    b: Point
    direction: Direction = "auto"
    sectors: list[TimingLine] = Field(default_factory=list, max_length=20)
    min_lap_time_s: float = Field(20.0, gt=0, le=3600, description="shorter laps are not laps (debounce)")
    max_speed_kmh: float = Field(350.0, gt=0, le=1000, description="a fix implying more is a GPS jump")


class TrackOut(TrackIn):
    track_id: str
    created_at: str
    updated_at: str


class TrackList(BaseModel):
    items: list[TrackOut]


class SessionTrack(Strict):
    """PUT /api/v1/sessions/{id}/track: name the session's track (laps are recomputed)."""

    track_id: str | None


class LapList(BaseModel):
    """GET /api/v1/sessions/{id}/laps."""

    items: list[dict[str, Any]]
    best_lap: dict[str, Any] | None
    best_sectors: list[float | None]
    theoretical_best: float | None
    timing: dict[str, Any] | None = Field(None, description="live delta to the best lap (lap.delta payload)")


class AlertOut(BaseModel):
    """An alert of a session: what fired, where (lap, position), cleared, acknowledged by whom."""

    alert_id: int
    session_id: str
    rule_id: str
    name: str
    severity: str
    channel: str
    comparison: str
    threshold: float
    value: float
    raised_t: float
    seq: int
    lap: int | None
    lat: float | None
    lon: float | None
    cleared_t: float | None
    acked_by: str | None
    acked_at: str | None
    active: bool
    on_screen: bool = Field(description="raised and not yet both cleared and acknowledged")


class AlertList(BaseModel):
    items: list[AlertOut]


class AlertAck(Strict):
    """POST /api/v1/sessions/{id}/alerts/{alert_id}/ack: who saw it (a crew role or initials, not a full name)."""

    by: Annotated[str, StringConstraints(min_length=1, max_length=80)]


class AlertRuleBody(BaseModel):
    """PUT /api/v1/alert-rules/{rule_id}[?car_id=]: the rule (see dashboard.telemetry.alerts.AlertRule)."""

    model_config = ConfigDict(extra="allow")


class AlertRuleOut(BaseModel):
    rule: dict[str, Any]
    source: Literal["default", "all", "car", "session"]
    car_id: str | None
    session_id: str | None = None


class AlertRuleList(BaseModel):
    items: list[AlertRuleOut]


class LegacyStart(BaseModel):
    """POST /session_manager/sessions.start (continuity alias)."""

    model_config = ConfigDict(extra="allow")
    car_id: CarId | None = None
    user_id: CarId | None = None
    record_id: RecordId | None = None
    name: Text = ""
    driver: Text | None = None
    track: Text | None = None


class LegacyEnd(Strict):
    session_id: str
    record_id: RecordId | None = None


class LegacyHeartbeat(Strict):
    session_id: str


# ------------------------------------------------------- Socket.IO /monitor
class MonitorAuth(BaseModel):
    """auth of a /monitor connection."""

    car_id: CarId
    api_key: str | None = None


class MonitorSessionStart(Strict):
    """/monitor `session.start`: resume the car's active session or create one."""

    record_id: RecordId | None = None
    session_id: str | None = None
    name: Text = ""
    driver: Text | None = None
    track: Text | None = None


class TelemetryBatch(Strict):
    """/monitor `telemetry`: frames are validated one by one (see Frame)."""

    session_id: str
    frames: list[Any] = Field(description="each item a Frame; bad ones are rejected individually")
    backfill: bool = Field(False, description="these frames come from the monitor's backlog, not live")


class Rejection(BaseModel):
    seq: Any
    error: ErrorDetail


class TelemetryAck(BaseModel):
    """Ack of `telemetry`: every frame of the batch is now durable, or listed in rejected."""

    ok: bool
    acked_seq: int | None
    rejected: list[Rejection]
    error: ErrorDetail | None = None


class MonitorHeartbeat(Strict):
    session_id: str
    backlog: int | None = Field(None, ge=0, description="frames waiting in the monitor's outbox")
    rtt_ms: float | None = Field(None, ge=0, description="monitor's last measured ack round trip")
    sources: dict[str, str] | None = Field(None, description="status of each in-car source")
    oldest_age_s: float | None = Field(None, ge=0, description="age of the oldest frame not yet acknowledged")


class MonitorEvent(Strict):
    """/monitor `event`: something the car noticed (a trouble code set or cleared...), logged once per record_id."""

    session_id: str
    record_id: RecordId
    event_type: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_.]{0,63}$")]
    payload: dict[str, Any] = Field(default_factory=dict)


class MonitorSessionEnd(Strict):
    session_id: str
    record_id: RecordId | None = None


class LoraMessage(BaseModel):
    """/monitor `lora`: a summary a pit gateway received over the Meshtastic radio.

    The radio format is in RACE_DASHBOARD_PLAN.md ("LoRa link").
    """

    model_config = ConfigDict(extra="ignore")
    car_id: CarId | None = None
    car_hash: int | None = Field(None, ge=0, le=0xFFFF)
    session_prefix: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{8}$")]
    frame: dict[str, Any]
    received_at: float = Field(allow_inf_nan=False)
    status: dict[str, bool] | None = None
    radio: dict[str, Any] | None = None


class LoraBroadcast(BaseModel):
    """/dashboard `lora`: the latest values that came over LoRa, with their age when relayed."""

    session_id: str
    link: Literal["lora"] = "lora"
    frame: Frame
    received_at: float
    age_s: float
    status: dict[str, bool] | None = None


class Ack(BaseModel):
    """Generic ack: ok with a payload, or an error."""

    ok: bool
    error: ErrorDetail | None = None
    session: SessionOut | None = None


class Command(BaseModel):
    """Server to monitor: the REST start/stop was called for this car's session."""

    action: Literal["start", "stop", "end"]
    session_id: str


# ----------------------------------------------------- Socket.IO /dashboard
class ViewerAuth(BaseModel):
    token: str | None = None


class Join(Strict):
    session_id: str


class Snapshot(BaseModel):
    session: SessionOut
    setup: SetupOut | None
    telemetry: TelemetryOut
    recent: list[StoredFrame]
    alerts: list[AlertOut] = Field(default_factory=list, description="alerts still on screen")


class JoinAck(BaseModel):
    ok: bool
    snapshot: Snapshot | None = None
    error: ErrorDetail | None = None


class TelemetryBroadcast(BaseModel):
    """/dashboard `telemetry`: frames of the room's session, in seq order, possibly coalesced."""

    session_id: str
    frames: list[Frame]


class MonitorPresence(BaseModel):
    """/dashboard `monitor`: the car's monitor came online or went offline."""

    session_id: str
    online: bool
    backlog: int | None = None
    rtt_ms: float | None = None


SOCKET_MESSAGES: dict[str, type[BaseModel]] = {
    "monitor.auth": MonitorAuth,
    "monitor.session.start": MonitorSessionStart,
    "monitor.telemetry": TelemetryBatch,
    "monitor.telemetry.ack": TelemetryAck,
    "monitor.heartbeat": MonitorHeartbeat,
    "monitor.session.end": MonitorSessionEnd,
    "monitor.event": MonitorEvent,
    "monitor.ack": Ack,
    "monitor.command": Command,
    "monitor.lora": LoraMessage,
    "dashboard.lora": LoraBroadcast,
    "frame": Frame,
    "dashboard.auth": ViewerAuth,
    "dashboard.join": Join,
    "dashboard.join.ack": JoinAck,
    "dashboard.telemetry": TelemetryBroadcast,
    "dashboard.session": SessionOut,
    "dashboard.setup": SetupOut,
    "dashboard.monitor": MonitorPresence,
    "dashboard.event": EventOut,
    "dashboard.alert": AlertOut,
}
