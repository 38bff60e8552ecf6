"""The live page's messages panel in chromium: a canned message sent with the tab's key, its state followed live
to the driver's answer with its lap (the car's side played by a scripted monitor that acks and reports)."""
from __future__ import annotations

import time
from typing import Any

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
