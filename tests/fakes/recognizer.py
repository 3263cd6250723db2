"""A test double of edge.recognize.recognizer.Recognizer that computes real results on simple card scenes.

Cards are flat 2x2 colour patterns (so upright and upside-down differ) placed on a dark
background. `detect` finds them for real (threshold + contours + minimum-area rectangles),
`crops` rectifies them with edge.recognize.rectify, `embed` is the crop's grid of mean colours, `match`
searches both views of every reference card by cosine and applies score/margin thresholds. It
imitates the Recognizer interface agreed in the project brief (edge/recognize/recognizer.py), not a library.
Switches: `fail` (raise on detect, like a dead accelerator), `gate` / `embed_gate` (block detect /
embed, like a hang), `detect_delay_s` / `embed_delay_s` (a slow forward).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np

from edge.recognize.index import CardInfo
from edge.recognize.rectify import order_corners, rectify, rotate180
from edge.types import Candidate, CardCrop, CardMatch, Match, OrientedBox, StageTimings

CROP_H, CROP_W = 88, 64
GRID = (4, 3)  # rows, cols of mean colours in an embedding


def card_image(colours: np.ndarray, height: int = 176) -> np.ndarray:
    """A portrait card (63:88) whose quadrants have the four given RGB colours."""
    width = round(height * 63 / 88)
    img = np.zeros((height, width, 3), np.uint8)
    h2, w2 = height // 2, width // 2
    img[:h2, :w2], img[:h2, w2:], img[h2:, :w2], img[h2:, w2:] = colours
    return img


def make_cards(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """n cards with distinct bright quadrant colours, ids card-000 ..."""
    rng = np.random.default_rng(seed)
    return {f"card-{i:03d}": card_image(rng.integers(90, 256, (4, 3))) for i in range(n)}


@dataclass(frozen=True)
class Placement:
    card_id: str
    cx: float
    cy: float
    angle: float = 0.0  # degrees, clockwise on screen
    height: float = 150.0  # card height in px


def placement_corners(p: Placement) -> np.ndarray:
    """TL, TR, BR, BL of the placed card in frame pixels."""
    h, w = p.height, p.height * 63 / 88
    local = np.array([[-w / 2, -h / 2], [w / 2, -h / 2], [w / 2, h / 2], [-w / 2, h / 2]])
    a = np.deg2rad(p.angle)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return (local @ rot.T + [p.cx, p.cy]).astype(np.float32)


def compose(
    cards: dict[str, np.ndarray], placements: list[Placement], size=(640, 480)
) -> np.ndarray:
    """A dark frame with each placed card warped in."""
    frame = np.full((size[1], size[0], 3), 20, np.uint8)
    for p in placements:
        src = cards[p.card_id]
        sh, sw = src.shape[:2]
        m = cv2.getPerspectiveTransform(
            np.float32([[0, 0], [sw, 0], [sw, sh], [0, sh]]), placement_corners(p)
        )
        warped = cv2.warpPerspective(src, m, size)
        mask = cv2.warpPerspective(np.full((sh, sw), 255, np.uint8), m, size) > 127
        frame[mask] = warped[mask]
    return frame


def _embed_one(img: np.ndarray) -> np.ndarray:
    small = cv2.resize(img, (GRID[1], GRID[0]), interpolation=cv2.INTER_AREA).astype(np.float32)
    v = small.reshape(-1) - small.mean()
    return v / max(float(np.linalg.norm(v)), 1e-6)


@dataclass
class _Catalogue:
    cards: dict[str, CardInfo]

    def get(self, card_id: str) -> CardInfo | None:
        return self.cards.get(card_id)

    def search(self, q: str, limit: int = 20) -> list[CardInfo]:
        q = q.casefold()
        hits = [
            c for c in self.cards.values() if q in c.card_id.casefold() or q in c.name.casefold()
        ]
        return hits[:limit]

    def __len__(self) -> int:
        return len(self.cards)


@dataclass
class FakeRecognizer:
    cards: dict[str, np.ndarray]
    bundle_id: str = "fake-bundle-1"
    unknown_score: float = 0.9
    unknown_margin: float = 0.02
    top_k: int = 3
    detect_delay_s: float = 0.0
    embed_delay_s: float = 0.0
    embed_gate: threading.Event | None = None
    fail: Exception | None = None
    gate: threading.Event | None = None
    bundle_dir: Path = Path("fake-bundle")
    embedded: int = 0
    closed: bool = False
    backends: dict[str, str] = field(
        default_factory=lambda: {"detector": "fake: test double", "embedder": "fake: test double"}
    )

    def __post_init__(self) -> None:
        ids = list(self.cards)
        self.catalogue = _Catalogue(
            {
                cid: CardInfo(cid, f"Card {cid[-3:]}", "S1", "Set One", cid[-3:], "common", "")
                for cid in ids
            }
        )
        views = [_embed_one(self._crop_of(img)) for img in self.cards.values()]
        views += [_embed_one(rotate180(self._crop_of(img))) for img in self.cards.values()]
        self._refs = np.stack(views)
        self._ref_ids = ids + ids
        self.manifest = SimpleNamespace(catalogue=SimpleNamespace(name="fake", card_count=len(ids)))

    @staticmethod
    def _crop_of(img: np.ndarray) -> np.ndarray:
        return cv2.resize(img, (CROP_W, CROP_H), interpolation=cv2.INTER_AREA)

    def detect(self, image: np.ndarray) -> list[OrientedBox]:
        if self.gate is not None:
            self.gate.wait()
        if self.fail is not None:
            raise self.fail
        if self.detect_delay_s:
            time.sleep(self.detect_delay_s)
        mask = (image.max(axis=2) > 60).astype(np.uint8)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        boxes = []
        for c in contours:
            area = cv2.contourArea(c)
            if area < 400:
                continue
            rect = cv2.minAreaRect(c)
            fill = area / max(rect[1][0] * rect[1][1], 1.0)
            corners = order_corners(cv2.boxPoints(rect).astype(np.float32))
            boxes.append(OrientedBox(corners, float(min(1.0, fill))))
        return sorted(
            boxes, key=lambda b: (float(b.corners[:, 0].mean()), float(b.corners[:, 1].mean()))
        )

    def crops(self, image: np.ndarray, boxes: list[OrientedBox]) -> list[CardCrop]:
        return [rectify(image, b, CROP_H, CROP_W) for b in boxes]

    def embed(self, crops: list[CardCrop]) -> np.ndarray:
        if self.embed_gate is not None:
            self.embed_gate.wait()
        if self.embed_delay_s:
            time.sleep(self.embed_delay_s)
        self.embedded += len(crops)
        if not crops:
            return np.zeros((0, GRID[0] * GRID[1] * 3), np.float32)
        return np.stack([_embed_one(c.image) for c in crops]).astype(np.float32)

    def match(self, vectors: np.ndarray) -> list[tuple[Match, tuple[Candidate, ...]]]:
        out = []
        for v in vectors:
            best: dict[str, float] = {}
            for cid, s in zip(self._ref_ids, (self._refs @ v).tolist(), strict=True):
                best[cid] = max(best.get(cid, -1.0), s)
            ranked = sorted(best.items(), key=lambda kv: -kv[1])
            top, second = ranked[0], ranked[1] if len(ranked) > 1 else (None, -1.0)
            margin = top[1] - second[1]
            known = top[1] >= self.unknown_score and margin >= self.unknown_margin
            cands = tuple(Candidate(c, s) for c, s in ranked[: self.top_k])
            out.append((Match(top[0], top[1], margin, known), cands))
        return out

    def verdicts(
        self, image: np.ndarray, boxes: list[OrientedBox]
    ) -> tuple[list[CardMatch | None], tuple[float, float, float, float, float]]:
        """`recognise`, aligned with the boxes (this fake drops none)."""
        cards, ms = self.recognise(image, boxes)
        return list(cards), ms

    def recognise(
        self, image: np.ndarray, boxes: list[OrientedBox]
    ) -> tuple[list[CardMatch], tuple[float, float, float, float, float]]:
        """Crops -> embed -> match, as Recognizer.recognise (no 90-degree alternates here)."""
        t0 = time.perf_counter()
        crops = self.crops(image, boxes)
        t1 = time.perf_counter()
        vectors = self.embed(crops)
        t2 = time.perf_counter()
        results = self.match(vectors)
        t3 = time.perf_counter()
        cards = [CardMatch(b, m, top) for b, (m, top) in zip(boxes, results, strict=True)]
        ms = (1000 * (t1 - t0), 1000 * (t2 - t1), 1000 * (t2 - t1), 1000 * (t3 - t2), 0.0)
        return cards, ms

    def identify(self, image: np.ndarray) -> Any:
        t0 = time.monotonic()
        boxes = self.detect(image)
        t1 = time.monotonic()
        crops = self.crops(image, boxes)
        vectors = self.embed(crops)
        t2 = time.monotonic()
        results = self.match(vectors)
        t3 = time.monotonic()
        cards = [CardMatch(b, m, k) for b, (m, k) in zip(boxes, results, strict=True)]
        timings = StageTimings(
            detect=(t1 - t0) * 1e3,
            embed=(t2 - t1) * 1e3,
            search=(t3 - t2) * 1e3,
            total=(t3 - t0) * 1e3,
            detect_forward=(t1 - t0) * 1e3,
            embed_forward=(t2 - t1) * 1e3,
        )
        return SimpleNamespace(bundle_id=self.bundle_id, cards=cards, timings=timings)

    def describe(self) -> dict[str, Any]:
        return {"bundle_id": self.bundle_id, "backends": self.backends}

    def close(self) -> None:
        self.closed = True
