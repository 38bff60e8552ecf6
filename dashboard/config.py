"""Every setting of the server and the tools, typed, defaulted and documented in one place.

Each field is overridable by an environment variable named ``DASHBOARD_`` +
the field name in capitals (``DASHBOARD_DATABASE_URL``...). Nothing else in
the package reads ``os.environ``.
"""
from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from dashboard.keyfile import key_from

# A club team's grid: a few cars and a pit gateway, tens of viewers (each page one WebSocket and up to 6 kept-alive
# requests while it loads). 2,000 leaves room for a busy weekend and a second team, and bounds what a flood can hold:
# ~50 KB per idle WebSocket (python -m bench.floods) is ~100 MB, and one process carries 1,000 live viewers (README).
MAX_CONNECTIONS = 2000
# Everyone behind one NAT (the paddock's Wi-Fi, a team's 4G router): 30 people with a page open, each page up to
# 7 connections while loading, plus the cars on the same uplink. One address alone can take an eighth of the total.
MAX_CONNECTIONS_PER_ADDRESS = 250
HEADER_TIMEOUT_S = 10.0  # a real client sends its request line and headers in one packet; 10 s covers a bad link
AUTH_TIMEOUT_S = 10.0  # a monitor or page connects its namespace right after the handshake (socket.io's JS: 45 s)


class Settings(BaseSettings):
    """Server settings; ``Settings()`` reads the environment."""

    model_config = SettingsConfigDict(env_prefix="DASHBOARD_", extra="ignore")

    instance_path: Path = Field(Path("instance"), description="folder of the SQLite database")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default sqlite in the instance folder")
    api_key: str | None = Field(None, repr=False, description="the admin bootstrap key (every right, key "
                                "management included); unset and no key created = open server")
    api_key_file: Path | None = Field(None, description="file holding api_key alone (0600, or systemd's "
                                      "LoadCredential=): the key stays out of the environment and command lines")
    viewer_token: str | None = Field(None, description="token every read needs (REST and viewers); unset = "
                                     "reads open")
    metrics_token: str | None = Field(None, description="token /metrics needs (Authorization: Bearer); unset = "
                                      "/metrics follows the viewer rule")
    keys_ttl_s: float = Field(5.0, gt=0, description="a key read from the database is trusted this long: a revoke "
                              "made elsewhere (another process, the command line) takes effect within it")
    auth_failures_per_minute: int = Field(10, gt=0, description="failed authentications one address may make in "
                                          "a minute; past it, its attempts are refused (429) until the minute moves")
    proxy_hops: int = Field(0, ge=0, le=5, description="reverse proxies in front (Caddy, nginx) whose "
                            "X-Forwarded-For is trusted for the client's address")
    max_connections: int = Field(MAX_CONNECTIONS, gt=0, description="connections held at once, bare TCP "
                                 "included (lowered at startup to what the file descriptor limit allows); more are "
                                 "closed at accept")
    max_connections_per_address: int = Field(MAX_CONNECTIONS_PER_ADDRESS, ge=0, description="connections one "
                                             "client address may hold (0 = no per-address cap); not applied behind a "
                                             "proxy (proxy_hops > 0), where every connection comes from the proxy")
    header_timeout_s: float = Field(HEADER_TIMEOUT_S, gt=0, description="a request line and headers must arrive "
                                    "within this long of the connection opening or of the previous response "
                                    "(slowloris, idle keep-alive)")
    auth_timeout_s: float = Field(AUTH_TIMEOUT_S, gt=0, description="a Socket.IO connection must have connected to a "
                                  "namespace (/monitor, /dashboard: its auth accepted) within this long")
    websocket_only: bool = Field(True, description="Socket.IO over WebSocket only (every client of ours); a "
                                 "long-polling handshake is refused before any session is made for it")
    session_idle_s: float = Field(300.0, gt=0, description="an active session silent this long expires")
    message_queue: str | None = Field(None, pattern=r"^rediss?://",
                                      description="redis:// URL of the Socket.IO queue for several processes")
    async_mode: str = Field("gevent", description="Flask-SocketIO async mode; gevent unless you know why not")
    host: str = Field("127.0.0.1", description="address `dashboard serve` listens on")
    port: int = Field(5000, ge=0, le=65535, description="port `dashboard serve` listens on")
    max_body_bytes: int = Field(1_048_576, gt=0, description="largest accepted HTTP body")
    max_import_bytes: int = Field(268_435_456, gt=0, description="largest log file accepted by POST /api/v1/imports "
                                  "(streamed to a temporary file; a million-row CSV is ~60-100 MB)")
    max_message_bytes: int = Field(8_388_608, gt=0, description="largest Socket.IO message: a telemetry batch of "
                                   "max_frames_per_batch frames of 128 channels fits; a larger one closes the link")
    max_setup_bytes: int = Field(65_536, gt=0, description="largest accepted car setup, as JSON")
    max_frames_per_batch: int = Field(1000, gt=0, description="most frames accepted in one telemetry event")
    broadcast_interval_s: float = Field(0.05, ge=0, description="longest frames to viewers are held to be sent "
                                        "together (only rooms whose fan-out would take more than fanout_share)")
    fanout_share: float = Field(0.2, gt=0, le=1, description="part of the event loop one session's fan-out may "
                                "take before its frames are coalesced")
    slow_viewer_s: float = Field(10.0, gt=0, description="a viewer that cannot take a message this long is dropped")
    recent_window_s: float = Field(60.0, ge=0, description="history sent to a viewer on join")
    max_exports: int = Field(4, gt=0, description="exports streaming at once (each a native thread and a database "
                             "connection); more answer 429")
    writer_batch_max: int = Field(2000, gt=0, description="most frames written in one database transaction")
    max_clock_ahead_s: float = Field(300.0, gt=0, description="frames stamped further ahead of the server's "
                                     "clock are refused (a car clock set wrong must not pin the latest values)")
    max_clock_behind_s: float = Field(86_400.0, gt=0, description="live frames stamped further behind the server's "
                                      "clock are refused (clock_behind); backfill from a car's outbox is taken at "
                                      "any age")
    expiry_check_s: float = Field(1.0, gt=0, description="how often idle sessions are looked for")
    team_interval_s: float = Field(0.5, gt=0, le=10, description="team view: the cars that changed are sent to its "
                                   "viewers at most this often (team.update), whatever the cars' frame rates")
    message_lora_after_s: float = Field(10.0, gt=0, description="pit-to-car messages: a car with no /monitor "
                                        "connection, or no frame for this long, is sent its undelivered messages "
                                        "over LoRa too (through the connected pit gateways)")
    log_level: str = Field("INFO", description="logging level")

    @model_validator(mode="after")
    def _read_key_file(self) -> "Settings":
        # ConfigError is no ValueError: pydantic lets it through as it is, never echoing the settings' values
        self.api_key = key_from(self.api_key, self.api_key_file)
        return self

    def resolved_database_url(self) -> str:
        """The database URL, defaulting to SQLite in the instance folder."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.instance_path / 'dashboard.db').resolve()}"
