"""Photos for the overlay tests: a demo card in a matte sleeve (blurred, hazed, a coarse
print-through texture) or printed differently from its catalogue scan (other art in its art
window), laid on a table at a pose.

In a thick sleeve (`thick_sleeve`; the thinner default one the demo bundle now verifies at its
distinct operating point) the demo bundle cannot verify CARD at POSE_2 against its sharp scan; a view taught
from the photo at POSE_1 lets it (the colours still agree with the scan). The art variant is the
adversarial case: a taught view of one card's variant must not pull another card with the same
new art into it.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import numpy.typing as npt

from tests.bundle_factory import REPO_ROOT

DEMO = REPO_ROOT / "models" / "demo"
CARD = "s01-001"  # a demo card with a self-test scan
POSE_1 = [[200, 80], [420, 100], [400, 400], [180, 380]]  # px, clockwise from the card's top-left
POSE_2 = [[250, 60], [450, 90], [440, 380], [230, 360]]

Image = npt.NDArray[np.uint8]


def scan(card_id: str = CARD) -> Image:
    """The demo bundle's self-test scan of card_id (the manifest names the files)."""
    manifest = json.loads((DEMO / "manifest.json").read_text(encoding="utf-8"))
    [name] = [n for n, c in manifest["selftest"].items() if c == card_id]
    bgr = cv2.imread(str(DEMO / name), cv2.IMREAD_COLOR)
    assert bgr is not None, card_id
    return np.ascontiguousarray(bgr[..., ::-1])


def sleeve(card: Image, sigma: float = 3.0, contrast: float = 0.5, seed: int = 1) -> Image:
    """The card seen through a matte sleeve."""
    h, w = card.shape[:2]
    rng = np.random.default_rng(seed)
    out = cv2.GaussianBlur(card, (0, 0), sigma).astype(np.float32)
    tex = cv2.GaussianBlur(rng.normal(0, 1, (h // 8, w // 8)).astype(np.float32), (0, 0), 1)
    tex = cv2.resize(tex, (w, h))
    out = out * contrast + (1 - contrast) * 200 + 25 * tex[..., None]
    return np.clip(out, 0, 255).astype(np.uint8)


def thick_sleeve(card: Image) -> Image:
    """A sleeve hazier than the default: the demo bundle cannot verify CARD at POSE_2 in it (at
    contrast 0.45 it now can, at the distinct point, from the photo's JPEG)."""
    return sleeve(card, contrast=0.4)


def variant(card: Image, seed: int = 5) -> Image:
    """The card with other art (coloured discs) in its art window."""
    h, w = card.shape[:2]
    rng = np.random.default_rng(seed)
    y0, y1, x0, x1 = int(0.1 * h), int(0.55 * h), int(0.08 * w), int(0.92 * w)
    art = np.zeros((y1 - y0, x1 - x0, 3), np.uint8)
    art[:] = (200, 170, 90)
    for _ in range(60):
        colour = tuple(int(v) for v in rng.integers(0, 255, 3))
        centre = (int(rng.integers(0, x1 - x0)), int(rng.integers(0, y1 - y0)))
        cv2.circle(art, centre, int(rng.integers(4, 30)), colour, -1)
    out = card.copy()
    out[y0:y1, x0:x1] = art
    return out


def photo(card: Image, corners: list[list[int]], table_seed: int = 0) -> Image:
    """`card` warped to `corners` on a 640 x 480 blurred-noise table."""
    h, w = card.shape[:2]
    rng = np.random.default_rng(table_seed)
    table = rng.integers(60, 120, (480, 640, 3)).astype(np.uint8)
    table = cv2.GaussianBlur(table, (0, 0), 3)
    src = np.float32([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]])
    m = cv2.getPerspectiveTransform(src, np.float32(corners))
    warped = cv2.warpPerspective(card, m, (640, 480))
    mask = cv2.warpPerspective(np.full((h, w), 255, np.uint8), m, (640, 480))
    return np.ascontiguousarray(np.where(mask[..., None] > 0, warped, table))


def jpeg(image: Image, quality: int = 92) -> bytes:
    ok, buf = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return bytes(buf.tobytes())
