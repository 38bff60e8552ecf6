"""A key read from a file: how a service gets its secret without it on a command line or in a unit file.

The file holds the key alone (a trailing newline is fine): a 0600 file of the service's user, or the
credential systemd's ``LoadCredential=`` puts in ``$CREDENTIALS_DIRECTORY`` (``%d`` in a unit). The key
is never part of an error message; the path is.
"""
from __future__ import annotations

import logging
import stat
from pathlib import Path

from dashboard.errors import ConfigError

log = logging.getLogger(__name__)

MAX_KEY_BYTES = 4096  # a key is ~60 characters; a bigger file is the wrong file, not a key


def read_key_file(path: str | Path) -> str:
    """The key in ``path`` (surrounding whitespace dropped); ConfigError naming the path when it cannot be used."""
    path = Path(path)
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"key file {path} is not a regular file", field="api_key_file")
        if info.st_size > MAX_KEY_BYTES:
            raise ConfigError(f"key file {path} is {info.st_size} bytes: not a key", field="api_key_file")
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"key file {path} cannot be read: {exc.strerror}", field="api_key_file") from None
    try:
        key = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigError(f"key file {path} is not text", field="api_key_file") from None
    if not key or any(c.isspace() for c in key):
        raise ConfigError(f"key file {path} must hold one key alone", field="api_key_file")
    if info.st_mode & 0o077:
        log.warning("key file %s can be read by other users: chmod 600 it", path)
    return key


def key_from(api_key: str | None, api_key_file: str | Path | None) -> str | None:
    """The key from whichever of the two is given; ConfigError when both are, with different keys."""
    if api_key_file is None:
        return api_key
    key = read_key_file(api_key_file)
    if api_key and api_key != key:
        raise ConfigError("a key is given twice, as api_key (or DASHBOARD_API_KEY) and in api_key_file "
                          f"({api_key_file}): keep one", field="api_key_file")
    return key
