"""The server's listening socket, bound before anything else happens, so a taken port is one clear line.

``dashboard serve`` and ``dashboard demo`` bind their port first: before the database is migrated, a
demo session attached or a companion started. A port that is taken (or not ours to take) answers
``ListenError`` with one line naming the address and the way out (``--port``), never a traceback,
and nothing is printed as if the server were up. Port 0 takes any free port; the one the system
chose is then the one printed.
"""
from __future__ import annotations

import argparse
import errno
import socket

BACKLOG = 1024  # connections the kernel holds until accepted (gevent's default, 256, is short for a reconnect wave)


class ListenError(Exception):
    """The server cannot listen where it was asked to; ``str()`` is the one line to print."""


def port_number(text: str) -> int:
    """``--port``: a TCP port, 0..65535 (0: any free one); argparse's one-line error otherwise."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0..65535 (0: any free one), not {port}")
    return port


def open_listener(host: str, port: int, option: str = "--port") -> socket.socket:
    """A listening TCP socket on ``host:port`` (``SO_REUSEADDR``, as gevent's servers bind); ListenError if not."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET  # as gevent's servers read an address
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM,
                                                      flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError) as exc:
        raise ListenError(f"cannot listen on {host}: not an address of this machine ({exc}); "
                          "choose another with --host") from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ListenError(f"port {port} on {host} is taken (another server or demo is listening there): "
                              f"choose another with {option} PORT ({option} 0 picks a free one)") from None
        if exc.errno == errno.EACCES:
            raise ListenError(f"port {port} on {host} needs privileges this user does not have: "
                              f"choose one above 1023 with {option} PORT") from None
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; "
                          f"choose another address with --host or {option} PORT") from None
    return sock


def bound_port(sock: socket.socket) -> int:
    """The port a listener holds (the one the system chose for port 0)."""
    return int(sock.getsockname()[1])
