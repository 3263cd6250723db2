"""Card backs: a card lying face down is a card, and must be detected as one (class `back`).

Every card of a game shares one back, so the detector must learn what a back looks like in
general rather than one design: procedural designs (field colour, a repeating pattern, a
central emblem, a border) are numbered; training uses TRAIN_BACK_DESIGNS and the held-out test
scenes a design never trained on. A user who has a photograph or scan of their game's real back
passes it with `--back-image`, and it joins the designs.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from edge.types import ImageRGB
from training.synth.arrays import u8
from training.synth.card_render import card_size

# Six designs trained the first long detector run, and a design it never saw was found 0.68 of
# the time: a back is learnt from many designs, not a few.
TRAIN_BACK_DESIGNS = tuple(range(48))
TEST_BACK_DESIGNS = (101,)
BACK_ID = "back"  # the ground-truth card_id of a face-down card


def _pattern(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A repeating field pattern in [0, 1]: swirl, burst, diamonds or rings."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cx, cy = w / 2, h / 2
    r = np.hypot(xx - cx, yy - cy) / h
    a = np.arctan2(yy - cy, xx - cx)
    kind = int(rng.integers(4))
    f = float(rng.uniform(6, 16))
    if kind == 0:
        v = np.sin(a * int(rng.integers(3, 9)) + r * f * 3)
    elif kind == 1:
        v = np.sin(a * int(rng.integers(8, 24)))
    elif kind == 2:
        v = np.sin(xx / h * f * 2) * np.sin(yy / h * f * 2)
    else:
        v = np.sin(r * f * 6)
    return np.asarray((v + 1) / 2, np.float32)


def render_back(design: int, height: int = 512) -> ImageRGB:
    """The back of design `design` at `height` px, in a card's proportions."""
    rng = np.random.default_rng(90_000 + design)
    h, w = height, card_size(height)[1]
    field = rng.uniform(20, 200, 3).astype(np.float32)
    second = np.clip(field + rng.uniform(-90, 90, 3), 0, 255).astype(np.float32)
    t = _pattern(h, w, rng)[..., None]
    img = u8(np.clip(field * (1 - t) + second * t, 0, 255))
    emblem = tuple(int(v) for v in rng.uniform(0, 255, 3))
    ring = tuple(int(v) for v in rng.uniform(0, 255, 3))
    cx, cy, rad = w // 2, h // 2, int(w * rng.uniform(0.18, 0.32))
    if rng.random() < 0.5:
        cv2.circle(img, (cx, cy), rad, emblem, -1, cv2.LINE_AA)
        cv2.circle(img, (cx, cy), rad, ring, max(2, rad // 8), cv2.LINE_AA)
        cv2.line(img, (cx - rad, cy), (cx + rad, cy), ring, max(2, rad // 8), cv2.LINE_AA)
    else:
        axes = (rad, int(rad * rng.uniform(1.2, 1.6)))
        cv2.ellipse(img, (cx, cy), axes, 0, 0, 360, emblem, -1, cv2.LINE_AA)
        cv2.ellipse(img, (cx, cy), axes, 0, 0, 360, ring, max(2, rad // 10), cv2.LINE_AA)
    border = int(w * rng.uniform(0.03, 0.07))
    bcol = tuple(int(v) for v in rng.uniform(0, 255, 3))
    cv2.rectangle(img, (0, 0), (w - 1, h - 1), bcol, border)
    return img


def load_back(path: Path, height: int = 512) -> ImageRGB:
    """A user's scan or photograph of their game's real back, resized to a card at `height`."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise OSError(f"cannot read card back image {path}")
    if bgr.shape[1] > bgr.shape[0]:
        bgr = cv2.rotate(bgr, cv2.ROTATE_90_CLOCKWISE)
    h, w = height, card_size(height)[1]
    return u8(
        cv2.cvtColor(cv2.resize(bgr, (w, h), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
    )


def backs(
    designs: tuple[int, ...], images: tuple[Path, ...] = (), height: int = 512
) -> list[ImageRGB]:
    """The back images a world lays face down: procedural designs plus real ones."""
    return [render_back(d, height) for d in designs] + [load_back(p, height) for p in images]
