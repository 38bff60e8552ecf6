"""Query parameters of REST API v1: what each route reads and the OpenAPI document says, from one definition.

A route reads its parameters through these objects (``.read()``: the value, or InvalidInput naming the parameter),
and ``dashboard/server/openapi.py`` documents the same objects (``.schema()``: type, bounds, enum, pattern), so the
document's minimum, maximum and enum are the bounds the server checks. An empty value (``?limit=``) is the same as
no value, for every parameter (``allowEmptyValue`` in the document).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from flask import request

from dashboard.errors import InvalidInput
from dashboard.telemetry.export import FORMATS
from dashboard.telemetry.importers import FORMATS as IMPORT_FORMATS

INT64_MAX = 2**63 - 1  # the largest integer every database here stores
MAX_PAGE = 100  # sessions in one page of GET /sessions
MAX_ITEMS = 10_000  # frames or events in one page
STATUSES = ("created", "active", "stopped", "ended", "expired")
CAR_ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"  # as schemas.CarId
SESSION_ID_PATTERN = r"^[^\x00]{1,64}$"  # as schemas.SessionId: text a database can store


@dataclass(frozen=True)
class IntQuery:
    """An integer within ``low..high`` (never beyond a database's 64-bit integer)."""

    name: str
    default: int | None
    low: int
    high: int = INT64_MAX
    doc: str = ""

    def read(self) -> int | None:
        """The value, the default when absent or empty; InvalidInput naming the parameter otherwise."""
        raw = request.args.get(self.name)
        if raw is None or raw == "":
            return self.default
        if len(raw) > 20:
            raise InvalidInput(f"{self.name} must be {self.low}..{self.high}", field=self.name)
        try:
            value = int(raw)
        except ValueError:
            raise InvalidInput(f"{self.name} must be an integer", field=self.name) from None
        if value < self.low or value > self.high:
            raise InvalidInput(f"{self.name} must be {self.low}..{self.high}", field=self.name)
        return value

    def schema(self) -> dict[str, Any]:
        """Its JSON Schema in the OpenAPI document."""
        schema: dict[str, Any] = {"type": "integer", "minimum": self.low, "maximum": self.high}
        if self.default is not None:
            schema["default"] = self.default
        return schema


@dataclass(frozen=True)
class EnumQuery:
    """One of a few words."""

    name: str
    values: tuple[str, ...]
    default: str | None = None
    doc: str = ""

    def read(self) -> str | None:
        """The value, the default when absent or empty; InvalidInput naming the parameter otherwise."""
        raw = request.args.get(self.name) or None
        if raw is None:
            return self.default
        if raw not in self.values:
            raise InvalidInput(f"{self.name} must be one of {', '.join(self.values)}", field=self.name)
        return raw

    def schema(self) -> dict[str, Any]:
        """Its JSON Schema in the OpenAPI document."""
        schema: dict[str, Any] = {"type": "string", "enum": list(self.values)}
        if self.default is not None:
            schema["default"] = self.default
        return schema


@dataclass(frozen=True)
class TextQuery:
    """Text matching a pattern (which bounds its length too)."""

    name: str
    pattern: str
    message: str
    doc: str = ""
    required: bool = False

    def read(self) -> str | None:
        """The value, None when absent or empty; InvalidInput naming the parameter when it does not match
        (or, when ``required``, is absent)."""
        raw = request.args.get(self.name) or None
        if raw is None and self.required:
            raise InvalidInput(f"{self.name} is required: {self.message}", field=self.name)
        if raw is not None and not re.fullmatch(self.pattern, raw):
            raise InvalidInput(f"{self.name} must be {self.message}", field=self.name)
        return raw

    def schema(self) -> dict[str, Any]:
        """Its JSON Schema in the OpenAPI document."""
        return {"type": "string", "pattern": self.pattern}


Query = IntQuery | EnumQuery | TextQuery

SESSIONS_LIMIT = IntQuery("limit", 20, 1, MAX_PAGE, "sessions in this page")
OFFSET = IntQuery("offset", 0, 0, doc="sessions skipped, newest first")
STATUS = EnumQuery("status", STATUSES, doc="only sessions in this status")
CAR_ID = TextQuery("car_id", CAR_ID_PATTERN, "1-64 letters, digits or _.:-", "a car id")
SESSION_ID = TextQuery("session_id", SESSION_ID_PATTERN, "a session id (up to 64 characters, no NUL)",
                       "a session id")
AFTER_SEQ = IntQuery("after_seq", -1, -1, doc="frames after this seq (-1: from the first)")
AFTER_ID = IntQuery("after_id", 0, 0, doc="events after this id")
ITEMS_LIMIT = IntQuery("limit", 1000, 1, MAX_ITEMS, "items in this page")
FORMAT = EnumQuery("format", FORMATS, "csv", "csv (a column per channel), jsonl, gpx (with the pit's messages as "
                   "waypoints) or events (the session's event log as CSV: messages, laps, alerts, status)")
LAP = IntQuery("lap", None, 0, doc="only this lap (0: the out-lap); the whole session without it")
IMPORT_FORMAT = EnumQuery("format", IMPORT_FORMATS, doc="the file's format; told from its content without it")
TRACK = TextQuery("track", r"^[^\x00]{1,200}$", "a track's name or id (up to 200 characters)",
                  "a stored track's name (case-insensitive) or id to time the laps on; without it, the first "
                  "stored track whose start/finish line the path crosses")
NAME = TextQuery("name", r"^[^\x00]{1,200}$", "a name of up to 200 characters", "the session's name (default: the "
                 "file's own title, else its file name)")

# laps compared (compare_api.py)
CHANNEL = r"[a-z][a-z0-9_.]{0,63}"  # as channels.CHANNEL_NAME_RE
MAX_TRACE_CHANNELS = 8
LAP_REF = r"[^,:\x00]{1,64}:[0-9]{1,9}"
TRACK_ID = TextQuery("track_id", SESSION_ID_PATTERN, "a track id", "a track id (the car's newest session's track "
                     "without it)")
CHANNELS = TextQuery("channels", rf"^{CHANNEL}(,{CHANNEL}){{0,{MAX_TRACE_CHANNELS - 1}}}$",
                     f"1-{MAX_TRACE_CHANNELS} channel names separated by commas",
                     "channels resampled, comma-separated (default speed,gps_speed,rpm,throttle)")
POINTS = IntQuery("points", 2000, 2, 4000, "points per lap, equally spaced by distance")
SEGMENTS = IntQuery("segments", 50, 1, 500, "stretches of the lap the delta's gains and losses are given for "
                    "(at most points - 1)")
LAPS = TextQuery("laps", rf"^{LAP_REF}(,{LAP_REF}){{0,5}}$", "1-6 session_id:lap pairs separated by commas",
                 "the laps, session_id:lap, comma-separated; the first is the reference", required=True)
