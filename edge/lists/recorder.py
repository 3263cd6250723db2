"""Appearance counting: which tracked cards of each published scene become list entries.

A card counts once per appearance. An appearance starts when a track is first identified as a
known card (verified or probable) while a list records, or, for a card already in view when the
list starts, at the first scene after the start. It follows its track: a track whose vote moves
from X to Y retags the entry to Y (one entry, of Y); an upgrade from probable to verified retags
its tier. A track the tracker lost and re-acquired under a new id is the same appearance when
the new track is the same card where the old one was last seen (polygon IoU or centre distance)
within `rejoin_frames` scenes, or lies over (or mostly inside) a visible track of the same card
(a duplicate box, or a box on part of the card).
After a restart of the service or a bundle swap the tracker starts afresh; the last entries stay
rejoinable for `resume_frames` scenes, so cards lying in view are not counted again.

Pure bookkeeping on the live loop's identify thread: no I/O, no image work. It returns `Insert`
and `Retag` operations for the writer thread (edge.lists.writer).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

import cv2
import numpy as np
import numpy.typing as npt

from edge.lists.store import CardFields, Entry, NewEntry, utc_now
from edge.live.scene import SceneCard, SceneState
from edge.recognize.rectify import centre, diagonal, polygon_iou
from edge.types import Frame, ImageRGB

logger = logging.getLogger(__name__)

TIERS = {"probable": 0, "verified": 1}  # the tiers a list records, weakest first


@dataclass(frozen=True, slots=True)
class RecorderConfig:
    """Flicker tolerance, counted in published scenes (the tracker counts in frames too)."""

    rejoin_frames: int = 15  # a lost track's appearance can be taken up this long after
    rejoin_iou: float = 0.3  # ... by a new track of the same card overlapping it this much
    rejoin_centre: float = 0.35  # ... or whose centre is this close (share of the diagonal)
    duplicate_iou: float = 0.5  # a new track over a visible one of the same card: no new entry
    duplicate_cover: float = 0.6  # ... or lying this much inside it (or it inside the new one)
    resume_frames: int = 60  # after a restart or a swap the last entries stay rejoinable
    resume_entries: int = 32  # how many of the list's last entries a restart takes up


@dataclass(frozen=True, slots=True)
class Insert:
    """A new entry; the writer crops `image` (None past the writer's backlog) to `polygon`."""

    entry: NewEntry
    image: ImageRGB | None = field(repr=False)
    names: tuple[str | None, str | None, str | None]  # name, set name, number from the scene


@dataclass(frozen=True, slots=True)
class Retag:
    """The tracker changed its mind about an entry's card (or proved it by geometry)."""

    entry_id: int
    card_id: str
    confidence: str
    score: float


Op = Insert | Retag


@dataclass(slots=True)
class _Appearance:
    entry_id: int
    card_id: str
    confidence: str
    polygon: npt.NDArray[np.float32]  # 4 x 2 px where it was last seen
    track_id: int | None  # its latest track (None: taken up from disk after a restart)
    until: int  # last scene tick at which a new track may still take it up


def _polygon(card: SceneCard) -> npt.NDArray[np.float32]:
    return np.asarray(card.polygon, dtype=np.float32).reshape(4, 2)


def cover(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> float:
    """Intersection over the smaller of two convex quads: 1 when one lies inside the other."""
    pa, pb = cv2.convexHull(a), cv2.convexHull(b)
    inter, _ = cv2.intersectConvexConvex(pa, pb)
    smaller = min(cv2.contourArea(pa), cv2.contourArea(pb))
    return float(inter / smaller) if smaller > 0 else 0.0


def qualifies(card: SceneCard) -> bool:
    """Identified as a known card: what a list records."""
    return bool(card.identified and card.known and card.card_id and card.confidence in TIERS)


class Recorder:
    """The recording list's appearances; `observe` once per published scene."""

    def __init__(self, config: RecorderConfig | None = None) -> None:
        self.config = config or RecorderConfig()
        self._lock = threading.Lock()
        self._list_id: int | None = None
        self._next_id = 1
        self._tick = 0
        self._apps: dict[int, _Appearance] = {}  # entry_id ->
        self._tracks: dict[int, int] = {}  # track_id -> entry_id
        self.observed = 0  # scenes looked at while recording
        self.recorded = 0  # entries created

    @property
    def list_id(self) -> int | None:
        return self._list_id

    def begin(self, list_id: int, next_entry_id: int, resume: list[Entry] | None = None) -> None:
        """Start recording `list_id`; `resume`: its last entries, when a restart resumes it."""
        with self._lock:
            self._list_id, self._next_id = list_id, next_entry_id
            self._apps.clear()
            self._tracks.clear()
            for e in resume or []:
                if e.polygon is None:
                    continue
                poly = np.asarray(e.polygon, dtype=np.float32).reshape(4, 2)
                until = self._tick + self.config.resume_frames
                self._apps[e.entry_id] = _Appearance(
                    e.entry_id, e.card.card_id, e.confidence, poly, None, until
                )

    def end(self) -> None:
        with self._lock:
            self._list_id = None
            self._apps.clear()
            self._tracks.clear()

    def on_swap(self) -> None:
        """A new bundle: the tracker forgets its tracks; what was in view stays rejoinable."""
        with self._lock:
            for app in self._apps.values():
                app.until = max(app.until, self._tick + self.config.resume_frames)

    def observe(self, frame: Frame, scene: SceneState, *, now: float | None = None) -> list[Op]:
        """The operations this scene causes (none when no list records)."""
        with self._lock:
            if self._list_id is None:
                return []
            self._tick += 1
            self.observed += 1
            t = utc_now(now)
            in_view = {c.track_id for c in scene.cards}
            ops: list[Op] = []
            for card in sorted(scene.cards, key=lambda c: c.track_id):
                op = self._see(card, frame, scene, in_view, t)
                if op is not None:
                    ops.append(op)
            self._expire(in_view)
            return ops

    def _see(
        self, card: SceneCard, frame: Frame, scene: SceneState, in_view: set[int], t: str
    ) -> Op | None:
        poly = _polygon(card)
        entry_id = self._tracks.get(card.track_id)
        app = self._apps.get(entry_id) if entry_id is not None else None
        ok = qualifies(card)
        if app is None:
            if not ok:
                return None
            assert card.card_id is not None
            app = self._rejoin(card.card_id, poly, in_view, card.track_id)
            if app is None:
                return self._insert(card, poly, frame, scene, t)
            self._tracks[card.track_id] = app.entry_id
            app.track_id = card.track_id
        app.polygon, app.until = poly, max(app.until, self._tick + self.config.rejoin_frames)
        if not ok:
            return None
        assert card.card_id is not None
        upgraded = card.card_id == app.card_id and TIERS[card.confidence] > TIERS[app.confidence]
        if card.card_id != app.card_id or upgraded:
            app.card_id, app.confidence = card.card_id, card.confidence
            return Retag(app.entry_id, card.card_id, card.confidence, card.score)
        return None

    def _rejoin(
        self, card_id: str, poly: npt.NDArray[np.float32], in_view: set[int], track_id: int
    ) -> _Appearance | None:
        """An appearance of the same card this new track continues, if any."""
        cfg, best, best_iou = self.config, None, -1.0
        for app in self._apps.values():
            if app.card_id != card_id or app.track_id == track_id:
                continue
            iou = polygon_iou(app.polygon, poly)
            if app.track_id is not None and app.track_id in in_view:
                # a second box over a card still tracked (the whole card, or a part of it)
                near = iou >= cfg.duplicate_iou or cover(app.polygon, poly) >= cfg.duplicate_cover
            else:
                gap = float(np.linalg.norm(centre(app.polygon) - centre(poly)))
                close = gap <= cfg.rejoin_centre * max(diagonal(app.polygon), 1.0)
                inside = cover(app.polygon, poly) >= cfg.duplicate_cover
                near = self._tick <= app.until and (iou >= cfg.rejoin_iou or close or inside)
            if near and iou > best_iou:
                best, best_iou = app, iou
        return best

    def _insert(
        self,
        card: SceneCard,
        poly: npt.NDArray[np.float32],
        frame: Frame,
        scene: SceneState,
        t: str,
    ) -> Insert:
        assert card.card_id is not None and self._list_id is not None
        entry_id, self._next_id = self._next_id, self._next_id + 1
        until = self._tick + self.config.rejoin_frames
        self._apps[entry_id] = _Appearance(
            entry_id, card.card_id, card.confidence, poly, card.track_id, until
        )
        self._tracks[card.track_id] = entry_id
        self.recorded += 1
        entry = NewEntry(
            entry_id=entry_id,
            list_id=self._list_id,
            t=t,
            card=CardFields(card.card_id, card.name or ""),
            confidence=card.confidence,
            score=round(float(card.score), 4),
            frame_id=int(frame.frame_id),
            track_id=card.track_id,
            polygon=[[round(float(x), 1), round(float(y), 1)] for x, y in poly],
            bundle_id=scene.bundle_id,
        )
        return Insert(entry, frame.image, (card.name, card.set_name, card.number))

    def _expire(self, in_view: set[int]) -> None:
        gone = [
            e
            for e, app in self._apps.items()
            if self._tick > app.until and (app.track_id is None or app.track_id not in in_view)
        ]
        for entry_id in gone:
            del self._apps[entry_id]
        live = set(self._apps)
        self._tracks = {t: e for t, e in self._tracks.items() if e in live}

    def snapshot(self) -> dict[str, int | None]:
        """For /v1/status-like reporting and tests."""
        with self._lock:
            return {
                "list_id": self._list_id,
                "appearances": len(self._apps),
                "observed": self.observed,
                "recorded": self.recorded,
            }
