"""The browser pages: the sessions list, the live session view and the lap comparison.

The pages are thin shells: everything live comes from the REST API and the
``/dashboard`` Socket.IO namespace, read by the scripts in ``static/js``. The
channel registry is embedded in each page (and served as ``/channels.json``) so
the browser labels values with the same units the server stores them in.

Every page answer carries a strict Content-Security-Policy: scripts only from
this server and no inline script, so user text can never run as code even if a
renderer slipped; nothing is loaded from another host (no internet at a track).
"""
from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify, render_template

from dashboard.telemetry.channels import REGISTRY

bp = Blueprint("web", __name__)

# connect-src 'self' also admits ws:/wss: to this host (CSP level 3, as browsers do now)
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def channel_registry() -> dict[str, dict[str, Any]]:
    """The channel registry as plain JSON: name -> order, label, unit, description, range, staleness.

    ``order`` is the registry's own order (speed, rpm, throttle...): JSON object keys may be sorted on the way.
    """
    return {
        c.name: {
            "order": i,
            "label": c.title,
            "unit": c.unit,
            "description": c.description,
            "min": c.minimum,
            "max": c.maximum,
            "stale_after_s": c.stale_after_s,
        }
        for i, c in enumerate(REGISTRY.values())
    }


@bp.after_request
def _secure_headers(response: Response) -> Response:
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    return response


def cars_live() -> bool:
    """At least one session is active (from the live cache in memory: no database call)."""
    return any(live.status == "active" for live in current_app.extensions["dashboard"].core.cache.entries())


@bp.get("/")
def front() -> str:
    """The front page: the team overview while a car is live (an active session), else the sessions list."""
    if cars_live():
        return render_template("team.html", registry=channel_registry(), front=True)
    return render_template("sessions.html", registry=channel_registry(), front=True)


@bp.get("/sessions")
def sessions_list() -> str:
    """The sessions list: live and recent sessions, updated live."""
    return render_template("sessions.html", registry=channel_registry())


@bp.get("/sessions/<session_id>")
def session_view(session_id: str) -> str:
    """The live view of one session (a UUID); the script joins its room and fills the page.

    The id is passed through as given: the API, not the page, says whether it exists.
    """
    return render_template("session.html", session_id=session_id, registry=channel_registry())


@bp.get("/compare")
def compare_view() -> str:
    """Laps compared: ``?session_id=`` (its car and track) or ``?car_id=&track_id=``; the script reads them."""
    return render_template("compare.html", registry=channel_registry())


@bp.get("/team")
def team_view() -> str:
    """The team overview: every active session (every car on this server) on one map and as cards, live."""
    return render_template("team.html", registry=channel_registry())


@bp.get("/channels.json")
def channels_json() -> Response:
    """The channel registry for scripts and other clients."""
    return jsonify(channel_registry())
