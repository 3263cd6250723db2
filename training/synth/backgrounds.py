"""Procedural table-top backgrounds: the surfaces cards lie on.

Training families: wood, cloth, playmat, desk (with clutter), carpet, collage, paper, tiles, blur
(an out-of-focus room) and stripes: many kinds of texture, frequency and clutter, so a detector
learns what a card is rather than what a table looks like. Held-out families used only by the
test-scene config: marble, granite, gingham (made by generators the training world never runs). Textures are synthesised at half resolution and
upscaled (detail finer than that is lost to camera blur anyway), which keeps a 1280x720 frame
within a few milliseconds. An optional image folder supplies real photographs and textures
instead (training/synth/photos.py gathers them, one sub-folder per family).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from edge.types import ImageRGB
from training.synth.arrays import u8

logger = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]
TRAIN_FAMILIES = (
    "wood", "cloth", "playmat", "desk", "carpet", "collage", "paper", "tiles", "blur", "stripes",
)  # fmt: skip
TEST_FAMILIES = ("marble", "granite", "gingham")


def value_noise(h: int, w: int, cells: int, rng: np.random.Generator) -> F32:
    """Smooth noise in [0, 1]: a coarse random grid upsampled bicubically."""
    gw = max(2, cells)
    gh = max(2, round(cells * h / max(w, 1)))
    grid = rng.random((gh, gw)).astype(np.float32)
    return np.clip(cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC), 0.0, 1.0)


def _lerp(
    a: Sequence[float] | npt.NDArray[Any],
    b: Sequence[float] | npt.NDArray[Any],
    t: npt.NDArray[Any],
) -> ImageRGB:
    """Colour ramp from a (t=0) to b (t=1), via a 256-entry lookup table (fast on full frames)."""
    ramp = np.linspace(0.0, 1.0, 256, dtype=np.float32)[:, None]
    a_ = np.asarray(a, np.float32)
    lut = np.clip(a_ + (np.asarray(b, np.float32) - a_) * ramp, 0, 255).astype(np.uint8)
    t8 = np.clip(t * 255, 0, 255).astype(np.uint8)
    return u8(cv2.LUT(cv2.merge([t8, t8, t8]), lut.reshape(256, 1, 3)))


def _up(img: ImageRGB, h: int, w: int) -> ImageRGB:
    return u8(cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR))


def wood(h: int, w: int, rng: np.random.Generator) -> ImageRGB:
    """Planks with grain lines bent by low-frequency noise."""
    hh, ww = h // 2, w // 2
    along_x = rng.random() < 0.5
    long_, short = (ww, hh) if along_x else (hh, ww)
    warp = value_noise(short, long_, 6, rng) * rng.uniform(8, 25)
    across = np.arange(short, dtype=np.float32)[:, None]
    grain = 0.5 + 0.5 * np.sin((across + warp) * rng.uniform(0.25, 0.6))
    grain = grain * 0.6 + value_noise(short, long_, 40, rng) * 0.4
    plank = max(20, int(short / rng.uniform(2, 6)))
    seams = (np.arange(short) % plank) < 2
    light = np.array([rng.uniform(150, 210), rng.uniform(100, 150), rng.uniform(55, 95)])
    dark = light * rng.uniform(0.45, 0.7)
    img = _lerp(dark, light, grain)
    img[seams] = (img[seams] * 0.45).astype(np.uint8)
    if not along_x:
        img = np.ascontiguousarray(img.transpose(1, 0, 2))
    return _up(img, h, w)


def cloth(h: int, w: int, rng: np.random.Generator) -> ImageRGB:
    """A woven tablecloth or felt: base colour, fine weave, soft folds."""
    hh, ww = h // 2, w // 2
    hue = np.array([rng.uniform(30, 230) for _ in range(3)], np.float32)
    yy = np.arange(hh, dtype=np.float32)[:, None]
    xx = np.arange(ww, dtype=np.float32)[None, :]
    f = rng.uniform(0.6, 1.2)
    weave = 0.5 + 0.25 * (np.sin(xx * f) + np.sin(yy * f))
    folds = value_noise(hh, ww, 5, rng)
    t = (0.25 * weave + 0.75 * folds).astype(np.float32)
    return _up(_lerp(hue * 0.6, hue, t), h, w)


def playmat(h: int, w: int, rng: np.random.Generator) -> ImageRGB:
    """A printed play mat: gradient art, soft blobs and card-zone outlines (hard negatives)."""
    hh, ww = h // 2, w // 2
    c0 = rng.uniform(20, 200, 3)
    c1 = rng.uniform(20, 200, 3)
    img = _lerp(c0, c1, value_noise(hh, ww, 3, rng))
    for _ in range(int(rng.integers(3, 8))):
        centre = (int(rng.uniform(0, ww)), int(rng.uniform(0, hh)))
        axes = (int(rng.uniform(20, ww / 3)), int(rng.uniform(20, hh / 3)))
        col = tuple(float(v) for v in rng.uniform(0, 255, 3))
        cv2.ellipse(img, centre, axes, rng.uniform(0, 180), 0, 360, col, -1, cv2.LINE_AA)
    img = _up(
        u8(cv2.GaussianBlur(cv2.resize(img, (ww // 4, hh // 4)), (0, 0), rng.uniform(1, 3))), hh, ww
    )
    line = tuple(float(v) for v in rng.uniform(150, 255, 3))
    zw = int(hh * rng.uniform(0.3, 0.45) * 63 / 88)
    zh = int(zw * 88 / 63)
    for i in range(int(rng.integers(2, 7))):
        x0 = int(ww * 0.05 + i * zw * 1.3)
        y0 = int(rng.uniform(0, hh - zh))
        if x0 + zw < ww:
            cv2.rectangle(img, (x0, y0), (x0 + zw, y0 + zh), line, 2, cv2.LINE_AA)
    cv2.putText(
        img,
        "PLAYMAT",
        (int(ww * rng.uniform(0, 0.5)), int(hh * rng.uniform(0.2, 0.95))),
        cv2.FONT_HERSHEY_TRIPLEX,
        rng.uniform(1, 3),
        line,
        2,
        cv2.LINE_AA,
    )
    return _up(img, h, w)


def _clutter(img: ImageRGB, rng: np.random.Generator) -> None:
    """Paper sheets, sticky notes, pens, coins, dice and a phone scattered on the desk."""
    h, w = img.shape[:2]
    for _ in range(int(rng.integers(2, 9))):
        kind = int(rng.integers(6))
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        ang = rng.uniform(0, 180)
        if kind in (0, 1, 5):  # paper sheet, sticky note, phone: rotated rectangles
            size = {0: (h * 0.6, h * 0.8), 1: (h * 0.12, h * 0.12), 5: (h * 0.2, h * 0.4)}[kind]
            col = {0: (235, 235, 228), 1: (250, 230, 90), 5: (25, 25, 30)}[kind]
            box = cv2.boxPoints(((cx, cy), size, ang)).astype(np.int32)
            cv2.fillPoly(img, [box], col, cv2.LINE_AA)
            if kind == 0:
                for k in range(8):
                    y = int(cy - size[1] * 0.35 + k * size[1] * 0.08)
                    cv2.line(
                        img,
                        (int(cx - size[0] * 0.3), y),
                        (int(cx + size[0] * 0.3), y),
                        (120, 120, 140),
                        1,
                        cv2.LINE_AA,
                    )
        elif kind == 2:  # pen
            box = cv2.boxPoints(((cx, cy), (h * 0.25, h * 0.015), ang)).astype(np.int32)
            cv2.fillPoly(img, [box], tuple(float(v) for v in rng.uniform(0, 255, 3)), cv2.LINE_AA)
        elif kind == 3:  # coin
            r = int(h * rng.uniform(0.02, 0.035))
            cv2.circle(img, (int(cx), int(cy)), r, (190, 160, 90), -1, cv2.LINE_AA)
            cv2.circle(img, (int(cx), int(cy)), max(1, r - 3), (150, 125, 70), 1, cv2.LINE_AA)
        else:  # die
            s = h * 0.04
            box = cv2.boxPoints(((cx, cy), (s, s), ang)).astype(np.int32)
            cv2.fillPoly(img, [box], (240, 240, 240), cv2.LINE_AA)
            cv2.circle(img, (int(cx), int(cy)), max(1, int(s / 8)), (20, 20, 20), -1, cv2.LINE_AA)


def desk(h: int, w: int, rng: np.random.Generator) -> ImageRGB:
    """A plain desk surface (laminate) with everyday clutter."""
    base = rng.uniform(60, 230) * np.array([1.0, rng.uniform(0.9, 1.0), rng.uniform(0.8, 1.0)])
    img = _up(_lerp(base * 0.85, base, value_noise(h // 2, w // 2, 4, rng)), h, w)
    _clutter(img, rng)
    return img


def _colour(rng: np.random.Generator, lo: float = 0.0, hi: float = 255.0) -> tuple[float, ...]:
    return tuple(float(v) for v in rng.uniform(lo, hi, 3))


def carpet(h: int, w: int, rng: np.random.Generator) -> ImageRGB:
    """Carpet or a rough rug: per-pixel fibre noise smeared along a direction, over soft mottling."""
    hh, ww = h // 2, w // 2
    fibre = rng.normal(0.5, rng.uniform(0.1, 0.3), (hh, ww)).astype(np.float32)
    k = int(rng.integers(1, 4)) * 2 + 1
    kernel = np.zeros((k, k), np.float32)
    kernel[k // 2, :] = 1.0 / k
    rot = cv2.getRotationMatrix2D((k / 2 - 0.5, k / 2 - 0.5), rng.uniform(0, 180), 1.0)
    fibre = cv2.filter2D(fibre, -1, cv2.warpAffine(kernel, rot, (k, k)))
    t = np.clip(0.6 * fibre + 0.4 * value_noise(hh, ww, int(rng.integers(4, 20)), rng), 0, 1)
    base = np.asarray(_colour(rng, 30, 230), np.float32)
    return _up(_lerp(base * rng.uniform(0.3, 0.7), base, t.astype(np.float32)), h, w)


def collage(h: int, w: int, rng: np.random.Generator) -> ImageRGB:
    """Overlapping flat shapes (posters, boxes, books seen from above): hard negatives with
    straight edges and corners, some of them card-sized rectangles of other aspects."""
    hh, ww = h // 2, w // 2
    img = np.empty((hh, ww, 3), np.uint8)
    img[:] = np.asarray(_colour(rng, 20, 235), np.uint8)
    for _ in range(int(rng.integers(6, 25))):
        kind = int(rng.integers(3))
        cx, cy = rng.uniform(0, ww), rng.uniform(0, hh)
        col = _colour(rng)
        if kind == 0:
            size = (rng.uniform(0.05, 0.5) * hh, rng.uniform(0.05, 0.5) * hh)
            box = cv2.boxPoints(((cx, cy), size, rng.uniform(0, 180))).astype(np.int32)
            cv2.fillPoly(img, [box], col, cv2.LINE_AA)
        elif kind == 1:
            r = int(rng.uniform(0.02, 0.2) * hh)
            cv2.circle(img, (int(cx), int(cy)), r, col, -1, cv2.LINE_AA)
        else:
            pts = (np.array([cx, cy]) + rng.normal(0, 0.15 * hh, (3, 2))).astype(np.int32)
            cv2.fillPoly(img, [pts], col, cv2.LINE_AA)
    return _up(img, h, w)


def paper(h: int, w: int, rng: np.random.Generator) -> ImageRGB:
    """Printed pages (a magazine, a price list): columns of text strokes and picture blocks."""
    hh, ww = h // 2, w // 2
    tone = rng.uniform(215, 250)
    img = np.full((hh, ww, 3), tone, np.float32)
    img *= np.asarray(rng.uniform(0.93, 1.0, 3), np.float32)
    img = u8(img)
    ink = _colour(rng, 0, 90)
    line_h = int(rng.integers(4, 10))
    cols = int(rng.integers(1, 4))
    col_w = ww // cols
    for c in range(cols):
        y = int(rng.integers(2, 3 * line_h))
        while y < hh - line_h:
            if rng.random() < 0.08:  # a picture block
                bh = int(rng.uniform(0.1, 0.3) * hh)
                x0 = c * col_w + 6
                cv2.rectangle(img, (x0, y), (x0 + col_w - 12, y + bh), _colour(rng), -1)
                y += bh + line_h
                continue
            x = c * col_w + 6
            while x < (c + 1) * col_w - 10:
                word = int(rng.integers(line_h, 6 * line_h))
                cv2.rectangle(
                    img, (x, y), (min(x + word, (c + 1) * col_w - 6), y + line_h // 2), ink, -1
                )
                x += word + line_h // 2
            y += line_h + int(rng.integers(2, line_h + 2))
    return _up(img, h, w)


def tiles(h: int, w: int, rng: np.random.Generator) -> ImageRGB:
    """A tiled floor or table: square or brick tiles, grout lines, a slightly rotated grid."""
    hh, ww = h // 2, w // 2
    size = rng.uniform(0.08, 0.35) * hh
    base = np.asarray(_colour(rng, 40, 230), np.float32)
    yy, xx = np.mgrid[0:hh, 0:ww].astype(np.float32)
    ang = np.deg2rad(rng.uniform(-20, 20))
    u = (xx * np.cos(ang) + yy * np.sin(ang)) / size
    v = (-xx * np.sin(ang) + yy * np.cos(ang)) / (size * rng.choice([1.0, 0.5]))
    u = u + 0.5 * (np.floor(v) % 2) * float(rng.random() < 0.5)  # brick bond
    cell = (np.floor(u) * 7919 + np.floor(v) * 104729).astype(np.int64)
    shade = ((cell * 2654435761) % 1000).astype(np.float32) / 1000.0
    grout = (np.minimum(u % 1, v % 1) < rng.uniform(0.02, 0.06)).astype(np.float32)
    t = np.clip(0.7 + 0.3 * shade - grout * 0.8, 0, 1)
    return _up(_lerp(base * 0.25, base, t.astype(np.float32)), h, w)


def blur(h: int, w: int, rng: np.random.Generator) -> ImageRGB:
    """An out-of-focus room behind a card held up to the camera: large soft colour regions."""
    hh, ww = h // 8, w // 8
    img = np.zeros((hh, ww, 3), np.float32)
    for c in range(3):
        img[..., c] = value_noise(hh, ww, int(rng.integers(2, 6)), rng) * rng.uniform(60, 255)
    for _ in range(int(rng.integers(0, 6))):  # bright windows and lamps
        x0, y0 = int(rng.uniform(0, ww)), int(rng.uniform(0, hh))
        x1, y1 = x0 + int(rng.uniform(2, ww / 3)), y0 + int(rng.uniform(2, hh / 3))
        cv2.rectangle(img, (x0, y0), (x1, y1), _colour(rng, 150, 255), -1)
    img = cv2.GaussianBlur(img, (0, 0), rng.uniform(1.0, 3.0))
    return _up(u8(np.clip(img, 0, 255)), h, w)


def stripes(h: int, w: int, rng: np.random.Generator) -> ImageRGB:
    """A striped fabric or a slatted table: parallel bands of two to four colours at any angle."""
    hh, ww = h // 2, w // 2
    yy, xx = np.mgrid[0:hh, 0:ww].astype(np.float32)
    ang = rng.uniform(0, np.pi)
    pos = (xx * np.cos(ang) + yy * np.sin(ang)) / rng.uniform(4, 40)
    n = int(rng.integers(2, 5))
    palette = np.asarray([_colour(rng, 20, 240) for _ in range(n)], np.float32)
    img = palette[(np.floor(pos).astype(np.int64) % n)]
    return _up(u8(img), h, w)


def marble(h: int, w: int, rng: np.random.Generator) -> ImageRGB:
    """Held-out: light stone with dark veins."""
    hh, ww = h // 2, w // 2
    n = value_noise(hh, ww, 4, rng) * 10 + value_noise(hh, ww, 12, rng) * 3
    xx = np.arange(ww, dtype=np.float32)[None, :] / ww * rng.uniform(3, 8)
    vein = np.abs(np.sin(xx + n)) ** 0.12  # thin dark veins where the sine crosses zero
    base = rng.uniform(200, 245, 3)
    return _up(_lerp(base * rng.uniform(0.3, 0.6), base, vein.astype(np.float32)), h, w)


def granite(h: int, w: int, rng: np.random.Generator) -> ImageRGB:
    """Held-out: speckled dark or light stone (a kitchen counter)."""
    hh, ww = h // 2, w // 2
    base = rng.uniform(40, 200)
    speck = rng.integers(0, 120, (hh, ww), dtype=np.uint8)
    img = u8(np.minimum(speck.astype(np.int16) + int(max(0.0, base - 60)), 255))
    tint = rng.uniform(0.85, 1.1, 3)
    img3 = u8(cv2.merge([cv2.convertScaleAbs(img, alpha=float(t)) for t in tint]))
    return _up(img3, h, w)


def gingham(h: int, w: int, rng: np.random.Generator) -> ImageRGB:
    """Held-out: a checked tablecloth."""
    period = int(rng.uniform(10, 30))
    col = rng.uniform(60, 220, 3).astype(np.float32)
    xx = (np.arange(w // 2) // period) % 2
    yy = (np.arange(h // 2) // period) % 2
    t = ((xx[None, :] + yy[:, None]) / 2.0).astype(np.float32)
    return _up(_lerp((245, 245, 245), col, t), h, w)


FAMILIES: dict[str, Callable[[int, int, np.random.Generator], ImageRGB]] = {
    "wood": wood,
    "cloth": cloth,
    "playmat": playmat,
    "desk": desk,
    "carpet": carpet,
    "collage": collage,
    "paper": paper,
    "tiles": tiles,
    "blur": blur,
    "stripes": stripes,
    "marble": marble,
    "granite": granite,
    "gingham": gingham,
}


def list_images(folder: Path | None, families: Sequence[str] | None = None) -> list[Path]:
    """Image files in `folder` (sorted, for determinism), or [] without one.

    With `families`, only the images of those sub-folders (folder/<family>/..., as
    `cardedge-train synth backgrounds` writes them); images directly in `folder` always count.
    """
    if folder is None:
        return []
    return list(_listing(Path(folder), tuple(families) if families is not None else None))


@functools.lru_cache(maxsize=16)
def _listing(folder: Path, families: tuple[str, ...] | None) -> tuple[Path, ...]:
    exts = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in exts)
    if families is not None:
        paths = [p for p in paths if p.parent == folder or photo_family(p, folder) in families]
    return tuple(paths)


@functools.lru_cache(maxsize=16)
def _by_family(images: tuple[Path, ...], root: Path | None) -> list[tuple[str, tuple[Path, ...]]]:
    groups: dict[str, list[Path]] = {}
    for p in images:
        groups.setdefault(photo_family(p, root), []).append(p)
    return [(f, tuple(ps)) for f, ps in sorted(groups.items())]


def photo_family(path: Path, folder: Path | None = None) -> str:
    """The family of a background image: its first sub-folder under `folder` (its parent's name
    without one), e.g. "mate" for backgrounds/mate/nature/Wood.jpg."""
    if folder is not None:
        try:
            rel = path.relative_to(folder)
            if len(rel.parts) > 1:
                return rel.parts[0]
        except ValueError:
            pass
    return path.parent.name


def from_image(path: Path, h: int, w: int, rng: np.random.Generator) -> ImageRGB:
    """A random crop of a photograph, scaled to h x w."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise OSError(f"cannot read background image {path}")
    ih, iw = bgr.shape[:2]
    scale = rng.uniform(0.6, 1.0)
    ch, cw = int(min(ih, iw * h / w) * scale), int(min(iw, ih * w / h) * scale)
    y0, x0 = int(rng.integers(0, ih - ch + 1)), int(rng.integers(0, iw - cw + 1))
    crop = bgr[y0 : y0 + ch, x0 : x0 + cw]
    return u8(
        cv2.cvtColor(cv2.resize(crop, (w, h), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
    )


def background(
    h: int,
    w: int,
    rng: np.random.Generator,
    families: Sequence[str],
    images: Sequence[Path] = (),
    image_prob: float = 0.0,
    image_root: Path | None = None,
) -> tuple[ImageRGB, str]:
    """One background and the name of its family ("photo:<family>" for a real image)."""
    if images and rng.random() < image_prob:
        groups = _by_family(tuple(images), image_root)  # each family as likely as another
        family, paths = groups[int(rng.integers(len(groups)))]
        path = paths[int(rng.integers(len(paths)))]
        return from_image(path, h, w, rng), f"photo:{family}"
    family = str(families[int(rng.integers(len(families)))])
    return FAMILIES[family](h, w, rng), family
