"""One exception tree for the whole package.

Every error the server can answer with carries an HTTP status, a stable
machine-readable ``code`` and, where one input field is to blame, that
``field``. The REST API and the Socket.IO acks turn them into the same JSON
shape: ``{"error": {"code", "message", "field"?}}``.
"""
from __future__ import annotations

from typing import Any


class DashboardError(Exception):
    """Base of every error raised on purpose by this package."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str, field: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.extra = extra

    def to_dict(self) -> dict[str, Any]:
        """The ``error`` object of the JSON error body."""
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        body.update(self.extra)
        return body


class InvalidInput(DashboardError):
    """The request is well-formed but a field has a bad value (422)."""

    status = 422
    code = "invalid"


class MalformedRequest(DashboardError):
    """The body is not parseable JSON, or not an object (400)."""

    status = 400
    code = "malformed"


class Unauthorized(DashboardError):
    """No credential where one is needed, or one that is not a valid key or token (revoked, mistyped) (401)."""

    status = 401
    code = "unauthorized"


class Forbidden(DashboardError):
    """A valid key whose role may not do this: a viewer changing a setup, a car using another car's id (403)."""

    status = 403
    code = "forbidden"


class NotFound(DashboardError):
    """An unknown session or other resource (404)."""

    status = 404
    code = "not_found"


class Conflict(DashboardError):
    """The request contradicts the current state, e.g. a second active session for a car (409)."""

    status = 409
    code = "conflict"


class SeqConflict(Conflict):
    """A frame's seq is already stored with other content (a monitor that started counting again).

    Nothing of the batch is stored; ``next_seq`` says where the monitor's numbering must continue.
    """

    code = "seq_conflict"


class SessionNotActive(InvalidInput):
    """A frame sampled after its session was stopped or ended: the monitor pauses and drops it."""

    code = "session_not_active"


class PayloadTooLarge(DashboardError):
    """The body or one of its parts is over its size limit (413)."""

    status = 413
    code = "too_large"


class MethodNotAllowed(DashboardError):
    """A method the path does not take (405): the driver display's own small server."""

    status = 405
    code = "method_not_allowed"


class UnsupportedMediaType(DashboardError):
    """A body of a type the endpoint does not take (415), e.g. a POST that is not JSON."""

    status = 415
    code = "unsupported_media_type"


class TooManyRequests(DashboardError):
    """Too many of these at once (exports running); try again shortly (429)."""

    status = 429
    code = "too_many"


class Unavailable(DashboardError):
    """The server cannot do it right now (the database is locked or unreachable): try again later (503).

    ``retry_after`` (seconds) is sent as the ``Retry-After`` header on REST and in the ack's error.
    """

    status = 503
    code = "unavailable"

    def __init__(self, message: str, field: str | None = None, retry_after: float = 1.0, **extra: Any) -> None:
        super().__init__(message, field, retry_after=retry_after, **extra)
        self.retry_after = retry_after


class FrameError(InvalidInput):
    """One telemetry frame is invalid; the rest of its batch is still kept."""

    code = "invalid_frame"


class ClockAhead(FrameError):
    """A frame stamped further ahead of the server's clock than ``max_clock_ahead_s``: a car clock set wrong."""

    code = "clock_ahead"


class ClockBehind(FrameError):
    """A live frame stamped further behind the server's clock than ``max_clock_behind_s`` (backfill is exempt)."""

    code = "clock_behind"


class SourceError(DashboardError):
    """An in-car data source (OBD adapter, GPS receiver, radio) failed."""

    code = "source_error"


class ConfigError(DashboardError):
    """A setting that cannot be used (a key file missing, unreadable or empty); the command stops with it."""

    code = "config"
