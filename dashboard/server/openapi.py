"""The OpenAPI 3.1 document of REST API v1, generated from the Pydantic models."""
from __future__ import annotations

from functools import lru_cache
from typing import Any

from pydantic.json_schema import models_json_schema

from dashboard import schemas

REF = "#/components/schemas/{model}"
SESSION_ID = {"name": "session_id", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}
ERROR_SCHEMA = {"application/json": {"schema": {"$ref": REF.format(model="ErrorBody")}}}
ERRORS = {str(code): {"description": text, "content": ERROR_SCHEMA}
          for code, text in ((400, "malformed JSON"), (401, "missing or wrong X-API-Key"), (404, "unknown id"),
                             (409, "conflicts with the current state"), (413, "body too large"),
                             (422, "a field has a bad value"))}

# (method, path, summary, request model, response status, response model, needs key, path params, query params)
ROUTES: list[tuple[str, str, str, type | None, int, type | None, bool, bool, list[str]]] = [
    ("post", "/sessions", "Create a session", schemas.SessionCreate, 201, schemas.SessionOut, True, False, []),
    ("get", "/sessions", "List sessions", None, 200, schemas.SessionList, False, False,
     ["limit", "offset", "status", "car_id"]),
    ("get", "/sessions/{session_id}", "Get a session", None, 200, schemas.SessionOut, False, True, []),
    ("delete", "/sessions/{session_id}", "Delete a session and its data", None, 204, None, True, True, []),
    ("post", "/sessions/{session_id}/start", "Start (or resume) collection", schemas.RecordRequest, 200,
     schemas.SessionOut, True, True, []),
    ("post", "/sessions/{session_id}/stop", "Pause collection", schemas.RecordRequest, 200, schemas.SessionOut,
     True, True, []),
    ("post", "/sessions/{session_id}/end", "End the session (idempotent)", schemas.RecordRequest, 200,
     schemas.SessionOut, True, True, []),
    ("post", "/sessions/{session_id}/heartbeat", "Keep the session alive", schemas.RecordRequest, 200,
     schemas.SessionOut, True, True, []),
    ("post", "/sessions/{session_id}/setup", "Post a new car setup version", schemas.SetupIn, 201,
     schemas.SetupOut, True, True, []),
    ("get", "/sessions/{session_id}/setup", "Current setup", None, 200, schemas.SetupOut, False, True, []),
    ("get", "/sessions/{session_id}/setups", "Setup history", None, 200, schemas.SetupList, False, True, []),
    ("get", "/sessions/{session_id}/telemetry", "Latest value of each channel", None, 200, schemas.TelemetryOut,
     False, True, []),
    ("get", "/sessions/{session_id}/frames", "Stored frames in seq order", None, 200, schemas.FrameList, False,
     True, ["after_seq", "limit"]),
    ("get", "/sessions/{session_id}/events", "Event log", None, 200, schemas.EventList, False, True,
     ["after_id", "limit"]),
]
QUERY_TYPES = {"limit": "integer", "offset": "integer", "after_seq": "integer", "after_id": "integer",
               "status": "string", "car_id": "string"}


@lru_cache(maxsize=1)
def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document (cached: the models do not change at run time)."""
    models = {m for r in ROUTES for m in (r[3], r[5]) if m is not None} | {schemas.ErrorBody, schemas.Health}
    _, defs = models_json_schema([(m, "validation") for m in sorted(models, key=lambda m: m.__name__)],
                                 ref_template=REF)
    paths: dict[str, Any] = {}
    for method, path, summary, req, status, resp, key, has_id, query in ROUTES:
        op: dict[str, Any] = {"summary": summary, "responses": {}}
        params = [SESSION_ID] if has_id else []
        params += [{"name": q, "in": "query", "required": False, "schema": {"type": QUERY_TYPES[q]}} for q in query]
        if params:
            op["parameters"] = params
        if req is not None:
            op["requestBody"] = {"required": req is not schemas.RecordRequest,
                                 "content": {"application/json": {"schema": {"$ref": REF.format(model=req.__name__)}}}}
        ok: dict[str, Any] = {"description": "OK"}
        if resp is not None:
            ok["content"] = {"application/json": {"schema": {"$ref": REF.format(model=resp.__name__)}}}
        op["responses"][str(status)] = ok
        op["responses"].update(ERRORS)
        if key:
            op["security"] = [{"ApiKey": []}]
        paths.setdefault("/api/v1" + path, {})[method] = op
    paths["/healthz"] = {"get": {"summary": "Database reachable", "responses": {"200": {
        "description": "OK", "content": {"application/json": {"schema": {"$ref": REF.format(model="Health")}}}}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Race telemetry dashboard API", "version": "1"},
        "paths": paths,
        "components": {"schemas": defs["$defs"],
                       "securitySchemes": {"ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}},
    }
