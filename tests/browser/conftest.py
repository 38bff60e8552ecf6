"""Browser fixtures: Debian's chromium driven by Playwright, and a scripted in-car monitor.

The browser is the system one (``/usr/bin/chromium``): Playwright never
downloads a browser here. Each test gets fresh browser contexts; every page
records uncaught script errors, JavaScript dialogs and Content-Security-Policy
violations, and the test fails if any happened.
"""
from __future__ import annotations

import contextlib
import math
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.clients import CALL_TIMEOUT_S, connect_monitor

CHROMIUM = os.environ.get("DASHBOARD_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
LAPTOP = {"width": 1366, "height": 1100}
PHONE = {"width": 390, "height": 844}
ARTIFACTS = Path(os.environ.get("DASHBOARD_TEST_ARTIFACTS", Path(__file__).resolve().parent.parent / "artifacts"))

# A lap of an oval around a real-looking spot, 40 s per lap: enough shape for the map.
TRACK_LAT, TRACK_LON = 27.4545, -81.3484
LAP_S = 40.0


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """One headless chromium for the whole run."""
    if not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists():
        pytest.fail(f"no chromium at {CHROMIUM}: apt-get install chromium (.ci/run does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class PageProblems:
    """What went wrong in a page: uncaught errors, dialogs, CSP violations."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.csp: list[str] = []

    def watch(self, page: Any) -> Any:
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.on("dialog", self._dialog)
        page.on("console", self._console)
        return page

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def _console(self, msg: Any) -> None:
        if msg.type == "error" and "Content Security Policy" in msg.text:
            self.csp.append(msg.text)


@pytest.fixture
def open_page(browser: Any) -> Iterator[Callable[..., Any]]:
    """``open_page(url, viewport=LAPTOP)``: a page in its own context (own sessionStorage)."""
    contexts: list[Any] = []
    problems = PageProblems()

    def make(url: str, viewport: dict[str, int] = LAPTOP) -> Any:
        context = browser.new_context(viewport=viewport)
        contexts.append(context)
        page = problems.watch(context.new_page())
        page.set_default_timeout(15_000)
        page.goto(url)
        return page

    make.problems = problems  # type: ignore[attr-defined]
    yield make
    for context in contexts:
        context.close()
    assert not problems.errors, f"uncaught script errors: {problems.errors}"
    assert not problems.dialogs, f"dialogs fired: {problems.dialogs}"
    assert not problems.csp, f"Content-Security-Policy violations: {problems.csp}"


def screenshot(page: Any, name: str, full_page: bool = True) -> Path:
    """Save a screenshot under the artifacts folder (DASHBOARD_TEST_ARTIFACTS): the whole page, or the viewport."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


def lap_frames(start: int, count: int, hz: float = 20.0, t_end: float | None = None) -> list[dict[str, Any]]:
    """``count`` frames from seq ``start`` at ``hz``, the last one at ``t_end`` (default now): a car lapping an oval."""
    t_end = time.time() if t_end is None else t_end
    frames = []
    for i in range(count):
        seq = start + i
        t = t_end - (count - 1 - i) / hz
        a = 2 * math.pi * (t % LAP_S) / LAP_S
        frames.append({"seq": seq, "t": t, "channels": {
            "speed": round(140 + 60 * math.sin(3 * a), 1),
            "rpm": round(6200 + 1800 * math.sin(5 * a)),
            "throttle": round(55 + 45 * math.sin(7 * a), 1),
            "coolant_temp": round(96 + 4 * math.sin(a), 1),
            "lat": TRACK_LAT + 0.004 * math.sin(a),
            "lon": TRACK_LON + 0.006 * math.cos(a),
            "heading": round((math.degrees(-a)) % 360, 1),
            "gear": 3 + (seq // 40) % 3,
            "battery_voltage": 13.9,
            "oil_temp": 104.5,
        }})
    return frames


class Car:
    """A session with a scripted monitor on /monitor sending frames, as the in-car monitor would."""

    def __init__(self, server: Any, name: str = "Test session", driver: str | None = "A. Driver",
                 track: str | None = "Sebring") -> None:
        self.server = server
        self.car_id = f"car-{uuid.uuid4().hex[:8]}"
        answer = requests.post(f"{server.url}/api/v1/sessions", headers=server.headers, timeout=10,
                               json={"name": name, "car_id": self.car_id, "driver": driver, "track": track})
        answer.raise_for_status()
        self.session = answer.json()
        self.session_id = self.session["session_id"]
        self.url = f"{server.url}/sessions/{self.session_id}"
        self.next_seq = 0
        self.monitor: Any = None

    def connect(self) -> Car:
        """Connect the monitor and start (or resume) the session."""
        self.monitor = connect_monitor(self.server.url, self.car_id, self.server.api_key)
        ack = self.monitor.call("session.start", {"session_id": self.session_id}, namespace="/monitor",
                                timeout=CALL_TIMEOUT_S)
        assert ack["ok"], ack
        return self

    def send(self, count: int, hz: float = 20.0, batch: int = 1000) -> list[dict[str, Any]]:
        """Send ``count`` new frames at ``hz`` ending now, ``batch`` per event; returns them once acknowledged."""
        frames = lap_frames(self.next_seq, count, hz)
        for i in range(0, count, batch):
            chunk = frames[i:i + batch]
            ack = self.monitor.call("telemetry", {"session_id": self.session_id, "frames": chunk},
                                    namespace="/monitor", timeout=CALL_TIMEOUT_S)
            assert ack["ok"] and not ack["rejected"], ack
        self.next_seq += count
        return frames

    @contextlib.contextmanager
    def driving(self, hz: float = 10.0) -> Iterator[None]:
        """While inside: the car keeps lapping in real time, one frame every 1/hz s from a thread (no link alarm)."""
        stop = threading.Event()
        failures: list[BaseException] = []

        def drive() -> None:
            try:
                while not stop.wait(1 / hz):
                    self.send(1, hz)
            except BaseException as exc:  # noqa: BLE001 - reported by the test's thread below
                failures.append(exc)

        thread = threading.Thread(target=drive, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(CALL_TIMEOUT_S + 5)
        assert not failures, f"the car stopped driving: {failures[0]!r}"

    def heartbeat(self, backlog: int = 0, rtt_ms: float = 35.0) -> None:
        """A monitor heartbeat carrying link health."""
        ack = self.monitor.call("heartbeat", {"session_id": self.session_id, "backlog": backlog, "rtt_ms": rtt_ms},
                                namespace="/monitor", timeout=CALL_TIMEOUT_S)
        assert ack["ok"], ack

    def close(self) -> None:
        """Disconnect the monitor, if connected."""
        if self.monitor is not None:
            with contextlib.suppress(Exception):  # the server may be gone already
                self.monitor.disconnect()
            self.monitor = None


@pytest.fixture
def make_car(live_server: Any) -> Iterator[Callable[..., Car]]:
    """``make_car(name=..., driver=...)``: a new session on the live server; monitors closed at the end."""
    cars: list[Car] = []

    def make(**kwargs: Any) -> Car:
        car = Car(live_server, **kwargs)
        cars.append(car)
        return car

    yield make
    for car in cars:
        car.close()
