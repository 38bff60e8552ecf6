"""Alert rules and the pure processor that raises and clears them from frames.

Like Traccar's ``OverspeedProcessor`` (and unlike its event handler), this
module does no I/O and never reads a clock: time comes from the frames it is
fed and from the explicit ``now`` given to :meth:`AlertEngine.tick`. The server
stores the rules, feeds every accepted frame of a session, ticks about once a
second, and logs, broadcasts and acknowledges the events it gets back.

Each rule is a small state machine::

                condition true              held for hold_s
    normal ───────────────────► pending ───────────────────► raised ──► alert.raised
       ▲  ◄───────────────────     │                           │
       │    condition false        │                           │ value back past
       │    (no event)             │                           │ threshold ∓ hysteresis
       └───────────────────────────┴───────────────────────────┘──► alert.cleared

Semantics, decided here once:

- A rule watches one channel and compares its value with ``threshold``. The
  condition must hold on every non-null value for ``hold_s`` seconds of frame
  time before the alert is raised; the event's ``t`` is the time of the frame
  on which the hold completed. A spike shorter than ``hold_s`` raises nothing.
- A raised alert clears when the value comes back past the threshold by
  ``hysteresis`` (``> 105`` with hysteresis 3 clears at ``<= 102``), so a value
  oscillating around the threshold does not flap.
- A null or absent value (unknown or stale) neither raises nor clears, and does
  not restart a pending hold either: it is no information, so nothing changes.
- Frames are ordered by ``seq``: a frame whose seq is not above the highest seen
  (a backfilled or repeated frame) is ignored for alert state.
- ``link.silence`` is a reserved channel whose value is the seconds since the
  last frame arrived. It is evaluated only by ``tick(now)`` and cleared by the
  next frame (hysteresis does not apply). Silence is measured on the clock of
  ``received_at`` (as given to ``feed``) and ``now``; without ``received_at``
  the frame's own ``t`` is used, as a replay would. Before the first frame there
  is no silence to measure.
- Replacing the rules keeps the state of every rule that is unchanged (same id,
  equal definition); an alert raised by a rule that was removed, changed or
  disabled is cleared with ``reason: "rule_changed"``. So per rule, raised and
  cleared events always alternate, starting with a raise.
"""
from __future__ import annotations

import functools
import operator
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from dashboard.errors import InvalidInput
from dashboard.telemetry.channels import CHANNEL_NAME_RE, REGISTRY
from dashboard.telemetry.frames import Frame

LINK_SILENCE = "link.silence"  # reserved channel: seconds since the last frame arrived
ALERT_RAISED = "alert.raised"  # session event type of a raise
ALERT_CLEARED = "alert.cleared"  # session event type of a clear

RULE_ID_RE = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"  # slugs and UUIDs; safe in URLs and event payloads
MAX_RULE_NAME_LEN = 80  # fits the alert banner on one line
MAX_HOLD_S = 3600.0  # an hour: a longer hold is no live alert, most likely a typo (ms for s)
TIME_EPSILON_S = 1e-6  # epoch seconds near 1.7e9 carry ~2e-7 s of float rounding; a hold ending on a frame counts

# Default thresholds. Teams override them per car or per session; these suit a generic club race car.
COOLANT_WARN_C = 105.0  # a pressurised cooling system runs 85-100 °C; above 105 something is wrong
COOLANT_CRITICAL_C = 115.0  # near boiling even under pressure: head gasket damage territory, stop the car
COOLANT_HOLD_S = 2.0  # coolant moves slowly; 2 s rules out a single bad OBD reading
COOLANT_HYSTERESIS_C = 3.0  # clears only once clearly back down, so a car hovering at 105 does not flap
DEFAULT_REDLINE_RPM = 8500.0  # a naturally aspirated four-cylinder race engine; above the bundled simulation's
#   upshift point (8280 rpm), so the demo runs clean. Every team sets its own engine's limit per car.
REDLINE_HOLD_S = 1.0  # a shift that touches the limiter is normal; a second on it is over-revving
REDLINE_HYSTERESIS_RPM = 200.0  # rpm wobbles by a few tens at the limiter
FUEL_LOW_PCT = 10.0  # about a lap or two of fuel on a small tank: time to call the car in
FUEL_HOLD_S = 5.0  # fuel sloshes in corners; the level must stay low for several seconds
FUEL_HYSTERESIS_PCT = 2.0  # the sender wobbles; clear only after a real refuel
LINK_SILENT_S = 5.0  # fifty missed 10 Hz frames; a few hundred ms of radio dropout is routine

Comparison = Literal[">", ">=", "<", "<="]
Severity = Literal["info", "warning", "critical"]
RuleStatus = Literal["normal", "pending", "raised"]


_OPERATORS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}


def _compare(value: float, comparison: str, threshold: float) -> bool:
    return _OPERATORS[comparison](value, threshold)


class AlertRule(BaseModel):
    """One alert rule: a channel compared with a threshold, held for a while, cleared with hysteresis."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Annotated[StrictStr, Field(pattern=RULE_ID_RE, description="stable identifier, unique per rule set")]
    name: Annotated[StrictStr, Field(min_length=1, max_length=MAX_RULE_NAME_LEN, pattern=r"^[^\x00]*$",
                                     description="shown on the banner (no NUL: PostgreSQL stores no NUL)")]
    channel: Annotated[
        StrictStr,
        Field(
            pattern=CHANNEL_NAME_RE.pattern,
            description=f"channel name, or {LINK_SILENCE!r}: seconds since the last frame arrived",
        ),
    ]
    comparison: Annotated[Comparison, Field(description="raise while `value <comparison> threshold`")]
    threshold: Annotated[float, Field(strict=True, allow_inf_nan=False, description="in the channel's unit")]
    hold_s: Annotated[
        float,
        Field(strict=True, ge=0.0, le=MAX_HOLD_S, allow_inf_nan=False,
              description="seconds the condition must hold before the alert is raised"),
    ] = 0.0
    hysteresis: Annotated[
        float,
        Field(strict=True, ge=0.0, allow_inf_nan=False,
              description="how far back past the threshold the value must come to clear (ignored for link.silence)"),
    ] = 0.0
    severity: Severity = "warning"
    enabled: StrictBool = True

    @field_validator("comparison")
    @classmethod
    def _silence_is_a_maximum(cls, value: str, info: ValidationInfo) -> str:
        if info.data.get("channel") == LINK_SILENCE and value not in (">", ">="):
            raise ValueError(f"{LINK_SILENCE} rules compare with '>' or '>='")
        return value

    @field_validator("threshold")
    @classmethod
    def _threshold_in_range(cls, value: float, info: ValidationInfo) -> float:
        channel = info.data.get("channel")
        if channel == LINK_SILENCE:
            if value <= 0.0:
                raise ValueError(f"{LINK_SILENCE} threshold must be a positive number of seconds")
            return value
        registered = REGISTRY.get(channel) if isinstance(channel, str) else None
        # A threshold outside the channel's plausible range can never fire: most often a unit mistake (°F for °C).
        if registered is not None:
            low, high = registered.minimum, registered.maximum
            if (low is not None and value < low) or (high is not None and value > high):
                raise ValueError(
                    f"threshold {value:g} is outside {channel}'s range {low:g}..{high:g} {registered.unit}".rstrip()
                )
        return value

    def condition(self, value: float) -> bool:
        """True when ``value`` meets the raise condition (ignoring the hold)."""
        return _OPERATORS[self.comparison](value, self.threshold)

    def clears(self, value: float) -> bool:
        """True when ``value`` is back past the threshold by the hysteresis, so a raised alert clears."""
        return not _OPERATORS[self.comparison](value, self.clear_threshold)

    @functools.cached_property
    def clear_threshold(self) -> float:
        """Where a raised alert clears: the threshold moved back by the hysteresis."""
        if self.comparison in (">", ">="):
            return self.threshold - self.hysteresis
        return self.threshold + self.hysteresis


def parse_rule(raw: Any) -> AlertRule:
    """Validate one raw rule (a REST body); raise InvalidInput naming the field on failure."""
    if not isinstance(raw, dict):
        raise InvalidInput("a rule must be an object", field="rule")
    try:
        return AlertRule.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "rule"
        raise InvalidInput(err["msg"], field=field) from None


DEFAULT_RULES: tuple[AlertRule, ...] = (
    AlertRule(id="coolant_high", name="Coolant temperature high", channel="coolant_temp", comparison=">",
              threshold=COOLANT_WARN_C, hold_s=COOLANT_HOLD_S, hysteresis=COOLANT_HYSTERESIS_C, severity="warning"),
    AlertRule(id="coolant_critical", name="Coolant temperature critical", channel="coolant_temp", comparison=">",
              threshold=COOLANT_CRITICAL_C, hold_s=COOLANT_HOLD_S, hysteresis=COOLANT_HYSTERESIS_C,
              severity="critical"),
    AlertRule(id="rpm_redline", name="Engine over redline", channel="rpm", comparison=">",
              threshold=DEFAULT_REDLINE_RPM, hold_s=REDLINE_HOLD_S, hysteresis=REDLINE_HYSTERESIS_RPM,
              severity="warning"),
    AlertRule(id="fuel_low", name="Fuel low", channel="fuel_level", comparison="<",
              threshold=FUEL_LOW_PCT, hold_s=FUEL_HOLD_S, hysteresis=FUEL_HYSTERESIS_PCT, severity="warning"),
    AlertRule(id="link_silent", name="Data link silent", channel=LINK_SILENCE, comparison=">",
              threshold=LINK_SILENT_S, severity="critical"),
)


class AlertEvent(BaseModel):
    """An alert raised or cleared: the payload of the ``alert.raised`` / ``alert.cleared`` session events."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["alert.raised", "alert.cleared"]
    rule_id: str
    name: str
    severity: Severity
    channel: str
    comparison: Comparison
    threshold: float
    value: float = Field(description="the channel's value at t; for link.silence the seconds of silence")
    t: float = Field(description="frame time the event fired at (for link.silence: the tick or arrival time)")
    seq: int = Field(description="seq of the frame it fired on (a link.silence raise: the last frame before the gap)")
    reason: Literal["condition", "rule_changed"] = Field(
        default="condition", description="rule_changed: cleared because its rule was removed, changed or disabled"
    )


@dataclass
class _RuleState:
    status: RuleStatus = "normal"
    since: float | None = None  # when the condition became true (pending)
    value: float | None = None  # last non-null value seen
    raised: AlertEvent | None = None  # the raise of the active alert


def _event(kind: str, rule: AlertRule, value: float, t: float, seq: int, reason: str = "condition") -> AlertEvent:
    return AlertEvent(kind=kind, rule_id=rule.id, name=rule.name, severity=rule.severity, channel=rule.channel,
                      comparison=rule.comparison, threshold=rule.threshold, value=value, t=t, seq=seq, reason=reason)


def _check_unique(rules: Iterable[AlertRule]) -> dict[str, AlertRule]:
    by_id: dict[str, AlertRule] = {}
    for rule in rules:
        if not isinstance(rule, AlertRule):
            raise InvalidInput("rules must be AlertRule objects", field="rules")
        if rule.id in by_id:
            raise InvalidInput(f"duplicate rule id {rule.id!r}", field="id")
        by_id[rule.id] = rule
    return by_id


class AlertEngine:
    """The alert state of one session: feed it frames in arrival order and tick it; it answers events."""

    def __init__(self, rules: Iterable[AlertRule] = DEFAULT_RULES) -> None:
        self._rules = _check_unique(rules)
        self._states = {rule_id: _RuleState() for rule_id in self._rules}
        self._last_seq: int | None = None
        self._last_t: float | None = None  # frame time of the newest frame
        self._last_seen: float | None = None  # arrival of the newest frame, on the silence clock

    @property
    def rules(self) -> tuple[AlertRule, ...]:
        """The rules in force, in the order given."""
        return tuple(self._rules.values())

    @property
    def last_seq(self) -> int | None:
        """Seq of the newest frame taken into account, or None before the first."""
        return self._last_seq

    def status(self, rule_id: str) -> RuleStatus:
        """``normal``, ``pending`` or ``raised`` for that rule (KeyError for an unknown id)."""
        return self._states[rule_id].status

    def state(self) -> list[AlertEvent]:
        """The active (raised, not yet cleared) alerts as their raise events, in rule order: for a snapshot."""
        return [s.raised for s in self._states.values() if s.raised is not None]

    def feed(self, frame: Frame, received_at: float | None = None) -> list[AlertEvent]:
        """Take one frame into account; the alerts it raised or cleared, in rule order.

        ``received_at`` is when the frame arrived, on the clock later given to
        :meth:`tick`; it defaults to ``frame.t``. Frames not newer (by seq)
        than the newest seen change nothing.
        """
        return self.feed_batch([{"seq": frame.seq, "t": frame.t, "channels": frame.channels}], received_at)

    def feed_values(self, seq: int, t: float, channels: Mapping[str, float | None],
                    received_at: float | None = None) -> list[AlertEvent]:
        """:meth:`feed` for a frame given as its parts."""
        return self.feed_batch([{"seq": seq, "t": t, "channels": channels}], received_at)

    def feed_batch(self, frames: list[Mapping[str, Any]], received_at: float | None = None) -> list[AlertEvent]:
        """Frames (dicts with seq, t, channels; in seq order) as if fed one by one: the same events, same order.

        Rule by rule over the batch (each rule's state machine sees its values in order), then the events
        sorted by frame and rule: the server feeds whole batches, and the per-frame, per-rule overhead
        was a third of its ingest.
        """
        last = self._last_seq
        if last is not None:
            frames = [f for f in frames if f["seq"] > last]
        if not frames:
            return []
        previous_arrival = self._last_seen
        found: list[tuple[int, int, AlertEvent]] = []
        states = self._states
        for order, rule in enumerate(self._rules.values()):
            if not rule.enabled:
                continue
            state = states[rule.id]
            if rule.channel == LINK_SILENCE:  # any frame ends a silence: only the first one can clear it
                first = frames[0]
                if state.raised is not None:
                    arrived = first["t"] if received_at is None else received_at
                    gap = arrived - (previous_arrival if previous_arrival is not None else arrived)
                    found.append((0, order, _event(ALERT_CLEARED, rule, gap, arrived, first["seq"])))
                if state.status != "normal":
                    states[rule.id] = _RuleState()
                continue
            channel, step = rule.channel, self._step
            for index, frame in enumerate(frames):
                value = frame["channels"].get(channel)
                if value is not None:
                    event = step(rule, state, value, frame["t"], frame["seq"])
                    if event is not None:
                        found.append((index, order, event))
        newest = frames[-1]
        self._last_seq, self._last_t = newest["seq"], newest["t"]
        self._last_seen = newest["t"] if received_at is None else received_at
        if len(found) > 1:
            found.sort(key=lambda item: (item[0], item[1]))
        return [event for _index, _order, event in found]

    def tick(self, now: float) -> list[AlertEvent]:
        """Evaluate ``link.silence`` rules at ``now`` (the clock of ``received_at``); the alerts raised."""
        if self._last_seen is None or self._last_seq is None:
            return []
        silence = now - self._last_seen
        events: list[AlertEvent] = []
        for rule in self._rules.values():
            if not rule.enabled or rule.channel != LINK_SILENCE:
                continue
            state = self._states[rule.id]
            if state.status == "raised" or not rule.condition(silence):
                continue
            state.status, state.since, state.value = "pending", self._last_seen + rule.threshold, silence
            if silence - rule.threshold >= rule.hold_s - TIME_EPSILON_S:
                state.raised = _event(ALERT_RAISED, rule, silence, now, self._last_seq)
                state.status = "raised"
                events.append(state.raised)
        return events

    def set_rules(self, rules: Iterable[AlertRule], now: float | None = None) -> list[AlertEvent]:
        """Replace the rules; unchanged rules keep their state. Returns the clears of dropped active alerts.

        A rule that is removed, changed in any field, or disabled while raised
        is cleared with ``reason: "rule_changed"`` at ``now`` (default: the
        latest time the engine knows for that rule). Its replacement starts
        from ``normal`` with the next frame.
        """
        new_rules = _check_unique(rules)
        events: list[AlertEvent] = []
        for rule_id, old in self._rules.items():
            if new_rules.get(rule_id) == old:
                continue
            state = self._states.pop(rule_id)
            if state.raised is not None:
                events.append(self._dropped(old, state, now))
        self._states = {rule_id: self._states.get(rule_id) or _RuleState() for rule_id in new_rules}
        self._rules = new_rules
        return events

    def _dropped(self, rule: AlertRule, state: _RuleState, now: float | None) -> AlertEvent:
        raised = state.raised
        assert raised is not None  # only called for a raised rule
        if rule.channel == LINK_SILENCE:
            t = now if now is not None else raised.t
            value = t - (self._last_seen if self._last_seen is not None else t)
        else:
            t = now if now is not None else max(raised.t, self._last_t if self._last_t is not None else raised.t)
            value = state.value if state.value is not None else raised.value
        seq = self._last_seq if self._last_seq is not None else raised.seq
        return _event(ALERT_CLEARED, rule, value, t, seq, reason="rule_changed")

    @staticmethod
    def _step(rule: AlertRule, state: _RuleState, value: float, t: float, seq: int) -> AlertEvent | None:
        """Advance one value rule by one non-null value at frame time ``t``."""
        state.value = value
        if state.status == "raised":
            if rule.clears(value):
                state.status, state.since, state.raised = "normal", None, None
                return _event(ALERT_CLEARED, rule, value, t, seq)
            return None
        if not rule.condition(value):
            state.status, state.since = "normal", None
            return None
        if state.since is None or t < state.since:  # newly true, or the car's clock stepped back
            state.status, state.since = "pending", t
        if t - state.since >= rule.hold_s - TIME_EPSILON_S:
            state.status = "raised"
            state.raised = _event(ALERT_RAISED, rule, value, t, seq)
            return state.raised
        return None

