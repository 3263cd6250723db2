"""Frozen dataclasses that flow between pipeline stages. Pixels are RGB everywhere inside edge."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

Confidence = Literal["verified", "probable", "unknown", "back"]
ImageRGB = npt.NDArray[np.uint8]  # H x W x 3, uint8, RGB
Corners = npt.NDArray[np.float32]  # 4 x 2, float32, pixels (x, y)


@dataclass(frozen=True, slots=True)
class Frame:
    """One captured frame."""

    image: ImageRGB  # H x W x 3 uint8 RGB
    frame_id: int
    t_capture: float  # time.monotonic() seconds at capture
    source: str  # source URI it came from


@dataclass(frozen=True, slots=True)
class OrientedBox:
    """A detected card: four corners in frame pixels, clockwise from the card's top-left."""

    corners: Corners  # 4 x 2 float32 px in the frame
    conf: float  # detector confidence in [0, 1]
    class_id: int = 0


@dataclass(frozen=True, slots=True)
class CardCrop:
    """A card warped upright to the embedder's input size; `flipped` is its 180-degree twin."""

    image: ImageRGB  # h x w x 3 uint8 RGB, portrait 63:88
    box: OrientedBox


@dataclass(frozen=True, slots=True)
class Match:
    """The index's verdict for one crop."""

    card_id: str
    score: float  # cosine similarity of the best reference, in [-1, 1]
    margin: float  # best score minus the best score of a *different* card
    known: bool  # verified, or probable on the embedding alone; false for unknown
    confidence: Confidence = "unknown"
    inliers: int = 0  # homography inliers of the reported card (0: not verified)
    reason: str = ""  # why the card is probable or unknown, in words
    runner_up: str = ""  # a close second candidate that also verified (same-art reprints)
    printings: int = 0  # other printings of its art in the catalogue (a verified card's)
    # an undecided printing: the small print's correlation gap by which card_id leads runner_up
    # in this view (negative: runner_up leads), too small to decide alone; edge.live.track sums it
    lean: float = 0.0


@dataclass(frozen=True, slots=True)
class Candidate:
    """One entry of a top-k list."""

    card_id: str
    score: float


@dataclass(frozen=True, slots=True)
class CardMatch:
    """A card found in a frame: where it is and what it is."""

    box: OrientedBox
    match: Match
    top_k: tuple[Candidate, ...] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class StageTimings:
    """Per-stage wall time of one identify call, in milliseconds."""

    decode: float = 0.0
    detect: float = 0.0
    rectify: float = 0.0
    embed: float = 0.0
    search: float = 0.0
    total: float = 0.0
    detect_forward: float = 0.0  # part of `detect` spent inside the backend
    embed_forward: float = 0.0  # part of `embed` spent inside the backend
    verify: float = 0.0  # local features + homographies of every card

    def as_dict(self) -> dict[str, float]:
        return {
            "decode": self.decode,
            "detect": self.detect,
            "rectify": self.rectify,
            "embed": self.embed,
            "search": self.search,
            "verify": self.verify,
            "total": self.total,
        }
