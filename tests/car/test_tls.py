"""The car's monitor and the pit gateway verify the server's certificate.

A real TLS server on loopback (a TLS-terminating proxy in front of the test server, as Caddy or nginx
would be, with a self-signed certificate made by ``openssl``): the link refuses it with the system's
CAs, and talks to it once given the certificate as its CA bundle (``--ca-cert``).
"""
from __future__ import annotations

import re
import socket
import ssl
import subprocess
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest
import socketio

from dashboard.car.cli import add_commands
from dashboard.car.link import ServerLink
from dashboard.car.settings import load_settings
from tests.servers import REPO
from tests.waiting import wait_for

CONNECT_S = 5.0
TRUSTED_CONNECT_S = 20.0  # what is tested is that the link is accepted, not how fast: loaded CI once took >5 s


class TlsProxy:
    """TLS on a loopback port, relayed in the clear to ``upstream`` with ``X-Forwarded-Proto: https`` added to
    each connection's request (WebSocket connections make one); counts handshakes accepted and refused."""

    def __init__(self, cert: Path, key: Path, upstream: tuple[str, int]) -> None:
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(cert, key)
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"https://127.0.0.1:{self.listener.getsockname()[1]}"
        self.refused = 0
        self.accepted = 0
        self._closing = threading.Event()

    def start(self) -> "TlsProxy":
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def stop(self) -> None:
        self._closing.set()
        self.listener.close()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        raw.settimeout(CONNECT_S)
        try:
            client = self.context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):  # the client refused our certificate
            self.refused += 1
            raw.close()
            return
        self.accepted += 1
        server = socket.create_connection(self.upstream)
        head = b""
        try:
            while b"\r\n\r\n" not in head and len(head) < 65536:
                chunk = client.recv(4096)
                if not chunk:
                    break
                head += chunk
        except OSError:
            pass
        client.settimeout(None)
        # as Caddy and nginx (told to) do: the server learns the client spoke https (Engine.IO's origin check)
        request_line, sep, rest = head.partition(b"\r\n")
        server.sendall(request_line + sep + b"X-Forwarded-Proto: https\r\n" + rest)
        threading.Thread(target=self._pump, args=(server, client), daemon=True).start()
        self._pump(client, server)

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


@pytest.fixture
def tls_server(live_server: Any, tmp_path: Path) -> Iterator[tuple[TlsProxy, Path]]:
    """The live server behind TLS with a self-signed certificate for 127.0.0.1; yields the proxy and the cert."""
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True, timeout=60)
    proxy = TlsProxy(cert, key, ("127.0.0.1", live_server.port)).start()
    yield proxy, cert
    proxy.stop()


def test_a_self_signed_server_is_refused_without_its_ca_and_accepted_with_it(live_server, tls_server):
    proxy, cert = tls_server
    auth = {"car_id": "TLS-1", "api_key": live_server.api_key}
    refused = ServerLink(proxy.url, connect_timeout=CONNECT_S)
    with pytest.raises(socketio.exceptions.ConnectionError):
        refused.connect(auth)
    refused.close()
    # the proxy's handshake thread sees the client's refusal a moment after the client gave up: wait for it
    wait_for(lambda: proxy.refused >= 1, CONNECT_S, "the proxy to see its certificate refused")
    assert proxy.refused >= 1 and proxy.accepted == 0

    trusted = ServerLink(proxy.url, connect_timeout=TRUSTED_CONNECT_S, ca_cert=cert)  # --ca-cert FILE
    try:
        trusted.connect(auth)
        session = trusted.call("session.start", {})["session"]
        assert session["car_id"] == "TLS-1" and session["status"] == "active"
    finally:
        trusted.close()
    assert proxy.accepted >= 1


def test_ca_cert_reaches_the_settings_of_monitor_simulate_and_gateway(tmp_path):
    import argparse

    from dashboard.car import mesh_cli

    parser = argparse.ArgumentParser(prog="dashboard")
    sub = parser.add_subparsers(dest="command", required=True)
    add_commands(sub)
    mesh_cli.add_commands(sub)
    for argv in (["monitor"], ["simulate", "--server", "https://pit"], ["mesh-gateway", "--device", "/dev/x",
                                                                         "--server", "https://pit"]):
        args = parser.parse_args([*argv, "--ca-cert", str(tmp_path / "ca.pem")])
        assert load_settings(args.config, ca_cert=args.ca_cert).ca_cert == tmp_path / "ca.pem"


def test_nothing_turns_certificate_verification_off():
    """python-socketio's client verifies by default; no code of ours may say otherwise."""
    off = re.compile(r"ssl_verify\s*=\s*False|CERT_NONE|verify\s*=\s*False|check_hostname\s*=\s*False")
    offenders = [str(p.relative_to(REPO)) for p in (REPO / "dashboard").rglob("*.py") if off.search(p.read_text())]
    assert offenders == []
