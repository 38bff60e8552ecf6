"""Values that come over the LoRa radio show in the live view, marked as such, with their age."""
from __future__ import annotations

import time
from typing import Any

from playwright.sync_api import expect

from tests.browser.conftest import lap_frames, screenshot
from tests.clients import CALL_TIMEOUT_S, connect_monitor


def test_lora_values_are_shown_with_their_age(live_server: Any, make_car: Any, open_page: Any) -> None:
    car = make_car(name="LoRa view")
    car.connect()
    old = lap_frames(0, 40, t_end=time.time() - 30)  # the main link's last frames, 30 s ago
    assert car.monitor.call("telemetry", {"session_id": car.session_id, "frames": old}, namespace="/monitor",
                            timeout=CALL_TIMEOUT_S)["ok"]
    car.close()  # then the main link drops
    page = open_page(car.url)
    expect(page.locator("body")).to_have_attribute("data-joined", "true")
    expect(page.locator("#health-lora")).to_be_hidden()
    gateway = connect_monitor(live_server.url, "mesh-gateway", live_server.api_key)
    try:
        frame = {"seq": 9000, "t": round(time.time() - 12, 2), "channels": {"rpm": 9123.0, "coolant_temp": 99.5}}
        ack = gateway.call("lora", {"car_id": car.car_id, "session_prefix": car.session_id.replace("-", "")[:8],
                                    "frame": frame, "received_at": time.time()},
                           namespace="/monitor", timeout=CALL_TIMEOUT_S)
        assert ack["ok"], ack
    finally:
        gateway.disconnect()
    expect(page.locator("body")).to_have_attribute("data-lora-seq", "9000")
    expect(page.locator("#health-lora")).to_be_visible()
    expect(page.locator("#health-lora")).to_contain_text("via LoRa")
    age = int(page.locator("#health-lora").inner_text().split(",")[1].strip().split()[0].rstrip("s"))
    assert 11 <= age <= 60
    expect(page.locator('.value[data-channel="rpm"]')).to_have_attribute("data-value", "9123")
    screenshot(page, "live-lora")
