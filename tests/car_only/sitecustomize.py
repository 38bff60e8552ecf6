"""Makes this Python look like a car where only ``pip install 'race-dashboard[car]'`` ran.

Put this folder first on PYTHONPATH: Python imports ``sitecustomize`` at startup. Every top-level module
named in ``CAR_ONLY_BLOCK`` (comma-separated: the modules of the installed distributions that the [car]
extra does not bring) then fails to import with ModuleNotFoundError, as it would there. At exit the
top-level modules imported after startup, and those refused, are written as JSON to ``CAR_ONLY_REPORT``.
tests/car/test_car_only_install.py drives it.
"""
from __future__ import annotations

import atexit
import json
import os
import sys

_BEFORE = frozenset(name.partition(".")[0] for name in sys.modules)  # the interpreter's own start, .pth files
_BLOCKED = frozenset(filter(None, os.environ.get("CAR_ONLY_BLOCK", "").split(",")))
_REFUSED: set[str] = set()


class _NotInstalled:
    """A meta path finder that refuses the blocked top-level modules (and so everything under them)."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        top = name.partition(".")[0]
        if top in _BLOCKED:
            _REFUSED.add(top)
            raise ModuleNotFoundError(f"No module named {name!r} (not in the car's install)", name=name)
        return None


def _report() -> None:
    out = os.environ.get("CAR_ONLY_REPORT")
    if not out:
        return
    imported = sorted({name.partition(".")[0] for name in list(sys.modules)} - _BEFORE)
    with open(out, "w") as f:
        json.dump({"imported": imported, "refused": sorted(_REFUSED)}, f)


if _BLOCKED:
    sys.meta_path.insert(0, _NotInstalled())
atexit.register(_report)
