"""The single writer: every write reaches the database through one queue, one connection, one native thread.

Datasette's pattern. Whoever needs a write queues a job: the frames of a telemetry batch, a status
change, a setup, a lap, an alert, an entry of the event log. One writer loop takes everything queued
(up to ``batch_max`` frames) and runs it as ONE transaction on its own connection, in queue order:
consecutive frame writes become one ``executemany``; every other job runs in a SAVEPOINT, so a job the
database refuses (a record_id seen before, a second active session for a car) fails alone. Then each
job's :class:`Ticket` is settled with its result or error and its callbacks run, in queue order, so
what one session wrote is told in the order it was written.

The writer is its own native thread, blocking on a C-level queue: a commit never holds the event loop
the cars share, and while it commits, the loop goes on queueing the next batch (under gevent the
outcomes come back through a loop watcher to a settler greenlet). Without gevent it is a plain thread.

When the transaction fails as a whole: a database that is locked, full or unreachable
(``OperationalError``) fails every job of the batch someone waits for with :class:`Unavailable` (a REST
503 with ``Retry-After``, a retryable ack to monitors: they send again), and so are, at once, the jobs
queued meanwhile: each would otherwise wait another whole busy timeout behind the first (a car's ack
waited 10 s under a 10 s lock, the uplink's limit). Background jobs, which nobody waits for and nobody
would send again (laps, alerts, the event log), are kept and retried in order, every ``KEPT_RETRY_S``,
until the database takes them. Any other error is isolated by running each job alone, so one bad job
never costs the others.
"""
from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from typing import Any, Callable

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from dashboard.errors import DashboardError, Unavailable
from dashboard.server.blocking import gevent_patched, native_queue
from dashboard.server.store import FrameWrite, Store

log = logging.getLogger(__name__)

CALL_TIMEOUT_S = 30.0  # a write someone waits for (a status change, a setup) fails with 503 after this
RETRY_AFTER_S = 2.0  # what a client is told to wait when the database could not take a write
KEPT_RETRY_S = 1.0  # background jobs the database refused are tried again this often (a full disk refuses at once)
KEPT_MAX = 50_000  # background jobs kept while the database refuses them; beyond, the oldest fail (logged)
Job = Callable[[Connection], Any]


class Ticket:
    """Settled when the job it stands for is committed (or failed to be)."""

    __slots__ = ("job", "background", "result", "error", "on_settled", "queued_at", "_done")

    def __init__(self, job: FrameWrite | Job, background: bool = False) -> None:
        self.job = job
        self.background = background  # nobody waits for it: kept and retried while the database refuses it
        self.result: Any = None
        self.error: BaseException | None = None
        self.on_settled: list[Callable[["Ticket"], None]] = []
        self.queued_at = time.monotonic()
        self._done = threading.Event()

    @property
    def done(self) -> bool:
        """True once settled."""
        return self._done.is_set()

    def settle(self, result: Any = None, error: BaseException | None = None) -> None:
        """Record the outcome, run the callbacks (in the writer's loop), then wake whoever waits."""
        self.result, self.error = result, error
        for callback in self.on_settled:
            try:
                callback(self)
            except Exception:  # noqa: BLE001 - a callback must not stop the writer
                log.exception("ticket callback failed")
        self._done.set()

    def wait(self, timeout: float | None = None) -> bool:
        """True when committed within ``timeout``; False on failure or timeout."""
        return self._done.wait(timeout) and self.error is None

    def get(self, timeout: float = CALL_TIMEOUT_S) -> Any:
        """The job's result; its error raised; Unavailable when not settled within ``timeout``."""
        if not self._done.wait(timeout):
            raise Unavailable("the database did not take the write in time", retry_after=RETRY_AFTER_S)
        if self.error is not None:
            raise self.error
        return self.result


class Writer:
    """One native thread writing queued jobs in batched transactions on one connection."""

    def __init__(self, store: Store, batch_max: int = 2000,
                 on_batch: Callable[[int, float], None] | None = None) -> None:
        self.store = store
        self.batch_max = batch_max
        self.on_batch = on_batch  # called with (frames written, seconds taken), for metrics
        self.commits = 0
        self.failures = 0
        self.failed_at: float | None = None  # monotonic time of the latest failed transaction
        self.busy_since: float | None = None  # monotonic start of the transaction under way, None when idle
        self._jobs: queue.SimpleQueue[Ticket | None] = native_queue()  # the writer's native thread blocks on it
        self._lock = threading.Lock()
        self._handoff = _Handoff()
        self._running = False
        self._conn: Connection | None = None

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start the writer thread (safe to call twice)."""
        with self._lock:
            if not self._running:
                self._running = True
                self._handoff.start(self._write_forever)

    def stop(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop (safe to call twice)."""
        with self._lock:
            running, self._running = self._running, False
        if running:
            self._jobs.put(None)
            self._handoff.join(timeout)

    # -------------------------------------------------------------- queueing
    def frames(self, write: FrameWrite, on_settled: Callable[[Ticket], None] | None = None) -> Ticket:
        """Queue a session's frames; wait on the ticket for the commit."""
        return self._put(Ticket(write), on_settled)

    def submit(self, job: Job, on_settled: Callable[[Ticket], None] | None = None, *,
               background: bool = False) -> Ticket:
        """Queue ``job(connection)``; its return value is the ticket's result.

        ``background``: nobody waits for the job and nobody would send it again, so while the database
        is locked, full or unreachable it is kept and retried rather than failed.
        """
        return self._put(Ticket(job, background), on_settled)

    def call(self, job: Job, timeout: float = CALL_TIMEOUT_S) -> Any:
        """Queue ``job`` and wait for its result (never call while holding a lock its callbacks need)."""
        return self.submit(job).get(timeout)

    def barrier(self, timeout: float = CALL_TIMEOUT_S) -> None:
        """Wait until everything queued so far is committed (read your own writes)."""
        self.call(_nothing, timeout)

    def _put(self, ticket: Ticket, on_settled: Callable[[Ticket], None] | None) -> Ticket:
        if on_settled is not None:
            ticket.on_settled.append(on_settled)
        self._jobs.put(ticket)
        return ticket

    @property
    def backlog(self) -> int:
        """Jobs waiting to be written."""
        return self._jobs.qsize()

    @property
    def busy_s(self) -> float:
        """How long the transaction under way has taken so far (0 when idle): long means locked or stuck."""
        since = self.busy_since
        return 0.0 if since is None else time.monotonic() - since

    # ------------------------------------------------ the writer's own thread
    def _write_forever(self) -> None:
        """Take everything queued (up to batch_max frames), commit it, hand the outcomes over; until stopped."""
        ahead: collections.deque[Ticket] = collections.deque()  # taken from the queue, to write before it
        stopping = False
        try:
            while True:
                if ahead:
                    first = ahead.popleft()
                elif stopping:
                    return
                else:
                    first = self._jobs.get()
                    if first is None:
                        return
                batch, stop_now = self._take_batch(first, ahead)
                stopping = stopping or stop_now
                outcomes = self._commit(batch)
                error = _refused_whole(outcomes)
                if error is None or stopping:
                    self._handoff.settle(batch, outcomes)
                    continue
                stopping = self._refuse_waiting(batch, error, ahead)
                if ahead and not stopping:
                    stopping = self._pause(ahead)
        finally:
            self._close_connection()

    def _refuse_waiting(self, batch: list[Ticket], error: Unavailable, ahead: collections.deque[Ticket]) -> bool:
        """The database refused a whole batch: fail what someone waits for, now and queued; keep the background.

        True when the stop sentinel was met in the queue.
        """
        queued: list[Ticket] = []
        stopping = self._take_queued(queued)  # they would each wait as long again: fail them now
        batch = [*batch, *ahead, *queued]  # in queue order
        ahead.clear()
        failed = [t for t in batch if not t.background]
        ahead.extend(t for t in batch if t.background)
        while len(ahead) > KEPT_MAX:
            failed.append(ahead.popleft())
            log.error("background write dropped: %d kept while the database refuses writes", KEPT_MAX)
        self._handoff.settle(failed, [(None, error)] * len(failed))
        return stopping

    def _pause(self, ahead: collections.deque[Ticket]) -> bool:
        """Wait before retrying kept jobs (a full disk refuses at once); a job queued meanwhile ends the wait.

        True when the stop sentinel came.
        """
        try:
            item = self._jobs.get(timeout=KEPT_RETRY_S)
        except queue.Empty:
            return False
        if item is None:
            return True
        ahead.append(item)
        return False

    def _take_batch(self, first: Ticket, ahead: collections.deque[Ticket] | None = None) -> tuple[list[Ticket], bool]:
        batch, count = [first], _frames(first)
        while ahead and count < self.batch_max:
            item = ahead.popleft()
            batch.append(item)
            count += _frames(item)
        return batch, self._take_queued(batch, count, self.batch_max)

    def _take_queued(self, into: list[Ticket], frames: int = 0, limit: float = float("inf")) -> bool:
        """Move what is queued into ``into`` without waiting, while its frames stay under ``limit``.

        True when the stop sentinel was met.
        """
        while frames < limit:
            try:
                item = self._jobs.get_nowait()
            except queue.Empty:
                return False
            if item is None:
                return True
            into.append(item)
            frames += _frames(item)
        return False

    def _commit(self, batch: list[Ticket]) -> list[tuple[Any, BaseException | None]]:
        started = time.perf_counter()
        self.busy_since = time.monotonic()
        try:
            outcomes = self._transaction(batch)
        except (OperationalError, Unavailable) as exc:  # locked, full or unreachable: all try again later
            self.failures += 1
            self.failed_at = time.monotonic()
            error = unavailable(exc)
            log.warning("write of %d jobs failed: %s", len(batch), error.message)
            return [(None, error)] * len(batch)
        except Exception as exc:  # noqa: BLE001 - one bad job: isolate it, the others still commit
            self.failures += 1
            self.failed_at = time.monotonic()
            log.warning("write of %d jobs failed (%s); writing each alone", len(batch), exc)
            return [self._commit_alone(ticket) for ticket in batch]
        finally:
            self.busy_since = None
        self.commits += 1
        if self.on_batch is not None:
            self.on_batch(sum(_frames(t) for t in batch), time.perf_counter() - started)
        return outcomes

    def _commit_alone(self, ticket: Ticket) -> tuple[Any, BaseException | None]:
        try:
            result, error = self._transaction([ticket])[0]
        except (OperationalError, Unavailable) as exc:
            result, error = None, unavailable(exc)
        except Exception as exc:  # noqa: BLE001 - reported on the ticket, never kills the writer
            result, error = None, exc
        if error is not None and isinstance(ticket.job, FrameWrite):
            log.error("frames of session %s not written: %s", ticket.job.session_id, error)
        return result, error

    def _connection(self) -> Connection:
        if self._conn is None or self._conn.closed or self._conn.invalidated:
            self._conn = self.store.writer_connection()
        return self._conn

    def _close_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _transaction(self, batch: list[Ticket]) -> list[tuple[Any, BaseException | None]]:
        """Run the batch's jobs in one transaction; (result, error) per job. Raises if the transaction fails."""
        conn = self._connection()
        outcomes: list[tuple[Any, BaseException | None]] = []
        try:
            with conn.begin():
                i = 0
                while i < len(batch):
                    job = batch[i].job
                    if isinstance(job, FrameWrite):
                        j = i
                        while j < len(batch) and isinstance(batch[j].job, FrameWrite):
                            j += 1
                        self.store.write_frames([t.job for t in batch[i:j]], conn)  # type: ignore[misc]
                        outcomes += [(None, None)] * (j - i)
                        i = j
                        continue
                    try:
                        with conn.begin_nested():
                            outcomes.append((job(conn), None))
                    except Unavailable:  # the database, not the job: the whole batch fails
                        raise
                    except (IntegrityError, DashboardError) as exc:  # refused: this job alone
                        outcomes.append((None, exc))
                    i += 1
        except DBAPIError as exc:
            if exc.connection_invalidated:
                self._conn = None
            raise
        return outcomes


class _Handoff:
    """The writer's native thread, and the way its outcomes reach the tickets in the loop's thread.

    Under gevent the thread is the one thread of a gevent ThreadPool and outcomes cross over through
    a loop async watcher: a settler greenlet settles them (callbacks run in a greenlet, never in the
    hub). Without gevent it is a plain thread that settles as it goes.
    """

    def __init__(self) -> None:
        self._gevent = gevent_patched()
        self._done: collections.deque[tuple[list[Ticket], list[tuple[Any, BaseException | None]]]] = \
            collections.deque()
        self._thread: Any = None
        self._pool: Any = None
        self._settler: Any = None
        self._wake: Any = None
        self._ready: Any = None

    def start(self, target: Callable[[], None]) -> None:
        if not self._gevent:
            self._thread = threading.Thread(target=target, name="writer", daemon=True)
            self._thread.start()
            return
        import gevent
        from gevent.event import Event
        from gevent.threadpool import ThreadPool

        self._ready = Event()
        self._wake = gevent.get_hub().loop.async_()
        self._wake.start(self._ready.set)
        self._settler = gevent.spawn(self._settle_forever)
        self._pool = ThreadPool(1)
        self._thread = self._pool.spawn(target)

    def settle(self, batch: list[Ticket], outcomes: list[tuple[Any, BaseException | None]]) -> None:
        """In the writer's thread: the outcomes of a batch, settled now or handed to the loop."""
        if not self._gevent:
            _settle(batch, outcomes)
            return
        self._done.append((batch, outcomes))
        self._wake.send()

    def _settle_forever(self) -> None:
        while True:
            self._ready.wait()
            self._ready.clear()
            while self._done:
                batch, outcomes = self._done.popleft()
                for ticket, (result, error) in zip(batch, outcomes, strict=True):
                    ticket.settle(result, error)

    def join(self, timeout: float) -> None:
        if not self._gevent:
            self._thread.join(timeout)
            return
        self._thread.get(timeout=timeout)
        while self._done:
            _settle(*self._done.popleft())
        self._settler.kill()
        self._wake.stop()
        self._wake.close()
        self._pool.kill()


def _settle(batch: list[Ticket], outcomes: list[tuple[Any, BaseException | None]]) -> None:
    for ticket, (result, error) in zip(batch, outcomes, strict=True):
        ticket.settle(result, error)


def _nothing(_conn: Connection) -> None:
    return None


def unavailable(exc: BaseException) -> Unavailable:
    """A database failure as the retryable error clients get."""
    if isinstance(exc, Unavailable):
        return exc
    return Unavailable(f"the database cannot take writes now: {getattr(exc, 'orig', exc)}", retry_after=RETRY_AFTER_S)


def _refused_whole(outcomes: list[tuple[Any, BaseException | None]]) -> Unavailable | None:
    """The error when the database refused the whole batch (locked, full, unreachable), else None."""
    if outcomes and isinstance(outcomes[0][1], Unavailable) and all(e is outcomes[0][1] for _r, e in outcomes):
        return outcomes[0][1]
    return None


def _frames(ticket: Ticket) -> int:
    return len(ticket.job.rows) if isinstance(ticket.job, FrameWrite) else 1
