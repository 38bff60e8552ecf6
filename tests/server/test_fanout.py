"""The direct fan-out: frames are framed once, written straight to sockets, and a stuck viewer is cut off."""
from __future__ import annotations

import json
import socket
import uuid

import pytest
import websocket
from wsproto.frame_protocol import FrameProtocol, Opcode

from dashboard.server.fanout import text_frame
from tests.clients import Viewer, connect_monitor, make_frames, metric
from tests.server.test_hub import send, start_session
from tests.waiting import wait_for


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 70000])
def test_text_frame_is_what_a_websocket_client_decodes(size):
    client = FrameProtocol(client=True, extensions=[])  # wsproto's frame parser, as a client sees the server
    text = "é" * (size // 2) + "x" * (size % 2)
    client.receive_bytes(text_frame(text) + text_frame(b"\x00\x01" * size))
    frames = list(client.received_frames())
    assert [(f.opcode, f.message_finished) for f in frames] == [(Opcode.TEXT, True), (Opcode.BINARY, True)]
    assert frames[0].payload == text
    assert frames[1].payload == b"\x00\x01" * size


class StuckViewer:
    """A viewer that joins through the raw protocol with a tiny receive buffer, then never reads again."""

    def __init__(self, url: str, session_id: str) -> None:
        ws_url = url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
        self.ws = websocket.create_connection(ws_url, timeout=10,
                                              sockopt=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)])
        assert self.ws.recv().startswith("0")  # Engine.IO open
        self.ws.send("40/dashboard,")
        assert self.ws.recv().startswith("40/dashboard,")
        self.ws.send("42/dashboard,1" + json.dumps(["join", {"session_id": session_id}]))
        while not (reply := self.ws.recv()).startswith("43/dashboard,1"):
            pass
        assert json.loads(reply[len("43/dashboard,1"):])[0]["ok"]

    def cut_off(self) -> bool:
        """Whether the server closed the connection (reads what is buffered until EOF)."""
        self.ws.sock.settimeout(0.2)
        try:
            while self.ws.sock.recv(65536):
                pass
            return True
        except TimeoutError:
            return False
        except OSError:
            return True


def test_a_viewer_that_stops_reading_is_cut_off_and_the_others_get_everything(server_factory):
    server = server_factory(slow_viewer_s="2")
    car_id = f"CAR-{uuid.uuid4().hex[:8]}"
    monitor = connect_monitor(server.url, car_id, server.api_key)
    session_id = start_session(monitor)
    viewer = Viewer(server.url)
    stuck = None
    try:
        assert viewer.join(session_id)["ok"]
        stuck = StuckViewer(server.url, session_id)
        assert metric(server.url, "dashboard_viewers_connected") == 2
        sent: list[int] = []
        # ~170 kB per batch, until the stuck viewer's buffers (the server's send buffer grows to a few MB) are
        # full and a write stays unfinished for slow_viewer_s; 300 batches (~50 MB) is far more than needed
        while metric(server.url, "dashboard_fanout_slow_viewers_total") == 0:
            assert len(sent) < 300_000, "the stuck viewer was never cut off"
            batch = make_frames(len(sent), 1000, hz=1000.0)  # sample times stay near now however many
            assert send(monitor, session_id, batch)["ok"]
            sent.extend(f["seq"] for f in batch)
        assert viewer.wait_frames(len(sent), timeout=30) == sent
        wait_for(lambda: metric(server.url, "dashboard_viewers_connected") == 1, 15, "stuck viewer disconnected")
        wait_for(stuck.cut_off, 10, "the stuck viewer's connection closed by the server")
        assert metric(server.url, "dashboard_fanout_direct_total") > 0
        # the session goes on for the viewer that reads
        assert send(monitor, session_id, make_frames(len(sent), 10, hz=1000.0))["ok"]
        assert viewer.wait_frames(len(sent) + 10)[-1] == len(sent) + 9
    finally:
        monitor.disconnect()
        viewer.close()
        if stuck is not None:
            stuck.ws.close()


def test_a_direct_write_never_overtakes_a_packet_the_writer_took_from_the_queue():
    """The gap CI hit: the Engine.IO writer took packet A from the queue and waits for the connection's lock;
    the lock is released by another greenlet (the end of a partial direct write) and looks free until the
    writer runs. A direct write of B in that gap must go through the queue, behind A."""
    from types import SimpleNamespace

    import gevent
    import gevent.lock
    import gevent.queue
    import gevent.socket

    from dashboard.server.fanout import DirectWebSocket, Fanout

    ours, peer = gevent.socket.socketpair()
    try:
        ws = object.__new__(type("Bound", (DirectWebSocket,), {"fanout": Fanout()}))
        ws.lock = gevent.lock.Semaphore()
        ws.writers = 0
        ws.raw = ours
        ws.ws = SimpleNamespace(connected=True)
        ws.eio_socket = SimpleNamespace(closed=False, upgraded=True, queue=gevent.queue.Queue(), sid="viewer")

        ws.lock.acquire()  # a partial direct write is being finished
        writer = gevent.spawn(ws.send, "A")  # the writer greenlet with A taken from the queue
        gevent.sleep(0)  # it runs, and waits for the lock
        assert ws.writers == 1 and not writer.dead
        ws.lock.release()  # the partial write is done; the writer has not run yet
        took_b = ws.try_direct(text_frame("B"))
        writer.join(5)
        assert writer.successful()
        assert not took_b, "B was written directly while A waited for the lock"
        peer.settimeout(5)
        assert peer.recv(64) == text_frame("A")
        assert ws.writers == 0 and ws.try_direct(text_frame("C"))  # idle again: the direct path is back
        assert peer.recv(64) == text_frame("C")
    finally:
        ours.close()
        peer.close()
