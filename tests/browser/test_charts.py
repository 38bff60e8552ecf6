"""Strip charts draw each channel's own samples: gaps as breaks, frames that lack a channel ignored, time order kept.

A real server and a scripted car: sampled frames (speed, rpm, throttle) at 10 Hz with GPS fix frames between them
(lat, lon only, stamped with their own GPS time, older than the sample sent before them), a pause of the feed,
then more, ending with the fix lost (position channels null). What each chart draws is read from the page
(``window.__charts.data(name)``: uPlot's own arrays).
"""
from __future__ import annotations

import time
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import PHONE, TRACK_LAT, TRACK_LON, screenshot
from tests.clients import CALL_TIMEOUT_S

HZ = 10.0
FIX_LAG_S = 0.04  # a fix frame's GPS time: this much before the sample sent just before it
PAUSE_S = 5.0  # the feed stops this long between the two stretches (a gap: more than 2 s at 10 Hz)


def stretch(seq: int, t0: float, seconds: float, fix_lost_after: float | None = None) -> list[dict[str, Any]]:
    """Sampled frames every 1/HZ s from t0, each followed by a fix frame (until the fix is lost: then the samples
    carry lat/lon as null, stale)."""
    frames = []
    for k in range(int(seconds * HZ)):
        t = round(t0 + k / HZ, 3)
        lost = fix_lost_after is not None and k / HZ >= fix_lost_after
        sample = {"speed": 100.0 + seq, "rpm": 5000.0 + seq, "throttle": float(seq % 100)}
        if lost:
            sample.update(lat=None, lon=None)
        frames.append({"seq": seq, "t": t, "channels": sample})
        seq += 1
        if not lost:
            frames.append({"seq": seq, "t": round(t - FIX_LAG_S, 3),
                           "channels": {"lat": TRACK_LAT + seq * 1e-6, "lon": TRACK_LON - seq * 1e-6}})
            seq += 1
    return frames


def send(car: Any, frames: list[dict[str, Any]]) -> None:
    ack = car.monitor.call("telemetry", {"session_id": car.session_id, "frames": frames}, namespace="/monitor",
                           timeout=CALL_TIMEOUT_S)
    assert ack["ok"] and not ack["rejected"], ack


def samples_of(frames: list[dict[str, Any]], name: str) -> list[tuple[float, float | None]]:
    """(t, value) of every frame that carries ``name``, in time order."""
    return sorted((f["t"], f["channels"][name]) for f in frames if name in f["channels"])


def chart(page: Any, name: str) -> tuple[list[float], list[float | None]]:
    xs, ys = page.evaluate("(name) => window.__charts.data(name)", name)
    return xs, ys


def wait_chart(page: Any, name: str, count: int) -> None:
    """Wait until the chart of ``name`` draws ``count`` samples."""
    expect(page.locator(f'.strip[data-channel="{name}"]')).to_have_attribute("data-points", str(count))


def test_charts_break_at_gaps_and_ignore_frames_without_the_channel(live_server: Any, make_car: Any,
                                                                      open_page: Any) -> None:
    car = make_car(name="Gaps").connect()
    page = open_page(car.url, viewport=PHONE)
    expect(page.locator("body")).to_have_attribute("data-joined", "true")
    page.click(".chart-pick summary")
    page.get_by_label("Latitude (°)").check()  # chart the position too (labelled from the registry)

    now = time.time()
    first = stretch(0, now - 12.0, 4.0)  # 4 s, then the feed pauses
    send(car, first)
    assert first[-1]["t"] < first[-2]["t"]  # the fix frame is older than the sample before it
    wait_chart(page, "speed", len(samples_of(first, "speed")))
    wait_chart(page, "lat", len(samples_of(first, "lat")))
    xs, ys = chart(page, "speed")
    assert xs == [t for t, _ in samples_of(first, "speed")]  # fix frames are no samples of speed: not null, not 0
    assert ys == [v for _, v in samples_of(first, "speed")]
    xs, ys = chart(page, "lat")
    assert xs == [t for t, _ in samples_of(first, "lat")]  # sampled frames are no samples of lat; in time order
    assert None not in ys
    # the tiles ignore a frame without their channel too: speed is the last sample's, though a fix came after it
    last_speed = samples_of(first, "speed")[-1][1]
    expect(page.locator('.value[data-channel="speed"]')).to_have_attribute("data-value", str(int(last_speed)))

    # the feed comes back after the pause, and then the car loses its GPS fix for the last second
    second = stretch(first[-1]["seq"] + 1, first[-2]["t"] + PAUSE_S, 3.0, fix_lost_after=2.0)
    send(car, second)
    frames = first + second
    wait_chart(page, "speed", len(samples_of(frames, "speed")))
    wait_chart(page, "lat", len(samples_of(frames, "lat")))

    end_first = max(f["t"] for f in first)
    start_second = min(f["t"] for f in second)
    for name in ("speed", "rpm", "throttle"):
        xs, ys = chart(page, name)
        assert xs == sorted(xs), name
        gaps = [x for x, y in zip(xs, ys, strict=True) if y is None]
        assert len(gaps) == 1 and end_first < gaps[0] < start_second, (name, gaps)  # one break, in the pause
        assert [(x, y) for x, y in zip(xs, ys, strict=True) if y is not None] == samples_of(frames, name)
        expect(page.locator(f'.strip[data-channel="{name}"]')).to_have_attribute("data-gaps", "1")

    xs, ys = chart(page, "lat")
    assert xs == sorted(xs)
    fixes = [(t, v) for t, v in samples_of(frames, "lat") if v is not None]
    assert [(x, y) for x, y in zip(xs, ys, strict=True) if y is not None] == fixes
    breaks = [x for x, y in zip(xs, ys, strict=True) if y is None]
    assert end_first < breaks[0] < start_second  # the pause
    lost = [t for t, v in samples_of(second, "lat") if v is None]  # the stale samples: the line ends there
    assert breaks[1:] == lost and lost
    assert 0 not in ys
    # with the fix lost, latitude is shown stale (its null), not a made-up value
    expect(page.locator('.tile[data-channel="lat"]')).to_have_attribute("data-stale", "true")
    expect(page.locator('.value[data-channel="lat"]')).to_have_attribute("data-value", "")
    page.locator(".area-charts").scroll_into_view_if_needed()
    screenshot(page, "charts-phone-gap", full_page=False)


GAP_CASES = [
    # (sample times, values, expected times of the breaks)
    pytest.param([0, 1, 2, 3, 7, 8, 9], [1] * 7, [], id="1 Hz: a 4 s silence is under 5 intervals"),
    pytest.param([0, 1, 2, 3, 9, 10, 11], [1] * 7, [6.0], id="1 Hz: a 6 s silence is a gap"),
    pytest.param([0, 0.1, 0.2, 0.3, 1.8, 1.9], [1] * 6, [], id="10 Hz: 1.5 s is under the 2 s floor"),
    pytest.param([0, 0.1, 0.2, 0.3, 2.8, 2.9], [1] * 6, [1.55], id="10 Hz: 2.5 s is a gap"),
    pytest.param([0, 0.1, 0.2, 0.3, 0.4], [1, 2, None, 4, 5], [0.2], id="a null (stale) is a break itself"),
    pytest.param([0, 0.1, 0.2, 9, 9.1, 9.2], [1, 2, None, 4, 5, 6], [0.2], id="no second break beside a null"),
]


@pytest.mark.parametrize(("times", "values", "breaks"), GAP_CASES)
def test_the_gap_rule(live_server: Any, make_car: Any, open_page: Any, times: list[float],
                      values: list[float | None], breaks: list[float]) -> None:
    """series.js, in the page: a silence longer than max(2 s, 5 usual intervals), or a null, is drawn as a break."""
    page = open_page(make_car(name="Gap rule").url, viewport=PHONE)
    result = page.evaluate("""async ([times, values]) => {
      const { chartSeries } = await import("/static/js/live/series.js");
      // frames that lack the channel (undefined) between the samples are skipped
      const t = [], col = [];
      times.forEach((x, i) => { t.push(x - 0.01); col.push(undefined); t.push(x); col.push(values[i]); });
      return chartSeries(t, col, -1, 100);
    }""", [times, values])
    got_breaks = [x for x, y in zip(result["x"], result["y"], strict=True) if y is None]
    assert got_breaks == pytest.approx(breaks)
    assert [x for x, y in zip(result["x"], result["y"], strict=True) if y is not None] == [
        x for x, v in zip(times, values, strict=True) if v is not None]
    assert result["samples"] == len(times)
