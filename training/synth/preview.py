"""Contact sheet: 16 training scenes with their labels drawn, and 16 rectified crops from them.

The sheet is how a reader (and the author) checks that the synthetic world looks like photos of
cards on a table and that the labels sit on the cards.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import cv2
import numpy as np

from edge.types import ImageRGB
from training.synth.io import item_rng
from training.synth.scene import TRAIN_SCENES, SceneCard, SceneConfig, render_scene
from training.synth.writers import CROP_H, CROP_W, upright_crop

logger = logging.getLogger(__name__)

TILE_W, TILE_H = 320, 180


def draw_labels(image: ImageRGB, cards: list[SceneCard]) -> ImageRGB:
    """Label polygons (green), the card's top-left corner (red dot) and its id."""
    out = image.copy()
    for c in cards:
        pts = np.round(c.corners).astype(np.int32)
        cv2.polylines(out, [pts], True, (40, 255, 40), 3, cv2.LINE_AA)
        cv2.circle(out, tuple(int(v) for v in pts[0]), 9, (255, 30, 30), -1, cv2.LINE_AA)
        label = f"{c.card_id} v{c.visible_fraction:.2f}"
        org = (int(pts[:, 0].min()), max(20, int(pts[:, 1].min()) - 8))
        cv2.putText(out, label, org, cv2.FONT_HERSHEY_SIMPLEX, 1.0, (0, 0, 0), 5, cv2.LINE_AA)
        cv2.putText(out, label, org, cv2.FONT_HERSHEY_SIMPLEX, 1.0, (255, 255, 255), 2, cv2.LINE_AA)
    return out


def contact_sheet(
    card_images: Mapping[str, ImageRGB], seed: int = 0, cfg: SceneConfig = TRAIN_SCENES
) -> ImageRGB:
    """4 x 4 labelled scenes (1280 x 720) above 2 x 8 crops (160 x 224 each)."""
    tiles: list[ImageRGB] = []
    crops: list[ImageRGB] = []
    i = 0
    while len(tiles) < 16:
        scene = render_scene(card_images, item_rng(seed, "preview", i), cfg)
        i += 1
        if not scene.cards and i < 64:
            continue  # empty frames are in the data, but tell a reader nothing
        tiles.append(
            cv2.resize(
                draw_labels(scene.image, scene.cards),
                (TILE_W, TILE_H),
                interpolation=cv2.INTER_AREA,
            )
        )
        crops.extend(upright_crop(scene.image, c) for c in scene.cards if c.visible_fraction > 0.8)
    crops = (crops + [np.zeros((CROP_H, CROP_W, 3), np.uint8)] * 16)[:16]
    grid = np.concatenate([np.concatenate(tiles[r * 4 : r * 4 + 4], 1) for r in range(4)], 0)
    crop_rows = np.concatenate([np.concatenate(crops[r * 8 : r * 8 + 8], 1) for r in range(2)], 0)
    return np.ascontiguousarray(np.concatenate([grid, crop_rows], 0))
