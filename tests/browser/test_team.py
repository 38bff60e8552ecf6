"""The team view (/team) in a real browser against a real server: two cars, values as they sent them, live.

Screenshots: tests/artifacts/team-desktop.png (1920 × 1080) and team-phone.png (390 × 844).
"""
from __future__ import annotations

import time
from typing import Any

import pytest
import requests
from playwright.sync_api import expect

from tests.browser.conftest import PHONE, Car, screenshot
from tests.browser.test_live_phone import use_oval_track
from tests.waiting import wait_for

DESKTOP = {"width": 1920, "height": 1080}


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
