"""Export writers: CSV/JSONL/GPX round trips, the REST route's CSV kept byte for byte, bounded memory."""
from __future__ import annotations

import csv
import io
import json
import math
import os
import string
import time
import tracemalloc
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from typing import Any, Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dashboard.telemetry import export
from dashboard.telemetry.channels import CHANNEL_NAME_RE, REGISTRY
from dashboard.telemetry.frames import MAX_T, MIN_T

GPX = "{http://www.topografix.com/GPX/1/1}"
TPX = "{http://www.garmin.com/xmlschemas/TrackPointExtension/v2}"
PROPERTY = settings(max_examples=150, deadline=None)
T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z
# Frames streamed by the memory test. A million takes about 3 minutes under tracemalloc on the
# 2-core test machine (tracing makes Python 4-5x slower), so the suite streams fewer and checks the
# peak does not grow with the count; EXPORT_MEMORY_FRAMES=1000000 runs the full size.
MEMORY_FRAMES = int(os.environ.get("EXPORT_MEMORY_FRAMES", "20000"))
MEMORY_LIMIT = 2 * 1024 * 1024  # bytes: a chunk of output and a page of frames, not the session


def sample_frames() -> list[dict[str, Any]]:
    """Ten frames at 10 Hz: registry and custom channels, nulls, absent channels, a stretch without a fix."""
    frames = []
    for i in range(10):
        channels: dict[str, float | None] = {
            "rpm": 3000.0 + 100 * i,
            "speed": 72.0 + i / 3,
            "lat": 28.41270817 + i * 1e-5,
            "lon": -81.37973266 + i * 1e-5,
            "altitude": 31.5 + i / 10,
            "brake.front_bar": 0.1 * i,
        }
        frames.append({"seq": 100 + i, "t": T0 + i / 10, "received_at": T0 + 1 + i, "channels": channels})
    frames[2]["channels"]["rpm"] = None
    frames[3]["channels"]["oil_temp"] = 121.5
    frames[4]["channels"]["lat"] = frames[4]["channels"]["lon"] = None  # the fix lost for two frames
    del frames[5]["channels"]["lat"], frames[5]["channels"]["lon"]
    frames[7]["channels"]["lon"] = None  # half a position is no position
    frames[8]["channels"].update(gps_speed=90.0, heading=-10.0, satellites=9.0, hdop=0.8)
    return frames


def route_csv(frames: list[dict[str, Any]]) -> str:
    """The CSV exactly as the original `export.csv` route wrote it (csv.writer, datetime.isoformat)."""
    names = sorted({n for f in frames for n in f["channels"]})
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["seq", "t", "time_utc", *[export.column(n) for n in names]])
    for f in frames:
        writer.writerow([f["seq"], f"{f['t']:.3f}", datetime.fromtimestamp(f["t"], timezone.utc).isoformat(),
                         *["" if (v := f["channels"].get(n)) is None else repr(v) for n in names]])
    return out.getvalue()


def as_csv(frames: list[dict[str, Any]], rows_per_chunk: int = export.CHUNK_ROWS) -> str:
    return "".join(export.csv_chunks(frames, export.channel_names(frames), rows_per_chunk))


def expected_from_csv(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What a CSV reads back as: t to the millisecond, every column, absent and null both None."""
    names = export.channel_names(frames)
    return [{"seq": f["seq"], "t": float(f"{f['t']:.3f}"), "channels": {n: f["channels"].get(n) for n in names}}
            for f in frames]


def wire(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"seq": f["seq"], "t": f["t"], "channels": f["channels"]} for f in frames]


# --------------------------------------------------------------------- CSV
def test_csv_round_trip_gives_the_frames_back():
    frames = sample_frames()
    text = as_csv(frames)
    header = text.split("\r\n", 1)[0]
    assert header == ("seq,t,time_utc,altitude (m),brake.front_bar,gps_speed (km/h),hdop,heading (°),lat (°),"
                      "lon (°),oil_temp (°C),rpm (rpm),satellites,speed (km/h)")
    back = export.read_csv(text)
    assert [f["seq"] for f in back] == list(range(100, 110))
    assert back == expected_from_csv(frames)
    assert back[2]["channels"]["rpm"] is None and back[3]["channels"]["oil_temp"] == 121.5
    assert back[4]["channels"]["oil_temp"] is None  # absent reads back as null


def test_csv_is_byte_for_byte_what_the_rest_route_wrote():
    frames = sample_frames()
    assert as_csv(frames) == route_csv(frames)
    assert as_csv(frames, rows_per_chunk=3) == route_csv(frames)
    assert as_csv([]) == "seq,t,time_utc\r\n" == route_csv([])


def test_csv_chunks_stream_a_header_then_bounded_rows():
    frames = sample_frames()
    chunks = list(export.csv_chunks(frames, export.channel_names(frames), rows_per_chunk=4))
    assert chunks[0].count("\r\n") == 1  # the header goes out before the first frame is read
    assert [c.count("\r\n") for c in chunks[1:]] == [4, 4, 2]


def test_read_csv_refuses_what_is_not_an_export():
    assert export.read_csv("") == []
    with pytest.raises(ValueError):
        export.read_csv("a,b,c\r\n1,2,3\r\n")
    with pytest.raises(ValueError):
        export.read_csv("seq,t,time_utc,rpm (rpm)\r\n1,2.000,x\r\n")


@PROPERTY
@given(st.floats(min_value=MIN_T, max_value=MAX_T))
def test_iso_utc_is_datetime_isoformat(t):
    assert export.iso_utc(t) == datetime.fromtimestamp(t, timezone.utc).isoformat()


# ------------------------------------------------------------------- JSONL
def test_jsonl_round_trip_is_exact():
    frames = sample_frames()
    text = "".join(export.jsonl_chunks(frames, rows_per_chunk=3))
    assert text.count("\n") == len(frames) and "received_at" not in text
    assert export.read_jsonl(text) == wire(frames)
    assert export.read_jsonl("".join(export.jsonl_chunks([]))) == []


def test_jsonl_refuses_non_finite_values():
    with pytest.raises(ValueError):
        list(export.jsonl_chunks([{"seq": 1, "t": T0, "channels": {"rpm": math.nan}}]))


# -------------------------------------------------------- property: both
# CHANNEL_NAME_RE's language, built directly (st.from_regex is several times slower to draw)
custom_names = st.builds(str.__add__, st.sampled_from(string.ascii_lowercase),
                         st.text(string.ascii_lowercase + string.digits + "_.", max_size=63))
names = st.sampled_from(sorted(REGISTRY)) | custom_names
values = st.none() | st.floats(allow_nan=False, allow_infinity=False)
frame_lists = st.tuples(
    st.lists(st.integers(min_value=0, max_value=2**53), unique=True, max_size=12),
    st.lists(st.floats(min_value=MIN_T, max_value=MAX_T), min_size=12, max_size=12),
    st.lists(st.dictionaries(names, values, max_size=5), min_size=12, max_size=12),
).map(lambda p: [{"seq": s, "t": t, "channels": c} for s, t, c in zip(sorted(p[0]), p[1], p[2], strict=False)])


@PROPERTY
@given(frame_lists)
def test_csv_and_jsonl_round_trip_any_frames(frames):
    assert all(CHANNEL_NAME_RE.fullmatch(n) for f in frames for n in f["channels"])
    assert export.read_csv(as_csv(frames)) == expected_from_csv(frames)
    assert export.read_jsonl("".join(export.jsonl_chunks(frames, rows_per_chunk=7))) == frames


# --------------------------------------------------------------------- GPX
def parse_gpx(frames: list[dict[str, Any]], name: str = "Quali") -> ET.Element:
    return ET.fromstring("".join(export.gpx_chunks(frames, name, rows_per_chunk=2)).encode("utf-8"))


def test_gpx_has_one_point_per_frame_with_a_position():
    frames = sample_frames()
    root = parse_gpx(frames)
    assert root.tag == f"{GPX}gpx" and root.get("version") == "1.1"
    points = root.findall(f"{GPX}trk/{GPX}trkseg/{GPX}trkpt")
    placed = [f for f in frames if f["channels"].get("lat") is not None and f["channels"].get("lon") is not None]
    assert len(points) == len(placed) == 7
    for point, frame in zip(points, placed, strict=True):
        assert float(point.get("lat")) == pytest.approx(frame["channels"]["lat"], abs=1e-8)
        assert float(point.get("lon")) == pytest.approx(frame["channels"]["lon"], abs=1e-8)
        assert float(point.findtext(f"{GPX}ele")) == pytest.approx(frame["channels"]["altitude"], abs=0.005)
        stamp = point.findtext(f"{GPX}time")
        assert stamp.endswith("Z")
        when = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
        assert when == pytest.approx(frame["t"], abs=0.0005)
    times = [p.findtext(f"{GPX}time") for p in points]
    assert times == sorted(times) and len(set(times)) == len(times)
    # Losing the fix (frames 4, 5 and 7) starts a new segment; no segment is empty.
    assert [len(s) for s in root.findall(f"{GPX}trk/{GPX}trkseg")] == [4, 1, 2]


def test_gpx_of_a_cars_fix_and_tick_frames_is_one_segment_of_every_fix():
    frames: list[dict[str, Any]] = []
    for i in range(30):  # 25 Hz fix frames and, every few of them, a tick frame without position channels
        frames.append({"seq": len(frames), "t": T0 + i * 0.04,
                       "channels": {"lat": 28.4127 + i * 1e-5, "lon": -81.3797, "gps_speed": 50.0}})
        if i % 3 == 2:
            tick = {"rpm": 8000.0, "satellites": 11.0}
            frames.append({"seq": len(frames), "t": T0 + i * 0.04 + 0.01, "channels": tick})
    frames.append({"seq": len(frames), "t": T0 + 2.0, "channels": {"rpm": 8000.0, "lat": None, "lon": None}})  # stale
    frames.append({"seq": len(frames), "t": T0 + 2.1, "channels": {"lat": 28.5, "lon": -81.3797}})
    segments = parse_gpx(frames).findall(f"{GPX}trk/{GPX}trkseg")
    assert [len(s) for s in segments] == [30, 1]  # tick frames break nothing; a stale (null) position does
    assert segments[0][0].find(f"{GPX}sat") is None and segments[0][3].findtext(f"{GPX}sat") == "11"


def test_gpx_speed_course_and_quality_of_a_point():
    root = parse_gpx(sample_frames())
    point = root.findall(f".//{GPX}trkpt")[5]  # frame 8: gps_speed, heading, satellites, hdop
    assert point.findtext(f"{GPX}sat") == "9" and point.findtext(f"{GPX}hdop") == "0.80"
    ext = point.find(f"{GPX}extensions/{TPX}TrackPointExtension")
    assert float(ext.findtext(f"{TPX}speed")) == pytest.approx(25.0)  # 90 km/h, GPS speed before OBD
    assert float(ext.findtext(f"{TPX}course")) == pytest.approx(350.0)
    first = root.findall(f".//{GPX}trkpt")[0]
    assert float(first.findtext(f".//{TPX}speed")) == pytest.approx(72.0 / 3.6, abs=0.001)  # OBD speed
    assert first.find(f".//{TPX}course") is None and first.find(f"{GPX}sat") is None


def test_gpx_name_is_escaped_and_an_empty_track_is_valid():
    root = parse_gpx([], name='Q&A <lap> "1"\x01')
    assert root.findtext(f"{GPX}trk/{GPX}name") == 'Q&A <lap> "1"'
    assert root.findtext(f"{GPX}metadata/{GPX}name") == 'Q&A <lap> "1"'
    assert root.findall(f".//{GPX}trkpt") == [] and root.findall(f".//{GPX}trkseg") == []


def test_gpx_time_is_utc_milliseconds():
    assert export.gpx_time(T0) == "2023-11-14T22:13:20.000Z"
    assert export.gpx_time(T0 + 0.1234) == "2023-11-14T22:13:20.123Z"
    assert export.gpx_time(T0 + 59.9996) == "2023-11-14T22:14:20.000Z"


# ---------------------------------------------------------- bounded memory
def synthetic_frames(count: int) -> Iterator[dict[str, Any]]:
    """A long session produced one frame at a time, as the store's pages feed it."""
    for i in range(count):
        yield {"seq": i, "t": T0 + i / 10, "channels": {
            "lat": 28.4127 + 1e-4 * math.sin(i / 300), "lon": -81.3797 + 1e-4 * math.cos(i / 300),
            "altitude": 30.0, "speed": 100.0 + i % 50, "rpm": 6000.0 if i % 3 else None,
            "heading": float(i % 360)}}


def peak_while_streaming(chunks: Iterator[str]) -> tuple[int, int]:
    """Peak traced memory and bytes of text, consuming ``chunks`` as a response would."""
    tracemalloc.start()
    try:
        size = sum(len(c) for c in chunks)
        return tracemalloc.get_traced_memory()[1], size
    finally:
        tracemalloc.stop()


def test_memory_stays_bounded_however_long_the_session():
    columns = ["altitude", "heading", "lat", "lon", "rpm", "speed"]
    writers = {
        "csv": lambda n: export.csv_chunks(synthetic_frames(n), columns),
        "jsonl": lambda n: export.jsonl_chunks(synthetic_frames(n)),
        "gpx": lambda n: export.gpx_chunks(synthetic_frames(n), "long session"),
    }
    started = time.monotonic()
    for fmt, chunks in writers.items():
        short_peak, _ = peak_while_streaming(chunks(MEMORY_FRAMES // 10))
        peak, size = peak_while_streaming(chunks(MEMORY_FRAMES))
        assert size > 60 * MEMORY_FRAMES, fmt  # the text really was produced: far more than the peak
        assert peak < MEMORY_LIMIT, (fmt, peak)
        assert peak < short_peak + 256 * 1024, (fmt, short_peak, peak)  # ten times the frames, same memory
    assert time.monotonic() - started < 60


# ---------------------------------------------------------------------- messages and the event log
def _logged(i: int, kind: str, t: Any, **payload: Any) -> dict[str, Any]:
    return {"id": i, "event_type": kind, "timestamp": t, "record_id": f"r{i}", "payload": payload}


LOG = [
    _logged(1, "session.started", 100.0, status="active"),
    _logged(2, "message.queued", 101.0, message_id="m1", lat=None, lon=None, message={"text": "BOX <NOW> & in"}),
    _logged(3, "message.delivered", 102.0, message_id="m1", lap=2, lat=28.4, lon=-81.3),
    _logged(4, "message.answered", 103.5, message_id="m1", lap=2, lat=28.5, lon=-81.2, answer="yes"),
    _logged(5, "message.seen", float("nan"), message_id="m2", lat=1.0, lon=2.0),  # no usable time: no point
    _logged(6, "message.seen", 104.0, message_id="m3", lat=95.0, lon=2.0),  # off the globe: no point
    _logged(7, "message.seen", 105.0, message_id="m4", lat=True, lon=2.0),  # not a number
    _logged(8, "lap.completed", 106.0, lap=2, lat=28.4, lon=-81.3),  # not a message: no waypoint
    {"id": 9, "event_type": "message.seen", "timestamp": 107.0, "record_id": None, "payload": "garbage"},
]


def test_message_transitions_with_a_position_become_named_waypoints():
    points = export.message_waypoints(LOG)
    assert points == [(102.0, 28.4, -81.3, "BOX <NOW> & in: delivered", "message.delivered"),
                      (103.5, 28.5, -81.2, "BOX <NOW> & in: answered yes", "message.answered")]
    assert export.message_waypoints(LOG, start_t=103.0, end_t=110.0) == points[1:]  # one lap's window
    assert export.message_waypoints(LOG, start_t=110.0) == []


def test_gpx_waypoints_come_before_the_track_and_escape_their_names():
    frames = [{"seq": 0, "t": 100.0, "channels": {"lat": 28.4, "lon": -81.3}}]
    text = "".join(export.gpx_chunks(frames, "Race", waypoints=export.message_waypoints(LOG)))
    root = ET.fromstring(text.encode("utf-8"))
    children = [child.tag for child in root]
    assert children == [f"{GPX}metadata", f"{GPX}wpt", f"{GPX}wpt", f"{GPX}trk"]  # GPX 1.1's order
    first = root.find(f"{GPX}wpt")
    assert (first.get("lat"), first.get("lon")) == ("28.4000000", "-81.3000000")
    assert first.findtext(f"{GPX}name") == "BOX <NOW> & in: delivered"
    assert first.findtext(f"{GPX}type") == "message.delivered"
    assert first.findtext(f"{GPX}time") == export.gpx_time(102.0)


def test_the_event_log_as_csv_keeps_every_entry_and_reads_back():
    text = "".join(export.events_csv_chunks(LOG, rows_per_chunk=3))
    rows = list(csv.DictReader(io.StringIO(text)))
    assert tuple(rows[0]) == export.EVENT_COLUMNS
    assert [int(r["id"]) for r in rows] == [e["id"] for e in LOG]
    answered = rows[3]
    assert (answered["type"], answered["t"], answered["lap"], answered["lat"], answered["lon"]) == \
        ("message.answered", "103.500", "2", "28.5", "-81.2")
    assert answered["time_utc"] == export.iso_utc(103.5)
    assert json.loads(answered["data"])["answer"] == "yes"
    assert (rows[4]["t"], rows[4]["time_utc"]) == ("", "")  # a NaN time is left empty, not written as nan
    assert rows[8]["data"] == '"garbage"' and rows[8]["lap"] == "" and rows[8]["record_id"] == ""
