"""deploy/: the systemd units pass `systemd-analyze verify`, the udev rules parse (and pass `udevadm test` where it
can run), the sample monitor TOML holds every setting and loads with the monitor's own loader."""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dashboard.car.settings import MonitorSettings, load_settings
from dashboard.cli import build_parser
from tests.servers import REPO

DEPLOY = REPO / "deploy"
UNITS = sorted(DEPLOY.glob("*.service"))
RULES = DEPLOY / "99-race-dashboard.rules"
SAMPLE_TOML = DEPLOY / "monitor.toml.example"
GATEWAY_ENV = DEPLOY / "mesh-gateway.env.example"
INSTALLED_DASHBOARD = "/opt/race-dashboard/.venv/bin/dashboard"  # where README's "In the car" puts the venv


def unit_settings(path: Path) -> dict[str, list[str]]:
    """Key -> every value it has in the unit (sections flattened; comments dropped)."""
    settings: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def exec_args(path: Path) -> list[str]:
    """ExecStart's arguments after the `dashboard` script, ${VARS} filled from the unit and the sample env file."""
    settings = unit_settings(path)
    variables = dict(line.split("=", 1) for line in GATEWAY_ENV.read_text().splitlines()
                     if line and not line.startswith("#"))
    for assignment in settings.get("Environment", []):
        name, value = assignment.split("=", 1)
        variables[name] = value
    command = re.sub(r"\$\{(\w+)\}", lambda m: variables[m.group(1)], settings["ExecStart"][0])
    argv = shlex.split(command)
    assert argv[0] == INSTALLED_DASHBOARD, argv
    return [str(SAMPLE_TOML) if a == "/etc/race-dashboard/monitor.toml" else a for a in argv[1:]]


def systemd_analyze() -> str:
    """The systemd-analyze binary; a missing one fails the test (CI installs Debian's systemd)."""
    found = shutil.which("systemd-analyze")
    if not found:
        pytest.fail("systemd-analyze is missing: apt-get install systemd (.ci/run does)")
    return found


def verify(unit: Path, launcher: Path) -> str:
    """`systemd-analyze verify` of a copy of ``unit`` whose ExecStart runs ``launcher``; everything it said."""
    copy = launcher.parent / unit.name
    copy.write_text(unit.read_text().replace(INSTALLED_DASHBOARD, str(launcher)))
    done = subprocess.run([systemd_analyze(), "verify", "--man=no", str(copy)], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "SYSTEMD_LOG_COLOR": "0"})
    return (f"exit {done.returncode}: " if done.returncode else "") + done.stdout + done.stderr


@pytest.fixture
def launcher(tmp_path: Path) -> Path:
    """An executable standing for the venv's `dashboard` script: the installed one, else one running this checkout."""
    path = tmp_path / "dashboard"
    installed = shutil.which("dashboard")
    path.write_text(f'#!/bin/sh\nexec {installed} "$@"\n' if installed else
                    f'#!/bin/sh\nexec {sys.executable} -m dashboard "$@"\n')
    path.chmod(0o755)
    return path


def test_the_three_units_are_shipped() -> None:
    assert [u.name for u in UNITS] == ["race-dashboard-collect.service", "race-dashboard-mesh-gateway.service",
                                       "race-dashboard-monitor.service"]


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.stem)
def test_systemd_analyze_verify_says_nothing(unit: Path, launcher: Path) -> None:
    assert verify(unit, launcher) == ""
    broken = launcher.parent / "broken" / unit.name  # the check can fail: an unknown key is reported
    broken.parent.mkdir()
    broken.write_text(unit.read_text().replace("[Service]\n", "[Service]\nRestartt=always\n"))
    assert "Unknown key" in verify(broken, launcher)


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.stem)
def test_units_run_unprivileged_restart_and_take_the_key_from_a_credential(unit: Path) -> None:
    settings = unit_settings(unit)
    assert settings["User"] == ["dashboard"] and settings["SupplementaryGroups"] == ["dialout"]
    assert settings["Restart"][0] in ("always", "on-failure") and float(settings["RestartSec"][0]) > 0
    assert settings["NoNewPrivileges"] == ["yes"] and settings["ProtectSystem"] == ["strict"]
    assert settings["PrivateTmp"] == ["yes"] and settings["CapabilityBoundingSet"] == [""]
    credential = settings["LoadCredential"][0]
    assert credential.startswith("api_key:/etc/race-dashboard/") and credential.endswith(".key")
    assert "DASHBOARD_API_KEY_FILE=%d/api_key" in settings["Environment"]
    assert not any(e.startswith("DASHBOARD_API_KEY=") for e in settings["Environment"])
    command = settings["ExecStart"][0]
    assert "key" not in command and "rdk_" not in unit.read_text()


@pytest.mark.parametrize("name", ["race-dashboard-monitor.service", "race-dashboard-collect.service"])
def test_the_car_units_start_after_the_adapters_appear(name: str) -> None:
    settings = unit_settings(DEPLOY / name)
    for key in ("After", "Wants"):
        assert {"dev-obd.device", "dev-gps.device"} <= set(" ".join(settings[key]).split())
    assert settings["StateDirectory"] == ["race-dashboard"]
    assert settings["StartLimitIntervalSec"] == ["0"]


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.stem)
def test_each_units_command_line_is_one_the_cli_takes(unit: Path) -> None:
    args = build_parser().parse_args(exec_args(unit))  # an unknown or missing option exits here
    assert args.command in ("monitor", "serve", "mesh-gateway")
    if args.command != "mesh-gateway":
        assert Path(args.config) == SAMPLE_TOML


# ------------------------------------------------------------------------------------------------ udev
TOKEN = re.compile(r'^(?P<key>[A-Z_]+)(?:\{(?P<attr>[A-Za-z_]+)\})?(?P<op>==|!=|\+=|-=|:=|=)"(?P<value>[^"]*)"$')
KEYS = {"SUBSYSTEM", "ATTRS", "ENV", "KERNEL", "SYMLINK", "TAG", "GROUP", "MODE"}


def rule_lines(text: str) -> list[tuple[int, str]]:
    """(line number, rule) of every rule, the commented-out alternatives (#SUBSYSTEM==...) included."""
    return [(n, line.lstrip("#")) for n, line in enumerate(text.splitlines(), 1)
            if line.startswith("SUBSYSTEM") or line.startswith("#SUBSYSTEM")]


def parse_rule(rule: str) -> list[tuple[str, str | None, str, str]]:
    """(key, attribute, operator, value) of each of the rule's comma-separated pieces; AssertionError if malformed."""
    pieces = []
    for token in rule.split(", "):
        match = TOKEN.match(token)
        assert match, f"not a udev key: {token!r}"
        assert match["key"] in KEYS, token
        pieces.append((match["key"], match["attr"], match["op"], match["value"]))
    return pieces


def test_every_udev_rule_names_a_device_by_its_usb_ids() -> None:
    text = RULES.read_text()
    names: dict[tuple[str, str], set[str]] = {}
    rules = rule_lines(text)
    assert len(rules) >= 8
    for number, rule in rules:
        pieces = {(key, attr): (op, value) for key, attr, op, value in parse_rule(rule)}
        assert pieces[("SUBSYSTEM", None)] == ("==", "tty"), number
        vendor, product = pieces[("ATTRS", "idVendor")], pieces[("ATTRS", "idProduct")]
        assert vendor[0] == product[0] == "==", number
        assert re.fullmatch(r"[0-9a-f]{4}", vendor[1]) and re.fullmatch(r"[0-9a-f]{4}", product[1]), number
        assert pieces[("SYMLINK", None)] in (("+=", "obd"), ("+=", "gps")), number
        assert pieces[("TAG", None)] == ("+=", "systemd"), number
        if not text.splitlines()[number - 1].startswith("#"):
            names.setdefault((vendor[1], product[1]), set()).add(pieces[("SYMLINK", None)][1])
    assert {"obd", "gps"} == set().union(*names.values())
    shared = {ids: found for ids, found in names.items() if len(found) > 1}
    assert not shared, f"one active chip id named both obd and gps: {shared}"
    for ids in ("0403:6001", "1a86:7523", "10c4:ea60", "067b:2303", "1546:01a7", "1546:01a8"):
        assert ids in text  # the common adapters' ids are listed
    assert "ID_PATH" in text and "ATTRS{serial}" in text  # how to tell two devices on one chip apart


def test_the_parser_refuses_a_broken_rule() -> None:
    with pytest.raises(AssertionError):
        parse_rule('SUBSYSTEM=="tty", ATTRS{idVendor}="0403", SYMLINK+="obd"'.replace('"0403"', "0403"))


def udevadm_test(rules: str, tmp_name: str) -> str | None:
    """What `udevadm test` says about these rules (installed for the run in /run/udev/rules.d); None if it can't run."""
    udevadm, ttys = shutil.which("udevadm"), sorted(Path("/sys/class/tty").glob("tty*"))
    run_rules = Path("/run/udev/rules.d")
    if not udevadm or not ttys or os.geteuid() != 0:
        return None
    run_rules.mkdir(parents=True, exist_ok=True)
    installed = run_rules / tmp_name
    installed.write_text(rules)
    try:
        done = subprocess.run([udevadm, "test", "--action=add", str(ttys[0].resolve())], capture_output=True,
                              text=True, timeout=60)
    finally:
        installed.unlink()
    said = done.stdout + done.stderr
    assert f"Reading rules file: {installed}" in said, said[-2000:]
    return "\n".join(line for line in said.splitlines() if line.startswith(f"{installed}:"))


def test_udevadm_test_reads_the_rules_without_a_complaint() -> None:
    complaints = udevadm_test(RULES.read_text(), f"99-race-dashboard-test-{os.getpid()}.rules")
    # .ci/run installs udev and runs as root; a machine without them fails here rather than skipping
    assert complaints is not None, "udevadm test needs root, udevadm (Debian's udev) and a tty in /sys"
    assert complaints == ""
    broken = udevadm_test('SUBSYSTEM=="tty", ATTRS{idVendor}="0403", SYMLINK+="obd"\n',
                          f"99-race-dashboard-broken-{os.getpid()}.rules")
    assert broken and "Invalid operator" in broken  # it does complain about a broken rule


# --------------------------------------------------------------------------------------------- sample TOML
SETTING_LINE = re.compile(r"^#? ?(?P<name>[a-z_]+) = (?P<value>.+)$")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No DASHBOARD_* variable of the machine leaks into the settings."""
    for name in list(os.environ):
        if name.startswith("DASHBOARD_"):
            monkeypatch.delenv(name)


def test_the_sample_toml_loads_as_shipped(clean_env: None) -> None:
    settings = load_settings(SAMPLE_TOML)
    assert settings.obd_port == "/dev/obd" and settings.gps_port == "/dev/gps"
    assert settings.outbox_path == Path("/var/lib/race-dashboard/outbox.sqlite")
    assert settings.api_key is None  # the key comes from the unit's credential, not from this file


def test_the_sample_toml_has_every_setting_each_with_a_valid_value(clean_env: None, tmp_path: Path) -> None:
    lines = SAMPLE_TOML.read_text().splitlines()
    shown = [m["name"] for m in map(SETTING_LINE.match, lines) if m]
    assert sorted(shown) == sorted(MonitorSettings.model_fields), "settings missing from or doubled in the sample"
    for index, line in enumerate(lines):  # each setting says what it is on the line above
        if SETTING_LINE.match(line):
            assert lines[index - 1].startswith("# ") and not SETTING_LINE.match(lines[index - 1]), line
    uncommented = [line.lstrip("# ") if SETTING_LINE.match(line) and not line.startswith(("# api_key", "api_key"))
                   else line for line in lines]
    every = tmp_path / "every.toml"
    every.write_text("\n".join(uncommented) + "\n")
    settings = load_settings(every)  # every example value is one the loader takes
    assert settings.mesh_port == "/dev/ttyACM0" and settings.obd_protocol == "6"
    assert settings.obd_commands == MonitorSettings.model_fields["obd_commands"].default
