"""The live loop's identify stage: track a frame's boxes, look at what needs it, publish.

Runs on the loop's identify thread (edge.live.loop), one detected frame at a time: the tracker
plans which boxes need a look (new, uncertain, moved, due), the recognizer rectifies, embeds,
searches and verifies those, the tracker votes, and the scene and its events go to the runtime.
A bundle swap starts the tracks afresh: names and votes of the old bundle no longer apply.
"""

from __future__ import annotations

import threading
import time

from edge.live.runtime import RecognizerLike, Runtime
from edge.live.stages import Detected, SceneBuilder
from edge.live.track import BACKGROUND, Tracker, TrackerConfig, TrackEvent
from edge.types import Candidate, Match

NOT_A_CARD = Match("", 0.0, 0.0, False, "unknown", reason=BACKGROUND)


class IdentifyStage:
    """Stage 2's work on one detected frame, with the tracks it keeps between frames."""

    def __init__(self, runtime: Runtime, tracker: TrackerConfig) -> None:
        self.runtime = runtime
        self._tracker = Tracker(tracker)
        self._scenes = SceneBuilder()
        self._lock = threading.Lock()
        self._bundle_id: str | None = None

    def on_swap(self) -> None:
        """A new bundle is current: the next frame starts the tracks afresh."""
        with self._lock:
            self._bundle_id = None

    def run(self, item: Detected) -> tuple[list[TrackEvent], dict[str, float], int, int]:
        """Track the frame's boxes, look at the ones that need it, publish the scene and its
        events; returns the events, the stage times (ms), the boxes looked at and the tracks."""
        rec, frame, boxes = item.recognizer, item.frame, item.boxes
        t1 = time.monotonic()
        events = self._maybe_reset(rec)
        plan = self._tracker.plan(boxes, frame.frame_id, frame.t_capture)
        verdicts: dict[int, tuple[Match, tuple[Candidate, ...]]] = {}
        rectify_ms = embed_ms = search_ms = verify_ms = 0.0
        if plan.to_embed:
            cards, (rectify_ms, embed_ms, _, search_ms, verify_ms) = rec.verdicts(
                frame.image, [boxes[i] for i in plan.to_embed]
            )
            # A background box (None) gets no vote and its track is never announced; it is looked
            # at again only when it moves or changes, as a settled track is.
            verdicts = {
                i: (card.match, card.top_k) if card is not None else (NOT_A_CARD, ())
                for i, card in zip(plan.to_embed, cards, strict=True)
            }
        events += self._tracker.commit(plan, verdicts)
        tracked = self._tracker.snapshot()
        scene = self._scenes.scene(rec, frame, tracked)
        self.runtime.publish(frame, scene)
        for ev in events:
            self.runtime.events.publish(self._scenes.event(ev))
            if ev.kind == "card_identified":
                self.runtime.metrics.count_verdict("live", ev.known)
        t5 = time.monotonic()
        ms = {
            "queue": max(0.0, item.t_start - frame.t_capture) * 1000,
            "detect": (item.t_detected - item.t_start) * 1000,
            "handoff": (t1 - item.t_detected) * 1000,
            "rectify": rectify_ms,
            "embed": embed_ms,
            "search": search_ms,
            "verify": verify_ms,
            "track": (t5 - t1) * 1000 - rectify_ms - embed_ms - search_ms - verify_ms,
            "total": (t5 - item.t_start) * 1000,
        }
        return events, ms, len(plan.to_embed), len(tracked)

    def _maybe_reset(self, rec: RecognizerLike) -> list[TrackEvent]:
        with self._lock:
            if self._bundle_id == rec.bundle_id:
                return []
            self._bundle_id = rec.bundle_id
        self._scenes.clear()
        return self._tracker.reset()
