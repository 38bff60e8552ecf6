"""The committed JSON Schemas and OpenAPI document are exactly what the Pydantic models generate."""
from __future__ import annotations

from dashboard.cli import SCHEMAS_DIR, render_schemas


def test_schemas_in_repo_match_the_models():
    expected = render_schemas()
    on_disk = {p.name: p.read_text() for p in SCHEMAS_DIR.glob("*.json")}
    stale = sorted(name for name in expected if on_disk.get(name) != expected[name])
    extra = sorted(set(on_disk) - set(expected))
    assert not stale and not extra, f"run `dashboard schemas`: stale {stale}, not generated {extra}"
