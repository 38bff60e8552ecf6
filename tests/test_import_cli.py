"""`dashboard import` as a process: a file becomes a session with timed laps in one command; a bad file is one line
naming its line; an import killed -9 midway leaves nothing (SQLite and PostgreSQL); a million rows in bounded memory
with progress on the terminal."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from bench.imports import run_import, write_csv
from dashboard.server.store import FRAMES, SESSIONS, Store
from tests.servers import REPO
from tests.waiting import wait_for

SAMPLES = REPO / "tests" / "data" / "imports"
TIMEOUT_S = 120.0
MILLION = 1_000_000
PEAK_RSS_MB = 300  # bounded: ~90 MB measured (bench.imports); holding a million frames would take well over 1 GB


def environment(instance: Path, db_url: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASHBOARD_")}
    env.update({"DASHBOARD_INSTANCE_PATH": str(instance),
                "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")})
    if db_url:
        env["DASHBOARD_DATABASE_URL"] = db_url
    return env


def dashboard_import(instance: Path, *args: str, db_url: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dashboard", "import", *args], env=environment(instance, db_url),
                          capture_output=True, text=True, timeout=TIMEOUT_S, check=False)


def counts(url: str) -> tuple[int, int]:
    store = Store.from_url(url)
    try:
        with store.engine.connect() as conn:
            return (conn.execute(select(func.count()).select_from(SESSIONS)).scalar_one(),
                    conn.execute(select(func.count()).select_from(FRAMES)).scalar_one())
    finally:
        store.close()


def test_a_racecapture_log_becomes_a_session_with_timed_laps_in_one_command(tmp_path: Path) -> None:
    done = dashboard_import(tmp_path, str(SAMPLES / "okc.log"), "--car-id", "kart-7", "--progress-every", "1000")
    assert done.returncode == 0, done.stderr
    assert "okc.log (racecapture) as session" in done.stdout
    assert "2736 frames; 2 laps timed on Orlando Kart Center, best 55.575 s" in done.stdout
    assert "import: 1000 frames from 1000 rows (" in done.stderr and "import: 2736 frames" in done.stderr
    store = Store.from_url(f"sqlite:///{tmp_path}/dashboard.db")
    try:
        (row,), _total = store.list_sessions(10, 0)
        assert row["car_id"] == "kart-7" and row["status"] == "ended" and row["laps"] == 2
        assert row["name"] == "okc.log"
    finally:
        store.close()


def test_a_bad_file_is_one_line_naming_its_line_and_nothing_is_stored(tmp_path: Path) -> None:
    bad = tmp_path / "bad.log"
    bad.write_text('"Interval"|"ms"|0|0|1,"Utc"|"ms"|0|0|1,RPM\n1,2,3\n')
    done = dashboard_import(tmp_path, str(bad), "--format", "racecapture")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: bad.log: line 1: column 3 ('RPM') is not \"Name\"|\"units\"|min|max|Hz: not a RaceCapture/Pro "
        "log header"]
    assert "Traceback" not in done.stderr
    assert counts(f"sqlite:///{tmp_path}/dashboard.db") == (0, 0)
    unknown = dashboard_import(tmp_path, str(SAMPLES / "okc.gpx"), "--track", "Monza")
    assert unknown.returncode == 1 and "no track named 'Monza' (known: Orlando Kart Center)" in unknown.stderr
    missing = dashboard_import(tmp_path, str(tmp_path / "nowhere.csv"))
    assert missing.returncode == 1 and "cannot read" in missing.stderr


def test_an_import_killed_midway_leaves_nothing(tmp_path: Path, db_url: str) -> None:
    big = tmp_path / "big.csv"
    write_csv(big, 300_000)
    proc = subprocess.Popen([sys.executable, "-m", "dashboard", "import", str(big), "--progress-every", "20000"],
                            env=environment(tmp_path, db_url), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)  # type: ignore[arg-type]
    reader.start()
    try:
        wait_for(lambda: any(line.startswith("import: 40000 frames") for line in lines) or proc.poll() is not None,
                 TIMEOUT_S, "40,000 frames written in the import's transaction")
        assert proc.poll() is None, "".join(lines)  # still importing: killed midway
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    assert counts(db_url) == (0, 0)  # no half session visible, not a frame
    done = dashboard_import(tmp_path, str(SAMPLES / "okc.nmea"), db_url=db_url)  # the database is usable at once
    assert done.returncode == 0, done.stderr
    assert counts(db_url) == (1, 2736)
    if db_url.startswith("sqlite"):
        store = Store.from_url(db_url)
        with store.engine.connect() as conn:
            assert conn.execute(text("PRAGMA integrity_check")).scalar_one() == "ok"
        store.close()


def test_a_million_rows_import_in_bounded_memory_with_progress(tmp_path: Path) -> None:
    big = tmp_path / "million.csv"
    write_csv(big, MILLION)
    figures = run_import(big, tmp_path / "instance")
    assert f"{MILLION} frames" in figures["stdout"]
    assert figures["progress_lines"] >= 10  # a line every 100,000 frames, and the last
    assert figures["peak_rss_mb"] < PEAK_RSS_MB, figures
    assert counts(f"sqlite:///{tmp_path}/instance/dashboard.db") == (1, MILLION)


@pytest.mark.parametrize("argv", [["import", "--help"]])
def test_the_command_is_listed_with_its_description(argv: list[str]) -> None:
    done = subprocess.run([sys.executable, "-m", "dashboard", *argv], capture_output=True, text=True, timeout=60,
                          env=environment(Path("/nonexistent")), check=False)
    assert done.returncode == 0 and "racecapture,racechrono,nmea,gpx,csv" in done.stdout
    assert "One transaction" in done.stdout
