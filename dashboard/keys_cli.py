"""The ``dashboard keys`` command: create, list and revoke the access keys of cars, gateways and people.

    dashboard keys create --role engineer --name "Chief engineer"
    dashboard keys create --role car --car-id CAR7 --name "Car 7"
    dashboard keys list
    dashboard keys revoke rdk_1a2b3c4d5e6f

A new key is printed once, alone on stdout (``KEY=$(dashboard keys create ...)`` keeps it); what it is
goes to stderr. It is never logged and never read from the command line: nothing here takes a secret.
The command works on the database of the settings (``DASHBOARD_DATABASE_URL``, else
``DASHBOARD_INSTANCE_PATH/dashboard.db``), as a tool does: a running server sees a new key at once and
a revoke within its key cache's TTL (``DASHBOARD_KEYS_TTL_S``).
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from dashboard.errors import DashboardError


def add_commands(subparsers: Any) -> None:
    """Register ``keys`` on the ``dashboard`` command's subparsers; each sets ``func(args) -> int``."""
    from typing import get_args

    from dashboard.schemas import Role  # not dashboard.server: `dashboard --help` runs where no server is installed

    keys = subparsers.add_parser("keys", help="create, list and revoke access keys (cars, gateways, people)",
                                 description="Access keys: see README.md, 'Access', for what each role may do.")
    sub = keys.add_subparsers(dest="keys_command", required=True)
    create = sub.add_parser("create", help="make a key; printed once on stdout")
    create.add_argument("--role", required=True, choices=get_args(Role), help="what the key may do")
    create.add_argument("--name", default="", metavar="TEXT", help="who or what holds it (shown in lists)")
    create.add_argument("--car-id", metavar="ID", help="a car key's car: the only car id it may connect as")
    create.set_defaults(func=create_command)
    sub.add_parser("list", help="every key, without secrets").set_defaults(func=list_command)
    revoke = sub.add_parser("revoke", help="refuse a key from now on")
    revoke.add_argument("key_id", metavar="ID", help="the key's public id (rdk_...), as `keys list` shows it")
    revoke.set_defaults(func=revoke_command)


def _store() -> Any:
    from dashboard.config import Settings
    from dashboard.server.store import Store

    settings = Settings()
    settings.instance_path.mkdir(parents=True, exist_ok=True)
    return Store.from_url(settings.resolved_database_url())


def create_command(args: argparse.Namespace) -> int:
    """Store a new key and print it once."""
    from pydantic import ValidationError

    from dashboard import schemas
    from dashboard.server.keys import new_key

    name = args.name or (f"car {args.car_id}" if args.car_id else args.role)
    try:
        body = schemas.KeyCreate(role=args.role, name=name, car_id=args.car_id)
        row, key = new_key(body.role, body.name, body.car_id, time.time())
    except ValidationError as exc:
        err = exc.errors()[0]
        print(f"error: {'.'.join(str(p) for p in err['loc'])}: {err['msg']}", file=sys.stderr)
        return 2
    except DashboardError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    store = _store()
    try:
        store.insert_key(row)
    finally:
        store.close()
    car = f" for car {row['car_id']}" if row["car_id"] else ""
    print(f"created key {row['id']} ({row['role']}{car}). It is shown once, below: store it now.",
          file=sys.stderr)
    print(key, flush=True)
    return 0


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(ts)) if ts else "-"


def list_command(args: argparse.Namespace) -> int:
    """Print every key: id, role, car, name, created, last used, revoked (UTC)."""
    store = _store()
    try:
        rows = store.keys()
    finally:
        store.close()
    print(f"{'id':<17} {'role':<9} {'car':<12} {'created':<16} {'last used':<16} {'revoked':<16} name")
    for row in rows:
        print(f"{row['id']:<17} {row['role']:<9} {row['car_id'] or '-':<12} {_when(row['created_at']):<16} "
              f"{_when(row['last_used_at']):<16} {_when(row['revoked_at']):<16} {row['name']}")
    return 0


def revoke_command(args: argparse.Namespace) -> int:
    """Revoke a key by its public id: 0 when revoked (or already), 1 when there is no such key."""
    store = _store()
    try:
        row = store.revoke_key(args.key_id, time.time())
    finally:
        store.close()
    if row is None:
        print(f"error: no key {args.key_id}", file=sys.stderr)
        return 1
    print(f"key {row['id']} ({row['role']}) revoked", file=sys.stderr)
    return 0
