"""Procedural card art: a creature figure on a composed background, fixed by the art id.

The figure depends only on the "species" part of the art id (before any "v"), the background,
pose and framing on the whole id, so near-duplicates ("a00012v37") show the same creature in
another composition while reprints (identical art id) get identical pixels.
"""

from __future__ import annotations

import logging
import re
import zlib
from pathlib import Path

import cv2
import numpy as np

from edge.types import ImageRGB

logger = logging.getLogger(__name__)

Color = tuple[int, int, int]


def stable_seed(*parts: object) -> int:
    """A seed that is the same on every machine and Python run (unlike hash())."""
    return zlib.crc32("|".join(str(p) for p in parts).encode("utf-8"))


def _hsv(h: float, s: float, v: float) -> Color:
    px = np.uint8([[[int(h * 179) % 180, int(s * 255), int(v * 255)]]])
    r, g, b = cv2.cvtColor(px, cv2.COLOR_HSV2RGB)[0, 0]
    return int(r), int(g), int(b)


def _vertical_gradient(h: int, w: int, top: Color, bottom: Color) -> ImageRGB:
    t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    col = (1 - t) * np.float32(top) + t * np.float32(bottom)
    return np.ascontiguousarray(np.broadcast_to(col, (h, w, 3)).astype(np.uint8))


def _background(h: int, w: int, rng: np.random.Generator) -> ImageRGB:
    """Sky-and-hills, radial burst, underwater or cave backdrop."""
    hue = rng.random()
    kind = int(rng.integers(4))
    if kind == 0:  # sky with layered hills
        img = _vertical_gradient(h, w, _hsv(hue, 0.5, 0.95), _hsv(hue + 0.05, 0.2, 1.0))
        for layer in range(3):
            base = h * (0.55 + 0.15 * layer)
            xs = np.arange(0, w + 8, 8)
            ys = base + h * 0.08 * np.sin(xs / w * rng.uniform(3, 9) + rng.uniform(0, 6))
            poly = np.concatenate([np.stack([xs, ys], 1), [[w, h], [0, h]]]).astype(np.int32)
            col = _hsv(rng.uniform(0.2, 0.45), 0.6, 0.75 - 0.15 * layer)
            cv2.fillPoly(img, [poly], col, cv2.LINE_AA)
    elif kind == 1:  # radial burst
        img = np.full((h, w, 3), _hsv(hue, 0.7, 0.9), np.uint8)
        cx, cy = w * rng.uniform(0.3, 0.7), h * rng.uniform(0.3, 0.7)
        n = int(rng.integers(8, 20))
        for k in range(0, n, 2):
            a0, a1 = 2 * np.pi * k / n, 2 * np.pi * (k + 1) / n
            pts = np.array(
                [
                    [cx, cy],
                    [cx + 3 * w * np.cos(a0), cy + 3 * w * np.sin(a0)],
                    [cx + 3 * w * np.cos(a1), cy + 3 * w * np.sin(a1)],
                ],
                np.int32,
            )
            cv2.fillPoly(img, [pts], _hsv(hue + 0.08, 0.5, 1.0), cv2.LINE_AA)
    elif kind == 2:  # underwater: gradient with bubbles
        img = _vertical_gradient(h, w, _hsv(0.55, 0.5, 0.9), _hsv(0.62, 0.9, 0.45))
        for _ in range(int(rng.integers(5, 15))):
            c = (int(rng.uniform(0, w)), int(rng.uniform(0, h)))
            cv2.circle(img, c, int(rng.uniform(2, w * 0.05)), (220, 240, 255), 1, cv2.LINE_AA)
    else:  # cave: dark gradient with rocks
        img = _vertical_gradient(h, w, _hsv(hue, 0.3, 0.35), _hsv(hue, 0.4, 0.15))
        for _ in range(int(rng.integers(4, 10))):
            c = (int(rng.uniform(0, w)), int(rng.uniform(h * 0.5, h)))
            ax = (int(rng.uniform(w * 0.05, w * 0.2)), int(rng.uniform(h * 0.04, h * 0.12)))
            cv2.ellipse(
                img, c, ax, 0, 0, 360, _hsv(hue, 0.2, rng.uniform(0.3, 0.5)), -1, cv2.LINE_AA
            )
    return img


def _figure(img: ImageRGB, species: np.random.Generator, pose: np.random.Generator) -> None:
    """Draw a creature: body, head, ears or horns, eyes, limbs, tail; outlined and shaded."""
    h, w = img.shape[:2]
    body_col = _hsv(species.random(), species.uniform(0.5, 0.9), species.uniform(0.6, 0.95))
    accent = _hsv(species.random(), 0.7, 0.9)
    outline = (30, 25, 25)
    scale = pose.uniform(0.75, 1.05) * min(h, w * 0.8)
    cx = w * pose.uniform(0.35, 0.65)
    cy = h * pose.uniform(0.5, 0.62)
    body = (int(scale * species.uniform(0.22, 0.32)), int(scale * species.uniform(0.18, 0.28)))
    head_r = int(scale * species.uniform(0.14, 0.2))
    lean = pose.uniform(-0.3, 0.3)
    head = (int(cx + lean * body[0]), int(cy - body[1] - head_r * 0.6))
    # tail first so the body overlaps it
    tail_dir = 1 if pose.random() < 0.5 else -1
    tail = np.array(
        [
            [cx + tail_dir * body[0] * 0.8, cy],
            [cx + tail_dir * body[0] * 1.4, cy - body[1] * species.uniform(0.2, 1.2)],
            [cx + tail_dir * body[0] * 1.7, cy - body[1] * species.uniform(0.8, 1.8)],
        ],
        np.int32,
    )
    cv2.polylines(img, [tail], False, outline, max(3, body[1] // 3), cv2.LINE_AA)
    cv2.polylines(img, [tail], False, accent, max(2, body[1] // 4), cv2.LINE_AA)
    for side in (-1, 1):  # legs
        foot = (int(cx + side * body[0] * 0.55), int(cy + body[1] * 0.95))
        axes = (max(2, body[0] // 4), max(2, body[1] // 5))
        cv2.ellipse(img, foot, axes, 0, 0, 360, outline, -1, cv2.LINE_AA)
        cv2.ellipse(img, foot, (axes[0] - 1, axes[1] - 1), 0, 0, 360, body_col, -1, cv2.LINE_AA)
    cv2.ellipse(img, (int(cx), int(cy)), body, 0, 0, 360, outline, -1, cv2.LINE_AA)
    cv2.ellipse(
        img, (int(cx), int(cy)), (body[0] - 2, body[1] - 2), 0, 0, 360, body_col, -1, cv2.LINE_AA
    )
    belly = (int(body[0] * 0.55), int(body[1] * 0.6))
    cv2.ellipse(img, (int(cx), int(cy + body[1] * 0.2)), belly, 0, 0, 360, accent, -1, cv2.LINE_AA)
    ear_kind = int(species.integers(3))
    for side in (-1, 1):  # ears / horns / none
        if ear_kind == 2:
            break
        tip_h = head_r * (1.3 if ear_kind == 0 else 0.9)
        pts = np.array(
            [
                [head[0] + side * head_r * 0.2, head[1] - head_r * 0.6],
                [head[0] + side * head_r * 0.9, head[1] - head_r * 0.3],
                [head[0] + side * head_r * 0.8, head[1] - tip_h - head_r * 0.5],
            ],
            np.int32,
        )
        cv2.fillPoly(img, [pts], accent if ear_kind else body_col, cv2.LINE_AA)
        cv2.polylines(img, [pts], True, outline, 2, cv2.LINE_AA)
    cv2.circle(img, head, head_r, outline, -1, cv2.LINE_AA)
    cv2.circle(img, head, head_r - 2, body_col, -1, cv2.LINE_AA)
    eye_dx = int(head_r * 0.4)
    gaze = int(pose.uniform(-1, 1) * head_r * 0.08)
    for side in (-1, 1):
        e = (head[0] + side * eye_dx, head[1] - head_r // 8)
        cv2.circle(img, e, max(2, head_r // 4), (250, 250, 250), -1, cv2.LINE_AA)
        cv2.circle(img, (e[0] + gaze, e[1]), max(1, head_r // 8), (20, 20, 20), -1, cv2.LINE_AA)
    cheek = _hsv(0.98, 0.6, 0.95)
    if species.random() < 0.5:
        for side in (-1, 1):
            c = (head[0] + side * int(head_r * 0.6), head[1] + head_r // 3)
            cv2.circle(img, c, max(1, head_r // 6), cheek, -1, cv2.LINE_AA)
    hl = (int(cx - body[0] * 0.4), int(cy - body[1] * 0.4))
    cv2.ellipse(
        img,
        hl,
        (max(1, body[0] // 5), max(1, body[1] // 8)),
        -30,
        0,
        360,
        (255, 255, 255),
        -1,
        cv2.LINE_AA,
    )


def render_art(art_id: str, h: int, w: int, art_dir: Path | None = None) -> ImageRGB:
    """Art for `art_id` at h x w. With `art_dir`, an image from it is used (picked by the id)."""
    if art_dir is not None:
        files = sorted(p for p in Path(art_dir).iterdir() if p.suffix.lower() in {".jpg", ".png"})
        if files:
            bgr = cv2.imread(str(files[stable_seed(art_id) % len(files)]), cv2.IMREAD_COLOR)
            if bgr is not None:
                return cv2.cvtColor(
                    cv2.resize(bgr, (w, h), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB
                )
    species_id = re.sub(r"v\d+$", "", art_id)
    species = np.random.default_rng(stable_seed("species", species_id))
    pose = np.random.default_rng(stable_seed("pose", art_id))
    img = _background(h, w, pose)
    _figure(img, species, pose)
    return img
