"""The command line: `dashboard db upgrade` creates the schema; `--help` lists every command."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

from tests.servers import REPO


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dashboard", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=60, env={**os.environ, **(env or {})})


def test_db_upgrade_creates_the_tables(tmp_path):
    result = run("db", "upgrade", env={"DASHBOARD_INSTANCE_PATH": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(tmp_path / "dashboard.db") as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert {"sessions", "session_events", "setups", "frames", "alembic_version"} <= tables


def test_help_lists_every_command():
    result = run("--help")
    assert result.returncode == 0
    for command in ("serve", "db", "schemas", "demo", "monitor", "simulate", "mesh-gateway", "export", "import"):
        assert command in result.stdout


def test_a_bad_setting_is_one_line_naming_its_variable_not_a_traceback(tmp_path):
    for args, env, variable in ((("demo",), {"DASHBOARD_PORT": "abc"}, "DASHBOARD_PORT"),
                                (("monitor", "--server", "http://127.0.0.1:9", "--car-id", "c1",
                                  "--outbox", str(tmp_path / "o.sqlite")), {"DASHBOARD_RATE_HZ": "fast"},
                                 "DASHBOARD_RATE_HZ")):
        result = run(*args, env={"DASHBOARD_INSTANCE_PATH": str(tmp_path), **env})
        assert result.returncode == 2, (args, result.stderr)
        assert "Traceback" not in result.stderr and result.stderr.strip().count("\n") == 0, result.stderr
        assert variable in result.stderr and not result.stdout


def test_every_command_says_what_it_does():
    import argparse

    from dashboard.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    lines = {action.dest: action.help for action in sub._choices_actions}
    assert set(lines) == set(sub.choices)  # every command has its line in `dashboard --help`
    for name, parser in sub.choices.items():
        assert lines[name] and len(lines[name]) > 10, name
        assert parser.description and len(parser.description) > 20, f"`dashboard {name} --help` has no description"
    overview = run("--help").stdout
    for name, line in lines.items():
        assert name in overview and line.split()[0] in overview
