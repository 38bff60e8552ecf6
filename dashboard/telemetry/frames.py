"""Telemetry frames: the one message shape of the data path, and its validation.

A frame is ``{seq, t, channels}``: ``seq`` the monitor's increasing integer
(continuing across restarts), ``t`` epoch seconds of the sample, ``channels`` a
map of channel name to a finite number, or null when the value is unknown or
stale. Validation is pure and per frame, so a batch keeps its good frames and
rejects the bad ones one by one, each with the field to blame.

The rules are written once, as annotated types, and used twice: by :class:`Frame`
(the model the schemas and messages are generated from) and by :func:`parse_frames`,
the hot path, which validates a whole batch in one call into plain dicts (~2 µs a
frame against ~11 µs for a model per frame) and goes frame by frame only when the
batch holds a bad one. ``tests/telemetry/test_frames.py`` holds both to the same answers.
"""
from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StringConstraints, TypeAdapter, ValidationError
from typing_extensions import TypedDict

from dashboard.errors import FrameError
from dashboard.telemetry.channels import CHANNEL_NAME_RE, MAX_CHANNELS_PER_FRAME

MIN_T = 946684800.0  # 2000-01-01: anything earlier is a clock that was never set
MAX_T = 4102444800.0  # 2100-01-01
MAX_SEQ = 2**53  # exact in a JavaScript number and in a JSON double

Seq = Annotated[StrictInt, Field(ge=0, le=MAX_SEQ, description="monitor's increasing sequence number")]
SampleTime = Annotated[float, Field(strict=True, ge=MIN_T, le=MAX_T, allow_inf_nan=False,
                                    description="sample time, epoch seconds")]
ChannelName = Annotated[str, StringConstraints(strict=True, pattern=CHANNEL_NAME_RE.pattern)]
ChannelValue = Annotated[float, Field(strict=True, allow_inf_nan=False)] | None  # strict: no bool, no text
Channels = Annotated[dict[ChannelName, ChannelValue], Field(
    max_length=MAX_CHANNELS_PER_FRAME, description="channel name -> value in the registry's unit, or null")]


class Frame(BaseModel):
    """One sample of every channel at one instant."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seq: Seq
    t: SampleTime
    channels: Channels


class FrameDict(TypedDict):
    """A frame as a plain dict: what the hot path validates into (the same rules as Frame)."""

    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]
    seq: Seq
    t: SampleTime
    channels: Channels


_ONE = TypeAdapter(FrameDict)
_BATCH = TypeAdapter(list[FrameDict])


def _field_of(exc: ValidationError) -> str:
    err = exc.errors()[0]
    return ".".join(str(p) for p in err["loc"]) or "frame"


def _error(exc: ValidationError) -> FrameError:
    err = exc.errors()[0]
    return FrameError(err["msg"], field=_field_of(exc))


def parse_frame(raw: Any) -> Frame:
    """Validate one raw frame; raise FrameError naming the field on failure."""
    if not isinstance(raw, dict):
        raise FrameError("a frame must be an object", field="frame")
    try:
        return Frame.model_validate(raw)
    except ValidationError as exc:
        raise _error(exc) from None


def parse_frames(raws: list[Any]) -> tuple[list[dict[str, Any]], list[tuple[Any, FrameError]]]:
    """Validate a batch: the good frames as dicts, in order, and (raw, error) for each bad one."""
    try:
        return _BATCH.validate_python(raws), []
    except ValidationError:
        pass
    good: list[dict[str, Any]] = []
    bad: list[tuple[Any, FrameError]] = []
    for raw in raws:
        if not isinstance(raw, dict):
            bad.append((raw, FrameError("a frame must be an object", field="frame")))
            continue
        try:
            good.append(_ONE.validate_python(raw))
        except ValidationError as exc:
            bad.append((raw, _error(exc)))
    return good, bad


def frame_seq(raw: Any) -> Any:
    """The seq of a raw frame as given, for naming it in a rejection (None if absent)."""
    return raw.get("seq") if isinstance(raw, dict) else None
