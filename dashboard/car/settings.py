"""Settings of the in-car monitor and the simulator, typed and documented in one place.

Precedence, highest first: command-line options, ``DASHBOARD_*`` environment
variables, the TOML file given with ``--config`` (top level or a ``[monitor]``
table), then these defaults.
"""
from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from dashboard.car.display.server import parse_address
from dashboard.car.mesh import DEFAULT_INTERVAL_S as DEFAULT_MESH_INTERVAL_S
from dashboard.car.mesh import MIN_INTERVAL_S as MIN_MESH_INTERVAL_S
from dashboard.car.obd_source import DEFAULT_COMMANDS, DTC_INTERVAL_S
from dashboard.car.outbox import DEFAULT_MAX_FRAMES
from dashboard.car.uplink import ACK_TIMEOUT_S, BACKLOG_FPS, BATCH_MAX, HEARTBEAT_S
from dashboard.errors import ConfigError
from dashboard.keyfile import key_from


class MonitorSettings(BaseSettings):
    """Settings of `dashboard monitor` / `dashboard simulate`; ``MonitorSettings()`` reads the environment."""

    model_config = SettingsConfigDict(env_prefix="DASHBOARD_", extra="ignore")

    server_url: str = Field("http://127.0.0.1:5000", description="the dashboard server")
    car_id: str = Field("car-1", description="this car's id (letters, digits, _.:-)")
    api_key: str | None = Field(None, repr=False, description="this car's key (a car key, `dashboard keys create "
                                "--role car`); from the TOML file or DASHBOARD_API_KEY, never the command line")
    api_key_file: Path | None = Field(None, description="file holding the key alone (0600, or systemd's "
                                      "LoadCredential=): --api-key-file, or DASHBOARD_API_KEY_FILE")
    ca_cert: Path | None = Field(None, description="PEM bundle of a private CA that signed the server's "
                                 "certificate (https:// servers are always verified)")
    session_name: str = Field("", description="name of a session the monitor creates")
    track: str | None = Field(None, description="a stored track by name (case-insensitive): the sessions the monitor "
                              "starts are timed on it; one the server does not know is logged and the session "
                              "starts untimed")
    track_id: str | None = Field(None, description="a stored track by id (GET /api/v1/tracks): the sessions the "
                                 "monitor starts are timed on it; wins over track")
    obd_port: str | None = Field(None, description="ELM327 adapter: device path, or socket://host:port")
    obd_protocol: str | None = Field(None, description='ELM327 protocol id ("1"-"A"); unset = auto, ~3 s slower')
    obd_baudrate: int | None = Field(None, description="adapter baud rate; unset = auto-detect")
    obd_commands: list[str] = Field(list(DEFAULT_COMMANDS), description="python-obd command names to watch")
    dtc_interval_s: float = Field(DTC_INTERVAL_S, ge=0, description="read trouble codes this often; 0 = never")
    gps_port: str | None = Field(None, description="NMEA GPS: device path, or socket://host:port")
    mesh_port: str | None = Field(None, description="Meshtastic radio: serial device, or tcp://host[:4403]")
    mesh_interval_s: float = Field(DEFAULT_MESH_INTERVAL_S, ge=MIN_MESH_INTERVAL_S,
                                   description="seconds between LoRa summaries (airtime budget: see mesh.py)")
    gps_baudrate: int = Field(9600, gt=0, description="GPS baud rate")
    can_bus: str | None = Field(None, description="CAN bus as python-can names it, INTERFACE:CHANNEL: socketcan:can0, "
                                "slcan:/dev/ttyACM0, gs_usb:0... (needs pip install '.[car,can]')")
    can_dbc: Path | None = Field(None, description="the DBC file describing the bus's messages (needed with can_bus)")
    can_map: Path | None = Field(None, description="TOML map: which DBC signal becomes which channel, unit "
                                 "conversion (tests/data/can/abs-map.toml); unset: every signal, named after it")
    can_bitrate: int | None = Field(None, gt=0, description="bus bit rate for adapters python-can sets up (slcan, "
                                    "gs_usb...); socketcan's is set with ip link")
    rate_hz: float = Field(10.0, gt=0, le=100, description="frames per second")
    outbox_path: Path = Field(Path("instance/outbox.sqlite"), description="SQLite outbox file")
    trust_system_clock: bool = Field(False, description="take the system clock as right before the first GPS fix "
                                     "even when the kernel says it is not NTP-synchronized (a battery-backed "
                                     "clock); otherwise frames wait without a date until a fix or a sync")
    inbox_socket: Path | None = Field(None, description="UNIX socket of the local inbox control (pit-to-car "
                                      "messages: a local script reads and answers them through it); none: off")
    display: str | None = Field(None, description="the driver display's page: PORT or HOST:PORT (host 127.0.0.1 "
                                "unless given: 0.0.0.0 opens it to a phone on the car's Wi-Fi); none: off")
    track_file: Path | None = Field(None, description="a track in the server's JSON shape, for the car's own lap "
                                    "timing (the display's lap and delta) when the server never gives it one")
    outbox_max_frames: int = Field(DEFAULT_MAX_FRAMES, gt=0, description="oldest frames dropped above this")
    batch_max: int = Field(BATCH_MAX, gt=0, le=1000, description="frames per telemetry emit")
    ack_timeout_s: float = Field(ACK_TIMEOUT_S, gt=0, description="wait this long for a server ack")
    heartbeat_s: float = Field(HEARTBEAT_S, gt=0, description="heartbeat interval")
    backlog_fps: float = Field(BACKLOG_FPS, gt=0, description="backlog drain cap, frames/s")
    max_source_failures: int = Field(5, gt=0, description="a source crashing this often in a row is given up")
    log_level: str = Field("INFO", description="logging level")

    @field_validator("display", mode="before")
    @classmethod
    def _check_display(cls, value: Any) -> str | None:
        """PORT (a TOML number too) or HOST:PORT, kept as HOST:PORT."""
        if value is None or value == "":
            return None
        try:
            host, port = parse_address(value)
        except ConfigError as exc:
            raise ValueError(exc.message) from None
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    @model_validator(mode="after")
    def _read_key_file(self) -> "MonitorSettings":
        # ConfigError is no ValueError: pydantic lets it through as it is, never echoing the settings' values
        self.api_key = key_from(self.api_key, self.api_key_file)
        return self


def read_toml(path: str | Path) -> dict[str, Any]:
    """The monitor table of a TOML file (``[monitor]`` if present, else the top level)."""
    with open(path, "rb") as f:
        data = tomllib.load(f)
    section = data.get("monitor", data)
    return {k.replace("-", "_"): v for k, v in section.items() if not isinstance(v, dict)}


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> MonitorSettings:
    """Settings from overrides (CLI) > environment > TOML file > defaults."""
    file_values = read_toml(config_file) if config_file else {}
    given = {k: v for k, v in overrides.items() if v is not None}

    class _Layered(MonitorSettings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return init_settings, env_settings, InitSettingsSource(settings_cls, init_kwargs=file_values)

    return MonitorSettings.model_validate(_Layered(**given).model_dump())
