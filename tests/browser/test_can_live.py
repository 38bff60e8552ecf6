"""A CAN channel on the live page: a peer on the bus, `dashboard monitor --can`, the real server, chromium."""
from __future__ import annotations

from typing import Any

import cantools
from playwright.sync_api import expect

from tests.browser.conftest import PHONE, screenshot
from tests.car.can_peer import decoded_values
from tests.car.test_can_decoder import DBC
from tests.car.test_can_e2e import can_rig  # noqa: F401 - the fixture
from tests.car.test_can_source import SPEEDS_KMH
from tests.car.test_monitor_process_e2e import car_session

BRAKE_FRONT = cantools.database.load_file(str(DBC), strict=False).get_message_by_name("BREMSE_53") \
    .get_signal_by_name("P_FA")


def test_a_can_channels_tile_shows_its_value(live_server: Any, can_rig: Any, open_page: Any) -> None:  # noqa: F811
    can_rig.plug()
    monitor = can_rig.monitor.start()
    car_id = monitor.args[monitor.args.index("--car-id") + 1]
    sid = car_session(live_server, car_id, monitor)["session_id"]
    page = open_page(f"{live_server.url}/sessions/{sid}", viewport=PHONE)
    brake = page.locator('.tile[data-channel="brake_front"]')  # a custom channel from the map: a number tile
    expect(brake).to_have_attribute("data-stale", "false")
    expect(brake.locator(".label")).to_have_text("brake_front")
    shown = float(brake.locator(".value").get_attribute("data-value"))
    assert any(abs(shown - value) < 1e-6 for value in decoded_values(BRAKE_FRONT)), shown
    speed = page.locator('.gauge[data-channel="speed"]')  # the wheel speed as the registry's speed gauge
    expect(speed).to_have_attribute("data-drawn", "true")
    expect(speed).to_have_attribute("data-stale", "false")
    assert round(float(speed.locator(".value").get_attribute("data-value")), 6) in SPEEDS_KMH
    screenshot(page, "live-phone-can")
    monitor.check_alive()
