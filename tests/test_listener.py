"""The server's listening socket: a taken port, a bad address or port is one clear line (ListenError)."""
from __future__ import annotations

import argparse
import socket

import pytest

from dashboard.listener import ListenError, bound_port, open_listener, port_number


def test_port_zero_takes_a_free_port_that_answers() -> None:
    listener = open_listener("127.0.0.1", 0)
    try:
        port = bound_port(listener)
        assert port > 0
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # listening: the kernel completes the handshake before any accept
    finally:
        listener.close()


def test_a_taken_port_names_the_port_and_the_option() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        with pytest.raises(ListenError) as refused:
            open_listener("127.0.0.1", port)
    text = str(refused.value)
    assert f"port {port} on 127.0.0.1 is taken" in text and "--port" in text and "\n" not in text


@pytest.mark.parametrize("host", ["999.1.1.1", "10.255.255.254"])  # not an address; not one of this machine's
def test_an_address_not_of_this_machine_says_so(host: str) -> None:
    with pytest.raises(ListenError) as refused:
        open_listener(host, 0)
    assert host in str(refused.value) and "--host" in str(refused.value)


def test_port_numbers() -> None:
    assert port_number("0") == 0 and port_number("65535") == 65535
    for bad in ("-1", "65536", "abc", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            port_number(bad)
