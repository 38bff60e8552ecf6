"""The committed JSON Schemas and OpenAPI document are exactly what the Pydantic models generate."""
from __future__ import annotations

from dashboard.cli import SCHEMAS_DIR, render_schemas


def test_schemas_in_repo_match_the_models():
    expected = render_schemas()
    on_disk = {p.name: p.read_text() for p in SCHEMAS_DIR.glob("*.json")}
    stale = sorted(name for name in expected if on_disk.get(name) != expected[name])
    extra = sorted(set(on_disk) - set(expected))
    assert not stale and not extra, f"run `dashboard schemas`: stale {stale}, not generated {extra}"


def test_every_api_route_is_in_the_openapi_document(tmp_path):
    import re

    from dashboard.app import create_app
    from dashboard.config import Settings
    from dashboard.server.openapi import openapi_document

    app = create_app(Settings(instance_path=tmp_path, async_mode="threading"))
    try:
        documented = {(path, method) for path, ops in openapi_document()["paths"].items() for method in ops}
        missing = []
        for rule in app.url_map.iter_rules():
            if not rule.rule.startswith(("/api/v1/sessions", "/api/v1/tracks", "/api/v1/alert-rules",
                                         "/api/v1/keys", "/session_manager/")):
                continue
            path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
            for method in rule.methods - {"HEAD", "OPTIONS"}:
                if path.endswith("/{action}"):  # the lifecycle actions are listed one by one
                    if not any(p.startswith(path[: -len("{action}")]) for p, _ in documented):
                        missing.append((path, method))
                elif (path, method.lower()) not in documented:
                    missing.append((path, method))
        assert missing == []
    finally:
        app.extensions["dashboard"].core.close()


def test_every_route_enforces_what_the_openapi_document_says(tmp_path):
    """Each route's @require is the permission its OpenAPI entry documents, with that permission's security."""
    import re

    from dashboard.app import create_app
    from dashboard.config import Settings
    from dashboard.server.access import READ, WRITE
    from dashboard.server.openapi import ROUTES, SECURITY, openapi_document

    app = create_app(Settings(instance_path=tmp_path, async_mode="threading"))
    try:
        documented = {("/api/v1" + path, method): permission for method, path, *_, permission, _id, _q in ROUTES}
        enforced = {}
        for rule in app.url_map.iter_rules():
            if rule.endpoint.startswith(("api.", "compare.")) and rule.rule not in (
                    "/healthz", "/metrics", "/api/v1/openapi.json"):
                view = app.view_functions[rule.endpoint]
                assert getattr(view, "permission", None), f"{rule.rule} has no @require"
                for method in rule.methods - {"HEAD", "OPTIONS"}:
                    path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
                    enforced[(path, method.lower())] = view.permission
        for (path, method), permission in documented.items():
            key = (path, method) if (path, method) in enforced else (re.sub(r"/(start|stop|end|heartbeat)$",
                                                                            "/{action}", path), method)
            assert enforced[key] == permission, (path, method)
            assert openapi_document()["paths"][path][method]["security"] == SECURITY[permission]
        aliases = {p: v for p, v in enforced.items() if p[0].startswith("/session_manager/")}
        assert aliases and set(aliases.values()) == {WRITE}
        assert {p for p, v in documented.items() if v == READ} == {p for p in documented if p[1] == "get"
                                                                   and "/keys" not in p[0]}
        doc = openapi_document()
        assert doc["paths"]["/healthz"]["get"]["security"] == []
        assert set(doc["components"]["securitySchemes"]) == {"ApiKey", "Bearer"}
    finally:
        app.extensions["dashboard"].core.close()
