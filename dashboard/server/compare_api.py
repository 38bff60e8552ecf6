"""REST API v1, laps compared: the picker's laps of a car at a track, a lap against distance, laps overlaid with
their delta traces, and a car's setup versions side by side (``dashboard/server/comparing.py`` computes them,
off the event loop). Errors, parameters and permissions as in ``api.py``; the routes are in the OpenAPI table.
"""
from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, Response

from dashboard.errors import InvalidInput, NotFound
from dashboard.server import params
from dashboard.server.access import READ
from dashboard.server.api import core, require
from dashboard.server.comparing import parse_channels, parse_laps

bp = Blueprint("compare", __name__)
DEFAULT_CHANNELS = ("speed", "gps_speed", "rpm", "throttle")  # OBD speed, or the GPS's where there is none


def car_id_arg(car_id: str) -> str:
    """A car id from the path; 422 naming it when it is not one."""
    if not re.fullmatch(params.CAR_ID_PATTERN, car_id):
        raise InvalidInput("car_id must be 1-64 letters, digits or _.:-", field="car_id")
    return car_id


def lap_arg(lap: str) -> int:
    """A lap number from the path; 404 naming it when no lap can have it."""
    if not (lap.isascii() and lap.isdigit() and len(lap) <= 9):
        raise NotFound(f"no lap {lap[:32]!r}", field="lap")
    return int(lap)


def answer(name: str, *args: Any) -> Response:
    """The service's answer, computed and encoded off the event loop."""
    return Response(core().compare.encoded(name, *args), mimetype="application/json")


def points_and_segments() -> tuple[int, int]:
    return params.POINTS.read(), params.SEGMENTS.read()


@bp.get("/api/v1/cars/<car_id>/laps")
@require(READ)
def car_laps(car_id: str) -> Response:
    return answer("car_laps", car_id_arg(car_id), params.TRACK_ID.read())


@bp.get("/api/v1/cars/<car_id>/setups/compare")
@require(READ)
def setups_compared(car_id: str) -> Response:
    return answer("setups", car_id_arg(car_id), params.TRACK_ID.read())


@bp.get("/api/v1/sessions/<session_id>/laps/<lap>/trace")
@require(READ)
def lap_trace(session_id: str, lap: str) -> Response:
    number = lap_arg(lap)
    channels = parse_channels(params.CHANNELS.read(), DEFAULT_CHANNELS)
    return answer("trace", session_id, number, channels, params.POINTS.read())


@bp.get("/api/v1/compare")
@require(READ)
def compare() -> Response:
    laps = parse_laps(params.LAPS.read())
    channels = parse_channels(params.CHANNELS.read(), DEFAULT_CHANNELS)
    points, segments = points_and_segments()
    return answer("compare", laps, channels, points, segments)
