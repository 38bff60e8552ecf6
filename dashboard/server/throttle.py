"""Repeated failed authentication from one address is slowed down, on REST and on Socket.IO alike.

Flask-Limiter counts, per client address, the REST answers that refused a presented credential (401)
and, past ``auth_failures_per_minute`` in a moving minute, answers 429 with ``Retry-After`` to every
request of that address that carries a credential, the right one included (that is what stops a
guesser). Requests without a credential are never counted nor stopped: they cannot guess anything,
and a browser's first try without its key must not cost the crew behind the same address.

Socket.IO connects (``/monitor``, ``/dashboard``) use the same count: :class:`AuthThrottle` hits the
same limit, on the same storage, under the same key as Flask-Limiter's, so failures on either count
against both. The storage is memory, or the Redis of ``DASHBOARD_MESSAGE_QUEUE`` when set, so every
process of a cluster counts together. Behind a reverse proxy set ``DASHBOARD_PROXY_HOPS`` so the
address is the client's, not the proxy's (``dashboard/app.py``).
"""
from __future__ import annotations

import logging
import time
from typing import Any

from flask import Flask, Response
from flask_limiter import ApplicationLimit, Limiter, RateLimitExceeded
from flask_limiter.util import get_remote_address
from limits import parse

from dashboard.config import Settings
from dashboard.errors import TooManyRequests
from dashboard.server.access import rest_credential

log = logging.getLogger(__name__)

SCOPE = "auth-failures"  # the limit's bucket, shared by REST and Socket.IO
WINDOW = "minute"
WINDOW_S = 60.0  # no wait is longer than the window


def _wait(reset_at: float) -> float:
    """Seconds until ``reset_at`` (epoch), at least 1, at most the window."""
    return round(min(WINDOW_S, max(1.0, reset_at - time.time())), 1)


def _no_credential() -> bool:
    return rest_credential()[0] is None


def _refused(response: Response) -> bool:
    return response.status_code == 401


def build_limiter(app: Flask, settings: Settings) -> Limiter:
    """Flask-Limiter on ``app``: failed authentications per address, one shared bucket for every route.

    One per app rather than a module-level extension: its storage and limits live on the instance, and
    a process may build several apps (tests do).
    """
    limiter = Limiter(
        get_remote_address,
        application_limits=[ApplicationLimit(f"{settings.auth_failures_per_minute}/{WINDOW}", scope=SCOPE,
                                             exempt_when=_no_credential, deduct_when=_refused)],
        storage_uri=settings.message_queue or "memory://",
        strategy="moving-window",
        headers_enabled=False,
        swallow_errors=True,  # a storage outage must not take the API down: the throttle is a second line
    )
    limiter.init_app(app)
    from dashboard.server.api import healthz

    limiter.exempt(healthz)  # takes no credential: a probe from a throttled address still learns the health

    @app.errorhandler(RateLimitExceeded)
    def _throttled(_error: RateLimitExceeded) -> Any:
        from dashboard.server.api import error_response

        limit = limiter.current_limit
        retry_after = _wait(limit.reset_at) if limit is not None else WINDOW_S
        field = rest_credential()[1]
        log.warning("address %s throttled after failed authentications", get_remote_address())
        return error_response(TooManyRequests("too many failed authentications from this address: wait before "
                                              "trying again", field=field, retry_after=retry_after))

    return limiter


class AuthThrottle:
    """The Socket.IO side: the same limit and bucket as the REST side, through the limiter's own strategy."""

    def __init__(self, limiter: Limiter, per_minute: int) -> None:
        self.limiter = limiter
        self.item = parse(f"{per_minute}/{WINDOW}")

    def retry_after(self, address: str) -> float | None:
        """Seconds until ``address`` may try again, or None when it may now."""
        try:
            strategy = self.limiter.limiter
            if strategy.test(self.item, address, SCOPE):
                return None
            reset_at, _ = strategy.get_window_stats(self.item, address, SCOPE)
        except Exception:  # noqa: BLE001 - a storage outage must not refuse everyone: the throttle is a second line
            log.warning("failed-authentication throttle unavailable", exc_info=True)
            return None
        return _wait(reset_at)

    def failed(self, address: str) -> None:
        """Count one failed authentication of ``address``."""
        try:
            self.limiter.limiter.hit(self.item, address, SCOPE)
        except Exception:  # noqa: BLE001 - see retry_after
            log.warning("failed-authentication throttle unavailable", exc_info=True)
