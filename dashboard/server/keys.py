"""Access keys of cars, pit gateways and people: made random, stored as their SHA-256, checked in memory.

A key reads ``rdk_<12 hex digits>.<43 url-safe characters>``. The part before the dot is its public
id: lists, logs, the revoke command and error messages name a key by it, never by its secret. The
rest is 256 random bits (``secrets.token_urlsafe(32)``). Only ``sha256(key)`` is stored.

A fast hash is enough here. Slow hashes (bcrypt, argon2) protect passwords that people choose, which
whoever holds the table could guess at; a 256-bit random key cannot be guessed, fast hash or slow,
and a fast hash lets every request and every connect be checked in microseconds.

Checked in memory: a key's row is read once, then trusted for ``ttl_s`` before it is read again. So
a revoke made by another process sharing the database (another ``dashboard serve``, or ``dashboard
keys revoke``) takes effect within ``ttl_s``; a revoke through this process clears the entry at once.
Every write goes through the single writer; the command line (``dashboard/keys_cli.py``) writes with
the same :func:`new_key` straight through the store, as a tool does.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

from dashboard.errors import InvalidInput, NotFound
from dashboard.server.service import Service, Shared

log = logging.getLogger(__name__)

KEY_PREFIX = "rdk_"  # "race dashboard key": tells our keys from other secrets in a config file or a leak scan
ID_PATTERN = re.compile(r"^rdk_[0-9a-f]{12}$")
SECRET_BYTES = 32  # 256 random bits
ROLE_NAMES = ("admin", "engineer", "viewer", "car", "gateway")  # what each may do: dashboard/server/access.py
LAST_USED_EVERY_S = 60.0  # last_used_at is saved at most this often per key: a write per request would load the writer
CACHE_MAX = 10_000  # ids kept in memory (unknown ones too); past it the cache starts again empty


def hash_key(key: str) -> str:
    """The stored form of a key: its SHA-256, hex."""
    return hashlib.sha256(key.encode()).hexdigest()


def key_id_of(key: str) -> str | None:
    """The public id of a well-formed key, else None."""
    key_id, dot, secret = key.partition(".")
    return key_id if dot and secret and ID_PATTERN.match(key_id) else None


def new_key(role: str, name: str, car_id: str | None, now: float) -> tuple[dict[str, Any], str]:
    """A new key's row (its hash, never the key) and the key itself, to be shown once.

    A car key names the only car id it may connect as; no other role has one.
    """
    if role not in ROLE_NAMES:
        raise InvalidInput(f"role must be one of {', '.join(ROLE_NAMES)}", field="role")
    if role == "car" and not car_id:
        raise InvalidInput("a car key needs the car id it is for", field="car_id")
    if role != "car" and car_id:
        raise InvalidInput("only a car key has a car id", field="car_id")
    key_id = KEY_PREFIX + secrets.token_hex(6)
    key = f"{key_id}.{secrets.token_urlsafe(SECRET_BYTES)}"
    row = {"id": key_id, "key_hash": hash_key(key), "name": name, "role": role, "car_id": car_id,
           "created_at": now, "last_used_at": None, "revoked_at": None}
    return row, key


@dataclass
class _Entry:
    row: dict[str, Any] | None  # None: no such key (kept too, so garbage ids do not each cost a read)
    read_at: float  # time.monotonic() of the read


class KeyService(Service):
    """Create, list and revoke keys; check a presented key against its stored hash (cached for ``ttl_s``)."""

    def __init__(self, shared: Shared, ttl_s: float = 5.0) -> None:
        super().__init__(shared)
        self.ttl_s = ttl_s
        self._cache: dict[str, _Entry] = {}
        self._any: tuple[bool, float] | None = None  # (any key stored, when read)
        self._used: dict[str, float] = {}  # key id -> last_used_at last saved
        self._lock = threading.Lock()

    def create(self, role: str, name: str, car_id: str | None = None) -> tuple[dict[str, Any], str]:
        """Store a new key; its row and the key itself (the only time it is ever seen)."""
        row, key = new_key(role, name, car_id, self.clock())
        self.writer.call(lambda conn: self.store.insert_key(row, conn=conn))
        with self._lock:
            self._cache.pop(row["id"], None)
            self._any = (True, time.monotonic())
        log.info("key %s created (role %s)", row["id"], role)
        return row, key

    def list(self) -> list[dict[str, Any]]:
        """Every key's row, oldest first (hashes included: callers show only the public fields)."""
        return self.store.keys()

    def revoke(self, key_id: str) -> dict[str, Any]:
        """Revoke a key for good (a second revoke keeps the first time); NotFound naming key_id."""
        now = self.clock()
        row = self.writer.call(lambda conn: self.store.revoke_key(key_id, now, conn=conn))
        if row is None:
            raise NotFound(f"no key {key_id}", field="key_id")
        with self._lock:
            self._cache[key_id] = _Entry(row, time.monotonic())
        log.info("key %s revoked", key_id)
        return row

    def check(self, key: str) -> dict[str, Any] | None:
        """The row of a key that is stored and not revoked, else None (constant-time hash compare)."""
        key_id = key_id_of(key)
        if key_id is None:
            return None
        row = self._row(key_id)
        if row is None or row["revoked_at"] is not None:
            return None
        if not hmac.compare_digest(row["key_hash"], hash_key(key)):
            return None
        self._touch(row)
        return row

    def valid(self, key_id: str) -> bool:
        """True while the key is stored and not revoked (as of at most ``ttl_s`` ago)."""
        row = self._row(key_id)
        return row is not None and row["revoked_at"] is None

    def any_stored(self) -> bool:
        """True once any key was ever created (revoked ones count: revoking every key never opens the server)."""
        now = time.monotonic()
        with self._lock:
            known = self._any
        if known is not None and (known[0] or now - known[1] < self.ttl_s):
            return known[0]
        stored = self.store.count_keys() > 0
        with self._lock:
            self._any = (stored, now)
        return stored

    def _row(self, key_id: str) -> dict[str, Any] | None:
        now = time.monotonic()
        with self._lock:
            entry = self._cache.get(key_id)
        if entry is not None and now - entry.read_at < self.ttl_s:
            return entry.row
        row = self.store.get_key(key_id)
        with self._lock:
            if len(self._cache) >= CACHE_MAX:
                self._cache.clear()
            self._cache[key_id] = _Entry(row, now)
        return row

    def _touch(self, row: dict[str, Any]) -> None:
        """Save when the key was last used, at most every LAST_USED_EVERY_S (queued, nobody waits)."""
        now = self.clock()
        key_id = row["id"]
        with self._lock:
            last = self._used.get(key_id) or row["last_used_at"] or 0.0
            if now - last < LAST_USED_EVERY_S:
                return
            self._used[key_id] = now
        self.writer.submit(lambda conn: self.store.update_key(key_id, conn=conn, last_used_at=now), background=True)
