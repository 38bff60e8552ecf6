"""A GPX track (1.0 or 1.1) as frames: each ``<trkpt>`` with a ``<time>`` a fix frame. Pure.

Read with the standard library's ``iterparse``, each point cleared once read, so memory stays
bounded however long the track (gpxpy builds the whole document in memory). Namespaces are
ignored, so GPX 1.0 and 1.1 and their common extensions read alike: ``ele`` is altitude,
``speed`` (m/s) gps_speed, ``course`` heading, ``sat`` and ``hdop`` as named. A point without a
time cannot be placed and is skipped; XML that does not parse is a bad file at its line.
"""
from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ET
from typing import Iterable, Iterator

from dashboard.telemetry.importers import BadImportFile, ImportFrame, ImportReport, valid_time
from dashboard.telemetry.importers.units import MS_TO_KMH

CHILDREN = {"ele": ("altitude", 1.0), "speed": ("gps_speed", MS_TO_KMH), "course": ("heading", 1.0),
            "sat": ("satellites", 1.0), "hdop": ("hdop", 1.0)}
POINTS = ("trkpt", "rtept")


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _time(text: str) -> float:
    when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return (when if when.tzinfo else when.replace(tzinfo=dt.UTC)).timestamp()


def frames(lines: Iterable[str], report: ImportReport) -> Iterator[ImportFrame]:
    """Frames of a GPX file, one per track (or route) point with a time."""
    parser = ET.XMLPullParser(events=("start", "end"))
    root_seen = False
    line_no = 0
    for line_no, line in enumerate(lines, 1):  # fed a line at a time: an event's line is the one just fed
        try:
            parser.feed(line)
            events = list(parser.read_events())
        except ET.ParseError as exc:
            raise BadImportFile(f"not well-formed XML ({exc})", line_no) from None
        for event, elem in events:
            tag = _local(elem.tag)
            if event == "start":
                if not root_seen:
                    root_seen = True
                    if tag != "gpx":
                        raise BadImportFile(f"the document is <{tag}>, not <gpx>", line_no)
                continue
            if tag not in POINTS:
                continue
            report.rows += 1
            point = _point(elem, line_no, report)
            elem.clear()
            if point is not None:
                yield point
    try:
        parser.close()
    except ET.ParseError as exc:
        raise BadImportFile(f"the XML ends early ({exc})", line_no) from None


def _point(elem: ET.Element, line: int, report: ImportReport) -> ImportFrame | None:
    try:
        lat, lon = float(elem.attrib["lat"]), float(elem.attrib["lon"])
    except (KeyError, ValueError):
        report.skip(line, "a point without a numeric lat and lon")
        return None
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        report.skip(line, f"position {lat}, {lon} is not on Earth")
        return None
    values: dict[str, float | None] = {"lat": lat, "lon": lon}
    t = None
    for child in elem.iter():
        tag = _local(child.tag)
        text = (child.text or "").strip()
        if tag == "time" and text:
            try:
                t = _time(text)
            except ValueError:
                report.skip(line, f"time {text[:30]!r} is not ISO 8601")
                return None
        elif tag in CHILDREN and text:
            channel, factor = CHILDREN[tag]
            try:
                values[channel] = float(text) * factor
            except ValueError:
                report.skip(line, f"<{tag}> {text[:20]!r} is not a number")
                return None
    if t is None:
        report.skip(line, "a point without a time")
        return None
    if not valid_time(t):
        report.skip(line, "time not between 2000 and 2100")
        return None
    return ImportFrame(t, values, line)
