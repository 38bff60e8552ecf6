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
from socketio import packet

JSONDecodeError = orjson.JSONDecodeError


def dumps(obj: Any, **_options: Any) -> str:
    """JSON text of ``obj`` (the standard library's options, such as separators, are the compact default)."""
    return orjson.dumps(obj).decode()


def loads(text: str | bytes, **_options: Any) -> Any:
    """The value of JSON ``text``; ValueError (orjson.JSONDecodeError) if it is not JSON."""
    return orjson.loads(text)


class TextPacket(packet.Packet):
    """Socket.IO packets that never carry binary attachments: no walk over every value to look for bytes.

    python-socketio checks each outgoing message for ``bytes`` anywhere inside it, a recursive pass over
    every frame and channel of a telemetry message (~7 % of the server's time with 200 cars). Nothing
    this server sends is binary; the protocol's binary packets are still decoded if a client sends one.
    """

    uses_binary_events = False
    json = sys.modules[__name__]  # this module's dumps and loads (the server is also given them: json=)
