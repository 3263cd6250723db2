"""Rectify: order an oriented box's corners and warp the card upright to the embedder's input.

Cards are 63 x 88 mm, portrait. A detector box says nothing about which end is the top, so the
corners are ordered so the first edge is a short one (portrait); the remaining 180-degree
ambiguity is resolved downstream by embedding both the crop and its rotated twin.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np

from edge.types import CardCrop, Corners, ImageRGB, OrientedBox

logger = logging.getLogger(__name__)

CARD_ASPECT = 63.0 / 88.0  # width / height of a portrait card


def order_corners(corners: Corners) -> Corners:
    """Four corners -> clockwise (in image coordinates, y down) from the card's top-left.

    Clockwise order is fixed by angle around the centroid; the starting corner is chosen so the
    first edge (top-left -> top-right) is a short side, making the card portrait, and among the
    two such starts, the one whose top edge lies higher in the image.
    """
    pts = np.asarray(corners, dtype=np.float32).reshape(4, 2)
    centre = pts.mean(axis=0)
    angles = np.arctan2(pts[:, 1] - centre[1], pts[:, 0] - centre[0])
    pts = pts[np.argsort(angles)]  # increasing angle with y down == clockwise on screen
    edge = np.linalg.norm(pts - np.roll(pts, -1, axis=0), axis=1)  # edge i: pts[i] -> pts[i+1]
    short_first = 0 if edge[0] + edge[2] <= edge[1] + edge[3] else 1
    candidates = (short_first, short_first + 2)
    # Of the two portrait starts, prefer the one whose top edge is higher (smaller mean y).
    top_y = [pts[[c % 4, (c + 1) % 4], 1].mean() for c in candidates]
    start = candidates[int(np.argmin(top_y))] % 4
    return np.roll(pts, -start, axis=0).astype(np.float32)


def warp_card(image: ImageRGB, corners: Corners, out_h: int, out_w: int) -> ImageRGB:
    """Perspective-warp the quadrilateral `corners` (ordered TL, TR, BR, BL) to out_h x out_w."""
    dst = np.array(
        [[0, 0], [out_w - 1, 0], [out_w - 1, out_h - 1], [0, out_h - 1]], dtype=np.float32
    )
    m = cv2.getPerspectiveTransform(np.asarray(corners, dtype=np.float32), dst)
    warped = cv2.warpPerspective(
        image, m, (out_w, out_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    return np.ascontiguousarray(warped)


def rectify(image: ImageRGB, box: OrientedBox, out_h: int, out_w: int) -> CardCrop:
    """One box -> an upright portrait crop of out_h x out_w."""
    return CardCrop(image=warp_card(image, order_corners(box.corners), out_h, out_w), box=box)


def rotate180(crop: ImageRGB) -> ImageRGB:
    """The crop's 180-degree twin (an upside-down card read the other way up)."""
    return np.ascontiguousarray(crop[::-1, ::-1])
