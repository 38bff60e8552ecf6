"""The driver display's requests, answered: pure but for the inbox and the timing it reads and acts on.

``GET /``                              the page
``GET /static/<file>``                 its script and style (a fixed list: nothing else on disk is reachable)
``GET /api/state``                     what the page shows: the car's timing, the pit's messages, the links
``POST /api/messages/<id>/seen``       the page showed the message → ``{"ok": true, "applied": bool}``
``POST /api/messages/<id>/answer``     ``{"answer": "yes"|"no"|"ok"}`` → ``{"ok": true, "applied": bool}``

``applied`` is false for a repeat (the message was seen or answered already) or a message the car
no longer holds. A bad request is answered ``{"error": {"code", "message", "field"}}`` with a 4xx
status; POSTs must be ``application/json`` (a page of another site cannot send that without a
preflight this server never grants).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Callable, Protocol

from dashboard.errors import (
    DashboardError,
    InvalidInput,
    MalformedRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from dashboard.telemetry.messages import Message

MAX_BODY = 1024  # an answer is a dozen bytes
MESSAGE_ID = re.compile(r"[0-9A-Fa-f-]{1,64}")  # a UUID, as the server makes them
ASSETS = {  # name -> content type: the only files served
    "index.html": "text/html; charset=utf-8",
    "display.js": "text/javascript; charset=utf-8",
    "display.css": "text/css; charset=utf-8",
}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
ACTION_PATH = re.compile(r"/api/messages/([^/]+)/(seen|answer)")


class Inbox(Protocol):
    """What the display needs of ``car.messages.CarMessages``."""

    def pending(self) -> list[dict[str, Any]]: ...
    def mark_seen(self, message_id: str) -> bool: ...
    def answer(self, message_id: str, value: str) -> bool: ...


@dataclass
class Reply:
    """A response: status, body bytes and headers."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def json_reply(status: int, payload: Any) -> Reply:
    """A JSON response, never cached."""
    return Reply(status, json.dumps(payload).encode(), {"Content-Type": "application/json",
                                                      "Cache-Control": "no-store", **SECURITY_HEADERS})


def error_reply(exc: DashboardError) -> Reply:
    """The project's error body for ``exc``, with its status."""
    return json_reply(exc.status, {"error": exc.to_dict()})


def asset(name: str) -> Reply:
    """One of the page's files, read from the package (a wheel install has them)."""
    body = resources.files("dashboard.car.display").joinpath("static", name).read_bytes()
    return Reply(200, body, {"Content-Type": ASSETS[name], "Cache-Control": "no-cache", **SECURITY_HEADERS})


def with_answers(message: dict[str, Any]) -> dict[str, Any]:
    """A pending message with the answers it takes (yes/no, ok, or none: a box call closes in the pit lane)."""
    fields = {k: v for k, v in message.items() if k != "seen"}
    return {**message, "answers": list(Message.from_dict(fields).answers())}


class Routes:
    """Answers the display's requests from the car's inbox, its timing and its links."""

    def __init__(self, inbox: Inbox, timing: Callable[[], dict[str, Any]],
                 links: Callable[[], dict[str, Any]], clock: Callable[[], float]) -> None:
        self.inbox = inbox
        self.timing = timing
        self.links = links
        self.clock = clock

    def state(self) -> dict[str, Any]:
        """Everything the page shows, in one poll."""
        return {"t": self.clock(), "timing": self.timing(), "links": self.links(),
                "messages": [with_answers(m) for m in self.inbox.pending()]}

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes | None) -> Reply:
        """One request's response; a DashboardError becomes its JSON error."""
        try:
            return self._route(method, path.split("?", 1)[0], {k.lower(): v for k, v in headers.items()}, body)
        except DashboardError as exc:
            return error_reply(exc)

    def _route(self, method: str, path: str, headers: dict[str, str], body: bytes | None) -> Reply:
        if path in ("/", "/index.html"):
            _only(method, "GET")
            return asset("index.html")
        if path.startswith("/static/"):
            name = path[len("/static/"):]
            if name not in ASSETS or name == "index.html":
                raise NotFound(f"no file {name!r}", field="path")
            _only(method, "GET")
            return asset(name)
        if path == "/api/state":
            _only(method, "GET")
            return json_reply(200, self.state())
        action = ACTION_PATH.fullmatch(path)
        if action is None:
            raise NotFound(f"no page {path!r}", field="path")
        _only(method, "POST")
        message_id, verb = action.groups()
        if not MESSAGE_ID.fullmatch(message_id):
            raise InvalidInput("message_id must be the message's UUID", field="message_id")
        request = _json_body(headers, body)
        if verb == "seen":
            return json_reply(200, {"ok": True, "applied": self.inbox.mark_seen(message_id)})
        answer = request.get("answer")
        if not isinstance(answer, str):
            raise InvalidInput("answer must be one of yes, no, ok", field="answer")
        return json_reply(200, {"ok": True, "applied": self.inbox.answer(message_id, answer)})


def _only(method: str, allowed: str) -> None:
    if method != allowed:
        raise MethodNotAllowed(f"{method} is not allowed here; {allowed} is", field="method")


def _json_body(headers: dict[str, str], body: bytes | None) -> dict[str, Any]:
    kind = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind != "application/json":
        raise UnsupportedMediaType("the body must be application/json", field="content-type")
    if body is None:
        raise MalformedRequest("a JSON body is needed (Content-Length)", field="body")
    if len(body) > MAX_BODY:
        raise PayloadTooLarge(f"the body is over {MAX_BODY} bytes", field="body")
    if not body.strip():
        return {}
    try:
        request = json.loads(body)
    except ValueError:
        raise MalformedRequest("the body is not JSON", field="body") from None
    if not isinstance(request, dict):
        raise MalformedRequest("the body must be a JSON object", field="body")
    return request
