"""Tracks found by name: the pure matching rule (the REST and Socket.IO paths are in test_laps.py)."""
from __future__ import annotations

from dashboard.server.tracks import name_key, track_named


def row(track_id: str, name: str, updated_at: float) -> dict:
    return {"id": track_id, "name": name, "updated_at": updated_at}


def test_names_match_whatever_the_case_and_spacing() -> None:
    rows = [row("a", "Orlando Kart Center", 1.0), row("b", "Lydden Hill", 1.0)]
    assert track_named(rows, "  orlando   KART center\t")["id"] == "a"
    assert track_named(rows, "ORLANDO KART CENTRE") is None  # a spelling is not guessed
    assert track_named(rows, "") is None and track_named(rows, "   ") is None and track_named(rows, None) is None
    assert name_key("Straße  Nord") == name_key("STRASSE nord")  # case-folded, not only lower-cased


def test_of_several_tracks_with_one_name_the_one_changed_last_is_taken() -> None:
    rows = [row("old", "Club Circuit", 10.0), row("new", "club circuit", 20.0), row("other", "Club", 30.0)]
    assert track_named(rows, "Club Circuit")["id"] == "new"
