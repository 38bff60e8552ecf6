"""Export formats of a session's frames: CSV, JSON Lines and a GPX track, streamed.

Pure: every writer is a generator that takes an iterable of frames
``{seq, t, channels}`` (any extra keys, such as ``received_at``, are ignored)
and yields text chunks, holding no more than one chunk of output at a time. A
caller feeds it from the store page by page, so memory stays bounded however
long the session. The readers turn an export back into frames, for round trips.

- CSV: ``seq,t,time_utc`` then one column per channel named ``name (unit)``
  (unit from the registry; custom channels are bare). ``t`` has 3 decimals,
  values are ``repr`` of the float, an empty cell is null *or absent*: reading
  a CSV back gives every column of every row, ``None`` where the cell is empty.
- JSON Lines: one frame per line, ``{"seq", "t", "channels"}`` exactly as on the
  wire, so a JSONL export reads back to the same frames and can be sent again.
- GPX 1.1: one track, a new segment after each stretch without a fix; a point
  per frame with both ``lat`` and ``lon``, with ``<ele>`` from ``altitude``,
  ``<time>`` in UTC, ``<sat>``/``<hdop>``, and speed (m/s) and course in
  Garmin's TrackPointExtension v2, which Strava, GPXSee and most tools read.
  A frame without position channels at all (a car's tick frame between its
  fix frames) neither adds a point nor ends the segment; one that carries them
  as null (no fix, or stale) does. ``<sat>`` is the last count any frame gave.
  The pit's messages to the driver become waypoints (``<wpt>``) where the car
  was when each reached a state (delivered, seen, answered...), named with the
  message's text and the state (``message_waypoints``).
- Events (CSV): the session's event log, one row per entry in order:
  ``id,t,time_utc,type,record_id,lap,lat,lon,data`` (``lap``/``lat``/``lon`` when
  the entry has them: every message transition does; ``data`` the whole entry
  as JSON). Status changes, setups, laps, alerts, messages: the story of the session.
"""
from __future__ import annotations

import csv
import functools
import io
import json
import math
import re
import time
from typing import Any, Iterable, Iterator, Mapping, Sequence
from xml.sax.saxutils import escape

from dashboard.telemetry.channels import get_channel

FORMATS = ("csv", "jsonl", "gpx", "events")
MEDIA_TYPES = {"csv": "text/csv", "jsonl": "application/x-ndjson", "gpx": "application/gpx+xml", "events": "text/csv"}
SUFFIXES = {"csv": "csv", "jsonl": "jsonl", "gpx": "gpx", "events": "events.csv"}
EVENT_COLUMNS = ("id", "t", "time_utc", "type", "record_id", "lap", "lat", "lon", "data")
MESSAGE_EVENT_PREFIX = "message."
CHUNK_ROWS = 1000  # rows per yielded chunk: ~50-150 KB, few enough chunks that streaming costs nothing extra

CSV_FIXED_COLUMNS = ("seq", "t", "time_utc")
GPX_CREATOR = "race-dashboard"
KMH_PER_MS = 3.6
# Characters XML 1.0 does not allow at all, even escaped (a session name could carry them).
_XML_INVALID = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")

FrameLike = Mapping[str, Any]  # {seq, t, channels}, maybe more keys


# ---------------------------------------------------------------------- CSV
def column(name: str) -> str:
    """The CSV header of a channel: ``name (unit)``, or the bare name when it has no unit."""
    channel = get_channel(name)
    return f"{name} ({channel.unit})" if channel and channel.unit else name


def column_channel(header: str) -> str:
    """The channel name of a CSV header (``"rpm (rpm)"`` -> ``"rpm"``); names never hold a space."""
    return header.split(" (", 1)[0]


def cell(value: float | None) -> str:
    """A channel value as a CSV cell: empty for null, else the float's exact ``repr``."""
    return "" if value is None else repr(value)


def iso_utc(t: float) -> str:
    """Epoch seconds as ISO 8601 UTC with offset (``2023-05-01T12:00:00.100000+00:00``).

    The same text as ``datetime.fromtimestamp(t, timezone.utc).isoformat()`` (microseconds
    rounded half to even, omitted when zero), nearly twice as fast: the date and time
    of the whole second are formatted once per second, and a 10 Hz session repeats them.
    """
    frac, whole = math.modf(t)
    us = round(frac * 1e6)
    if us >= 1_000_000:
        us -= 1_000_000
        whole += 1
    elif us < 0:
        us += 1_000_000
        whole -= 1
    prefix = _second_prefix(int(whole))
    return f"{prefix}.{us:06d}+00:00" if us else f"{prefix}+00:00"


@functools.lru_cache(maxsize=4)
def _second_prefix(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


def channel_names(frames: Iterable[FrameLike]) -> list[str]:
    """Every channel name that appears in ``frames``, sorted: the CSV's columns (a first pass)."""
    names: set[str] = set()
    for frame in frames:
        names.update(frame["channels"])
    return sorted(names)


def csv_chunks(frames: Iterable[FrameLike], channels: Sequence[str], rows_per_chunk: int = CHUNK_ROWS) -> Iterator[str]:
    """The frames as CSV text in chunks; ``channels`` are the columns, in order (see ``channel_names``)."""
    out = io.StringIO()
    csv.writer(out).writerow([*CSV_FIXED_COLUMNS, *(column(n) for n in channels)])  # names may need quoting
    yield out.getvalue()
    # A data row is numbers and an ISO time, never a comma, quote or newline: joined as csv.writer would.
    lines: list[str] = []
    for f in frames:
        values = f["channels"]
        t = f["t"]
        cells = ["" if (v := values.get(n)) is None else repr(v) for n in channels]
        lines.append(",".join((str(f["seq"]), f"{t:.3f}", iso_utc(t), *cells)))
        if len(lines) == rows_per_chunk:
            yield "\r\n".join(lines) + "\r\n"
            lines = []
    if lines:
        yield "\r\n".join(lines) + "\r\n"


def read_csv(text: str) -> list[dict[str, Any]]:
    """Frames back from a CSV export: every column in every frame, None for an empty cell.

    ``t`` comes back with the 3 decimals it was written with.
    """
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header is None:
        return []
    if tuple(header[:3]) != CSV_FIXED_COLUMNS:
        raise ValueError(f"not a telemetry CSV: header starts {header[:3]!r}")
    names = [column_channel(h) for h in header[3:]]
    frames = []
    for row in reader:
        if len(row) != len(header):
            raise ValueError(f"row {reader.line_num} has {len(row)} cells, the header {len(header)}")
        channels = {n: (None if v == "" else float(v)) for n, v in zip(names, row[3:], strict=True)}
        frames.append({"seq": int(row[0]), "t": float(row[1]), "channels": channels})
    return frames


# -------------------------------------------------------------- JSON Lines
def jsonl_chunks(frames: Iterable[FrameLike], rows_per_chunk: int = CHUNK_ROWS) -> Iterator[str]:
    """The frames as JSON Lines (``{"seq","t","channels"}`` a line) in chunks."""
    encode = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode
    lines: list[str] = []
    for f in frames:
        lines.append(encode({"seq": f["seq"], "t": f["t"], "channels": f["channels"]}))
        if len(lines) == rows_per_chunk:
            yield "\n".join(lines) + "\n"
            lines = []
    if lines:
        yield "\n".join(lines) + "\n"


def read_jsonl(text: str) -> list[dict[str, Any]]:
    """Frames back from a JSON Lines export (blank lines are skipped)."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# --------------------------------------------------------------------- GPX
GPX_HEADER = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    f'<gpx version="1.1" creator="{GPX_CREATOR}" xmlns="http://www.topografix.com/GPX/1/1"'
    ' xmlns:gpxtpx="http://www.garmin.com/xmlschemas/TrackPointExtension/v2"'
    ' xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
    ' xsi:schemaLocation="http://www.topografix.com/GPX/1/1 http://www.topografix.com/GPX/1/1/gpx.xsd'
    ' http://www.garmin.com/xmlschemas/TrackPointExtension/v2'
    ' https://www8.garmin.com/xmlschemas/TrackPointExtensionv2.xsd">\n'
)


def xml_text(text: str) -> str:
    """``text`` safe inside an XML element: escaped, and characters XML forbids dropped."""
    return escape(_XML_INVALID.sub("", text))


def gpx_time(t: float) -> str:
    """Epoch seconds as a GPX ``<time>``: UTC, milliseconds, ``Z``."""
    whole, ms = divmod(round(t * 1000), 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{ms:03d}Z"


def _trkpt(t: float, lat: float, lon: float, channels: Mapping[str, Any]) -> str:
    parts = [f'<trkpt lat="{lat:.8f}" lon="{lon:.8f}">']  # 1e-8 degree is ~1 mm: finer than any GPS
    altitude = channels.get("altitude")
    if altitude is not None:
        parts.append(f"<ele>{altitude:.2f}</ele>")
    parts.append(f"<time>{gpx_time(t)}</time>")
    satellites = channels.get("satellites")
    if satellites is not None and satellites >= 0:
        parts.append(f"<sat>{int(satellites)}</sat>")
    hdop = channels.get("hdop")
    if hdop is not None:
        parts.append(f"<hdop>{hdop:.2f}</hdop>")
    speed = channels.get("gps_speed")
    if speed is None:
        speed = channels.get("speed")
    course = channels.get("heading")
    if speed is not None or course is not None:
        parts.append("<extensions><gpxtpx:TrackPointExtension>")
        if speed is not None:
            parts.append(f"<gpxtpx:speed>{speed / KMH_PER_MS:.3f}</gpxtpx:speed>")
        if course is not None:
            parts.append(f"<gpxtpx:course>{course % 360:.2f}</gpxtpx:course>")
        parts.append("</gpxtpx:TrackPointExtension></extensions>")
    parts.append("</trkpt>\n")
    return "".join(parts)


def gpx_chunks(frames: Iterable[FrameLike], name: str, rows_per_chunk: int = CHUNK_ROWS,
               waypoints: Iterable[Waypoint] = ()) -> Iterator[str]:
    """The frames' positions as a GPX 1.1 track named ``name``, in chunks, after ``waypoints``.

    Frames without both ``lat`` and ``lon`` give no point; the first point after
    such a stretch opens a new ``<trkseg>``, as GPS loggers do after losing the fix.
    """
    label = xml_text(name)
    marks = "".join(_wpt(w) for w in waypoints)  # GPX 1.1 puts every <wpt> before the tracks
    yield f"{GPX_HEADER}<metadata><name>{label}</name></metadata>\n{marks}<trk><name>{label}</name>\n"
    points: list[str] = []
    in_segment = False
    satellites: Any = None
    for f in frames:
        channels = f["channels"]
        if "satellites" in channels:
            satellites = channels["satellites"]
        if "lat" not in channels and "lon" not in channels:
            continue  # a tick frame: the positions travel in the fix frames around it
        lat, lon = channels.get("lat"), channels.get("lon")
        if lat is None or lon is None:
            if in_segment:
                points.append("</trkseg>\n")
                in_segment = False
            continue
        if not in_segment:
            points.append("<trkseg>\n")
            in_segment = True
        if "satellites" not in channels and satellites is not None:
            channels = {**channels, "satellites": satellites}
        points.append(_trkpt(f["t"], lat, lon, channels))
        if len(points) >= rows_per_chunk:
            yield "".join(points)
            points = []
    if in_segment:
        points.append("</trkseg>\n")
    points.append("</trk>\n</gpx>\n")
    yield "".join(points)


# ---------------------------------------------------------------------- waypoints and the event log
Waypoint = tuple[float, float, float, str, str]  # t, lat, lon, name, type
EventLike = Mapping[str, Any]  # a stored log entry: {id, event_type, timestamp, record_id, payload}


def _wpt(point: Waypoint) -> str:
    t, lat, lon, name, kind = point
    return (f'<wpt lat="{lat:.7f}" lon="{lon:.7f}"><time>{gpx_time(t)}</time><name>{xml_text(name)}</name>'
            f"<type>{xml_text(kind)}</type></wpt>\n")


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value) else None


def message_waypoints(events: Iterable[EventLike], start_t: float | None = None,
                      end_t: float | None = None) -> list[Waypoint]:
    """Each message transition that has the car's position, as a waypoint named "TEXT: state [answer]".

    ``events`` are log entries in order (the ``message.queued`` entry carries the text); only those with
    ``start_t <= t <= end_t`` (when given) become waypoints. Entries that are not messages are skipped.
    """
    texts: dict[str, str] = {}
    points: list[Waypoint] = []
    for event in events:
        kind = str(event.get("event_type", ""))
        payload = event.get("payload")
        if not kind.startswith(MESSAGE_EVENT_PREFIX) or not isinstance(payload, Mapping):
            continue
        message_id = str(payload.get("message_id", ""))
        message = payload.get("message")
        if isinstance(message, Mapping) and isinstance(message.get("text"), str):
            texts[message_id] = message["text"]
        t, lat, lon = _finite(event.get("timestamp")), _finite(payload.get("lat")), _finite(payload.get("lon"))
        if t is None or lat is None or lon is None or not (-90 <= lat <= 90 and -180 <= lon <= 180):
            continue
        if (start_t is not None and t < start_t) or (end_t is not None and t > end_t):
            continue
        state = kind[len(MESSAGE_EVENT_PREFIX):]
        answer = payload.get("answer")
        label = f"{texts.get(message_id, 'message')}: {state}" + (f" {answer}" if isinstance(answer, str) else "")
        points.append((t, lat, lon, label, kind))
    return points


def events_csv_chunks(events: Iterable[EventLike], rows_per_chunk: int = CHUNK_ROWS) -> Iterator[str]:
    """A session's event log as CSV (``EVENT_COLUMNS``), in chunks."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(EVENT_COLUMNS)
    rows = 0
    for event in events:
        payload = event.get("payload")
        fields = payload if isinstance(payload, Mapping) else {}
        t = _finite(event.get("timestamp"))
        lap = fields.get("lap")
        writer.writerow((
            event.get("id", ""), "" if t is None else f"{t:.3f}", "" if t is None else iso_utc(t),
            event.get("event_type", ""), event.get("record_id") or "",
            lap if isinstance(lap, int) and not isinstance(lap, bool) else "",
            cell(_finite(fields.get("lat"))), cell(_finite(fields.get("lon"))),
            json.dumps(payload, separators=(",", ":"), sort_keys=True, default=str),
        ))
        rows += 1
        if rows >= rows_per_chunk:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
            rows = 0
    yield buffer.getvalue()
