"""A background thread with start/stop that are safe to call twice: the shape of the car's long-running parts."""
from __future__ import annotations

import threading


class Worker:
    """Runs ``_run`` in a daemon thread between ``start`` and ``stop``; ``_run`` loops until ``_stop`` is set.

    Subclasses call ``super().__init__(name)``, implement ``_run``, and may extend ``_stopping``
    (wake the thread from a wait) and ``_stopped`` (release what the thread used, after it ended).
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lifecycle = threading.Lock()

    @property
    def running(self) -> bool:
        """True while the thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the thread; no-op when running."""
        with self._lifecycle:
            if self.running:
                return
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Ask the thread to end and wait up to ``timeout`` for it; no-op when stopped."""
        with self._lifecycle:
            thread = self._thread
            if thread is None:
                return
            self._stop.set()
            self._stopping()
            thread.join(timeout)
            self._thread = None
            self._stopped()

    def _run(self) -> None:
        raise NotImplementedError

    def _stopping(self) -> None:
        """Called once the stop flag is set, before waiting for the thread."""

    def _stopped(self) -> None:
        """Called after the thread ended (or the wait timed out)."""
