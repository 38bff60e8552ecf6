"""The ``dashboard`` command line: serve, db upgrade, schemas, demo, keys, and the car's commands."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

from pydantic import ValidationError

from dashboard.config import Settings
from dashboard.listener import port_number

log = logging.getLogger("dashboard")
SCHEMAS_DIR = Path(__file__).resolve().parent.parent / "schemas"


def _setup_logging(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the server (migrating the database first); with --collect, also this car's monitor."""
    from dashboard import create_app
    from dashboard.companion import serve_with_companion
    from dashboard.listener import ListenError, bound_port, open_listener

    overrides = {k: v for k, v in {"host": args.host, "port": args.port}.items() if v is not None}
    settings = Settings(**overrides)
    if args.collect and not (args.obd or args.gps):
        print("--collect needs --obd PORT and/or --gps PORT", file=sys.stderr)
        return 2
    _setup_logging(settings)
    try:  # first: a taken port is one line, before the database or a companion is touched
        listener = open_listener(settings.host, settings.port)
    except ListenError as exc:
        print(f"dashboard serve: {exc}", file=sys.stderr)
        return 2
    settings.port = bound_port(listener)
    app = create_app(settings)
    companion = None
    if args.collect:
        companion = ["monitor", "--server", f"http://127.0.0.1:{settings.port}", "--car-id", args.car_id]
        for flag, value in (("--obd", args.obd), ("--gps", args.gps), ("--mesh", args.mesh), ("--rate", args.rate),
                            ("--outbox", args.outbox), ("--config", args.config),
                            ("--display", args.display), ("--track-file", args.track_file)):
            if value is not None:
                companion += [flag, str(value)]
    banner = f"Race dashboard serving on http://{settings.host}:{settings.port}/"
    # the monitor's key travels in its environment, never on its command line (any user can read that)
    env = {"DASHBOARD_API_KEY": settings.api_key} if settings.api_key else None
    return serve_with_companion(app, settings, companion, banner, env=env, listener=listener)


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    """Apply the database migrations."""
    from dashboard.server.store import make_engine, upgrade

    settings = Settings()
    _setup_logging(settings)
    settings.instance_path.mkdir(parents=True, exist_ok=True)
    upgrade(make_engine(settings.resolved_database_url()))
    print("database is at the latest migration")
    return 0


def render_schemas() -> dict[str, str]:
    """File name -> JSON text of every generated schema (OpenAPI and Socket.IO messages)."""
    from dashboard.schemas import SOCKET_MESSAGES
    from dashboard.server.openapi import openapi_document

    files = {"openapi.json": json.dumps(openapi_document(), indent=2, sort_keys=True) + "\n"}
    for name, model in SOCKET_MESSAGES.items():
        files[f"{name}.schema.json"] = json.dumps(model.model_json_schema(), indent=2, sort_keys=True) + "\n"
    return files


def cmd_schemas(args: argparse.Namespace) -> int:
    """Write the OpenAPI document and message JSON Schemas into schemas/."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in render_schemas().items():
        (out / name).write_text(text)
    print(f"wrote {len(render_schemas())} schema files to {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    parser = argparse.ArgumentParser(prog="dashboard", description="Live race-car telemetry.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the server (migrating the database first)",
                           description="Run the server: REST API, Socket.IO for cars and viewers, the pages. "
                           "Settings come from DASHBOARD_* variables (README, Settings).")
    serve.add_argument("--host", help="address to listen on (DASHBOARD_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=port_number,
                       help="port to listen on (DASHBOARD_PORT, default 5000; 0: any free port, printed)")
    collect = serve.add_argument_group("collect", "the server sits in the car: also run its monitor, feeding it")
    collect.add_argument("--collect", action="store_true", help="run `dashboard monitor` against this server")
    collect.add_argument("--car-id", default="car-1", help="this car's id (default %(default)s)")
    collect.add_argument("--obd", metavar="PORT", help="ELM327 adapter port")
    collect.add_argument("--gps", metavar="PORT", help="NMEA GPS port")
    collect.add_argument("--mesh", metavar="PORT", help="Meshtastic radio for LoRa summaries")
    collect.add_argument("--rate", type=float, help="frames per second")
    collect.add_argument("--outbox", metavar="PATH", help="the monitor's outbox file")
    collect.add_argument("--display", metavar="[HOST:]PORT", help="the monitor's driver display page (README: "
                         "the driver display in the car)")
    collect.add_argument("--track-file", metavar="FILE.json", help="the track of the display's own lap timing")
    collect.add_argument("--config", metavar="FILE", help="the monitor's TOML settings file (its car key...)")
    serve.set_defaults(func=cmd_serve)

    db = sub.add_parser("db", help="database tasks: `db upgrade` applies the migrations",
                        description="Database tasks on the database of the settings (DASHBOARD_DATABASE_URL, else "
                        "DASHBOARD_INSTANCE_PATH/dashboard.db).")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    db_sub.add_parser("upgrade", help="apply migrations").set_defaults(func=cmd_db_upgrade)

    schemas = sub.add_parser("schemas", help="regenerate schemas/ from the Pydantic models",
                             description="Write the OpenAPI document and the JSON Schema of every Socket.IO "
                             "message into schemas/ (or --out).")
    schemas.add_argument("--out", default=str(SCHEMAS_DIR))
    schemas.set_defaults(func=cmd_schemas)

    for module in ("dashboard.car.cli", "dashboard.car.mesh_cli", "dashboard.demo", "dashboard.export_cli",
                   "dashboard.import_cli", "dashboard.keys_cli"):
        try:
            mod = __import__(module, fromlist=["add_commands"])
        except ImportError as exc:
            if not exc.name or not module.startswith(exc.name):  # a missing optional part, not a broken one
                raise
            continue
        mod.add_commands(sub)
    return parser


SERVER_COMMANDS = ("serve", "demo")
# what `pip install` brings what a command imports (pyproject.toml's extras); said when a package is missing
COMMAND_EXTRAS = {"serve": "server,car", "demo": "server,car", "db": "server", "keys": "server",
                  "export": "server", "import": "server", "schemas": "server", "monitor": "car", "simulate": "car",
                  "mesh-gateway": "car,mesh"}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dashboard`` console script."""
    from dashboard.errors import ConfigError

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return _run(argv)
    except ValidationError as exc:  # a bad DASHBOARD_* value or TOML value: one line per setting
        if exc.title not in SETTINGS_MODELS:
            raise
        print(settings_error(exc), file=sys.stderr)
        return 2
    except ConfigError as exc:  # a key file missing or unreadable...: said in one line, the key never in it
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        extras = COMMAND_EXTRAS.get(argv[0] if argv else "")
        if not extras or not exc.name or exc.name.split(".")[0] == "dashboard":
            raise
        print(f"error: `dashboard {argv[0]}` needs packages that are not installed (no module {exc.name!r}): "
              f"pip install 'race-dashboard[{extras}]' (from a checkout: pip install '.[{extras}]')",
              file=sys.stderr)
        return 2


def _run(argv: list[str]) -> int:
    if argv and argv[0] in SERVER_COMMANDS and Settings().async_mode == "gevent":
        from gevent import monkey  # before the server's imports, so they get the cooperative stdlib

        if not monkey.is_module_patched("socket"):
            monkey.patch_all()
        import gevent

        # Greenlets do not keep a copy of the stack that spawned them (~24 frame records per connection, a fifth of
        # the objects a connection leaves to the cycle collector: see dashboard/server/connections.py)
        gevent.config.track_greenlet_tree = False
    args = build_parser().parse_args(argv)
    return args.func(args)


SETTINGS_MODELS = ("Settings", "MonitorSettings", "_Layered")


def settings_error(exc: ValidationError) -> str:
    """One line per bad setting, naming its variable (or TOML key): a wrong value is no traceback."""
    lines = []
    for err in exc.errors():
        name = ".".join(str(p) for p in err["loc"]) or "settings"
        value = err.get("input")
        shown = "" if name in SECRET_SETTINGS or isinstance(value, dict) else f" (got {str(value)[:40]!r})"
        lines.append(f"dashboard: setting {name} (DASHBOARD_{name.upper()} or its option): {err['msg']}{shown}")
    return "\n".join(lines)


SECRET_SETTINGS = ("api_key", "viewer_token", "metrics_token")


if __name__ == "__main__":
    sys.exit(main())
