"""End to end over LoRa: car's MeshLink → captured radio packet → pit radio → gateway → server → viewer."""
from __future__ import annotations

import threading
import time

import requests

from dashboard.car.mesh import MeshLink
from dashboard.car.mesh_gateway import run_gateway
from dashboard.telemetry import lora
from tests.car.test_mesh import CAR_NODE, PIT_NODE, CaptureRadio, as_received
from tests.clients import CALL_TIMEOUT_S, Viewer, connect_monitor, make_frames
from tests.waiting import wait_for

RESEND_S = 0.5  # how often the test car repeats its summary until the gateway hears it


def test_lora_summary_reaches_a_viewer_marked_as_lora(live_server):
    car = "LORA-1"
    monitor = connect_monitor(live_server.url, car, live_server.api_key)
    sid = monitor.call("session.start", {"record_id": "lora-e2e"}, namespace="/monitor",
                       timeout=CALL_TIMEOUT_S)["session"]["session_id"]
    old = make_frames(0, 1, t0=time.time() - 30)  # the main link's last frame, 30 s ago
    monitor.call("telemetry", {"session_id": sid, "frames": old}, namespace="/monitor", timeout=CALL_TIMEOUT_S)
    monitor.disconnect()  # then the main link drops

    car_radio, pit_radio = CaptureRadio(CAR_NODE), CaptureRadio(PIT_NODE)
    viewer = Viewer(live_server.url)
    stop = threading.Event()
    gateway = threading.Thread(target=run_gateway, args=("/dev/ttyPIT", live_server.url, live_server.api_key),
                               kwargs={"interface_factory": lambda device: pit_radio, "stop_event": stop},
                               daemon=True)
    try:
        viewer.join(sid)
        gateway.start()
        link = MeshLink("/dev/ttyCAR", car, interface_factory=lambda port: car_radio)
        frame = {"seq": 77, "t": round(time.time() - 2, 2),
                 "channels": {"lat": 28.4127, "lon": -81.3797, "speed": 64.5, "rpm": 9100.0, "coolant_temp": 101.5,
                              "fuel_level": 40.0, "gps_fix": 1}}
        link.update(sid, frame, status=lora.make_status(gps=True, backlog=True))
        assert link.send_now()
        heard = as_received(car_radio.packets()[-1])
        last_sent = [0.0]

        def relayed_or_resend() -> list:
            # The gateway opens its radio in its own thread; until it listens, a packet goes unheard, as
            # over the air. So the car keeps transmitting (the gateway drops the repeats by seq).
            if not viewer.of("lora") and time.monotonic() - last_sent[0] > RESEND_S:
                pit_radio.receive(heard)
                last_sent[0] = time.monotonic()
            return viewer.of("lora")

        [relayed] = wait_for(relayed_or_resend, 15, "the LoRa frame at the viewer")
        assert relayed["session_id"] == sid and relayed["link"] == "lora"
        assert relayed["frame"]["seq"] == 77 and relayed["frame"]["channels"]["rpm"] == 9100.0
        assert relayed["frame"]["channels"]["coolant_temp"] == 101.5
        assert 1.5 < relayed["age_s"] < 15 and relayed["status"]["backlog"] is True
        # the latest values take the newer LoRa sample; the main frame sequence is untouched
        telemetry = requests.get(f"{live_server.url}/api/v1/sessions/{sid}/telemetry", timeout=5).json()
        assert telemetry["channels"]["rpm"]["value"] == 9100.0
        assert telemetry["channels"]["throttle"]["value"] == old[0]["channels"]["throttle"]
        frames = requests.get(f"{live_server.url}/api/v1/sessions/{sid}/frames", timeout=5).json()["items"]
        assert [f["seq"] for f in frames] == [0]
        events = requests.get(f"{live_server.url}/api/v1/sessions/{sid}/events", timeout=5).json()["items"]
        assert [e["payload"]["seq"] for e in events if e["event_type"] == "lora.frame"] == [77]
    finally:
        stop.set()
        gateway.join(10)
        viewer.close()
        car_radio.close()
        pit_radio.close()


def test_the_monitor_sends_lora_summaries_of_its_own_frames(live_server, tmp_path):
    from dashboard.car.simulate import build_simulation

    car_radio = CaptureRadio(CAR_NODE)
    manager = build_simulation(live_server.url, "LORA-2", live_server.api_key, speedup=10.0,
                               outbox_path=tmp_path / "outbox.sqlite")
    manager.mesh = MeshLink("/dev/ttyCAR", "LORA-2", interval_s=2.0, interface_factory=lambda port: car_radio)
    stop = threading.Event()
    runner = threading.Thread(target=manager.run, args=(stop,), daemon=True)
    runner.start()
    try:
        wait_for(lambda: car_radio.packets(), 20, "a LoRa packet from the monitor")
        summary = lora.decode(car_radio.packets()[0].decoded.payload)
        session_id = manager.uplink.session_id
        assert summary.car_hash == lora.car_hash("LORA-2")
        assert session_id.replace("-", "").startswith(summary.session_prefix)
        assert 28.40 < summary.lat < 28.42 and -81.39 < summary.lon < -81.37  # Orlando Kart Center
        assert lora.status_flags(summary.status)["recording"] is True
    finally:
        stop.set()
        runner.join(10)
        car_radio.close()
    assert manager.mesh.status == "stopped"
