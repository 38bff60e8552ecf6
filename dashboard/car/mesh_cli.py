"""The ``dashboard mesh-gateway`` command: the pit's LoRa radio feeding the server."""
from __future__ import annotations

import argparse
import json
import logging
from typing import Any

from dashboard.car.cli import add_key_options


def add_commands(subparsers: Any) -> None:
    """Register ``mesh-gateway`` on the ``dashboard`` command's subparsers; it sets ``func(args) -> int``."""
    parser = subparsers.add_parser(
        "mesh-gateway",
        help="forward car summaries received over Meshtastic LoRa to the server",
        description="Listen on a Meshtastic radio for race-dashboard summaries (private app port 256) "
        "and forward each to the server's /monitor namespace as a `lora` event.",
    )
    parser.add_argument("--device", required=True, metavar="PORT", help="serial device (/dev/ttyUSB0) or tcp://host[:4403]")
    parser.add_argument("--server", required=True, metavar="URL", help="dashboard server, e.g. http://pit-laptop:5000")
    parser.add_argument("--gateway-id", default=None,
                        help="id the gateway connects with (default: mesh-gateway)")
    parser.add_argument(
        "--car",
        action="append",
        default=[],
        metavar="CAR_ID",
        help="a car expected on the channel (repeatable); resolves car ids, and drops other cars' summaries",
    )
    add_key_options(parser)
    parser.set_defaults(func=mesh_gateway_command)


def mesh_gateway_command(args: argparse.Namespace) -> int:
    """Run the gateway until Ctrl-C; print its counters as JSON on exit."""
    from dashboard.car.settings import load_settings

    # the gateway key: --api-key-file, the TOML file, or DASHBOARD_API_KEY(_FILE)
    settings = load_settings(args.config, ca_cert=args.ca_cert, api_key_file=args.api_key_file)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # imported here, not at import: every `dashboard` command, `serve` included, builds this parser
    from dashboard.car.mesh_gateway import DEFAULT_GATEWAY_ID, run_gateway

    counts = run_gateway(args.device, args.server, settings.api_key,
                         gateway_id=args.gateway_id or DEFAULT_GATEWAY_ID, cars=args.car, ca_cert=settings.ca_cert)
    print(json.dumps(counts, sort_keys=True))
    return 0
