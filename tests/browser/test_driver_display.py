"""The driver display end to end: real `dashboard monitor` processes fed the recorded GPS log through a pty, each
serving its page (--display), in Debian's chromium.

Two cars at once: one on the live server (its track fetched over REST), whose driver gets the pit's messages (the
first sent from the pit's live page, which then shows the answer with its lap; the others over REST) and answers
them with the touch buttons and with keys; one whose server is unreachable (a closed port) and
whose track comes from --track-file, which still shows its lap, its running time and its delta, all computed in the
car. Saves docs' screenshot (day and night side by side) to the artifacts folder as driver-display.png.
"""
from __future__ import annotations

import base64
import json
import re
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import requests
from playwright.sync_api import expect

from dashboard.server.tracks import ORLANDO_TRACK_ID
from tests.browser.conftest import ARTIFACTS
from tests.car.test_messages_e2e import api, message, reaches
from tests.car.test_monitor_process_e2e import ON_TRACK, TIMEOUT_S, GpsFeed, MonitorProcess, car_session
from tests.servers import free_port
from tests.waiting import wait_for

# the feed starts ~15 s before the kart crosses the line (at ON_TRACK + 1440): the monitors are up by then, so
# the car's lap 1 is the recording's second lap, the best lap the delta on lap 2 is measured against
START_LINE = ON_TRACK + 940
LAP_ONE_S = 56.791
DELTA_TIMEOUT_S = 150.0  # lap 1 (59 s of the recording at its own pace) + startup, on a busy two-core machine
SIGNS = {"ahead": "\u2212", "behind": "+", "even": "\u00b1"}  # the delta's first character
SCREEN = {"width": 800, "height": 480}  # a 5" HDMI screen on the dash


def gps_feed(link: Path) -> GpsFeed:
    """The recording from START_LINE, its first fix stamped now (the server refuses frames from the future)."""
    return GpsFeed(link, START_LINE)


def display_monitor(server: Any, car_id: str, gps: GpsFeed, tmp_path: Path, *extra: str) -> tuple[MonitorProcess, str]:
    """A GPS-only monitor process serving its driver display on a free port; (monitor, page url)."""
    monitor = MonitorProcess(server, car_id, "", gps.link, tmp_path / f"{car_id}-outbox.sqlite",
                             tmp_path / f"{car_id}-monitor.log")
    port = free_port()
    monitor.args = [sys.executable, "-m", "dashboard", "monitor", "--server", server.url, "--car-id", car_id,
                    "--gps", str(gps.link), "--outbox", str(tmp_path / f"{car_id}-outbox.sqlite"), "--rate", "10",
                    "--display", f"127.0.0.1:{port}", *extra]
    return monitor.start(), f"http://127.0.0.1:{port}/"


def page_open(open_page: Any, url: str, monitor: MonitorProcess) -> Any:
    """The display in chromium, once the monitor listens."""
    wait_for(lambda: monitor.check_alive() or requests.get(url + "api/state", timeout=2).ok, TIMEOUT_S,
             f"the display at {url}: {monitor.log_text()[-2000:]}")
    page = open_page(url, viewport=SCREEN)
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    return page


def lap_seconds(text: str) -> float:
    minutes, _, seconds = text.rpartition(":")
    return (int(minutes) * 60 if minutes else 0) + float(seconds)


def test_the_driver_display_in_the_car(live_server: Any, open_page: Any, browser: Any, tmp_path: Path) -> None:
    track_file = tmp_path / "track.json"  # the server's track JSON, as a crew would save it for a car offline
    track_file.write_text(json.dumps(api(live_server, "get", f"/tracks/{ORLANDO_TRACK_ID}")))
    nowhere = SimpleNamespace(url=f"http://127.0.0.1:{free_port()}", api_key="no-server-listens")
    gps_online, gps_offline = gps_feed(tmp_path / "gps-online"), gps_feed(tmp_path / "gps-offline")
    online, online_url = display_monitor(live_server, "display-e2e", gps_online, tmp_path,
                                         "--track-id", ORLANDO_TRACK_ID)
    offline, offline_url = display_monitor(nowhere, "display-offline", gps_offline, tmp_path,
                                           "--track-file", str(track_file))
    try:
        # ---- no link at all: lap and running time computed in the car
        alone = page_open(open_page, offline_url, offline)
        expect(alone.locator("#link")).to_have_text("LINK DOWN")
        expect(alone.locator("#lap")).to_have_text("1", timeout=TIMEOUT_S * 1000)  # the kart crossed the line
        first = lap_seconds(alone.locator("#elapsed").inner_text())
        wait_for(lambda: lap_seconds(alone.locator("#elapsed").inner_text()) > first + 1, TIMEOUT_S,
                 "the lap time runs")
        expect(alone.locator("#delta")).to_have_text("--")  # no best lap yet
        expect(alone.locator("#message")).to_be_hidden()

        # ---- the pit's messages on the car with a link, answered with a touch and with keys
        page = page_open(open_page, online_url, online)
        sid = car_session(live_server, "display-e2e", online)["session_id"]
        expect(page.locator("#link")).to_have_text("LINK UP", timeout=TIMEOUT_S * 1000)
        expect(page.locator("#lap")).to_have_text("1", timeout=TIMEOUT_S * 1000)  # the track fetched over REST

        # sent from the pit's own page (the live page's canned FUEL OK?, a yes/no question), with the crew's key
        pit = open_page(f"{live_server.url}/sessions/{sid}")
        expect(pit.locator("body")).to_have_attribute("data-joined", "true")
        pit.locator("#msg-canned button", has_text="FUEL OK?").click()
        expect(pit.locator("#key-dialog")).to_be_visible()
        pit.fill("#key-input", live_server.api_key)
        pit.keyboard.press("Enter")
        pit_row = pit.locator("#msg-list li", has_text="FUEL OK?")
        expect(pit_row).to_have_attribute("data-state", re.compile("delivered|seen"), timeout=TIMEOUT_S * 1000)
        fuel = {"id": pit_row.get_attribute("data-message-id")}
        expect(page.locator("#message-text")).to_have_text("FUEL OK?", timeout=TIMEOUT_S * 1000)
        expect(page.locator("#answer-yes")).to_be_visible()
        expect(page.locator("#answer-no")).to_be_visible()
        expect(page.locator("#answer-ok")).to_be_hidden()
        reaches(live_server, sid, fuel["id"], "seen", online)  # shown: seen, before any answer
        day = page.screenshot()
        page.locator("#answer-yes").click()
        expect(page.locator("#message")).to_be_hidden()
        answered = reaches(live_server, sid, fuel["id"], "answered", online)
        assert answered["answer"] == "yes" and isinstance(answered["answered_lap"], int)
        expect(pit_row.locator(".msg-state")).to_have_text(f"answered YES (lap {answered['answered_lap']})",
                                                           timeout=TIMEOUT_S * 1000)  # the pit sees it live
        assert [e["state"] for e in answered["events"]] == ["queued", "sent", "delivered", "seen", "answered"]

        push = api(live_server, "post", f"/sessions/{sid}/messages", json={"text": "PUSH"})
        expect(page.locator("#message-text")).to_have_text("PUSH", timeout=TIMEOUT_S * 1000)
        expect(page.locator("#answer-ok")).to_be_visible()
        expect(page.locator("#answer-yes")).to_be_hidden()
        page.keyboard.press("Enter")  # a button box's key: OK on a message that asks nothing
        done = reaches(live_server, sid, push["id"], "answered", online)
        assert done["answer"] == "ok" and isinstance(done["answered_lap"], int)

        # the highest priority on top; a box call that asks nothing stays until the pit lane (or the pit cancels)
        car_ok = api(live_server, "post", f"/sessions/{sid}/messages", json={"text": "CAR OK?", "asks_answer": True})
        box = api(live_server, "post", f"/sessions/{sid}/messages",
                  json={"text": "BOX THIS LAP", "priority": "urgent", "close_on": "box"})
        expect(page.locator("#message-text")).to_have_text("BOX THIS LAP", timeout=TIMEOUT_S * 1000)
        expect(page.locator("#message-more")).to_have_text("+1 MORE")
        expect(page.locator("#message-buttons")).to_be_hidden()
        expect(page.locator("#message-note")).to_be_visible()
        reaches(live_server, sid, box["id"], "seen", online)
        page.keyboard.press("y")
        page.keyboard.press("Escape")
        expect(page.locator("#message-text")).to_have_text("BOX THIS LAP")  # no key dismisses it
        assert message(live_server, sid, box["id"])["state"] == "seen"
        api(live_server, "post", f"/sessions/{sid}/messages/{box['id']}/cancel")
        expect(page.locator("#message-text")).to_have_text("CAR OK?", timeout=TIMEOUT_S * 1000)
        page.keyboard.press("n")
        no = reaches(live_server, sid, car_ok["id"], "answered", online)
        assert no["answer"] == "no" and isinstance(no["answered_lap"], int)
        expect(page.locator("#message")).to_be_hidden()

        # ---- still no link: lap 1 done, the delta to it on lap 2, green or red
        expect(alone.locator("#lap")).to_have_text("2", timeout=DELTA_TIMEOUT_S * 1000)
        assert abs(lap_seconds(alone.locator("#last-lap").inner_text()) - LAP_ONE_S) < 0.3
        wait_for(lambda: alone.locator("#delta").inner_text() != "--", TIMEOUT_S, "a delta")
        sign = alone.locator("#delta").get_attribute("data-sign")
        shown = alone.locator("#delta").inner_text()
        assert sign in SIGNS and shown[0] == SIGNS[sign]
        colour = alone.locator("#delta").evaluate("e => getComputedStyle(e).color")
        assert colour != alone.locator("#lap").evaluate("e => getComputedStyle(e).color")  # green or red, not text
        expect(alone.locator("#link")).to_have_text("LINK DOWN")

        # ---- night mode: the F3 key (a button box's), and the phone's own dark setting
        expect(alone.locator("html")).to_have_attribute("data-theme", "day")
        alone.keyboard.press("F3")
        expect(alone.locator("html")).to_have_attribute("data-theme", "night")
        night = alone.screenshot()
        dark = browser.new_context(viewport=SCREEN, color_scheme="dark")
        try:
            phone = dark.new_page()
            phone.goto(offline_url)
            expect(phone.locator("html")).to_have_attribute("data-theme", "night")
            phone.locator("#night-toggle").click()
            expect(phone.locator("html")).to_have_attribute("data-theme", "day")
        finally:
            dark.close()
        save_side_by_side(browser, day, night, ARTIFACTS / "driver-display.png")
        assert online.stop() == 0, online.log_text()[-3000:]
        assert offline.stop() == 0, offline.log_text()[-3000:]
    finally:
        for monitor in (online, offline):
            monitor.kill()
        gps_online.close()
        gps_offline.close()


def save_side_by_side(browser: Any, left: bytes, right: bytes, path: Path) -> None:
    """Two screenshots in one image (day | night), composed by chromium itself."""
    images = "".join(f'<img src="data:image/png;base64,{base64.b64encode(png).decode()}">' for png in (left, right))
    context = browser.new_context(viewport={"width": 2 * SCREEN["width"] + 24, "height": SCREEN["height"] + 16})
    try:
        page = context.new_page()
        page.set_content(f'<body style="margin:0;padding:8px;background:#777;display:flex;gap:8px">{images}</body>')
        path.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(path))
    finally:
        context.close()
