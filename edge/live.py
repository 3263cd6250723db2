"""LiveLoop: camera -> detect -> track -> embed what needs it -> scene, in two overlapping threads.

The capture thread keeps only the newest frame (older ones are counted as dropped), so the
inference thread always works on the present while the next frame is being captured. A watchdog
thread notices a source that stopped delivering (and restarts it with backoff) and a backend
that hangs (reported on /readyz; the systemd watchdog then restarts the process). Every frame
takes a Runtime lease, so a bundle swap between two frames is safe.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edge.errors import EdgeError, SourceError
from edge.runtime import RecognizerLike, Runtime, SceneCard, SceneState
from edge.sources.base import FrameSource, SourceExhaustedError
from edge.track import TrackedCard, Tracker, TrackerConfig, TrackEvent
from edge.types import Candidate, Frame, Match

logger = logging.getLogger(__name__)

STAGES = ("queue", "detect", "rectify", "embed", "search", "track", "total")


@dataclass(frozen=True, slots=True)
class LiveConfig:
    stall_s: float = 5.0  # no frame (or no inference progress) for this long -> not ready
    hang_s: float = 30.0  # a thread silent this long -> not alive (systemd restarts us)
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 10.0
    tracker: TrackerConfig = field(default_factory=TrackerConfig)


def _close_quietly(source: FrameSource) -> None:
    try:
        source.close()
    except Exception:
        logger.exception("closing source %s failed", getattr(source, "uri", "?"))


class LatestFrame:
    """A one-slot mailbox: `put` replaces an unread frame (a drop), `get` takes the newest."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._frame: Frame | None = None

    def put(self, frame: Frame) -> bool:
        """Store `frame`; True when an unread frame was overwritten."""
        with self._cond:
            dropped = self._frame is not None
            self._frame = frame
            self._cond.notify()
        return dropped

    def get(self, timeout: float) -> Frame | None:
        with self._cond:
            if self._frame is None:
                self._cond.wait(timeout)
            frame, self._frame = self._frame, None
        return frame


class _Rate:
    """Frames per second over the last `n` events."""

    def __init__(self, n: int = 60) -> None:
        self._t: deque[float] = deque(maxlen=n)

    def tick(self, t: float) -> None:
        self._t.append(t)

    def value(self) -> float:
        if len(self._t) < 2 or self._t[-1] <= self._t[0]:
            return 0.0
        return (len(self._t) - 1) / (self._t[-1] - self._t[0])


class LiveLoop:
    """Owns the capture, inference and watchdog threads for one source."""

    def __init__(
        self,
        runtime: Runtime,
        source_factory: Callable[[], FrameSource],
        config: LiveConfig | None = None,
        *,
        uri: str = "",
    ) -> None:
        self.runtime = runtime
        self.config = config or LiveConfig()
        self.uri = uri
        self._factory = source_factory
        self._slot = LatestFrame()
        self._tracker = Tracker(self.config.tracker)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._gen = 0
        self._source: FrameSource | None = None
        self._lock = threading.Lock()
        self._beats: dict[str, float] = {}
        self.source_state = "starting"
        self.source_reason = "not started"
        self.backend_reason: str | None = None
        self.restarts = 0
        self.frames = 0
        self.dropped = 0
        self.embeddings = 0
        self._last_capture = 0.0
        self._last_done = 0.0
        self._busy_since: float | None = None
        self._stage_ms: dict[str, float] = dict.fromkeys(STAGES, 0.0)
        self._rate, self._capture_rate = _Rate(), _Rate()
        self._names: dict[str, tuple[str | None, str | None, str | None]] = {}
        self._bundle_id: str | None = None
        self.started = False

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        """Start (or restart after stop) the capture, inference and watchdog threads."""
        if self.started and not self._stop.is_set():
            return
        self._stop.clear()
        self._threads = []
        self.started = True
        now = time.monotonic()
        self._last_capture = self._last_done = now
        self._spawn("capture", self._capture_main, self._gen)
        self._spawn("infer", self._infer_main)
        self._spawn("watchdog", self._watchdog_main)

    def stop(self, timeout: float = 5.0) -> None:
        """Ask every thread to finish, release the source, and wait for them."""
        self._stop.set()
        self._close_source()
        for t in self._threads:
            t.join(timeout)
        self.source_state = "stopped"

    def on_swap(self) -> None:
        """A new bundle is current: names and votes of the old one no longer apply."""
        with self._lock:
            self._bundle_id = None

    def _spawn(self, name: str, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=f"live-{name}", daemon=True)
        self._beats[name] = time.monotonic()
        self._threads.append(thread)
        thread.start()

    def _sleep(self, seconds: float, beat: str) -> None:
        """Interruptible sleep that keeps the thread's heartbeat fresh."""
        end = time.monotonic() + seconds
        while not self._stop.is_set() and time.monotonic() < end:
            self._beats[beat] = time.monotonic()
            self._stop.wait(min(0.2, max(0.0, end - time.monotonic())))

    # -- capture ------------------------------------------------------------------------------
    def _capture_main(self, gen: int) -> None:
        backoff = self.config.backoff_initial_s
        while not self._stop.is_set() and gen == self._gen:
            self._beats["capture"] = time.monotonic()
            try:
                self._capture_session(gen)
                backoff = self.config.backoff_initial_s
            except SourceExhaustedError as e:
                self._set_source("ended", str(e))
                return
            except SourceError as e:
                self._set_source("error", str(e))
                self.runtime.metrics.count_error("source")
            except Exception as e:
                logger.exception("capture failed")
                self._set_source("error", f"capture failed: {e!r}")
                self.runtime.metrics.count_error("source")
            if gen != self._gen or self._stop.is_set():
                return
            logger.warning(
                "source %s: %s; retrying in %.1f s", self.uri, self.source_reason, backoff
            )
            self._sleep(backoff, "capture")
            backoff = min(backoff * 2, self.config.backoff_max_s)

    def _capture_session(self, gen: int) -> None:
        source = self._factory()
        with self._lock:
            self._source = source
        try:
            source.open()
            self._last_capture = time.monotonic()
            self._set_source("opened", "waiting for the first frame")
            while not self._stop.is_set() and gen == self._gen:
                frame = source.read()
                now = time.monotonic()
                self._beats["capture"] = self._last_capture = now
                self._capture_rate.tick(now)
                if self._slot.put(frame):
                    self.dropped += 1
                    self.runtime.metrics.dropped.inc()
                if self.source_state != "running":
                    self._set_source("running", "ok")
        finally:
            with self._lock:
                if self._source is source:
                    self._source = None
            _close_quietly(source)

    def _set_source(self, state: str, reason: str) -> None:
        if (state, reason) != (self.source_state, self.source_reason):
            logger.info("source %s: %s (%s)", self.uri, state, reason)
        self.source_state, self.source_reason = state, reason
        self.runtime.metrics.source_up.set(1 if state == "running" else 0)

    def _close_source(self) -> None:
        with self._lock:
            source, self._source = self._source, None
        if source is not None:
            _close_quietly(source)

    # -- inference ----------------------------------------------------------------------------
    def _infer_main(self) -> None:
        backoff = self.config.backoff_initial_s
        while not self._stop.is_set():
            self._beats["infer"] = time.monotonic()
            frame = self._slot.get(timeout=0.2)
            if frame is None:
                continue
            try:
                self._busy_since = time.monotonic()
                self.process(frame)
                self.backend_reason = None
                backoff = self.config.backoff_initial_s
            except EdgeError as e:
                self._backend_failed(str(e), e.code)
                self._sleep(backoff, "infer")
                backoff = min(backoff * 2, self.config.backoff_max_s)
            except Exception as e:
                logger.exception("live inference failed")
                self._backend_failed(f"inference failed: {e!r}", "internal")
                self._sleep(backoff, "infer")
                backoff = min(backoff * 2, self.config.backoff_max_s)
            finally:
                self._busy_since = None

    def _backend_failed(self, reason: str, kind: str) -> None:
        if reason != self.backend_reason:
            logger.error("live inference: %s", reason)
        self.backend_reason = reason
        self.runtime.metrics.count_error(kind)

    def process(self, frame: Frame) -> list[TrackEvent]:
        """Run one frame through the pipeline and publish its scene and events."""
        t0 = time.monotonic()
        ms: dict[str, float] = dict.fromkeys(STAGES, 0.0)
        ms["queue"] = max(0.0, (t0 - frame.t_capture) * 1000)
        with self.runtime.lease() as rec:
            events = self._maybe_reset(rec)
            boxes = rec.detect(frame.image)
            t1 = time.monotonic()
            plan = self._tracker.plan(boxes, frame.frame_id, frame.t_capture)
            verdicts: dict[int, tuple[Match, tuple[Candidate, ...]]] = {}
            t2 = t3 = t4 = time.monotonic()
            if plan.to_embed:
                crops = rec.crops(frame.image, [boxes[i] for i in plan.to_embed])
                t2 = time.monotonic()
                vectors = rec.embed(crops)
                t3 = time.monotonic()
                verdicts = dict(zip(plan.to_embed, rec.match(vectors), strict=True))
                t4 = time.monotonic()
            events += self._tracker.commit(plan, verdicts)
            tracked = self._tracker.snapshot()
            scene = self._scene(rec, frame, tracked)
            t5 = time.monotonic()
        self.runtime.publish(frame, scene)
        for ev in events:
            self.runtime.events.publish(self._event_dict(ev))
            if ev.kind == "card_identified":
                self.runtime.metrics.count_verdict("live", ev.known)
        ms.update(
            detect=(t1 - t0) * 1000,
            rectify=(t2 - t1) * 1000 if plan.to_embed else 0.0,
            embed=(t3 - t2) * 1000,
            search=(t4 - t3) * 1000,
            track=(t5 - t4) * 1000,
            total=(t5 - t0) * 1000,
        )
        self._account(ms, len(plan.to_embed), len(tracked), t5)
        return events

    def _maybe_reset(self, rec: RecognizerLike) -> list[TrackEvent]:
        with self._lock:
            if self._bundle_id == rec.bundle_id:
                return []
            self._bundle_id = rec.bundle_id
        self._names.clear()
        return self._tracker.reset()

    def _account(self, ms: dict[str, float], n_embedded: int, n_tracks: int, t: float) -> None:
        m = self.runtime.metrics
        for stage, value in ms.items():
            # Exponential moving average for /v1/status; histograms keep the distribution.
            self._stage_ms[stage] = (
                value if self.frames == 0 else 0.9 * self._stage_ms[stage] + 0.1 * value
            )
            m.observe_stage(stage, value / 1000)
        self.frames += 1
        self.embeddings += n_embedded
        self._last_done = t
        self._rate.tick(t)
        m.frames.inc()
        m.embeddings.inc(n_embedded)
        m.fps.set(self._rate.value())
        m.tracks.set(n_tracks)

    def _name(self, rec: RecognizerLike, card_id: str) -> tuple[str | None, str | None, str | None]:
        if card_id not in self._names:
            info = rec.catalogue.get(card_id)
            self._names[card_id] = (
                (info.name, info.set_name, info.number) if info else (None, None, None)
            )
        return self._names[card_id]

    def _scene(self, rec: RecognizerLike, frame: Frame, tracked: list[TrackedCard]) -> SceneState:
        cards = []
        for tc in tracked:
            name, set_name, number = (
                self._name(rec, tc.card_id) if tc.card_id else (None, None, None)
            )
            polygon = tuple((float(x), float(y)) for x, y in tc.box.corners)
            cards.append(
                SceneCard(
                    tc.track_id,
                    tc.card_id,
                    name,
                    set_name,
                    number,
                    tc.score,
                    tc.known,
                    tc.identified,
                    tc.box.conf,
                    polygon,
                )
            )
        h, w = frame.image.shape[:2]
        return SceneState(
            rec.bundle_id, frame.frame_id, frame.t_capture, w, h, tuple(cards), frame.source
        )

    def _event_dict(self, ev: TrackEvent) -> dict[str, Any]:
        name = self._names.get(ev.card_id, (None, None, None))[0] if ev.card_id else None
        return {
            "event": ev.kind,
            "track_id": ev.track_id,
            "frame_id": ev.frame_id,
            "card_id": ev.card_id,
            "name": name,
            "score": round(ev.score, 4),
            "known": ev.known,
        }

    # -- watchdog -----------------------------------------------------------------------------
    def _watchdog_main(self) -> None:
        while not self._stop.is_set():
            self._beats["watchdog"] = time.monotonic()
            self._stop.wait(min(1.0, self.config.stall_s / 4))
            now = time.monotonic()
            delivering = self.source_state in ("running", "opened")
            if delivering and now - self._last_capture > self.config.stall_s:
                self._restart_capture(now - self._last_capture)

    def _restart_capture(self, silent_s: float) -> None:
        """The source stopped delivering without an error: close it and start a fresh capture."""
        self._set_source("stalled", f"no frame for {silent_s:.1f} s; restarting the source")
        self.runtime.metrics.count_error("source_stall")
        self.restarts += 1
        self._gen += 1
        self._close_source()  # unblocks most blocking reads; the old thread exits on its own
        self._last_capture = time.monotonic()
        self._spawn("capture", self._capture_main, self._gen)

    # -- reporting ----------------------------------------------------------------------------
    def health(self) -> tuple[bool, str]:
        """(ready, why) for /readyz: the source delivers and inference keeps up."""
        if not self.started:
            return False, "live loop not started"
        now = time.monotonic()
        if self.source_state != "running":
            return False, f"source {self.source_state}: {self.source_reason}"
        if now - self._last_capture > self.config.stall_s:
            return False, f"source stalled: no frame for {now - self._last_capture:.1f} s"
        if self.backend_reason:
            return False, f"inference failing: {self.backend_reason}"
        busy = self._busy_since
        if busy is not None and now - busy > self.config.stall_s:
            return False, f"inference stalled for {now - busy:.1f} s"
        return True, f"ok: {self.uri or 'source'} at {self._rate.value():.1f} fps"

    def alive(self) -> bool:
        """False when a loop thread has been silent for hang_s (a hang, not a failing source)."""
        now = time.monotonic()
        busy = self._busy_since
        if busy is not None and now - busy > self.config.hang_s:
            return False
        return all(now - beat <= self.config.hang_s for beat in self._beats.values())

    def status(self) -> dict[str, Any]:
        ready, reason = self.health() if self.started else (False, "not started")
        return {
            "uri": self.uri,
            "state": self.source_state,
            "ready": ready,
            "reason": reason,
            "fps": round(self._rate.value(), 2),
            "capture_fps": round(self._capture_rate.value(), 2),
            "frames": self.frames,
            "dropped": self.dropped,
            "restarts": self.restarts,
            "embeddings_per_frame": round(self.embeddings / self.frames, 4) if self.frames else 0.0,
            "stage_ms": {k: round(v, 2) for k, v in self._stage_ms.items()},
        }


def bench_live(recognizer: RecognizerLike, source: FrameSource, seconds: float) -> dict[str, Any]:
    """Run the live loop on `source` for `seconds` and compare its fps with the sequential bound.

    The bound is 1 / (detector forward + embeddings per frame x embedder forward per crop), the
    forwards timed by the recognizer's own identify() on a frame of the same source. Live fps at
    or above 0.9 x the bound means capture, pre/post-processing and tracking overlap the forwards.
    """
    from edge.config import Settings

    runtime = Runtime(Settings(), recognizer)
    loop = LiveLoop(runtime, lambda: source, uri=getattr(source, "uri", ""))
    loop.start()
    try:
        time.sleep(min(2.0, seconds / 4))  # warm-up: first tracks, caches, thread start
        f0, e0, d0, t0 = loop.frames, loop.embeddings, loop.dropped, time.monotonic()
        time.sleep(seconds)
        f1, e1, d1, t1 = loop.frames, loop.embeddings, loop.dropped, time.monotonic()
        frame = runtime.latest_frame()  # reused for the sequential timing
    finally:
        loop.stop()
    if frame is None or f1 <= f0:
        raise EdgeError("live bench processed no frames", "is the source delivering?")
    det_ms, embed_ms = _forward_times(recognizer, frame)
    frames = f1 - f0
    per_frame = (e1 - e0) / frames
    live_fps = frames / (t1 - t0)
    bound = 1000.0 / (det_ms + per_frame * embed_ms)
    return {
        "seconds": round(t1 - t0, 2),
        "frames": frames,
        "dropped": d1 - d0,
        "live_fps": round(live_fps, 2),
        "embeddings_per_frame": round(per_frame, 4),
        "detector_forward_ms": round(det_ms, 2),
        "embedder_forward_ms_per_crop": round(embed_ms, 2),
        "sequential_bound_fps": round(bound, 2),
        "ratio": round(live_fps / bound, 3),
        "bar_met": live_fps >= 0.9 * bound,
        "stage_ms": loop.status()["stage_ms"],
    }


def _forward_times(
    recognizer: RecognizerLike, frame: Frame, repeats: int = 5
) -> tuple[float, float]:
    """Median detector forward ms and embedder forward ms per crop, from identify() timings."""
    det, emb = [], []
    for _ in range(repeats):
        result = recognizer.identify(frame.image)
        t = result.timings
        det.append(float(t.detect_forward or t.detect))
        if result.cards:
            emb.append(float(t.embed_forward or t.embed) / len(result.cards))
    det.sort()
    emb.sort()
    return det[len(det) // 2], (emb[len(emb) // 2] if emb else 0.0)
