"""The lap comparison page in a real browser against a real server: the bundled recording streamed as two
sessions of one car (two setups), two laps picked from the list, the delta trace read from the page (its end is
the difference of the two lap times within 0.05 s), the map coloured, the setup table; at 1920 × 1080 and at a
phone's 390 × 844 (stacked). Screenshots: tests/artifacts/compare-desktop.png, compare-phone.png."""
from __future__ import annotations

import uuid
from typing import Any

import requests
from playwright.sync_api import expect

from tests.browser.conftest import PHONE, screenshot
from tests.server.test_compare import lap_times, stream_with_setup

DESKTOP = {"width": 1920, "height": 1080}


def pick(page: Any, session_id: str, lap: int) -> None:
    page.locator(f'tr[data-key="{session_id}:{lap}"] input[type="checkbox"]').check()


def test_two_laps_compared_the_delta_ends_at_the_lap_time_difference(live_server: Any, open_page: Any) -> None:
    car = f"PAGE-{uuid.uuid4().hex[:6]}"
    first = stream_with_setup(live_server, car, {"gearing": {"rear_sprocket": 84}, "tyres": "MG red"})
    second = stream_with_setup(live_server, car, {"gearing": {"rear_sprocket": 85}, "tyres": "MG red"})
    page = open_page(f"{live_server.url}/compare?session_id={first}", viewport=DESKTOP)
    expect(page.locator("body")).to_have_attribute("data-loaded", "true")
    expect(page.locator("#pick-body tr")).to_have_count(12)  # out-lap, 4 laps, in-lap: twice
    expect(page.locator("#setups-body tr")).to_have_count(2)
    expect(page.locator('#setups-body tr[data-version="2"] td.cell-changed')).to_have_text(
        "gearing.rear_sprocket: 84 → 85")

    listing = open_page(f"{live_server.url}/sessions")
    link = listing.locator(f'tr[data-session-id="{second}"] a.compare-link')
    expect(link).to_have_attribute("href", f"/compare?session_id={second}")
    pick(page, first, 2)  # the reference
    pick(page, second, 4)
    key = f"{second}:4"
    page.wait_for_function("(key) => window.__compare.delta[key] !== undefined", arg=key, timeout=30_000)
    delta = page.evaluate("(key) => window.__compare.delta[key]", key)
    want = lap_times(live_server, second)[4] - lap_times(live_server, first)[2]
    last = [v for v in delta["delta_s"] if v is not None][-1]
    assert abs(last - want) < 0.05, (last, want)
    assert len(delta["delta_s"]) == 2000 and delta["delta_s"][0] == 0
    drawn = page.evaluate("() => document.querySelector('[data-chart=delta]') !== null")
    assert drawn
    expect(page.locator("#delta-final")).to_have_attribute("data-sign", "gain" if want < 0 else "loss")
    canvas = page.locator("#compare-map")
    counts = [int(canvas.get_attribute(f"data-{v}") or 0) for v in ("gain", "loss", "even")]
    assert sum(counts) == 50 and counts[0] > 0 and counts[1] > 0, counts
    speed = page.evaluate("() => window.__compare.channels.gps_speed")
    assert speed is not None and len(speed) == 2 and all(len(s) == 2000 for s in speed)
    expect(page.locator('tr[data-key="%s:2"]' % first)).to_have_attribute("data-picked", "0")
    screenshot(page, "compare-desktop")
    # the wide layout: the charts beside the picker
    pick_box = page.locator("#pick-title").bounding_box()
    delta_box = page.locator("#delta-title").bounding_box()
    assert pick_box and delta_box and pick_box["x"] > delta_box["x"] + 500

    page.set_viewport_size(PHONE)
    page.wait_for_function("() => document.querySelector('#compare-map').clientWidth < 390")
    boxes = {sel: page.locator(sel).bounding_box() for sel in ("#pick-title", "#delta-title", "#map-title",
                                                               "#overlay-title", "#setups-title")}
    ys = [box["y"] for box in boxes.values()]
    assert ys == sorted(ys), boxes  # stacked, in reading order
    assert all(box["x"] < 40 for box in boxes.values()), boxes
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the page scrolls sideways on a phone: {width}px"
    screenshot(page, "compare-phone")


def test_the_page_is_linked_from_the_live_page(live_server: Any, open_page: Any) -> None:
    sid = requests.post(f"{live_server.url}/api/v1/sessions", json={"car_id": f"LINK-{uuid.uuid4().hex[:6]}"},
                        headers=live_server.headers, timeout=5).json()["session_id"]
    page = open_page(f"{live_server.url}/sessions/{sid}")
    expect(page.locator("#compare-link")).to_have_attribute("href", f"/compare?session_id={sid}")
    page.locator("#compare-link").click()
    expect(page.locator("body")).to_have_attribute("data-loaded", "true")
    expect(page.locator("#pick-empty")).to_be_visible()  # a session without laps: said, nothing breaks
