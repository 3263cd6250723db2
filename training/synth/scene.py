"""Scene compositor: cards on a table seen by a camera, with exact corner labels.

Geometry first, pixels second. Each card is posed in 3D (in-plane rotation, tilt of the card
plane against the camera up to `max_tilt_deg`, camera distance for perspective strength),
projected, scaled to its size and placed; placements that would hide an earlier card below
`min_visible` are retried. Then the background is drawn and the cards pasted with the exact
homography that produced their labels, with shadows, sleeves, light, glare, blur, noise and JPEG.

Label convention: corners are the card's physical corners in continuous pixel coordinates
(pixel (i, j) covers [i, i+1) x [j, j+1)), clockwise from the card's printed top-left.
`size_frac` is sqrt(projected card area / frame area); `visible_fraction` is the share of the
card's projected area neither covered by later cards (quarter-resolution masks) nor off-frame.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from edge.types import Corners, ImageRGB
from training.synth import clutter as clutter_mod
from training.synth import effects
from training.synth.arrays import f64
from training.synth.backgrounds import (
    TEST_FAMILIES,
    TRAIN_FAMILIES,
    background,
    list_images,
)
from training.synth.backgrounds import (
    from_image as from_photo,
)
from training.synth.card_back import BACK_ID
from training.synth.paste import CardPose, paste_card, paste_patch
from training.synth.photos import HELD_OUT_PHOTO_FAMILIES, TRAIN_PHOTO_FAMILIES

logger = logging.getLogger(__name__)

_LOW = 4  # planning masks are at 1/_LOW resolution


@dataclass(frozen=True, slots=True)
class SceneConfig:
    """Every distribution the compositor samples from. `effects=False` gives clean frames."""

    width: int = 1280
    height: int = 720
    n_cards: tuple[int, int] = (0, 6)
    size_frac: tuple[float, float] = (0.05, 0.6)
    max_tilt_deg: float = 45.0
    camera_distance: tuple[float, float] = (
        2.5,
        9.0,
    )  # in card heights: smaller = stronger perspective
    min_visible: float = 0.35
    backgrounds: tuple[str, ...] = TRAIN_FAMILIES
    background_dir: Path | None = None
    background_image_prob: float = 0.5
    photo_families: tuple[str, ...] | None = None  # sub-folders of background_dir; None = all
    clutter: tuple[int, int] = (0, 0)  # how many non-card objects lie on the table
    back_prob: float = 0.0  # chance a card lies face down (needs back images)
    light: effects.LightParams = field(default_factory=effects.LightParams)
    glare_prob: float = 0.5
    glare_strength: tuple[float, float] = (0.25, 0.9)
    sleeve_prob: float = 0.25
    toploader_prob: float = 0.08
    shadow_prob: float = 0.7
    motion_blur_prob: float = 0.15
    motion_blur_max: int = 9
    defocus_prob: float = 0.2
    defocus_max: float = 1.8
    noise_sigma: tuple[float, float] = (0.0, 7.0)
    jpeg_prob: float = 0.5
    jpeg_quality: tuple[int, int] = (45, 95)
    corner_radius_frac: float = 0.05  # of the card width
    effects: bool = True


TRAIN_SCENES = SceneConfig()
# The embedder's crop scenes: wider light, geometry and blur than the detector's training scenes.
# Held-out light and geometry cost the demo embedder about a fifth of its top-1 even on perfect
# boxes; crops from this wider world raised held-out perfect-box top-1 from 0.65 to 0.71. The
# detector keeps TRAIN_SCENES: trained on the wider world for the same 20 CPU epochs its
# precision on held-out scenes fell from 0.70 to 0.57.
WIDE_SCENES = SceneConfig(
    max_tilt_deg=60.0,
    camera_distance=(1.8, 9.0),
    light=effects.LightParams(
        ambient=(0.45, 1.3),
        gradient=0.6,
        spot_prob=0.45,
        spot_gain=0.55,
        vignette=0.45,
        wb_shift=0.2,
    ),
    glare_strength=(0.25, 1.0),
    motion_blur_prob=0.25,
    defocus_prob=0.3,
    defocus_max=2.4,
    noise_sigma=(0.0, 10.0),
)
# Held-out scenes: backgrounds never seen in training, cooler light with harder spots and
# vignetting, stronger tilt and perspective, more blur (the light and geometry lie inside
# WIDE_SCENES' ranges, as the world the embedder learns from should cover them). Differences are
# deliberate: test scenes measure generalisation, not memorisation of the training distributions.
TEST_SCENES = SceneConfig(
    n_cards=(1, 6),
    max_tilt_deg=55.0,
    camera_distance=(2.0, 6.0),
    backgrounds=TEST_FAMILIES,
    light=effects.LightParams(
        ambient=(0.5, 1.25),
        gradient=0.6,
        spot_prob=0.6,
        spot_gain=0.5,
        vignette=0.45,
        wb_shift=0.08,
        wb_bias=(-0.08, 0.1),
    ),
    glare_prob=0.6,
    glare_strength=(0.4, 1.0),
    motion_blur_prob=0.25,
    defocus_prob=0.3,
    defocus_max=2.2,
    noise_sigma=(2.0, 9.0),
)


# The detector's world: the training scenes with real photographs and textures behind the cards
# (when a background folder is given), objects that are not cards, and cards lying face down.
DETECTOR_SCENES = replace(
    TRAIN_SCENES,
    photo_families=TRAIN_PHOTO_FAMILIES,
    background_image_prob=0.45,
    clutter=(0, 4),
    back_prob=0.2,
)
# Its held-out counterpart: TEST_SCENES' light and geometry, the held-out photo family ("mate"),
# other clutter draws and a back design never trained on (the world supplies it).
TABLE_TEST_SCENES = replace(
    TEST_SCENES,
    photo_families=HELD_OUT_PHOTO_FAMILIES,
    background_image_prob=0.5,
    clutter=(0, 4),
    back_prob=0.1,
)


@dataclass(frozen=True, slots=True)
class SceneCard:
    """Ground truth for one card in a scene."""

    card_id: str
    corners: Corners  # 4 x 2 float32 px, clockwise from the card's top-left
    visible_fraction: float  # [0, 1]
    tilt_deg: float  # angle between the card's normal and the camera axis
    size_frac: float  # sqrt(card area / frame area)
    glare: float  # peak glare intensity on the card, [0, 1]
    rotation_deg: float  # in-plane rotation; 180 == upside down
    face_down: bool = False  # a card back (card_id == BACK_ID)


@dataclass(frozen=True, slots=True)
class Scene:
    image: ImageRGB  # H x W x 3 uint8 RGB
    cards: list[SceneCard]
    background: str = ""


def _rotation(axis: npt.NDArray[np.float64], angle: float) -> npt.NDArray[np.float64]:
    vec = axis * angle
    r, _ = cv2.Rodrigues(vec.reshape(3, 1))
    return np.asarray(r, np.float64)


def _project(
    rot_deg: float, tilt_deg: float, tilt_dir: float, dist: float, aspect: float
) -> npt.NDArray[np.float64]:
    """Card corners (TL, TR, BR, BL) posed in 3D and projected; arbitrary scale, centred."""
    w, h = aspect, 1.0
    pts = np.array([[-w / 2, -h / 2, 0], [w / 2, -h / 2, 0], [w / 2, h / 2, 0], [-w / 2, h / 2, 0]])
    rz = _rotation(np.array([0.0, 0.0, 1.0]), np.radians(rot_deg))
    rt = _rotation(np.array([np.cos(tilt_dir), np.sin(tilt_dir), 0.0]), np.radians(tilt_deg))
    p3 = pts @ rz.T @ rt.T
    z = p3[:, 2] + dist
    proj = p3[:, :2] / z[:, None]
    return f64(proj - proj.mean(axis=0))


def _poly_area(q: npt.NDArray[np.float64]) -> float:
    x, y = q[:, 0], q[:, 1]
    return float(0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _plan(
    card_ids: Sequence[str], aspect: float, rng: np.random.Generator, cfg: SceneConfig
) -> tuple[list[CardPose], npt.NDArray[np.int16]]:
    """Choose poses for the cards; returns them and the quarter-resolution owner map."""
    W, H = cfg.width, cfg.height
    owner = np.full((H // _LOW + 1, W // _LOW + 1), -1, np.int16)
    full_area: list[int] = []
    poses: list[CardPose] = []
    scene_tilt = rng.uniform(0, cfg.max_tilt_deg)
    scene_dir = rng.uniform(0, 2 * np.pi)
    dist = rng.uniform(*cfg.camera_distance)
    lo, hi = np.log(cfg.size_frac[0]), np.log(cfg.size_frac[1])
    for cid in card_ids:
        size = float(np.exp(rng.uniform(lo, hi)))
        rot = float(rng.uniform(0, 360))
        tilt = float(np.clip(scene_tilt + rng.normal(0, 4), 0, cfg.max_tilt_deg))
        tdir = scene_dir + rng.normal(0, 0.1)
        shape = _project(rot, tilt, tdir, dist, aspect)
        for _ in range(12):
            q = shape * np.sqrt(size * size * W * H / max(_poly_area(shape), 1e-9))
            span = q.max(axis=0) - q.min(axis=0)
            if span[0] > W - 4 or span[1] > H - 4:
                size *= 0.8
                continue
            cx = rng.uniform(-q[:, 0].min() + 2, W - q[:, 0].max() - 2)
            cy = rng.uniform(-q[:, 1].min() + 2, H - q[:, 1].max() - 2)
            corners = (q + np.array([cx, cy])).astype(np.float32)
            trial = owner.copy()
            cv2.fillPoly(trial, [np.round(corners / _LOW).astype(np.int32)], len(poses))
            counts = np.bincount((trial.ravel() + 1).astype(np.int64), minlength=len(poses) + 2)[1:]
            if all(counts[j] >= cfg.min_visible * full_area[j] for j in range(len(poses))):
                owner = trial
                full_area.append(max(int(counts[len(poses)]), 1))
                poses.append(CardPose(cid, corners, tilt, size, rot))
                break
            size *= 0.85
    visible = np.bincount((owner.ravel() + 1).astype(np.int64), minlength=len(poses) + 1)[1:]
    for j, p in enumerate(poses):
        p.visible_fraction = float(min(1.0, visible[j] / full_area[j]))
    return poses, owner


def _finish(
    img: ImageRGB,
    owner: npt.NDArray[np.int16],
    rng: np.random.Generator,
    cfg: SceneConfig,
    poses: list[CardPose],
) -> ImageRGB:
    """Light, glare, blur, noise, JPEG; records each card's peak glare."""
    gh, gw = effects._GRID
    img = effects.apply_light(img, effects.light_field(rng, cfg.light))
    if rng.random() < cfg.glare_prob:
        glare = effects.glare_field(rng, int(rng.integers(1, 4)), cfg.glare_strength)
        cover_full = (owner >= 0).astype(np.float32)
        cover = 0.25 + 0.75 * cv2.resize(cover_full, (gw, gh), interpolation=cv2.INTER_AREA)
        img = effects.apply_glare(img, glare, cover)
        for j, p in enumerate(poses):
            m = (
                cv2.resize((owner == j).astype(np.float32), (gw, gh), interpolation=cv2.INTER_AREA)
                > 0.3
            )
            p.glare = float((glare * cover)[m].max()) if m.any() else 0.0
    if rng.random() < cfg.defocus_prob:
        img = effects.defocus(img, rng.uniform(0.6, cfg.defocus_max))
    if rng.random() < cfg.motion_blur_prob:
        img = effects.motion_blur(
            img, int(rng.integers(3, cfg.motion_blur_max + 1)), rng.uniform(0, 180)
        )
    img = effects.sensor_noise(img, rng.uniform(*cfg.noise_sigma), rng)
    if rng.random() < cfg.jpeg_prob:
        img = effects.jpeg(img, int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1)))
    return img


def _lay_clutter(
    img: ImageRGB,
    rng: np.random.Generator,
    cfg: SceneConfig,
    photos: Sequence[Path],
) -> None:
    """Non-card objects on the table (drawn before the cards, so cards may lie on them)."""
    n = int(rng.integers(cfg.clutter[0], cfg.clutter[1] + 1))
    W, H = cfg.width, cfg.height
    for _ in range(n):
        photo = None
        if photos and rng.random() < 0.7:
            photo = from_photo(photos[int(rng.integers(len(photos)))], 300, 400, rng)
        thing = clutter_mod.random_thing(rng, [photo] if photo is not None else [])
        th, tw = thing.image.shape[:2]
        shape = _project(
            float(rng.uniform(0, 360)), float(rng.uniform(0, cfg.max_tilt_deg)),
            float(rng.uniform(0, 2 * np.pi)), float(rng.uniform(*cfg.camera_distance)), tw / th,
        )  # fmt: skip
        size = float(rng.uniform(*thing.size_frac))
        q = shape * np.sqrt(size * size * W * H / max(_poly_area(shape), 1e-9))
        centre = np.array([rng.uniform(0, W), rng.uniform(0, H)])
        paste_patch(img, thing.image, thing.alpha, (q + centre).astype(np.float32), rng)


def render_scene(
    card_images: Mapping[str, ImageRGB],
    rng: np.random.Generator,
    cfg: SceneConfig = TRAIN_SCENES,
    card_ids: Sequence[str] | None = None,
    backs: Sequence[ImageRGB] = (),
) -> Scene:
    """Compose one scene from flat card images; `card_ids` forces which cards appear (in order).

    With `backs` and `cfg.back_prob`, each card lies face down with that chance: one of `backs`
    is pasted instead, and its truth is card_id BACK_ID with face_down set.
    """
    if card_ids is None:
        keys = sorted(card_images)
        n = int(rng.integers(cfg.n_cards[0], cfg.n_cards[1] + 1)) if keys else 0
        card_ids = [keys[int(i)] for i in rng.integers(0, len(keys), n)] if n else []
    images: Mapping[str, ImageRGB] = card_images
    if backs and cfg.back_prob > 0:
        flips = rng.random(len(card_ids)) < cfg.back_prob
        picks = rng.integers(0, len(backs), len(card_ids))
        card_ids = [
            f"{BACK_ID}#{k}" if f else c for c, f, k in zip(card_ids, flips, picks, strict=True)
        ]
        images = {**card_images, **{f"{BACK_ID}#{k}": b for k, b in enumerate(backs)}}
    first = next(iter(card_images.values()), None)
    aspect = first.shape[1] / first.shape[0] if first is not None else 63 / 88
    poses, owner = _plan(card_ids, aspect, rng, cfg)
    bg_images = list_images(cfg.background_dir, cfg.photo_families)
    img, family = background(
        cfg.height, cfg.width, rng, cfg.backgrounds, bg_images, cfg.background_image_prob,
        cfg.background_dir,
    )  # fmt: skip
    if cfg.clutter[1] > 0:
        _lay_clutter(img, rng, cfg, bg_images)
    light_dir = rng.uniform(0, 2 * np.pi)
    for p in poses:
        paste_card(img, images[p.card_id], p, rng, cfg, light_dir)
    if cfg.effects:
        img = _finish(img, owner, rng, cfg, poses)
    cards = [
        SceneCard(
            BACK_ID if p.card_id.startswith(f"{BACK_ID}#") else p.card_id,
            p.corners,
            p.visible_fraction,
            p.tilt_deg,
            p.size_frac,
            p.glare,
            p.rotation_deg,
            face_down=p.card_id.startswith(f"{BACK_ID}#"),
        )
        for p in poses
    ]
    return Scene(image=np.ascontiguousarray(img), cards=cards, background=family)
