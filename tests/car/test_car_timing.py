"""The car's own lap timing (the recorded laps through CarTiming) and where its track comes from: a file, the
server (a real one, fetched over REST, kept in a real outbox for a restart with no link), or nothing."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests

from dashboard.car.monitor import build_monitor
from dashboard.car.outbox import Outbox
from dashboard.car.replay import BUNDLED_LOG
from dashboard.car.settings import load_settings
from dashboard.car.timing import CarTiming
from dashboard.car.track_source import (
    TrackFetcher,
    keep_track,
    kept_track,
    read_track_file,
    track_from_json,
    wanted_key,
)
from dashboard.errors import ConfigError
from dashboard.server.tracks import ORLANDO_TRACK_ID
from dashboard.telemetry.gps import NmeaDecoder
from dashboard.telemetry.laps import ORLANDO_KART_CENTER
from tests.servers import REPO, free_port
from tests.waiting import wait_for

ON_TRACK = 1000  # the recording's first lines are in the pits


def recorded_frames() -> list[dict[str, Any]]:
    """The recording's fixes as the monitor's frames ({seq, t, channels: {lat, lon}})."""
    frames = []
    for record in NmeaDecoder().feed("".join(BUNDLED_LOG.read_text().splitlines(keepends=True)[ON_TRACK:])):
        if record.values.get("lat") is not None and record.time is not None:
            frames.append({"seq": len(frames) + 1, "t": record.time,
                           "channels": {"lat": record.values["lat"], "lon": record.values["lon"]}})
    return frames


def test_no_track_times_nothing() -> None:
    timing = CarTiming()
    for frame in recorded_frames()[:200]:
        timing.feed(frame)
    assert set(timing.snapshot().values()) == {None}


def test_the_recorded_laps_timed_in_the_car() -> None:
    timing = CarTiming(ORLANDO_KART_CENTER)
    frames = recorded_frames()
    lap_one_end = next(i for i, f in enumerate(frames) if f["t"] - frames[0]["t"] > 59.5)  # lap 1: 58.857 s
    for frame in frames[:lap_one_end - 200]:
        timing.feed(frame)
    during = timing.snapshot()
    assert during["track"] == "Orlando Kart Center" and during["lap"] == 1 and not during["out_lap"]
    assert during["delta"] is None and during["last_lap"] is None  # no best lap yet
    assert 40 < during["elapsed"] < 59
    for frame in frames[lap_one_end - 200:lap_one_end + 300]:
        timing.feed(frame)
    after = timing.snapshot()
    assert after["lap"] == 2 and after["last_lap"] == pytest.approx(58.857, abs=0.01)
    assert after["best_lap"] == after["last_lap"]
    assert after["delta"] is not None and abs(after["delta"]) < 5  # the same kart, a lap later
    assert 0 < after["elapsed"] < 25
    assert not timing.set_track(ORLANDO_KART_CENTER)  # the same track: the laps are kept
    assert timing.snapshot()["lap"] == 2
    assert timing.set_track(None) and timing.snapshot()["lap"] is None


def test_a_track_file_in_the_servers_shape(tmp_path: Path) -> None:
    path = tmp_path / "track.json"
    path.write_text(json.dumps({**ORLANDO_KART_CENTER.to_dict(), "track_id": ORLANDO_TRACK_ID, "pit_lane": None,
                                "created_at": "2026-01-01T00:00:00Z"}))
    assert read_track_file(path) == ORLANDO_KART_CENTER


@pytest.mark.parametrize(("content", "field"), [
    (None, "track_file"),  # no such file
    ("{not json", "track_file"),
    ("[]", "track"),
    ('{"a": [1, 2], "b": [1, 3]}', "name"),
    ('{"name": "X", "a": [1, 2], "b": [1, 2]}', "track"),  # a line of one point
    ('{"name": "X", "a": [100, 2], "b": [1, 2]}', "track"),  # no latitude
    ('{"name": "X", "a": "north", "b": [1, 2]}', "track"),
    ('{"name": "", "a": [1, 2], "b": [1, 3]}', "name"),
])
def test_a_bad_track_file_says_why(tmp_path: Path, content: str | None, field: str) -> None:
    path = tmp_path / "track.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError) as caught:
        read_track_file(path)
    assert caught.value.field == field and str(path) in caught.value.message


def test_the_kept_track_is_for_the_same_setting_only(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.sqlite")
    try:
        assert kept_track(box, wanted_key(None, ORLANDO_TRACK_ID)) is None
        keep_track(box, wanted_key(None, ORLANDO_TRACK_ID), ORLANDO_KART_CENTER)
        assert kept_track(box, wanted_key("orlando", ORLANDO_TRACK_ID)) == ORLANDO_KART_CENTER  # the id wins
        assert kept_track(box, wanted_key("Orlando Kart Center", None)) is None  # named otherwise: fetched again
        assert kept_track(box, None) is None
        box.set_meta("timing.track", "{broken")
        assert kept_track(box, wanted_key(None, ORLANDO_TRACK_ID)) is None
    finally:
        box.close()
    assert wanted_key("Orlando KART Center", None) == wanted_key("orlando kart center", None)


def test_fetched_from_the_server_once_the_link_is_up_and_kept(live_server: Any, tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.sqlite")
    timing = CarTiming()
    link = {"up": False}
    fetcher = TrackFetcher(timing, box, live_server.url, track_id=ORLANDO_TRACK_ID, api_key=live_server.api_key,
                           link_up=lambda: link["up"])
    try:
        fetcher.start()
        fetcher.start()  # no second thread
        assert fetcher.running and timing.track is None  # waits for the link
        link["up"] = True
        wait_for(lambda: not fetcher.running, 15, "the fetch")
        stored = requests.get(f"{live_server.url}/api/v1/tracks/{ORLANDO_TRACK_ID}", timeout=5).json()
        assert timing.track == track_from_json(stored) and fetcher.fetched == timing.track
        assert kept_track(box, wanted_key(None, ORLANDO_TRACK_ID)) == timing.track  # for a restart with no link
    finally:
        fetcher.stop(10)
        fetcher.stop(10)
        box.close()


def test_fetched_by_name_in_any_case_and_an_unknown_one_refused(live_server: Any, tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.sqlite")
    try:
        by_name = TrackFetcher(CarTiming(), box, live_server.url, track="orlando KART center",
                               api_key=live_server.api_key)
        assert by_name.fetch().name == "Orlando Kart Center"
        for kwargs, field in (({"track": "Nowhere Ring"}, "track"),
                              ({"track_id": "00000000-0000-4000-8000-000000000000"}, "track_id")):
            fetcher = TrackFetcher(CarTiming(), box, live_server.url, api_key=live_server.api_key, **kwargs)
            with pytest.raises(ConfigError) as caught:
                fetcher.fetch()
            assert caught.value.field == field
            fetcher.start()
            wait_for(lambda f=fetcher: not f.running, 15, "the refused fetch to end")
            assert fetcher.refused and fetcher.timing.track is None
    finally:
        box.close()


def test_the_monitor_times_on_the_kept_track_with_no_link(tmp_path: Path) -> None:
    """A monitor restarted with no link (its server a closed port) times on the track its last run fetched."""
    outbox_path = tmp_path / "outbox.sqlite"
    box = Outbox(outbox_path)
    keep_track(box, wanted_key(None, ORLANDO_TRACK_ID), ORLANDO_KART_CENTER)
    box.close()
    settings = load_settings(server_url=f"http://127.0.0.1:{free_port()}", outbox_path=outbox_path, display="0",
                             track_id=ORLANDO_TRACK_ID)
    manager = build_monitor(settings)
    try:
        assert manager.timing is not None and manager.timing.track == ORLANDO_KART_CENTER
        assert manager.display is not None and manager.track_fetcher is not None  # fetched again once the link is up
        assert manager.links() == {"main": "stopped", "main_up": False, "radio": None}
    finally:
        manager.outbox.close()
    plain = build_monitor(load_settings(outbox_path=tmp_path / "plain.sqlite", track_id=ORLANDO_TRACK_ID))
    try:
        assert plain.timing is None and plain.display is None and plain.track_fetcher is None  # no display: no timing
    finally:
        plain.outbox.close()


def test_bad_display_settings_stop_the_command_with_the_reason(tmp_path: Path) -> None:
    def monitor(*args: str) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DASHBOARD_")}
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        return subprocess.run([sys.executable, "-m", "dashboard", "monitor", "--gps", "/dev/null", "--outbox",
                               str(tmp_path / "o.sqlite"), *args], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=60)

    address = monitor("--display", "pit:wall")
    assert address.returncode == 2 and "setting display" in address.stderr and "Traceback" not in address.stderr
    (tmp_path / "bad.json").write_text('{"name": "X"}')
    track = monitor("--display", "0", "--track-file", str(tmp_path / "bad.json"))
    assert track.returncode == 2 and "bad.json: a track needs a" in track.stderr, track.stderr
    assert "Traceback" not in track.stderr
