"""Verify: prove a shortlisted candidate with geometry.

The crop's local features are matched to each candidate's reference features (nearest two by
Hamming distance, Lowe's ratio test), a homography from the reference canvas to the crop is fitted
robustly (MAGSAC++), and the number of inliers is the evidence. A card is `verified` only when
its best candidate has enough inliers under a plausible homography (not mirrored, not collapsed,
no absurd scale); the homography also gives the card's true corners.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

import cv2
import numpy as np
import numpy.typing as npt

from edge.recognize.features import Features, FeatureSpec
from edge.types import ImageRGB

logger = logging.getLogger(__name__)

RATIO = 0.8  # Lowe's ratio test on Hamming distances
MIN_MATCHES = 8  # fewer tentative matches cannot give a meaningful homography
REPROJ_PX = 4.0  # MAGSAC++ inlier threshold on the canvas (240 x 336 px)
MAX_ITERS = 1000
PHOTO_SIGMA = 2.0  # thumbnail px (112 x 80): a few px of misregistration cost little
PHOTO_GRID = (8, 6)  # cells over the card (rows, columns) for the colour check
PHOTO_MIN_CELLS = 4  # fewer covered, textured cells: colour says nothing
PHOTO_FLAT = 6.0  # a reference cell with less spread (grey levels) is flat: skipped
# Cells where two random cards of the catalogue agree this well on average are its template.
TEMPLATE_NCC = 0.15
TEMPLATE_MIN_SHARE = 0.25  # ... and at least this share of the cells is compared all the same
TEMPLATE_SAMPLE = 96  # references the template is estimated from, each against ...
TEMPLATE_PARTNERS = 4  # ... this many others
MIN_AREA, MAX_AREA = 0.2, 5.0  # projected reference area / canvas area
Homography = npt.NDArray[np.float64]  # 3 x 3, reference canvas px -> crop canvas px


@dataclass(frozen=True, slots=True)
class Verification:
    """One candidate checked against one crop."""

    card_id: str
    inliers: int  # 0 when no plausible homography was found
    matches: int  # tentative matches after the ratio test
    homography: Homography | None = None
    reason: str = ""  # why inliers is 0, for logs and the API
    photometric: float = 0.0  # colour agreement with the reference under the homography, [-1, 1]
    # ... over the cells where the catalogue's cards differ (photometric) and over the whole card
    # (card_colour: what tells same-art reprints apart, edge.recognize.reprints)
    card_colour: float = 0.0
    view: str = (
        ""  # the taught view (edge.overlay.store) this evidence is against; "" the bundle's scan
    )
    # cells of PHOTO_GRID over the reference card holding inliers: how much of the card the
    # geometry spans (a false match clusters on a few shared template elements)
    coverage: int = 0
    # IoU of the reference's outline, mapped into the frame through the homography, with the
    # detector's box: a right match maps the card onto the card; a chance match on a shared
    # template element or a name's letters maps it askew, shifted or out of scale (0: not measured)
    outline: float = 0.0


class FeatureSource(Protocol):
    """Reference features by card id (the bundle's memory-mapped file, or features in memory)."""

    @property
    def spec(self) -> FeatureSpec: ...
    def get(self, card_id: str, /) -> Features | None: ...


@dataclass(frozen=True, slots=True)
class FeaturesInMemory:
    """A FeatureSource over reference features in a dict (a bundle being built, a test)."""

    spec: FeatureSpec
    feats: Mapping[str, Features]

    def get(self, card_id: str) -> Features | None:
        return self.feats.get(card_id)


def canvas_quad(spec: FeatureSpec) -> npt.NDArray[np.float64]:
    """The feature canvas's outline (TL, TR, BR, BL), in canvas px."""
    w, h = spec.width, spec.height
    return np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float64)


class Verifier:
    """Matches crop features to reference features; thread-safe (no shared mutable state)."""

    def __init__(self, refs: FeatureSource) -> None:
        self.refs = refs
        self.spec: FeatureSpec = refs.spec
        h, w = self.spec.height, self.spec.width
        self._canvas = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float64)

    def verify(self, query: Features, card_id: str) -> Verification:
        """The evidence that the crop described by `query` shows `card_id`."""
        ref = self.refs.get(card_id)
        if ref is None or len(ref) < MIN_MATCHES:
            return Verification(card_id, 0, 0, reason="no reference features")
        if len(query) < MIN_MATCHES:
            return Verification(card_id, 0, 0, reason="too few features in the crop")
        src, dst = self._matches(query, ref)
        if len(src) < MIN_MATCHES:
            return Verification(card_id, 0, len(src), reason="too few matches")
        found, mask = cv2.findHomography(
            src, dst, cv2.USAC_MAGSAC, REPROJ_PX, maxIters=MAX_ITERS, confidence=0.995
        )
        if found is None or mask is None:
            return Verification(card_id, 0, len(src), reason="no homography")
        h = np.asarray(found, np.float64)
        why = implausible(h, self._canvas)
        if why:
            return Verification(card_id, 0, len(src), reason=why)
        inl = mask.reshape(-1).astype(bool)
        return Verification(
            card_id, int(inl.sum()), len(src), homography=h,
            coverage=self._coverage(src[inl]),
        )  # fmt: skip

    def _coverage(self, ref_points: npt.NDArray[np.float32]) -> int:
        """How many cells of PHOTO_GRID over the reference canvas hold one of `ref_points`."""
        rows, cols = PHOTO_GRID
        r = np.clip((ref_points[:, 1] * rows / self.spec.height).astype(np.int64), 0, rows - 1)
        c = np.clip((ref_points[:, 0] * cols / self.spec.width).astype(np.int64), 0, cols - 1)
        return int(np.unique(r * cols + c).size)

    def _matches(
        self, query: Features, ref: Features
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """Reference and crop points of the tentative matches (`tentative_matches`)."""
        ref_idx, q_idx = tentative_matches(query, ref, sift=self.spec.method == "sift")
        return ref.points[ref_idx], query.points[q_idx]

    def corners(self, h: Homography) -> npt.NDArray[np.float64]:
        """The reference canvas's corners (TL, TR, BR, BL of the upright card) in crop px."""
        return project(h, self._canvas)


def tentative_matches(
    query: Features, ref: Features, *, sift: bool = False
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Row indices (reference, crop) of the tentative matches: ratio test, one per ref point.

    The two nearest reference descriptors of every crop descriptor by one cv2.batchDistance
    (numpy arrays, no per-match Python objects); of the crop points that pass Lowe's ratio
    test onto the same reference point, the closest keeps it."""
    none = np.zeros(0, np.int64)
    if len(ref) < 2 or len(query) == 0:
        return none, none
    dist, nearest = cv2.batchDistance(
        query.descriptors, ref.descriptors, cv2.CV_32F if sift else cv2.CV_32S,
        normType=cv2.NORM_L2 if sift else cv2.NORM_HAMMING, K=2,
    )  # fmt: skip
    dist = dist.astype(np.float32)
    keep = np.flatnonzero(dist[:, 0] < RATIO * dist[:, 1])
    if not len(keep):
        return none, none
    order = keep[np.argsort(dist[keep, 0], kind="stable")]  # best first ...
    train = nearest[order, 0]
    _, first = np.unique(train, return_index=True)  # ... so the first per ref point is best
    return train[first].astype(np.int64), order[first].astype(np.int64)


def project(h: Homography, pts: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Apply a homography to N x 2 points."""
    out = cv2.perspectiveTransform(np.asarray(pts, np.float64).reshape(-1, 1, 2), h)
    return np.asarray(out, np.float64).reshape(-1, 2)


def implausible(h: Homography, canvas: npt.NDArray[np.float64]) -> str:
    """Why a homography cannot be a card seen by a camera ('' when it can): a mirrored, collapsed
    or non-convex projection, or an absurd scale."""
    if not np.all(np.isfinite(h)) or abs(h[2, 2]) < 1e-12:
        return "degenerate homography"
    quad = project(h, canvas)
    if not np.all(np.isfinite(quad)):
        return "degenerate homography"
    edges = np.roll(quad, -1, axis=0) - quad
    cross = (
        edges[:, 0] * np.roll(edges, -1, axis=0)[:, 1] - edges[:, 1] * np.roll(edges, -1, 0)[:, 0]
    )
    if np.all(cross < 0):
        return "mirrored homography"
    if not np.all(cross > 0):
        return "non-convex homography"
    area = 0.5 * abs(
        float(
            np.dot(quad[:, 0], np.roll(quad[:, 1], -1))
            - np.dot(quad[:, 1], np.roll(quad[:, 0], -1))
        )
    )
    canvas_area = float((canvas[2, 0] - canvas[0, 0]) * (canvas[2, 1] - canvas[0, 1]))
    ratio = area / canvas_area if canvas_area > 0 else 0.0
    if not MIN_AREA <= ratio <= MAX_AREA:
        return f"implausible scale ({ratio:.2f} of the crop)"
    return ""


def rank(results: Sequence[Verification]) -> list[Verification]:
    """Most inliers first; ties keep the shortlist's order (the embedder's better guess first)."""
    return sorted(results, key=lambda v: -v.inliers)


def photometric(
    view: ImageRGB, valid: npt.NDArray[np.bool_], reference: ImageRGB,
    cells: npt.NDArray[np.bool_] | None = None,
) -> float:  # fmt: skip
    """Colour agreement of a crop mapped onto a reference (same size): the normalised
    cross-correlation per channel in each cell of a grid over the card, the median over the cells
    the crop covers (flat cells skipped). Gains and offsets of the light cancel out within a
    cell, so light gradients, spots and a glare on part of the card do not sink it; other art
    under the same frame and text does. `cells`: only those cells of the grid (`distinct_cells`:
    where the catalogue's cards differ), so that a card of the catalogue's own style cannot agree
    through its frame and text boxes alone; None: the whole card."""
    return photometrics(view, valid, reference, cells)[0]


def photometrics(
    view: ImageRGB, valid: npt.NDArray[np.bool_], reference: ImageRGB,
    cells: npt.NDArray[np.bool_] | None,
) -> tuple[float, float]:  # fmt: skip
    """`photometric` over `cells` and over the whole card, from one comparison."""
    ncc, covered, textured = cell_agreement(view, valid, reference)
    use = covered & textured

    def median(mask: npt.NDArray[np.bool_]) -> float:
        scores = ncc[mask]
        return float(np.median(scores)) if scores.size >= PHOTO_MIN_CELLS else 0.0

    whole = median(use)
    return (whole if cells is None else median(use & cells)), whole


def cell_agreement(
    a_img: ImageRGB, valid: npt.NDArray[np.bool_], b_img: ImageRGB
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """Per cell of PHOTO_GRID: the mean per-channel normalised cross-correlation of a and b (both
    blurred well beyond a homography's error: colour is compared, not print detail), whether
    `valid` covers the cell, and whether b is textured there."""
    a, b = _blurred(a_img), _blurred(b_img)
    m = grid_crop(valid).astype(np.float32)
    n = grid_means(m)[..., 0]  # covered share of each cell
    covered = n >= 0.8
    n = np.maximum(n, 1e-3)[..., None]
    m3 = m[..., None]
    mean_a, mean_b = grid_means(a * m3) / n, grid_means(b * m3) / n
    var_a = grid_means(a * a * m3) / n - mean_a**2
    var_b = grid_means(b * b * m3) / n - mean_b**2
    cov = grid_means(a * b * m3) / n - mean_a * mean_b
    textured = np.sqrt(np.maximum(var_b, 0)).mean(axis=-1) >= PHOTO_FLAT  # flat cells say nothing
    ncc = (cov / np.sqrt(np.maximum(var_a, 1e-6) * np.maximum(var_b, 1e-6))).mean(axis=-1)
    return ncc.astype(np.float32), covered, textured


def grid_crop(x: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """x cut to whole cells of PHOTO_GRID (the remainder rows and columns dropped)."""
    rows, cols = PHOTO_GRID
    h, w = x.shape[:2]
    return x[: rows * (h // rows), : cols * (w // cols)]


def grid_means(x: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
    """Mean per cell of PHOTO_GRID and channel, rows x cols x channels (area resampling to the
    grid is exactly that)."""
    rows, cols = PHOTO_GRID
    out = cv2.resize(grid_crop(x).astype(np.float32), (cols, rows), interpolation=cv2.INTER_AREA)
    return np.asarray(out, np.float32).reshape(rows, cols, -1)


def _blurred(image: ImageRGB) -> npt.NDArray[np.float32]:
    return grid_crop(cv2.GaussianBlur(image, (0, 0), PHOTO_SIGMA)).astype(np.float32)


def distinct_cells(thumbnails: Sequence[ImageRGB]) -> npt.NDArray[np.bool_] | None:
    """The cells of PHOTO_GRID where the catalogue's cards differ: where references of different
    cards, taken in pairs, agree on average below TEMPLATE_NCC (the art, the name), not the frame
    and text boxes the catalogue shares; the least template-like TEMPLATE_MIN_SHARE of the cells
    at least. None (the whole card) for fewer than two references."""
    thumbs = [t for t in thumbnails if t.shape == thumbnails[0].shape] if thumbnails else []
    if len(thumbs) < 2:
        return None
    rows, cols = PHOTO_GRID
    blurred = [_blurred(t) for t in thumbs]
    means = [grid_means(b) for b in blurred]
    varis = [np.maximum(grid_means(b * b) - m**2, 0) for b, m in zip(blurred, means, strict=True)]
    textured = [np.sqrt(v).mean(axis=-1) >= PHOTO_FLAT for v in varis]
    total = np.zeros((rows, cols), np.float64)
    count = np.zeros((rows, cols), np.int64)
    n = len(thumbs)
    step = max(n // (TEMPLATE_PARTNERS + 1), 1)
    for i in range(n):
        for k in range(1, TEMPLATE_PARTNERS + 1):
            j = (i + k * step) % n
            if j == i:
                continue
            cov = grid_means(blurred[i] * blurred[j]) - means[i] * means[j]
            ncc = (cov / np.sqrt(np.maximum(varis[i], 1e-6) * np.maximum(varis[j], 1e-6))).mean(-1)
            both = textured[i] & textured[j]  # flat on either side: that pair says nothing there
            total[both] += ncc[both]
            count[both] += 1
    level = np.where(count > 0, total / np.maximum(count, 1), 1.0)  # never textured: template
    share = max(int(np.ceil(TEMPLATE_MIN_SHARE * level.size)), PHOTO_MIN_CELLS)
    floor = np.sort(level.reshape(-1))[share - 1]
    out: npt.NDArray[np.bool_] = level <= max(TEMPLATE_NCC, floor)
    return out


def frame_onto(
    image: ImageRGB, warp: Homography, h: Homography, size: tuple[int, int], spec: FeatureSpec
) -> tuple[ImageRGB, npt.NDArray[np.bool_]]:
    """The frame mapped onto a reference image of `size` (h, w) through the crop's warp and a
    candidate's homography, and where it landed inside the frame."""
    th_h, th_w = size
    to_thumb = np.diag([th_w / spec.width, th_h / spec.height, 1.0])
    m = to_thumb @ np.linalg.inv(h) @ warp
    view = cast(ImageRGB, cv2.warpPerspective(image, m, (th_w, th_h), flags=cv2.INTER_AREA))
    fh, fw = image.shape[:2]
    back = np.linalg.inv(m)
    if _inside(back, th_h, th_w, fh, fw):
        return view, np.ones((th_h, th_w), bool)
    # Where each thumbnail pixel comes from in the frame: inside it, or off its edge.
    src = cv2.perspectiveTransform(_pixel_grid(th_h, th_w), back).reshape(th_h, th_w, 2)
    valid = (
        (src[..., 0] >= 0) & (src[..., 0] <= fw - 1) & (src[..., 1] >= 0) & (src[..., 1] <= fh - 1)
    )
    return view, valid


def _inside(back: Homography, h: int, w: int, fh: int, fw: int) -> bool:
    """Whether every pixel centre of an h x w image maps through `back` inside an fh x fw frame:
    its four corners do, on the same side of the horizon (the projective denominator, affine in
    x and y, keeps its sign over the rectangle, so the map takes it onto the convex hull of the
    corners' images, which the frame then holds)."""
    corners = np.array([[0, 0, 1], [w - 1, 0, 1], [w - 1, h - 1, 1], [0, h - 1, 1]], np.float64)
    p = corners @ back.T
    if not (np.all(p[:, 2] > 1e-12) or np.all(p[:, 2] < -1e-12)):
        return False
    x, y = p[:, 0] / p[:, 2], p[:, 1] / p[:, 2]
    return bool(np.all((x >= 0) & (x <= fw - 1) & (y >= 0) & (y <= fh - 1)))


@functools.lru_cache(maxsize=4)
def _pixel_grid(h: int, w: int) -> npt.NDArray[np.float64]:
    """Every pixel centre of an h x w image as an (h * w) x 1 x 2 array (read-only)."""
    ys, xs = np.mgrid[0:h, 0:w]
    grid = np.stack([xs, ys], axis=-1).reshape(-1, 1, 2).astype(np.float64)
    grid.flags.writeable = False
    return grid
