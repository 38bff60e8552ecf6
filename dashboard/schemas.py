"""Pydantic models of every REST body and Socket.IO message: the one source of truth.

The OpenAPI document (``/api/v1/openapi.json``) and the JSON Schemas in
``schemas/`` are generated from these models (``dashboard schemas``); a test
fails when the committed files drift from them.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StringConstraints, create_model

from dashboard.telemetry.alerts import LINK_SILENCE, AlertRule
from dashboard.telemetry.channels import REGISTRY
from dashboard.telemetry.frames import Frame

NO_NUL = r"^[^\x00]*$"  # text a database can store: PostgreSQL refuses the NUL character in text
CarId = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
Text = Annotated[str, StringConstraints(max_length=200, pattern=NO_NUL)]
RecordId = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=NO_NUL)]
SessionId = Annotated[str, StringConstraints(max_length=64, pattern=NO_NUL)]
SessionStatus = Literal["created", "active", "stopped", "ended", "expired"]


class Strict(BaseModel):
    """An input: unknown fields are an error, numbers are finite."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Out(BaseModel):
    """An output: the tests hold every answer to exactly these fields."""

    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------- REST bodies
class SessionCreate(Strict):
    """POST /api/v1/sessions."""

    name: Text = ""
    car_id: CarId
    driver: Text | None = None
    track: Text | None = Field(None, description="free text; when a stored track has this name (case-insensitive), "
                               "laps are timed on it")
    track_id: SessionId | None = Field(None, description="a stored track: laps are timed on it")


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


class SessionStats(Out):
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


class MonitorHealth(Out):
    """The car's monitor as last heard: online, outbox backlog, ack round trip, source status."""

    online: bool = False
    backlog: int | None = None
    rtt_ms: float | None = None
    oldest_age_s: float | None = None
    sources: dict[str, str] | None = None


class SessionOut(Out):
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


class SkippedRow(Out):
    """A bad row of an imported file: its line and why it was skipped."""

    line: int
    reason: str


class ImportOut(Out):
    """What an import made: the session (ended, laps timed), its frames, and the rows skipped."""

    session: SessionOut
    format: str = Field(description="racecapture, racechrono, nmea, gpx or csv")
    frames: int = Field(description="frames stored")
    rows: int = Field(description="data rows (or sentences, track points) read")
    skipped: int = Field(description="bad rows skipped")
    skipped_examples: list[SkippedRow] = Field(description="the first few bad rows")
    laps: int = Field(description="timed laps (out- and in-laps not counted)")
    best_lap_s: float | None
    notes: list[str] = Field(description="columns kept as custom channels or dropped, and why")


class SessionList(Out):
    items: list[SessionOut]
    total: int
    limit: int
    offset: int


class SetupOut(Out):
    session_id: str
    version: int
    timestamp: str
    received_at: str
    setup: dict[str, Any]


class SetupList(Out):
    items: list[SetupOut]


class ChannelValue(Out):
    value: float | None
    t: float
    age_s: float
    unit: str | None
    stale: bool


class TelemetryOut(Out):
    session_id: str
    last_update: str | None
    channels: dict[str, ChannelValue]


class StoredFrame(Out):
    seq: int
    t: float
    received_at: float
    channels: dict[str, float | None]


class FrameList(Out):
    items: list[StoredFrame]
    next_after_seq: int | None


class EventOut(Out):
    id: int
    session_id: str
    record_id: str | None
    event_type: str
    timestamp: str
    received_at: str
    payload: dict[str, Any]


class EventList(Out):
    items: list[EventOut]


class ErrorDetail(Out):
    """What went wrong: a stable code, a message, the field to blame, and what the client can act on."""

    code: str
    message: str
    field: str | None = None
    session_id: str | None = Field(None, description="conflict: the car's active session")
    sessions: list[str] | None = Field(None, description="conflict: the sessions using a track")
    status: SessionStatus | None = Field(None, description="the session's status, when it is what refused the call")
    next_seq: int | None = Field(None, description="seq_conflict: where the monitor's numbering must continue")
    retry_after: float | None = Field(None, description="unavailable: seconds to wait before sending again")
    max_frames: int | None = Field(None, description="too_large: most frames accepted in one batch")
    line: int | None = Field(None, description="bad_file: the line of the imported file to blame")


class ErrorBody(Out):
    error: ErrorDetail


class Health(Out):
    """GET /healthz: 200 when the database takes a write through the single writer in time, else 503."""

    ok: bool
    database: bool = Field(description="a write was committed within 2 s")
    writer_backlog: int = Field(description="writes waiting for the single writer")
    write_ms: float = Field(description="how long the check's write took")


Latitude = Annotated[float, Field(ge=-90, le=90, allow_inf_nan=False)]
Longitude = Annotated[float, Field(ge=-180, le=180, allow_inf_nan=False)]
Point = tuple[Latitude, Longitude]
Direction = Literal["auto", "a_left", "a_right"]


DISTINCT = "B must differ from A: a line of zero length is never crossed (422 naming b)"


class TimingLine(Strict):
    """A sector line: two [lat, lon] points; ``a_left``: driving forwards, A is on the driver's left."""

    a: Point
    b: Point = Field(description=DISTINCT)
    direction: Direction = "auto"


class PitLaneIn(Strict):
    """A track's pit lane: a line across its entry and one across its exit, each crossed forwards into and out of
    the lane (pit stops, in-laps and out-laps are found from them: dashboard/telemetry/pitlane.py)."""

    pit_in: TimingLine
    pit_out: TimingLine


class TrackIn(Strict):
    """POST/PUT /api/v1/tracks: a circuit's start/finish line A–B and optional sector lines in driving order."""

    name: Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=NO_NUL)]
    a: Point
    b: Point = Field(description=DISTINCT)
    direction: Direction = "auto"
    sectors: list[TimingLine] = Field(default_factory=list, max_length=20)
    min_lap_time_s: float = Field(20.0, gt=0, le=3600, description="shorter laps are not laps (debounce)")
    max_speed_kmh: float = Field(350.0, gt=0, le=1000, description="a fix implying more is a GPS jump")
    pit_lane: PitLaneIn | None = Field(None, description="pit-in and pit-out lines; none: a stop is a long standstill")

    def zero_length_line(self) -> str | None:
        """The field of a line whose B is its A (JSON Schema cannot say that two values differ), or None."""
        if tuple(self.a) == tuple(self.b):
            return "b"
        for i, sector in enumerate(self.sectors):
            if tuple(sector.a) == tuple(sector.b):
                return f"sectors.{i}.b"
        if self.pit_lane is not None:
            for name in ("pit_in", "pit_out"):
                line = getattr(self.pit_lane, name)
                if tuple(line.a) == tuple(line.b):
                    return f"pit_lane.{name}.b"
        return None


class TrackOut(TrackIn):
    model_config = ConfigDict(extra="forbid")
    track_id: str
    created_at: str
    updated_at: str


class TrackList(Out):
    items: list[TrackOut]


class SessionTrack(Strict):
    """PUT /api/v1/sessions/{id}/track: name the session's track (laps are recomputed)."""

    track_id: SessionId | None


class LapOut(Out):
    """A lap as timed: line to line, or the out-lap (lap 0) or in-lap of a session."""

    lap: int
    start_t: float
    end_t: float
    lap_time: float
    sectors: list[float | None] = Field(description="one per sector; null where a sector line was missed")
    is_best: bool = Field(description="the best so far when it completed")
    out_lap: bool
    in_lap: bool
    setup_version: int | None = Field(description="the setup version in force at the lap's start")
    setup_changed: bool = Field(description="the setup changed during the lap")
    distance_m: float
    max_gap_s: float = Field(description="longest time between two fixes used: how precise the timing is")
    start_seq: int | None
    end_seq: int | None
    interrupted: Literal["gap", "jump"] | None = Field(
        None, description="the trace broke during this lap (no fix for over 3 s, or a GPS relocation): it ended "
        "there untimed (in_lap), and the next lap is an out-lap")
    driver_id: str | None = Field(None, description="the driver in the car at the lap's start (driver changes)")
    pit_in: bool = Field(False, description="the car entered the pit lane in this lap (it is also an in_lap)")
    pit_out: bool = Field(False, description="the car left the pit lane in this lap (it is also an out_lap)")
    fuel_used: float | None = Field(None, description="fuel used in the lap (% of the tank from the sensor, or "
                                    "litres from the configured model); null when not known")


class Timing(Out):
    """The live delta to the best lap, after each batch of the current lap."""

    lap: int
    elapsed: float
    distance_m: float
    delta: float | None
    predicted_lap_time: float | None
    best_lap_time: float | None


class LapList(Out):
    """GET /api/v1/sessions/{id}/laps."""

    items: list[LapOut]
    best_lap: LapOut | None
    best_sectors: list[float | None]
    theoretical_best: float | None
    timing: Timing | None = Field(None, description="live delta to the best lap, while the session is active")


# ------------------------------------------------------------ laps compared
class CarLap(Out):
    """A lap in the comparison picker: which session, its time, setup, driver and flags."""

    session_id: str
    session_name: str
    session_created_at: str | None
    lap: int
    lap_time: float | None
    start_t: float | None
    end_t: float | None
    out_lap: bool
    in_lap: bool
    interrupted: Literal["gap", "jump"] | None
    setup_version: int | None = Field(description="the session's own setup version (each session counts from 1)")
    car_setup_version: int | None = Field(description="the car's setup version: its setups across sessions "
                                          "numbered by content, oldest first")
    setup_changed: bool
    pit: bool
    flagged: bool
    driver_id: str | None = Field(description="the driver at the lap's start, when drivers are recorded")
    clean: bool = Field(description="a clean lap by the rule in `rule`, judged against the best of this list")
    is_best: bool


class CarLapList(Out):
    """GET /api/v1/cars/{car_id}/laps: the car's laps at a track, across its sessions, oldest session first."""

    car_id: str
    track_id: str | None = Field(description="null when the car has no session on a track")
    track_name: str | None
    best_lap_time: float | None
    rule: str = Field(description="the clean-lap rule, in words")
    items: list[CarLap]


class LapTrace(Out):
    """A lap resampled on equally spaced fractions of its length: time, position and channels at each point."""

    session_id: str
    session_name: str
    car_id: str | None
    lap: int
    lap_time: float
    length_m: float
    setup_version: int | None
    driver_id: str | None
    points: int
    distance_m: list[float | None] = Field(description="metres from the line (in a comparison: the reference's)")
    time_s: list[float | None] = Field(description="seconds since the lap's start")
    lat: list[float | None]
    lon: list[float | None]
    channels: dict[str, list[float | None]] = Field(
        description="each channel interpolated in time; null where no sample is within 2 s (a break)")


class LapRef(Out):
    session_id: str
    lap: int


class GainSegment(Out):
    """A stretch of the reference lap and what the other lap gained (change < 0) or lost there."""

    start_index: int
    end_index: int
    start_m: float
    end_m: float
    change_s: float
    verdict: Literal["gain", "loss", "even"]


class DeltaOut(Out):
    """One lap against the reference: delta_s[k] = its time − the reference's at point k (> 0: behind)."""

    session_id: str
    lap: int
    final_s: float = Field(description="the delta at the line: its lap time − the reference's")
    delta_s: list[float | None]
    segments: list[GainSegment]


class Comparison(Out):
    """GET /api/v1/compare: laps overlaid against the reference's distance, with their delta traces."""

    track_id: str | None
    reference: LapRef
    points: int
    distance_m: list[float | None]
    laps: list[LapTrace]
    deltas: list[DeltaOut]


class SessionSetup(Out):
    session_id: str
    version: int


class SetupSummaryOut(Out):
    """One car setup version at a track: its laps, and the change from the previous version."""

    car_setup_version: int | None = Field(description="null: laps run with no setup posted")
    sessions: list[SessionSetup] = Field(description="the session setup versions that are this setup")
    setup: dict[str, Any] | None
    laps: int
    clean_laps: int
    best: float | None
    mean_clean: float | None
    consistency: float | None = Field(description="standard deviation of the clean laps")
    best_change: float | None = Field(description="best − the previous version's best (< 0: faster)")
    mean_change: float | None
    changed: dict[str, dict[str, Any]] = Field(
        description="setup fields changed from the previous version, as dotted paths: {from, to}")


class SetupComparison(Out):
    """GET /api/v1/cars/{car_id}/setups/compare: the car's setup versions at a track, oldest first."""

    car_id: str
    track_id: str | None
    track_name: str | None
    rule: str
    items: list[SetupSummaryOut]


class AlertOut(Out):
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


class AlertList(Out):
    items: list[AlertOut]


class AlertAck(Strict):
    """POST /api/v1/sessions/{id}/alerts/{alert_id}/ack: who saw it (a crew role or initials, not a full name)."""

    by: Annotated[str, StringConstraints(min_length=1, max_length=80, pattern=NO_NUL)]


def _rule_limits(schema: dict[str, Any]) -> None:
    """What AlertRule's validators check, said in the schema: a registered channel's threshold within its range,
    link.silence compared with > or >= and a positive threshold (generated from the channel registry)."""
    limits: list[dict[str, Any]] = [{
        "if": {"properties": {"channel": {"const": LINK_SILENCE}}, "required": ["channel"]},
        "then": {"properties": {"comparison": {"enum": [">", ">="]}, "threshold": {"exclusiveMinimum": 0}}}}]
    for channel in REGISTRY.values():
        bounds = {k: v for k, v in (("minimum", channel.minimum), ("maximum", channel.maximum)) if v is not None}
        if bounds:
            limits.append({"if": {"properties": {"channel": {"const": channel.name}}, "required": ["channel"]},
                           "then": {"properties": {"threshold": bounds}}})
    schema["allOf"] = limits


AlertRuleBody = create_model(  # AlertRule without its id: the path's
    "AlertRuleBody",
    __config__=ConfigDict(extra="forbid", allow_inf_nan=False, json_schema_extra=_rule_limits),
    __doc__="PUT /api/v1/alert-rules/{rule_id}[?car_id=|?session_id=]: the rule (dashboard.telemetry.alerts).",
    **{name: (field.annotation, field) for name, field in AlertRule.model_fields.items() if name != "id"},
)


class AlertRuleOut(Out):
    rule: dict[str, Any]
    source: Literal["default", "all", "car", "session"]
    car_id: str | None
    session_id: str | None = None


class AlertRuleList(Out):
    items: list[AlertRuleOut]


# ---------------------------------------------------------------- the pit wall (issue 14)
DriverId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,40}$")]
DriverName = Annotated[str, StringConstraints(min_length=1, max_length=80, pattern=NO_NUL)]
Seconds = Annotated[float, Field(gt=0, le=7 * 86400)]
EpochSeconds = Annotated[float, Field(ge=0, le=1e11, description="epoch seconds; default now")]


class DriverUpdate(Strict):
    """PUT /api/v1/cars/{car_id}/drivers/{driver_id}: a driver's name and own limits (stricter than the series')."""

    name: DriverName
    max_stint_s: Seconds | None = None
    max_total_s: Seconds | None = None


class DriverIn(DriverUpdate):
    """POST /api/v1/cars/{car_id}/drivers: a driver on the car's roster (the id is in laps and events)."""

    driver_id: DriverId


class DriverOut(Out):
    car_id: str
    driver_id: str
    name: str
    max_stint_s: float | None
    max_total_s: float | None


class DriverList(Out):
    items: list[DriverOut]


class DriverChangeIn(Strict):
    """POST /api/v1/sessions/{id}/driver-change: who got in, and when (default now)."""

    driver_id: DriverId
    at: EpochSeconds | None = None


class DriverChangeMessage(DriverChangeIn):
    """/dashboard `driver.change` (a viewer connected with an engineer's or admin's key)."""

    session_id: SessionId


class DriverChangeAck(Out):
    ok: bool
    change: "DriverChangeOut"


class DriverChangeOut(Out):
    session_id: str
    event_id: int | None
    driver_id: str
    at: float


class StintOut(Out):
    """A stint: one driver from a change to the next; its laps (started in it), best, clean laps' mean and
    consistency (sample standard deviation; a clean lap: dashboard/telemetry/cleanlap.py), fuel used."""

    stint: int
    driver_id: str | None
    start_t: float
    end_t: float | None
    laps: int
    clean_laps: int
    best: float | None
    mean_clean: float | None
    consistency: float | None
    fuel_used: float | None


class StintList(Out):
    session_id: str
    items: list[StintOut]


class SeriesRulesIn(Strict):
    """PUT /api/v1/series-rules: the limits of a series (ChampCar: max_stint_s 7200, min_stop_s 300)."""

    max_stint_s: Seconds | None = Field(None, description="a stint (one driver, change to change) at most this long")
    min_stop_s: Seconds | None = Field(None, description="a stop lasts at least this long (pit-in to pit-out)")
    max_driver_total_s: Seconds | None = Field(None, description="a driver's stints together at most this long")
    warn_lead_s: float = Field(300.0, ge=0, le=86400, description="warn this long before a limit is reached")


class SeriesRulesOut(Out):
    car_id: str | None
    session_id: str | None
    source: Literal["session", "car", "all", "none"]
    rules: SeriesRulesIn | None


class FuelConfigIn(Strict):
    """PUT /api/v1/sessions/{id}/fuel: a car without a fuel sensor (tank and use per lap, litres), and the alert."""

    tank_l: float | None = Field(None, gt=0, le=1000)
    use_per_lap_l: float | None = Field(None, gt=0, le=1000)
    level_l: float | None = Field(None, ge=0, le=1000, description="the level at the start; default full")
    alert_laps_left: float | None = Field(None, gt=0, le=1000, description="low-fuel alert at this many laps left")
    for_car: bool = Field(False, description="store it for every session of the session's car")


class FuelEstimateOut(Out):
    unit: Literal["%", "l"]
    level: float | None
    per_lap: float | None
    laps_left: float | None
    last_lap_used: float | None
    settled: bool


class FuelOut(Out):
    session_id: str
    source: Literal["session", "car", "none"] = Field(description="none: the fuel_level sensor")
    config: dict[str, Any] | None
    estimate: FuelEstimateOut | None


class RefillIn(Strict):
    """POST /api/v1/sessions/{id}/fuel/refill: the crew's word after a stop ("filled 40 l", or to full)."""

    added: float | None = Field(None, ge=0, le=1000)
    to_full: bool = False
    at: EpochSeconds | None = None


# ---------------------------------------------------------------- pit-to-car messages
MessagePriority = Literal["low", "normal", "high", "urgent"]
MessageState = Literal["queued", "sent", "delivered", "seen", "answered", "cancelled", "expired", "closed"]
MessageAnswer = Literal["yes", "no", "ok"]
MessageText = Annotated[str, StringConstraints(min_length=1, max_length=40, pattern=r"^[^\x00-\x1f\x7f]*$")]


class MessageIn(Strict):
    """POST /api/v1/sessions/{id}/messages: a message to the session's car: ``text`` or ``canned`` (an index into
    the team's canned messages, whose options are used unless given here)."""

    text: MessageText | None = Field(None, description="at most 40 characters and 48 bytes of UTF-8")
    canned: int | None = Field(None, ge=0, le=23, description="index of a canned message (GET /messages/canned)")
    asks_answer: StrictBool | None = Field(None, description="yes/no buttons on the driver display")
    priority: MessagePriority | None = None
    close_on: Literal["box"] | None = Field(None, description="box: closed when the car enters the pit lane")
    ttl_s: float | None = Field(None, gt=0, le=4 * 3600, description="expires after this long (default 600 s)")


class MessageSend(MessageIn):
    """/dashboard `message.send` (a viewer connected with an engineer's or admin's key)."""

    session_id: SessionId


class MessageCancel(Strict):
    """/dashboard `message.cancel`."""

    session_id: SessionId
    message_id: Annotated[str, StringConstraints(max_length=64, pattern=NO_NUL)]


class MessageEventOut(Out):
    """One state a message reached: when, over which link, where the car was (lap, position)."""

    message_id: str
    state: MessageState
    t: float
    via: Literal["main", "lora"] | None
    lap: int | None
    lat: float | None
    lon: float | None
    answer: MessageAnswer | None
    implied: bool
    by: str | None


class MessageFields(Out):
    """What the pit and the car both get of a message: the message itself, its session and its state."""

    id: str
    short_id: int
    session_id: str
    car_id: str
    text: str
    created_by: str
    created_t: float
    expires_t: float
    asks_answer: bool
    priority: MessagePriority
    close_on: Literal["box"] | None
    state: MessageState


class MessageOut(MessageFields):
    """A message and its state; ``answer`` with the lap it came in (``answered_lap``)."""

    answer: MessageAnswer | None
    answered_lap: int | None
    events: list[MessageEventOut]


class MessageList(Out):
    items: list[MessageOut]


class MessageAck(Out):
    """Ack of /dashboard `message.send` and `message.cancel`."""

    ok: bool
    message: MessageOut


class CannedMessageModel(Strict):
    """A canned message: a button on the pit page."""

    text: MessageText
    asks_answer: StrictBool = False
    priority: MessagePriority = "normal"
    close_on: Literal["box"] | None = None


class CannedList(Strict):
    """GET/PUT /api/v1/messages/canned: the team's canned messages (at most 24)."""

    items: list[CannedMessageModel] = Field(max_length=24)


class MessageToCar(MessageFields):
    """Server to monitor: `message` (acked by the car: delivered); a final ``state`` takes it off the display."""


class MessageCarAck(Out):
    """The car's ack of `message`: it is held in the car's inbox."""

    ok: bool


class MessageReport(Strict):
    """/monitor `message.report`: the driver saw or answered a message (deduplicated by message id and state)."""

    session_id: SessionId
    message_id: Annotated[str, StringConstraints(max_length=64, pattern=NO_NUL)]
    state: Literal["seen", "answered"]
    answer: MessageAnswer | None = None
    t: EpochSeconds
    lap: StrictInt | None = Field(None, ge=0, le=0xFFFE)
    lat: float | None = Field(None, ge=-90, le=90)
    lon: float | None = Field(None, ge=-180, le=180)


class MessageReportAck(Out):
    """Ack of /monitor `message.report`: duplicate when it changed nothing; the message's state now."""

    ok: bool
    duplicate: bool
    state: MessageState


class TeamDriver(Out):
    driver_id: str
    name: str | None


class TeamStint(Out):
    number: int
    start_t: float
    elapsed_s: float | None
    limit_s: float | None
    left_s: float | None = Field(description="time left in the stint under the series rules (negative: over)")


class TeamLimit(Out):
    rule: str
    subject: str
    limit_s: float
    used_s: float
    left_s: float
    warn_at: float | None
    breach_at: float | None


class TeamFuel(Out):
    unit: str
    level: float | None
    percent: float | None
    per_lap: float | None
    laps_left: float | None
    settled: bool


class TeamPit(Out):
    status: Literal["on_track", "in_lane", "stopped"]
    running_s: float | None = Field(description="the stop in progress: seconds since pit entry (or standstill)")
    stops: int
    lane: bool = Field(description="the track has a pit lane (else a stop is a long standstill)")
    last_stop: dict[str, Any] | None


class TeamLink(Out):
    state: Literal["live", "lora", "stale", "none"]
    age_s: float | None = Field(description="seconds since frames last arrived over the main link")
    lora_age_s: float | None


class TeamPosition(Out):
    lat: float
    lon: float
    lag_s: float | None = Field(description="how much older the GPS fix is than the car's newest value (car clock)")


class TeamAlert(Out):
    rule_id: str
    name: str | None
    severity: str | None


class TeamCar(Out):
    """One car of the team view: an active session."""

    session_id: str
    car_id: str | None
    name: str
    track_id: str | None
    driver: TeamDriver | None
    laps: int
    last_lap: int | None
    last_lap_s: float | None
    best_lap_s: float | None
    delta_s: float | None = Field(description="live delta to the car's best lap")
    gap_to_best_s: float | None = Field(description="this car's best lap minus the best lap of the team's cars")
    stint: TeamStint | None
    limits: list[TeamLimit]
    fuel: TeamFuel | None
    pit: TeamPit | None
    link: TeamLink
    position: TeamPosition | None = Field(description="the last GPS fix, for the team map; null before the first")
    alerts: list[TeamAlert]


class TeamOut(Out):
    """GET /api/v1/team and /dashboard `team.join`: every active session of the team (every car on the server)."""

    team: str
    generated_at: float
    team_best_lap_s: float | None
    cars: list[TeamCar]


class TeamUpdate(Out):
    """/dashboard `team.update`, at most one per ``team_interval_s`` (0.5 s) whatever the cars and their rates."""

    team: str
    generated_at: float
    team_best_lap_s: float | None
    cars: list[TeamCar] = Field(description="whole rows: cars new to the view, and every car every 10 s")
    changes: list[dict[str, Any]] = Field(description="{session_id, and each TeamCar field that changed}: merge "
                                          "into the row; the running clocks (link ages, stint elapsed and left, "
                                          "the stop's running time) are not sent alone: advance them from "
                                          "generated_at")
    ended: list[str] = Field(description="sessions that left the team view (no longer active)")


class TeamJoin(Strict):
    """/dashboard `team.join`."""

    team: Literal["default"] = "default"


class TeamJoinAck(Out):
    """/dashboard `team.join` ack: the team view now (then `team.update` with the cars that change)."""

    ok: bool
    snapshot: TeamOut


class LegacyStart(BaseModel):
    """POST /session_manager/sessions.start (continuity alias): the car as ``car_id`` or, as of old, ``user_id``."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False, json_schema_extra={"anyOf": [
        {"required": ["car_id"], "properties": {"car_id": {"type": "string"}}},
        {"required": ["user_id"], "properties": {"user_id": {"type": "string"}}}]})
    car_id: CarId | None = None
    user_id: CarId | None = None
    record_id: RecordId | None = None
    name: Text = ""
    driver: Text | None = None
    track: Text | None = None


class LegacyEnd(Strict):
    session_id: SessionId
    record_id: RecordId | None = None


class LegacyHeartbeat(Strict):
    session_id: SessionId


# --------------------------------------------------------------- access keys
Role = Literal["admin", "engineer", "viewer", "car", "gateway"]


class KeyCreate(Strict):
    """POST /api/v1/keys (admins): a key for a person, a car or a pit gateway."""

    model_config = ConfigDict(json_schema_extra={  # a car key names its car; no other key has one
        "if": {"properties": {"role": {"const": "car"}}, "required": ["role"]},
        "then": {"required": ["car_id"], "properties": {"car_id": {"type": "string"}}},
        "else": {"properties": {"car_id": {"type": "null"}}}})

    role: Role = Field(description="admin: everything; engineer: sessions, setups, tracks, alerts; viewer: reads; "
                                   "car: its own car's monitor; gateway: LoRa relay")
    name: Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=NO_NUL)] = Field(
        description="who or what holds it, shown in lists")
    car_id: CarId | None = Field(None, description="a car key's car (required for one): the only car id it may "
                                                   "connect as")


class KeyOut(Out):
    """A key as admins see it: never the key itself, nor its hash."""

    key_id: str = Field(description="the public part of the key (rdk_...), named in lists and logs")
    role: Role
    name: str
    car_id: str | None
    created_at: str
    last_used_at: str | None
    revoked_at: str | None


class KeyCreated(KeyOut):
    """The answer to POST /api/v1/keys: the only time the key is shown."""

    key: str = Field(description="the secret: give it as X-API-Key (or Authorization: Bearer), or as a "
                                 "monitor's api_key; shown once, stored only as its SHA-256")


class KeyList(Out):
    items: list[KeyOut]


# ------------------------------------------------------- Socket.IO /monitor
class MonitorAuth(BaseModel):
    """auth of a /monitor connection: a car key connects only as its own car_id; a gateway key sends lora."""

    car_id: CarId
    api_key: str | None = None
    role: Literal["car", "mesh-gateway"] | None = Field(None, description="mesh-gateway: the connection relays "
                                                         "LoRa and gets `downlink` events (an admin key's too)")


class MonitorSessionStart(Strict):
    """/monitor `session.start`: resume the car's active session or create one (no payload: the empty object)."""

    record_id: RecordId | None = None
    session_id: SessionId | None = None
    name: Text = ""
    driver: Text | None = None
    track: Text | None = Field(None, description="a stored track's name (case-insensitive): a session created "
                               "is timed on it; no such track is a not_found refusal naming track")
    track_id: SessionId | None = Field(None, description="a stored track: a session created is timed on it; no such "
                                       "track is a not_found refusal naming track_id")


class TelemetryBatch(Strict):
    """/monitor `telemetry`: frames are validated one by one (see Frame)."""

    session_id: SessionId
    frames: list[Any] = Field(description="each item a Frame; bad ones are rejected individually")
    backfill: bool = Field(False, description="these frames come from the monitor's backlog, not live")


class Rejection(Out):
    seq: Any
    error: ErrorDetail = Field(description="why this frame was not taken: code invalid_frame (a field to blame), "
                                           "clock_ahead (stamped more than DASHBOARD_MAX_CLOCK_AHEAD_S ahead of the "
                                           "server's clock), clock_behind (a live frame stamped more than "
                                           "DASHBOARD_MAX_CLOCK_BEHIND_S behind it; backfill is taken at any age), "
                                           "session_not_active (sampled after the session stopped)")


class TelemetryAck(Out):
    """Ack of `telemetry`: every frame of the batch is now durable, or listed in rejected."""

    ok: bool
    acked_seq: int | None
    rejected: list[Rejection]
    session_status: SessionStatus | None = Field(
        None, description="present when the session is not active: the monitor pauses (stopped, ended) or starts "
                          "a new session (expired); frames sampled after the stop are in rejected")


class MonitorHeartbeat(Strict):
    session_id: SessionId
    backlog: int | None = Field(None, ge=0, description="frames waiting in the monitor's outbox")
    rtt_ms: float | None = Field(None, ge=0, description="monitor's last measured ack round trip")
    sources: dict[str, str] | None = Field(None, description="status of each in-car source")
    oldest_age_s: float | None = Field(None, ge=0, description="age of the oldest frame not yet acknowledged")


class MonitorEvent(Strict):
    """/monitor `event`: something the car noticed (a trouble code set or cleared...), logged once per record_id."""

    session_id: SessionId
    record_id: RecordId
    event_type: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_.]{0,63}$")]
    payload: dict[str, Any] = Field(default_factory=dict)


class MonitorSessionEnd(Strict):
    session_id: SessionId
    record_id: RecordId | None = None


class LoraMessage(BaseModel):
    """/monitor `lora`: a summary a pit gateway received over the Meshtastic radio.

    The radio format is in RACE_DASHBOARD_PLAN.md ("LoRa link").
    """

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)
    car_id: CarId | None = None
    car_hash: int | None = Field(None, ge=0, le=0xFFFF)
    session_prefix: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{8}$")]
    frame: dict[str, Any]
    received_at: float = Field(allow_inf_nan=False)
    status: dict[str, bool] | None = None
    radio: dict[str, Any] | None = None


class LoraBroadcast(Out):
    """/dashboard `lora`: the latest values that came over LoRa, with their age when relayed."""

    session_id: str
    link: Literal["lora"] = "lora"
    frame: Frame
    received_at: float
    age_s: float
    status: dict[str, bool] | None = None


class Ack(Out):
    """Ack of `session.start`, `session.end` (with the session), `leave` (without)."""

    ok: bool
    session: SessionOut | None = None


class Command(Out):
    """Server to monitor: the REST start/stop was called for this car's session."""

    action: Literal["start", "stop", "end"]
    session_id: str


# ----------------------------------------------------- Socket.IO /dashboard
class ViewerAuth(BaseModel):
    token: str | None = Field(None, description="the viewer token, or a key of any role; needed when the server "
                                                "has a viewer token")


class Join(Strict):
    session_id: SessionId


class Snapshot(Out):
    session: SessionOut
    setup: SetupOut | None
    telemetry: TelemetryOut
    recent: list[StoredFrame]
    alerts: list[AlertOut] = Field(default_factory=list, description="alerts still on screen")


class JoinAck(Out):
    ok: bool
    snapshot: Snapshot


class TelemetryBroadcast(Out):
    """/dashboard `telemetry`: frames of the room's session, in seq order, possibly coalesced."""

    session_id: str
    frames: list[Frame]


class MonitorPresence(MonitorHealth):
    """/dashboard `monitor`: the car's monitor came online, went offline, or reported its health."""

    session_id: str


class LapBroadcast(LapOut):
    """/dashboard `lap`: a lap just completed."""

    session_id: str


class SectorBroadcast(Out):
    """/dashboard `sector`: a sector just completed (tracks with sector lines)."""

    session_id: str
    lap: int
    sector: int = Field(ge=1)
    time: float
    start_t: float
    end_t: float
    is_best: bool
    setup_version: int | None


class TimingBroadcast(Timing):
    """/dashboard `timing`: the live delta to the best lap."""

    session_id: str


class LapsBroadcast(LapList):
    """/dashboard `laps`: every lap again, after the session was timed again (track set or changed, restart)."""

    session_id: str
    track_id: str | None


class Deleted(Out):
    """/dashboard `deleted` (to every viewer): the session and its data are gone."""

    session_id: str


class HeartbeatAck(Out):
    """Ack of /monitor `heartbeat`."""

    ok: bool
    server_time: float


class EventAck(Out):
    """Ack of /monitor `event`: duplicate when its record_id was logged before."""

    ok: bool
    duplicate: bool


class LoraAck(Out):
    """Ack of /monitor `lora`: the session the summary was merged into."""

    ok: bool
    session_id: str


class LoraReport(Strict):
    """/monitor `lora.report`: a car's report of a pit-to-car message, heard over LoRa by a pit gateway.

    The message is named by the car (its id, else its 16-bit hash) and its short id (RACE_DASHBOARD_PLAN.md,
    "Pit-to-car messages").
    """

    link: Literal["lora"] = "lora"
    car_id: CarId | None = None
    car_hash: StrictInt = Field(ge=0, le=0xFFFF)
    short_id: StrictInt = Field(ge=1, le=0xFFFFFFFF)
    state: Literal["delivered", "seen", "answered"]
    answer: MessageAnswer | None = None
    t: EpochSeconds
    lap: StrictInt | None = Field(None, ge=0, le=0xFFFE)
    lat: float | None = Field(None, ge=-90, le=90)
    lon: float | None = Field(None, ge=-180, le=180)
    received_at: float = Field(ge=0, le=1e11)
    radio: dict[str, Any] | None = None


class LoraReportAck(Out):
    """Ack of /monitor `lora.report`: the message it applied to, duplicate when it changed nothing."""

    ok: bool
    duplicate: bool
    state: MessageState
    session_id: str
    message_id: str


class Downlink(Out):
    """Server to pit gateway: `downlink`, a message to carry over LoRa while the car's main link is down or stale.

    ``state`` queued or sent: transmit it; delivered, seen or answered: the car has it (stop repeating);
    cancelled, expired or closed: send its close.
    """

    car_id: str
    car_hash: int
    session_id: str
    message: MessageToCar
    state: MessageState


class DownlinkAck(Out):
    """The gateway's ack of `downlink`: whether it is (or stays) to be transmitted."""

    ok: bool
    transmitting: bool


class ErrorAck(Out):
    """Any ack that refuses: ok false, and why."""

    ok: Literal[False]
    error: ErrorDetail


# Every Socket.IO message, both ways: "<namespace>.<event>" for what is sent, "...ack" for its answer, "error.ack"
# for any refusal. The server's side is held to this table by tests/server/test_contract.py; schemas/ has one
# JSON Schema per entry.
SOCKET_MESSAGES: dict[str, type[BaseModel]] = {
    "frame": Frame,
    "error.ack": ErrorAck,
    # /monitor: the car's monitor (and pit gateways) to the server
    "monitor.auth": MonitorAuth,
    "monitor.session.start": MonitorSessionStart,
    "monitor.session.start.ack": Ack,
    "monitor.telemetry": TelemetryBatch,
    "monitor.telemetry.ack": TelemetryAck,
    "monitor.heartbeat": MonitorHeartbeat,
    "monitor.heartbeat.ack": HeartbeatAck,
    "monitor.event": MonitorEvent,
    "monitor.event.ack": EventAck,
    "monitor.lora": LoraMessage,
    "monitor.lora.ack": LoraAck,
    "monitor.session.end": MonitorSessionEnd,
    "monitor.session.end.ack": Ack,
    "monitor.command": Command,  # server to monitor
    "monitor.message": MessageToCar,  # server to monitor, acked by the car
    "monitor.message.ack": MessageCarAck,
    "monitor.message.report": MessageReport,
    "monitor.message.report.ack": MessageReportAck,
    "monitor.lora.report": LoraReport,  # pit gateway to server
    "monitor.lora.report.ack": LoraReportAck,
    "monitor.downlink": Downlink,  # server to pit gateway, acked by the gateway
    "monitor.downlink.ack": DownlinkAck,
    # /dashboard: viewers
    "dashboard.auth": ViewerAuth,
    "dashboard.join": Join,
    "dashboard.join.ack": JoinAck,
    "dashboard.leave": Join,
    "dashboard.leave.ack": Ack,
    "dashboard.telemetry": TelemetryBroadcast,
    "dashboard.session": SessionOut,
    "dashboard.sessions": SessionOut,
    "dashboard.deleted": Deleted,
    "dashboard.setup": SetupOut,
    "dashboard.monitor": MonitorPresence,
    "dashboard.event": EventOut,
    "dashboard.lora": LoraBroadcast,
    "dashboard.lap": LapBroadcast,
    "dashboard.sector": SectorBroadcast,
    "dashboard.timing": TimingBroadcast,
    "dashboard.laps": LapsBroadcast,
    "dashboard.alert": AlertOut,
    "dashboard.team.join": TeamJoin,
    "dashboard.team.join.ack": TeamJoinAck,
    "dashboard.team.leave": TeamJoin,
    "dashboard.team.leave.ack": Ack,
    "dashboard.team.update": TeamUpdate,
    "dashboard.driver.change": DriverChangeMessage,
    "dashboard.driver.change.ack": DriverChangeAck,
    "dashboard.message.send": MessageSend,
    "dashboard.message.send.ack": MessageAck,
    "dashboard.message.cancel": MessageCancel,
    "dashboard.message.cancel.ack": MessageAck,
    "dashboard.message": MessageOut,
}
