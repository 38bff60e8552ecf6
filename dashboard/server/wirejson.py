"""The JSON of Socket.IO packets: orjson, the module python-socketio is given (``json=``), and its packet class.

The standard library's encoder builds a Python string per key and number before joining them:
a join snapshot of 1,200 frames made ~50,000 short-lived objects, and interleaved with the
few long-lived ones a server keeps creating, they left the allocator's arenas pinned (RSS grew
~20 MB opening 1,000 past sessions, then stayed). orjson writes one buffer in one C pass. It
is also strict where the wire must be: no NaN or Infinity in (a NaN out is written as null),
and integers beyond 64 bits refused.
"""
from __future__ import annotations

import sys
from typing import Any

import orjson
from flask.json.provider import JSONProvider
from socketio import packet

JSONDecodeError = orjson.JSONDecodeError


def dumps(obj: Any, **_options: Any) -> str:
    """JSON text of ``obj`` (the standard library's options, such as separators, are the compact default)."""
    return orjson.dumps(obj).decode()


def loads(text: str | bytes, **_options: Any) -> Any:
    """The value of JSON ``text``; ValueError (orjson.JSONDecodeError) if it is not JSON."""
    return orjson.loads(text)


MALFORMED_EVENT = "\x00malformed"  # what an event that could not be read is dispatched as (no client can name it)
RESERVED_EVENTS = frozenset({"connect", "disconnect", "connect_error"})  # the protocol's own, never a client's


class TextPacket(packet.Packet):
    """Socket.IO packets that never carry binary attachments, and events that always reach a handler.

    python-socketio checks each outgoing message for ``bytes`` anywhere inside it, a recursive pass over
    every frame and channel of a telemetry message (~7 % of the server's time with 200 cars). Nothing
    this server sends is binary; the protocol's binary packets are still decoded if a client sends one.

    An event whose payload is not JSON, not ``[name, ...]`` with a text name, or that takes one of the
    protocol's reserved names (a client emitting ``connect`` re-ran the connect handler: the viewer gauge
    went to -100), is dispatched as :data:`MALFORMED_EVENT`, so its sender gets an error ack instead of
    silence, and the reserved handlers run only for the protocol's own packets.
    """

    uses_binary_events = False
    json = sys.modules[__name__]  # this module's dumps and loads (the server is also given them: json=)

    def decode(self, encoded_packet: Any) -> int:
        try:
            attachments = super().decode(encoded_packet)
        except ValueError as exc:  # the JSON part (type, namespace and id are read first)
            if self.packet_type != packet.EVENT:
                raise
            self.data = [MALFORMED_EVENT, f"the message is not JSON: {exc}"]
            return 0
        if self.packet_type == packet.EVENT:
            data = self.data
            if not isinstance(data, list) or not data or not isinstance(data[0], str):
                self.data = [MALFORMED_EVENT, "an event is a JSON array starting with its name"]
            elif data[0] in RESERVED_EVENTS or data[0] == MALFORMED_EVENT:
                self.data = [MALFORMED_EVENT, f"{data[0]!r} is a reserved event name"]
        return attachments


class FlaskJSON(JSONProvider):
    """Flask's JSON through orjson: every answer is JSON as the standard says (a NaN is written as null)."""

    def dumps(self, obj: Any, **_options: Any) -> str:
        return orjson.dumps(obj).decode()

    def loads(self, s: str | bytes, **_options: Any) -> Any:
        return orjson.loads(s)

    def response(self, *args: Any, **kwargs: Any) -> Any:
        obj = self._prepare_response_obj(args, kwargs)
        return self._app.response_class(orjson.dumps(obj), mimetype="application/json")
