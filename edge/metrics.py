"""Prometheus metrics of the live loop and the API, in a registry owned by one app (no globals),
so several apps in one process (tests) never collide."""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

logger = logging.getLogger(__name__)

STAGES = (
    "capture",
    "queue",
    "detect",
    "handoff",
    "rectify",
    "embed",
    "search",
    "verify",
    "track",
    "total",
    "identify",
)
# Seconds; spans a fast NPU stage (~2 ms) to a slow CPU frame (~2 s).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56)


class Metrics:
    """Every metric the runtime exports; `render()` is the /metrics body."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.fps = Gauge("cardedge_fps", "Live frames processed per second.", registry=r)
        self.frames = Counter("cardedge_frames", "Frames processed by the live loop.", registry=r)
        self.dropped = Counter(
            "cardedge_frames_dropped", "Captured frames dropped for a newer one.", registry=r
        )
        self.stale = Counter(
            "cardedge_frames_stale",
            "Detected frames dropped because their bundle was swapped out before identification.",
            registry=r,
        )
        self.stage_latency = Histogram(
            "cardedge_stage_latency_seconds",
            "Wall time per pipeline stage.",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.embeddings = Counter("cardedge_embeddings", "Card crops embedded.", registry=r)
        self.identifications = Counter(
            "cardedge_identifications", "Cards identified as a known card.", ["path"], registry=r
        )
        self.unknowns = Counter(
            "cardedge_unknowns",
            "Cards judged unknown (not in the catalogue).",
            ["path"],
            registry=r,
        )
        self.errors = Counter("cardedge_errors", "Errors by kind.", ["kind"], registry=r)
        self.source_up = Gauge(
            "cardedge_source_up", "1 while the frame source delivers.", registry=r
        )
        self.tracks = Gauge("cardedge_tracks", "Cards currently tracked in view.", registry=r)

    def observe_stage(self, stage: str, seconds: float) -> None:
        self.stage_latency.labels(stage=stage).observe(seconds)

    def count_verdict(self, path: str, known: bool) -> None:
        """One card verdict from `path` ("live" or "identify")."""
        (self.identifications if known else self.unknowns).labels(path=path).inc()

    def count_error(self, kind: str) -> None:
        self.errors.labels(kind=kind).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
