"""The access model through real server processes: who may read, change, stream, relay and manage keys.

Every refusal is the one JSON error shape; a presented credential that is refused counts against its
address, and past 10 a minute that address is refused outright, on REST and Socket.IO alike.
"""
from __future__ import annotations

import hashlib
import uuid
from typing import Any

import pytest
import redis
import requests
import socketio

from dashboard.server.tracks import ORLANDO_TRACK_ID
from tests.clients import CALL_TIMEOUT_S, Viewer, connect_monitor, make_frames
from tests.server.test_api import assert_error
from tests.waiting import wait_for

ADMIN = "test-key"  # the servers' DASHBOARD_API_KEY: the admin bootstrap key
LIMITS_REDIS = "redis://127.0.0.1:6379/3"  # a Redis database of its own: the counts of this module only


def key_header(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def call(server: Any, method: str, path: str, headers: dict[str, str] | None = None, **kwargs: Any) -> Any:
    return requests.request(method, server.url + path, headers=headers or {}, timeout=10, **kwargs)


def new_key(server: Any, role: str, **fields: Any) -> dict[str, Any]:
    """A key made by the admin over REST (the answer carries the key, once)."""
    body = {"role": role, "name": fields.pop("name", f"{role} of the test"), **fields}
    resp = call(server, "post", "/api/v1/keys", key_header(ADMIN), json=body)
    assert resp.status_code == 201, resp.text
    return resp.json()


def new_session(server: Any, car_id: str, key: str = ADMIN, **fields: Any) -> str:
    resp = call(server, "post", "/api/v1/sessions", key_header(key), json={"car_id": car_id, **fields})
    assert resp.status_code == 201, resp.text
    return resp.json()["session_id"]


def refusal(url: str, namespace: str, auth: dict[str, Any] | None) -> dict[str, Any]:
    """The error a refused Socket.IO connect carries: ``{code, message, field?}`` (the connect must be refused)."""
    client = socketio.Client(reconnection=False)
    errors: list[Any] = []
    client.on("connect_error", errors.append, namespace=namespace)
    with pytest.raises(socketio.exceptions.ConnectionError):
        client.connect(url, namespaces=[namespace], auth=auth, transports=["websocket"], wait_timeout=10)
    client.disconnect()
    assert errors and isinstance(errors[0], dict), errors
    return errors[0]["data"]


def monitor_call(client: socketio.Client, event: str, data: dict[str, Any]) -> dict[str, Any]:
    return client.call(event, data, namespace="/monitor", timeout=CALL_TIMEOUT_S)


def test_every_read_needs_the_viewer_token_when_one_is_set(server_factory: Any) -> None:
    server = server_factory(viewer_token="crew-secret")
    sid = new_session(server, "READ-1", driver="Jane Roadrunner")
    reads = ["/api/v1/sessions", f"/api/v1/sessions/{sid}", f"/api/v1/sessions/{sid}/setups",
             f"/api/v1/sessions/{sid}/telemetry", f"/api/v1/sessions/{sid}/frames", f"/api/v1/sessions/{sid}/events",
             f"/api/v1/sessions/{sid}/export?format=jsonl", f"/api/v1/sessions/{sid}/export.csv",
             f"/api/v1/sessions/{sid}/laps", f"/api/v1/sessions/{sid}/alerts", "/api/v1/tracks",
             f"/api/v1/tracks/{ORLANDO_TRACK_ID}", "/api/v1/alert-rules", "/metrics"]
    for path in reads:
        assert_error(call(server, "get", path), 401, "Authorization", "unauthorized")
        assert_error(call(server, "get", path, params={"token": "crew-secret"}), 401)  # never from the URL
        assert call(server, "get", path, bearer("crew-secret")).status_code == 200, path
        assert call(server, "get", path, key_header(ADMIN)).status_code == 200, path  # a key is read access
    assert_error(call(server, "get", "/api/v1/sessions", bearer("not-the-token")), 401, "Authorization")
    assert_error(call(server, "post", "/api/v1/sessions", bearer("crew-secret"), json={"car_id": "R2"}),
                 403, "Authorization", "forbidden")  # the viewer token reads, never changes
    health = call(server, "get", "/healthz")  # open, always
    assert health.status_code == 200 and health.json()["ok"] is True and health.json()["database"] is True
    for page in ("/", f"/sessions/{sid}", "/api/v1/openapi.json"):  # shells and docs: no data in them
        assert call(server, "get", page).status_code == 200
    # Socket.IO: the token, or a key of any role
    assert refusal(server.url, "/dashboard", None)["field"] == "token"
    assert refusal(server.url, "/dashboard", {"token": "wrong"})["code"] == "unauthorized"
    viewer = Viewer(server.url, token=new_key(server, "car", car_id="READ-1")["key"])
    try:
        assert viewer.join(sid)["ok"]
    finally:
        viewer.close()
    log = server.log_text()
    assert "crew-secret" not in log and "Jane Roadrunner" not in log


def test_metrics_can_have_a_token_of_its_own(server_factory: Any) -> None:
    server = server_factory(metrics_token="scrape-only", viewer_token="crew-secret")
    assert_error(call(server, "get", "/metrics"), 401, "Authorization")
    assert "dashboard_frames_received_total" in call(server, "get", "/metrics", bearer("scrape-only")).text
    assert call(server, "get", "/metrics", key_header(ADMIN)).status_code == 200
    assert_error(call(server, "get", "/metrics", bearer("crew-secret")), 403, "Authorization", "forbidden")
    assert_error(call(server, "get", "/api/v1/sessions", bearer("scrape-only")), 403, "Authorization")


def test_each_role_may_do_what_it_is_for_and_no_more(server_factory: Any) -> None:
    server = server_factory()
    keys = {role: new_key(server, role, **({"car_id": "ROLE-CAR"} if role == "car" else {}))
            for role in ("engineer", "viewer", "car", "gateway")}
    for role, made in keys.items():
        assert made["key"].startswith(made["key_id"] + ".") and made["role"] == role and made["revoked_at"] is None
    listed = call(server, "get", "/api/v1/keys", key_header(ADMIN))
    assert {k["key_id"] for k in listed.json()["items"]} >= {k["key_id"] for k in keys.values()}
    for made in keys.values():  # listed without the key, nor its hash
        secret = made["key"]
        assert secret not in listed.text and hashlib.sha256(secret.encode()).hexdigest() not in listed.text
    assert all("key" not in item for item in listed.json()["items"])

    engineer, viewer = keys["engineer"]["key"], keys["viewer"]["key"]
    sid = new_session(server, "ROLE-CAR", engineer, driver="Jane Roadrunner")
    for method, path, body in (("post", f"/api/v1/sessions/{sid}/start", None),
                               ("post", f"/api/v1/sessions/{sid}/setup", {"wing": 3}),
                               ("put", "/api/v1/alert-rules/hot?car_id=ROLE-CAR",
                                {"name": "Hot", "channel": "coolant_temp", "comparison": ">", "threshold": 110}),
                               ("post", f"/api/v1/sessions/{sid}/stop", None)):
        assert call(server, method, path, key_header(engineer), json=body).status_code in (200, 201), path
    assert call(server, "post", "/api/v1/sessions", bearer(engineer), json={"car_id": "B1"}).status_code == 201
    for method, path in (("post", "/api/v1/keys"), ("get", "/api/v1/keys"),
                         ("delete", f"/api/v1/keys/{keys['viewer']['key_id']}")):
        error = assert_error(call(server, method, path, key_header(engineer), json={"role": "admin", "name": "me"}),
                             403, "X-API-Key", "forbidden")
        assert "admin" in error["message"]
    for role in ("viewer", "car", "gateway"):
        key = keys[role]["key"]
        assert call(server, "get", f"/api/v1/sessions/{sid}", key_header(key)).status_code == 200
        for method, path, body in (("post", "/api/v1/sessions", {"car_id": "ROLE-CAR"}),
                                   ("post", f"/api/v1/sessions/{sid}/start", None),
                                   ("post", f"/api/v1/sessions/{sid}/setup", {"wing": 4}),
                                   ("delete", f"/api/v1/sessions/{sid}", None)):
            assert_error(call(server, method, path, key_header(key), json=body), 403, "X-API-Key", "forbidden")
    for body, field in (({"role": "car", "name": "no car"}, "car_id"),
                        ({"role": "viewer", "name": "x", "car_id": "C1"}, "car_id"),
                        ({"role": "root", "name": "x"}, "role"), ({"role": "viewer", "name": ""}, "name")):
        assert_error(call(server, "post", "/api/v1/keys", key_header(ADMIN), json=body), 422, field)

    # revoked: refused at once in this process, listed as revoked, a second revoke changes nothing
    path = f"/api/v1/keys/{keys['engineer']['key_id']}"
    assert call(server, "delete", path, key_header(ADMIN)).status_code == 204
    assert_error(call(server, "post", "/api/v1/sessions", key_header(engineer), json={"car_id": "B2"}),
                 401, "X-API-Key", "unauthorized")
    assert call(server, "delete", path, key_header(ADMIN)).status_code == 204
    assert_error(call(server, "delete", "/api/v1/keys/rdk_000000000000", key_header(ADMIN)), 404, "key_id")
    def listed_revoked() -> dict[str, Any] | None:
        items = call(server, "get", "/api/v1/keys", key_header(ADMIN)).json()["items"]
        row = next(k for k in items if k["key_id"] == keys["engineer"]["key_id"])
        return row if row["revoked_at"] and row["last_used_at"] else None  # last use is saved without waiting

    wait_for(listed_revoked, 10, "the engineer key listed as used and revoked")
    assert call(server, "get", "/api/v1/sessions", key_header(viewer)).status_code == 200

    log = server.log_text()  # key ids and session ids, never keys, tokens or driver names
    assert keys["engineer"]["key_id"] in log and sid in log
    for secret in [ADMIN, "Jane Roadrunner", *(k["key"].split(".")[1] for k in keys.values())]:
        assert secret not in log


def test_key_management_needs_an_admin_key_even_on_an_open_server(server_factory: Any) -> None:
    server = server_factory(api_key=None)
    assert_error(call(server, "post", "/api/v1/keys", json={"role": "admin", "name": "me"}), 401, "X-API-Key")
    assert call(server, "post", "/api/v1/sessions", json={"car_id": "OPEN-1"}).status_code == 201  # open as before


def test_a_car_key_streams_only_as_its_car_and_only_gateways_relay_lora(server_factory: Any) -> None:
    server = server_factory()
    car7, gateway, engineer = (new_key(server, "car", car_id="CAR7"), new_key(server, "gateway"),
                               new_key(server, "engineer"))
    other = new_session(server, "CAR8")
    assert refusal(server.url, "/monitor", {"car_id": "CAR8", "api_key": car7["key"]})["field"] == "car_id"
    error = refusal(server.url, "/monitor", {"car_id": "CAR7", "api_key": engineer["key"]})
    assert (error["code"], error["field"]) == ("forbidden", "api_key")
    assert refusal(server.url, "/monitor", {"car_id": "CAR7"})["code"] == "unauthorized"

    commands: list[Any] = []
    monitor = socketio.Client(reconnection=False)
    monitor.on("command", commands.append, namespace="/monitor")
    monitor.connect(server.url, namespaces=["/monitor"], auth={"car_id": "CAR7", "api_key": car7["key"]},
                    transports=["websocket"], wait_timeout=10)
    relay = connect_monitor(server.url, "mesh-gateway", gateway["key"])
    try:
        sid = monitor_call(monitor, "session.start", {})["session"]["session_id"]
        assert monitor_call(monitor, "telemetry", {"session_id": sid, "frames": make_frames(0, 5)})["acked_seq"] == 4
        for payload in ({"session_id": other, "frames": make_frames(0, 1)}, {"session_id": other}):
            event = "telemetry" if "frames" in payload else "session.end"
            nack = monitor_call(monitor, event, payload)
            assert (nack["ok"], nack["error"]["code"], nack["error"]["field"]) == (False, "forbidden", "session_id")
        lora = {"car_id": "CAR7", "session_prefix": sid.replace("-", "")[:8], "received_at": 1.8e9,
                "frame": {"seq": 5, "t": make_frames(5, 1)[0]["t"], "channels": {"rpm": 4000.0}}}
        nack = monitor_call(monitor, "lora", lora)
        assert (nack["ok"], nack["error"]["code"], nack["error"]["field"]) == (False, "forbidden", "event")
        assert monitor_call(relay, "lora", lora) == {"ok": True, "session_id": sid}
        for event, payload in (("session.start", {}), ("telemetry", {"session_id": sid, "frames": make_frames(9, 1)}),
                               ("heartbeat", {"session_id": sid})):
            nack = monitor_call(relay, event, payload)
            assert nack["error"]["code"] == "forbidden", (event, nack)
        call(server, "post", f"/api/v1/sessions/{other}/start", key_header(ADMIN)).raise_for_status()
        call(server, "post", f"/api/v1/sessions/{sid}/stop", key_header(ADMIN)).raise_for_status()
        wait_for(lambda: [c for c in commands if c["action"] == "stop"], 10, "the stop command at CAR7")
        assert {c["session_id"] for c in commands} == {sid}  # CAR8's start never reached CAR7

        # revoked: its live connection is closed, and it cannot connect again
        call(server, "delete", f"/api/v1/keys/{car7['key_id']}", key_header(ADMIN)).raise_for_status()
        wait_for(lambda: not monitor.connected, 10, "the revoked car's connection to be closed")
        assert refusal(server.url, "/monitor", {"car_id": "CAR7", "api_key": car7["key"]})["code"] == "unauthorized"
        assert relay.connected
    finally:
        monitor.disconnect()
        relay.disconnect()
    assert f"key {car7['key_id']} revoked" in server.log_text()


def test_failed_authentication_is_slowed_down_per_address(server_factory: Any) -> None:
    server = server_factory()
    for _ in range(10):
        assert_error(call(server, "post", "/api/v1/sessions", key_header("guess"), json={"car_id": "T1"}), 401)
    throttled = call(server, "post", "/api/v1/sessions", key_header(ADMIN), json={"car_id": "T1"})
    error = assert_error(throttled, 429, "X-API-Key", "too_many")  # even the right key, from this address
    assert 1 <= int(throttled.headers["Retry-After"]) <= 60 and 0 < error["retry_after"] <= 60
    assert call(server, "get", "/api/v1/sessions").status_code == 200  # no credential: nothing to guess, not stopped
    error = refusal(server.url, "/monitor", {"car_id": "T1", "api_key": ADMIN})  # one count for REST and Socket.IO
    assert error["code"] == "too_many" and error["retry_after"] > 0

    sockets = server_factory()  # the same, starting from Socket.IO connects
    for _ in range(10):
        assert refusal(sockets.url, "/monitor", {"car_id": "T2", "api_key": "guess"})["code"] == "unauthorized"
    assert refusal(sockets.url, "/dashboard", {"token": ADMIN})["code"] == "too_many"
    assert_error(call(sockets, "get", "/api/v1/sessions", key_header(ADMIN)), 429, "X-API-Key")

    proxied = server_factory(proxy_hops="1")  # behind a proxy: the client's address, from X-Forwarded-For
    for _ in range(10):
        call(proxied, "get", "/api/v1/sessions", {"X-Forwarded-For": "192.0.2.7", **key_header("guess")})
    assert call(proxied, "get", "/api/v1/sessions",
                {"X-Forwarded-For": "192.0.2.7", **key_header(ADMIN)}).status_code == 429
    assert call(proxied, "get", "/api/v1/sessions",
                {"X-Forwarded-For": "198.51.100.9", **key_header(ADMIN)}).status_code == 200


def test_a_revoke_and_failed_attempts_reach_every_process_sharing_the_database(server_factory: Any,
                                                                                pg_url: str) -> None:
    redis.Redis.from_url(LIMITS_REDIS).flushdb()  # counts of an earlier run of this test
    a = server_factory(database_url=pg_url, message_queue=LIMITS_REDIS)
    b = server_factory(database_url=pg_url, message_queue=LIMITS_REDIS)
    engineer = new_key(a, "engineer")
    assert new_session(b, f"PG-{uuid.uuid4().hex[:6]}", engineer["key"])  # made on one, known to the other
    call(a, "delete", f"/api/v1/keys/{engineer['key_id']}", key_header(ADMIN)).raise_for_status()
    wait_for(lambda: call(b, "get", "/api/v1/sessions", key_header(engineer["key"])).status_code == 401, 10,
             "the other process to refuse the key")  # the first refusal ends the wait: one failure counted
    redis.Redis.from_url(LIMITS_REDIS).flushdb()  # the refusals above counted too
    for _ in range(10):
        assert_error(call(a, "get", "/api/v1/sessions", key_header("guess")), 401)
    assert_error(call(b, "get", "/api/v1/sessions", key_header(ADMIN)), 429, "X-API-Key")
    redis.Redis.from_url(LIMITS_REDIS).flushdb()
