"""Reports of the server's end-to-end tests."""
from __future__ import annotations

import sys
from typing import Any


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The fuzzers' figures (cases or messages sent, 5xx or error acks, time), for those that ran."""
    rest = sys.modules.get("tests.server.test_openapi_fuzz")
    for mode, figures in (rest.FIGURES.items() if rest else ()):
        terminalreporter.write_line(
            f"schemathesis ({mode}): {figures['cases']} cases run, {figures['5xx']} 5xx, "
            f"{figures['elapsed']:.1f} s; by class: "
            + ", ".join(f"{k[:3]} {v}" for k, v in sorted(figures.items()) if k.endswith("xx_seen")))
    sockets = sys.modules.get("tests.server.test_socket_fuzz")
    if sockets and sockets.FIGURES["messages"]:
        f = sockets.FIGURES
        terminalreporter.write_line(
            f"socket.io fuzz: {f['messages']} messages ({f['valid']} valid, {f['invalid']} invalid), "
            f"{f['ok acks']} ok acks, {f['error acks']} error acks, {f['elapsed']:.1f} s")
