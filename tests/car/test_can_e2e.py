"""A CAN-equipped car end to end: a peer process on the bus, `dashboard monitor --can`, a real server, a viewer.

The peer sends abs.dbc's messages at 100 Hz (the ABS's own cycle) on python-can's udp_multicast bus
(tests/car/test_can_source.py says why not vcan); the monitor decodes them with the sample map and frames
at 100 Hz: the viewer gets the ECU's channels at the bus's rate, each frame with the newest values. The
peer going away shows in the monitor's heartbeat as the CAN source's error, and coming back resumes.
"""
from __future__ import annotations

import random
import time
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from tests.car.can_peer import CanPeer
from tests.car.test_can_decoder import DBC, SAMPLE_MAP
from tests.car.test_can_source import SPEEDS_KMH
from tests.car.test_monitor_process_e2e import TIMEOUT_S, MonitorProcess, car_session, source_state
from tests.clients import Viewer
from tests.waiting import wait_for

RATE_HZ = 100  # the bus's rate (abs.dbc: 10 ms cycles) and the monitor's
WINDOW_S = 3.0  # frames counted over this long
MIN_SHARE = 0.6  # of RATE_HZ frames a second at the viewer: two shared cores, a server, a monitor and a peer


def speed_changes(frames: list[dict[str, Any]]) -> int:
    """How often the speed differs from the frame before."""
    return sum(a["channels"]["speed"] != b["channels"]["speed"] for a, b in pairwise(frames))


class CanRig:
    """A peer on its own udp_multicast port and group, and a monitor process reading that bus."""

    def __init__(self, server: Any, car_id: str, tmp_path: Path) -> None:
        self.port = random.randint(43200, 43999)
        self.bus = f"udp_multicast:239.75.{random.randint(0, 255)}.{random.randint(1, 254)}"
        self.monitor = MonitorProcess(server, car_id, "", tmp_path / "unused-gps", tmp_path / "outbox.sqlite",
                                      tmp_path / "monitor.log")
        self.monitor.args = [*self.monitor.args[:self.monitor.args.index("--obd")], "--can", self.bus,
                             "--dbc", str(DBC), "--can-map", str(SAMPLE_MAP), "--outbox",
                             str(tmp_path / "outbox.sqlite"), "--rate", str(RATE_HZ)]
        self.monitor.env["CAN_CONFIG"] = f'{{"port": {self.port}}}'  # python-can's own setting: the test's port
        # no GPS on this car, and this machine's kernel says its clock is not NTP-synchronized: without this the
        # frames would wait in the outbox for real time (tests/car/test_clock.py), as on a Pi with neither
        self.monitor.env["DASHBOARD_TRUST_SYSTEM_CLOCK"] = "true"
        self.peer: CanPeer | None = None

    def plug(self) -> None:
        """The ECU on the bus: the peer sends every message at RATE_HZ."""
        self.peer = CanPeer(self.bus, str(DBC), "--rate", str(RATE_HZ), port=self.port).start()

    def unplug(self) -> None:
        """The ECU gone: the peer stops."""
        if self.peer is not None:
            self.peer.stop()
            self.peer = None


@pytest.fixture
def can_rig(live_server: Any, tmp_path: Path) -> Iterator[CanRig]:
    rig = CanRig(live_server, f"can-{random.randint(0, 99999)}", tmp_path)
    yield rig
    rig.unplug()
    if rig.monitor.proc is not None:
        rig.monitor.proc.kill()
        rig.monitor.proc.wait(10)


def test_the_ecus_channels_stream_at_bus_rate_and_the_bus_unplugged_shows(live_server: Any, can_rig: CanRig) -> None:
    can_rig.plug()
    monitor = can_rig.monitor.start()
    car_id = monitor.args[monitor.args.index("--car-id") + 1]
    sid = car_session(live_server, car_id, monitor)["session_id"]
    viewer = Viewer(live_server.url)
    try:
        assert viewer.join(sid)["ok"]

        def with_speed() -> list[dict[str, Any]]:
            monitor.check_alive()
            return [f for f in list(viewer.frames) if f["channels"].get("speed") is not None]

        wait_for(lambda: len(with_speed()) > RATE_HZ, TIMEOUT_S, "CAN frames at the viewer")
        start, began = len(with_speed()), time.monotonic()
        wait_for(lambda: time.monotonic() - began >= WINDOW_S, WINDOW_S + 5, "the counting window")
        window = with_speed()[start:]
        assert len(window) >= MIN_SHARE * RATE_HZ * WINDOW_S, f"{len(window)} frames in {WINDOW_S} s"
        for frame in window:
            channels = frame["channels"]
            assert round(channels["speed"], 6) in SPEEDS_KMH  # the wheel's m/s as km/h
            assert {"brake_front", "brake_rear", "yaw_rate", "accel_lat", "wheel_speed_rr"} <= set(channels)
        # each frame carries the newest values: the peer changes them every round, so frames differ
        changed = speed_changes(window)
        assert changed >= 0.5 * (len(window) - 1), f"{changed} of {len(window) - 1} frames changed speed"
        wait_for(lambda: source_state(live_server, sid, "can").startswith("reading"), TIMEOUT_S,
                 "the CAN source reading in the heartbeat")

        can_rig.unplug()
        wait_for(lambda: source_state(live_server, sid, "can") == "error: no CAN frames for 2 s", TIMEOUT_S,
                 "the unplugged bus in the heartbeat")
        can_rig.plug()
        resumed = len(with_speed())
        wait_for(lambda: source_state(live_server, sid, "can").startswith("reading"), TIMEOUT_S, "reading again")

        def changing_again() -> bool:  # new values, not the last ones before the unplug (fresh for 5 s)
            fresh = with_speed()[resumed:]
            return speed_changes(fresh) > RATE_HZ

        wait_for(changing_again, TIMEOUT_S, "new CAN values again")
        assert monitor.stop() == 0, monitor.log_text()[-3000:]
    finally:
        viewer.close()
    log = monitor.log_text()
    assert "Traceback" not in log, log[-3000:]
    assert "source can: error: no CAN frames for 2 s" in log and live_server.api_key not in log
