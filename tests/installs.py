"""What each extra of pyproject.toml installs, read from pyproject.toml, requirements.txt and the installed metadata."""
from __future__ import annotations

import importlib.metadata as metadata
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.servers import REPO

PROJECT = "race-dashboard"


def project() -> dict:
    """The [project] table of pyproject.toml."""
    with open(REPO / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]


def extra(name: str) -> list[Requirement]:
    """The requirements of one extra; ``""`` for the base dependencies."""
    table = project()
    lines = table.get("dependencies", []) if name == "" else table["optional-dependencies"][name]
    return [Requirement(line) for line in lines]


def requirements_txt() -> list[Requirement]:
    """The pinned lines of requirements.txt (comments dropped)."""
    lines = (REPO / "requirements.txt").read_text().splitlines()
    return [Requirement(line.split("#", 1)[0]) for line in lines if line.split("#", 1)[0].strip()]


def closure(requirements: list[Requirement]) -> set[str]:
    """Canonical names of these distributions and of everything they pull in, from the installed metadata."""
    seen: set[str] = set()
    todo = [(canonicalize_name(r.name), frozenset(r.extras)) for r in requirements]
    while todo:
        name, extras = todo.pop()
        key = name + "[" + ",".join(sorted(extras)) + "]"
        if key in seen:
            continue
        seen.add(key)
        for line in metadata.requires(name) or []:
            req = Requirement(line)
            wanted = [""] + sorted(extras)
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in wanted):
                todo.append((canonicalize_name(req.name), frozenset(req.extras)))
    return {key.partition("[")[0] for key in seen}


def module_owners() -> dict[str, set[str]]:
    """Top-level module name -> canonical names of the installed distributions that provide it."""
    return {module: {canonicalize_name(d) for d in dists}
            for module, dists in metadata.packages_distributions().items()}


def modules_outside(allowed: set[str]) -> set[str]:
    """Top-level modules that only distributions outside ``allowed`` (and not this project) provide."""
    allowed = allowed | {canonicalize_name(PROJECT)}
    return {module for module, owners in module_owners().items()
            if not owners & allowed and module not in ("dashboard", "tests")}


def owners_of(modules: list[str]) -> set[str]:
    """The distributions whose modules these are (stdlib and unknown names give none)."""
    owners = module_owners()
    return set().union(*(owners.get(m, set()) for m in modules))
