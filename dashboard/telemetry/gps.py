"""NMEA 0183 → GPS channel values: a pure decoder, no I/O.

A small pipeline in the Signal K streams style: bytes/text → line splitter →
sentence splitter (survives run-on sentences) → pynmea2 parser → channel
values in the registry's units. GGA, RMC and VTG are understood; anything else
with a valid checksum is counted as ignored, a bad checksum or garbage is
counted as an error and skipped, never fatal.

A sentence without a fix yields no position: pynmea2 answers 0.0 for empty
latitude/longitude fields, so position channels are set to None instead, and
the car is never plotted at 0,0.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pynmea2

KNOTS_TO_KMH = 1.852  # exact, by definition of the knot
SENTENCE_START = "$"
MAX_LINE_CHARS = 4096  # a valid sentence is <= 82 chars; a longer buffer without newline is garbage
POSITION_CHANNELS = ("lat", "lon", "gps_speed", "heading", "altitude", "hdop")


@dataclass(frozen=True)
class GpsReading:
    """Channel values decoded from one sentence, with its GPS time when known."""

    sentence: str
    values: dict[str, float | None]
    time: float | None = None  # epoch seconds from the receiver's clock

    @property
    def has_fix(self) -> bool:
        """True when this sentence carries a position."""
        return self.values.get("lat") is not None


@dataclass
class DecoderCounters:
    """What the decoder has seen, for the source status and tests."""

    sentences: int = 0
    errors: int = 0
    ignored: int = 0
    fixes: int = 0
    no_fix: int = 0


def with_checksum(sentence: str) -> str:
    """The sentence (with or without ``$`` and ``*HH``) with its correct NMEA checksum."""
    body = sentence.strip().lstrip(SENTENCE_START).split("*")[0]
    checksum = 0
    for ch in body:
        checksum ^= ord(ch)
    return f"{SENTENCE_START}{body}*{checksum:02X}"


def split_sentences(line: str) -> list[str]:
    """Split one line into candidate sentences at each ``$`` (run-on sentences survive)."""
    line = line.strip()
    if not line:
        return []
    pieces = line.split(SENTENCE_START)
    out = []
    if pieces[0].strip():
        out.append(pieces[0].strip())  # text before the first '$' is garbage, kept to be counted
    out.extend(SENTENCE_START + p.strip() for p in pieces[1:] if p.strip())
    return out


def _epoch(date: dt.date | None, time: dt.time | None) -> float | None:
    if date is None or time is None:
        return None
    tz = time.tzinfo or dt.UTC
    return dt.datetime.combine(date, time.replace(tzinfo=None), tzinfo=tz).timestamp()


def _float(text: object) -> float | None:
    if text is None or text == "":
        return None
    try:
        return float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _heading(value: float | None) -> float | None:
    if value is None or not 0.0 <= value <= 360.0:
        return None
    return value % 360.0


@dataclass
class NmeaDecoder:
    """Stateful NMEA decoder: feed text, get GpsReadings; remembers the date from RMC for GGA."""

    counters: DecoderCounters = field(default_factory=DecoderCounters)
    _buffer: str = ""
    _date: dt.date | None = None
    _seen_gga: bool = False

    def feed(self, text: str) -> list[GpsReading]:
        """Decode a chunk of text (any split); an incomplete last line waits for the next chunk."""
        lines = (self._buffer + text).split("\n")
        self._buffer = lines.pop()
        if len(self._buffer) > MAX_LINE_CHARS:
            self.counters.errors += 1
            self._buffer = ""
        readings: list[GpsReading] = []
        for line in lines:
            readings.extend(self.decode_line(line))
        return readings

    def decode_line(self, line: str) -> list[GpsReading]:
        """Decode one complete line (possibly several run-on sentences)."""
        readings = []
        for candidate in split_sentences(line):
            reading = self.decode_sentence(candidate)
            if reading is not None:
                readings.append(reading)
        return readings

    def decode_sentence(self, sentence: str) -> GpsReading | None:
        """Decode one sentence; None (and counted) when it is bad or not a GGA/RMC/VTG."""
        try:
            msg = pynmea2.parse(sentence, check=True)  # checksum required: truncated sentences lack one
        except (pynmea2.ParseError, ValueError, AttributeError):
            self.counters.errors += 1
            return None
        try:
            if isinstance(msg, pynmea2.types.talker.RMC):
                reading = self._rmc(msg)
            elif isinstance(msg, pynmea2.types.talker.GGA):
                reading = self._gga(msg)
            elif isinstance(msg, pynmea2.types.talker.VTG):
                reading = self._vtg(msg)
            else:
                self.counters.ignored += 1
                return None
        except (ValueError, TypeError, AttributeError):  # a field that does not parse
            self.counters.errors += 1
            return None
        self.counters.sentences += 1
        if reading.has_fix:
            self.counters.fixes += 1
        elif reading.values.get("gps_fix") == 0:
            self.counters.no_fix += 1
        return reading

    def _rmc(self, msg: pynmea2.RMC) -> GpsReading:
        if msg.datestamp:
            self._date = msg.datestamp
        t = _epoch(self._date, msg.timestamp)
        if msg.status != "A" or not msg.lat or not msg.lon:
            values: dict[str, float | None] = dict.fromkeys(("lat", "lon", "gps_speed", "heading"))
            values["gps_fix"] = 0.0
            return GpsReading("RMC", values, t)
        values = {"lat": msg.latitude, "lon": msg.longitude}
        if msg.spd_over_grnd is not None:
            values["gps_speed"] = float(msg.spd_over_grnd) * KNOTS_TO_KMH
        heading = _heading(msg.true_course)
        if heading is not None:
            values["heading"] = heading
        if not self._seen_gga:
            values["gps_fix"] = 1.0  # RMC-only receivers: 'A' is an autonomous fix
        return GpsReading("RMC", values, t)

    def _gga(self, msg: pynmea2.GGA) -> GpsReading:
        self._seen_gga = True
        t = _epoch(self._date, msg.timestamp)
        quality = msg.gps_qual if isinstance(msg.gps_qual, int) else 0
        satellites = _float(msg.num_sats)
        if quality == 0 or not msg.lat or not msg.lon:
            values: dict[str, float | None] = dict.fromkeys(("lat", "lon", "altitude", "hdop"))
            values["gps_fix"] = 0.0
            values["satellites"] = satellites
            return GpsReading("GGA", values, t)
        values = {
            "lat": msg.latitude,
            "lon": msg.longitude,
            "gps_fix": float(quality),
            "satellites": satellites,
            "hdop": _float(msg.horizontal_dil),
            "altitude": _float(msg.altitude),
        }
        return GpsReading("GGA", {k: v for k, v in values.items() if v is not None}, t)

    def _vtg(self, msg: pynmea2.VTG) -> GpsReading:
        values: dict[str, float | None] = {}
        if msg.faa_mode == "N":  # "data not valid"
            return GpsReading("VTG", {"gps_speed": None, "heading": None})
        speed = _float(msg.spd_over_grnd_kmph)
        if speed is not None:
            values["gps_speed"] = speed
        heading = _heading(_float(msg.true_track))
        if heading is not None:
            values["heading"] = heading
        return GpsReading("VTG", values)


def split_fix(values: dict[str, float | None]) -> tuple[dict[str, float | None], dict[str, float | None]]:
    """A reading's values as (what its fix frame carries: the known position channels, everything else)."""
    fix = {name: value for name, value in values.items() if name in POSITION_CHANNELS and value is not None}
    rest = {name: value for name, value in values.items() if name not in fix}
    return fix, rest


def read_log(path: str | Path, decoder: NmeaDecoder | None = None) -> Iterator[GpsReading]:
    """Every reading of an NMEA log file, in order (lines decoded as UTF-8, bad bytes replaced)."""
    decoder = decoder or NmeaDecoder()
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        for line in f:
            yield from decoder.decode_line(line)


def iter_lines(chunks: Iterable[str], decoder: NmeaDecoder | None = None) -> Iterator[GpsReading]:
    """Readings from a stream of text chunks split anywhere."""
    decoder = decoder or NmeaDecoder()
    for chunk in chunks:
        yield from decoder.feed(chunk)
