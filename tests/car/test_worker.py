"""The car's background-thread base: start/stop safe to call twice, the stopped hook after the thread ended."""
import threading

from dashboard.car.worker import Worker
from tests.waiting import wait_for


class Counting(Worker):
    def __init__(self) -> None:
        super().__init__("counting")
        self.runs = 0
        self.calls: list[str] = []
        self.started = threading.Event()

    def _run(self) -> None:
        self.runs += 1
        self.started.set()
        self._stop.wait()
        self.calls.append("ended")

    def _stopping(self) -> None:
        self.calls.append("stopping")

    def _stopped(self) -> None:
        self.calls.append("stopped")


def test_start_and_stop_are_safe_twice_and_hooks_run_in_order():
    w = Counting()
    w.stop()  # before start: nothing happens
    assert w.calls == [] and not w.running
    w.start()
    w.start()
    assert w.started.wait(5)
    assert w.running and w.runs == 1
    w.stop(5)
    w.stop(5)
    assert not w.running
    assert sorted(w.calls[:2]) == ["ended", "stopping"] and w.calls[2:] == ["stopped"]  # stopped: after the thread


def test_a_stopped_worker_starts_again():
    w = Counting()
    w.start()
    wait_for(lambda: w.runs == 1, 5, "first run")
    w.stop(5)
    w.start()
    wait_for(lambda: w.runs == 2 and w.running, 5, "second run")
    w.stop(5)
    assert w.calls.count("stopped") == 2 and w.calls[2] == w.calls[5] == "stopped"


class Failing(Worker):
    def __init__(self) -> None:
        super().__init__("failing")
        self.crashes: list[Exception] = []

    def _run(self) -> None:
        raise ValueError("boom")

    def _crashed(self, exc: Exception) -> None:
        self.crashes.append(exc)


def test_an_exception_escaping_run_goes_to_the_crash_hook_and_ends_the_thread():
    w = Failing()
    w.start()
    wait_for(lambda: w.crashes and not w.running, 5, "the crash hook")
    assert [str(e) for e in w.crashes] == ["boom"]
    w.stop(5)
    w.start()  # a crashed worker starts again
    wait_for(lambda: len(w.crashes) == 2, 5, "the second crash")
    w.stop(5)
