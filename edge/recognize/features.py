"""Local features for verification: the extractor, and choosing a reference's features.

A card is verified by matching the local features of its crop to those of a candidate's reference
scan. Both sides go through `Extractor` on the same canvas (the card upright at `height` x
`width`), so the device and the bundle builder compute features the same way.
The bundle's file of them is edge.recognize.feature_file.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import cv2
import numpy as np
import numpy.typing as npt

from edge.types import ImageRGB

logger = logging.getLogger(__name__)

SHARED_PX = 12.0  # a template feature recurs within this many canvas px on other cards
SHARED_HAMMING = 48  # ... with a descriptor at most this far (of 256 bits)
SHARED_MAX = 2  # a feature found on this many sampled cards is template
SHARED_SAMPLE = 24  # other cards each card is compared with
# References are extracted twice: as scanned, and softened as the camera sees a card at
# SOFT_SCALE of the canvas (a crop upsampled to the canvas has no fine corners; a sharp scan's
# features barely match it). Both go into the pool a reference's features are chosen from.
SOFT_SCALE = 0.5
SOFT_SAME_PX = 3.0  # a softened feature this close to a sharp one with a near-identical descriptor
# Features a bundle built now extracts from each crop (Thresholds.verify_query_features): twice
# a reference's, so that a crop that lost detail (blur, tilt, foil, washed-out light) still holds
# enough of its scan's; on the demo's held-out scenes 500 -> 1000 named 3-5 % more cards.
QUERY_FEATURES = 1000
Method = Literal["orb", "sift"]  # AKAZE left opencv-python's main modules in OpenCV 5

Points = npt.NDArray[np.float32]  # N x 2, canvas px (x, y)
Descriptors = npt.NDArray[Any]  # N x D: uint8 (ORB) or float32 (SIFT)


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    """How features are extracted: the method, how many, and the canvas the card is warped to."""

    method: Method = "orb"
    n_features: int = 200  # per reference; edge.recognize.repeatable chooses them
    height: int = 336  # portrait 63:88, so width / height = 0.716
    width: int = 240


@dataclass(frozen=True, slots=True)
class Features:
    """One image's keypoints and descriptors."""

    points: Points
    descriptors: Descriptors

    def __len__(self) -> int:
        return len(self.points)


def _make(spec: FeatureSpec) -> Any:
    if spec.method == "orb":
        # Small canvases lose a third of their area to ORB's default 31 px border: use 15.
        return cv2.ORB.create(
            nfeatures=spec.n_features, edgeThreshold=15, patchSize=15, fastThreshold=10
        )
    return cv2.SIFT.create(nfeatures=spec.n_features)


class Extractor:
    """Thread-safe extraction: one OpenCV detector object per thread (they keep state)."""

    def __init__(self, spec: FeatureSpec) -> None:
        self.spec = spec
        self._local = threading.local()

    def _detector(self) -> Any:
        det = getattr(self._local, "det", None)
        if det is None:
            det = self._local.det = _make(self.spec)
        return det

    def gray(self, image: ImageRGB) -> npt.NDArray[np.uint8]:
        """An RGB card image (any size) as the canvas's grey image."""
        h, w = self.spec.height, self.spec.width
        g = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
        if g.shape[:2] != (h, w):
            shrink = g.shape[0] > h
            g = cv2.resize(g, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        return np.ascontiguousarray(g, dtype=np.uint8)

    def extract(self, gray: npt.NDArray[np.uint8]) -> Features:
        """Keypoints and descriptors of a canvas-sized grey image (none for a flat image)."""
        kps, desc = self._detector().detectAndCompute(gray, None)
        if desc is None or not kps:
            return empty_features(self.spec)
        # Strongest first (ORB returns them level by level), at most n_features.
        keep = np.argsort([-k.response for k in kps], kind="stable")[: self.spec.n_features]
        kps, desc = [kps[i] for i in keep], desc[keep]
        pts = np.array([k.pt for k in kps], dtype=np.float32).reshape(-1, 2)
        return Features(points=pts, descriptors=np.ascontiguousarray(desc))


def softened(gray: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """A canvas image as the device's warp makes it of a card seen SOFT_SCALE the canvas's size:
    area-downscaled, then bilinearly back up."""
    h, w = gray.shape[:2]
    small = cv2.resize(
        gray, (round(w * SOFT_SCALE), round(h * SOFT_SCALE)), interpolation=cv2.INTER_AREA
    )
    return np.ascontiguousarray(cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR))


def merged(sharp: Features, soft: Features) -> Features:
    """sharp's features, then soft's that do not repeat one of them (a near-identical descriptor
    within SOFT_SAME_PX)."""
    new = ~repeats(soft, sharp, SOFT_SAME_PX)
    return Features(
        np.concatenate([sharp.points, soft.points[new]]),
        np.concatenate([sharp.descriptors, soft.descriptors[new]]),
    )


def empty_features(spec: FeatureSpec) -> Features:
    dtype = np.float32 if spec.method == "sift" else np.uint8
    return Features(np.zeros((0, 2), np.float32), np.zeros((0, descriptor_bytes(spec)), dtype))


def descriptor_bytes(spec: FeatureSpec) -> int:
    """Descriptor width: ORB 32 bytes, SIFT 128 floats."""
    return {"orb": 32, "sift": 128}[spec.method]


def distinctive(
    raw: Sequence[Features], keep: int, *, sample: int = SHARED_SAMPLE, seed: int = 0
) -> list[Features]:
    """Each card's features minus those its catalogue shares (`distinctive_rows`), at most
    `keep`, strongest first."""
    return [
        Features(f.points[rows[:keep]], f.descriptors[rows[:keep]])
        for f, rows in zip(raw, distinctive_rows(raw, sample=sample, seed=seed), strict=True)
    ]


def distinctive_rows(
    raw: Sequence[Features], *, sample: int = SHARED_SAMPLE, seed: int = 0
) -> list[npt.NDArray[np.int64]]:
    """For each card, the rows of its features that its catalogue does not share (frame, text
    boxes, symbols), in their order.

    Cards of one catalogue share a template, and an unknown card of the same style matches the
    template's features under one homography as well as the right card does. A reference keypoint
    is template when a near-identical descriptor sits at nearly the same canvas position in two or
    more of `sample` other cards; what is left is the card's own art and text.
    """
    rng = np.random.default_rng(seed)
    out: list[npt.NDArray[np.int64]] = []
    for i, f in enumerate(raw):
        if i and i % 2000 == 0:
            logger.info("distinctive features: %d of %d cards", i, len(raw))
        if len(f) == 0:
            out.append(np.zeros(0, np.int64))
            continue
        others = [j for j in rng.permutation(len(raw))[: sample + 1].tolist() if j != i][:sample]
        out.append(np.flatnonzero(~shared(f, [raw[j] for j in others])).astype(np.int64))
    return out


def shared(f: Features, others: Sequence[Features]) -> npt.NDArray[np.bool_]:
    """Which of f's features are template: a near-identical descriptor at nearly the same
    canvas position on SHARED_MAX or more of `others` (also used for views taught on a device,
    edge.overlay.store)."""
    hits = np.zeros(len(f), np.int32)
    for g in others:
        hits += repeats(f, g, SHARED_PX)
    mask: npt.NDArray[np.bool_] = hits >= SHARED_MAX
    return mask


def repeats(f: Features, g: Features, px: float) -> npt.NDArray[np.bool_]:
    """Which of f's features g repeats: a near-identical descriptor (Hamming < SHARED_HAMMING)
    within `px` canvas px."""
    if len(g) == 0 or len(f) == 0:
        return np.zeros(len(f), bool)
    dist, nearest = cv2.batchDistance(
        f.descriptors, g.descriptors, cv2.CV_32S, normType=cv2.NORM_HAMMING, K=1
    )
    d, t = dist.reshape(-1), nearest.reshape(-1)
    near = np.linalg.norm(f.points - g.points[t], axis=1) < px
    out: npt.NDArray[np.bool_] = (d < SHARED_HAMMING) & near
    return out


# --- the reference file ------------------------------------------------------------------------
