"""The car's inbox of pit-to-car messages, on a real outbox file, and its local control over a real UNIX socket."""
from __future__ import annotations

import json
import shutil
import socket
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from dashboard.car.inbox_control import InboxControl
from dashboard.car.messages import META_KEY, REPORT_EVENT, CarMessages
from dashboard.car.outbox import Outbox
from dashboard.telemetry.messages import new_message


def wire(text: str = "FUEL OK?", asks: bool = True, priority: str = "normal", state: str = "delivered",
         session_id: str = "s-1", message_id: str | None = None) -> dict:
    message = new_message("car-1", text, created_by="key-1", now=time.time(), asks_answer=asks, priority=priority,
                          message_id=message_id)
    return {**message.to_dict(), "session_id": session_id, "state": state}


def test_held_once_persisted_and_answered_once(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.sqlite")
    inbox = CarMessages(box, position=lambda: {"lat": 28.4, "lon": -81.4})
    asked = wire()
    assert inbox.receive(asked) == {"ok": True}
    assert inbox.receive(asked) == {"ok": True}  # a resend: acked again, held once
    urgent = wire("BOX THIS LAP", asks=False, priority="urgent")
    inbox.receive(urgent)
    assert [m["id"] for m in inbox.pending()] == [urgent["id"], asked["id"]]
    refused = inbox.receive({**asked, "text": "x" * 41})
    assert not refused["ok"] and refused["error"]["field"] == "text"
    assert not inbox.receive({k: v for k, v in asked.items() if k != "session_id"})["ok"]

    assert inbox.mark_seen(asked["id"]) and not inbox.mark_seen(asked["id"])
    box.close()
    box = Outbox(tmp_path / "outbox.sqlite")  # a restart: the same inbox, the seen mark kept
    again = CarMessages(box)
    assert [(m["id"], m["seen"]) for m in again.pending()] == [(urgent["id"], False), (asked["id"], True)]
    assert again.receive(asked) == {"ok": True} and len(again.pending()) == 2
    assert again.answer(asked["id"], "yes") and not again.answer(asked["id"], "yes")
    assert not again.answer(str(uuid.uuid4()), "yes")
    reports = [e.payload for e in box.events() if e.event_type == REPORT_EVENT]
    assert [(r["state"], r.get("answer"), r["session_id"]) for r in reports] == \
        [("seen", None, "s-1"), ("answered", "yes", "s-1")]
    assert reports[0]["lat"] == 28.4
    again.receive(asked)  # after the answer: never held again
    again.receive({**urgent, "state": "closed"})  # the pit lane closed it: off the display
    assert again.pending() == []
    assert json.loads(box.get_meta(META_KEY))["inbox"]["held"] == []
    box.close()


def test_an_unreadable_stored_inbox_starts_empty(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.sqlite")
    box.set_meta(META_KEY, "{not json")
    assert CarMessages(box).pending() == []
    box.close()


@pytest.fixture
def short_dir():
    path = Path(tempfile.mkdtemp(prefix="inbox-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def ask(path: Path, *lines: bytes) -> list[dict]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        reader = sock.makefile("rb")
        answers = []
        for line in lines:
            sock.sendall(line)
            answers.append(json.loads(reader.readline()))
        return answers


def test_the_control_socket(tmp_path: Path, short_dir: Path) -> None:
    box = Outbox(tmp_path / "outbox.sqlite")
    inbox = CarMessages(box)
    asked = wire()
    inbox.receive(asked)
    control = InboxControl(short_dir / "inbox.sock", inbox)
    control.start()
    try:
        assert (short_dir / "inbox.sock").stat().st_mode & 0o777 == 0o600
        pending, bad_json, bad_op, no_id, wrong, answered = ask(
            short_dir / "inbox.sock", b'{"op": "pending"}\n', b"nope\n", b'{"op": "dance", "message_id": "x"}\n',
            b'{"op": "seen"}\n', json.dumps({"op": "answer", "message_id": asked["id"], "answer": "ok"}).encode()
            + b"\n", json.dumps({"op": "answer", "message_id": asked["id"], "answer": "no"}).encode() + b"\n")
        assert [m["id"] for m in pending["messages"]] == [asked["id"]]
        assert bad_json["error"]["field"] == "request" and bad_op["error"]["field"] == "op"
        assert no_id["error"]["field"] == "message_id"
        assert wrong["error"]["code"] == "message_state" and wrong["error"]["field"] == "answer"
        assert answered == {"ok": True, "applied": True}
        (too_long,) = ask(short_dir / "inbox.sock", b"x" * 5000 + b"\n")
        assert not too_long["ok"]
    finally:
        control.stop()
        box.close()
    assert not (short_dir / "inbox.sock").exists()


def test_an_expired_message_leaves_the_inbox(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.sqlite")
    now = [time.time()]
    inbox = CarMessages(box, clock=lambda: now[0])
    message = wire(asks=False)
    inbox.receive(message)
    assert len(inbox.pending()) == 1
    now[0] = message["expires_t"] + 1
    assert inbox.pending() == []
    assert json.loads(box.get_meta(META_KEY))["inbox"]["held"] == []
    box.close()
