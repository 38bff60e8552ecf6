"""A background thread with start/stop that are safe to call twice: the shape of the car's long-running parts."""
from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)


class Worker:
    """Runs ``_run`` in a daemon thread between ``start`` and ``stop``; ``_run`` loops until ``_stop`` is set.

    Subclasses call ``super().__init__(name)``, implement ``_run``, and may extend ``_stopping``
    (wake the thread from a wait), ``_stopped`` (release what the thread used, after it ended) and
    ``_crashed`` (an exception escaped ``_run``).
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
            self._thread = threading.Thread(target=self._main, name=self._name, daemon=True)
            self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Ask the thread to end and wait up to ``timeout`` for it; no-op when stopped.

        Called from the worker's own thread it does not wait (the thread ends when ``_run`` returns).
        """
        with self._lifecycle:
            thread = self._thread
            if thread is None:
                return
            self._stop.set()
            self._stopping()
            if thread is not threading.current_thread():
                thread.join(timeout)
                if thread.is_alive():
                    log.warning("%s did not stop within %.0f s", self._name, timeout)
            self._thread = None
            self._stopped()

    def _main(self) -> None:
        try:
            self._run()
        except Exception as exc:  # the thread ends either way; say so in the log, not on stderr
            self._crashed(exc)

    def _run(self) -> None:
        raise NotImplementedError

    def _stopping(self) -> None:
        """Called once the stop flag is set, before waiting for the thread."""

    def _stopped(self) -> None:
        """Called after the thread ended (or the wait timed out)."""

    def _crashed(self, exc: Exception) -> None:
        """Called in the thread when ``_run`` raised ``exc``; the thread then ends."""
        log.exception("%s crashed", self._name)
