"""Telemetry frames: the one message shape of the data path, and its validation.

A frame is ``{seq, t, channels}``: ``seq`` the monitor's increasing integer
(continuing across restarts), ``t`` epoch seconds of the sample, ``channels`` a
map of channel name to a finite number, or null when the value is unknown or
stale. Validation is pure and per frame, so a batch keeps its good frames and
rejects the bad ones one by one, each with the field to blame.
"""
from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, field_validator

from dashboard.errors import FrameError
from dashboard.telemetry.channels import CHANNEL_NAME_RE, MAX_CHANNELS_PER_FRAME

MIN_T = 946684800.0  # 2000-01-01: anything earlier is a clock that was never set
MAX_T = 4102444800.0  # 2100-01-01
MAX_SEQ = 2**53  # exact in a JavaScript number and in a JSON double


class Frame(BaseModel):
    """One sample of every channel at one instant."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seq: Annotated[StrictInt, Field(ge=0, le=MAX_SEQ, description="monitor's increasing sequence number")]
    t: Annotated[float, Field(ge=MIN_T, le=MAX_T, allow_inf_nan=False, description="sample time, epoch seconds")]
    channels: Annotated[
        dict[str, float | None],
        Field(max_length=MAX_CHANNELS_PER_FRAME, description="channel name -> value in the registry's unit, or null"),
    ]

    @field_validator("channels", mode="before")
    @classmethod
    def _check_channels(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value  # the type check reports it
        for name, v in value.items():
            if not isinstance(name, str) or not CHANNEL_NAME_RE.fullmatch(name):
                raise ValueError(f"bad channel name {name!r}")
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ValueError(f"channel {name!r}: value must be a number or null")
            if not math.isfinite(v):
                raise ValueError(f"channel {name!r}: value must be finite")
        return value


def _field_of(exc: ValidationError) -> str:
    err = exc.errors()[0]
    return ".".join(str(p) for p in err["loc"]) or "frame"


def parse_frame(raw: Any) -> Frame:
    """Validate one raw frame; raise FrameError naming the field on failure."""
    if not isinstance(raw, dict):
        raise FrameError("a frame must be an object", field="frame")
    try:
        return Frame.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise FrameError(err["msg"], field=_field_of(exc)) from None


def frame_seq(raw: Any) -> Any:
    """The seq of a raw frame as given, for naming it in a rejection (None if absent)."""
    return raw.get("seq") if isinstance(raw, dict) else None
