"""Keys from files: --api-key-file, api_key_file in TOML, DASHBOARD_API_KEY_FILE (systemd's LoadCredential=)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from dashboard.car.settings import load_settings
from dashboard.config import Settings
from dashboard.errors import ConfigError
from dashboard.keyfile import key_from, read_key_file
from tests.servers import REPO, ServerProcess

KEY = "rdk_0123456789ab.secret-part-of-the-key"


def key_file(folder: Path, text: str = KEY + "\n", mode: int = 0o600) -> Path:
    path = folder / "car.key"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_the_key_alone_newline_dropped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert read_key_file(key_file(tmp_path)) == KEY
    assert not caplog.records
    assert read_key_file(key_file(tmp_path, mode=0o644)) == KEY
    assert "chmod 600" in caplog.text and KEY not in caplog.text


@pytest.mark.parametrize("text, says", [("", "one key alone"), ("a b\n", "one key alone"),
                                        ("x" * 5000, "not a key")])
def test_a_file_that_is_no_key_is_refused_without_echoing_it(tmp_path: Path, text: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        read_key_file(key_file(tmp_path, text))
    assert says in caught.value.message and str(tmp_path) in caught.value.message
    assert not text.strip() or text.strip() not in caught.value.message


def test_missing_unreadable_and_twice(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        read_key_file(tmp_path / "nope.key")
    with pytest.raises(ConfigError, match="not a regular file"):
        read_key_file(tmp_path)
    path = key_file(tmp_path)
    assert key_from(None, path) == KEY and key_from(KEY, path) == KEY and key_from("other", None) == "other"
    with pytest.raises(ConfigError, match="given twice") as caught:
        key_from("another-key", path)
    assert "another-key" not in caught.value.message and KEY not in caught.value.message


def test_monitor_settings_take_the_file_from_every_layer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DASHBOARD_API_KEY", raising=False)
    path = key_file(tmp_path)
    toml = tmp_path / "monitor.toml"
    toml.write_text(f'[monitor]\napi_key_file = "{path}"\n')
    assert load_settings(toml).api_key == KEY  # the TOML file
    assert load_settings(None, api_key_file=str(path)).api_key == KEY  # --api-key-file
    monkeypatch.setenv("DASHBOARD_API_KEY_FILE", str(path))
    settings = load_settings(None)  # DASHBOARD_API_KEY_FILE (systemd: %d/api_key)
    assert settings.api_key == KEY and KEY not in repr(settings)


def test_server_settings_read_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DASHBOARD_API_KEY", raising=False)
    monkeypatch.setenv("DASHBOARD_API_KEY_FILE", str(key_file(tmp_path)))
    settings = Settings()
    assert settings.api_key == KEY and KEY not in repr(settings)


def test_a_bad_key_file_is_one_line_on_stderr(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASHBOARD_")}
    env["PYTHONPATH"] = str(REPO)
    for args in (["monitor", "--gps", "/dev/null", "--api-key-file", str(tmp_path / "none.key")],
                 ["simulate", "--server", "http://127.0.0.1:9", "--api-key-file", str(tmp_path / "none.key")],
                 ["mesh-gateway", "--device", "/dev/null", "--server", "http://127.0.0.1:9",
                  "--api-key-file", str(tmp_path / "none.key")]):
        done = subprocess.run([sys.executable, "-m", "dashboard", *args], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 2, done.stderr
        assert done.stderr == f"error: key file {tmp_path / 'none.key'} cannot be read: No such file or directory\n"


def test_the_server_takes_its_key_from_a_file(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "server", api_key=None, api_key_file=str(key_file(tmp_path)))
    server.start()
    try:
        body = {"name": "Key file", "car_id": "CAR1"}
        assert requests.post(f"{server.url}/api/v1/sessions", json=body, timeout=5).status_code == 401
        created = requests.post(f"{server.url}/api/v1/sessions", json=body, headers={"X-API-Key": KEY}, timeout=5)
        assert created.status_code == 201, created.text
    finally:
        server.stop()
    assert KEY not in server.log_path.read_text()
