"""Real backgrounds: photographs and material textures from Debian packages, one folder per family.

`cardedge-train synth backgrounds --out DIR` gathers what `make backgrounds` installed with apt
into DIR/<family>/*.jpg, each at most 1600 px wide, so the scene compositor reads small files:

- plasma: KDE's wallpaper photographs (plasma-workspace-wallpapers), largest landscape size;
- nexuiz: material textures (metal, stone, wood, floors) from nexuiz-textures' textures.pk3,
  tiled into 1280x720 surfaces at a few repeats, as a table top repeats; bump, normal, gloss and
  glow maps, skies, liquids, lights and effects are left out;
- gnome: GNOME's illustrations (gnome-backgrounds);
- mate: MATE's photographs and abstracts (mate-backgrounds), wood among them.

Training uses TRAIN_PHOTO_FAMILIES; HELD_OUT_PHOTO_FAMILIES ("mate") only appear behind held-out
test scenes. scikit-image's sample photographs are reserved for independent acceptance tests and
are never gathered here.
"""

from __future__ import annotations

import logging
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

logger = logging.getLogger(__name__)

TRAIN_PHOTO_FAMILIES = ("plasma", "nexuiz", "gnome")
HELD_OUT_PHOTO_FAMILIES = ("mate",)
APT_PACKAGES = (
    "plasma-workspace-wallpapers",
    "mate-backgrounds",
    "nexuiz-textures",
    "gnome-backgrounds",
)
MAX_WIDTH = 1600
# Where the packages put them, below the system root ("/"; another for a copied tree or a test).
PLASMA_DIR = Path("usr/share/wallpapers")
MATE_DIR = Path("usr/share/backgrounds/mate")
GNOME_DIR = Path("usr/share/backgrounds/gnome")
NEXUIZ_PK3 = Path("usr/share/games/nexuiz/data/textures.pk3")
_NOT_SURFACE = re.compile(
    r"(_norm|_bump|_gloss|_glow|_reflect|_spec|_shirt|_pants|nolight|light|sky|skies|liquid|"
    r"water|effect|portal|flag|sfx|_fx|/fx|lava|slime|logo|sign|font|decal|blood|crosshair)",
    re.IGNORECASE,
)
_IMAGE = re.compile(r"\.(jpe?g|png|webp|tga)$", re.IGNORECASE)


def _limit(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    if w <= MAX_WIDTH:
        return img
    return cv2.resize(img, (MAX_WIDTH, round(h * MAX_WIDTH / w)), interpolation=cv2.INTER_AREA)


def _decode(data: bytes) -> np.ndarray | None:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return None if img is None or min(img.shape[:2]) < 64 else img


def _plasma(root: Path) -> Iterator[tuple[str, bytes]]:
    """The landscape image nearest 1920 px wide of each wallpaper (not its screenshot)."""
    for wall in sorted((root / PLASMA_DIR).glob("*/contents/images")):
        sizes = []
        for p in wall.iterdir():
            m = re.match(r"(\d+)x(\d+)", p.stem)
            if m and int(m[1]) > int(m[2]) and _IMAGE.search(p.name):
                sizes.append((int(m[1]), p))
        if sizes:
            path = min(sizes, key=lambda s: abs(s[0] - 1920))[1]  # near 1920: decodes fast
            yield wall.parent.parent.name, path.read_bytes()


def _folder(root: Path) -> Iterator[tuple[str, bytes]]:
    """Every image under `root`, the largest variant of a name only (Elephants_3840x2160)."""
    seen: set[str] = set()
    for p in sorted(root.rglob("*"), key=lambda q: -q.stat().st_size if q.is_file() else 0):
        if not p.is_file() or not _IMAGE.search(p.name) or "transparent" in p.name.lower():
            continue
        base = re.sub(r"[_-]\d+x\d+$", "", p.stem)
        if base not in seen:
            seen.add(base)
            yield base, p.read_bytes()


def _tiled(tex: np.ndarray, rng: np.random.Generator, w: int = 1280, h: int = 720) -> np.ndarray:
    """A texture repeated over a w x h surface, each tile 180-420 px wide."""
    side = int(rng.uniform(180, 420))
    th, tw = tex.shape[:2]
    tile = cv2.resize(tex, (side, max(1, round(th * side / tw))), interpolation=cv2.INTER_AREA)
    reps = (h // tile.shape[0] + 1, w // tile.shape[1] + 1, 1)
    return np.ascontiguousarray(np.tile(tile, reps)[:h, :w])


def _nexuiz(pk3: Path, limit: int, seed: int) -> Iterator[tuple[str, np.ndarray]]:
    """Surface-like textures of textures.pk3 (a zip), tiled; `limit` of them, seeded."""
    with zipfile.ZipFile(pk3) as z:
        names = [n for n in z.namelist() if _IMAGE.search(n) and not _NOT_SURFACE.search(n)]
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(names))
        kept = 0
        for i in order:
            if kept >= limit:
                return
            img = _decode(z.read(names[int(i)]))
            if img is None or float(img.std()) < 6.0:  # flat fills teach nothing
                continue
            kept += 1
            stem = Path(names[int(i)]).with_suffix("").as_posix().replace("/", "_")
            yield stem.removeprefix("textures_"), _tiled(img, rng)


def gather(
    out: Path, nexuiz_limit: int = 1200, seed: int = 0, root: Path = Path("/")
) -> dict[str, int]:
    """Write out/<family>/*.jpg from the installed packages; returns images per family.

    A family whose package is missing is skipped with a warning (install with `make backgrounds`).
    """
    counts: dict[str, int] = {}
    sources = {
        "plasma": (root / PLASMA_DIR, lambda: _plasma(root)),
        "mate": (root / MATE_DIR, lambda: _folder(root / MATE_DIR)),
        "gnome": (root / GNOME_DIR, lambda: _folder(root / GNOME_DIR)),
    }
    for family, (where, items) in sources.items():
        if not where.is_dir():
            logger.warning("%s: %s is missing (make backgrounds installs it)", family, where)
            continue
        folder = out / family
        folder.mkdir(parents=True, exist_ok=True)
        n = 0
        for name, data in items():
            img = _decode(data)
            if img is not None:
                cv2.imwrite(
                    str(folder / f"{name}.jpg"), _limit(img), [cv2.IMWRITE_JPEG_QUALITY, 90]
                )
                n += 1
        counts[family] = n
    pk3 = root / NEXUIZ_PK3
    if pk3.is_file():
        folder = out / "nexuiz"
        folder.mkdir(parents=True, exist_ok=True)
        n = 0
        for name, img in _nexuiz(pk3, nexuiz_limit, seed):
            cv2.imwrite(str(folder / f"{name}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 88])
            n += 1
        counts["nexuiz"] = n
    else:
        logger.warning("nexuiz: %s is missing (make backgrounds installs it)", pk3)
    return counts
