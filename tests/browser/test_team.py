"""The team view (/team) in a real browser against a real server: two cars, values as they sent them, live.

Screenshots: tests/artifacts/team-desktop.png (1920 × 1080) and team-phone.png (390 × 844); the overview
with two simulated cars: team-overview-desktop.png (1920 × 1080; and -pitwall with a card's panel open,
-stale after one car stopped), team-overview-phone.png (390 × 844) and team-overview-landscape.png (844 × 390).
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from playwright.sync_api import expect

from tests.browser.conftest import PHONE, Car, screenshot
from tests.browser.test_live_phone import use_oval_track
from tests.server.test_pitwall import orlando_with_lane
from tests.servers import REPO
from tests.telemetry.test_pitlane import PIT_IN_FIX, PIT_OUT_FIX, line_across, recording
from tests.waiting import wait_for

DESKTOP = {"width": 1920, "height": 1080}
LANDSCAPE = {"width": 844, "height": 390}
SPEEDUP = "8"  # the bundled recording's ~60 s laps in ~7.5 s


def api(server: Any, method: str, path: str, **kwargs: Any) -> requests.Response:
    answer = requests.request(method, f"{server.url}/api/v1{path}", headers=server.headers, timeout=30, **kwargs)
    answer.raise_for_status()
    return answer


def card(page: Any, session_id: str) -> Any:
    return page.locator(f'.team-car[data-session-id="{session_id}"]')


def value(page: Any, session_id: str, field: str) -> Any:
    return card(page, session_id).locator(f'[data-field="{field}"] .team-fig-value')


def test_two_cars_on_the_team_view(server_factory: Any, open_page: Any) -> None:
    server = server_factory()
    a, b = Car(server, name="Car A", driver=None), Car(server, name="Car B", driver=None)
    try:
        api(server, "post", f"/cars/{a.car_id}/drivers", json={"driver_id": "ann", "name": "Ann Driver"})
        use_oval_track(server, a.session_id)
        api(server, "put", f"/sessions/{a.session_id}/fuel", json={"tank_l": 40, "use_per_lap_l": 2})
        a.connect()
        b.connect()
        api(server, "post", f"/sessions/{a.session_id}/driver-change",
            json={"driver_id": "ann", "at": time.time() - 100})
        a.send(2000, 20)  # the last 100 s around the 40 s oval: two timed laps
        b.send(100, 20)

        expected = wait_for(lambda: (rows := {c["session_id"]: c for c in api(server, "get", "/team").json()["cars"]})
                            and rows[a.session_id]["laps"] >= 1 and rows, 15, "A's laps in the team view")
        row_a = expected[a.session_id]
        page = open_page(f"{server.url}/team", viewport=DESKTOP)
        expect(page.locator(".team-car")).to_have_count(2)
        expect(card(page, a.session_id).locator('[data-field="driver"]')).to_have_text("Ann Driver")
        expect(value(page, a.session_id, "laps")).to_have_text(str(row_a["laps"]))
        best = row_a["best_lap_s"]
        expect(value(page, a.session_id, "best_lap")).to_have_text(f"{best:.3f}" if best < 60 else best)
        assert best == pytest.approx(40.0, abs=0.5)
        completed = len(api(server, "get", f"/sessions/{a.session_id}/laps").json()["items"])
        assert row_a["fuel"]["level"] == pytest.approx(40 - 2 * completed)  # the model: 2 l a lap from 40 l
        percent = round(row_a["fuel"]["percent"])
        expect(value(page, a.session_id, "fuel")).to_have_text(f"{percent} %")
        expect(card(page, a.session_id).locator('[data-field="fuel"] .team-fig-sub')).to_have_text(
            f"{row_a['fuel']['level']:.1f} l")
        expect(value(page, a.session_id, "pit")).to_have_text("On track")
        expect(card(page, b.session_id).locator('[data-field="driver"]')).to_have_text("—")
        expect(value(page, b.session_id, "laps")).to_have_text("0")
        expect(card(page, a.session_id).locator("a.team-car-name")).to_have_attribute(
            "href", f"/sessions/{a.session_id}")

        # live: B's driver gets in while the page is open; the row changes through team.update
        api(server, "post", f"/cars/{b.car_id}/drivers", json={"driver_id": "bob", "name": "Bob Driver"})
        api(server, "post", f"/sessions/{b.session_id}/driver-change", json={"driver_id": "bob"})
        b.send(20, 20)
        expect(card(page, b.session_id).locator('[data-field="driver"]')).to_have_text("Bob Driver")
        expect(value(page, b.session_id, "link")).to_contain_text("Live")
        screenshot(page, "team-desktop", full_page=False)

        phone = open_page(f"{server.url}/team", viewport=PHONE)
        expect(phone.locator(".team-car")).to_have_count(2)
        expect(value(phone, a.session_id, "laps")).to_have_text(str(row_a["laps"]))
        width = phone.evaluate("document.scrollingElement.scrollWidth")
        assert width <= PHONE["width"], f"the team view scrolls sideways on a phone ({width} px)"
        screenshot(phone, "team-phone")

        api(server, "post", f"/sessions/{b.session_id}/end")
        expect(page.locator(".team-car")).to_have_count(1)
    finally:
        a.close()
        b.close()


# ------------------------------------------------------------------ the overview, with `dashboard simulate` cars
@contextlib.contextmanager
def simulated(server: Any, car_id: str, folder: Path) -> Iterator[subprocess.Popen]:
    """`dashboard simulate` driving ``car_id`` (the bundled recording, replayed in a loop) until stopped."""
    folder.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASHBOARD_")}
    env.update({"PYTHONUNBUFFERED": "1", "DASHBOARD_API_KEY": server.api_key,
                "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")})
    with open(folder / "simulate.log", "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "dashboard", "simulate", "--server", server.url, "--car-id", car_id,
             "--speedup", SPEEDUP, "--outbox", str(folder / "outbox.sqlite")],
            cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            yield process
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(10)


def start_session(server: Any, car_id: str, track_id: str) -> str:
    sid = api(server, "post", "/sessions", json={"car_id": car_id, "track_id": track_id}).json()["session_id"]
    api(server, "post", f"/sessions/{sid}/start")
    return sid


def team_rows(server: Any) -> dict[str, Any]:
    return {c["session_id"]: c for c in api(server, "get", "/team").json()["cars"]}


def markers(page: Any) -> dict[str, Any]:
    raw = page.locator("#team-map").get_attribute("data-markers")
    return {m["id"]: m for m in json.loads(raw or "[]")}


def pixel(page: Any, x: float, y: float) -> list[int]:
    """The map canvas's colour at CSS pixel (x, y)."""
    return page.evaluate("""([x, y]) => {
        const c = document.getElementById("team-map");
        const d = window.devicePixelRatio || 1;
        return Array.from(c.getContext("2d").getImageData(Math.round(x * d), Math.round(y * d), 1, 1).data);
    }""", [x, y])


def rgb(css: str) -> list[int]:
    return [int(css[i:i + 2], 16) for i in (1, 3, 5)]


def test_the_overview_with_two_simulated_cars(server_factory: Any, open_page: Any, tmp_path: Path) -> None:
    server = server_factory()
    front = open_page(f"{server.url}/")
    expect(front.locator("#sessions-table")).to_be_visible()  # no car live: the sessions list
    expect(front.locator("#team-link")).to_have_attribute("href", "/team")

    seven, twelve = "7", "12"
    for driver_id, name in (("ann", "Ann Driver"), ("bob", "Bob Driver")):
        api(server, "post", f"/cars/{seven}/drivers", json={"driver_id": driver_id, "name": name})
    fixes = recording()
    track = api(server, "post", "/tracks", json=orlando_with_lane(
        line_across(fixes, PIT_IN_FIX), line_across(fixes, PIT_OUT_FIX))).json()
    sid7, sid12 = start_session(server, seven, track["track_id"]), start_session(server, twelve, track["track_id"])
    api(server, "post", f"/sessions/{sid7}/driver-change", json={"driver_id": "ann"})
    api(server, "put", f"/sessions/{sid7}/fuel", json={"tank_l": 40, "use_per_lap_l": 2})
    with simulated(server, seven, tmp_path / "car7"), simulated(server, twelve, tmp_path / "car12") as car12:
        # the front page is the overview as soon as a car is live
        page = open_page(f"{server.url}/", viewport=DESKTOP)
        expect(page.locator("body.page-team")).to_have_count(1)
        expect(page.locator("#sessions-link")).to_have_attribute("href", "/sessions")
        expect(page.locator(".team-car")).to_have_count(2)

        # both on the map, filled (live), each in its own colour
        both = wait_for(lambda: (m := markers(page)) and len(m) == 2 and not any(v["hollow"] for v in m.values()) and m,
                        60, "two live markers on the map")
        assert {sid7, sid12} == set(both)
        colours = {li.get_attribute("data-session-id"): li.locator(".team-swatch").evaluate(
            "s => getComputedStyle(s).getPropertyValue('--car').trim()")
            for li in page.locator(".team-legend-car").all()}
        assert colours[sid7] != colours[sid12]
        assert page.locator(f'.team-legend-car[data-session-id="{sid7}"] .team-legend-label').inner_text() == "7"
        # the track's lines: start/finish, and the pit lane's in and out lines (in the accent colour)
        lines = json.loads(page.locator("#team-map").get_attribute("data-lines") or "[]")
        assert sorted(line["kind"] for line in lines) == ["finish", "pit_in", "pit_out"]
        accent = rgb(page.evaluate("getComputedStyle(document.documentElement).getPropertyValue('--accent').trim()"))
        for line in (li for li in lines if li["kind"].startswith("pit")):
            along = [pixel(page, line["a"][0] + (line["b"][0] - line["a"][0]) * k / 10,
                           line["a"][1] + (line["b"][1] - line["a"][1]) * k / 10)[:3] for k in range(1, 10)]
            assert accent in along, (line, along)
        m7 = markers(page)[sid7]
        assert pixel(page, m7["x"], m7["y"])[:3] == rgb(colours[sid7])  # a filled marker: the car's colour

        # values as the cars sent them: the page shows what GET /team says, laps and best lap
        def same() -> bool:
            row = team_rows(server)[sid7]
            shown = [value(page, sid7, f).inner_text() for f in ("laps", "best_lap")]
            best = row["best_lap_s"]
            best_text = "—" if best is None else (
                f"{best:.3f}" if best < 60 else f"{int(best // 60)}:{best % 60:06.3f}")
            return row["laps"] >= 2 and shown == [str(row["laps"]), best_text]
        wait_for(same, 120, "car 7's laps and best lap on the page as GET /team has them")
        expect(card(page, sid7).locator(".team-driver")).to_have_text("Ann Driver")
        expect(page.locator("#team-map")).not_to_have_attribute("data-outline", "0", timeout=30_000)
        outline = int(page.locator("#team-map").get_attribute("data-outline") or 0)
        assert outline > 100, "the track's outline (a lapped car's stored fixes) is on the map"
        screenshot(page, "team-overview-desktop", full_page=False)

        # a driver change from the page: Bob, picked from the roster, is stamped on the laps after it
        card(page, sid7).locator("details.team-pitwall summary").click()
        select = card(page, sid7).locator("select.pw-driver")
        expect(select.locator("option")).to_have_count(2)
        select.select_option("bob")
        changed_at = time.time()
        card(page, sid7).locator("button.pw-change").click()
        page.fill("#key-input", server.api_key)  # the write key, asked once and kept for the tab
        page.locator("#key-form button[value=ok]").click()
        expect(card(page, sid7).locator(".pw-status")).to_have_text("Bob Driver is in")
        expect(card(page, sid7).locator(".team-driver")).to_have_text("Bob Driver")
        laps = wait_for(lambda: [lap for lap in api(server, "get", f"/sessions/{sid7}/laps").json()["items"]
                                 if lap["start_t"] >= changed_at] or None, 90, "a lap after the driver change")
        assert all(lap["driver_id"] == "bob" for lap in laps)
        stints = card(page, sid7).locator("table.stints tbody tr")
        expect(stints.last.locator('[data-col="driver"]')).to_have_text("Bob Driver")
        expect(stints.nth(-2).locator('[data-col="driver"]')).to_have_text("Ann Driver")
        served = wait_for(lambda: (items := api(server, "get", f"/sessions/{sid7}/stints").json()["items"])
                          and items[-1]["laps"] >= 1 and items, 30, "Bob's stint has a lap")
        expect(stints.last.locator('[data-col="laps"]')).not_to_have_text("0", timeout=10_000)
        assert served[-1]["driver_id"] == "bob"

        # the crew's word: "filled 10 l", from the page (the key is kept: not asked again)
        card(page, sid7).locator("input.pw-litres").fill("10")
        card(page, sid7).locator("button.pw-filled").click()
        expect(card(page, sid7).locator(".pw-status")).to_have_text("Filled 10 l")
        events = api(server, "get", f"/sessions/{sid7}/events").json()["items"]
        assert any(e["event_type"] == "fuel.crew" and e["payload"]["added"] == 10 for e in events)
        card(page, sid7).locator("input.pw-litres").fill("5000")
        card(page, sid7).locator("button.pw-filled").click()
        expect(card(page, sid7).locator(".pw-status")).to_have_text("Litres added: a number from 0 to 1000")

        screenshot(page, "team-overview-pitwall", full_page=False)
        for size, name in ((PHONE, "team-overview-phone"), (LANDSCAPE, "team-overview-landscape")):
            small = open_page(f"{server.url}/", viewport=size)
            expect(small.locator(".team-car")).to_have_count(2)
            wait_for(lambda small=small: len(markers(small)) == 2, 30, f"two markers at {name}")
            expect(small.locator("#team-map")).not_to_have_attribute("data-outline", "0", timeout=30_000)
            width = small.evaluate("document.scrollingElement.scrollWidth")
            assert width <= size["width"], f"the overview scrolls sideways at {size} ({width} px)"
            screenshot(small, name, full_page=False)

        # car 12 stops sending: its marker goes hollow, with its age; car 7's stays filled
        car12.terminate()
        car12.wait(20)
        stale = page.locator(f'.team-legend-car[data-session-id="{sid12}"]')
        expect(stale).to_have_attribute("data-stale", "true", timeout=30_000)
        expect(stale.locator(".team-legend-age")).to_have_text(re.compile(r"\d+(\.\d)? s"))
        expect(card(page, sid12)).to_have_attribute("data-link", "stale")  # aged here: no row comes for it
        expect(value(page, sid12, "link")).to_contain_text("Stale")
        m = wait_for(lambda: (m := markers(page)) and m[sid12]["hollow"] and m, 10, "car 12 hollow on the map")
        assert not m[sid7]["hollow"]
        background = page.evaluate("getComputedStyle(document.documentElement).getPropertyValue('--map-bg').trim()")
        assert pixel(page, m[sid12]["x"], m[sid12]["y"])[:3] == rgb(background)  # hollow: the map shows through
        screenshot(page, "team-overview-stale", full_page=False)


def test_the_live_page_shows_the_driver_stint_and_fuel(server_factory: Any, open_page: Any) -> None:
    server = server_factory()
    car = Car(server, name="Live pit wall", driver=None)
    try:
        api(server, "post", f"/cars/{car.car_id}/drivers", json={"driver_id": "cat", "name": "Cat Driver"})
        use_oval_track(server, car.session_id)
        api(server, "put", f"/sessions/{car.session_id}/fuel", json={"tank_l": 50, "use_per_lap_l": 2.5})
        car.connect()
        api(server, "post", f"/sessions/{car.session_id}/driver-change",
            json={"driver_id": "cat", "at": time.time() - 100})
        car.send(2000, 20)
        row = wait_for(lambda: (r := team_rows(server).get(car.session_id)) and r["laps"] >= 1 and r, 15, "laps")
        page = open_page(car.url, viewport=DESKTOP)
        expect(page.locator("#live-pitwall")).to_be_visible()
        expect(page.locator("#pw-driver")).to_have_text("Cat Driver")
        fuel = row["fuel"]
        expect(page.locator("#pw-fuel")).to_have_text(f"{round(fuel['percent'])} % · {fuel['level']:.1f} l")
        expect(page.locator("#pw-fuel-laps")).to_have_text(f"{fuel['laps_left']:.1f} laps")
        minutes = wait_for(lambda: page.locator("#pw-stint").inner_text(), 5, "the stint time")
        assert minutes.startswith("1:4"), minutes  # about 100 s since Cat got in
        page.locator("#pw-details summary").click()
        expect(page.locator("#pw-details table.stints tbody tr").last.locator('[data-col="driver"]')).to_have_text(
            "Cat Driver")
        page.locator("#pw-details input.pw-litres").fill("20")
        page.locator("#pw-details button.pw-filled").click()
        page.fill("#key-input", server.api_key)
        page.locator("#key-form button[value=ok]").click()
        expect(page.locator("#pw-status")).to_have_text("Filled 20 l")
        events = api(server, "get", f"/sessions/{car.session_id}/events").json()["items"]
        assert any(e["event_type"] == "fuel.crew" and e["payload"]["added"] == 20 for e in events)
    finally:
        car.close()


def test_night_mode_on_the_overview_is_remembered(server_factory: Any, open_page: Any) -> None:
    server = server_factory()
    car = Car(server, name="Night", driver=None)
    try:
        use_oval_track(server, car.session_id)
        car.connect()
        car.send(200, 20)
        page = open_page(f"{server.url}/", viewport=DESKTOP)
        expect(page.locator(".team-car")).to_have_count(1)
        wait_for(lambda: len(markers(page)) == 1, 15, "the car on the map")
        page.locator("#theme-toggle").click()
        page.reload()
        expect(page.locator("html")).to_have_attribute("data-theme", "night")
        expect(page.locator(".team-car")).to_have_count(1)
        wait_for(lambda: len(markers(page)) == 1, 15, "the car on the map, at night")
        night_bg = rgb(page.evaluate("getComputedStyle(document.documentElement).getPropertyValue('--map-bg').trim()"))
        assert night_bg == [0x11, 0x11, 0x11]
        assert pixel(page, 3, 3)[:3] == night_bg  # the map drawn in the night colours
        screenshot(page, "team-overview-night", full_page=False)
    finally:
        car.close()
