"""The live page's messages panel in chromium: a canned message sent with the tab's key, its state followed live
to the driver's answer with its lap (the car's side played by a scripted monitor that acks and reports)."""
from __future__ import annotations

import time
from typing import Any

import requests
from playwright.sync_api import expect

from tests.clients import CALL_TIMEOUT_S
from tests.waiting import wait_for


def test_the_live_page_sends_a_message_and_shows_the_answer(live_server: Any, make_car: Any, open_page: Any) -> None:
    car = make_car(name="Messages")
    got: list[dict] = []

    def on_message(data: dict) -> dict:
        got.append(data)
        return {"ok": True}

    car.connect()
    car.monitor.on("message", on_message, namespace="/monitor")
    page = open_page(car.url)
    expect(page.locator("body")).to_have_attribute("data-joined", "true")
    fuel = page.locator("#msg-canned button", has_text="FUEL OK?")
    expect(fuel).to_be_visible()
    fuel.click()
    expect(page.locator("#key-dialog")).to_be_visible()  # the key for changes, asked once and kept for the tab
    page.fill("#key-input", live_server.api_key)
    page.keyboard.press("Enter")
    row = page.locator("#msg-list li", has_text="FUEL OK?")
    expect(row).to_have_attribute("data-state", "delivered", timeout=15_000)

    message = wait_for(lambda: got and got[-1], 15, "the message at the car")
    report = {"session_id": car.session_id, "message_id": message["id"], "t": time.time(), "lap": 4}
    for state, extra in (("seen", {}), ("answered", {"answer": "yes"})):
        ack = car.monitor.call("message.report", {**report, "state": state, **extra}, namespace="/monitor",
                               timeout=CALL_TIMEOUT_S)
        assert ack["ok"], ack
    expect(row).to_have_attribute("data-state", "answered", timeout=15_000)
    expect(row.locator(".msg-state")).to_have_text("answered YES (lap 4)")

    # free text with the yes/no toggle, sent with the kept key (no dialog this time)
    page.fill("#msg-text", "TYRES OK?")
    page.check("#msg-ask")
    page.click("#msg-form button[type=submit]")
    free = page.locator("#msg-list li", has_text="TYRES OK?")
    expect(free).to_have_attribute("data-state", "delivered", timeout=15_000)
    expect(free.locator(".msg-text")).to_have_text("TYRES OK? (yes/no)")


def test_the_team_view_sends_to_one_car_and_shows_its_answer(live_server: Any, make_car: Any,
                                                              open_page: Any) -> None:
    """From the pit wall: a canned button on one car's card reaches that car only; its state and the answer with
    the lap come live to that card."""
    a, b = make_car(name="Team msg A"), make_car(name="Team msg B")
    got: dict[str, list[dict]] = {a.car_id: [], b.car_id: []}
    for car in (a, b):
        car.connect()
        car.monitor.on("message", lambda data, car=car: (got[car.car_id].append(data), {"ok": True})[1],
                       namespace="/monitor")
    page = open_page(f"{live_server.url}/team")
    card_a = page.locator(f'.team-car[data-session-id="{a.session_id}"]')
    expect(card_a).to_be_visible()
    box = card_a.locator(".team-msg-buttons button", has_text="BOX THIS LAP")
    expect(box).to_be_visible()
    box.click()
    expect(page.locator("#key-dialog")).to_be_visible()
    page.fill("#key-input", live_server.api_key)
    page.keyboard.press("Enter")
    shown = card_a.locator('[data-field="message"]')
    expect(shown).to_have_attribute("data-state", "delivered", timeout=15_000)
    expect(shown).to_have_text("BOX THIS LAP · on the car")
    assert [m["text"] for m in wait_for(lambda: got[a.car_id], 15, "the message at car A")] == ["BOX THIS LAP"]

    card_a.locator(".team-msg-buttons button", has_text="FUEL OK?").click()  # the kept key: no dialog
    # the driver's top message stays the urgent BOX (the car's order); the card says one more is open
    expect(shown).to_have_text("BOX THIS LAP · on the car · +1", timeout=15_000)
    fuel = wait_for(lambda: next((m for m in got[a.car_id] if m["text"] == "FUEL OK?"), None), 15, "FUEL OK? at A")
    report = {"session_id": a.session_id, "t": time.time(), "lap": 7}
    ack = a.monitor.call("message.report", {**report, "message_id": fuel["id"], "state": "answered", "answer": "no"},
                         namespace="/monitor", timeout=CALL_TIMEOUT_S)
    assert ack["ok"], ack
    box_id = got[a.car_id][0]["id"]
    cancelled = requests.post(f"{live_server.url}/api/v1/sessions/{a.session_id}/messages/{box_id}/cancel",
                              headers=live_server.headers, timeout=10)
    assert cancelled.status_code == 200, cancelled.text
    expect(shown).to_have_text("FUEL OK? · answered NO (lap 7)", timeout=15_000)  # nothing open: the last word
    expect(shown).to_have_attribute("data-state", "answered")
    card_b = page.locator(f'.team-car[data-session-id="{b.session_id}"]')
    expect(card_b.locator('[data-field="message"]')).to_be_hidden()
    assert got[b.car_id] == []
