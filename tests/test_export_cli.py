"""`dashboard export`: a real SQLite database written by the SessionManager, exported whole or by lap."""
from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from dashboard.errors import NotFound
from dashboard.export_cli import main
from dashboard.server.exporting import open_export
from dashboard.server.store import Store
from dashboard.sessions import SessionManager
from dashboard.telemetry.export import read_csv, read_jsonl
from tests.servers import REPO

GPX = "{http://www.topografix.com/GPX/1/1}"
T0 = 1_700_000_000.0
FRAMES = 120  # 12 s at 10 Hz
LAPS = [  # lap 1 is frames 20..69 (t 2.0..6.9 s), lap 2 frames 70..99
    {"lap": 1, "start_t": T0 + 2.0, "end_t": T0 + 6.9, "lap_time": 4.9},
    {"lap": 2, "start_t": T0 + 7.0, "end_t": T0 + 9.9, "lap_time": 2.9},
]


def make_frames() -> list[dict]:
    frames = []
    for i in range(FRAMES):
        channels = {"rpm": 3000.0 + i, "speed": 50.0 + i / 4, "lat": 28.4127 + i * 1e-5, "lon": -81.3797,
                    "coolant_temp": None if i % 10 == 3 else 90.5}
        if 40 <= i < 45:
            channels["lat"] = channels["lon"] = None  # no fix for half a second
        frames.append({"seq": i, "t": T0 + i / 10, "channels": channels})
    return frames


@pytest.fixture
def stored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """A session with frames and laps in `<tmp>/dashboard.db`, the settings pointing at it."""
    store = Store.from_url(f"sqlite:///{tmp_path}/dashboard.db")
    manager = SessionManager(store)
    try:
        sid = manager.create_session(car_id="C7", name="Quali <1> & co")
        manager.start(sid)
        frames = make_frames()
        for start in range(0, FRAMES, 50):
            assert manager.ingest(sid, frames[start:start + 50]).ticket.wait(10)
        manager.end(sid)
    finally:
        manager.close()
    store.replace_laps(sid, LAPS)
    store.engine.dispose()
    monkeypatch.setenv("DASHBOARD_INSTANCE_PATH", str(tmp_path))
    monkeypatch.delenv("DASHBOARD_DATABASE_URL", raising=False)
    return {"sid": sid, "frames": frames, "dir": tmp_path}


def test_csv_to_a_file_reads_back_as_the_stored_frames(stored, capsys):
    out = stored["dir"] / "out.csv"
    assert main(["export", stored["sid"], "--format", "csv", "-o", str(out)]) == 0
    assert f"exported {FRAMES} frames" in capsys.readouterr().err
    text = out.read_bytes().decode("utf-8")
    assert text.startswith("seq,t,time_utc,coolant_temp (°C),lat (°),lon (°),rpm (rpm),speed (km/h)\r\n")
    back = read_csv(text)
    assert [f["seq"] for f in back] == list(range(FRAMES))
    assert [f["channels"] for f in back] == [f["channels"] for f in stored["frames"]]
    assert back[3]["channels"]["coolant_temp"] is None and back[40]["channels"]["lat"] is None
    assert not list(stored["dir"].glob(".*.part"))


def test_jsonl_of_one_lap_to_stdout(stored, capsysbinary):
    assert main(["export", stored["sid"], "--format", "jsonl", "--lap", "1"]) == 0
    captured = capsysbinary.readouterr()
    back = read_jsonl(captured.out.decode("utf-8"))
    assert back == stored["frames"][20:70]  # start_t <= t <= end_t, both ends included
    assert b"exported 50 frames of lap 1" in captured.err


def test_gpx_of_a_lap_has_a_point_per_positioned_frame(stored, capsys):
    out = stored["dir"] / "lap1.gpx"
    assert main(["export", stored["sid"], "-f", "gpx", "--lap", "1", "-o", str(out)]) == 0
    root = ET.parse(out).getroot()
    assert root.findtext(f"{GPX}trk/{GPX}name") == "Quali <1> & co lap 1"
    assert len(root.findall(f".//{GPX}trkpt")) == 50 - 5
    assert len(root.findall(f".//{GPX}trkseg")) == 2


def test_csv_columns_of_a_lap_are_its_own_channels_and_pages_are_followed(stored):
    store = Store.from_url(f"sqlite:///{stored['dir']}/dashboard.db", migrate=False)
    try:
        whole = open_export(store, stored["sid"], "jsonl", page=7)  # many pages, seq boundaries
        assert whole.filename == f"session-{stored['sid']}.jsonl" and whole.media_type == "application/x-ndjson"
        assert read_jsonl("".join(whole.chunks)) == stored["frames"] and whole.frames == FRAMES
        lap = open_export(store, stored["sid"], "csv", lap=2, page=9)
        assert lap.filename == f"session-{stored['sid']}-lap2.csv" and lap.media_type == "text/csv"
        rows = read_csv("".join(lap.chunks))
        assert [r["seq"] for r in rows] == list(range(70, 100))
        with pytest.raises(NotFound) as exc:
            open_export(store, stored["sid"], "csv", lap=3)
        assert exc.value.field == "lap"
        with pytest.raises(NotFound):
            open_export(store, "no-such-session", "gpx")
    finally:
        store.engine.dispose()


def test_the_event_log_read_page_by_page(stored, capsys):
    store = Store.from_url(f"sqlite:///{stored['dir']}/dashboard.db", migrate=False)
    try:
        logged = store.events(stored["sid"])
        assert len(logged) >= 2  # created, started at least: pages of 1 are followed
        log = open_export(store, stored["sid"], "events", page=1)
        assert log.filename == f"session-{stored['sid']}.events.csv" and log.media_type == "text/csv"
        rows = list(csv.DictReader(io.StringIO("".join(log.chunks))))
        assert [int(r["id"]) for r in rows] == [e["id"] for e in logged]
        assert [r["type"] for r in rows] == [e["event_type"] for e in logged]
    finally:
        store.engine.dispose()
    out = stored["dir"] / "log.csv"
    assert main(["export", stored["sid"], "--format", "events", "-o", str(out)]) == 0
    assert f"exported the event log of session {stored['sid']}" in capsys.readouterr().err
    assert out.read_text().startswith("id,t,time_utc,type,record_id,lap,lat,lon,data\n")


def test_unknown_session_lap_or_database_fail_with_a_message(stored, capsys, monkeypatch, tmp_path):
    assert main(["export", "no-such-session"]) == 1
    assert "no session no-such-session" in capsys.readouterr().err
    assert main(["export", stored["sid"], "--lap", "9", "-o", str(stored["dir"] / "x.csv")]) == 1
    assert "has no lap 9" in capsys.readouterr().err and not (stored["dir"] / "x.csv").exists()
    monkeypatch.setenv("DASHBOARD_INSTANCE_PATH", str(tmp_path / "nowhere"))
    assert main(["export", stored["sid"]]) == 1
    assert "no database at" in capsys.readouterr().err and not (tmp_path / "nowhere").exists()
    with pytest.raises(SystemExit):
        main(["export", stored["sid"], "--format", "xlsx"])


def test_command_line_in_a_subprocess(stored):
    # `python -m dashboard export ...` once cli.py lists dashboard.export_cli; the same arguments here.
    env = {**os.environ, "DASHBOARD_INSTANCE_PATH": str(stored["dir"]),
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("DASHBOARD_DATABASE_URL", None)
    result = subprocess.run([sys.executable, "-m", "dashboard", "export", stored["sid"], "--format", "gpx"],
                            cwd=REPO, capture_output=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr.decode()
    root = ET.fromstring(result.stdout)
    assert len(root.findall(f".//{GPX}trkpt")) == FRAMES - 5
    assert f"exported {FRAMES} frames of session {stored['sid']} as gpx to stdout" in result.stderr.decode()
