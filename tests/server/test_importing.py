"""Imports into the store (SQLite and PostgreSQL): one ended session per file, its laps timed on the track given or
found, and nothing at all left when the file fails, however late."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Iterator

import pytest
from sqlalchemy import func, select

from dashboard.errors import NotFound
from dashboard.server import importing
from dashboard.server.importing import import_file, import_lines
from dashboard.server.store import FRAMES, SESSIONS, Store
from dashboard.server.tracks import ORLANDO_TRACK_ID
from dashboard.telemetry.importers import BadImportFile
from dashboard.telemetry.laps import ORLANDO_KART_CENTER

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "imports"
FILES = ("okc.log", "okc-racechrono.csv", "okc.gpx", "okc-plain.csv", "okc.nmea")
EPOCHS = 2736


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store.from_url(db_url)
    yield s
    s.close()


def counts(store: Store) -> tuple[int, int]:
    with store.engine.connect() as conn:
        return (conn.execute(select(func.count()).select_from(SESSIONS)).scalar_one(),
                conn.execute(select(func.count()).select_from(FRAMES)).scalar_one())


def timed(store: Store, session_id: str) -> list[float]:
    return [lap["lap_time"] for lap in store.laps(session_id) if not (lap["out_lap"] or lap["in_lap"])]


def test_every_format_becomes_an_ended_session_with_the_same_laps(store: Store) -> None:
    laps = {}
    for name in FILES:
        result = import_file(store, SAMPLES / name, car_id="kart-7", filename=name)
        row = store.get_session(result.session_id)
        assert row["status"] == "ended" and row["end_reason"] == "imported" and row["car_id"] == "kart-7"
        assert row["frame_count"] == result.frames == EPOCHS
        assert row["track_id"] == ORLANDO_TRACK_ID and row["track"] == ORLANDO_KART_CENTER.name  # found
        assert row["started_at"] == pytest.approx(1763917364.36) and row["ended_at"] > row["started_at"] + 100
        assert row["laps"] == result.laps == 2 and row["best_lap_s"] == result.best_lap_s
        assert row["stats"]["distance_m"] > 2000
        frames = store.frames(result.session_id, -1, 3)
        assert [f["seq"] for f in frames] == [0, 1, 2] and frames[0]["t"] == pytest.approx(1763917364.36)
        events = store.events(result.session_id, 0, 10)
        assert [e["event_type"] for e in events] == ["session.imported"] and events[0]["payload"]["frames"] == EPOCHS
        laps[name] = timed(store, result.session_id)
    reference = laps["okc.nmea"]
    assert len(reference) == 2
    for name, times in laps.items():
        assert times == pytest.approx(reference, abs=0.0005), name  # the same laps, to the millisecond


def test_the_track_is_named_case_insensitive_or_not_found(store: Store) -> None:
    result = import_file(store, SAMPLES / "okc.log", track="  orlando KART center ")
    assert result.track_id == ORLANDO_TRACK_ID and result.laps == 2
    before = counts(store)
    with pytest.raises(NotFound, match="no track named 'Monza'"):
        import_file(store, SAMPLES / "okc.log", track="Monza")
    assert counts(store) == before


def test_a_path_crossing_no_stored_line_is_imported_untimed(store: Store) -> None:
    text = "time,lat,lon,rpm\n" + "".join(f"{1763917364 + i},45.0,{7.0 + i * 1e-4},3000\n" for i in range(10))
    result = import_lines(store, io.StringIO(text), "csv", filename="elsewhere.csv")
    row = store.get_session(result.session_id)
    assert result.track_id is None and row["track_id"] is None and row["laps"] == 0
    assert row["name"] == "elsewhere.csv" and result.frames == 10


def test_a_file_failing_at_its_very_end_leaves_nothing(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importing, "CHUNK_ROWS", 100)  # 27 chunks of frames written before the end is reached
    written: list[int] = []
    real_write = importing._write
    monkeypatch.setattr(importing, "_write", lambda *a: (written.append(len(a[3])), real_write(*a)))
    before = counts(store)
    text = (SAMPLES / "okc.gpx").read_text()
    cut = text[:text.rindex("</trkseg>")]  # every point read (and written) before the XML is found unfinished
    with pytest.raises(BadImportFile) as caught:
        import_lines(store, io.StringIO(cut), "gpx")
    assert "ends early" in caught.value.message and caught.value.line is not None
    assert sum(written) == EPOCHS // 100 * 100  # every whole chunk of frames was written in the transaction...
    assert counts(store) == before  # ...and none is left, nor the session


def test_some_bad_rows_are_skipped_and_said(store: Store) -> None:
    lines = (SAMPLES / "okc.log").read_text().splitlines(keepends=True)
    lines[100] = "garbage\n"
    lines[200] = lines[200].replace(",", ",?", 1)
    result = import_lines(store, io.StringIO("".join(lines)), "racecapture")
    assert result.frames == EPOCHS - 2 and result.skipped == 2
    assert [line for line, _ in result.skipped_examples] == [101, 201]
    assert result.laps == 2
