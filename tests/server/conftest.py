"""Fixtures and reports of the server's end-to-end tests."""
from __future__ import annotations

from typing import Any


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The fuzzers' figures (cases run, 5xx seen, time), when they ran."""
    from tests.server import test_openapi_fuzz

    for mode, figures in test_openapi_fuzz.FIGURES.items():
        terminalreporter.write_line(
            f"schemathesis ({mode}): {figures['cases']} cases run, {figures['5xx']} 5xx, "
            f"{figures['elapsed']:.1f} s; by class: "
            + ", ".join(f"{k[:3]} {v}" for k, v in sorted(figures.items()) if k.endswith("xx_seen")))
