"""`dashboard keys`: a key is printed once and stored only as its hash; a running server honours the command's
create and revoke (the revoke within its key cache's TTL)."""
from __future__ import annotations

import hashlib
import sqlite3

import requests

from tests.servers import ServerProcess
from tests.test_cli import run
from tests.waiting import wait_for


def test_keys_are_printed_once_stored_hashed_and_revoked_for_a_running_server(tmp_path):
    env = {"DASHBOARD_INSTANCE_PATH": str(tmp_path)}
    made = run("keys", "create", "--role", "engineer", "--name", "Chief engineer", env=env)
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert made.stdout.count("\n") == 1 and key.startswith("rdk_") and key not in made.stderr
    key_id = key.split(".")[0]
    assert key_id in made.stderr
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("dashboard.db*"))
    assert key.encode() not in stored and key.split(".")[1].encode() not in stored
    with sqlite3.connect(tmp_path / "dashboard.db") as conn:
        assert conn.execute("SELECT key_hash, role, name FROM access_keys").fetchall() == [
            (hashlib.sha256(key.encode()).hexdigest(), "engineer", "Chief engineer")]

    assert run("keys", "create", "--role", "car", env=env).returncode == 2  # a car key needs its car
    car = run("keys", "create", "--role", "car", "--car-id", "CAR7", env=env)
    assert car.returncode == 0 and "for car CAR7" in car.stderr
    listed = run("keys", "list", env=env)
    assert key_id in listed.stdout and "Chief engineer" in listed.stdout and "CAR7" in listed.stdout
    assert key.split(".")[1] not in listed.stdout and car.stdout.strip().split(".")[1] not in listed.stdout

    server = ServerProcess(tmp_path, api_key=None, keys_ttl_s="1").start()  # no bootstrap key: only the stored ones
    try:
        created = requests.post(server.url + "/api/v1/sessions", json={"car_id": "CAR7"}, timeout=5,
                                headers={"X-API-Key": key})
        assert created.status_code == 201, created.text
        # a key exists, so the server is closed: no key, no change (the open server of old is gone)
        assert requests.post(server.url + "/api/v1/sessions", json={"car_id": "CAR7"}, timeout=5).status_code == 401
        assert "ANYONE" not in server.log_text()
        revoked = run("keys", "revoke", key_id, env=env)
        assert revoked.returncode == 0 and "revoked" in revoked.stderr
        wait_for(lambda: requests.get(server.url + "/api/v1/sessions", headers={"X-API-Key": key},
                                      timeout=5).status_code == 401, 10, "the server to refuse the revoked key")
    finally:
        server.stop()
    assert run("keys", "revoke", "rdk_000000000000", env=env).returncode == 1
    assert key not in server.log_text()
