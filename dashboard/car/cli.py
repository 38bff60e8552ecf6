"""Command-line entry points of the in-car half: `dashboard monitor` and `dashboard simulate`.

``add_commands(subparsers)`` registers both on the main parser's argparse
subparsers; each sets ``func`` so the caller runs ``args.func(args)``, which
returns the process exit code.
"""
from __future__ import annotations

import argparse
import logging
from typing import Any, NoReturn

log = logging.getLogger(__name__)
NO_KEY_ON_COMMAND_LINE = ("keys are not taken on the command line (every user of the machine can read it, and "
                          "shell histories keep it): give a file holding it with --api-key-file, put api_key in "
                          "the TOML file given with --config, or set DASHBOARD_API_KEY in the environment")


class _RefuseKey(argparse.Action):
    """``--api-key`` is refused with the reason and where a key goes instead."""

    def __call__(self, parser: argparse.ArgumentParser, *_args: Any, **_kwargs: Any) -> NoReturn:
        parser.error(NO_KEY_ON_COMMAND_LINE)


def add_key_options(parser: argparse.ArgumentParser) -> None:
    """``--config``, ``--api-key-file`` and ``--ca-cert``, and a refusal of ``--api-key`` (monitor, simulate,
    mesh-gateway)."""
    parser.add_argument("--config", metavar="FILE", help="TOML settings file ([monitor] table or top level): "
                        "api_key or api_key_file goes here, or in DASHBOARD_API_KEY(_FILE)")
    parser.add_argument("--api-key-file", metavar="FILE", help="file holding the key alone (chmod 600; or "
                        "systemd's LoadCredential=); never the key itself on a command line")
    parser.add_argument("--ca-cert", metavar="FILE", help="PEM bundle of a private CA that signed the server's "
                        "certificate (an https:// server is always verified; without this, against the system's CAs)")
    parser.add_argument("--api-key", nargs="?", action=_RefuseKey, help=argparse.SUPPRESS)


def add_commands(subparsers: Any) -> None:
    """Register the `monitor` and `simulate` subcommands."""
    monitor = subparsers.add_parser(
        "monitor", help="run the in-car monitor (OBD-II, GPS, CAN bus → server)",
        description="Read an ELM327 OBD-II adapter, an NMEA GPS and/or a CAN bus (with its DBC), keep every frame "
                    "in an on-disk outbox and push it to the server. PORT is a device/pty path or socket://host:port.")
    monitor.add_argument("--server", dest="server_url", metavar="URL", help="server URL, e.g. http://pit:5000")
    monitor.add_argument("--car-id", metavar="ID", help="this car's id")
    monitor.add_argument("--obd", dest="obd_port", metavar="PORT", help="ELM327 adapter port")
    monitor.add_argument("--obd-protocol", metavar="ID", help='ELM327 protocol "1".."A" (faster connect)')
    monitor.add_argument("--gps", dest="gps_port", metavar="PORT", help="NMEA GPS port")
    monitor.add_argument("--can", dest="can_bus", metavar="INTERFACE:CHANNEL",
                         help="CAN bus as python-can names it: socketcan:can0, slcan:/dev/ttyACM0, gs_usb:0...")
    monitor.add_argument("--dbc", dest="can_dbc", metavar="FILE", help="DBC file of the CAN bus (with --can)")
    monitor.add_argument("--can-map", metavar="FILE", help="TOML map of DBC signals to channels, with units "
                         "(default: every signal, named after it)")
    monitor.add_argument("--can-bitrate", type=int, metavar="BPS", help="CAN bit rate for slcan, gs_usb... "
                         "(socketcan's is set with ip link)")
    monitor.add_argument("--mesh", dest="mesh_port", metavar="PORT",
                         help="Meshtastic radio for LoRa summaries: serial device or tcp://host[:4403]")
    monitor.add_argument("--gps-baudrate", type=int, metavar="BAUD", help="GPS baud rate (default 9600)")
    monitor.add_argument("--rate", dest="rate_hz", type=float, metavar="HZ", help="frames per second (default 10)")
    monitor.add_argument("--outbox", dest="outbox_path", metavar="PATH", help="SQLite outbox file")
    monitor.add_argument("--inbox-socket", metavar="PATH", help="UNIX socket where a local script reads and "
                         "answers pit-to-car messages (off by default; --display serves the driver's page)")
    monitor.add_argument("--track", metavar="NAME", help="time the sessions on this stored track (its name, any case); "
                         "an unknown one is logged and the session starts untimed")
    monitor.add_argument("--track-id", metavar="ID", help="time the sessions on this stored track (its id)")
    monitor.add_argument("--display", metavar="[HOST:]PORT", help="serve the driver display's page here (host "
                         "127.0.0.1 unless given; 0.0.0.0:PORT for a phone on the car's Wi-Fi); off by default")
    monitor.add_argument("--track-file", metavar="FILE.json", help="the track for the display's own lap timing, "
                         "in the server's track JSON shape (default: --track/--track-id fetched from the server)")
    add_key_options(monitor)
    monitor.set_defaults(func=cmd_monitor)

    simulate = subparsers.add_parser(
        "simulate", help="replay a recorded GPS log as a simulated car",
        description="Replay a real recorded NMEA log (default: the bundled Orlando Kart Center laps) "
                    "and derive engine channels from it, through the same pipeline as `monitor`.")
    simulate.add_argument("--server", dest="server_url", metavar="URL", required=True, help="server URL")
    simulate.add_argument("--car-id", metavar="ID", default="sim-1", help="car id (default sim-1)")
    simulate.add_argument("--speedup", type=float, default=1.0, metavar="N",
                          help="replay N times faster; laps keep their recorded length (the recording's own times, "
                               "shifted to now)")
    simulate.add_argument("--log", dest="log_path", metavar="FILE", help="NMEA log to replay")
    simulate.add_argument("--once", action="store_true", help="play the log once, send everything, exit")
    simulate.add_argument("--display", metavar="[HOST:]PORT", help="serve the driver display's page here (host "
                          "127.0.0.1 unless given), laps timed on the bundled log's track")
    simulate.add_argument("--outbox", dest="outbox_path", metavar="PATH", help="SQLite outbox file")
    add_key_options(simulate)
    simulate.set_defaults(func=cmd_simulate)


def _setup_logging(level: str) -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _radio_installed() -> bool:
    """Whether meshtastic (the [mesh] extra) can be imported: a car without a radio installs none of it."""
    try:
        import meshtastic  # noqa: F401
    except ImportError:
        return False
    return True


def _can_ready(settings: Any) -> bool:
    """Whether --can can run: its packages installed (the [can] extra), the bus named well, the DBC and map usable."""
    try:
        import can  # noqa: F401
        import cantools  # noqa: F401
    except ImportError:
        log.error("--can needs the CAN packages: pip install 'race-dashboard[can]' (from a checkout: "
                  "pip install '.[car,can]')")
        return False
    from dashboard.car.can_decoder import load_decoder
    from dashboard.car.can_map import CanMapError
    from dashboard.car.can_source import CanSpecError, check_interface, parse_bus

    if settings.can_dbc is None:
        log.error("--can needs the bus's DBC file: --dbc FILE.dbc")
        return False
    try:
        check_interface(parse_bus(settings.can_bus)[0])
        decoder = load_decoder(settings.can_dbc, settings.can_map)
    except (CanSpecError, CanMapError) as exc:
        log.error("%s", exc)
        return False
    log.info("CAN %s: %d channel(s) from %s", settings.can_bus, len(decoder.channels), settings.can_dbc)
    return True


def cmd_monitor(args: argparse.Namespace) -> int:
    """Run `dashboard monitor`."""
    from dashboard.car.monitor import run_monitor

    overrides = {k: getattr(args, k, None) for k in (
        "server_url", "car_id", "obd_port", "obd_protocol", "gps_port", "gps_baudrate", "mesh_port",
        "rate_hz", "outbox_path", "ca_cert", "track", "track_id", "api_key_file", "inbox_socket",
        "display", "track_file", "can_bus", "can_dbc", "can_map", "can_bitrate")}
    from dashboard.car.settings import load_settings  # here, not at import: `dashboard serve` builds this parser

    settings = load_settings(getattr(args, "config", None), **overrides)
    _setup_logging(settings.log_level)
    if not settings.obd_port and not settings.gps_port and not settings.can_bus:
        log.error("give at least one source: --obd PORT, --gps PORT and/or --can INTERFACE:CHANNEL")
        return 2
    if settings.can_bus and not _can_ready(settings):
        return 2
    if settings.mesh_port and not _radio_installed():
        log.error("--mesh needs the radio's packages: pip install 'race-dashboard[mesh]' (from a checkout: "
                  "pip install '.[car,mesh]')")
        return 2
    run_monitor(settings)
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    """Run `dashboard simulate`."""
    from dashboard.car.settings import load_settings
    from dashboard.car.simulate import run_simulation

    settings = load_settings(args.config, ca_cert=args.ca_cert, api_key_file=args.api_key_file)
    _setup_logging(settings.log_level)
    summary = run_simulation(
        args.server_url, car_id=args.car_id, api_key=settings.api_key, speedup=args.speedup,
        log_path=args.log_path, loop=not args.once, outbox_path=args.outbox_path, ca_cert=settings.ca_cert,
        display=args.display,
    )
    print(f"session {summary['session_id']}: {summary['frames']} frames made, {summary['backlog']} unsent")
    return 0 if not summary["backlog"] else 1
