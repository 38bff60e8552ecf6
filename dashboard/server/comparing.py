"""Laps compared, from the stored frames: the lap picker, a lap against distance, laps overlaid with their
delta traces, and a car's setup versions side by side (REST: ``dashboard/server/compare_api.py``).

The pure work is ``dashboard.telemetry.compare`` (resampling by distance, delta, segments, setups) and
``cleanlap`` (the clean-lap rule); this service reads what they need and shapes the answers.

A lap's frames are read from its own time span plus ``MARGIN_S`` either side (the resampler needs a fix
at or before the start and after the end), looked up by the lap's seqs (the frames table is keyed by
seq) widened by ``SEQ_MARGIN``, and by time alone if the lap has no seqs or that window misses a fix.
Every call runs in a native thread of the service's own pool (``Offload``): the reads and the
resampling (a few ms a lap, more for a long one) never hold the event loop every car shares.

Setup versions across sessions: each session numbers its setups from 1, so a car's setups are numbered
again by content, oldest first (``compare.number_setups``): the same fields posted in two sessions are one
car setup version. Answers are rounded (mm, ms, 1e-7 degrees, 3 decimals of a channel) to keep them small.
"""
from __future__ import annotations

import math
from typing import Any, Iterable

import orjson

from dashboard.errors import InvalidInput, NotFound
from dashboard.server.blocking import Offload
from dashboard.server.live import canonical_uuid
from dashboard.server.store import Store
from dashboard.server.views import iso
from dashboard.telemetry.cleanlap import CLEAN_MAX_RATIO, best_time, clean_laps, lap_record
from dashboard.telemetry.compare import (
    DEFAULT_POINTS,
    DEFAULT_SEGMENTS,
    ResampledLap,
    compare_setups,
    delta_trace,
    number_setups,
    resample_lap,
    segment_gains,
)

MARGIN_S = 1.0  # read this much either side of a lap: the fixes that hold its start and end
SEQ_MARGIN = 2000  # seqs either side of the lap's own: 20 s of frames at 100 Hz, more than MARGIN_S at any rate
MAX_LAPS = 6  # laps in one comparison
# comparisons computed at once: one. The work is pure Python and holds the GIL while it runs; every other thread of
# the process (the event loop among them) waits up to the switch interval (5 ms) for it each time it needs it, so a
# second computing thread would not go faster and would take the loop's share twice (bench/compare.py measures it).
COMPARE_THREADS = 1
CLEAN_RULE = (f"clean: timed line to line (not an out-, in- or interrupted lap), no pit entry or exit, not flagged "
              f"(yellow or alerted time loss), setup unchanged during it, and within {round(CLEAN_MAX_RATIO * 100)} % "
              f"of the best such lap of the set (each setup version is judged against its own best)")


def _r(value: float | None, digits: int) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(value, digits)


def _rs(values: Iterable[float | None], digits: int) -> list[float | None]:
    return [_r(v, digits) for v in values]


def parse_laps(raw: str) -> list[tuple[str, int]]:
    """``sid:n,sid:n`` as (session id, lap) pairs; InvalidInput naming ``laps``."""
    out = []
    for part in raw.split(","):
        sid, sep, number = part.rpartition(":")
        if not sep or not sid or not number.isascii() or not number.isdigit() or len(number) > 9:
            raise InvalidInput("laps must be session_id:lap pairs separated by commas", field="laps")
        out.append((sid, int(number)))
    if not 1 <= len(out) <= MAX_LAPS:
        raise InvalidInput(f"laps must name 1 to {MAX_LAPS} laps", field="laps")
    return out


def parse_channels(raw: str | None, default: tuple[str, ...]) -> list[str]:
    """The channel names asked for (checked by the query's pattern), duplicates dropped."""
    if raw is None:
        return list(default)
    return list(dict.fromkeys(raw.split(",")))


class CompareService:
    """The comparison answers, each computed off the event loop."""

    def __init__(self, store: Store, threads: int = COMPARE_THREADS) -> None:
        self.store = store
        self._run = Offload(threads, "compare")

    def close(self) -> None:
        """Stop the pool's threads (safe twice)."""
        self._run.close()

    def encoded(self, answer: str, *args: Any) -> bytes:
        """An answer (``car_laps``, ``trace``, ``compare``, ``setups``) as JSON bytes, encoded in the pool's
        thread too: a comparison of six long laps is ~200,000 numbers, not for the event loop to write out."""
        method = {"car_laps": self._car_laps, "trace": self._trace, "compare": self._compare,
                  "setups": self._setups}[answer]
        return self._run(lambda: orjson.dumps(method(*args)))

    # ------------------------------------------------------------ the picker
    def car_laps(self, car_id: str, track_id: str | None) -> dict[str, Any]:
        """The car's laps at a track across its sessions (CarLapList); the track of its newest session if none."""
        return self._run(self._car_laps, car_id, track_id)

    def _track(self, car_id: str, track_id: str | None) -> tuple[str | None, str | None]:
        if track_id is None:
            track_id = self.store.latest_track_of_car(car_id)
            if track_id is None:
                return None, None
        canonical = canonical_uuid(track_id)
        row = self.store.get_track(canonical) if canonical else None
        if row is None:
            raise NotFound(f"no track {track_id[:64]!r}", field="track_id")
        return row["id"], row["name"]

    def _car_laps(self, car_id: str, track_id: str | None) -> dict[str, Any]:
        track_id, track_name = self._track(car_id, track_id)
        rows = self.store.car_laps(car_id, track_id) if track_id else []
        versions, _ = number_setups(self.store.setups_of(sorted({r["session_id"] for r in rows})))
        records = []
        for row in rows:
            try:
                records.append(lap_record(row["data"], session_id=row["session_id"]))
            except ValueError:
                records.append(None)  # a stored lap without finite times: listed, never clean
        clean = {(lap.session_id, lap.number) for lap in clean_laps([r for r in records if r is not None])}
        best = best_time([r for r in records if r is not None])
        items = []
        for row, record in zip(rows, records, strict=True):
            data = row["data"] if isinstance(row["data"], dict) else {}
            number = data.get("lap")
            if not isinstance(number, int):
                continue
            version = data.get("setup_version")
            lap_time = _r(data.get("lap_time") if isinstance(data.get("lap_time"), (int, float)) else None, 3)
            items.append({
                "session_id": row["session_id"], "session_name": row["session_name"] or "",
                "session_created_at": iso(row["session_created_at"]), "lap": number, "lap_time": lap_time,
                "start_t": _r(data.get("start_t"), 3), "end_t": _r(data.get("end_t"), 3),
                "out_lap": bool(data.get("out_lap")), "in_lap": bool(data.get("in_lap")),
                "interrupted": data.get("interrupted") if data.get("interrupted") in ("gap", "jump") else None,
                "setup_version": version if isinstance(version, int) else None,
                "car_setup_version": versions.get((row["session_id"], version)),
                "setup_changed": bool(data.get("setup_changed")), "pit": bool(data.get("pit")),
                "flagged": bool(data.get("flagged")),
                "driver_id": data.get("driver_id") if isinstance(data.get("driver_id"), str) else None,
                "clean": record is not None and (record.session_id, record.number) in clean,
                "is_best": record is not None and best is not None and record.lap_time == best
                and (record.session_id, record.number) in clean,
            })
        return {"car_id": car_id, "track_id": track_id, "track_name": track_name, "best_lap_time": best,
                "rule": CLEAN_RULE, "items": items}

    # -------------------------------------------------------- a lap, resampled
    def trace(self, session_id: str, lap: int, channels: list[str], points: int = DEFAULT_POINTS) -> dict[str, Any]:
        """One lap against distance (LapTrace)."""
        return self._run(self._trace, session_id, lap, channels, points)

    def _lap(self, session_id: str, lap: int, field: str) -> tuple[dict[str, Any], dict[str, Any]]:
        canonical = canonical_uuid(session_id)
        session = self.store.get_session(canonical) if canonical else None
        if session is None:
            raise NotFound(f"no session {session_id[:64]!r}", field="session_id" if field == "lap" else field)
        data = self.store.lap(session["id"], lap)
        if not isinstance(data, dict):
            raise NotFound(f"session {session['id']} has no lap {lap}", field=field)
        return session, data

    def _resampled(self, session: dict[str, Any], data: dict[str, Any], channels: list[str], points: int,
                   field: str) -> ResampledLap:
        start_t, end_t = data.get("start_t"), data.get("end_t")
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (start_t, end_t)) or end_t <= start_t:
            raise InvalidInput(f"lap {data.get('lap')} has no time span to resample", field=field)
        seqs = None
        if isinstance(data.get("start_seq"), int) and isinstance(data.get("end_seq"), int):
            seqs = (data["start_seq"] - SEQ_MARGIN, data["end_seq"] + SEQ_MARGIN)
        window = (session["id"], start_t - MARGIN_S, end_t + MARGIN_S)
        wanted = ["lat", "lon", *channels]
        try:
            return resample_lap(self.store.frames_between(*window, seqs, wanted), start_t, end_t, channels, points)
        except ValueError as exc:
            if seqs is None:
                raise InvalidInput(f"lap {data.get('lap')} cannot be placed on its fixes: {exc}", field=field) from None
        try:  # the seq window missed a fix (frames resent out of order): by time alone
            return resample_lap(self.store.frames_between(*window, None, wanted), start_t, end_t, channels, points)
        except ValueError as exc:
            raise InvalidInput(f"lap {data.get('lap')} cannot be placed on its fixes: {exc}", field=field) from None

    @staticmethod
    def _trace_out(session: dict[str, Any], data: dict[str, Any], lap: ResampledLap) -> dict[str, Any]:
        version = data.get("setup_version")
        return {
            "session_id": session["id"], "session_name": session.get("name") or "", "car_id": session["car_id"],
            "lap": data["lap"], "lap_time": round(lap.lap_time, 3), "length_m": round(lap.length_m, 2),
            "setup_version": version if isinstance(version, int) else None,
            "driver_id": data.get("driver_id") if isinstance(data.get("driver_id"), str) else None,
            "points": len(lap.distance_m), "distance_m": _rs(lap.distance_m, 2), "time_s": _rs(lap.time_s, 3),
            "lat": _rs(lap.lat, 7), "lon": _rs(lap.lon, 7),
            "channels": {name: _rs(values, 3) for name, values in lap.channels.items()},
        }

    def _trace(self, session_id: str, lap: int, channels: list[str], points: int) -> dict[str, Any]:
        session, data = self._lap(session_id, lap, "lap")
        return self._trace_out(session, data, self._resampled(session, data, channels, points, "lap"))

    # ---------------------------------------------------------- laps compared
    def compare(self, laps: list[tuple[str, int]], channels: list[str], points: int = DEFAULT_POINTS,
                segments: int = DEFAULT_SEGMENTS) -> dict[str, Any]:
        """The laps overlaid, the first the reference, each other's delta trace and segments (Comparison)."""
        return self._run(self._compare, laps, channels, points, segments)

    def _compare(self, laps: list[tuple[str, int]], channels: list[str], points: int,
                 segments: int) -> dict[str, Any]:
        found = [self._lap(sid, n, "laps") for sid, n in laps]
        tracks = {session.get("track_id") for session, _ in found}
        if len(tracks) > 1:
            raise InvalidInput("the laps are of different tracks: compare laps of one track", field="laps")
        resampled = [self._resampled(session, data, channels, points, "laps") for session, data in found]
        reference = resampled[0]
        segments = min(segments, points - 1)
        deltas = []
        for (session, data), lap in zip(found[1:], resampled[1:], strict=True):
            trace = delta_trace(reference, lap)
            deltas.append({
                "session_id": session["id"], "lap": data["lap"], "final_s": round(trace.final, 3),
                "delta_s": _rs(trace.delta_s, 3),
                "segments": [{"start_index": s.start_index, "end_index": s.end_index, "start_m": round(s.start_m, 2),
                              "end_m": round(s.end_m, 2), "change_s": round(s.change_s, 3), "verdict": s.verdict}
                             for s in segment_gains(trace, segments)],
            })
        return {"track_id": tracks.pop(), "reference": {"session_id": found[0][0]["id"], "lap": found[0][1]["lap"]},
                "points": points, "distance_m": _rs(reference.distance_m, 2),
                "laps": [self._trace_out(s, d, lap) for (s, d), lap in zip(found, resampled, strict=True)],
                "deltas": deltas}

    # ------------------------------------------------------------ setups
    def setups(self, car_id: str, track_id: str | None) -> dict[str, Any]:
        """The car's setup versions at a track side by side (SetupComparison)."""
        return self._run(self._setups, car_id, track_id)

    def _setups(self, car_id: str, track_id: str | None) -> dict[str, Any]:
        track_id, track_name = self._track(car_id, track_id)
        rows = self.store.car_laps(car_id, track_id) if track_id else []
        setups = self.store.setups_of(sorted({r["session_id"] for r in rows}))
        versions, fields = number_setups(setups)
        sessions_of: dict[int, list[dict[str, Any]]] = {}
        for s in setups:
            sessions_of.setdefault(versions[(s["session_id"], s["version"])], []).append(
                {"session_id": s["session_id"], "version": s["version"]})
        records = []
        for row in rows:
            data = row["data"] if isinstance(row["data"], dict) else {}
            try:
                records.append(lap_record(data, session_id=row["session_id"],
                                          setup_version=versions.get((row["session_id"], data.get("setup_version")))))
            except ValueError:
                continue  # a stored lap without finite times takes no part
        items = []
        for summary in compare_setups(records, fields):
            v = summary.setup_version
            items.append({"car_setup_version": v, "sessions": sessions_of.get(v, []) if v is not None else [],
                          "setup": fields.get(v) if v is not None else None, "laps": summary.laps,
                          "clean_laps": summary.clean_laps, "best": _r(summary.best, 3),
                          "mean_clean": _r(summary.mean_clean, 3), "consistency": _r(summary.consistency, 3),
                          "best_change": _r(summary.best_change, 3), "mean_change": _r(summary.mean_change, 3),
                          "changed": summary.changed})
        return {"car_id": car_id, "track_id": track_id, "track_name": track_name, "rule": CLEAN_RULE,
                "items": items}
