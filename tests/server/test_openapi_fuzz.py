"""Schemathesis against a real server: every request the OpenAPI document generates (valid and invalid) gets an
answer the document describes, never a 5xx, with every check schemathesis offers.

Two runs, each on a throwaway server (its own database) with an admin key and a viewer token set: once with the
admin key (every operation reachable, mutations included) and once without any credential (everything but
/healthz must be 401 with the JSON error body, as the document says). The key goes in a header through the Python
API, never on a command line or in a URL. Seeded and bounded: the same cases every run, in well under a minute
each on a 2-core machine. The number of cases run and of 5xx seen is printed in the terminal summary.
"""
from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import CHECKS, is_check_class, load_all_checks

from tests.servers import ServerProcess

SEED = 20261129  # the same generated cases in every run: a failure is reproduced by running the test again
MAX_EXAMPLES = 12  # fuzzing-phase examples per operation and generation mode; 31 operations × 2 runs in < 90 s
ADMIN_KEY = "fuzz-admin-key"  # test servers' DASHBOARD_API_KEY (never logged, never in a URL)
VIEWER_TOKEN = "fuzz-viewer-token"
AUTH_FAILURES_ALLOWED = 1_000_000  # see fuzz_server
RUN_BUDGET_S = 90.0  # each run must finish well within this on the 2-core machine

load_all_checks()


def zero_length_line_refused(case: Any, response: Any) -> bool:
    """A track whose line has B equal to A, refused with 422 naming that B: the one rule of the document that
    JSON Schema cannot state (two values differing), so schemathesis generates such tracks as valid."""
    body = case.body if isinstance(case.body, dict) else {}
    sectors = body.get("sectors") if isinstance(body.get("sectors"), list) else []
    lane = body.get("pit_lane") if isinstance(body.get("pit_lane"), dict) else {}
    lines = ([("b", body)] + [(f"sectors.{i}.b", s) for i, s in enumerate(sectors) if isinstance(s, dict)]
             + [(f"pit_lane.{name}.b", lane[name]) for name in ("pit_in", "pit_out")
                if isinstance(lane.get(name), dict)])
    same = [field for field, line in lines if "a" in line and line.get("a") == line.get("b")]
    return (response.status_code == 422 and bool(same)
            and response.json()["error"]["field"] == same[0] and case.path.startswith("/api/v1/tracks"))


def not_a_log_file_refused(case: Any, response: Any) -> bool:
    """An upload to /api/v1/imports that is no log file, refused with 422 bad_file naming its line: what a file must
    hold (a RaceCapture header, NMEA sentences...) is no JSON Schema, so schemathesis's bytes count as valid."""
    return (case.path == "/api/v1/imports" and response.status_code == 422
            and response.json()["error"]["code"] == "bad_file")


def message_rule_refused(case: Any, response: Any) -> bool:
    """A pit-to-car message the rules of dashboard/telemetry/messages.py refuse with 422 invalid_message naming the
    field: what JSON Schema cannot state (48 bytes of UTF-8, blank once spaces collapse, unassigned characters,
    text and canned together or neither, a canned index past the team's list, a repeated canned text)."""
    return ("messages" in case.path and response.status_code == 422
            and response.json()["error"]["code"] == "invalid_message")


def positive_data_acceptance(ctx: Any, response: Any, case: Any) -> bool | None:
    """schemathesis's positive_data_acceptance, except for a zero-length timing line, a non-log upload and a message
    refused by the message rules (above)."""
    if zero_length_line_refused(case, response) or not_a_log_file_refused(case, response) \
            or message_rule_refused(case, response):
        return None
    return CHECKS.get_one("positive_data_acceptance")(ctx, response, case)


# Every check this schemathesis version has, nothing disabled; positive_data_acceptance narrowed as above.
ALL_CHECKS = [positive_data_acceptance if check.__name__ == "positive_data_acceptance" else check
              for check in CHECKS.get_all() if not is_check_class(check)]
CHECK_NAMES = {check.__name__ for check in ALL_CHECKS}

# Figures of each run, printed by pytest_terminal_summary in tests/server/conftest.py.
FIGURES: dict[str, Counter] = {}
SESSIONS: dict[str, requests.Session] = {}


def fuzz_config() -> schemathesis.Config:
    """Seeded, deterministic, bounded; every phase that runs without links (examples, coverage, fuzzing)."""
    return schemathesis.Config.from_dict({
        "seed": SEED,
        "generation": {"mode": "all", "max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none",
                       # the credential is the test's to give (admin or none), never a generated header
                       "with-security-parameters": False},
        # parametrize() runs no stateful phase anyway: it would follow links between operations, which the document
        # does not have; use_after_free, ensure_resource_availability and object_level_authorization judge such
        # sequences, so they run here but have none to judge
        "phases": {"stateful": {"enabled": False}},
    })


def fuzz_server(tmp_path: Path) -> ServerProcess:
    """A throwaway server with an admin key and a viewer token: every route checks who calls."""
    # schemathesis's ignored_auth check sends wrong credentials on purpose, to see them refused: more than the
    # default 10 a minute would throttle the address (test_access.py holds the throttle to its limit).
    return ServerProcess(tmp_path, api_key=ADMIN_KEY, viewer_token=VIEWER_TOKEN,
                         auth_failures_per_minute=str(AUTH_FAILURES_ALLOWED)).start()


@pytest.fixture(scope="module", autouse=True)
def close_sessions() -> Iterator[None]:
    yield
    for session in SESSIONS.values():
        session.close()


@pytest.fixture
def admin_server(tmp_path: Path) -> Iterator[ServerProcess]:
    server = fuzz_server(tmp_path / "admin")
    yield server
    server.stop()


@pytest.fixture
def anonymous_server(tmp_path: Path) -> Iterator[ServerProcess]:
    server = fuzz_server(tmp_path / "anonymous")
    yield server
    server.stop()


def load(server: ServerProcess) -> Any:
    """The document as the running server serves it, with the server as base URL."""
    schema = schemathesis.openapi.from_url(server.url + "/api/v1/openapi.json", config=fuzz_config(), timeout=10)
    schema.config.update(base_url=server.url)
    return schema


@pytest.fixture
def admin_schema(admin_server: ServerProcess) -> Any:
    return load(admin_server)


@pytest.fixture
def anonymous_schema(anonymous_server: ServerProcess) -> Any:
    return load(anonymous_server)


admin = schemathesis.pytest.from_fixture("admin_schema")
anonymous = schemathesis.pytest.from_fixture("anonymous_schema")
FUZZ_SETTINGS = settings(deadline=None, suppress_health_check=list(HealthCheck), print_blob=True)


def run_case(mode: str, case: Any, headers: dict[str, str]) -> Any:
    """One generated case through the real server, validated by every check; counted."""
    figures = FIGURES.setdefault(mode, Counter())
    figures.setdefault("started", time.monotonic())
    session = SESSIONS.setdefault(mode, requests.Session())  # one keep-alive connection per run
    try:
        response = case.call(session=session, headers=headers, timeout=10)
    finally:
        figures["cases"] += 1
    figures["5xx"] += response.status_code >= 500
    figures[f"{response.status_code // 100}xx_seen"] += 1
    figures["elapsed"] = time.monotonic() - figures["started"]
    case.validate_response(response, checks=ALL_CHECKS, headers=headers)
    if 400 <= response.status_code < 500 and case.method != "HEAD":  # every refusal names what is to blame
        assert response.json()["error"]["field"], (case.method, case.formatted_path, response.text)
    return response


@pytest.mark.timeout(RUN_BUDGET_S)
@admin.parametrize()
@FUZZ_SETTINGS
def test_every_generated_request_with_the_admin_key_is_answered_as_documented(case: Any) -> None:
    run_case("admin key", case, {"X-API-Key": ADMIN_KEY})


@pytest.mark.timeout(RUN_BUDGET_S)
@anonymous.parametrize()
@FUZZ_SETTINGS
def test_without_a_credential_everything_but_health_is_401_as_documented(case: Any) -> None:
    response = run_case("no credential", case, {})
    if case.method == "OPTIONS":  # the methods a path has, and nothing else: no credential needed
        assert response.status_code == 200 and response.headers.get("allow") and not response.content
    elif case.method.lower() != case.operation.method.lower():  # the coverage phase's undocumented methods
        assert response.status_code == 405 and response.headers.get("allow")
    elif case.path == "/healthz":
        assert response.status_code in (200, 503)
    else:
        assert response.status_code == 401, (case.method, case.formatted_path, response.status_code, response.text)
        error = response.json()["error"]
        assert error["code"] == "unauthorized" and error["field"] in ("X-API-Key", "Authorization"), error


def test_all_the_checks_run() -> None:
    """The runs above use every check the pinned schemathesis has, named here so an upgrade is noticed."""
    assert {"not_a_server_error", "status_code_conformance", "content_type_conformance",
            "response_schema_conformance", "response_headers_conformance", "negative_data_rejection",
            "positive_data_acceptance", "missing_required_header", "unsupported_method",
            "allow_header_conformance", "use_after_free", "ensure_resource_availability", "ignored_auth",
            "object_level_authorization"} <= CHECK_NAMES
