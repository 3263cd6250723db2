"""`cardedge bench --live`: the live loop's fps against the sequential forward bound (or the
camera's own rate where that is lower), one run.

The bound is 1 / (detector forward + embeddings per frame x embedder forward per crop): what a
loop that did nothing but the two forwards, one after the other, could reach. Everything comes
from the same call on the same recognizer: fps and embeddings per frame from the running loop,
the forward times from the recognizer's own identify() timings on frames that loop captured,
taken right after it stops (uncontended, so the forwards are not inflated by the pipeline's
own stages competing for the cores). identify() embeds every card of a frame in one batch, so
its per-crop time is at most the live loop's (whose batches are mostly one re-embedded track):
the bound errs high and the ratio low. A ratio above 1 is possible where the forwards of the two
pipelined stages run on different cores (ONNX Runtime with one thread per session).
"""

from __future__ import annotations

import time
from typing import Any

from edge.errors import EdgeError
from edge.live.loop import LiveLoop
from edge.live.runtime import RecognizerLike, Runtime
from edge.sources.base import FrameSource
from edge.types import Frame

BAR = 0.9
PROBE_FRAMES = 5  # frames of the run whose forwards are timed
PROBE_REPEATS = 3  # identify() calls per probe frame


def bench_live(
    recognizer: RecognizerLike,
    source: FrameSource,
    seconds: float,
    *,
    camera_fps: float | None = None,
) -> dict[str, Any]:
    """Run the live loop on `source` for `seconds`; report fps, the bound and their ratio.

    A camera paced at `camera_fps` caps the loop: the target is then min(camera fps, bound),
    since no loop can process frames the camera has not delivered."""
    from edge.config import Settings

    runtime = Runtime(Settings(), recognizer)
    loop = LiveLoop(runtime, lambda: source, uri=getattr(source, "uri", ""))
    probes: list[Frame] = []
    loop.start()
    try:
        time.sleep(min(2.0, seconds / 4))  # warm-up: first tracks, caches, thread start
        f0, e0, d0, s0, t0 = (
            loop.frames,
            loop.embeddings,
            loop.dropped,
            loop.stale,
            time.monotonic(),
        )
        for i in range(PROBE_FRAMES):
            time.sleep(max(0.0, t0 + seconds * (i + 1) / PROBE_FRAMES - time.monotonic()))
            frame = runtime.latest_frame()
            if frame is not None and all(frame is not p for p in probes):
                probes.append(frame)
        f1, e1, d1, s1, t1 = (
            loop.frames,
            loop.embeddings,
            loop.dropped,
            loop.stale,
            time.monotonic(),
        )
        stage_ms = loop.status()["stage_ms"]
    finally:
        loop.stop()
    if not probes or f1 <= f0:
        raise EdgeError("live bench processed no frames", "is the source delivering?")
    det_ms, embed_ms = forward_times(recognizer, probes)
    frames = f1 - f0
    per_frame = (e1 - e0) / frames
    live_fps = frames / (t1 - t0)
    bound = 1000.0 / (det_ms + per_frame * embed_ms)
    target = min(bound, camera_fps) if camera_fps else bound
    slowest = max(stage_ms["detect"], stage_ms["total"] - stage_ms["detect"] - stage_ms["handoff"])
    return {
        "seconds": round(t1 - t0, 2),
        "frames": frames,
        "dropped": d1 - d0,
        "stale": s1 - s0,
        "live_fps": round(live_fps, 2),
        "embeddings_per_frame": round(per_frame, 4),
        "detector_forward_ms": round(det_ms, 2),
        "embedder_forward_ms_per_crop": round(embed_ms, 2),
        "sequential_bound_fps": round(bound, 2),
        "camera_fps": camera_fps,
        "target_fps": round(target, 2),
        "ratio": round(live_fps / target, 3),
        "bar_met": live_fps >= BAR * target,
        "pipeline": "capture -> detect -> identify (track, rectify, embed, search, publish)",
        "slowest_stage_ms": round(slowest, 2),
        "onnx_threads": _onnx_threads(recognizer),
        "stage_ms": stage_ms,
    }


def forward_times(recognizer: RecognizerLike, frames: list[Frame]) -> tuple[float, float]:
    """Median detector forward ms, and median embedder forward ms per crop, over identify()
    calls on `frames` (0 for the embedder when no frame had a card)."""
    det: list[float] = []
    emb: list[float] = []
    for frame in frames:
        for _ in range(PROBE_REPEATS):
            result = recognizer.identify(frame.image)
            t = result.timings
            det.append(float(t.detect_forward or t.detect))
            if result.cards:
                emb.append(float(t.embed_forward or t.embed) / len(result.cards))
    return _median(det), (_median(emb) if emb else 0.0)


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def _onnx_threads(recognizer: RecognizerLike) -> dict[str, Any]:
    """Intra-op threads per model as the backends describe them (absent for other backends)."""
    try:
        backends = recognizer.describe().get("backends", {})
    except Exception:  # a double or a closed recognizer: the figure is informative only
        return {}
    return {
        role: info["threads"]
        for role, info in backends.items()
        if isinstance(info, dict) and "threads" in info
    }
