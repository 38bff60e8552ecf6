"""The OpenAPI 3.1 document of REST API v1, generated from the Pydantic models."""
from __future__ import annotations

from functools import lru_cache
from typing import Any

from pydantic.json_schema import models_json_schema

from dashboard import schemas
from dashboard.server import params as q
from dashboard.server.access import KEYS, METRICS, READ, WRITE
from dashboard.telemetry.alerts import RULE_ID_RE

REF = "#/components/schemas/{model}"
SESSION_ID = {"name": "session_id", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}
ERROR_SCHEMA = {"application/json": {"schema": {"$ref": REF.format(model="ErrorBody")}}}
ERRORS = {str(code): {"description": text, "content": ERROR_SCHEMA}
          for code, text in ((400, "malformed JSON"), (401, "no credential, or not a valid key or token"),
                             (403, "the key's role may not do this"), (404, "unknown id"),
                             (409, "conflicts with the current state"), (413, "body too large"),
                             (422, "a field has a bad value"),
                             (429, "too many failed authentications from this address: see Retry-After"))}
# Who may call, per permission (dashboard/server/access.py): the OpenAPI security alternatives and the roles.
SECURITY = {
    READ: [{"Bearer": []}, {"ApiKey": []}],
    WRITE: [{"ApiKey": []}, {"Bearer": []}],
    KEYS: [{"ApiKey": []}, {"Bearer": []}],
    METRICS: [{"Bearer": []}, {"ApiKey": []}],
}
WHO = {
    READ: "Needs the viewer token or a key of any role when DASHBOARD_VIEWER_TOKEN is set; open otherwise.",
    WRITE: "Needs an engineer or admin key (DASHBOARD_API_KEY is an admin's); open only on a server with no key.",
    KEYS: "Needs an admin key.",
    METRICS: "Needs the metrics token or an admin key when DASHBOARD_METRICS_TOKEN is set; else as reads.",
}
SECURITY_SCHEMES = {
    "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key",
               "description": "a key (rdk_...) of any role, or DASHBOARD_API_KEY (admin)"},
    "Bearer": {"type": "http", "scheme": "bearer",
               "description": "Authorization: Bearer with the viewer token, the metrics token (/metrics) or a key"},
}

# Routes whose body is a file, not JSON: the raw bytes, or a form with the file in its part ``file``.
UPLOADS = {"/imports": {"required": True, "description": "the log file: RaceCapture/Pro .log, RaceChrono CSV v3, "
                        "NMEA, GPX or a CSV with a time column", "content": {
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"],
                                       "properties": {"file": {"type": "string", "format": "binary"}}}}}}}

# (method, path, summary, request model, response status, response model, permission, session path param,
# query parameters: the objects of dashboard/server/params.py the route reads them with). The permission is what
# the route's @require enforces (dashboard/server/access.py); a test holds the app's routes to this table.
ROUTES: list[tuple[str, str, str, type | None, int, type | None, str, bool, list[q.Query]]] = [
    ("post", "/sessions", "Create a session", schemas.SessionCreate, 201, schemas.SessionOut, WRITE, False, []),
    ("get", "/sessions", "List sessions", None, 200, schemas.SessionList, READ, False,
     [q.SESSIONS_LIMIT, q.OFFSET, q.STATUS, q.CAR_ID]),
    ("get", "/sessions/{session_id}", "Get a session", None, 200, schemas.SessionOut, READ, True, []),
    ("delete", "/sessions/{session_id}", "Delete a session and its data", None, 204, None, WRITE, True, []),
    ("post", "/sessions/{session_id}/start", "Start (or resume) collection", schemas.RecordRequest, 200,
     schemas.SessionOut, WRITE, True, []),
    ("post", "/sessions/{session_id}/stop", "Pause collection", schemas.RecordRequest, 200, schemas.SessionOut,
     WRITE, True, []),
    ("post", "/sessions/{session_id}/end", "End the session (idempotent)", schemas.RecordRequest, 200,
     schemas.SessionOut, WRITE, True, []),
    ("post", "/sessions/{session_id}/heartbeat", "Keep the session alive", schemas.RecordRequest, 200,
     schemas.SessionOut, WRITE, True, []),
    ("post", "/sessions/{session_id}/setup", "Post a new car setup version", schemas.SetupIn, 201,
     schemas.SetupOut, WRITE, True, []),
    ("get", "/sessions/{session_id}/setup", "Current setup", None, 200, schemas.SetupOut, READ, True, []),
    ("get", "/sessions/{session_id}/setups", "Setup history", None, 200, schemas.SetupList, READ, True, []),
    ("get", "/sessions/{session_id}/telemetry", "Latest value of each channel", None, 200, schemas.TelemetryOut,
     READ, True, []),
    ("get", "/sessions/{session_id}/frames", "Stored frames in seq order", None, 200, schemas.FrameList, READ,
     True, [q.AFTER_SEQ, q.ITEMS_LIMIT]),
    ("get", "/sessions/{session_id}/events", "Event log", None, 200, schemas.EventList, READ, True,
     [q.AFTER_ID, q.ITEMS_LIMIT]),
    ("post", "/imports", "Import another logger's file as an ended session with timed laps", None, 201,
     schemas.ImportOut, WRITE, False, [q.IMPORT_FORMAT, q.CAR_ID, q.TRACK, q.NAME]),
    ("get", "/sessions/{session_id}/export.csv", "Every frame as CSV (text/csv)", None, 200, None, READ, True, []),
    ("get", "/sessions/{session_id}/export", "Frames streamed as csv, jsonl or gpx, whole session or one lap", None,
     200, None, READ, True, [q.FORMAT, q.LAP]),
    ("put", "/sessions/{session_id}/track", "Name the session's track; laps are timed again", schemas.SessionTrack,
     200, schemas.LapList, WRITE, True, []),
    ("get", "/sessions/{session_id}/laps", "Laps, best lap, best sectors, live delta", None, 200, schemas.LapList,
     READ, True, []),
    ("get", "/sessions/{session_id}/alerts", "Alerts of the session", None, 200, schemas.AlertList, READ, True, []),
    ("post", "/sessions/{session_id}/alerts/{alert_id}/ack", "Acknowledge an alert", schemas.AlertAck, 200,
     schemas.AlertOut, WRITE, True, []),
    ("get", "/sessions/{session_id}/laps/{lap}/trace", "A lap resampled by distance: time, position, channels",
     None, 200, schemas.LapTrace, READ, True, [q.CHANNELS, q.POINTS]),
    ("get", "/cars/{car_id}/laps", "The car's laps at a track across sessions (the comparison's picker)", None, 200,
     schemas.CarLapList, READ, False, [q.TRACK_ID]),
    ("get", "/cars/{car_id}/setups/compare", "The car's setup versions at a track: laps, best, clean mean, changes",
     None, 200, schemas.SetupComparison, READ, False, [q.TRACK_ID]),
    ("get", "/compare", "Laps overlaid by distance, with delta traces against the first", None, 200,
     schemas.Comparison, READ, False, [q.LAPS, q.CHANNELS, q.POINTS, q.SEGMENTS]),
    ("get", "/tracks", "List tracks", None, 200, schemas.TrackList, READ, False, []),
    ("post", "/tracks", "Create a track", schemas.TrackIn, 201, schemas.TrackOut, WRITE, False, []),
    ("get", "/tracks/{track_id}", "Get a track", None, 200, schemas.TrackOut, READ, False, []),
    ("put", "/tracks/{track_id}", "Change a track; its sessions are timed again", schemas.TrackIn, 200,
     schemas.TrackOut, WRITE, False, []),
    ("delete", "/tracks/{track_id}", "Delete a track", None, 204, None, WRITE, False, []),
    ("get", "/alert-rules", "Alert rules in force (for a car or a session)", None, 200, schemas.AlertRuleList,
     READ, False, [q.CAR_ID, q.SESSION_ID]),
    ("put", "/alert-rules/{rule_id}", "Store a rule for every car, one car or one session", schemas.AlertRuleBody,
     200, schemas.AlertRuleOut, WRITE, False, [q.CAR_ID, q.SESSION_ID]),
    ("delete", "/alert-rules/{rule_id}", "Forget a stored rule", None, 204, None, WRITE, False,
     [q.CAR_ID, q.SESSION_ID]),
    ("get", "/cars/{car_id}/drivers", "The car's drivers (its roster)", None, 200, schemas.DriverList, READ, False,
     []),
    ("post", "/cars/{car_id}/drivers", "Add a driver to the car's roster", schemas.DriverIn, 201, schemas.DriverOut,
     WRITE, False, []),
    ("put", "/cars/{car_id}/drivers/{driver_id}", "Change a driver's name or own limits", schemas.DriverUpdate, 200,
     schemas.DriverOut, WRITE, False, []),
    ("delete", "/cars/{car_id}/drivers/{driver_id}", "Take a driver off the roster", None, 204, None, WRITE, False,
     []),
    ("post", "/sessions/{session_id}/driver-change", "A driver got in: laps from then on carry the driver",
     schemas.DriverChangeIn, 201, schemas.DriverChangeOut, WRITE, True, []),
    ("get", "/sessions/{session_id}/stints", "Stints: driver, laps, best, clean mean, consistency, fuel used", None,
     200, schemas.StintList, READ, True, []),
    ("get", "/series-rules", "Series rules in force (for a car or a session)", None, 200, schemas.SeriesRulesOut,
     READ, False, [q.CAR_ID, q.SESSION_ID]),
    ("put", "/series-rules", "Store series rules for every car, one car or one session", schemas.SeriesRulesIn, 200,
     schemas.SeriesRulesOut, WRITE, False, [q.CAR_ID, q.SESSION_ID]),
    ("delete", "/series-rules", "Forget stored series rules", None, 204, None, WRITE, False,
     [q.CAR_ID, q.SESSION_ID]),
    ("get", "/sessions/{session_id}/fuel", "Fuel model and estimate (level, use per lap, laps left)", None, 200,
     schemas.FuelOut, READ, True, []),
    ("put", "/sessions/{session_id}/fuel", "Configure the fuel model (no sensor) and the low-fuel alert",
     schemas.FuelConfigIn, 200, schemas.FuelOut, WRITE, True, []),
    ("post", "/sessions/{session_id}/fuel/refill", "The crew's word after a stop: what went in",
     schemas.RefillIn, 200, schemas.FuelOut, WRITE, True, []),
    ("post", "/sessions/{session_id}/messages", "Send a message to the session's car (text or a canned one)",
     schemas.MessageIn, 201, schemas.MessageOut, WRITE, True, []),
    ("get", "/sessions/{session_id}/messages", "The session's messages with their states and answers", None, 200,
     schemas.MessageList, READ, True, []),
    ("post", "/sessions/{session_id}/messages/{message_id}/cancel", "Take a message back (off the driver display)",
     None, 200, schemas.MessageOut, WRITE, True, []),
    ("get", "/messages/canned", "The team's canned messages", None, 200, schemas.CannedList, READ, False, []),
    ("put", "/messages/canned", "Replace the team's canned messages", schemas.CannedList, 200, schemas.CannedList,
     WRITE, False, []),
    ("get", "/team", "The team view: every active session with driver, laps, stint, fuel, pit status, link",
     None, 200, schemas.TeamOut, READ, False, [q.SESSION_ID]),
    ("post", "/keys", "Create a key (admins); the answer is the only time it is shown", schemas.KeyCreate, 201,
     schemas.KeyCreated, KEYS, False, []),
    ("get", "/keys", "Every key, without secrets (admins)", None, 200, schemas.KeyList, KEYS, False, []),
    ("delete", "/keys/{key_id}", "Revoke a key (admins)", None, 204, None, KEYS, False, []),
]
PATH_PARAMS = {  # beside session_id; what the route checks before anything else (else 404 or 422 naming it)
    "track_id": {"type": "string"},
    "rule_id": {"type": "string", "pattern": RULE_ID_RE},
    "alert_id": {"type": "integer", "minimum": 0, "maximum": q.INT64_MAX},
    "key_id": {"type": "string"},
    "lap": {"type": "integer", "minimum": 0, "maximum": 999_999_999},
    "car_id": {"type": "string", "pattern": q.CAR_ID_PATTERN},
    "driver_id": {"type": "string", "pattern": r"^[A-Za-z0-9_.-]{1,40}$"},
    "message_id": {"type": "string", "pattern": r"^[0-9a-fA-F-]{32,36}$"},
}
ALIASES = [  # continuity aliases of another design, outside /api/v1
    ("/session_manager/sessions.start", "Start (or resume) the car's session", schemas.LegacyStart),
    ("/session_manager/sessions.end", "End a session", schemas.LegacyEnd),
    ("/session_manager/sessions.heartbeat", "Keep a session alive", schemas.LegacyHeartbeat),
]


def query_parameter(param: q.Query) -> dict[str, Any]:
    """A query parameter as the route reads it: the same bounds, enum or pattern; empty is as absent."""
    required = getattr(param, "required", False)
    return {"name": param.name, "in": "query", "required": required, "allowEmptyValue": not required,
            "description": param.doc, "schema": param.schema()}


@lru_cache(maxsize=1)
def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document (cached: the models do not change at run time)."""
    models = ({m for r in ROUTES for m in (r[3], r[5]) if m is not None} | {a[2] for a in ALIASES}
              | {schemas.ErrorBody, schemas.Health, schemas.SessionOut})
    _, defs = models_json_schema([(m, "validation") for m in sorted(models, key=lambda m: m.__name__)],
                                 ref_template=REF)
    paths: dict[str, Any] = {}
    for method, path, summary, req, status, resp, permission, has_id, query in ROUTES:
        op: dict[str, Any] = {"summary": summary, "description": WHO[permission], "responses": {},
                              "security": SECURITY[permission]}
        params = [SESSION_ID] if has_id else []
        params += [{"name": p, "in": "path", "required": True, "schema": schema} for p, schema in PATH_PARAMS.items()
                   if "{" + p + "}" in path]
        params += [query_parameter(param) for param in query]
        if params:
            op["parameters"] = params
        if req is not None:
            op["requestBody"] = {"required": req is not schemas.RecordRequest,
                                 "content": {"application/json": {"schema": {"$ref": REF.format(model=req.__name__)}}}}
        if path in UPLOADS:
            op["requestBody"] = UPLOADS[path]
        ok: dict[str, Any] = {"description": "OK"}
        if resp is not None:
            ok["content"] = {"application/json": {"schema": {"$ref": REF.format(model=resp.__name__)}}}
        op["responses"][str(status)] = ok
        op["responses"].update(ERRORS)
        paths.setdefault("/api/v1" + path, {})[method] = op
    for path, summary, model in ALIASES:
        paths[path] = {"post": {
            "summary": summary, "description": WHO[WRITE], "security": SECURITY[WRITE],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "$ref": REF.format(model=model.__name__)}}}},
            "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {
                "$ref": REF.format(model="SessionOut")}}}}, **ERRORS}}}
    health = {"application/json": {"schema": {"$ref": REF.format(model="Health")}}}
    paths["/healthz"] = {"get": {"summary": "The database takes a write in time (always open)",
                                 "security": [],
                                 "responses": {"200": {"description": "OK", "content": health},
                                               "503": {"description": "the database did not take a write in time",
                                                       "content": health}}}}
    paths["/metrics"] = {"get": {"summary": "Prometheus metrics", "description": WHO[METRICS],
                                 "security": SECURITY[METRICS], "responses": {
                                     "200": {"description": "OK", "content": {"text/plain": {"schema": {
                                         "type": "string"}}}},
                                     **{code: ERRORS[code] for code in ("401", "403", "429")}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Race telemetry dashboard API", "version": "1"},
        "paths": paths,
        "components": {"schemas": defs["$defs"],
                       "securitySchemes": SECURITY_SCHEMES},
    }
