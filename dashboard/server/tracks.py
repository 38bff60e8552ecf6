"""Tracks: circuits with a start/finish line and sector lines, and which session is timed on which.

A track that any session names cannot be deleted (409, naming the sessions): a lap timer or an
engineer's laps would otherwise silently lose their reference, and every server process sharing the
database agrees because the check and the delete are one writer job. Detach the sessions first
(``PUT /sessions/{id}/track {"track_id": null}``). Changing a track's lines times every session on
it again.

A session's free-text ``track`` finds its track by name, case-insensitive and whatever the spacing
(``track_named``): a session created as "orlando kart center" is timed on Orlando Kart Center at once.
Names are not unique; when several tracks share one, the one changed last is taken. A car's monitor
naming a track (``session.start``) must name a stored one (``TrackService.resolve``).
"""
from __future__ import annotations

import uuid
from typing import Any, Callable

from sqlalchemy import Connection

from dashboard.errors import Conflict, InvalidInput, NotFound
from dashboard.server.changes import Change
from dashboard.server.live import canonical_uuid
from dashboard.server.service import Service, Shared
from dashboard.server.timing import TimingService
from dashboard.server.views import public_track
from dashboard.telemetry.laps import ORLANDO_KART_CENTER, Track
from dashboard.telemetry.pitlane import PitLane

# Tracks every installation has: the circuit of the bundled recordings (the demo laps it).
ORLANDO_TRACK_ID = str(uuid.uuid5(uuid.NAMESPACE_URL, "race-dashboard:track:orlando-kart-center"))
BUILTIN_TRACKS = {ORLANDO_TRACK_ID: ORLANDO_KART_CENTER}
IN_USE_LISTED = 20  # sessions named in a 409 for a track in use


KNOWN_LISTED = 10  # track names quoted in the error for an unknown one


def name_key(name: str) -> str:
    """A track name as names are matched: case-folded, spaces collapsed."""
    return " ".join(name.split()).casefold()


def track_named(rows: list[dict[str, Any]], name: str | None) -> dict[str, Any] | None:
    """The stored track (row) called ``name``, case-insensitive; the one changed last when several are; or None."""
    if not name or not name.strip():
        return None
    key = name_key(name)
    matches = [row for row in rows if name_key(row["name"]) == key]
    return max(matches, key=lambda row: (row["updated_at"], row["id"]), default=None)


def check_track_id(track_id: Any) -> str:
    """A track id (a UUID), or NotFound naming track_id: no such track can exist."""
    canonical = canonical_uuid(track_id)
    if canonical is None:
        raise NotFound(f"no track {str(track_id)[:64]!r}", field="track_id")
    return canonical


class TrackService(Service):
    """Create, change, list and delete tracks; set a session's track."""

    def __init__(self, shared: Shared, timing: TimingService, describe: Callable[[Any], dict[str, Any]]) -> None:
        super().__init__(shared)
        self.timing = timing
        self.describe = describe  # a live session as SessionOut

    def ensure_builtin(self) -> None:
        """Store the built-in tracks that are missing (never overwrites an edited one)."""
        for track_id, track in BUILTIN_TRACKS.items():
            if self.store.get_track(track_id) is None:
                self.save(track.to_dict(), track_id)

    def resolve(self, name: str | None, track_id: str | None) -> str | None:
        """The track a car names (``session.start``): by id, else by name; None for neither.

        NotFound naming ``track_id`` or ``track`` when there is no such track: a car that names a track wants
        its laps timed, and a typo must be said, not turned into an untimed session unnoticed.
        """
        if track_id is not None:
            return self.get(track_id)["track_id"]
        if name is None or not name.strip():
            return None
        rows = self.store.tracks()
        row = track_named(rows, name)
        if row is None:
            known = ", ".join(sorted({r["name"] for r in rows})[:KNOWN_LISTED]) or "none"
            raise NotFound(f"no track named {name[:64]!r} (known: {known}); add it with POST /api/v1/tracks "
                           "or give track_id", field="track")
        return row["id"]

    def list(self) -> list[dict[str, Any]]:
        """Every track, by name (TrackOut each)."""
        return [public_track(row) for row in self.store.tracks()]

    def get(self, track_id: str) -> dict[str, Any]:
        """One track (TrackOut); NotFound naming track_id."""
        row = self.store.get_track(check_track_id(track_id))
        if row is None:
            raise NotFound(f"no track {track_id}", field="track_id")
        return public_track(row)

    def save(self, track: dict[str, Any], track_id: str | None = None) -> dict[str, Any]:
        """Create (or replace) a track from its definition; sessions on it are timed again when its lines change."""
        try:
            definition = Track.from_dict(track).to_dict()  # validates the geometry
            if track.get("pit_lane") is not None:  # pit-in and pit-out lines, timed like the start/finish line
                lane = PitLane.from_dict(track["pit_lane"])
                definition["pit_lane"] = {"pit_in": lane.pit_in.to_dict(), "pit_out": lane.pit_out.to_dict()}
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidInput(f"bad track: {exc}", field="track") from None
        now = self.clock()
        existing = self.store.get_track(track_id) if track_id else None
        row = {"id": track_id or str(uuid.uuid4()), "name": definition["name"], "definition": definition,
               "created_at": existing["created_at"] if existing else now, "updated_at": now}
        self.writer.call(lambda conn: self.store.save_track(row, conn=conn))
        if existing is not None and existing["definition"] != definition:
            for session_id in self.store.session_ids_on_track(row["id"]):
                self.set_session_track(session_id, row["id"])
        return public_track(row)

    def delete(self, track_id: str) -> None:
        """Delete a track no session names; NotFound if unknown, Conflict naming the sessions if in use."""

        track_id = check_track_id(track_id)

        def delete_unused(conn: Connection) -> None:
            users = self.store.session_ids_on_track(track_id, conn=conn)
            if users:
                raise Conflict(f"track is used by {len(users)} session(s): set their track to another or none first",
                               field="track_id", sessions=users[:IN_USE_LISTED])
            if not self.store.delete_track(track_id, conn=conn):
                raise NotFound(f"no track {track_id}", field="track_id")

        self.writer.call(delete_unused)

    def set_session_track(self, session_id: str, track_id: str | None) -> dict[str, Any]:
        """Name the session's track (or none) and time every lap again from the stored frames (LapList)."""
        live = self.cache.get(session_id)
        if track_id is not None:
            track_id = check_track_id(track_id)
            if self.store.get_track(track_id) is None:
                raise NotFound(f"no track {track_id}", field="track_id")
        self.writer.call(lambda conn: self.store.update_session(live.id, track_id=track_id, conn=conn))
        with live.lock:
            live.row["track_id"] = track_id
        self.timing.retime(live)
        out = self.timing.laps_of(live)
        self.events.log(live.id, "track.changed", {"track_id": track_id, "laps": len(out["items"])})
        self.bus.tell(Change.SESSION, self.describe(live))
        return out
