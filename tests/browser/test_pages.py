"""The dashboard pages in a real browser against a real server process.

Every wait is on a condition (Playwright's expect / wait_for_function), never a
fixed sleep. The live view exposes what it drew as data attributes
(``data-value`` of each reading, ``data-last-seq`` on the body, ``data-points``
of each chart and of the track canvas) and the tests also check real pixels.
"""
from __future__ import annotations

import json
import re
from typing import Any

import pytest
import requests
from playwright.sync_api import expect

from tests.browser.conftest import PHONE, screenshot

GAUGES = ("speed", "rpm", "throttle", "coolant_temp")
XSS = "<img src=x onerror=alert(1)>"

# Counts pixels of one colour (within a tolerance) on a canvas: proves a line was drawn, not just cleared.
COUNT_COLOUR = """([selector, rgb]) => {
  const canvas = document.querySelector(selector);
  if (!canvas || !canvas.width) return 0;
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let n = 0;
  for (let i = 0; i < data.length; i += 4) {
    if (data[i + 3] > 200 && Math.abs(data[i] - rgb[0]) < 40 && Math.abs(data[i + 1] - rgb[1]) < 40
        && Math.abs(data[i + 2] - rgb[2]) < 40) n++;
  }
  return n;
}"""


def css_rgb(page: Any, var: str) -> list[int]:
    """A theme colour of the page as [r, g, b]."""
    hexcode = page.evaluate("(v) => getComputedStyle(document.documentElement).getPropertyValue(v).trim()", var)
    return [int(hexcode[i:i + 2], 16) for i in (1, 3, 5)]


def wait_seq(page: Any, seq: int, timeout: float = 15_000) -> None:
    """Wait until the page has drawn every frame up to ``seq``."""
    page.wait_for_function("(seq) => Number(document.body.dataset.lastSeq) >= seq", arg=seq, timeout=timeout)


def assert_readings(page: Any, frame: dict[str, Any]) -> None:
    """Every gauge and number shows the value of ``frame`` (raw in data-value, rounded as text)."""
    for name, value in frame["channels"].items():
        reading = page.locator(f'.value[data-channel="{name}"]')
        assert float(reading.get_attribute("data-value")) == pytest.approx(value, abs=1e-9), name
        if name == "gear":
            assert reading.inner_text() == str(int(value))
        elif name not in ("lat", "lon"):
            assert float(reading.inner_text()) == pytest.approx(value, abs=0.51), name


def test_sessions_list_shows_a_session_and_its_status_live(live_server: Any, make_car: Any, open_page: Any) -> None:
    car = make_car(name="List me", driver="Jo Siffert", track="Spa")
    page = open_page(live_server.url + "/sessions")
    row = page.locator(f'tr[data-session-id="{car.session_id}"]')
    expect(row).to_be_visible()
    expect(row.locator("a")).to_have_text("List me")
    expect(row.locator("a")).to_have_attribute("href", f"/sessions/{car.session_id}")
    expect(row.locator(".cell-driver")).to_have_text("Jo Siffert")
    expect(row.locator(".cell-track")).to_have_text("Spa")
    expect(row.locator(".status-badge")).to_have_text("created")
    expect(page.locator("#conn")).to_have_text("Live")

    # a status change arrives over the `sessions` event, with no reload
    page.evaluate("() => { window.__sameDocument = true; }")
    requests.post(f"{live_server.url}/api/v1/sessions/{car.session_id}/start", headers=live_server.headers,
                  json={}, timeout=10).raise_for_status()
    expect(page.locator(f'tr[data-session-id="{car.session_id}"] .status-badge')).to_have_text("active")
    assert page.evaluate("() => window.__sameDocument === true")

    # the monitor coming online and frames arriving show up on the next refresh,
    # which leaves the keyboard focus where it was
    link = f'tr[data-session-id="{car.session_id}"] a'
    page.focus(link)
    car.connect()
    car.send(40)
    expect(page.locator(f'tr[data-session-id="{car.session_id}"] .pill')).to_have_text("online", timeout=15_000)
    expect(page.locator(f'tr[data-session-id="{car.session_id}"] .cell-frames')).to_have_text("40", timeout=15_000)
    expect(page.locator(link)).to_be_focused()
    screenshot(page, "sessions-list")
    page.keyboard.press("Enter")
    expect(page).to_have_url(car.url)
    expect(page.locator("body")).to_have_attribute("data-joined", "true")


def test_live_view_shows_the_frames_sent(live_server: Any, make_car: Any, open_page: Any) -> None:
    car = make_car(name="FP2 long run", driver="Sam Racer").connect()
    first = car.send(200)  # 10 s of history before anyone watches
    page = open_page(car.url)
    expect(page.locator("body")).to_have_attribute("data-joined", "true")
    wait_seq(page, first[-1]["seq"])  # the snapshot on join brought the history
    assert_readings(page, first[-1])

    car.heartbeat(backlog=7, rtt_ms=42.0)
    for _ in range(5):  # live batches, as the monitor sends them
        last = car.send(20)[-1]
    wait_seq(page, last["seq"])
    assert_readings(page, last)
    expect(page.locator("#monitor-state")).to_have_text("online")
    expect(page.locator("#health-backlog")).to_have_text("7 frames")
    expect(page.locator("#health-rtt")).to_have_text("42 ms")
    expect(page.locator("#session-status")).to_have_text("active")
    expect(page.locator("#info-driver")).to_have_text("Sam Racer")
    for name in ("speed", "rpm", "throttle"):
        expect(page.locator(f'.strip[data-channel="{name}"]')).not_to_have_attribute("data-points", "0")
    assert int(page.locator("#track").get_attribute("data-points")) > 10

    # real pixels: the speed line in its colour, the trail and the car on the map
    page.wait_for_function(f"(a) => ({COUNT_COLOUR})(a) > 100",
                           arg=['.strip[data-channel="speed"] canvas', css_rgb(page, "--series-1")])
    page.wait_for_function(f"(a) => ({COUNT_COLOUR})(a) > 500", arg=["#track", css_rgb(page, "--map-trail")])
    page.wait_for_function(f"(a) => ({COUNT_COLOUR})(a) > 50", arg=["#track", css_rgb(page, "--danger")])
    expect(page.locator('.gauge[data-channel="rpm"]')).to_have_attribute("data-drawn", "true")
    # a fresh value is not greyed
    expect(page.locator('.tile[data-channel="speed"]')).to_have_attribute("data-stale", "false")
    screenshot(page, "live-laptop")

    # the night theme redraws everything in its colours (keyboard only)
    page.focus("#theme-toggle")
    page.keyboard.press("Enter")
    expect(page.locator("html")).to_have_attribute("data-theme", "night")
    page.wait_for_function(f"(a) => ({COUNT_COLOUR})(a) > 100",
                           arg=['.strip[data-channel="speed"] canvas', css_rgb(page, "--series-1")])
    screenshot(page, "live-laptop-night")

    # a second viewer opening mid-session sees the same at once, on a phone
    phone = open_page(car.url, viewport=PHONE)
    wait_seq(phone, last["seq"])
    assert_readings(phone, last)
    screenshot(phone, "live-phone")

    # the feed stops: values go stale, greyed, with their age
    expect(page.locator('.tile[data-channel="lat"]')).to_have_attribute("data-stale", "true", timeout=10_000)
    expect(page.locator('.tile[data-channel="lat"] .age')).to_contain_text("stale")


def test_setup_sent_from_one_page_appears_in_another(live_server: Any, make_car: Any, open_page: Any) -> None:
    car = make_car(name="Setup work")
    engineer = open_page(car.url)
    crew = open_page(car.url)
    for page in (engineer, crew):
        expect(page.locator("body")).to_have_attribute("data-joined", "true")

    # key/value rows; the API key is asked once, in the page's own dialog
    engineer.locator("#setup-rows .row-key").nth(0).fill("wing_front")
    engineer.locator("#setup-rows .row-value").nth(0).fill("14")
    engineer.click("#row-add")
    engineer.locator("#setup-rows .row-key").nth(1).fill("<b>note</b>")
    engineer.locator("#setup-rows .row-value").nth(1).fill("soft & <i>")
    engineer.click("#setup-submit")
    expect(engineer.locator("#key-dialog")).to_be_visible()
    engineer.fill("#key-input", live_server.api_key)
    engineer.keyboard.press("Enter")
    expect(engineer.locator("#setup-msg")).to_have_text("Saved as v1")
    assert engineer.evaluate("() => sessionStorage.getItem('dashboard.apiKey')") == live_server.api_key

    expect(crew.locator("#setup-version")).to_contain_text("v1")
    expect(crew.locator("#setup-current th")).to_have_text(["wing_front", "<b>note</b>"])
    expect(crew.locator("#setup-current td")).to_have_text(["14", "soft & <i>"])

    # raw JSON mode from the other page; the engineer sees v2 and what changed
    crew.click("#mode-json")
    crew.fill("#setup-json", json.dumps({"wing_front": 15, "<b>note</b>": "soft & <i>", "tyres": {"fl": 1.9}}))
    crew.click("#setup-submit")
    crew.fill("#key-input", live_server.api_key)
    crew.click("#key-dialog button[type=submit]")
    expect(crew.locator("#setup-msg")).to_have_text("Saved as v2")

    expect(engineer.locator("#setup-version")).to_contain_text("v2")
    expect(engineer.locator("#setup-history li")).to_have_count(2)
    diff = engineer.locator("#setup-diff tbody tr")
    expect(diff).to_have_count(2)
    expect(diff.nth(0)).to_have_text(re.compile(r"tyres\.fl\s*—\s*1\.9"))
    expect(diff.nth(1)).to_have_text(re.compile(r"wing_front\s*14\s*15"))
    expect(engineer.locator('#feed li[data-kind="setup.changed"]').first).to_be_visible()

    # a third setup from the engineer: no second question for the key
    engineer.click("#rows-load")
    expect(engineer.locator("#setup-rows .row-key")).to_have_count(3)
    engineer.locator("#setup-rows .row-value").nth(0).fill("16")
    engineer.click("#setup-submit")
    expect(engineer.locator("#setup-msg")).to_have_text("Saved as v3")
    expect(crew.locator("#setup-current td").first).to_have_text("16")

    # session controls: every page follows the status
    engineer.click("#ctl-start")
    expect(crew.locator("#session-status")).to_have_text("active")
    engineer.click("#ctl-stop")
    expect(crew.locator("#session-status")).to_have_text("stopped")
    engineer.click("#ctl-end")
    expect(engineer.locator("#ctl-end")).to_have_text("Confirm end")  # End asks for a second press
    engineer.click("#ctl-end")
    for page in (engineer, crew):
        expect(page.locator("#session-status")).to_have_text("ended")
        for button in ("#ctl-start", "#ctl-stop", "#ctl-end"):
            expect(page.locator(button)).to_be_disabled()


def test_page_recovers_when_the_server_restarts(live_server: Any, make_car: Any, open_page: Any) -> None:
    car = make_car(name="Restart me").connect()
    before = car.send(40)[-1]
    page = open_page(car.url)
    wait_seq(page, before["seq"])
    expect(page.locator("#banner")).to_be_hidden()

    try:
        live_server.kill()
        car.monitor = None  # its connection died with the server
        expect(page.locator("#banner")).to_be_visible()
        expect(page.locator("#banner")).to_contain_text("reconnecting")
        expect(page.locator("#conn")).to_have_text("Offline")
        screenshot(page, "live-reconnecting")
    finally:
        live_server.start()

    car.connect()  # the monitor comes back and resumes its session
    expect(page.locator("#banner")).to_be_hidden(timeout=20_000)
    expect(page.locator("body")).to_have_attribute("data-joined", "true")
    after = car.send(20)[-1]
    wait_seq(page, after["seq"])
    assert_readings(page, after)
    expect(page.locator("#conn")).to_have_text("Live")


def test_user_text_is_shown_as_text(live_server: Any, make_car: Any, open_page: Any) -> None:
    car = make_car(name="<script>alert(2)</script>", driver=XSS, track='"><svg onload=alert(3)>')
    requests.post(f"{live_server.url}/api/v1/sessions/{car.session_id}/setup", headers=live_server.headers,
                  json={"setup": {XSS: "<iframe src=javascript:alert(4)>"}}, timeout=10).raise_for_status()

    page = open_page(live_server.url + "/sessions")
    row = page.locator(f'tr[data-session-id="{car.session_id}"]')
    expect(row.locator(".cell-driver")).to_have_text(XSS)
    expect(row.locator("a")).to_have_text("<script>alert(2)</script>")
    expect(row.locator(".cell-track")).to_have_text('"><svg onload=alert(3)>')
    assert page.locator("#sessions-body img, #sessions-body svg, #sessions-body script").count() == 0

    page.goto(car.url)
    expect(page.locator("body")).to_have_attribute("data-joined", "true")
    expect(page.locator("#info-driver")).to_have_text(XSS)
    expect(page.locator("#session-name")).to_have_text("<script>alert(2)</script>")
    expect(page.locator("#setup-current th")).to_have_text([XSS])
    expect(page.locator("#setup-current td")).to_have_text(["<iframe src=javascript:alert(4)>"])
    assert page.locator("main img, main iframe, main svg, main script").count() == 0
    assert page.title().startswith("<script>alert(2)</script>")
    # no dialog fired: checked by the open_page fixture


def test_history_stays_bounded_under_a_long_fast_feed(live_server: Any, make_car: Any, open_page: Any) -> None:
    car = make_car(name="Long run").connect()
    page = open_page(car.url)
    expect(page.locator("body")).to_have_attribute("data-joined", "true")
    frames = car.send(20_000, hz=50.0)  # 400 s at 50 Hz, faster than real time
    wait_seq(page, frames[-1]["seq"], timeout=30_000)
    assert_readings(page, frames[-1])
    buffered = int(page.locator("body").get_attribute("data-buffered"))
    # the buffer keeps 330 s (5 min window + margin): 16 500 frames at 50 Hz, trimmed in chunks of 512
    assert 300 * 50 <= buffered <= 330 * 50 + 512 + 1
    page.click('[data-window="300"]')
    expect(page.locator('.strip[data-channel="speed"]')).to_have_attribute("data-points", re.compile(r"^1[45]\d{3}$"))
    assert int(page.locator("#track").get_attribute("data-points")) > 100


def test_sessions_list_pages_through_the_api(live_server: Any, make_car: Any, open_page: Any) -> None:
    cars = [make_car(name=f"Page test {i}") for i in range(21)]  # newest first: 20 on page one, the oldest next
    page = open_page(live_server.url + "/sessions")
    rows = page.locator("#sessions-body tr")
    expect(rows).to_have_count(20)
    expect(rows.first).to_have_attribute("data-session-id", cars[-1].session_id)
    expect(page.locator("#page-prev")).to_be_disabled()
    page.click("#page-next")
    expect(rows.first).to_have_attribute("data-session-id", cars[0].session_id)
    expect(page.locator("#sessions-summary")).to_contain_text("21–")
    page.click("#page-prev")
    expect(rows.first).to_have_attribute("data-session-id", cars[-1].session_id)

    phone = open_page(live_server.url + "/sessions", viewport=PHONE)
    expect(phone.locator("#sessions-body tr")).to_have_count(20)
    screenshot(phone, "sessions-list-phone")


def test_viewer_token_is_asked_once_remembered_and_asked_again_when_refused(server_factory: Any,
                                                                           open_page: Any) -> None:
    server = server_factory(viewer_token="crew-only")
    session = requests.post(f"{server.url}/api/v1/sessions", headers=server.headers, timeout=10,
                            json={"name": "Private", "car_id": "car-private"}).json()
    page = open_page(f"{server.url}/sessions/{session['session_id']}")
    dialog = page.locator("#key-dialog")
    expect(dialog).to_be_visible()  # asked once for the REST calls and the live link together
    expect(page.locator("#key-dialog-title")).to_have_text("Viewer token")
    page.fill("#key-input", "crew-only")
    page.keyboard.press("Enter")
    expect(page.locator("body")).to_have_attribute("data-joined", "true")
    expect(page.locator("#banner")).to_be_hidden()
    expect(page.locator("#session-name")).to_have_text("Private")
    assert page.evaluate("() => localStorage.getItem('dashboard.viewerToken')") == "crew-only"
    with page.expect_download() as download:  # the export carries the token too (a plain link could not)
        page.click("#export-csv")
    assert download.value.suggested_filename.endswith(".csv")

    page.reload()  # remembered: not asked again
    expect(page.locator("body")).to_have_attribute("data-joined", "true")
    expect(dialog).to_be_hidden()
    listing = page.context.new_page()
    listing.goto(server.url + "/sessions")
    expect(listing.locator(f'tr[data-session-id="{session["session_id"]}"]')).to_be_visible()

    page.evaluate("() => localStorage.setItem('dashboard.viewerToken', 'stale')")  # refused: asked again
    page.reload()
    expect(dialog).to_be_visible()
    expect(page.locator("#key-dialog-text")).to_contain_text("refused")
    page.fill("#key-input", "crew-only")
    page.keyboard.press("Enter")
    expect(page.locator("body")).to_have_attribute("data-joined", "true")


def test_a_deleted_session_says_so_on_its_page_and_leaves_the_list(live_server: Any, make_car: Any,
                                                                    open_page: Any) -> None:
    car = make_car(name="Delete me")
    live = open_page(f"{live_server.url}/sessions/{car.session_id}")
    expect(live.locator("body")).to_have_attribute("data-joined", "true")
    listing = open_page(live_server.url + "/sessions")
    expect(listing.locator(f'tr[data-session-id="{car.session_id}"]')).to_be_visible()
    requests.delete(f"{live_server.url}/api/v1/sessions/{car.session_id}", headers=live_server.headers,
                    timeout=10).raise_for_status()
    expect(live.locator("body")).to_have_attribute("data-deleted", "true")
    expect(live.get_by_text("This session was deleted")).to_be_visible()
    expect(listing.locator(f'tr[data-session-id="{car.session_id}"]')).to_have_count(0)
