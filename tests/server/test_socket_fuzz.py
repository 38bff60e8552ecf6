"""Socket.IO messages generated from the JSON Schemas in schemas/, valid and invalid, through a real server.

For every event a client sends with an ack, on /monitor (a car's monitor, here with the admin key: it may stream
and relay LoRa) and /dashboard (a viewer with the viewer token): hypothesis-jsonschema generates messages from the
event's schema, and hypothesis breaks them (wrong types, missing and extra fields, huge numbers, NaN-like strings,
deep nesting). The schema is the oracle: each message is valid or not by jsonschema, and the server must answer
every one with an ack that its ack schema (or error.ack) describes, never without an answer and never
``internal_error``; a valid message is never refused as malformed or invalid, an invalid one always is. After the
barrage the server still streams a frame to a viewer who joins. Seeded, bounded, in well under a minute.
"""
from __future__ import annotations

import functools
import json
import math
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import jsonschema
import pytest
import socketio
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema

from tests.clients import CALL_TIMEOUT_S, RawSocketIO, Viewer, connect_monitor, make_frames
from tests.servers import REPO, ServerProcess

SEED = 20261129
VALID_EXAMPLES = 25  # per event, schema-valid messages
INVALID_EXAMPLES = 40  # per event, broken ones
ADMIN_KEY = "fuzz-admin-key"
VIEWER_TOKEN = "fuzz-viewer-token"
SCHEMAS = REPO / "schemas"
CAR = "FUZZ-CAR"
MAX_CLIENT_DEPTH = 300  # python-socketio's client encodes with json.dumps, under Python's recursion limit of 1,000
# frames with hypothesis' and pytest's own frames below it; deeper than the server's limit: raw packets, below
RAW_DEPTH = 5000  # over orjson's 1,024 levels: the server must refuse it as malformed
REFUSED_AS_INPUT = {"malformed", "invalid", "too_large"}  # what the server answers a message it cannot take

# (namespace, event): the schema of what is sent and of the ok ack (error.ack for every refusal).
EVENTS = {
    ("/monitor", "session.start"): ("monitor.session.start", "monitor.session.start.ack"),
    ("/monitor", "telemetry"): ("monitor.telemetry", "monitor.telemetry.ack"),
    ("/monitor", "heartbeat"): ("monitor.heartbeat", "monitor.heartbeat.ack"),
    ("/monitor", "event"): ("monitor.event", "monitor.event.ack"),
    ("/monitor", "lora"): ("monitor.lora", "monitor.lora.ack"),
    ("/monitor", "session.end"): ("monitor.session.end", "monitor.session.end.ack"),
    ("/dashboard", "join"): ("dashboard.join", "dashboard.join.ack"),
    ("/dashboard", "leave"): ("dashboard.leave", "dashboard.leave.ack"),
    ("/dashboard", "team.join"): ("dashboard.team.join", "dashboard.team.join.ack"),
    ("/dashboard", "team.leave"): ("dashboard.team.leave", "dashboard.team.leave.ack"),
    ("/dashboard", "driver.change"): ("dashboard.driver.change", "dashboard.driver.change.ack"),
    ("/dashboard", "message.send"): ("dashboard.message.send", "dashboard.message.send.ack"),
    ("/dashboard", "message.cancel"): ("dashboard.message.cancel", "dashboard.message.cancel.ack"),
    ("/monitor", "message.report"): ("monitor.message.report", "monitor.message.report.ack"),
}
FIGURES: Counter = Counter()  # printed by tests/server/conftest.py


def schema(name: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / f"{name}.schema.json").read_text())


ERROR_ACK = jsonschema.Draft202012Validator(schema("error.ack"))
VALIDATORS = {name: jsonschema.Draft202012Validator(schema(name)) for pair in EVENTS.values() for name in pair}
FRAME = schema("frame")


class Clients:
    """The fuzz server's clients: a monitor (admin key, car FUZZ-CAR) with its session, and a viewer."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.monitor = connect_monitor(server.url, CAR, ADMIN_KEY)
        self.viewer = socketio.Client(reconnection=False)
        self.viewer.connect(server.url, namespaces=["/dashboard"], auth={"token": VIEWER_TOKEN},
                            transports=["websocket"], wait_timeout=10)
        self.session_id = self.call("/monitor", "session.start", {})["session"]["session_id"]

    def call(self, namespace: str, event: str, data: Any) -> Any:
        """The ack of one event; a missing ack fails the test (socketio.exceptions.TimeoutError)."""
        client = self.monitor if namespace == "/monitor" else self.viewer
        FIGURES["messages"] += 1
        return client.call(event, data, namespace=namespace, timeout=CALL_TIMEOUT_S)

    def close(self) -> None:
        self.monitor.disconnect()
        self.viewer.disconnect()


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("socket-fuzz"), api_key=ADMIN_KEY,
                           viewer_token=VIEWER_TOKEN).start()
    FIGURES["started"] = time.monotonic()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def clients(fuzz_server: ServerProcess) -> Iterator[Clients]:
    clients = Clients(fuzz_server)
    yield clients
    clients.close()


# ------------------------------------------------------------------ messages
NAN_LIKE = st.sampled_from(["NaN", "nan", "Infinity", "-Infinity", "inf", "1e400", "-1e400", "0x10", "1_000", ""])
HUGE = st.sampled_from([2**53 + 1, 2**63, -(2**63) - 1, 2**64, 10**30, 1.7976931348623157e308, -1e308, 5e-324])
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
                    st.text(max_size=20), NAN_LIKE, HUGE)
JSON = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                     st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                    max_leaves=12)


def nested(depth: int) -> Any:
    """A value nested ``depth`` levels deep, alternating objects and lists."""
    value: Any = 1
    for level in range(depth):
        value = {"n": value} if level % 2 else [value]
    return value


@functools.cache
def valid_messages(name: str, session_id: str) -> st.SearchStrategy[Any]:
    """Schema-valid messages; where they name a session, often the monitor's real one (and real frames)."""
    base = from_schema(schema(name))

    def aim(message: dict[str, Any], real: bool, frames: list[Any]) -> dict[str, Any]:
        if real and "session_id" in message:
            message = {**message, "session_id": session_id}
        if real and "frames" in message:
            message = {**message, "frames": frames}
        return message

    return st.builds(aim, base, st.booleans(), st.lists(from_schema(FRAME), max_size=3))


@st.composite
def broken_messages(draw: st.DrawFn, name: str, session_id: str) -> Any:
    """A valid message broken one way: wrong type, field missing, extra field, field replaced by a huge number,
    a NaN-like string or deep nesting; or no object at all."""
    message = draw(valid_messages(name, session_id))
    fields = sorted(message)
    how = draw(st.sampled_from(["not_object", "missing", "extra", "retype", "huge", "nan_like", "deep"]))
    if how == "not_object" or not fields and how in ("missing", "retype", "huge", "nan_like", "deep"):
        return draw(st.one_of(SCALARS, st.lists(JSON, max_size=3)))
    field = fields[draw(st.integers(0, len(fields) - 1))] if fields else ""  # no strategy made per message
    if how == "missing":
        return {k: v for k, v in message.items() if k != field}
    if how == "extra":
        return {**message, "x_" + draw(st.text(max_size=12)) + field: draw(JSON)}
    value = {"retype": JSON, "huge": HUGE, "nan_like": NAN_LIKE,
             "deep": st.integers(50, MAX_CLIENT_DEPTH).map(nested)}[how]
    return {**message, field: draw(value)}


# ------------------------------------------------------------------ the oracle
def assert_answered_as_the_schema_says(namespace: str, event: str, message: Any, ack: Any) -> None:
    """The ack is the event's ack or an error ack with a code, never internal_error; validity as the schema says."""
    sent, acked = EVENTS[(namespace, event)]
    if event == "session.start" and message is None:  # no payload (call without data) is the empty object
        message = {}
    valid = VALIDATORS[sent].is_valid(message)
    where = f"{namespace} {event} {json.dumps(message, default=str)[:300]} -> {json.dumps(ack)[:300]}"
    assert isinstance(ack, dict) and "ok" in ack, where
    if ack["ok"]:
        FIGURES["ok acks"] += 1
        VALIDATORS[acked].validate(ack)
        assert valid, f"an invalid message was taken: {where}"
        return
    FIGURES["error acks"] += 1
    ERROR_ACK.validate(ack)
    code = ack["error"]["code"]
    assert code and code != "internal_error", where
    if valid:
        assert code not in REFUSED_AS_INPUT, f"a valid message was refused: {where}"
    else:
        assert code in REFUSED_AS_INPUT, f"an invalid message was not refused as such: {where}"
        assert ack["error"].get("field"), where


def is_finite_json(message: Any) -> bool:
    """python-socketio's client writes NaN for a float nan: keep to what JSON can carry (walked without recursion:
    the messages nest deep)."""
    todo = [message]
    while todo:
        value = todo.pop()
        if isinstance(value, float) and not math.isfinite(value):
            return False
        todo.extend(value.values() if isinstance(value, dict) else value if isinstance(value, list) else ())
    return True


FUZZ = settings(deadline=None, database=None, suppress_health_check=list(HealthCheck))


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("namespace", "event"), list(EVENTS), ids=[f"{n}:{e}" for n, e in EVENTS])
def test_generated_messages_get_the_ack_their_schema_says(clients: Clients, namespace: str, event: str) -> None:
    name = EVENTS[(namespace, event)][0]

    @seed(SEED)
    @settings(FUZZ, max_examples=VALID_EXAMPLES)
    @given(valid_messages(name, clients.session_id))
    def valid(message: Any) -> None:
        FIGURES["valid"] += 1
        assert_answered_as_the_schema_says(namespace, event, message, clients.call(namespace, event, message))

    @seed(SEED)
    @settings(FUZZ, max_examples=INVALID_EXAMPLES)
    @given(broken_messages(name, clients.session_id).filter(is_finite_json))
    def broken(message: Any) -> None:
        FIGURES["invalid"] += 1
        assert_answered_as_the_schema_says(namespace, event, message, clients.call(namespace, event, message))

    valid()
    broken()
    FIGURES["elapsed"] = time.monotonic() - FIGURES["started"]


def test_nesting_deeper_than_the_server_parses_is_refused_as_malformed(fuzz_server: ServerProcess) -> None:
    """Deeper than a client library writes: raw packets, each answered with a malformed ack."""
    deep = "[" * RAW_DEPTH + "]" * RAW_DEPTH
    for namespace, auth, event in (("/monitor", {"car_id": CAR, "api_key": ADMIN_KEY}, "heartbeat"),
                                   ("/dashboard", {"token": VIEWER_TOKEN}, "join")):
        raw = RawSocketIO(fuzz_server.url, namespace, auth)
        try:
            for packet_id, payload in enumerate((deep, '{"session_id": ' + deep + "}"), start=1):
                ack = raw.call(packet_id, json.dumps([event, None])[:-5] + payload + "]")
                assert ack["ok"] is False and ack["error"]["code"] in REFUSED_AS_INPUT, (namespace, ack)
                ERROR_ACK.validate(ack)
        finally:
            raw.close()


def test_after_the_barrage_a_car_still_streams_to_a_viewer(fuzz_server: ServerProcess, clients: Clients) -> None:
    """Runs after the fuzzing (same module, same server): a fresh session, a frame, a viewer who joins and gets it."""
    assert FIGURES["valid"] and FIGURES["invalid"], "the fuzzing ran first"
    monitor = connect_monitor(fuzz_server.url, "AFTER-FUZZ", ADMIN_KEY)
    viewer = Viewer(fuzz_server.url, token=VIEWER_TOKEN)
    try:
        sid = monitor.call("session.start", {}, namespace="/monitor", timeout=CALL_TIMEOUT_S)["session"]["session_id"]
        joined = viewer.join(sid)
        assert joined["ok"] and joined["snapshot"]["session"]["session_id"] == sid
        ack = monitor.call("telemetry", {"session_id": sid, "frames": make_frames(0, 1)}, namespace="/monitor",
                           timeout=CALL_TIMEOUT_S)
        assert ack["ok"] and ack["acked_seq"] == 0 and not ack["rejected"]
        assert viewer.wait_frames(1) == [0]
    finally:
        monitor.disconnect()
        viewer.close()
    assert "Traceback" not in Path(fuzz_server.log_path).read_text(errors="replace")
