"""Rectify: order an oriented box's corners, measure them, and warp the card upright to the
embedder's input.

Cards are 63 x 88 mm, portrait. A detector box says nothing about which end is the top, so the
corners are ordered so the first edge is a short one (portrait); the remaining 180-degree
ambiguity is resolved downstream by embedding both the crop and its rotated twin.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import replace
from typing import cast

import cv2
import numpy as np
import numpy.typing as npt

from edge.recognize.features import FeatureSpec
from edge.types import CardCrop, Corners, ImageRGB, OrientedBox

logger = logging.getLogger(__name__)

CARD_ASPECT = 63.0 / 88.0  # width / height of a portrait card

# A card tilted away from the camera along its long axis by more than ~44 degrees projects with
# its long edges shorter than its short ones, so corner ordering picks the wrong portrait side.
# Boxes whose short/long edge ratio exceeds this are embedded both ways; the better match wins.
AMBIGUOUS_ASPECT = 0.85


def order_corners(corners: Corners) -> Corners:
    """Four corners -> clockwise (in image coordinates, y down) from the card's top-left.

    Clockwise order is fixed by angle around the centroid; the starting corner is chosen so the
    first edge (top-left -> top-right) is a short side, making the card portrait, and among the
    two such starts, the one whose top edge lies higher in the image.
    """
    ordered: Corners = order_corners_batch(np.asarray(corners, dtype=np.float32).reshape(1, 4, 2))[
        0
    ]
    return ordered


def order_corners_batch(corners: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """`order_corners` for K boxes at once: (K, 4, 2) -> (K, 4, 2), no per-box Python loop."""
    pts = np.asarray(corners, dtype=np.float32).reshape(-1, 4, 2)
    rel = pts - pts.mean(axis=1, keepdims=True)
    angles = np.arctan2(rel[..., 1], rel[..., 0])
    # increasing angle with y down == clockwise on screen
    pts = np.take_along_axis(pts, np.argsort(angles, axis=1)[..., None], axis=1)
    nxt = np.roll(pts, -1, axis=1)
    edge = np.linalg.norm(pts - nxt, axis=2)  # edge i: pts[i] -> pts[i+1]
    short_first = np.where(edge[:, 0] + edge[:, 2] <= edge[:, 1] + edge[:, 3], 0, 1)
    # Of the two portrait starts, prefer the one whose top edge is higher (smaller mean y).
    top_y = (pts[..., 1] + nxt[..., 1]) / 2  # mean y of edge i
    rows = np.arange(len(pts))
    second_higher = top_y[rows, short_first + 2] < top_y[rows, short_first]
    start = np.where(second_higher, short_first + 2, short_first)
    idx = (start[:, None] + np.arange(4)[None, :]) % 4
    ordered: npt.NDArray[np.float32] = np.take_along_axis(pts, idx[..., None], axis=1)
    return ordered


def warp_card(image: ImageRGB, corners: Corners, out_h: int, out_w: int) -> ImageRGB:
    """Perspective-warp the quadrilateral `corners` (ordered TL, TR, BR, BL) to out_h x out_w."""
    m = cv2.getPerspectiveTransform(
        np.asarray(corners, dtype=np.float32), _crop_corners(out_h, out_w)
    )
    warped = cv2.warpPerspective(
        image, m, (out_w, out_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    return cast(ImageRGB, warped)  # cv2 returns a new contiguous array of the image's type


@functools.lru_cache(maxsize=16)
def _crop_corners(out_h: int, out_w: int) -> npt.NDArray[np.float32]:
    """The crop's own corners, TL, TR, BR, BL (read-only: shared by every warp)."""
    dst = np.array(
        [[0, 0], [out_w - 1, 0], [out_w - 1, out_h - 1], [0, out_h - 1]], dtype=np.float32
    )
    dst.flags.writeable = False
    return dst


def side_lengths(corners: Corners) -> tuple[float, float]:
    """Mean lengths of a quadrilateral's two pairs of opposite sides, px: (TL-TR with BR-BL,
    TR-BR with BL-TL). Plain floats: for 4 points they are faster than numpy."""
    (x0, y0), (x1, y1), (x2, y2), (x3, y3) = np.asarray(corners, np.float64).tolist()
    first = math.hypot(x1 - x0, y1 - y0) + math.hypot(x3 - x2, y3 - y2)
    second = math.hypot(x2 - x1, y2 - y1) + math.hypot(x0 - x3, y0 - y3)
    return first / 2, second / 2


def rectify(image: ImageRGB, box: OrientedBox, out_h: int, out_w: int) -> CardCrop:
    """One box -> an upright portrait crop of out_h x out_w."""
    return CardCrop(image=warp_card(image, order_corners(box.corners), out_h, out_w), box=box)


def rotate180(crop: ImageRGB) -> ImageRGB:
    """The crop's 180-degree twin (an upside-down card read the other way up)."""
    return np.ascontiguousarray(crop[::-1, ::-1])


def centre(corners: Corners) -> npt.NDArray[np.float32]:
    mean: npt.NDArray[np.float32] = np.asarray(corners, dtype=np.float32).mean(axis=0)
    return mean


def diagonal(corners: Corners) -> float:
    pts = np.asarray(corners, dtype=np.float32)
    return float(np.linalg.norm(pts.max(axis=0) - pts.min(axis=0)))


def polygon_iou(a: Corners, b: Corners) -> float:
    """IoU of two convex quadrilaterals (corner order irrelevant as long as it is convex)."""
    pa = cv2.convexHull(np.asarray(a, dtype=np.float32))
    pb = cv2.convexHull(np.asarray(b, dtype=np.float32))
    inter, _ = cv2.intersectConvexConvex(pa, pb)
    union = cv2.contourArea(pa) + cv2.contourArea(pb) - inter
    return float(inter / union) if union > 0 else 0.0


def ambiguous_aspect(corners: npt.NDArray[np.float32], ratio: float = AMBIGUOUS_ASPECT) -> bool:
    """True when a box's short/long edge ratio is above `ratio`: too close to 1 to trust its
    portrait side."""
    first, second = side_lengths(corners)
    return min(first, second) > ratio * max(first, second)


def turned_90(box: OrientedBox) -> OrientedBox:
    """The same box with its corner order started one corner later: the card turned 90 degrees."""
    return replace(box, corners=np.ascontiguousarray(np.roll(box.corners, -1, axis=0)))


def context_quad(corners: Corners, factor: float, spec: FeatureSpec) -> npt.NDArray[np.float32]:
    """A rectangle of the canvas's aspect about the box's centre and along its sides, `factor`
    times the box's long side high: warping it to the canvas scales the frame uniformly, so a box
    that covers only part of its card (or squashes it) still leaves the whole card undistorted."""
    first, second = side_lengths(corners)
    c = np.asarray(corners, np.float64)
    if first > second:  # TL-TR is the long side: start one corner later so it is the short one
        c = np.roll(c, -1, axis=0)
    centre = c.mean(axis=0)
    across = (c[1] - c[0]) + (c[2] - c[3])
    down = (c[3] - c[0]) + (c[2] - c[1])
    across /= max(float(np.linalg.norm(across)), 1e-9)
    down /= max(float(np.linalg.norm(down)), 1e-9)
    high = factor * max(first, second)
    wide = high * spec.width / spec.height
    a, d = across * wide / 2, down * high / 2
    quad = np.stack([centre - a - d, centre + a - d, centre + a + d, centre - a + d])
    return quad.astype(np.float32)
