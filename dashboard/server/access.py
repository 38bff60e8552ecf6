"""Who may do what: the roles, what each may do, and how a presented credential becomes a Principal.

Credentials, each compared in constant time:
- a stored key (``dashboard/server/keys.py``) of one of the roles below;
- ``DASHBOARD_API_KEY``: the admin bootstrap key (the one key of old, still an admin's);
- ``DASHBOARD_VIEWER_TOKEN``: a viewer's read access, shared by the crew;
- ``DASHBOARD_METRICS_TOKEN``: reading ``/metrics``, for a scraper.

| role | may |
|---|---|
| admin | everything, and manage keys |
| engineer | read; sessions, lifecycle, setups, tracks, alert rules, alert acks |
| viewer | read |
| car | read; connect to ``/monitor`` as its own car id only, and stream that car's sessions |
| gateway | read; relay LoRa summaries (the ``lora`` event) |

Without a credential: reads are open while no viewer token is set, and everything but key management
is open while the server has no key at all (no ``DASHBOARD_API_KEY`` and none ever created): the open
server of a bench test, said loudly in the log at start. A credential that is presented but not valid
is refused (401) whenever the server checks anything, and counted against its address
(``dashboard/server/throttle.py``); a valid one whose role may not do the call is refused with 403.
"""
from __future__ import annotations

import hmac
from dataclasses import dataclass

from flask import request

from dashboard.errors import Forbidden, Unauthorized
from dashboard.server.keys import KeyService

READ = "read"  # sessions, telemetry, frames, setups, events, laps, alerts, tracks, alert rules, exports
WRITE = "write"  # sessions, lifecycle, setups, tracks, alert rules, alert acks
KEYS = "keys"  # create, list and revoke keys
CAR = "car"  # a car's monitor: session.start, telemetry, heartbeat, event, session.end on /monitor
LORA = "lora"  # a pit gateway's LoRa relay on /monitor
METRICS = "metrics"  # /metrics when DASHBOARD_METRICS_TOKEN is set (else /metrics needs READ)

ROLES: dict[str, frozenset[str]] = {
    "admin": frozenset({READ, WRITE, KEYS, CAR, LORA, METRICS}),
    "engineer": frozenset({READ, WRITE}),
    "viewer": frozenset({READ}),
    "car": frozenset({READ, CAR}),
    "gateway": frozenset({READ, LORA}),
}
NEEDS = {  # what a refusal says is missing
    READ: "the viewer token or a key",
    WRITE: "an engineer or admin key",
    KEYS: "an admin key",
    CAR: "the car's own key",
    LORA: "a gateway key",
    METRICS: "the metrics token or an admin key",
}
DOES = {READ: "read", WRITE: "change sessions, setups, tracks or alerts", KEYS: "manage keys",
        CAR: "stream as a car", LORA: "relay LoRa summaries", METRICS: "read metrics"}


@dataclass(frozen=True)
class Principal:
    """Who a request or connection acts as. ``key_id`` is what logs and errors name, never a secret."""

    role: str
    key_id: str  # a stored key's public id, or "bootstrap", "viewer-token", "metrics-token", "anonymous"
    grants: frozenset[str]
    car_id: str | None = None  # a car key's car: the only car id it may connect as
    stored: bool = False  # a stored key: revocable, so live connections are checked again

    def may(self, permission: str) -> bool:
        """True when this principal may do ``permission``."""
        return permission in self.grants

    @property
    def anonymous(self) -> bool:
        """True when no credential was presented."""
        return self.key_id == "anonymous"


BOOTSTRAP = Principal("admin", "bootstrap", ROLES["admin"])
VIEWER_TOKEN = Principal("viewer", "viewer-token", ROLES["viewer"])
METRICS_TOKEN = Principal("metrics", "metrics-token", frozenset({METRICS}))


def _same(given: str, expected: str | None) -> bool:
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())  # type: ignore[union-attr]


class Access:
    """Turns credentials into principals and says whether a principal may do something."""

    def __init__(self, keys: KeyService, api_key: str | None = None, viewer_token: str | None = None,
                 metrics_token: str | None = None) -> None:
        self.keys = keys
        self.api_key = api_key
        self.viewer_token = viewer_token
        self.metrics_token = metrics_token

    def closed(self) -> bool:
        """True when changes need a key: the bootstrap key is set or any key was ever created."""
        return bool(self.api_key) or self.keys.any_stored()

    def checks(self) -> bool:
        """True when the server checks anything at all (a key or a token exists)."""
        return bool(self.viewer_token or self.metrics_token) or self.closed()

    def authenticate(self, credential: str) -> Principal | None:
        """The principal a presented credential stands for; None when it is no valid key or token."""
        if _same(credential, self.api_key):
            return BOOTSTRAP
        if _same(credential, self.viewer_token):
            return VIEWER_TOKEN
        if _same(credential, self.metrics_token):
            return METRICS_TOKEN
        row = self.keys.check(credential)
        if row is None:
            return None
        return Principal(row["role"], row["id"], ROLES[row["role"]], row["car_id"], stored=True)

    def anonymous(self) -> Principal:
        """What a caller without a credential may do here."""
        grants: set[str] = set()
        if not self.closed():
            grants |= {WRITE, CAR, LORA}
        if not self.viewer_token:
            grants.add(READ)
        return Principal("anonymous", "anonymous", frozenset(grants))

    def resolve(self, credential: str | None, field: str) -> Principal:
        """The caller's principal; Unauthorized naming ``field`` when a presented credential is not valid.

        A server that checks nothing ignores what it is given, as it always did.
        """
        if not credential:
            return self.anonymous()
        principal = self.authenticate(credential)
        if principal is not None:
            return principal
        if not self.checks():
            return self.anonymous()
        raise Unauthorized(f"{field} is not a valid key or token (a key revoked or mistyped?)", field=field)

    def require(self, principal: Principal, permission: str, field: str) -> None:
        """Nothing when the principal may; Unauthorized without a credential, Forbidden when its role may not."""
        if principal.may(permission):
            return
        if principal.anonymous:
            raise Unauthorized(f"this needs {NEEDS[permission]} ({field})", field=field)
        article = "an" if principal.role[0] in "aeiou" else "a"
        raise Forbidden(f"{article} {principal.role} key may not {DOES[permission]}: this needs "
                        f"{NEEDS[permission]}", field=field)

    def still_valid(self, principal: Principal) -> bool:
        """False once the principal's stored key is revoked (seen within the key cache's TTL)."""
        return not principal.stored or self.keys.valid(principal.key_id)


# ------------------------------------------------------------------------ REST
API_KEY_HEADER = "X-API-Key"
BEARER_HEADER = "Authorization"


def rest_credential() -> tuple[str | None, str | None]:
    """The credential of the current request and the header that carried it: ``X-API-Key`` first, then
    ``Authorization: Bearer``. Never a query parameter: URLs end up in logs and browser histories."""
    key = request.headers.get(API_KEY_HEADER)
    if key:
        return key, API_KEY_HEADER
    given = request.headers.get(BEARER_HEADER)
    if given:
        scheme, _, token = given.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip(), BEARER_HEADER
        return given, BEARER_HEADER  # another scheme: presented, and no valid credential
    return None, None


def rest_field(permission: str) -> str:
    """The header a refusal names when no credential was given."""
    return BEARER_HEADER if permission in (READ, METRICS) else API_KEY_HEADER
