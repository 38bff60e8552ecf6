"""The single frame writer: every frame reaches the database through one queue and one worker.

Handlers submit a session's accepted frames and get a ticket; the worker
drains whatever is queued (up to ``batch_max`` frames) into one transaction
and then settles every ticket of that transaction. A monitor's batch is
acknowledged only when its ticket says committed. (Datasette's single-writer
pattern; under gevent the worker is a greenlet, in tests a thread.)
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Callable

from dashboard.server.store import FrameWrite, Store

log = logging.getLogger(__name__)

RETRY_DELAYS_S = (0.05, 0.2, 1.0)  # a locked or briefly unreachable database gets three more tries


class Ticket:
    """Settled when the frames it stands for are committed (or failed to be)."""

    def __init__(self, write: FrameWrite) -> None:
        self.write = write
        self.error: BaseException | None = None
        self.on_settled: list[Callable[["Ticket"], None]] = []
        self._done = threading.Event()

    def settle(self, error: BaseException | None = None) -> None:
        """Mark committed (error None) or failed, and tell whoever asked."""
        self.error = error
        for callback in self.on_settled:
            try:
                callback(self)
            except Exception:  # noqa: BLE001 - a callback must not stop the writer
                log.exception("ticket callback failed")
        self._done.set()

    def wait(self, timeout: float | None = None) -> bool:
        """True when committed within ``timeout``; False on failure or timeout."""
        return self._done.wait(timeout) and self.error is None


class FrameWriter:
    """One worker writing queued frames in batched transactions."""

    def __init__(self, store: Store, batch_max: int = 2000,
                 on_batch: Callable[[int, float], None] | None = None) -> None:
        self.store = store
        self.batch_max = batch_max
        self.on_batch = on_batch  # called with (frames written, seconds taken), for metrics
        self._queue: queue.Queue[Ticket | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start the worker (safe to call twice)."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="frame-writer", daemon=True)
                self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop the worker (safe to call twice)."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout)

    def submit(self, write: FrameWrite, on_settled: Callable[[Ticket], None] | None = None) -> Ticket:
        """Queue a session's frames for writing; wait on the ticket for the commit."""
        ticket = Ticket(write)
        if on_settled is not None:
            ticket.on_settled.append(on_settled)
        self._queue.put(ticket)
        return ticket

    @property
    def backlog(self) -> int:
        """Tickets waiting to be written."""
        return self._queue.qsize()

    def _take_batch(self, first: Ticket) -> tuple[list[Ticket], bool]:
        batch, count, stopping = [first], len(first.write.rows), False
        while count < self.batch_max:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                stopping = True
                break
            batch.append(item)
            count += len(item.write.rows)
        return batch, stopping

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch, stopping = self._take_batch(first)
            self._commit(batch)
            if stopping:
                return

    def _commit(self, batch: list[Ticket]) -> None:
        """Write the batch in one transaction; if that fails, each ticket alone, with retries."""
        if self._write([t.write for t in batch]) is None:
            for ticket in batch:
                ticket.settle()
            return
        for ticket in batch:  # isolate the bad one: the others still commit
            error = self._write([ticket.write])
            for delay in RETRY_DELAYS_S:
                if error is None:
                    break
                time.sleep(delay)
                error = self._write([ticket.write])
            if error is not None:
                log.error("frames of session %s not written: %s", ticket.write.session_id, error)
            ticket.settle(error)

    def _write(self, writes: list[FrameWrite]) -> BaseException | None:
        started = time.perf_counter()
        try:
            self.store.write_frames(writes)
        except Exception as exc:  # noqa: BLE001 - reported on the tickets, never kills the writer
            log.warning("frame write of %d sessions failed: %s", len(writes), exc)
            return exc
        if self.on_batch is not None:
            self.on_batch(sum(len(w.rows) for w in writes), time.perf_counter() - started)
        return None
