"""Blocking work (database calls, export pages) off the event loop every car shares.

Under gevent one loop carries every car, viewer and REST call. A database call that waits for a lock
(SQLite's busy timeout, a backup holding the file) or reads a large page would stall all of them, so
:class:`Offload` runs it in a native thread while the calling greenlet waits cooperatively. Without
gevent's monkey-patching (plain threads: the in-process ``SessionManager``, the command line tools) it
simply calls. A call made from one of the native threads themselves runs directly too.
"""
from __future__ import annotations

from typing import Any, Callable, TypeVar

T = TypeVar("T")


def gevent_patched() -> bool:
    """True when gevent has monkey-patched threading (``dashboard serve``)."""
    try:
        from gevent import monkey
    except ImportError:  # pragma: no cover - gevent is a dependency of the server
        return False
    return monkey.is_module_patched("threading")


def native_queue() -> Any:
    """A queue a native thread can block on: the standard library's own, even where gevent has patched it."""
    import queue

    if gevent_patched():
        from gevent import monkey

        return monkey.get_original("queue", "SimpleQueue")()
    return queue.SimpleQueue()


class Offload:
    """Runs callables in a pool of ``threads`` native threads when under gevent, else in the caller."""

    def __init__(self, threads: int, name: str = "offload") -> None:
        self.threads = threads
        self.name = name
        self.enabled = gevent_patched()
        self._pool: Any = None
        self._ident: Callable[[], int] = lambda: 0
        self._loop_thread = 0
        if self.enabled:
            from gevent import monkey
            from gevent.threadpool import ThreadPool

            self._ident = monkey.get_original("_thread", "get_ident")
            self._loop_thread = self._ident()  # the thread that runs the gevent loop
            self._pool = ThreadPool(threads)

    def __call__(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)``, in a native thread when called from the loop's thread under gevent."""
        if self._pool is None or self._ident() != self._loop_thread:
            return fn(*args, **kwargs)
        return self._pool.apply(fn, args, kwargs)

    def close(self) -> None:
        """Stop the native threads (safe twice)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.kill()
