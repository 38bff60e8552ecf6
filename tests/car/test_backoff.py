"""The one backoff of the car side: doubles up to its cap, jitters within ± its fraction, resets."""
from __future__ import annotations

import random

from dashboard.car.backoff import Backoff


class Fixed(random.Random):
    """A random source that always returns ``value`` (0 = most negative jitter, 0.5 = none)."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def random(self) -> float:
        return self.value


def test_grows_by_the_factor_up_to_the_cap_and_resets():
    backoff = Backoff(0.5, 3.0, rng=Fixed(0.5))
    assert [backoff.next() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    backoff.reset()
    assert backoff.next() == 0.5


def test_jitter_stays_within_its_fraction_either_side():
    low = Backoff(2.0, 60.0, jitter=0.25, rng=Fixed(0.0))
    assert low.next() == 1.5
    delays = [Backoff(2.0, 60.0, rng=random.Random(seed)).next() for seed in range(200)]
    assert all(1.5 <= d <= 2.5 for d in delays)
    assert max(delays) - min(delays) > 0.5  # really jittered, not constant
