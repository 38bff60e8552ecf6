"""End to end against a real `dashboard serve`: simulated car → /monitor → stored frames, and a server kill -9."""
from __future__ import annotations

import threading
from pathlib import Path

import requests

from dashboard.car.replay import BUNDLED_LOG
from dashboard.car.simulate import build_simulation, run_simulation
from tests.clients import stored_frames
from tests.waiting import wait_for


def test_simulated_car_frames_are_stored_once_each(live_server, tmp_path: Path) -> None:
    log = tmp_path / "start.nmea"
    log.write_text("".join(BUNDLED_LOG.read_text().splitlines(keepends=True)[1000:1400]))  # ~18 s on track
    summary = run_simulation(live_server.url, "e2e-sim", live_server.api_key, speedup=12.0, log_path=log,
                             loop=False, outbox_path=tmp_path / "o.sqlite", rate_hz=20)
    assert summary["backlog"] == 0 and summary["frames"] > 15
    frames = stored_frames(live_server.url, summary["session_id"])
    assert [f["seq"] for f in frames] == list(range(1, summary["last_seq"] + 1))
    fixes = [f["channels"] for f in frames if f["channels"].get("lat") is not None]  # one frame per GPS fix
    assert fixes and max(c.get("gps_speed") or 0 for c in fixes) > 30  # the log's speeds, on track
    assert all(abs(c["lat"] - 28.41) < 0.01 for c in fixes)  # at Orlando Kart Center
    ticks = [f["channels"] for f in frames if "rpm" in f["channels"]]  # the derived engine channels: tick frames
    assert ticks and all(c["rpm"] for c in ticks) and len(ticks) + len(fixes) == len(frames)
    session = requests.get(f"{live_server.url}/api/v1/sessions/{summary['session_id']}", timeout=10).json()
    assert session["car_id"] == "e2e-sim" and session["status"] == "active"


def test_server_killed_and_restarted_every_frame_arrives_exactly_once(live_server, tmp_path: Path) -> None:
    manager = build_simulation(live_server.url, "e2e-kill", live_server.api_key, speedup=4.0,
                               outbox_path=tmp_path / "o.sqlite", rate_hz=20, heartbeat_s=0.5)
    uplink = manager.uplink
    assert uplink is not None
    stop = threading.Event()
    runner = threading.Thread(target=manager.run, args=(stop,), daemon=True)
    runner.start()
    try:
        wait_for(lambda: uplink.sent_frames >= 20, 20, "frames flowing")
        live_server.kill()
        backlog_at_kill = manager.outbox.count()
        wait_for(lambda: manager.outbox.count() >= backlog_at_kill + 40, 20, "frames buffering while down")
        assert uplink.state.value != "connected"
        live_server.start()
        wait_for(lambda: uplink.state.value == "connected" and uplink.sent_frames > 0, 30, "reconnected")
        sent_after = manager.assembler.frames + 20
        wait_for(lambda: manager.assembler.frames >= sent_after, 20, "more live frames")
        manager.assembler.stop()
        wait_for(lambda: manager.outbox.count() == 0, 30, "backlog drained")
    finally:
        stop.set()
        runner.join(30)
    last = manager.outbox.last_seq
    frames = stored_frames(live_server.url, uplink.session_id)
    assert [f["seq"] for f in frames] == list(range(1, last + 1))  # all, in order, none twice
    assert uplink.connects >= 2
    manager.outbox.close()


def test_a_car_names_its_track_and_an_unknown_one_is_logged_once_and_the_session_starts_untimed(
        live_server, tmp_path: Path, caplog) -> None:
    """``--track`` by name, any case: the session is timed on it. A name the server does not know: the car's data
    matter more than its lap times, so the session starts untimed (the pit can set the track later), logged once."""
    from dashboard.car.monitor import ServiceManager
    from dashboard.car.outbox import Outbox
    from dashboard.car.source import ChannelStore
    from dashboard.car.uplink import Uplink
    from dashboard.server.tracks import ORLANDO_TRACK_ID

    stop = threading.Event()
    runners, outboxes = [], []

    def car(car_id: str, track: str) -> Uplink:
        outbox = Outbox(tmp_path / f"{car_id}.sqlite")
        store = ChannelStore()
        store.update({"rpm": 3000.0})
        uplink = Uplink(live_server.url, car_id, outbox, api_key=live_server.api_key, track=track, heartbeat_s=0.5)
        manager = ServiceManager([], store, outbox, uplink, rate_hz=10)
        runner = threading.Thread(target=manager.run, args=(stop,), daemon=True)
        runner.start()
        runners.append(runner)
        outboxes.append(outbox)
        return uplink

    try:
        known = car("track-known", "ORLANDO kart center")
        wait_for(lambda: known.session_id and known.sent_frames > 0, 20, "the known track's session")
        session = requests.get(f"{live_server.url}/api/v1/sessions/{known.session_id}", timeout=10).json()
        assert session["track_id"] == ORLANDO_TRACK_ID and not known.track_refused
        with caplog.at_level("ERROR", logger="dashboard.car.uplink"):
            unknown = car("track-unknown", "Orlnado Kart Centre")
            wait_for(lambda: unknown.session_id and unknown.sent_frames > 0, 20, "an untimed session")
            first = unknown.session_id
            unknown.link.close()  # the link drops: the uplink connects and starts its session again
            wait_for(lambda: unknown.connects >= 2 and unknown.state.value == "connected", 20, "reconnected")
        assert unknown.track_refused and unknown.session_id == first
        session = requests.get(f"{live_server.url}/api/v1/sessions/{first}", timeout=10).json()
        assert session["track_id"] is None and session["status"] == "active"
        refusals = [r for r in caplog.records if "refused its track" in r.getMessage()]
        assert len(refusals) == 1 and "Orlnado Kart Centre" in refusals[0].getMessage()
    finally:
        stop.set()
        for runner in runners:
            runner.join(30)
        for outbox in outboxes:
            outbox.close()
