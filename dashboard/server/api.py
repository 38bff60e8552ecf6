"""REST API v1: sessions, lifecycle, setups, telemetry, frames, events, tracks, laps, alerts, keys; health, metrics.

Every error answers ``{"error": {"code", "message", "field"?}}`` from one helper; bodies are
parsed into the Pydantic models of ``dashboard.schemas``. Routes call the core's services
(``dashboard/server/core.py``), never the store. Every route but /healthz and the OpenAPI document says
what it needs with ``@require`` (who may: ``dashboard/server/access.py``).
"""
from __future__ import annotations

import logging
import os
import re
import tempfile
from functools import wraps
from typing import Any, Callable, TypeVar

import orjson
from flask import Blueprint, Response, current_app, jsonify, request
from pydantic import BaseModel, ValidationError
from werkzeug.exceptions import HTTPException

from dashboard import schemas
from dashboard.errors import (
    DashboardError,
    InvalidInput,
    MalformedRequest,
    NotFound,
    PayloadTooLarge,
)
from dashboard.server import params
from dashboard.server.access import KEYS, METRICS, READ, WRITE, Principal, rest_credential, rest_field
from dashboard.server.changes import Change
from dashboard.server.core import Core
from dashboard.server.openapi import openapi_document
from dashboard.server.params import INT64_MAX
from dashboard.server.views import public_key
from dashboard.telemetry.alerts import RULE_ID_RE, parse_rule
from dashboard.telemetry.stints import Driver, SeriesRules

DRIVER_ID_RE = r"[A-Za-z0-9_.-]{1,40}"

log = logging.getLogger(__name__)
bp = Blueprint("api", __name__)
M = TypeVar("M", bound=BaseModel)


def core() -> Core:
    """The app's core: its services."""
    return current_app.extensions["dashboard"].core


def error_response(error: DashboardError) -> tuple[Response, int]:
    """The one JSON error answer (503 says when to try again)."""
    response = jsonify({"error": error.to_dict()})
    retry_after = error.extra.get("retry_after")
    if retry_after is not None:
        response.headers["Retry-After"] = str(max(1, round(retry_after)))
    return response, error.status


def validation_error(exc: ValidationError) -> InvalidInput:
    """The first Pydantic error as an InvalidInput naming its field."""
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err["loc"]) or None
    return InvalidInput(err["msg"], field=field)


def request_body() -> bytes:
    """The request's body, at most ``max_body_bytes``: 413 beyond, also for a chunked body (no Content-Length)."""
    limit = current_app.extensions["dashboard"].settings.max_body_bytes
    if request.content_length is not None:
        return request.get_data(cache=True)  # Flask refuses a declared length over MAX_CONTENT_LENGTH with 413
    parts, size = [], 0
    while chunk := request.stream.read(limit + 1 - size):  # a chunked stream gives a chunk per read
        parts.append(chunk)
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body is over {limit} bytes", field="body")
    return b"".join(parts)


def json_object(optional: bool = False) -> dict[str, Any]:
    """The request's body as a JSON object; 400 if it is not one (empty is ``{}`` when ``optional``).

    Parsed as JSON is: NaN and Infinity are not JSON, numbers beyond 64 bits and nesting deeper than
    1,024 are refused (orjson), instead of reaching a model or the database.
    """
    raw = request_body()
    if not raw.strip():
        if optional:
            return {}
        raise MalformedRequest("a JSON body is required", field="body")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MalformedRequest(f"body is not valid JSON: {exc}", field="body") from None
    if not isinstance(data, dict):
        raise MalformedRequest("body must be a JSON object", field="body")
    return data


def validate(model: type[M], data: dict[str, Any]) -> M:
    """``data`` as ``model``; 422 naming the bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc) from None


def parse_body(model: type[M], optional: bool = False) -> M:
    """The request's JSON body as ``model``; 400 if not JSON, 422 naming the bad field."""
    return validate(model, json_object(optional))


def require(permission: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The route needs ``permission`` (dashboard/server/access.py): 401 without a valid key or token, 403 when
    the key's role may not. The credential comes from X-API-Key or ``Authorization: Bearer``, never the URL."""

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            authorize(permission)
            return view(*args, **kwargs)

        wrapper.permission = permission  # type: ignore[attr-defined] - read by the OpenAPI test
        return wrapper

    return decorate


def authorize(permission: str) -> Principal:
    """The caller's principal, when it may do ``permission``; else Unauthorized or Forbidden naming the header."""
    credential, header = rest_credential()
    field = header or rest_field(permission)
    access = core().access
    principal = access.resolve(credential, field)
    access.require(principal, permission, field)
    return principal


def rule_id_arg(rule_id: str) -> str:
    """A rule id from the path; 422 naming it when it is not one."""
    if not re.fullmatch(RULE_ID_RE, rule_id):
        raise InvalidInput("rule_id must be a slug of up to 64 characters", field="rule_id")
    return rule_id


# ------------------------------------------------------------------ sessions
@bp.post("/api/v1/sessions")
@require(WRITE)
def create_session() -> tuple[Response, int]:
    body = parse_body(schemas.SessionCreate)
    live = core().lifecycle.create(car_id=body.car_id, name=body.name, driver=body.driver, track=body.track,
                                   track_id=body.track_id)
    return jsonify(core().sessions.describe(live)), 201


@bp.get("/api/v1/sessions")
@require(READ)
def list_sessions() -> Response:
    limit, offset = params.SESSIONS_LIMIT.read(), params.OFFSET.read()
    status, car_id = params.STATUS.read(), params.CAR_ID.read()
    items, total = core().sessions.page(limit, offset, status, car_id)
    return jsonify({"items": items, "total": total, "limit": limit, "offset": offset})


@bp.get("/api/v1/sessions/<session_id>")
@require(READ)
def get_session(session_id: str) -> Response:
    return jsonify(core().sessions.view(session_id))


@bp.delete("/api/v1/sessions/<session_id>")
@require(WRITE)
def delete_session(session_id: str) -> tuple[str, int]:
    if not core().sessions.delete(core().sessions.require(session_id).id):
        raise NotFound(f"no session {session_id}", field="session_id")
    return "", 204


LIFECYCLE_ACTIONS = ("start", "stop", "end", "heartbeat")


@require(WRITE)
def lifecycle(session_id: str, action: str) -> Response:
    body = parse_body(schemas.RecordRequest, optional=True)
    if action == "heartbeat":
        return jsonify(core().lifecycle.heartbeat(session_id))
    return jsonify(core().lifecycle.apply(session_id, action, body.record_id))


for _action in LIFECYCLE_ACTIONS:  # one route each: a path like /setups is no lifecycle action (Allow says GET)
    bp.add_url_rule(f"/api/v1/sessions/<session_id>/{_action}", f"lifecycle_{_action}", lifecycle,
                    methods=["POST"], defaults={"action": _action})


@bp.post("/api/v1/sessions/<session_id>/setup")
@require(WRITE)
def post_setup(session_id: str) -> tuple[Response, int]:
    """The body is the setup itself; a body whose only keys are ``setup`` and, optionally, ``timestamp`` is the
    wrapped form ``{"setup": {...}, "timestamp": ...}`` (see schemas.SetupIn)."""
    body = json_object()
    if "setup" in body and set(body) <= {"setup", "timestamp"}:
        wrapped = validate(schemas.SetupIn, body)
        setup, timestamp = wrapped.setup, wrapped.timestamp
    else:
        setup, timestamp = body, None
    return jsonify(core().sessions.update_setup(session_id, setup, timestamp)), 201


@bp.get("/api/v1/sessions/<session_id>/setup")
@require(READ)
def current_setup(session_id: str) -> Response:
    setup = core().sessions.current_setup(session_id)
    if setup is None:
        raise NotFound("no setup posted for this session yet", field="setup")
    return jsonify(setup)


@bp.get("/api/v1/sessions/<session_id>/setups")
@require(READ)
def setup_history(session_id: str) -> Response:
    return jsonify({"items": core().sessions.setups(session_id)})


@bp.get("/api/v1/sessions/<session_id>/telemetry")
@require(READ)
def telemetry(session_id: str) -> Response:
    return jsonify(core().sessions.telemetry(session_id))


@bp.get("/api/v1/sessions/<session_id>/frames")
@require(READ)
def frames(session_id: str) -> Response:
    after_seq, limit = params.AFTER_SEQ.read(), params.ITEMS_LIMIT.read()
    items = core().sessions.frames(session_id, after_seq, limit)
    return jsonify({"items": items, "next_after_seq": items[-1]["seq"] if len(items) == limit else None})


@bp.get("/api/v1/sessions/<session_id>/export")
@require(READ)
def export_session(session_id: str) -> Response:
    """The session's frames streamed as CSV (one column per channel, units in the header), JSON Lines or GPX."""
    return _export(session_id, params.FORMAT.read(), params.LAP.read())


@bp.get("/api/v1/sessions/<session_id>/export.csv")
@require(READ)
def export_csv(session_id: str) -> Response:
    """Every stored frame as CSV (the same as ``export?format=csv``)."""
    return _export(session_id, "csv", None)


def _export(session_id: str, fmt: str, lap: int | None) -> Response:
    sid = core().sessions.require(session_id).id
    export = core().exports.open(sid, fmt, lap)
    return Response(export.chunks, mimetype=export.media_type,
                    headers={"Content-Disposition": f'attachment; filename="{export.filename}"'})


@bp.get("/api/v1/sessions/<session_id>/events")
@require(READ)
def events(session_id: str) -> Response:
    after_id, limit = params.AFTER_ID.read(), params.ITEMS_LIMIT.read()
    return jsonify({"items": core().events.events(core().sessions.require(session_id).id, after_id, limit)})


# -------------------------------------------------------- tracks and laps
@bp.post("/api/v1/tracks")
@require(WRITE)
def create_track() -> tuple[Response, int]:
    return jsonify(core().tracks.save(track_body().model_dump())), 201


def track_body() -> schemas.TrackIn:
    """The body as a track; 422 naming the line whose two points are one."""
    body = parse_body(schemas.TrackIn)
    field = body.zero_length_line()
    if field is not None:
        raise InvalidInput("a line needs two different points", field=field)
    return body


@bp.get("/api/v1/tracks")
@require(READ)
def list_tracks() -> Response:
    return jsonify({"items": core().tracks.list()})


@bp.get("/api/v1/tracks/<track_id>")
@require(READ)
def get_track(track_id: str) -> Response:
    return jsonify(core().tracks.get(track_id))


@bp.put("/api/v1/tracks/<track_id>")
@require(WRITE)
def update_track(track_id: str) -> Response:
    track_id = core().tracks.get(track_id)["track_id"]  # 404 before the body is looked at
    return jsonify(core().tracks.save(track_body().model_dump(), track_id))


@bp.delete("/api/v1/tracks/<track_id>")
@require(WRITE)
def delete_track(track_id: str) -> tuple[str, int]:
    core().tracks.delete(track_id)
    return "", 204


@bp.put("/api/v1/sessions/<session_id>/track")
@require(WRITE)
def set_session_track(session_id: str) -> Response:
    body = parse_body(schemas.SessionTrack)
    return jsonify(core().tracks.set_session_track(session_id, body.track_id))


@bp.get("/api/v1/sessions/<session_id>/laps")
@require(READ)
def laps(session_id: str) -> Response:
    return jsonify(core().timing.laps(session_id))


# ----------------------------------------------------------------- imports
UPLOAD_CHUNK = 65_536  # bytes of an upload read (and written to its temporary file) at a time


@bp.post("/api/v1/imports")
@require(WRITE)
def import_log() -> tuple[Response, int]:
    """Another logger's file (the raw body, or the ``file`` part of a form) as an ended session with timed laps.

    The upload is streamed to a temporary file (at most ``max_import_bytes``: 413 beyond), then imported in a
    native thread (``ImportService``); the answer waits for it (a million rows: tens of seconds).
    """
    settings = current_app.extensions["dashboard"].settings
    request.max_content_length = settings.max_import_bytes  # this route's own limit, not max_body_bytes
    fmt, car_id = params.IMPORT_FORMAT.read(), params.CAR_ID.read()
    track, name = params.TRACK.read(), params.NAME.read()
    fd, path = tempfile.mkstemp(prefix="dashboard-import-")
    try:
        with os.fdopen(fd, "wb") as out:
            filename = _upload(out, settings.max_import_bytes)
        result = core().imports.run(path, fmt, car_id=car_id, track=track, name=name or "", filename=filename)
    finally:
        os.unlink(path)
    live = core().cache.get(result.session_id)
    session = core().sessions.describe(live)
    core().bus.tell(Change.SESSION, session)
    body = result.to_dict()
    return jsonify({"session": session, **{k: body[k] for k in ("format", "frames", "rows", "skipped",
                                                                "skipped_examples", "laps", "best_lap_s",
                                                                "notes")}}), 201


def _upload(out: Any, limit: int) -> str:
    """Copy the request's file into ``out``: a form's ``file`` part, else the raw body; its file name, or ""."""
    if request.mimetype == "multipart/form-data":
        part = request.files.get("file")
        if part is None:
            raise InvalidInput("a form upload needs its file in the part named 'file'", field="file")
        part.save(out, UPLOAD_CHUNK)
        return os.path.basename(part.filename or "")
    size = 0
    while chunk := request.stream.read(UPLOAD_CHUNK):  # a chunked body has no length to refuse early
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the file is over {limit} bytes (DASHBOARD_MAX_IMPORT_BYTES)", field="file")
        out.write(chunk)
    return ""


# ------------------------------------------------------------------ the pit wall
def car_id_arg(car_id: str) -> str:
    """A car id from the path; 404 naming it when no car can have it."""
    if not re.fullmatch(params.CAR_ID_PATTERN, car_id):
        raise NotFound(f"no car {car_id[:64]!r}", field="car_id")
    return car_id


def driver_id_arg(driver_id: str) -> str:
    """A driver id from the path; 404 naming it when no driver can have it."""
    if not re.fullmatch(DRIVER_ID_RE, driver_id):
        raise NotFound(f"no driver {driver_id[:64]!r}", field="driver_id")
    return driver_id


@bp.get("/api/v1/cars/<car_id>/drivers")
@require(READ)
def list_drivers(car_id: str) -> Response:
    return jsonify({"items": core().team.drivers(car_id_arg(car_id))})


@bp.post("/api/v1/cars/<car_id>/drivers")
@require(WRITE)
def add_driver(car_id: str) -> tuple[Response, int]:
    car_id = car_id_arg(car_id)
    body = parse_body(schemas.DriverIn)
    driver = Driver(id=body.driver_id, name=body.name, max_stint_s=body.max_stint_s, max_total_s=body.max_total_s)
    return jsonify(core().team.save_driver(car_id, driver, create=True)), 201


@bp.put("/api/v1/cars/<car_id>/drivers/<driver_id>")
@require(WRITE)
def update_driver(car_id: str, driver_id: str) -> Response:
    car_id, driver_id = car_id_arg(car_id), driver_id_arg(driver_id)
    body = parse_body(schemas.DriverUpdate)
    driver = Driver(id=driver_id, name=body.name, max_stint_s=body.max_stint_s, max_total_s=body.max_total_s)
    return jsonify(core().team.save_driver(car_id, driver, create=False))


@bp.delete("/api/v1/cars/<car_id>/drivers/<driver_id>")
@require(WRITE)
def remove_driver(car_id: str, driver_id: str) -> tuple[str, int]:
    core().team.remove_driver(car_id_arg(car_id), driver_id_arg(driver_id))
    return "", 204


@bp.post("/api/v1/sessions/<session_id>/driver-change")
@require(WRITE)
def driver_change(session_id: str) -> tuple[Response, int]:
    body = parse_body(schemas.DriverChangeIn)
    return jsonify(core().team.driver_change(session_id, body.driver_id, body.at)), 201


@bp.get("/api/v1/sessions/<session_id>/stints")
@require(READ)
def stints(session_id: str) -> Response:
    return jsonify(core().team.stints(session_id))


@bp.get("/api/v1/series-rules")
@require(READ)
def get_series_rules() -> Response:
    return jsonify(core().team.series_out(params.CAR_ID.read(), params.SESSION_ID.read()))


@bp.put("/api/v1/series-rules")
@require(WRITE)
def put_series_rules() -> Response:
    body = parse_body(schemas.SeriesRulesIn)
    rules = SeriesRules(**body.model_dump())
    return jsonify(core().team.save_series(rules, params.CAR_ID.read(), params.SESSION_ID.read()))


@bp.delete("/api/v1/series-rules")
@require(WRITE)
def delete_series_rules() -> tuple[str, int]:
    if not core().team.delete_series(params.CAR_ID.read(), params.SESSION_ID.read()):
        raise NotFound("no series rules stored for this scope", field="scope")
    return "", 204


@bp.get("/api/v1/sessions/<session_id>/fuel")
@require(READ)
def get_fuel(session_id: str) -> Response:
    return jsonify(core().team.fuel_out(session_id))


@bp.put("/api/v1/sessions/<session_id>/fuel")
@require(WRITE)
def put_fuel(session_id: str) -> Response:
    body = parse_body(schemas.FuelConfigIn)
    config = body.model_dump(exclude={"for_car"})
    return jsonify(core().team.save_fuel(session_id, config, car=body.for_car))


@bp.post("/api/v1/sessions/<session_id>/fuel/refill")
@require(WRITE)
def fuel_refill(session_id: str) -> Response:
    body = parse_body(schemas.RefillIn)
    return jsonify(core().team.refill(session_id, body.added, body.to_full, body.at))


# ------------------------------------------------------------------ pit-to-car messages
def message_id_arg(message_id: str) -> str:
    """A message id from the path; 404 naming it when no message can have it."""
    if not re.fullmatch(r"[0-9a-fA-F-]{32,36}", message_id):
        raise NotFound(f"no message {message_id[:64]!r}", field="message_id")
    return message_id.lower()


@bp.post("/api/v1/sessions/<session_id>/messages")
@require(WRITE)
def send_message(session_id: str) -> tuple[Response, int]:
    body = parse_body(schemas.MessageIn)
    principal = authorize(WRITE)
    return jsonify(core().messages.send(session_id, body.model_dump(), principal.key_id)), 201


@bp.get("/api/v1/sessions/<session_id>/messages")
@require(READ)
def list_messages(session_id: str) -> Response:
    return jsonify(core().messages.list(session_id))


@bp.post("/api/v1/sessions/<session_id>/messages/<message_id>/cancel")
@require(WRITE)
def cancel_message(session_id: str, message_id: str) -> Response:
    principal = authorize(WRITE)
    return jsonify(core().messages.cancel(session_id, message_id_arg(message_id), principal.key_id))


@bp.get("/api/v1/messages/canned")
@require(READ)
def get_canned() -> Response:
    return jsonify(core().messages.canned_out())


@bp.put("/api/v1/messages/canned")
@require(WRITE)
def put_canned() -> Response:
    body = parse_body(schemas.CannedList)
    return jsonify(core().messages.save_canned([c.model_dump() for c in body.items]))


@bp.get("/api/v1/team")
@require(READ)
def team() -> Response:
    """Every active session of the team (every car on this server) as the team view's rows; ``?session_id=``: its row
    only (the live page's driver, stint and fuel; none when that session is not active)."""
    session_id = params.SESSION_ID.read()
    return jsonify(core().team.team_snapshot(None if session_id is None else {session_id}))


# ------------------------------------------------------------------ alerts
@bp.get("/api/v1/alert-rules")
@require(READ)
def list_alert_rules() -> Response:
    car_id, session_id = params.CAR_ID.read(), params.SESSION_ID.read()
    if session_id is not None:
        live = core().sessions.require(session_id)
        car_id, session_id = live.row["car_id"], live.id
    items = [{"rule": rule.model_dump(), "source": source,
              "car_id": car_id if source == "car" else None, "session_id": session_id if source == "session" else None}
             for rule, source in core().alerts.rules_with_source(car_id, session_id)]
    return jsonify({"items": items})


@bp.put("/api/v1/alert-rules/<rule_id>")
@require(WRITE)
def put_alert_rule(rule_id: str) -> Response:
    raw = parse_body(schemas.AlertRuleBody)
    rule = parse_rule({**raw.model_dump(exclude_none=True), "id": rule_id_arg(rule_id)})
    return jsonify(core().alerts.save_rule(rule, params.CAR_ID.read(), params.SESSION_ID.read()))


@bp.delete("/api/v1/alert-rules/<rule_id>")
@require(WRITE)
def delete_alert_rule(rule_id: str) -> tuple[str, int]:
    if not core().alerts.delete_rule(rule_id_arg(rule_id), params.CAR_ID.read(), params.SESSION_ID.read()):
        raise NotFound(f"no stored rule {rule_id}", field="rule_id")
    return "", 204


@bp.get("/api/v1/sessions/<session_id>/alerts")
@require(READ)
def session_alerts(session_id: str) -> Response:
    return jsonify({"items": core().alerts.alerts(session_id)})


@bp.post("/api/v1/sessions/<session_id>/alerts/<alert_id>/ack")
@require(WRITE)
def ack_alert(session_id: str, alert_id: str) -> Response:
    """Any alert_id reaches the route (and so its credential check); no alert has one that is not 0..2**63-1."""
    if not (alert_id.isascii() and alert_id.isdigit() and len(alert_id) <= 19 and int(alert_id) <= INT64_MAX):
        raise NotFound(f"no alert {alert_id[:32]!r} in this session", field="alert_id")
    body = parse_body(schemas.AlertAck)
    return jsonify(core().alerts.ack(session_id, int(alert_id), body.by))


# -------------------------------------------------------------------- keys
@bp.post("/api/v1/keys")
@require(KEYS)
def create_key() -> tuple[Response, int]:
    """A new key for a car, a pit gateway or a person; the answer is the only time the key is shown."""
    body = parse_body(schemas.KeyCreate)
    row, key = core().keys.create(body.role, body.name, body.car_id)
    return jsonify({**public_key(row), "key": key}), 201


@bp.get("/api/v1/keys")
@require(KEYS)
def list_keys() -> Response:
    return jsonify({"items": [public_key(row) for row in core().keys.list()]})


@bp.delete("/api/v1/keys/<key_id>")
@require(KEYS)
def revoke_key(key_id: str) -> tuple[str, int]:
    core().keys.revoke(key_id)
    return "", 204


# ------------------------------------------------- continuity aliases
@bp.post("/session_manager/sessions.start")
@require(WRITE)
def legacy_start() -> Response:
    body = parse_body(schemas.LegacyStart)
    car_id = body.car_id or body.user_id
    if car_id is None:
        raise InvalidInput("car_id (or user_id) is required", field="car_id")
    return jsonify(core().lifecycle.legacy_start(car_id, body.record_id, name=body.name, driver=body.driver,
                                                 track=body.track))


@bp.post("/session_manager/sessions.end")
@require(WRITE)
def legacy_end() -> Response:
    body = parse_body(schemas.LegacyEnd)
    return jsonify(core().lifecycle.apply(body.session_id, "end", body.record_id))


@bp.post("/session_manager/sessions.heartbeat")
@require(WRITE)
def legacy_heartbeat() -> Response:
    body = parse_body(schemas.LegacyHeartbeat)
    return jsonify(core().lifecycle.heartbeat(body.session_id))


# ------------------------------------------------------ health, metrics, docs
@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    health = core().health()
    return jsonify(health), 200 if health["ok"] else 503


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus text; needs the metrics token when one is set, else what reads need."""
    from dashboard.server.metrics import CONTENT_TYPE

    authorize(METRICS if core().access.metrics_token else READ)

    return Response(current_app.extensions["dashboard"].metrics.render(), content_type=CONTENT_TYPE)


@bp.get("/api/v1/openapi.json")
def openapi() -> Response:
    return jsonify(openapi_document())


def register_error_handlers(app: Any) -> None:
    """JSON errors for the whole app: HTTP errors under /api, size limits, and any crash."""

    @app.errorhandler(DashboardError)
    def _dashboard(error: DashboardError) -> tuple[Response, int]:
        return error_response(error)

    @app.errorhandler(HTTPException)
    def _http(error: HTTPException) -> Any:
        if error.code == 413:
            return error_response(PayloadTooLarge("request body is too large", field="body"))
        if request.path.startswith(("/api/", "/session_manager/")) or request.path in ("/healthz", "/metrics") \
                or request.is_json:
            # what is to blame: the URL's path (no such route) or the method (405 with Allow)
            err = DashboardError(error.description or error.name, field={404: "path", 405: "method"}.get(error.code))
            err.status, err.code = error.code or 500, error.name.lower().replace(" ", "_")
            response, status = error_response(err)
            for name, value in error.get_headers():  # e.g. Allow on a 405
                if name.lower() != "content-type":
                    response.headers[name] = value
            return response, status
        return error

    @app.errorhandler(Exception)
    def _crash(error: Exception) -> tuple[Response, int]:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(DashboardError("internal server error"))
