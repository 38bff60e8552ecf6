"""POST /api/v1/imports on a real server: a raw body or a form upload becomes an ended session with timed laps;
bad files answer 422 naming the line; the import's own size limit; the event loop keeps serving meanwhile."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import requests

from bench.imports import write_csv
from tests.servers import REPO

SAMPLES = REPO / "tests" / "data" / "imports"
TIMEOUT_S = 120.0


def test_a_raw_body_becomes_an_ended_session_with_laps(live_server) -> None:
    body = (SAMPLES / "okc-racechrono.csv").read_bytes()
    answer = requests.post(f"{live_server.url}/api/v1/imports",
                           params={"format": "racechrono", "car_id": "kart-7", "track": "ORLANDO kart center"},
                           data=body, headers={**live_server.headers, "Content-Type": "text/csv"}, timeout=TIMEOUT_S)
    assert answer.status_code == 201, answer.text
    out = answer.json()
    session = out["session"]
    assert session["status"] == "ended" and session["end_reason"] == "imported" and session["car_id"] == "kart-7"
    assert session["name"] == "OKC practice" and session["track"] == "Orlando Kart Center"
    assert session["started_at"].startswith("2025-11-23T17:02:44.36")
    assert out["frames"] == 2736 and out["skipped"] == 0 and out["laps"] == 2 and out["format"] == "racechrono"
    laps = requests.get(f"{live_server.url}/api/v1/sessions/{session['session_id']}/laps", timeout=10).json()
    timed = [lap for lap in laps["items"] if not (lap["out_lap"] or lap["in_lap"])]
    assert [round(lap["lap_time"], 3) for lap in timed] == [56.489, 55.575]
    listed = requests.get(f"{live_server.url}/api/v1/sessions", params={"car_id": "kart-7"}, timeout=10).json()
    assert session["session_id"] in [s["session_id"] for s in listed["items"]]


def test_a_form_upload_is_told_its_format_from_its_content(live_server) -> None:
    with (SAMPLES / "okc.gpx").open("rb") as f:
        answer = requests.post(f"{live_server.url}/api/v1/imports", files={"file": ("practice.gpx", f)},
                               headers=live_server.headers, timeout=TIMEOUT_S)
    assert answer.status_code == 201, answer.text
    assert answer.json()["format"] == "gpx" and answer.json()["session"]["name"] == "practice.gpx"
    assert answer.json()["laps"] == 2


def test_a_bad_file_is_422_naming_its_line_and_no_key_is_401(live_server) -> None:
    lines = (SAMPLES / "okc.log").read_text().splitlines(keepends=True)
    lines[0] = lines[0].replace('"Speed"|"mph"|0.0|150.0|25', "Speed")
    answer = requests.post(f"{live_server.url}/api/v1/imports", params={"format": "racecapture"},
                           data="".join(lines), headers=live_server.headers, timeout=TIMEOUT_S)
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert error["code"] == "bad_file" and error["line"] == 1 and error["message"].startswith("line 1: column 6")
    empty = requests.post(f"{live_server.url}/api/v1/imports", data=b"", headers=live_server.headers, timeout=30)
    assert empty.status_code == 422 and empty.json()["error"]["code"] == "bad_file"
    form = requests.post(f"{live_server.url}/api/v1/imports", files={"other": ("x.csv", b"a")},
                         headers=live_server.headers, timeout=30)
    assert form.status_code == 422 and form.json()["error"]["field"] == "file"
    anonymous = requests.post(f"{live_server.url}/api/v1/imports", data=b"time,rpm\n", timeout=30)
    assert anonymous.status_code == 401


def test_uploads_have_their_own_size_limit(server_factory) -> None:
    server = server_factory(max_body_bytes="10000", max_import_bytes="200000")
    body = (SAMPLES / "okc.log").read_bytes()  # 184 KB: over the body limit, under the import limit
    assert 10_000 < len(body) < 200_000
    ok = requests.post(f"{server.url}/api/v1/imports", data=body, headers=server.headers, timeout=TIMEOUT_S)
    assert ok.status_code == 201, ok.text
    big = (SAMPLES / "okc.gpx").read_bytes()  # 288 KB
    declared = requests.post(f"{server.url}/api/v1/imports", data=big, headers=server.headers, timeout=30)
    assert declared.status_code == 413
    chunked = requests.post(f"{server.url}/api/v1/imports", data=iter([big[i:i + 50_000]
                                                                        for i in range(0, len(big), 50_000)]),
                            headers=server.headers, timeout=30)
    assert chunked.status_code == 413 and chunked.json()["error"]["code"] == "too_large"  # no length to refuse early
    sessions = requests.get(f"{server.url}/api/v1/sessions", timeout=10).json()
    assert sessions["total"] == 1  # the refused uploads left nothing


def test_reads_are_served_while_a_large_import_runs(server_factory, tmp_path: Path) -> None:
    server = server_factory()
    big = tmp_path / "big.csv"
    write_csv(big, 300_000)
    answers: list[requests.Response] = []

    def upload() -> None:
        with big.open("rb") as f:
            answers.append(requests.post(f"{server.url}/api/v1/imports", data=f, headers=server.headers,
                                         timeout=TIMEOUT_S))

    uploader = threading.Thread(target=upload, daemon=True)
    uploader.start()
    slowest = 0.0
    reads = 0
    while uploader.is_alive() and reads < 200:
        started = time.monotonic()
        assert requests.get(f"{server.url}/api/v1/sessions", timeout=10).status_code == 200
        slowest = max(slowest, time.monotonic() - started)
        reads += 1
    uploader.join(TIMEOUT_S)
    assert answers and answers[0].status_code == 201, answers[0].text if answers else "no answer"
    assert answers[0].json()["frames"] == 300_000
    assert reads >= 3  # the import took a while, and reads were answered all along
    assert slowest < 2.0, slowest
