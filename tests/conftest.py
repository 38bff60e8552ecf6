"""Shared fixtures: a real server process for end-to-end tests, and a throwaway SessionManager."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from tests.servers import ServerProcess


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One ``dashboard serve`` shared by the end-to-end tests (API key ``test-key``).

    Tests that kill or restart it must leave it running (``.start()``) when they finish.
    """
    server = ServerProcess(tmp_path_factory.mktemp("live-server")).start()
    yield server
    server.stop()


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator:
    """Start extra servers with their own settings; all stopped at the end of the test."""
    started: list[ServerProcess] = []

    def make(**settings: str) -> ServerProcess:
        server = ServerProcess(tmp_path / f"server{len(started)}", **settings).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()
