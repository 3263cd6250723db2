"""Dataset writers: YOLO-OBB detection, per-card ImageFolder crops, held-out test scenes,
calibration images. Every item draws its randomness from item_rng(seed, stream, index), so
`--shard i/n` runs write disjoint items that together equal one unsharded run, byte for byte.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np
import yaml

from edge.recognize.rectify import order_corners, rectify, rotate180, warp_card
from edge.types import ImageRGB, OrientedBox
from training.synth import effects
from training.synth.catalogue import CardRecord
from training.synth.io import item_rng, shard_indices, write_jpeg, write_scene
from training.synth.scene import (
    TEST_SCENES,
    TRAIN_SCENES,
    WIDE_SCENES,
    Scene,
    SceneCard,
    SceneConfig,
    render_scene,
)

logger = logging.getLogger(__name__)

DETECTOR_CLASSES = ("card", "back")  # class ids of the OBB labels, in order
CROP_H, CROP_W = 224, 160  # the embedder's input (portrait 63:88)
T = TypeVar("T")


def progress(items: Iterable[T], desc: str, total: int | None = None) -> Iterator[T]:
    """tqdm progress bar when tqdm is installed (train extra), plain iteration otherwise."""
    try:
        from tqdm import tqdm
    except ImportError:
        yield from items
        return
    yield from tqdm(items, desc=desc, total=total, leave=False)


def obb_label_line(card: SceneCard, width: int, height: int) -> str:
    """ "k x1 y1 ... x4 y4": class k (0 card face, 1 card back) and corners normalised to [0, 1],
    clockwise from the card's top-left."""
    pts = np.clip(card.corners / np.array([width, height], np.float32), 0.0, 1.0)
    return f"{int(card.face_down)} " + " ".join(f"{v:.6f}" for v in pts.reshape(-1))


def write_obb(
    out: Path,
    card_images: Mapping[str, ImageRGB],
    n_train: int,
    n_val: int,
    seed: int,
    cfg: SceneConfig = TRAIN_SCENES,
    shard: tuple[int, int] = (0, 1),
    backs: Sequence[ImageRGB] = (),
) -> None:
    """An ultralytics OBB dataset: images/{train,val}, labels/{train,val}, data.yaml (classes
    card and back; face-down cards appear when `backs` are given and cfg.back_prob > 0)."""
    for split, n in (("train", n_train), ("val", n_val)):
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        for i in progress(shard_indices(n, shard), f"obb/{split}"):
            scene = render_scene(card_images, item_rng(seed, f"obb-{split}", i), cfg, backs=backs)
            name = f"{i:06d}"
            write_jpeg(out / "images" / split / f"{name}.jpg", scene.image)
            lines = [obb_label_line(c, cfg.width, cfg.height) for c in scene.cards]
            (out / "labels" / split / f"{name}.txt").write_text("".join(f"{ln}\n" for ln in lines))
    data = {
        "train": "images/train",
        "val": "images/val",
        "names": dict(enumerate(DETECTOR_CLASSES)),
    }
    (out / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


def upright_crop(image: ImageRGB, card: SceneCard) -> ImageRGB:
    """Rectify with the runtime's own rectifier, then turn the crop the card's way up (the
    rectifier cannot know which end is the top; the labels do)."""
    crop = rectify(image, OrientedBox(corners=card.corners, conf=1.0), CROP_H, CROP_W).image
    ordered = order_corners(card.corners)
    start = int(np.argmin(np.linalg.norm(ordered - card.corners[0], axis=1)))
    if start == 0:
        return crop
    if start == 2:
        return rotate180(crop)
    # Foreshortening made the long edges look short: the rectifier turned the card by 90
    # degrees. Warp along the labelled order instead so the crop still shows the card.
    return warp_card(image, card.corners, CROP_H, CROP_W)


# How far a detector's rotated box strays from the card's own (minimum-area rectangle of the true
# corners), as standard deviations: centre offset and log size change in units of the card's size,
# angle in degrees. Measured on the demo detector (YOLO11n-OBB, 320 px, 20 CPU epochs) over 290
# matched training-style cards: centre 0.045, log size 0.11, angle about 4.5 (inter-quartile
# ranges / 1.35), with heavier tails. Training crops are cut with these errors times a per-crop
# quality factor, so the embedder has seen both a sharper and a sloppier detector than the demo's.
BOX_ERROR_CENTRE = 0.045
BOX_ERROR_LOG_SIZE = 0.11
BOX_ERROR_ANGLE_DEG = 4.5
BOX_QUALITY = (0.25, 1.25)


def device_box(corners: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The box the device's detector would report for a card: the minimum-area rotated rectangle
    of its true corners (what an OBB detector learns from polygon labels), moved by a detector's
    measured error (centre, size, angle; see BOX_ERROR_*). Returns four corners ordered like
    `corners`.

    A tilted card projects to a trapezoid; its rotated rectangle includes some background and
    cuts some card. Training on exactly those crops is what makes the embedder work on the
    device: crops from the exact corners looked better and matched far worse (0.33 top-1), and
    crops jittered by only a few per cent still lost a third of top-1 to the real detector's
    boxes (0.87 -> 0.57 on training-style scenes)."""
    (cx, cy), (w, h), angle = cv2.minAreaRect(np.asarray(corners, np.float32))
    size = float(np.sqrt(max(w * h, 1.0)))
    q = float(rng.uniform(*BOX_QUALITY))
    cx, cy = np.array([cx, cy]) + rng.normal(0.0, BOX_ERROR_CENTRE * q * size, 2)
    w, h = np.array([w, h]) * np.exp(rng.normal(0.0, BOX_ERROR_LOG_SIZE * q, 2))
    angle += float(rng.normal(0.0, BOX_ERROR_ANGLE_DEG * q))
    rect = order_corners(cv2.boxPoints(((float(cx), float(cy)), (float(w), float(h)), angle)))
    # Align the rectangle's clockwise corners with the labelled ones: the crop comes out upright.
    cost = [np.linalg.norm(np.roll(rect, -k, axis=0) - corners, axis=1).sum() for k in range(4)]
    aligned: np.ndarray = np.roll(rect, -int(np.argmin(cost)), axis=0)
    return aligned


def _crop_config() -> SceneConfig:
    """Small frames with one to three cards from the wide world: crops carry real scene context
    at low cost."""
    return replace(WIDE_SCENES, width=640, height=384, size_frac=(0.25, 0.7), n_cards=(1, 3))


def scene_crop(
    card_id: str, card_images: Mapping[str, ImageRGB], rng: np.random.Generator
) -> ImageRGB | None:
    """The card photographed in a small scene (maybe under other cards), cut out the way the
    device cuts it (`device_box`) and turned upright."""
    keys = sorted(card_images)
    others = [keys[int(k)] for k in rng.integers(0, len(keys), int(rng.integers(0, 3)))]
    scene = render_scene(card_images, rng, _crop_config(), card_ids=[*others, card_id])
    target = [c for c in scene.cards if c.card_id == card_id]
    if not target:
        return None
    return warp_card(scene.image, device_box(target[-1].corners, rng), CROP_H, CROP_W)


def augmented_scan(card: ImageRGB, rng: np.random.Generator) -> ImageRGB:
    """A flat scan jittered like a quick phone photo: small perspective, colour, blur, noise."""
    h, w = card.shape[:2]
    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
    jitter = rng.normal(0, 0.025, (4, 2)).astype(np.float32) * np.array([w, h], np.float32)
    m = cv2.getPerspectiveTransform(
        src + jitter, np.array([[0, 0], [CROP_W, 0], [CROP_W, CROP_H], [0, CROP_H]], np.float32)
    )
    img = cv2.warpPerspective(
        cv2.resize(card, (w // 2, h // 2), interpolation=cv2.INTER_AREA),
        m @ np.diag([2.0, 2.0, 1.0]).astype(np.float64),
        (CROP_W, CROP_H),
        borderMode=cv2.BORDER_REPLICATE,
    )
    gains = rng.uniform(0.75, 1.2) * rng.uniform(0.9, 1.1, 3)
    img = np.clip(img.astype(np.float32) * gains, 0, 255).astype(np.uint8)
    if rng.random() < 0.4:
        img = effects.defocus(img, rng.uniform(0.4, 1.2))
    img = np.clip(
        img.astype(np.int16) + rng.normal(0, rng.uniform(0, 5), img.shape).astype(np.int16), 0, 255
    )
    return effects.jpeg(img.astype(np.uint8), int(rng.integers(50, 95)))


def write_cls(
    out: Path,
    records: Sequence[CardRecord],
    card_images: Mapping[str, ImageRGB],
    per_card: Mapping[str, int],
    seed: int,
    shard: tuple[int, int] = (0, 1),
) -> None:
    """cls/<split>/<card_id>/<j>.jpg: two scene crops to every augmented scan, per card."""
    for split, k in per_card.items():
        total = len(records) * k
        for idx in progress(shard_indices(total, shard), f"cls/{split}", total=None):
            rec = records[idx // k]
            rng = item_rng(seed, f"cls-{split}", idx)
            crop = scene_crop(rec.card_id, card_images, rng) if idx % 3 != 2 else None
            if crop is None:
                crop = augmented_scan(card_images[rec.card_id], rng)
            write_jpeg(out / split / rec.card_id / f"{idx % k:04d}.jpg", crop)


def write_test_scenes(
    out: Path,
    known: Sequence[CardRecord],
    unknown: Sequence[CardRecord],
    card_images: Mapping[str, ImageRGB],
    n: int,
    seed: int,
    cfg: SceneConfig = TEST_SCENES,
    unknown_prob: float = 0.2,
    shard: tuple[int, int] = (0, 1),
    backs: Sequence[ImageRGB] = (),
) -> None:
    """Held-out scenes (other backgrounds, light, geometry) mixing catalogue and unknown cards
    (and face-down cards, with `backs` and a config whose back_prob > 0)."""
    is_known = {r.card_id: True for r in known} | {r.card_id: False for r in unknown}
    groups = {r.card_id: r.reprint_group for r in [*known, *unknown]}
    for i in progress(shard_indices(n, shard), "test_scenes"):
        rng = item_rng(seed, "test", i)
        count = int(rng.integers(cfg.n_cards[0], cfg.n_cards[1] + 1))
        ids = [
            unknown[int(rng.integers(len(unknown)))].card_id
            if unknown and rng.random() < unknown_prob
            else known[int(rng.integers(len(known)))].card_id
            for _ in range(count)
        ]
        scene = render_scene(card_images, rng, cfg, card_ids=ids, backs=backs)
        write_scene(out, f"{i:06d}", scene, is_known, groups)


def write_calib(
    out: Path,
    card_images: Mapping[str, ImageRGB],
    n: int,
    seed: int,
    cfg: SceneConfig = TRAIN_SCENES,
    shard: tuple[int, int] = (0, 1),
) -> None:
    """calib/<i>.jpg: training-distribution frames for quantisation calibration."""
    for i in progress(shard_indices(n, shard), "calib"):
        scene: Scene = render_scene(card_images, item_rng(seed, "calib", i), cfg)
        write_jpeg(out / f"{i:06d}.jpg", scene.image)
