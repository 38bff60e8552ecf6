"""Laps, alerts, tracks, replay and export in the real browser, against a real server.

The bundled Orlando Kart Center recording is streamed through a scripted monitor
(as the in-car monitor would, 250 fixes per batch) into sessions on the built-in
track; the page is checked against the server's own answers. Every wait is on a
condition, never a sleep.
"""
from __future__ import annotations

import re
import time
import uuid
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import requests
from playwright.sync_api import expect

from dashboard.server.tracks import ORLANDO_TRACK_ID
from dashboard.telemetry.gps import read_log
from tests.browser.conftest import ARTIFACTS, PHONE, screenshot
from tests.clients import CALL_TIMEOUT_S, connect_monitor

RECORDING = Path(__file__).resolve().parents[2] / "dashboard" / "data" / "okc-2023-4laps.nmea"
LAP_TIMES_1DP = [58.9, 56.8, 56.8, 56.2]  # the recording's 4 timed laps (tests/server/test_laps.py)
BATCH = 250
OKC_A, OKC_B = [28.41270817, -81.37973266], [28.41273039, -81.37957049]


@cache
def recorded_frames() -> tuple[dict[str, Any], ...]:
    """The recording's RMC fixes as frames: seq, GPS time shifted by whole seconds to end now (live frames a
    day old are refused), channels."""
    readings = [r for r in read_log(RECORDING) if r.sentence == "RMC"]
    shift = round(time.time() - readings[-1].time)
    return tuple({"seq": seq, "t": r.time + shift, "channels": {k: v for k, v in r.values.items() if v is not None}}
                 for seq, r in enumerate(readings))


class Kart:
    """A session of a car, fed by a scripted monitor over /monitor."""

    def __init__(self, server: Any, track_id: str | None = ORLANDO_TRACK_ID, name: str = "OKC test day") -> None:
        self.server = server
        self.car_id = f"KART-{uuid.uuid4().hex[:6]}"
        body = {"name": name, "car_id": self.car_id, "driver": "R. Driver", "track_id": track_id}
        self.session = self.api("post", "/sessions", json=body)
        self.sid = self.session["session_id"]
        self.url = f"{server.url}/sessions/{self.sid}"
        self.monitor: Any = None

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        resp = requests.request(method, f"{self.server.url}/api/v1{path}", headers=self.server.headers,
                                timeout=30, **kwargs)
        resp.raise_for_status()
        return resp.json() if resp.content else None

    def connect(self) -> Kart:
        self.monitor = connect_monitor(self.server.url, self.car_id, self.server.api_key)
        assert self.monitor.call("session.start", {"session_id": self.sid}, namespace="/monitor",
                                 timeout=CALL_TIMEOUT_S)["ok"]
        return self

    def send(self, frames: list[dict[str, Any]] | tuple[dict[str, Any], ...]) -> None:
        for i in range(0, len(frames), BATCH):
            ack = self.monitor.call("telemetry", {"session_id": self.sid, "frames": list(frames[i:i + BATCH])},
                                    namespace="/monitor", timeout=CALL_TIMEOUT_S)
            assert ack["ok"] and not ack["rejected"], ack

    def close(self) -> None:
        if self.monitor is not None:
            self.monitor.disconnect()
            self.monitor = None


@pytest.fixture
def make_kart(live_server: Any) -> Any:
    karts: list[Kart] = []

    def make(**kwargs: Any) -> Kart:
        kart = Kart(live_server, **kwargs)
        karts.append(kart)
        return kart

    yield make
    for kart in karts:
        kart.close()


def timed_rows(page: Any) -> Any:
    return page.locator('#laps-table tbody tr[data-kind="timed"]')


def give_key(page: Any, key: str) -> None:
    """Answer the page's API key dialog."""
    expect(page.locator("#key-dialog")).to_be_visible()
    expect(page.locator("#key-dialog-title")).to_have_text("API key")
    page.fill("#key-input", key)
    page.keyboard.press("Enter")


def test_laps_appear_live_with_best_and_delta(live_server: Any, make_kart: Any, open_page: Any) -> None:
    frames = recorded_frames()
    kart = make_kart()
    t0 = frames[0]["t"]
    # setups in force: v1 from the start, v2 from 2 min in (during lap 2): laps compare by setup
    kart.api("post", f"/sessions/{kart.sid}/setup", json={"setup": {"rear_sprocket": 84}, "timestamp": t0})
    kart.api("post", f"/sessions/{kart.sid}/setup", json={"setup": {"rear_sprocket": 86}, "timestamp": t0 + 120})
    page = open_page(kart.url)
    expect(page.locator("body")).to_have_attribute("data-joined", "true")
    expect(page.locator("#laps-empty")).to_be_visible()
    expect(page.locator("#track-select")).to_have_value(ORLANDO_TRACK_ID)
    expect(page.locator("#info-track")).to_have_text("Orlando Kart Center")

    kart.connect().send(frames)
    expect(timed_rows(page)).to_have_count(4)
    api = kart.api("get", f"/sessions/{kart.sid}/laps")
    timed = [lap for lap in api["items"] if not (lap["out_lap"] or lap["in_lap"])]
    assert [round(lap["lap_time"], 1) for lap in timed] == LAP_TIMES_1DP

    # newest first; the text is the API's time to the millisecond
    shown = [float(t) for t in timed_rows(page).locator(".lap-time").all_inner_texts()]
    assert shown == pytest.approx([lap["lap_time"] for lap in reversed(timed)], abs=0.0005)
    assert [round(t, 1) for t in reversed(shown)] == LAP_TIMES_1DP
    best = page.locator('#laps-table tbody tr[data-best="true"]')
    expect(best).to_have_count(1)
    expect(best).to_have_attribute("data-lap", str(api["best_lap"]["lap"]))
    expect(best.locator(".lap-delta")).to_have_text("best")
    expect(page.locator('#laps-table tbody tr[data-kind="out"]')).to_have_count(1)
    expect(page.locator("#lap-best")).to_contain_text(f"{api['best_lap']['lap_time']:.3f}")
    expect(page.locator("#lap-theoretical")).to_have_text(f"{api['theoretical_best']:.3f}")

    # the live delta: the car is 22 s into its in-lap, far behind the best (big, red, signed)
    delta = page.locator("#delta")
    expect(delta).to_have_attribute("data-sign", "slower")
    expect(page.locator("#delta-value")).to_have_text(re.compile(r"^\+\d+\.\d\d$"))
    assert float(delta.get_attribute("data-value")) == pytest.approx(api["timing"]["delta"], abs=0.01)
    expect(page.locator("#lap-predicted")).to_have_text(re.compile(r"^1:\d\d\.\d{3}$"))

    # setup versions: as the API says, grouped, and the table filters by version
    versions = {f"v{lap['setup_version']}" for lap in timed}
    assert versions == {"v1", "v2"}
    for lap in api["items"]:
        cell = page.locator(f'#laps-table tbody tr[data-lap="{lap["lap"]}"] .setup')
        expect(cell).to_contain_text(f"v{lap['setup_version']}")
    expect(page.locator("#laps-by-setup tbody tr")).to_have_count(2)
    page.select_option("#laps-setup", "2")
    expect(timed_rows(page)).to_have_count(sum(lap["setup_version"] == 2 for lap in timed))
    screenshot(page, "laps-live-filtered")
    page.select_option("#laps-setup", "")
    expect(timed_rows(page)).to_have_count(4)

    # the start/finish line is on the map; the feed has the laps
    expect(page.locator("#track")).to_have_attribute("data-drawn-lines", "1")
    expect(page.locator('#feed li[data-kind="lap.completed"]')).to_have_count(len(api["items"]))
    page.locator(".area-laps").scroll_into_view_if_needed()
    screenshot(page, "laps-live")


def test_alert_banner_until_acknowledged(live_server: Any, make_kart: Any, open_page: Any) -> None:
    kart = make_kart(track_id=None, name="Alert test")
    page = open_page(kart.url)
    expect(page.locator("body")).to_have_attribute("data-joined", "true")

    # the rules editor, for this car: coolant above 100 °C at once; no silent-link alerts while we click
    page.click(".area-rules summary")
    expect(page.locator("#rules-table")).to_have_attribute("data-loaded", "true")
    row = page.locator('#rules-table tr[data-rule-id="coolant_high"]')
    row.locator(".rule-threshold").fill("100")
    row.locator(".rule-hold").fill("0")
    row.get_by_role("button").click()
    give_key(page, live_server.api_key)
    expect(row.locator(".rule-source")).to_have_text("saved (car)")
    silent = page.locator('#rules-table tr[data-rule-id="link_silent"]')
    silent.locator(".rule-enabled").uncheck()
    silent.get_by_role("button").click()
    expect(silent.locator(".rule-source")).to_have_text("saved (car)")  # the key is not asked twice
    rules = {item["rule"]["id"]: item for item in kart.api("get", f"/alert-rules?car_id={kart.car_id}")["items"]}
    assert rules["coolant_high"]["source"] == "car"
    assert rules["coolant_high"]["rule"]["threshold"] == 100 and rules["coolant_high"]["rule"]["hold_s"] == 0
    assert rules["link_silent"]["rule"]["enabled"] is False

    kart.connect()
    frames = [dict(f, channels={**f["channels"], "coolant_temp": 92.0}) for f in recorded_frames()[:60]]
    kart.send(frames[:20])
    hot = [dict(f, channels={**f["channels"], "coolant_temp": 104.2}) for f in frames[20:40]]
    kart.send(hot)
    card = page.locator('.alert-card[data-rule-id="coolant_high"]')
    expect(card).to_have_count(1)
    expect(card).to_have_attribute("data-state", "active")
    expect(card).to_have_attribute("data-severity", "warning")
    expect(card.locator(".alert-reading")).to_have_text("104 °C")
    expect(card).to_contain_text("> 100 °C")
    expect(card.locator(".alert-when")).to_contain_text("raised ")
    expect(page.locator('#feed li[data-kind="alert.raised"]')).to_have_count(1)
    screenshot(page, "alert-active")

    # back to normal: cleared, but it stays (dashed) until someone acknowledges it
    kart.send(frames[40:60])
    expect(card).to_have_attribute("data-state", "cleared")
    expect(card.locator(".alert-state")).to_contain_text("acknowledge to dismiss")
    screenshot(page, "alert-cleared")
    card.get_by_role("button", name=re.compile("Acknowledge")).click()
    expect(page.locator("#key-dialog-title")).to_have_text("Acknowledge alert")
    page.fill("#key-input", "JS")
    page.keyboard.press("Enter")
    expect(card).to_have_count(0)
    expect(page.locator("#alerts")).to_be_hidden()
    acked = kart.api("get", f"/sessions/{kart.sid}/alerts")["items"]
    assert [(a["acked_by"], a["on_screen"]) for a in acked] == [("JS", False)]

    # raised again: acknowledged while active (no second question for "by"), it goes once cleared
    again = [dict(f, seq=f["seq"] + 1000, t=f["t"] + 60) for f in hot + frames[40:60]]
    kart.send(again[:20])
    expect(card).to_have_attribute("data-state", "active")
    card.get_by_role("button", name=re.compile("Acknowledge")).press("Enter")  # the keyboard works too
    expect(card.locator(".alert-acked")).to_have_text("Acknowledged by JS")
    expect(page.locator("#key-dialog")).to_be_hidden()
    kart.send(again[20:])
    expect(card).to_have_count(0)


def test_define_start_finish_by_clicking_the_map(live_server: Any, make_kart: Any, open_page: Any) -> None:
    kart = make_kart(track_id=None, name="No track yet")
    kart.connect().send(recorded_frames())
    page = open_page(kart.url)
    expect(page.locator("body")).to_have_attribute("data-joined", "true")
    expect(page.locator("#track-select")).to_have_value("")
    expect(page.locator("#laps-empty")).to_be_visible()
    page.wait_for_function("() => Number(document.querySelector('#track').dataset.points) > 50")

    page.click("#sf-editor summary")
    page.click("#sf-pick")
    expect(page.locator("#track")).to_have_attribute("data-picking", "true")
    box = page.locator("#track").bounding_box()
    page.mouse.click(box["x"] + box["width"] * 0.45, box["y"] + box["height"] * 0.5)
    page.mouse.click(box["x"] + box["width"] * 0.55, box["y"] + box["height"] * 0.5)
    expect(page.locator("#track")).to_have_attribute("data-picking", "false")
    lats = [float(page.input_value(s)) for s in ("#sf-a-lat", "#sf-b-lat")]
    lons = [float(page.input_value(s)) for s in ("#sf-a-lon", "#sf-b-lon")]
    fixes = [f["channels"] for f in recorded_frames() if "lat" in f["channels"]]
    assert all(min(c["lat"] for c in fixes) - 1e-3 < lat < max(c["lat"] for c in fixes) + 1e-3 for lat in lats)
    assert lons[0] < lons[1]  # west to east, as clicked
    screenshot(page, "track-line-picked")

    # the exact line of the kart centre, typed (the keyboard way), saved and put on the session
    for sel, value in zip(("#sf-a-lat", "#sf-a-lon", "#sf-b-lat", "#sf-b-lon"), OKC_A + OKC_B, strict=True):
        page.fill(sel, str(value))
    page.fill("#sf-name", "OKC <drawn>")
    page.click("#sf-save")
    give_key(page, live_server.api_key)
    expect(page.locator("#sf-msg")).to_have_text("Saved “OKC <drawn>”.")
    expect(timed_rows(page)).to_have_count(4)
    expect(page.locator("#track")).to_have_attribute("data-drawn-lines", "1")
    session = kart.api("get", f"/sessions/{kart.sid}")
    track = kart.api("get", f"/tracks/{session['track_id']}")
    assert track["name"] == "OKC <drawn>" and track["a"] == OKC_A and track["b"] == OKC_B
    expect(page.locator("#track-select")).to_have_value(session["track_id"])

    # and back to the built-in track from the selector
    page.select_option("#track-select", ORLANDO_TRACK_ID)
    page.click("#track-use")
    expect(page.locator("#track-msg")).to_have_text(re.compile(r"Track set: \d+ laps"))
    expect(timed_rows(page)).to_have_count(4)
    assert kart.api("get", f"/sessions/{kart.sid}")["track_id"] == ORLANDO_TRACK_ID


def test_draw_the_pit_lane_on_the_map(live_server: Any, make_kart: Any, open_page: Any) -> None:
    """Four clicks on the map (across the pit entry, then across the exit) put a pit lane on the session's track."""
    kart = make_kart(track_id=None, name="Pit lane to draw")
    track = kart.api("post", "/tracks", json={"name": "OKC, pit lane to come", "a": OKC_A, "b": OKC_B})
    kart.api("put", f"/sessions/{kart.sid}/track", json={"track_id": track["track_id"]})
    kart.connect().send(recorded_frames())
    page = open_page(kart.url)
    expect(page.locator("#track-select")).to_have_value(track["track_id"])
    page.wait_for_function("() => Number(document.querySelector('#track').dataset.points) > 50")
    expect(page.locator("#track")).to_have_attribute("data-drawn-lines", "1")

    page.click("#pit-editor summary")
    page.click("#pit-pick")
    expect(page.locator("#track")).to_have_attribute("data-picking", "true")
    page.locator("#track").scroll_into_view_if_needed()  # the clicks land in the viewport
    box = page.locator("#track").bounding_box()
    for fx, fy in ((0.40, 0.42), (0.46, 0.42), (0.54, 0.58), (0.60, 0.58)):
        page.mouse.click(box["x"] + box["width"] * fx, box["y"] + box["height"] * fy)
    expect(page.locator("#track")).to_have_attribute("data-picking", "false")
    expect(page.locator("#pit-msg")).to_have_text("Pit lane drawn: save it.")
    page.click("#pit-save")
    give_key(page, live_server.api_key)
    expect(page.locator("#pit-msg")).to_have_text("Pit lane saved.")
    expect(page.locator("#track")).to_have_attribute("data-drawn-lines", "3")  # start/finish, pit in, pit out
    lane = kart.api("get", f"/tracks/{track['track_id']}")["pit_lane"]
    fixes = [f["channels"] for f in recorded_frames() if "lat" in f["channels"]]
    lat_range = (min(c["lat"] for c in fixes) - 1e-3, max(c["lat"] for c in fixes) + 1e-3)
    for line in (lane["pit_in"], lane["pit_out"]):
        assert all(lat_range[0] < point[0] < lat_range[1] for point in (line["a"], line["b"])), lane
        assert line["a"][1] < line["b"][1]  # west to east, as clicked
    assert lane["pit_in"]["a"][0] > lane["pit_out"]["a"][0]  # the entry clicked above the exit: further north
    screenshot(page, "pit-lane-drawn")

    page.click("#pit-clear")
    expect(page.locator("#pit-msg")).to_have_text("Pit lane removed.")
    expect(page.locator("#track")).to_have_attribute("data-drawn-lines", "1")
    assert kart.api("get", f"/tracks/{track['track_id']}")["pit_lane"] is None


def test_replay_of_an_ended_session_and_csv_export(live_server: Any, make_kart: Any, open_page: Any) -> None:
    frames = recorded_frames()
    kart = make_kart(name="Replay me")
    kart.connect().send(frames)
    kart.close()
    kart.api("post", f"/sessions/{kart.sid}/end", json={})
    laps = kart.api("get", f"/sessions/{kart.sid}/laps")["items"]
    t0 = frames[0]["t"]

    page = open_page(kart.url)
    expect(page.locator("#session-status")).to_have_text("ended")
    expect(page.locator("#replay")).to_be_visible()
    expect(page.locator("body")).to_have_attribute("data-replay", "ready")
    expect(page.locator("#replay-status")).to_contain_text(f"{len(frames):,} frames")
    expect(timed_rows(page)).to_have_count(4)  # the replay starts at the end: every lap
    expect(page.locator('#replay-markers .marker-lap')).to_have_count(len(laps))

    # play at 16×: from the start, the laps appear as the replay reaches them
    page.click('[data-speed="16"]')
    expect(page.locator('[data-speed="16"]')).to_have_attribute("aria-pressed", "true")
    page.click("#replay-play")
    expect(page.locator("body")).to_have_attribute("data-replay", "playing")
    expect(timed_rows(page)).to_have_count(0)
    expect(timed_rows(page)).to_have_count(1, timeout=15_000)  # lap 1 ends 100 s in: ~6 s at 16×
    pos = float(page.locator("body").get_attribute("data-replay-pos"))
    assert 100 <= pos < 160

    # jump to lap 3: the timeline moves there, laps 1 and 2 are done
    lap3 = next(lap for lap in laps if lap["lap"] == 3)
    page.click('#replay-markers [data-lap="3"]')
    scrub = float(page.input_value("#replay-scrub"))
    assert lap3["start_t"] - t0 - 0.2 <= scrub <= lap3["start_t"] - t0 + 5
    expect(timed_rows(page)).to_have_count(2)
    # the clock there (2:36 into the session), read once: the replay plays on at 16x, ~16 s a second on the clock
    minutes, seconds = page.locator("#replay-clock").inner_text().split("/")[0].strip().split(":")
    at = int(minutes) * 60 + int(seconds)
    assert lap3["start_t"] - t0 - 1 <= at <= lap3["start_t"] - t0 + 32, (at, lap3["start_t"] - t0)
    expect(timed_rows(page)).to_have_count(4, timeout=15_000)  # lap 4 ends 270 s in: ~7 s later
    page.wait_for_function("() => Number(document.querySelector('#track').dataset.points) > 100")
    screenshot(page, "replay")
    page.click("#replay-play")  # pause
    expect(page.locator("body")).to_have_attribute("data-replay", re.compile("paused|ended"))

    # the scrubber is a range input: Home / End from the keyboard
    page.focus("#replay-scrub")
    page.keyboard.press("Home")
    expect(page.locator("body")).to_have_attribute("data-replay-pos", "0.0")
    expect(page.locator('#laps-table tbody tr')).to_have_count(0)

    # on a phone, at night: the replay bar and the laps stay usable
    phone = open_page(kart.url, viewport=PHONE)
    expect(phone.locator("body")).to_have_attribute("data-replay", "ready")
    phone.click("#theme-toggle")
    expect(phone.locator("html")).to_have_attribute("data-theme", "night")
    phone.locator("#replay-markers [data-lap=\"4\"]").click()
    expect(timed_rows(phone)).to_have_count(3)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    phone.screenshot(path=str(ARTIFACTS / "replay-phone-night.png"))  # the screen as seen, not the whole page

    # export: the link downloads the session as CSV
    with page.expect_download() as info:
        page.click("#export-csv")
    download = info.value
    assert download.suggested_filename == f"session-{kart.sid}.csv"
    lines = Path(download.path()).read_text().splitlines()
    assert lines[0].startswith("seq,t,time_utc,")
    assert len(lines) == len(frames) + 1
    first = dict(zip(lines[0].split(","), lines[1].split(","), strict=True))
    assert int(first["seq"]) == 0 and float(first["t"]) == pytest.approx(t0, abs=0.001)


def test_rules_for_this_session_only(live_server: Any, make_kart: Any, open_page: Any) -> None:
    kart = make_kart(track_id=None, name="Session rules")
    page = open_page(kart.url)
    expect(page.locator("body")).to_have_attribute("data-joined", "true")
    page.click(".area-rules summary")
    expect(page.locator("#rules-table")).to_have_attribute("data-loaded", "true")
    page.select_option("#rules-scope", "session")
    expect(page.locator("#rules-msg")).to_contain_text("this session")
    row = page.locator('#rules-table tr[data-rule-id="fuel_low"]')
    row.locator(".rule-threshold").fill("33")
    row.get_by_role("button").click()
    give_key(page, live_server.api_key)
    expect(row.locator(".rule-source")).to_have_text("saved (session)")
    mine = {i["rule"]["id"]: i for i in kart.api("get", f"/alert-rules?session_id={kart.sid}")["items"]}
    car = {i["rule"]["id"]: i for i in kart.api("get", f"/alert-rules?car_id={kart.car_id}")["items"]}
    assert mine["fuel_low"]["source"] == "session" and mine["fuel_low"]["rule"]["threshold"] == 33
    assert car["fuel_low"]["source"] == "default"  # the car's other sessions keep theirs
