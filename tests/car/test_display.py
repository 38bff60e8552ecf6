"""The driver display's HTTP server on a real loopback socket, over a real outbox's inbox: the page, its state,
seen and answers, and every kind of bad request answered with a 4xx JSON error naming the field."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests
from pydantic import ValidationError

from dashboard.car.display import DriverDisplay, parse_address
from dashboard.car.display.routes import ASSETS, MAX_BODY
from dashboard.car.messages import REPORT_EVENT, CarMessages
from dashboard.car.outbox import Outbox
from dashboard.car.settings import load_settings
from dashboard.car.timing import CarTiming
from dashboard.errors import ConfigError
from dashboard.telemetry.messages import new_message
from tests.servers import REPO

JSON = {"Content-Type": "application/json"}


def wire(text: str, asks: bool = False, priority: str = "normal", close_on: str | None = None) -> dict[str, Any]:
    message = new_message("car-1", text, created_by="key-1", now=time.time(), asks_answer=asks, priority=priority,
                          close_on=close_on)
    return {**message.to_dict(), "session_id": "s-1", "state": "delivered"}


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    box = Outbox(tmp_path / "outbox.sqlite")
    yield box
    box.close()


@pytest.fixture
def display(outbox: Outbox) -> Iterator[tuple[DriverDisplay, CarMessages]]:
    inbox = CarMessages(outbox, position=lambda: {"lat": 28.41, "lon": -81.38})
    shown = DriverDisplay("127.0.0.1", 0, inbox, CarTiming().snapshot,
                          lambda: {"main": "disconnected", "main_up": False, "radio": None})
    shown.start()
    yield shown, inbox
    shown.stop()


def post(display: DriverDisplay, path: str, body: Any = None, headers: dict[str, str] | None = None,
         data: bytes | None = None) -> requests.Response:
    payload = data if data is not None else json.dumps(body if body is not None else {}).encode()
    return requests.post(display.url.rstrip("/") + path, data=payload, headers=JSON if headers is None else headers,
                         timeout=5)


def error_field(answer: requests.Response, status: int) -> str:
    assert answer.status_code == status, answer.text
    assert answer.headers["Content-Type"] == "application/json"
    return answer.json()["error"]["field"]


@pytest.mark.parametrize(("spec", "address"), [
    ("8088", ("127.0.0.1", 8088)), (8088, ("127.0.0.1", 8088)), ("0.0.0.0:8088", ("0.0.0.0", 8088)),
    (":9000", ("127.0.0.1", 9000)), ("[::1]:8088", ("::1", 8088)), ("0", ("127.0.0.1", 0)),
])
def test_display_address(spec: Any, address: tuple[str, int]) -> None:
    assert parse_address(spec) == address


@pytest.mark.parametrize("spec", ["", "http", "host:", "127.0.0.1:70000", "-1", "8088:x"])
def test_bad_display_address_names_the_setting(spec: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_address(spec)
    assert caught.value.field == "display"


def test_display_setting_is_off_by_default_and_checked(tmp_path: Path) -> None:
    assert load_settings().display is None
    assert load_settings(display="8088").display == "127.0.0.1:8088"
    toml = tmp_path / "monitor.toml"
    toml.write_text("display = 8089\ntrack_file = 'track.json'\n")
    settings = load_settings(toml)
    assert settings.display == "127.0.0.1:8089" and settings.track_file == Path("track.json")
    with pytest.raises(ValidationError) as caught:
        load_settings(display="nowhere:port")
    assert caught.value.errors()[0]["loc"] == ("display",)


def test_the_page_and_its_assets_come_from_the_package(display: tuple[DriverDisplay, CarMessages]) -> None:
    shown, _ = display
    page = requests.get(shown.url, timeout=5)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    assert 'src="/static/display.js"' in page.text and "http" not in page.text.replace("http-equiv", "")
    for name in ASSETS:
        if name != "index.html":
            asset = requests.get(f"{shown.url}static/{name}", timeout=5)
            assert asset.status_code == 200 and asset.content, name
            assert asset.headers["Content-Type"] == ASSETS[name]
    for missing in ("static/../routes.py", "static/index.htm", "static/", "nowhere"):
        assert error_field(requests.get(shown.url + missing, timeout=5), 404) == "path"


def test_state_seen_and_answers(display: tuple[DriverDisplay, CarMessages], outbox: Outbox) -> None:
    shown, inbox = display
    fuel, box_call, push = wire("FUEL OK?", asks=True), wire("BOX THIS LAP", priority="urgent", close_on="box"), \
        wire("PUSH")
    for message in (fuel, box_call, push):
        assert inbox.receive(message) == {"ok": True}
    state = requests.get(shown.url + "api/state", timeout=5).json()
    assert state["timing"] == {"track": None, "lap": None, "out_lap": None, "elapsed": None, "delta": None,
                               "last_lap": None, "best_lap": None}
    assert state["links"] == {"main": "disconnected", "main_up": False, "radio": None}
    assert [(m["text"], m["answers"], m["seen"]) for m in state["messages"]] == [
        ("BOX THIS LAP", [], False), ("FUEL OK?", ["yes", "no"], False), ("PUSH", ["ok"], False)]

    assert post(shown, f"/api/messages/{box_call['id']}/seen").json() == {"ok": True, "applied": True}
    assert post(shown, f"/api/messages/{box_call['id']}/seen").json() == {"ok": True, "applied": False}  # once
    # a box call that asks nothing cannot be dismissed: it closes in the pit lane
    assert error_field(post(shown, f"/api/messages/{box_call['id']}/answer", {"answer": "ok"}), 409) == "answer"
    assert error_field(post(shown, f"/api/messages/{fuel['id']}/answer", {"answer": "ok"}), 409) == "answer"
    assert error_field(post(shown, f"/api/messages/{fuel['id']}/answer", {"answer": "maybe"}), 422) == "answer"
    assert post(shown, f"/api/messages/{fuel['id']}/answer", {"answer": "yes"}).json() == {"ok": True,
                                                                                          "applied": True}
    assert post(shown, f"/api/messages/{fuel['id']}/answer", {"answer": "yes"}).json() == {"ok": True,
                                                                                          "applied": False}
    assert post(shown, f"/api/messages/{push['id']}/answer", {"answer": "ok"}).json()["applied"]
    state = requests.get(shown.url + "api/state", timeout=5).json()
    assert [(m["text"], m["seen"]) for m in state["messages"]] == [("BOX THIS LAP", True)]
    reports = [(e.payload["message_id"], e.payload["state"], e.payload.get("answer"))
               for e in outbox.events(100) if e.event_type == REPORT_EVENT]
    # an answer implies seen (the server records it implied): one report each
    assert reports == [(box_call["id"], "seen", None), (fuel["id"], "answered", "yes"), (push["id"], "answered", "ok")]


def test_bad_requests_are_4xx_json_naming_the_field(display: tuple[DriverDisplay, CarMessages]) -> None:
    shown, inbox = display
    fuel = wire("FUEL OK?", asks=True)
    inbox.receive(fuel)
    action = f"/api/messages/{fuel['id']}/answer"
    assert error_field(post(shown, action, {"answer": "yes"}, headers={"Content-Type": "text/plain"}), 415) \
        == "content-type"
    assert error_field(post(shown, action, data=b"{not json"), 400) == "body"
    assert error_field(post(shown, action, data=b"[1, 2]"), 400) == "body"
    assert error_field(post(shown, action, data=b"{}"), 422) == "answer"
    assert error_field(post(shown, action, {"answer": 1}), 422) == "answer"
    assert error_field(post(shown, action, data=b'{"answer": "' + b"y" * MAX_BODY + b'"}'), 413) == "body"
    assert error_field(post(shown, "/api/messages/not-a-uuid!/answer", {"answer": "yes"}), 422) == "message_id"
    assert error_field(post(shown, "/api/messages/x/forget", {}), 404) == "path"
    assert error_field(requests.get(shown.url.rstrip("/") + action, timeout=5), 405) == "method"
    assert error_field(post(shown, "/api/state", {}), 405) == "method"
    assert error_field(requests.delete(shown.url + "api/state", timeout=5), 405) == "method"
    # no Content-Length at all: refused, and the server goes on
    with socket.create_connection(("127.0.0.1", shown.port), timeout=5) as raw:
        raw.sendall(f"POST {action} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\r\n".encode())
        chunks = []
        while chunk := raw.recv(4096):  # the server closes the connection after its answer
            chunks.append(chunk)
    reply = b"".join(chunks).decode()
    assert reply.startswith("HTTP/1.0 400") or reply.startswith("HTTP/1.1 400"), reply
    assert '"field": "body"' in reply
    # an unknown (or finished) message: nothing applied, nothing broken
    other = wire("PUSH")["id"]
    assert post(shown, f"/api/messages/{other}/answer", {"answer": "yes"}).json() == {"ok": True, "applied": False}
    assert [m["id"] for m in inbox.pending()] == [fuel["id"]]


def test_start_and_stop_are_safe_twice(outbox: Outbox) -> None:
    shown = DriverDisplay("127.0.0.1", 0, CarMessages(outbox), CarTiming().snapshot)
    shown.stop()  # never started
    shown.start()
    port = shown.port
    shown.start()  # no second server
    assert shown.port == port and requests.get(shown.url + "api/state", timeout=5).status_code == 200
    shown.stop()
    shown.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/api/state", timeout=2)
    shown.start()  # again after a stop
    try:
        assert requests.get(shown.url + "api/state", timeout=5).json()["messages"] == []
    finally:
        shown.stop()


def test_a_taken_port_is_an_oserror_at_start(outbox: Outbox) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        shown = DriverDisplay("127.0.0.1", taken.getsockname()[1], CarMessages(outbox), CarTiming().snapshot)
        with pytest.raises(OSError):
            shown.start()
        shown.stop()  # nothing to stop: no error


def test_a_built_package_ships_the_page(tmp_path: Path) -> None:
    """What setuptools puts in a wheel (its build_py step, from pyproject.toml) holds every file of the page."""
    built = subprocess.run([sys.executable, "-c", "import setuptools; setuptools.setup()", "-q",
                            "egg_info", "--egg-base", str(tmp_path), "build_py", "--build-lib", str(tmp_path / "lib")],
                           cwd=REPO, capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, built.stderr[-2000:]
    shipped = tmp_path / "lib" / "dashboard" / "car" / "display" / "static"
    source = REPO / "dashboard" / "car" / "display" / "static"
    assert sorted(p.name for p in shipped.iterdir()) == sorted(ASSETS) == sorted(p.name for p in source.iterdir())
