"""pyproject.toml's dependencies and extras: the same pins as requirements.txt, and each package in one place."""
from __future__ import annotations

from packaging.utils import canonicalize_name

from tests.installs import extra, project, requirements_txt


def pins(requirements: list) -> dict[str, str]:
    """Canonical name -> the requirement as written (name[extras]==version), for comparing."""
    return {canonicalize_name(r.name): f"{canonicalize_name(r.name)}{sorted(r.extras)}{r.specifier}"
            for r in requirements}


def test_every_extra_is_pinned_exactly_as_in_requirements_txt() -> None:
    full = pins(requirements_txt())
    for name in ["", *project()["optional-dependencies"]]:
        for requirement in extra(name):
            assert str(requirement.specifier).startswith("=="), f"{requirement} in [{name}] is not pinned"
            key = canonicalize_name(requirement.name)
            assert pins([requirement])[key] == full.get(key), f"[{name}] {requirement} differs from requirements.txt"


def test_requirements_txt_is_the_union_of_the_extras() -> None:
    every = set()
    for name in ["", *project()["optional-dependencies"]]:
        every |= set(pins(extra(name)))
    assert every == set(pins(requirements_txt()))


def test_the_car_installs_no_server_and_no_radio() -> None:
    car = set(pins(extra("") + extra("car")))
    assert car.isdisjoint({"flask", "flask-socketio", "gevent", "sqlalchemy", "alembic", "psycopg", "redis",
                           "orjson", "prometheus-client", "flask-limiter", "meshtastic"})
    assert {"obd", "pyserial", "pynmea2", "python-socketio", "websocket-client"} <= car
    assert set(pins(extra("mesh"))) == {"meshtastic"}
    assert "obd" not in pins(extra("server"))
