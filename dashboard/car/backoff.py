"""Capped exponential backoff with jitter: how every car-side part waits before trying again.

One implementation for the sources' device reconnects and the ServiceManager's
restarts (``source.py``), the uplink's server reconnects, and the LoRa radio
and pit gateway links (``mesh.py``, ``mesh_gateway.py``). Each caller passes
its own first delay and cap, with the reason for them beside its constants.
"""
from __future__ import annotations

import random

FACTOR = 2.0  # each failure doubles the wait
JITTER = 0.25  # ± fraction, so several parts (or several cars) do not retry in lockstep


class Backoff:
    """Delays of ``initial`` × ``factor``ⁿ up to ``maximum``, each with ± ``jitter``; ``reset`` after a success."""

    def __init__(
        self,
        initial: float,
        maximum: float,
        *,
        factor: float = FACTOR,
        jitter: float = JITTER,
        rng: random.Random | None = None,
    ) -> None:
        self.initial, self.maximum, self.factor, self.jitter = initial, maximum, factor, jitter
        self._rng = rng or random.Random()
        self._next = initial

    def next(self) -> float:
        """The next delay in seconds (grows up to the cap, with jitter)."""
        base = self._next
        self._next = min(self.maximum, self._next * self.factor)
        return max(0.0, base * (1.0 + self.jitter * (2.0 * self._rng.random() - 1.0)))

    def reset(self) -> None:
        """Start again from the initial delay (after a success)."""
        self._next = self.initial
