"""Where the car's own lap timing gets its track: a file, the server (kept for next time), or nothing.

Three ways, first that applies wins:

- ``--track-file FILE.json``: a track in the server's JSON shape (``GET /api/v1/tracks/{id}``, or the
  ``name``/``a``/``b``/``direction``/``sectors`` of ``telemetry.laps.Track``), for a car that never sees the
  server. Read once at start; a file that is not a track stops the monitor with the reason.
- ``--track-id`` / ``--track`` (the stored track the monitor's sessions are timed on): its geometry is
  fetched over REST (``TrackFetcher``) once the main link is up, and kept in the outbox's meta table,
  so a monitor restarted with no link times on it at once. The kept one is used only for the same
  ``track-id``/``track`` setting (another track named: fetched again).
- none: nothing is timed; the display shows "--".
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import requests

from dashboard.car.backoff import Backoff
from dashboard.car.outbox import Outbox
from dashboard.car.timing import CarTiming
from dashboard.car.worker import Worker
from dashboard.errors import ConfigError
from dashboard.telemetry.laps import Track

log = logging.getLogger(__name__)

META_KEY = "timing.track"  # {"wanted": "id:..." | "name:...", "track": Track.to_dict()}
MAX_FILE_BYTES = 1_000_000  # a track with a pit lane and a dozen sectors is a few kB
FETCH_TIMEOUT_S = 5.0  # one REST call; the link is up when we try
RETRY_MIN_S, RETRY_MAX_S = 2.0, 60.0  # a server that fails the call: retried, at most once a minute
RETRY_STATUSES = (408, 429)  # a 4xx worth asking again; any other (a bad id, a key refused) will not change
LINK_POLL_S = 1.0  # how often the fetcher looks whether the link is up


def track_from_json(raw: Any, where: str = "track") -> Track:
    """A track from its JSON form (the server's TrackOut or ``Track.to_dict``); ConfigError saying what is wrong."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: a track is a JSON object", field="track")
    for name in ("name", "a", "b"):
        if name not in raw:
            raise ConfigError(f"{where}: a track needs {name}", field=name)
    if not isinstance(raw["name"], str) or not raw["name"]:
        raise ConfigError(f"{where}: name must be a non-empty string", field="name")
    try:
        return Track.from_dict(raw)
    except (ValueError, TypeError, KeyError) as exc:
        raise ConfigError(f"{where}: not a track ({exc})", field="track") from None


def read_track_file(path: str | Path) -> Track:
    """The track in a JSON file; ConfigError naming the file and the reason."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ConfigError(f"{path}: over {MAX_FILE_BYTES} bytes, not a track", field="track_file")
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"track file {path}: {exc.strerror or exc}", field="track_file") from None
    except ValueError as exc:
        raise ConfigError(f"track file {path}: not JSON ({exc})", field="track_file") from None
    return track_from_json(raw, f"track file {path}")


def wanted_key(track: str | None, track_id: str | None) -> str | None:
    """Which stored track the settings name (track_id wins, as for the sessions); None: none."""
    if track_id:
        return f"id:{track_id}"
    if track:
        return f"name:{track.casefold()}"
    return None


def kept_track(outbox: Outbox, wanted: str | None) -> Track | None:
    """The track kept in the outbox for these settings, or None (none kept, another one, or unreadable)."""
    raw = outbox.get_meta(META_KEY)
    if raw is None or wanted is None:
        return None
    try:
        data = json.loads(raw)
        if data.get("wanted") != wanted:
            return None
        return track_from_json(data.get("track"), "the kept track")
    except (ValueError, AttributeError, ConfigError) as exc:
        log.warning("the kept track could not be read (%s): fetched again", exc)
        return None


def keep_track(outbox: Outbox, wanted: str, track: Track) -> None:
    """Keep the fetched track for a restart with no link."""
    outbox.set_meta(META_KEY, json.dumps({"wanted": wanted, "track": track.to_dict()}))


class TrackFetcher(Worker):
    """Fetches the settings' stored track once the link is up; keeps it and hands it to the timing. Then ends.

    A track the server does not know is logged once and not asked again until a restart.
    """

    def __init__(self, timing: CarTiming, outbox: Outbox, server_url: str, *, track: str | None = None,
                 track_id: str | None = None, api_key: str | None = None, ca_cert: str | Path | None = None,
                 link_up: Callable[[], bool] = lambda: True) -> None:
        super().__init__("track-fetch")
        self.timing = timing
        self.outbox = outbox
        self.server_url = server_url.rstrip("/")
        self.track, self.track_id = track, track_id
        self.wanted = wanted_key(track, track_id)
        self.api_key = api_key
        self.ca_cert = ca_cert
        self.link_up = link_up
        self.fetched: Track | None = None
        self.refused: str | None = None  # why the server's answer was no track

    def _run(self) -> None:
        if self.wanted is None:
            return
        backoff = Backoff(RETRY_MIN_S, RETRY_MAX_S)
        while not self._stop.is_set():
            if not self.link_up():
                self._stop.wait(LINK_POLL_S)
                continue
            try:
                track = self.fetch()
            except ConfigError as exc:  # the server answered: no such track, or not one we can time on
                self.refused = exc.message
                log.error("car timing: %s; the display shows no lap times", exc.message)
                return
            except (requests.RequestException, ValueError) as exc:
                log.warning("car timing: fetching the track failed (%s); trying again", type(exc).__name__)
                self._stop.wait(backoff.next())
                continue
            keep_track(self.outbox, self.wanted, track)
            self.fetched = track
            if self.timing.set_track(track):
                log.info("car timing on track %r (fetched from the server)", track.name)
            return

    def _get(self, path: str) -> Any:
        headers = {"X-API-Key": self.api_key} if self.api_key else {}
        answer = requests.get(f"{self.server_url}/api/v1{path}", headers=headers, timeout=FETCH_TIMEOUT_S,
                              verify=str(self.ca_cert) if self.ca_cert else True)
        if answer.status_code == 404:
            return None
        if 400 <= answer.status_code < 500 and answer.status_code not in RETRY_STATUSES:
            raise ConfigError(f"the server refused the track ({answer.status_code})", field="track")
        answer.raise_for_status()
        return answer.json()

    def fetch(self) -> Track:
        """The stored track by id (or by name, any case); ConfigError when the server has none such."""
        if self.track_id:
            raw = self._get(f"/tracks/{requests.utils.quote(self.track_id, safe='')}")
            if raw is None:
                raise ConfigError(f"the server has no track {self.track_id}", field="track_id")
        else:
            listing = self._get("/tracks") or {}
            name = (self.track or "").casefold()
            raw = next((t for t in listing.get("items", []) if str(t.get("name", "")).casefold() == name), None)
            if raw is None:
                raise ConfigError(f"the server has no track named {self.track!r}", field="track")
        return track_from_json(raw, "the server's track")
