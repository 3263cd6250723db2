"""LiveLoop: camera -> detect -> track -> embed what needs it -> scene, as a threaded pipeline.

    capture --newest frame--> detect --hand-off (1, blocking)--> identify --> scene + events

The capture thread keeps only the newest frame (older ones are counted as dropped). The detect
thread runs frame N+1's detector (pre-processing, forward, decode) while the identify thread
tracks, rectifies, embeds, searches and publishes frame N, so throughput approaches 1 / the
slowest stage instead of 1 / (detect + identify). Hand-off policies: edge/live/stages.py.

Bundle swaps: the detect stage takes a Runtime lease per frame and the frame carries it to the
identify stage, which releases it after publishing; a frame detected by bundle A is embedded by
bundle A, or dropped (counted as stale) when A is no longer current by then.

A watchdog thread notices a source that stopped delivering (and restarts it with backoff) and a
stage that hangs (reported on /readyz; the systemd watchdog then restarts the process).
`stop()` stops capture and detection, lets the identify stage publish what was already detected,
and releases every lease.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from edge.errors import EdgeError, SourceError
from edge.live.identify import IdentifyStage
from edge.live.runtime import Runtime
from edge.live.stages import (
    Detected,
    Handoff,
    HeldLease,
    LatestFrame,
    Rate,
    StageStates,
)
from edge.live.track import TrackerConfig, TrackEvent
from edge.sources.base import FrameSource, SourceExhaustedError, close_quietly
from edge.types import Frame

logger = logging.getLogger(__name__)

_In = TypeVar("_In")
_Out = TypeVar("_Out")

STAGES = (
    "queue", "detect", "handoff", "rectify", "embed", "search", "verify", "track", "total",
)  # fmt: skip
WORKERS = ("detect", "identify")  # the pipeline stages after capture

__all__ = ["STAGES", "LatestFrame", "LiveConfig", "LiveLoop"]


@dataclass(frozen=True, slots=True)
class LiveConfig:
    stall_s: float = 5.0  # no frame (or no stage progress) for this long -> not ready
    hang_s: float = 30.0  # a thread silent this long -> not alive (systemd restarts us)
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 10.0
    tracker: TrackerConfig = field(default_factory=TrackerConfig)


class LiveLoop:
    """Owns the capture, detect, identify and watchdog threads for one source."""

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
        self._handoff: Handoff[Detected] = Handoff()
        self._work = IdentifyStage(runtime, self.config.tracker)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._gen = 0
        self._source: FrameSource | None = None
        self._lock = threading.Lock()
        self._beats: dict[str, float] = {}
        self._stages = StageStates(WORKERS)
        self.source_state = "starting"
        self.source_reason = "not started"
        self.restarts = 0
        self.frames = 0  # published
        self.detected = 0
        self.dropped = 0  # captured frames replaced by a newer one before detection
        self.stale = 0  # detected frames dropped: their bundle was swapped out meanwhile
        self.discarded = 0  # detected frames released unpublished because the loop stopped
        self.embeddings = 0
        self._last_capture = 0.0
        self._last_done = 0.0
        self._stage_ms: dict[str, float] = dict.fromkeys(STAGES, 0.0)
        self._rate, self._capture_rate = Rate(), Rate()
        self.started = False

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        """Start (or restart after stop) the capture, detect, identify and watchdog threads.

        Each start gets its own stop event and hand-offs, so a thread of an earlier run that
        is still finishing can never take work from this one.
        """
        if self.started and not self._stop.is_set():
            return
        stop = self._stop = threading.Event()
        self._slot, self._handoff = LatestFrame(), Handoff()
        self._threads = []
        self.started = True
        self._last_capture = self._last_done = time.monotonic()
        self._spawn("capture", self._capture_main, self._gen, stop)
        detect = self._spawn("detect", self._detect_main, stop, self._slot, self._handoff)
        self._spawn("identify", self._identify_main, stop, self._handoff, detect)
        self._spawn("watchdog", self._watchdog_main, stop)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop capture and detection, let identify publish what was detected, join threads."""
        self._stop.set()
        self._close_source()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self.source_state = "stopped"

    def on_swap(self) -> None:
        """A new bundle is current: names and votes of the old one no longer apply."""
        self._work.on_swap()

    @property
    def backend_reason(self) -> str | None:
        """Why a pipeline stage last failed (None when every stage last succeeded)."""
        return self._stages.failure()

    def _spawn(self, name: str, target: Callable[..., None], *args: Any) -> threading.Thread:
        thread = threading.Thread(target=target, args=args, name=f"live-{name}", daemon=True)
        self._beats[name] = time.monotonic()
        self._threads.append(thread)
        thread.start()
        return thread

    def _sleep(self, seconds: float, beat: str, stop: threading.Event) -> None:
        """Interruptible sleep that keeps the thread's heartbeat fresh."""
        end = time.monotonic() + seconds
        while not stop.is_set() and time.monotonic() < end:
            self._beats[beat] = time.monotonic()
            stop.wait(min(0.2, max(0.0, end - time.monotonic())))

    # -- capture ------------------------------------------------------------------------------
    def _capture_main(self, gen: int, stop: threading.Event) -> None:
        backoff = self.config.backoff_initial_s
        while not stop.is_set() and gen == self._gen:
            self._beats["capture"] = time.monotonic()
            try:
                self._capture_session(gen, stop)
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
            if gen != self._gen or stop.is_set():
                return
            logger.warning(
                "source %s: %s; retrying in %.1f s", self.uri, self.source_reason, backoff
            )
            self._sleep(backoff, "capture", stop)
            backoff = min(backoff * 2, self.config.backoff_max_s)

    def _capture_session(self, gen: int, stop: threading.Event) -> None:
        source = self._factory()
        with self._lock:
            self._source = source
        slot = self._slot
        try:
            source.open()
            self._last_capture = time.monotonic()
            self._set_source("opened", "waiting for the first frame")
            while not stop.is_set() and gen == self._gen:
                if not source.live and not slot.wait_empty(0.1):
                    self._beats["capture"] = time.monotonic()
                    continue
                frame = source.read()
                now = time.monotonic()
                self._beats["capture"] = self._last_capture = now
                self._capture_rate.tick(now)
                if slot.put(frame):
                    self.dropped += 1
                    self.runtime.metrics.dropped.inc()
                if self.source_state != "running":
                    self._set_source("running", "ok")
        finally:
            with self._lock:
                if self._source is source:
                    self._source = None
            close_quietly(source)

    def _set_source(self, state: str, reason: str) -> None:
        if (state, reason) != (self.source_state, self.source_reason):
            logger.info("source %s: %s (%s)", self.uri, state, reason)
        self.source_state, self.source_reason = state, reason
        self.runtime.metrics.source_up.set(1 if state == "running" else 0)

    def _close_source(self) -> None:
        with self._lock:
            source, self._source = self._source, None
        if source is not None:
            close_quietly(source)

    # -- stage 1: detect ----------------------------------------------------------------------
    def _detect_main(
        self, stop: threading.Event, slot: LatestFrame, handoff: Handoff[Detected]
    ) -> None:
        backoff = self.config.backoff_initial_s
        while not stop.is_set():
            self._beats["detect"] = time.monotonic()
            frame = slot.get(timeout=0.2)
            if frame is None:
                continue
            item = self._run_stage("detect", self.detect, frame)
            if item is None:
                self._sleep(backoff, "detect", stop)
                backoff = min(backoff * 2, self.config.backoff_max_s)
                continue
            backoff = self.config.backoff_initial_s
            if not handoff.put(item, stop, lambda: self._beat("detect")):
                item.lease.release()  # stopping while identify is still busy: never published
                self.discarded += 1

    def detect(self, frame: Frame) -> Detected:
        """Stage 1: lease the current recognizer and find the frame's boxes with it."""
        lease = HeldLease(self.runtime)
        try:
            t0 = time.monotonic()
            boxes = lease.recognizer.detect(frame.image)
        except BaseException:
            lease.release()
            raise
        self.detected += 1
        return Detected(frame, boxes, lease, t0, time.monotonic())

    # -- stage 2: track, rectify, embed, search, publish --------------------------------------
    def _identify_main(
        self, stop: threading.Event, handoff: Handoff[Detected], upstream: threading.Thread
    ) -> None:
        backoff = self.config.backoff_initial_s
        while True:
            self._beats["identify"] = time.monotonic()
            item = handoff.get(timeout=0.2)
            if item is None:
                if stop.is_set() and not upstream.is_alive():
                    return  # drained: detection has ended and nothing is left to publish
                continue
            if self._run_stage("identify", self.identify, item) is None:
                self._sleep(backoff, "identify", stop)
                backoff = min(backoff * 2, self.config.backoff_max_s)
            else:
                backoff = self.config.backoff_initial_s

    def _run_stage(self, stage: str, work: Callable[[_In], _Out], item: _In) -> _Out | None:
        """Run one item through `stage`, recording busy time and failures; None on failure."""
        self._stages.busy(stage, time.monotonic())
        try:
            result = work(item)
        except EdgeError as e:
            self._backend_failed(stage, str(e), e.code)
            return None
        except Exception as e:
            logger.exception("live %s failed", stage)
            self._backend_failed(stage, f"{stage} failed: {e!r}", "internal")
            return None
        finally:
            self._stages.busy(stage, None)
        self._stages.failed(stage, None)
        return result

    def _backend_failed(self, stage: str, reason: str, kind: str) -> None:
        if reason != self.backend_reason:
            logger.error("live %s: %s", stage, reason)
        self._stages.failed(stage, reason)
        self.runtime.metrics.count_error(kind)

    def identify(self, item: Detected) -> list[TrackEvent]:
        """Stage 2: track, embed what needs it, publish; always releases the frame's lease."""
        try:
            if item.recognizer is not self.runtime.peek():
                self.stale += 1
                self.runtime.metrics.stale.inc()
                return []
            return self._identify(item)
        finally:
            item.lease.release()

    def process(self, frame: Frame) -> list[TrackEvent]:
        """Run one frame through both stages in this thread (tests, one-off use)."""
        return self.identify(self.detect(frame))

    def _identify(self, item: Detected) -> list[TrackEvent]:
        events, ms, n_embedded, n_tracks = self._work.run(item)
        self._account(ms, n_embedded, n_tracks, time.monotonic())
        return events

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

    # -- watchdog -----------------------------------------------------------------------------
    def _beat(self, name: str) -> None:
        self._beats[name] = time.monotonic()

    def _watchdog_main(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self._beat("watchdog")
            stop.wait(min(1.0, self.config.stall_s / 4))
            now = time.monotonic()
            delivering = self.source_state in ("running", "opened")
            if not stop.is_set() and delivering and now - self._last_capture > self.config.stall_s:
                self._restart_capture(now - self._last_capture, stop)

    def _restart_capture(self, silent_s: float, stop: threading.Event) -> None:
        """The source stopped delivering without an error: close it and start a fresh capture."""
        self._set_source("stalled", f"no frame for {silent_s:.1f} s; restarting the source")
        self.runtime.metrics.count_error("source_stall")
        self.restarts += 1
        self._gen += 1
        self._close_source()  # unblocks most blocking reads; the old thread exits on its own
        self._last_capture = time.monotonic()
        self._spawn("capture", self._capture_main, self._gen, stop)

    # -- reporting ----------------------------------------------------------------------------
    def health(self) -> tuple[bool, str]:
        """(ready, why) for /readyz: the source delivers and every stage keeps up."""
        if not self.started:
            return False, "live loop not started"
        now = time.monotonic()
        if self.source_state != "running":
            return False, f"source {self.source_state}: {self.source_reason}"
        if now - self._last_capture > self.config.stall_s:
            return False, f"source stalled: no frame for {now - self._last_capture:.1f} s"
        if self.backend_reason:
            return False, f"inference failing: {self.backend_reason}"
        busy = self._stages.longest_busy(now)
        if busy is not None and busy[1] > self.config.stall_s:
            return False, f"inference stalled in {busy[0]} for {busy[1]:.1f} s"
        return True, f"ok: {self.uri or 'source'} at {self._rate.value():.1f} fps"

    def alive(self) -> bool:
        """False when a loop thread has been silent, or one stage busy with a single frame, for
        hang_s (a hang, not a failing source)."""
        now = time.monotonic()
        busy = self._stages.longest_busy(now)
        if busy is not None and busy[1] > self.config.hang_s:
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
            "stale": self.stale,
            "restarts": self.restarts,
            "embeddings_per_frame": round(self.embeddings / self.frames, 4) if self.frames else 0.0,
            "stage_ms": {k: round(v, 2) for k, v in self._stage_ms.items()},
        }
