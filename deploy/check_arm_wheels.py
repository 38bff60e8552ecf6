"""Which of the car's (and the server's) pinned packages have wheels for Raspberry Pi OS on the package index.

    python3 deploy/check_arm_wheels.py                  # the [car] extra and the base dependencies
    python3 deploy/check_arm_wheels.py --extras car,server,mesh

Resolves the pins of pyproject.toml with their dependencies (``pip download`` for this machine), then asks the
index, package by package, for a wheel that pip on each Pi would take (``pip download --only-binary=:all:
--no-deps --platform ... --python-version 3.11 --implementation cp``):

- 64-bit Raspberry Pi OS (bookworm, aarch64, Python 3.11, glibc 2.36): manylinux_2_17..2_36_aarch64, linux_aarch64
- 32-bit Raspberry Pi OS (bookworm, armhf on a Pi 2/3/4/5: armv7l, Python 3.11): manylinux_2_17..2_36_armv7l,
  linux_armv7l. (A Pi Zero / Pi 1 is armv6l: the index has no wheels for it at all.)

Prints one line per package: pure Python, a wheel for the platform, or NO WHEEL (pip builds it from source).
Needs the network (the package index). piwheels (the Pi's own wheel index, which pip on Raspberry Pi OS also
reads) is not consulted here: it may cover what this reports missing, for some versions.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYTHON = "3.11"  # Raspberry Pi OS bookworm's python3
GLIBC_MINORS = range(17, 37)  # bookworm has glibc 2.36; manylinux2014 is 2.17
PROFILES = {
    "64-bit Pi OS (aarch64)": [f"manylinux_2_{m}_aarch64" for m in GLIBC_MINORS] + ["manylinux2014_aarch64",
                                                                                   "linux_aarch64"],
    "32-bit Pi OS (armv7l)": [f"manylinux_2_{m}_armv7l" for m in GLIBC_MINORS] + ["manylinux2014_armv7l",
                                                                                 "linux_armv7l"],
}
WHEEL = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)(?:-\d[^-]*)?-(?P<py>[^-]+)-(?P<abi>[^-]+)-(?P<plat>[^-]+)\.whl$")


def pins(extras: list[str]) -> list[str]:
    """The base dependencies and the given extras' pins, from pyproject.toml."""
    with open(REPO / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)["project"]
    found = list(project.get("dependencies", []))
    for name in extras:
        found += project["optional-dependencies"][name]
    return sorted(set(found))


def pip(*args: str) -> subprocess.CompletedProcess:
    """``python -m pip`` quietly, its output kept."""
    return subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
                          capture_output=True, text=True)


def resolve(requirements: list[str], folder: Path) -> list[tuple[str, str]]:
    """(name, version) of the requirements and all their dependencies, as pip resolves them here."""
    done = pip("download", "-q", "--only-binary=:all:", "-d", str(folder), *requirements)
    if done.returncode:
        sys.exit(done.stderr)
    out = []
    for wheel in sorted(folder.glob("*.whl")):
        match = WHEEL.match(wheel.name)
        if match:
            out.append((match["name"], match["version"]))
    return out


def wheel_for(name: str, version: str, platforms: list[str], folder: Path) -> str | None:
    """The file name of the wheel pip on that platform would take, or None when the index has none."""
    platform_args = [arg for p in platforms for arg in ("--platform", p)]
    done = pip("download", "-q", "--only-binary=:all:", "--no-deps", *platform_args, "--python-version", PYTHON,
               "--implementation", "cp", "-d", str(folder), f"{name}=={version}")
    if done.returncode:
        return None
    wheels = sorted(folder.glob(f"{name}-{version}-*.whl")) + sorted(folder.glob(f"{name}-{version}*.whl"))
    return wheels[0].name if wheels else "?"


def main() -> int:
    """Print, for each Pi profile, which packages have wheels."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--extras", default="car", help="comma-separated extras to check (default: car)")
    args = parser.parse_args()
    requirements = pins([e for e in args.extras.split(",") if e])
    with tempfile.TemporaryDirectory() as tmp:
        packages = resolve(requirements, Path(tmp) / "host")
        print(f"{len(packages)} packages for {', '.join(requirements)}")
        for profile, platforms in PROFILES.items():
            print(f"\n{profile}:")
            missing = []
            for name, version in packages:
                folder = Path(tmp) / profile.split()[0] / name
                wheel = wheel_for(name, version, platforms, folder)
                kind = ("NO WHEEL: built from source" if wheel is None else
                        "pure Python" if wheel.endswith("-none-any.whl") else f"wheel {wheel}")
                if wheel is None:
                    missing.append(f"{name}=={version}")
                print(f"  {name}=={version}: {kind}")
            print(f"  -> {len(missing)} without a wheel" + (f": {', '.join(missing)}" if missing else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
