"""The live page on a phone (390 × 844), and the channel tiles' labels, in a real browser against a real server.

The layout is asserted with element bounding boxes; the screenshots it saves (tests/artifacts/live-phone-*.png)
are the ones looked at when the layout changed.
"""
from __future__ import annotations

import re
from typing import Any

import requests
from playwright.sync_api import expect

from tests.browser.conftest import PHONE, TRACK_LAT, TRACK_LON, screenshot
from tests.clients import CALL_TIMEOUT_S

GAUGES = ("speed", "rpm", "throttle", "coolant_temp")
# What a crew member looks at: wholly inside the first screen, before any scrolling.
FIRST_SCREEN = ("#delta", "#lap-current", "#lap-best", "#lap-predicted",
                *(f'.gauge[data-channel="{name}"]' for name in GAUGES),
                "#link-state", "#monitor-state", "#health-age", "#conn")


def wait_seq(page: Any, seq: int) -> None:
    page.wait_for_function("(seq) => Number(document.body.dataset.lastSeq) >= seq", arg=seq, timeout=15_000)


def use_oval_track(server: Any, session_id: str) -> None:
    """A start/finish line across the conftest's oval (where it heads north at its east end)."""
    headers = server.headers
    track = requests.post(f"{server.url}/api/v1/tracks", headers=headers, timeout=10, json={
        "name": "Oval", "a": [TRACK_LAT, TRACK_LON + 0.005], "b": [TRACK_LAT, TRACK_LON + 0.007],
        "max_speed_kmh": 600})
    track.raise_for_status()
    requests.put(f"{server.url}/api/v1/sessions/{session_id}/track", headers=headers, timeout=10,
                 json={"track_id": track.json()["track_id"]}).raise_for_status()


def box_of(page: Any, selector: str) -> dict[str, float]:
    box = page.locator(selector).bounding_box()
    assert box is not None and box["width"] > 0 and box["height"] > 0, f"{selector} is not shown"
    return box


def test_phone_first_screen_holds_this_lap_gauges_and_link_then_the_map(live_server: Any, make_car: Any,
                                                                       open_page: Any) -> None:
    car = make_car(name="Phone check: a session name long enough to wrap", driver="P. Hone")
    use_oval_track(live_server, car.session_id)
    car.connect()
    page = open_page(car.url, viewport=PHONE)
    expect(page.locator("body")).to_have_attribute("data-joined", "true")
    last = car.send(2000)[-1]  # 100 s of an oval lapped in 40 s: an out-lap, a timed lap, the lap under way
    car.heartbeat(backlog=0, rtt_ms=48.0)
    with car.driving():  # the car goes on lapping: no silence alarm pushes the page down while it is measured
        wait_seq(page, last["seq"])
        expect(page.locator("#delta")).not_to_have_attribute("data-sign", "none")
        expect(page.locator("#lap-best")).to_have_text(re.compile(r"\d+\.\d{3}"))
        expect(page.locator("#lap-current")).not_to_have_text("—")
        expect(page.locator("#monitor-state")).to_have_text("online")
        expect(page.locator("#conn")).to_have_text("Live")
        for name in GAUGES:
            expect(page.locator(f'.gauge[data-channel="{name}"]')).to_have_attribute("data-drawn", "true")
        expect(page.locator("#alerts")).to_be_hidden()
        page.evaluate("() => window.scrollTo(0, 0)")

        first_screen = {selector: box_of(page, selector) for selector in FIRST_SCREEN}
        for selector, box in first_screen.items():
            assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], (selector, box)
            assert box["y"] >= 0 and box["y"] + box["height"] <= PHONE["height"], (selector, box)
        # the track map comes next, below all of them (and starts on the first screen: it is what follows)
        bottom = max(box["y"] + box["height"] for box in first_screen.values())
        track = box_of(page, "#track")
        assert bottom <= track["y"] < PHONE["height"], (bottom, track)
        # then the rest: every other panel starts below the map
        for area in ("numbers", "charts", "laps", "info", "events", "setup", "form", "rules"):
            panel = box_of(page, f".area-{area}")
            assert panel["y"] >= track["y"] + track["height"], area
        # nothing wider than the phone: no sideways scrolling
        assert page.evaluate("() => document.documentElement.scrollWidth") <= PHONE["width"]
        assert page.evaluate("() => document.body.scrollWidth") <= PHONE["width"]
        screenshot(page, "live-phone-first-screen", full_page=False)
        screenshot(page, "live-phone-whole")


def test_channel_tiles_show_the_registry_labels_and_units(live_server: Any, make_car: Any, open_page: Any) -> None:
    registry = requests.get(f"{live_server.url}/channels.json", headers=live_server.headers, timeout=10).json()
    assert registry["engine_load"]["label"] == "Engine load" and registry["engine_load"]["unit"] == "%"
    car = make_car(name="Labels").connect()
    frames = car.send(20)
    frame = {"seq": car.next_seq, "t": frames[-1]["t"] + 0.05,
             "channels": {"engine_load": 63.5, "intake_temp": 31.0, "brake_bias.front": 57.5}}
    ack = car.monitor.call("telemetry", {"session_id": car.session_id, "frames": [frame]}, namespace="/monitor",
                           timeout=CALL_TIMEOUT_S)
    assert ack["ok"] and not ack["rejected"], ack
    page = open_page(car.url, viewport=PHONE)
    wait_seq(page, frame["seq"])

    load = page.locator('.number[data-channel="engine_load"]')
    expect(load.locator(".label")).to_have_text("Engine load")
    expect(load.locator(".unit")).to_have_text("%")
    expect(load.locator(".value")).to_have_text("64")
    expect(page.locator('.number[data-channel="intake_temp"] .label')).to_have_text("Intake temp")
    expect(page.locator('.number[data-channel="intake_temp"] .unit')).to_have_text("°C")
    expect(page.locator('.number[data-channel="battery_voltage"] .label')).to_have_text("Battery")
    # a team's own channel is not in the registry: its name, no unit
    custom = page.locator('.number[data-channel="brake_bias.front"]')
    expect(custom.locator(".label")).to_have_text("brake_bias.front")
    expect(custom.locator(".unit")).to_have_text("")
    # the gauges are labelled from the same registry
    expect(page.locator('.gauge[data-channel="coolant_temp"] .label')).to_have_text(registry["coolant_temp"]["label"])
    expect(page.locator('.gauge[data-channel="rpm"] .label')).to_have_text("RPM")
    # no registry channel shows its wire name anywhere a person reads it: tiles, chart legends, chart picker
    labels = page.locator(".tile .label").all_text_contents() + page.locator(".strip .u-legend th").all_text_contents()
    picker = [text.strip() for text in page.locator("#chart-channels label").all_text_contents()]
    for name, channel in registry.items():
        if channel["label"].lower() != name:
            assert not any(name in text.split() for text in labels + picker), (name, labels, picker)
    assert "Engine load (%)" in picker and "brake_bias.front" in picker
    expect(page.locator('.strip[data-channel="speed"] .u-legend')).to_contain_text("Speed (km/h)")
    screenshot(page, "live-phone-labels")
