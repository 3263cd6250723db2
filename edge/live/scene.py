"""The live scene the API reads: the cards in view now, its JSON, the event stream, the annotated frame."""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from edge.types import ImageRGB


@dataclass(frozen=True, slots=True)
class SceneCard:
    """One tracked card as /v1/scene reports it."""

    track_id: int
    card_id: str | None
    name: str | None
    set_name: str | None
    number: str | None
    score: float
    known: bool
    identified: bool
    det_conf: float  # detector confidence
    polygon: tuple[tuple[float, float], ...]  # 4 corners, px, clockwise from the card's top-left
    confidence: str = "unknown"  # verified (by geometry in this track) / probable / unknown


@dataclass(frozen=True, slots=True)
class SceneState:
    """The live scene after one processed frame."""

    bundle_id: str | None
    frame_id: int | None
    t_capture: float | None
    width: int
    height: int
    cards: tuple[SceneCard, ...] = ()
    source: str | None = None

    def to_json(self) -> bytes:
        d = {
            "bundle_id": self.bundle_id,
            "frame_id": self.frame_id,
            "t_capture": self.t_capture,
            "width": self.width,
            "height": self.height,
            "source": self.source,
            "cards": [
                {
                    "track_id": c.track_id,
                    "card_id": c.card_id,
                    "name": c.name,
                    "set_name": c.set_name,
                    "number": c.number,
                    "score": round(c.score, 4),
                    "known": c.known,
                    "identified": c.identified,
                    "det_conf": round(c.det_conf, 4),
                    "polygon": [[round(x, 1), round(y, 1)] for x, y in c.polygon],
                    "confidence": c.confidence,
                }
                for c in self.cards
            ],
        }
        return json.dumps(d, separators=(",", ":")).encode()


@dataclass(slots=True)
class Subscription:
    """One SSE client's bounded queue; the oldest event is dropped when it is full."""

    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[dict[str, Any]] = field(default_factory=lambda: asyncio.Queue(256))

    def push(self, item: dict[str, Any]) -> None:
        if self.queue.full():
            self.queue.get_nowait()
        self.queue.put_nowait(item)


class EventHub:
    """Thread-safe fan-out from the live loop thread to asyncio subscribers."""

    def __init__(self) -> None:
        self._subs: list[Subscription] = []
        self._lock = threading.Lock()

    def subscribe(self) -> Subscription:
        """Call from inside the subscriber's event loop."""
        sub = Subscription(asyncio.get_running_loop())
        with self._lock:
            self._subs.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)

    def publish(self, item: dict[str, Any]) -> None:
        with self._lock:
            subs = list(self._subs)
        for sub in subs:
            try:
                sub.loop.call_soon_threadsafe(sub.push, item)
            except RuntimeError:  # its loop is closed: the client went away
                self.unsubscribe(sub)

    def __len__(self) -> int:
        with self._lock:
            return len(self._subs)


def annotate(image: ImageRGB, scene: SceneState) -> ImageRGB:
    """Draw each card's polygon and name on a copy of the frame (green known, amber unknown)."""
    out = image.copy()
    for card in scene.cards:
        pts = np.asarray(card.polygon, dtype=np.int32).reshape(-1, 1, 2)
        colour = (40, 200, 80) if card.known else (240, 170, 20)
        cv2.polylines(out, [pts], True, colour, 3, cv2.LINE_AA)
        label = card.name or ("unknown" if card.identified else "...")
        x, y = int(pts[:, 0, 0].min()), max(18, int(pts[:, 0, 1].min()) - 8)
        cv2.putText(out, label, (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 0, 0), 4, cv2.LINE_AA)
        cv2.putText(out, label, (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.7, colour, 2, cv2.LINE_AA)
    return out
