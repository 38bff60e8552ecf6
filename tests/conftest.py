"""Shared fixtures: a real server process for end-to-end tests, and a throwaway SessionManager."""
from __future__ import annotations

import uuid
from pathlib import Path
from typing import Iterator

import psycopg
import pytest

from tests.servers import ServerProcess


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """Note where each server's log stood when the test began (see pytest_runtest_makereport)."""
    item.stash[LOG_OFFSETS] = {id(server): server.log_size() for server in ServerProcess.started}
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """A failed test's report carries what each server printed during it: CI shows why, not only what."""
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    offsets = item.stash.get(LOG_OFFSETS, {})
    for server in ServerProcess.started:
        tail = server.log_tail_since(offsets.get(id(server), 0))
        if tail.strip():
            report.sections.append((f"server log ({server.url}) during the test", tail))


LOG_OFFSETS = pytest.StashKey[dict]()


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


PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"  # the machine's PostgreSQL (.ci/run starts it)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A throwaway PostgreSQL database on the machine's server, dropped afterwards."""
    name = f"dash_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each storage test runs on SQLite and on a real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/test.db"
    return request.getfixturevalue("pg_url")
