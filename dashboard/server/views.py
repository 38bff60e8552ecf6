"""What clients receive, built from what the services hold: pure functions, no I/O.

Each builder returns the dict of one model in ``dashboard.schemas`` (named in its docstring);
``tests/server/test_contract.py`` checks every REST answer and Socket.IO message against them.
Stored rows written before inputs were bounded may hold anything: a number that is not finite
or a time out of range is shown as null instead of failing the whole answer.
"""
from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any, Iterable

from dashboard.telemetry.channels import get_channel, stale_after
from dashboard.telemetry.stats import FrameStats

SNAPSHOT_MAX_FRAMES = 1200  # frames of recent history a joining viewer gets: 60 s at 20 Hz; faster cars decimated


def iso(ts: Any) -> str | None:
    """Epoch seconds as ISO 8601 UTC; None for None and for anything that is not a representable time."""
    if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not math.isfinite(ts):
        return None
    try:
        return datetime.fromtimestamp(ts, timezone.utc).isoformat()
    except (OverflowError, OSError, ValueError):
        return None


def number(value: Any) -> float | None:
    """A finite number, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return value


def session_out(row: dict[str, Any], setup: dict[str, Any] | None, latest: dict[str, Any], stats: FrameStats,
                monitor: dict[str, Any], now: float, last_update: float | None = None) -> dict[str, Any]:
    """A session as the API and viewers see it (SessionOut); ``last_update``: when frames last arrived."""
    start = number(row.get("started_at")) or number(row.get("created_at")) or now
    if row["status"] == "active":
        end = now
    else:
        end = number(row.get("ended_at")) or number(row.get("last_activity_at")) or start
    duration = max(0.0, end - start)
    frames = row.get("frame_count") or 0
    return {
        "session_id": row["id"], "car_id": row["car_id"], "name": row["name"] or "", "driver": row["driver"],
        "track": row["track"], "status": row["status"], "created_at": iso(row["created_at"]) or iso(now),
        "started_at": iso(row["started_at"]), "ended_at": iso(row["ended_at"]),
        "last_activity_at": iso(row["last_activity_at"]), "end_reason": row["end_reason"],
        "setup": setup["setup"] if setup else None,
        "setup_timestamp": setup_time(setup) if setup else None,
        "setup_version": setup["version"] if setup else None,
        "telemetry": {name: number(v[0]) for name, v in latest.items()},
        "last_update": iso(last_update or (row["last_activity_at"] if frames else None)),
        "track_id": row.get("track_id"),
        "monitor_online": bool(monitor.get("online")),
        "monitor": monitor_health(monitor),
        "stats": {"frames": frames, "last_seq": row["last_seq"], "duration_s": round(duration, 3),
                  "update_rate_hz": round(frames / duration, 3) if duration > 0 else 0.0,
                  **public_stats(stats), "laps": row.get("laps") or 0,
                  "best_lap_s": number(row.get("best_lap_s"))},
    }


def public_stats(stats: FrameStats) -> dict[str, Any]:
    """The figures of FrameStats shown to people, every number finite or null."""
    out = stats.public()
    for key in ("distance_m", "gap_s"):
        out[key] = number(out[key]) or 0.0
    for key in ("max_speed", "max_rpm"):
        out[key] = number(out[key])
    return out


def monitor_health(monitor: dict[str, Any]) -> dict[str, Any]:
    """The car's monitor as last heard (MonitorHealth)."""
    return {"online": bool(monitor.get("online")), "backlog": monitor.get("backlog"),
            "rtt_ms": number(monitor.get("rtt_ms")), "oldest_age_s": number(monitor.get("oldest_age_s")),
            "sources": monitor.get("sources")}


def presence(session_id: str, monitor: dict[str, Any]) -> dict[str, Any]:
    """The /dashboard ``monitor`` message (MonitorPresence)."""
    return {"session_id": session_id, **monitor_health(monitor)}


def setup_time(version: dict[str, Any]) -> str:
    """When a setup took effect; its receipt time if the stored time is not a representable time."""
    return iso(version["timestamp"]) or iso(version["received_at"]) or "1970-01-01T00:00:00+00:00"


def public_setup(version: dict[str, Any]) -> dict[str, Any]:
    """A stored setup version (SetupOut)."""
    return {"session_id": version["session_id"], "version": version["version"], "timestamp": setup_time(version),
            "received_at": iso(version["received_at"]) or setup_time(version), "setup": version["setup"]}


def public_event(event: dict[str, Any]) -> dict[str, Any]:
    """A stored event (EventOut), without the stored response copy."""
    payload = {k: v for k, v in event["payload"].items() if k != "response"}
    return {"id": event["id"], "session_id": event["session_id"], "record_id": event["record_id"],
            "event_type": event["event_type"], "timestamp": iso(event["timestamp"]) or iso(event["received_at"]),
            "received_at": iso(event["received_at"]), "payload": payload}


def public_alert(row: dict[str, Any]) -> dict[str, Any]:
    """A stored alert (AlertOut)."""
    raised = row["raised"]
    return {"alert_id": row["id"], "session_id": row["session_id"], "rule_id": row["rule_id"],
            "name": raised["name"], "severity": raised["severity"], "channel": raised["channel"],
            "comparison": raised["comparison"], "threshold": raised["threshold"], "value": raised["value"],
            "raised_t": row["raised_t"], "seq": raised["seq"], "lap": raised.get("lap"), "lat": raised.get("lat"),
            "lon": raised.get("lon"), "cleared_t": row["cleared_t"], "acked_by": row["acked_by"],
            "acked_at": iso(row["acked_at"]), "active": row["cleared_t"] is None,
            "on_screen": row["cleared_t"] is None or row["acked_at"] is None}


def public_track(row: dict[str, Any]) -> dict[str, Any]:
    """A stored track (TrackOut)."""
    return {"pit_lane": None, **row["definition"], "track_id": row["id"], "created_at": iso(row["created_at"]),
            "updated_at": iso(row["updated_at"])}


def telemetry_out(session_id: str, latest: dict[str, Any], now: float,
                  last_update: float | None = None) -> dict[str, Any]:
    """Latest value of each channel with its age and staleness (TelemetryOut)."""
    channels = {}
    for name, (value, t, _seq) in sorted(latest.items()):
        t = number(t) or 0.0
        channel = get_channel(name)
        age = max(0.0, now - t)
        channels[name] = {"value": number(value), "t": t, "age_s": round(age, 3),
                          "unit": channel.unit if channel else None, "stale": age > stale_after(name)}
    return {"session_id": session_id, "last_update": iso(last_update), "channels": channels}


def stored_frame(frame: dict[str, Any]) -> dict[str, Any]:
    """A frame as stored (StoredFrame): seq, t, received_at, channels."""
    return {"seq": frame["seq"], "t": frame["t"], "received_at": frame["received_at"], "channels": frame["channels"]}


def decimate(frames: list[dict[str, Any]], limit: int = SNAPSHOT_MAX_FRAMES) -> list[dict[str, Any]]:
    """At most ``limit`` of ``frames``, evenly spaced, the newest always kept (a join stays small)."""
    if len(frames) <= limit:
        return frames
    step = len(frames) / limit
    picked = [frames[int(i * step)] for i in range(limit - 1)]
    return picked + [frames[-1]]


def laps_out(items: list[dict[str, Any]], timing: dict[str, Any] | None) -> dict[str, Any]:
    """The session's laps with best lap, best sectors and theoretical best (LapList)."""
    timed = [lap for lap in items if not (lap["out_lap"] or lap["in_lap"])]
    best = min(timed, key=lambda lap: lap["lap_time"], default=None)
    count = max((len(lap["sectors"]) for lap in timed), default=0)
    best_sectors = [min((lap["sectors"][i] for lap in timed
                         if i < len(lap["sectors"]) and lap["sectors"][i] is not None), default=None)
                    for i in range(count)]
    theoretical = sum(best_sectors) if best_sectors and None not in best_sectors else None
    return {"items": items, "best_lap": best, "best_sectors": best_sectors, "theoretical_best": theoretical,
            "timing": timing}


def window(frames: Iterable[dict[str, Any]], seconds: float) -> list[dict[str, Any]]:
    """The frames of the last ``seconds`` before the newest sample, in the order given."""
    frames = list(frames)
    if not frames:
        return []
    newest = max(f["t"] for f in frames)
    return [f for f in frames if f["t"] >= newest - seconds]


def public_key(row: dict[str, Any]) -> dict[str, Any]:
    """An access key as admins see it, never its hash nor the key (KeyOut)."""
    return {"key_id": row["id"], "role": row["role"], "name": row["name"], "car_id": row["car_id"],
            "created_at": iso(row["created_at"]), "last_used_at": iso(row["last_used_at"]),
            "revoked_at": iso(row["revoked_at"])}
