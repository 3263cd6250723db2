"""The live loop's plumbing: the hand-offs between its threads and what travels through them.

capture --LatestFrame--> detect --Handoff--> identify (track, rectify, embed, search, publish)

Two hand-off policies, each chosen for where it sits:
- `LatestFrame` (capture -> detect) keeps only the newest frame and counts the one it replaces:
  dropping an unprocessed camera frame costs nothing, and the loop always works on the present.
- `Handoff` (detect -> identify) holds one detected frame and BLOCKS the detector while it is
  full (backpressure). A detected frame has already cost an accelerator forward and holds a
  bundle lease; overwriting it would waste both and, on a shared accelerator, steal device time
  from the embedder. So frames are dropped in one place only, at capture, where it is free.

A `Detected` frame carries the recognizer that detected it and the lease that keeps it open, so
the identify stage embeds it with the same bundle even if a swap happened in between (or drops
it, counted, when that bundle is no longer current).
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from edge.live.runtime import RecognizerLike, Runtime
from edge.live.scene import SceneCard, SceneState
from edge.live.track import TrackedCard, TrackEvent
from edge.types import Frame, OrientedBox

T = TypeVar("T")


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
            self._cond.notify_all()
        return frame

    def wait_empty(self, timeout: float) -> bool:
        """Block until the slot has been read (offline sources: read only when wanted)."""
        with self._cond:
            if self._frame is not None:
                self._cond.wait(timeout)
            return self._frame is None


class Handoff(Generic[T]):
    """A size-1 blocking hand-off between two pipeline stages (see the module docstring)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: T | None = None

    def put(
        self, item: T, stop: threading.Event, beat: Callable[[], None], poll_s: float = 0.1
    ) -> bool:
        """Wait until the slot is free, then store `item`. False (item not stored) when `stop`
        is set while waiting; `beat` runs on every poll so a waiting stage is not taken for a
        hung one (the stage it waits on shows as busy instead)."""
        with self._cond:
            while self._item is not None:
                if stop.is_set():
                    return False
                beat()
                self._cond.wait(poll_s)
            self._item = item
            self._cond.notify_all()
            return True

    def get(self, timeout: float) -> T | None:
        """The waiting item (freeing the slot), or None after `timeout` seconds."""
        with self._cond:
            if self._item is None:
                self._cond.wait(timeout)
            item, self._item = self._item, None
            if item is not None:
                self._cond.notify_all()
            return item

    def __len__(self) -> int:
        with self._cond:
            return 0 if self._item is None else 1


class HeldLease:
    """A Runtime lease taken in one thread and released in another (exactly once).

    `Runtime.lease()` is a context manager; a pipelined frame enters it in the detect stage and
    leaves it in the identify stage, so the bundle that detected a frame stays open until the
    frame is published or dropped.
    """

    def __init__(self, runtime: Runtime) -> None:
        self._cm: AbstractContextManager[RecognizerLike] = runtime.lease()
        self.recognizer = self._cm.__enter__()
        self._lock = threading.Lock()
        self._held = True

    def release(self) -> None:
        with self._lock:
            held, self._held = self._held, False
        if held:
            self._cm.__exit__(None, None, None)


@dataclass(slots=True)
class Detected:
    """One frame after the detect stage, on its way to the identify stage."""

    frame: Frame
    boxes: list[OrientedBox]
    lease: HeldLease
    t_start: float  # monotonic, when detection started
    t_detected: float  # monotonic, when detection ended

    @property
    def recognizer(self) -> RecognizerLike:
        return self.lease.recognizer


class Rate:
    """Events per second over the last `n` events."""

    def __init__(self, n: int = 60) -> None:
        self._t: deque[float] = deque(maxlen=n)

    def tick(self, t: float) -> None:
        self._t.append(t)

    def value(self) -> float:
        if len(self._t) < 2 or self._t[-1] <= self._t[0]:
            return 0.0
        return (len(self._t) - 1) / (self._t[-1] - self._t[0])


class StageStates:
    """Per stage: since when it has been busy with one item, and why it last failed."""

    def __init__(self, stages: tuple[str, ...]) -> None:
        self._busy: dict[str, float | None] = dict.fromkeys(stages)
        self._failed: dict[str, str | None] = dict.fromkeys(stages)

    def busy(self, stage: str, since: float | None) -> None:
        self._busy[stage] = since

    def failed(self, stage: str, reason: str | None) -> None:
        self._failed[stage] = reason

    def failure(self) -> str | None:
        """The first failing stage's reason, or None when every stage last succeeded."""
        return next((r for r in self._failed.values() if r), None)

    def longest_busy(self, now: float) -> tuple[str, float] | None:
        """(stage, seconds) of the stage busiest with a single item, or None when all idle."""
        spans = [(s, now - t) for s, t in self._busy.items() if t is not None]
        return max(spans, key=lambda st: st[1]) if spans else None


class SceneBuilder:
    """Turns tracked cards into the published SceneState and events into their JSON dicts,
    caching card names per bundle (clear() on a bundle change)."""

    def __init__(self) -> None:
        self._names: dict[str, tuple[str | None, str | None, str | None]] = {}

    def clear(self) -> None:
        self._names.clear()

    def _name(self, rec: RecognizerLike, card_id: str) -> tuple[str | None, str | None, str | None]:
        if card_id not in self._names:
            info = rec.catalogue.get(card_id)
            self._names[card_id] = (
                (info.name, info.set_name, info.number) if info else (None, None, None)
            )
        return self._names[card_id]

    def scene(self, rec: RecognizerLike, frame: Frame, tracked: list[TrackedCard]) -> SceneState:
        cards = []
        for tc in tracked:
            name, set_name, number = (
                self._name(rec, tc.card_id) if tc.card_id and not tc.back else (None, None, None)
            )
            polygon = tuple((float(x), float(y)) for x, y in tc.box.corners)
            cards.append(
                SceneCard(
                    tc.track_id,
                    tc.card_id or None,
                    name,
                    set_name,
                    number,
                    tc.score,
                    tc.known,
                    tc.identified,
                    tc.box.conf,
                    polygon,
                    "back"
                    if tc.back
                    else "verified"
                    if tc.verified
                    else "probable"
                    if tc.known
                    else "unknown",
                )
            )
        h, w = frame.image.shape[:2]
        return SceneState(
            rec.bundle_id, frame.frame_id, frame.t_capture, w, h, tuple(cards), frame.source
        )

    def event(self, ev: TrackEvent) -> dict[str, Any]:
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


def pipeline_onnx_threads(configured: int, cores: int | None = None, stages: int = 2) -> int:
    """ONNX Runtime intra-op threads per session when `stages` pipelined stages run at once.

    `configured` 0 means "all cores" for one session; with the detector and embedder sessions
    running concurrently that would put 2 x cores spinning threads on the cores, so each session
    gets cores // stages (at least 1) instead. An explicit setting is kept as it is.
    """
    if configured > 0:
        return configured
    n = cores if cores is not None else (os.cpu_count() or 1)
    return max(1, n // stages)
