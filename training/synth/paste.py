"""Paste one flat card into a frame along the homography that defines its label corners.

Only the card's bounding box is touched, so a frame with six cards costs a few milliseconds.
The card's alpha comes from warping a rounded-corner mask with the same matrix, so the label's
sharp corners sit exactly where the card's straight edges meet.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import cv2
import numpy as np
import numpy.typing as npt

from edge.types import Corners, ImageRGB
from training.synth.arrays import f32, u8

if TYPE_CHECKING:
    from training.synth.scene import SceneConfig

logger = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]


@dataclass(slots=True)
class CardPose:
    """Where a card lands in the frame (filled in by planning, glare added after lighting)."""

    card_id: str
    corners: Corners  # 4 x 2 float32, continuous px, clockwise from the card's top-left
    tilt_deg: float
    size_frac: float
    rotation_deg: float
    visible_fraction: float = 1.0
    glare: float = 0.0


@lru_cache(maxsize=64)
def rounded_mask(h: int, w: int, radius: int) -> npt.NDArray[np.uint8]:
    """255 inside a card of h x w with rounded corners of `radius` px, 0 outside."""
    m = np.full((h, w), 255, np.uint8)
    if radius <= 0:
        return m
    r = radius
    m[:r, :r] = m[:r, -r:] = m[-r:, :r] = m[-r:, -r:] = 0
    for cx, cy in ((r, r), (w - 1 - r, r), (r, h - 1 - r), (w - 1 - r, h - 1 - r)):
        cv2.circle(m, (cx, cy), r, 255, -1, cv2.LINE_AA)
    m[r:-r, :] = 255
    m[:, r:-r] = 255
    return m


def pixel_homography(src_hw: tuple[int, int], corners: Corners) -> F64:
    """Matrix mapping source pixel centres to frame pixel centres (OpenCV's warp convention),
    built from the continuous-coordinate map of the card's outer corners to `corners`."""
    h, w = src_hw
    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
    hom = cv2.getPerspectiveTransform(src, np.asarray(corners, np.float32))
    to_edge = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])
    to_centre = np.array([[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1]])
    return np.asarray(to_centre @ hom @ to_edge, np.float64)


def _source(card: ImageRGB, corners: Corners) -> ImageRGB:
    """Pre-shrink the card when it lands much smaller than its image (avoids aliasing)."""
    h, w = card.shape[:2]
    target_h = max(np.linalg.norm(corners[3] - corners[0]), np.linalg.norm(corners[2] - corners[1]))
    if target_h < 0.6 * h:
        nh = max(8, int(target_h * 1.4))
        nw = max(6, round(nh * w / h))
        return u8(cv2.resize(card, (nw, nh), interpolation=cv2.INTER_AREA))
    return card


def _roi(
    corners: npt.NDArray[np.float32], margin: float, shape: tuple[int, ...]
) -> tuple[int, int, int, int]:
    x0 = max(0, int(np.floor(corners[:, 0].min() - margin)))
    y0 = max(0, int(np.floor(corners[:, 1].min() - margin)))
    x1 = min(shape[1], int(np.ceil(corners[:, 0].max() + margin)) + 1)
    y1 = min(shape[0], int(np.ceil(corners[:, 1].max() + margin)) + 1)
    return x0, y0, x1, y1


def _warp(
    src: npt.NDArray[np.uint8], m: F64, x0: int, y0: int, w: int, h: int
) -> npt.NDArray[np.uint8]:
    shift = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]], np.float64)
    return u8(
        cv2.warpPerspective(
            src, shift @ m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
        )
    )


def _scaled(corners: Corners, factor: float) -> Corners:
    c = corners.mean(axis=0)
    return f32((corners - c) * factor + c)


def paste_card(
    frame: ImageRGB,
    card: ImageRGB,
    pose: CardPose,
    rng: np.random.Generator,
    cfg: SceneConfig,
    light_dir: float,
) -> None:
    """Draw shadow, sleeve edge, the card and a sleeve reflection into `frame` in place."""
    src = _source(card, pose.corners)
    sh, sw = src.shape[:2]
    m = pixel_homography((sh, sw), pose.corners)
    extent = float(np.linalg.norm(pose.corners[2] - pose.corners[0]))
    sleeve = 0.0
    if cfg.effects:
        roll = rng.random()
        sleeve = (
            1.1
            if roll < cfg.toploader_prob
            else 1.035
            if roll < cfg.toploader_prob + cfg.sleeve_prob
            else 0.0
        )
    shadow_off = extent * rng.uniform(0.006, 0.02) * (3 if sleeve > 1.05 else 1)
    margin = shadow_off + extent * 0.06 + 4
    x0, y0, x1, y1 = _roi(pose.corners, margin, frame.shape)
    if x1 <= x0 or y1 <= y0:
        return
    roi = np.ascontiguousarray(frame[y0:y1, x0:x1])
    radius = round(cfg.corner_radius_frac * sw)
    if cfg.effects and rng.random() < cfg.shadow_prob:
        roi = _shadow(
            roi, f32(pose.corners - np.array([x0, y0], np.float32)), shadow_off, light_dir, rng
        )
    if sleeve:
        outer = pixel_homography((sh, sw), _scaled(pose.corners, sleeve))
        a = _warp(rounded_mask(sh, sw, radius * 2), outer, x0, y0, x1 - x0, y1 - y0)
        wa = a.astype(np.float32) * np.float32(rng.uniform(0.12, 0.3) / 255)
        roi = u8(cv2.blendLinear(np.full_like(roi, 235), roi, wa, 1 - wa))
    warped = _warp(src, m, x0, y0, x1 - x0, y1 - y0)
    alpha = _warp(rounded_mask(sh, sw, radius), m, x0, y0, x1 - x0, y1 - y0)
    wa = alpha.astype(np.float32) * np.float32(1 / 255)
    roi = u8(cv2.blendLinear(warped, roi, wa, 1 - wa))
    if sleeve:
        roi = _reflection(roi, m, (sh, sw), x0, y0, rng)
    frame[y0:y1, x0:x1] = roi


def paste_patch(
    frame: ImageRGB,
    patch: ImageRGB,
    alpha: npt.NDArray[np.uint8],
    corners: Corners,
    rng: np.random.Generator,
) -> None:
    """Lay a flat object (pixels + alpha) at `corners` in place, with a soft shadow; parts off
    the frame are clipped."""
    small = _source(patch, corners)  # pre-shrunk when it lands much smaller (no aliasing)
    if small.shape != patch.shape:
        size = (small.shape[1], small.shape[0])
        alpha = u8(cv2.resize(alpha, size, interpolation=cv2.INTER_AREA))
    patch = small
    sh, sw = patch.shape[:2]
    m = pixel_homography((sh, sw), corners)
    extent = float(np.linalg.norm(corners[2] - corners[0]))
    off = extent * rng.uniform(0.005, 0.02)
    x0, y0, x1, y1 = _roi(corners, off + 4, frame.shape)
    if x1 <= x0 or y1 <= y0:
        return
    roi = np.ascontiguousarray(frame[y0:y1, x0:x1])
    roi = _shadow(roi, f32(corners - np.array([x0, y0], np.float32)), off, rng.uniform(0, 6.3), rng)
    warped = _warp(patch, m, x0, y0, x1 - x0, y1 - y0)
    wa = _warp(alpha, m, x0, y0, x1 - x0, y1 - y0).astype(np.float32) * np.float32(1 / 255)
    frame[y0:y1, x0:x1] = u8(cv2.blendLinear(warped, roi, wa, 1 - wa))


def _shadow(
    roi: ImageRGB,
    corners: npt.NDArray[np.float32],
    off: float,
    light_dir: float,
    rng: np.random.Generator,
) -> ImageRGB:
    """Darken a blurred, offset silhouette of the card (cast before the card is drawn)."""
    h, w = roi.shape[:2]
    shifted = corners + off * np.array([np.cos(light_dir), np.sin(light_dir)], np.float32)
    q = 4  # a soft shadow needs no full resolution
    small = np.zeros((h // q + 1, w // q + 1), np.uint8)
    cv2.fillPoly(small, [np.round(shifted / q).astype(np.int32)], 255, cv2.LINE_AA)
    small = cv2.GaussianBlur(small, (0, 0), max(0.6, off * 0.8 / q))
    mask = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    keep = 255 - (mask.astype(np.float32) * rng.uniform(0.25, 0.5)).astype(np.uint8)
    return u8(cv2.multiply(roi, cv2.merge([keep, keep, keep]), scale=1 / 255))


def _reflection(
    roi: ImageRGB, m: F64, src_hw: tuple[int, int], x0: int, y0: int, rng: np.random.Generator
) -> ImageRGB:
    """A soft diagonal light band across the card: the look of a plastic sleeve or toploader."""
    sh, sw = src_hw
    yy, xx = np.mgrid[0:sh, 0:sw].astype(np.float32)
    ang = rng.uniform(0, np.pi)
    d = (xx - sw / 2) * np.cos(ang) + (yy - sh / 2) * np.sin(ang) - rng.uniform(-0.3, 0.3) * sh
    band = np.exp(-(d**2) / (2 * (sh * rng.uniform(0.04, 0.12)) ** 2)) * rng.uniform(40, 110)
    band8 = np.clip(band, 0, 255).astype(np.uint8)
    b = _warp(band8, m, x0, y0, roi.shape[1], roi.shape[0])
    return u8(cv2.add(roi, cv2.merge([b, b, b])))
