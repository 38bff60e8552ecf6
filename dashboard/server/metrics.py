"""Prometheus metrics of one server process, served at ``/metrics``."""
from __future__ import annotations

from typing import Any, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
disable_created_metrics()  # the *_created series only add noise to a scrape


class Metrics:
    """The counters, gauges and histograms of one app (own registry, so tests can make many apps)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.frames_received = Counter("dashboard_frames_received", "Frames accepted from monitors",
                                       registry=self.registry)
        self.frames_rejected = Counter("dashboard_frames_rejected", "Frames rejected as invalid",
                                       registry=self.registry)
        self.frames_duplicate = Counter("dashboard_frames_duplicate", "Frames received again and ignored",
                                        registry=self.registry)
        self.frames_backfilled = Counter("dashboard_frames_backfilled", "Frames accepted from a monitor's backlog",
                                         registry=self.registry)
        self.frames_broadcast = Counter("dashboard_frames_broadcast", "Frames emitted to session rooms",
                                        registry=self.registry)
        self.monitors = Gauge("dashboard_monitors_connected", "Connected in-car monitors", registry=self.registry)
        self.viewers = Gauge("dashboard_viewers_connected", "Connected dashboard viewers", registry=self.registry)
        self.loop_lag = Gauge("dashboard_loop_lag_seconds", "How late the event loop runs timers (average)",
                              registry=self.registry)
        self.broadcast_latency = Histogram(
            "dashboard_ingest_to_broadcast_seconds", "From a frame's receipt to its emit to the room",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5), registry=self.registry)
        self.write_batch = Histogram(
            "dashboard_db_write_batch_frames", "Frames per database write transaction",
            buckets=(1, 5, 10, 50, 100, 250, 500, 1000, 2000, 5000), registry=self.registry)
        self.write_seconds = Histogram(
            "dashboard_db_write_seconds", "Duration of a frame write transaction",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0), registry=self.registry)

    def watch_fanout(self, fanout: Any) -> None:
        """Expose a :class:`dashboard.server.fanout.Fanout`'s counters (read at scrape time, nothing per frame)."""
        self.registry.register(_FanoutCollector(fanout))

    def watch_connections(self, connections: Any) -> None:
        """Expose a :class:`dashboard.server.connections.Connections`' counts (read at scrape time)."""
        self.registry.register(_ConnectionsCollector(connections))

    def watch_core(self, core: Any) -> None:
        """Expose the core's state: sessions in memory, the writer's backlog, laps timed again (read at scrape)."""
        self.registry.register(_CoreCollector(core))

    def on_write(self, frames: int, seconds: float) -> None:
        """Record one writer transaction."""
        self.write_batch.observe(frames)
        self.write_seconds.observe(seconds)

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)


class _FanoutCollector:
    """How messages left for viewers: written directly, through Engine.IO's queue, viewers dropped as too slow."""

    def __init__(self, fanout: Any) -> None:
        self.fanout = fanout

    def collect(self) -> Iterator[CounterMetricFamily]:
        for name, doc, value in (
                ("dashboard_fanout_direct", "Messages written straight to a viewer's socket", self.fanout.direct),
                ("dashboard_fanout_queued", "Messages sent through Engine.IO's per-connection queue",
                 self.fanout.queued),
                ("dashboard_fanout_slow_viewers", "Viewers disconnected because they stopped reading",
                 self.fanout.slow_viewers)):
            yield CounterMetricFamily(name, doc, value=value)


class _CoreCollector:
    """What the core holds and does: read when /metrics is scraped, nothing per frame."""

    def __init__(self, core: Any) -> None:
        self.core = core

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        core = self.core
        yield GaugeMetricFamily("dashboard_sessions_in_memory", "Sessions held in the live cache",
                                value=len(core.cache))
        yield GaugeMetricFamily("dashboard_writer_backlog", "Writes queued for the single writer",
                                value=core.writer.backlog)
        yield CounterMetricFamily("dashboard_writer_failures", "Writer transactions that failed",
                                  value=core.writer.failures)
        yield CounterMetricFamily("dashboard_lap_replays", "Sessions timed again from their stored frames",
                                  value=core.timing.replays)
        yield GaugeMetricFamily("dashboard_lap_replays_running", "Sessions being timed again now",
                                value=core.timing.replaying)
        interrupted = CounterMetricFamily("dashboard_laps_interrupted", "Laps ended untimed where the GPS trace "
                                          "broke (gap: no fix for over 3 s; jump: a relocation)", labels=["reason"])
        for reason, count in core.timing.interrupted.items():
            interrupted.add_metric([reason], count)
        yield interrupted


class _ConnectionsCollector:
    """Connections held and refused, by reason (dashboard/server/connections.py): read when /metrics is scraped."""

    def __init__(self, connections: Any) -> None:
        self.connections = connections

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        gate = self.connections.gate
        yield GaugeMetricFamily("dashboard_connections_open", "Connections held now (bare TCP included)",
                                value=gate.open)
        yield GaugeMetricFamily("dashboard_connections_peak", "Most connections held at once since start",
                                value=gate.peak)
        yield GaugeMetricFamily("dashboard_connections_limit", "Connections held at most (after the fd limit)",
                                value=gate.cap)
        refused = CounterMetricFamily("dashboard_connections_refused", "Connections refused or closed, by reason: "
                                      "total_cap, address_cap, header_timeout, auth_timeout", labels=["reason"])
        for reason, count in gate.refused.items():
            refused.add_metric([reason], count)
        yield refused
        yield CounterMetricFamily("dashboard_connections_idle_closed", "Kept-alive connections closed for want of "
                                  "a next request within header_timeout_s", value=gate.idle_closed)
        yield CounterMetricFamily("dashboard_connections_gone_before_answer", "Refused requests whose client hung "
                                  "up before the refusal could be sent", value=gate.gone_before_answer)
        yield CounterMetricFamily("dashboard_connections_polling_refused", "Long-polling requests answered 400 by the "
                                  "WebSocket-only server before its WSGI stack", value=gate.refused_polling)
        yield CounterMetricFamily("dashboard_memory_trims", "Times freed memory was handed back after connections "
                                  "closed (malloc_trim)", value=self.connections.memory.trims)
