"""Scene files on disk: `<scene_id>.jpg` + `<scene_id>.json` ground truth, and deterministic
per-item seeding shared by every writer so any shard reproduces exactly the same items."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge.types import Corners, ImageRGB
from training.synth.art import stable_seed
from training.synth.scene import Scene

logger = logging.getLogger(__name__)


def item_rng(seed: int, stream: str, index: int) -> np.random.Generator:
    """The generator for item `index` of `stream`: independent of shards and of other items."""
    return np.random.default_rng([seed, stable_seed(stream), index])


def parse_shard(text: str) -> tuple[int, int]:
    """ "i/n" -> (i, n) with 0 <= i < n."""
    try:
        i_s, n_s = text.split("/")
        i, n = int(i_s), int(n_s)
    except ValueError as exc:
        raise ValueError(f"shard must look like i/n, got {text!r}") from exc
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"shard {text!r}: need 0 <= i < n")
    return i, n


def shard_indices(total: int, shard: tuple[int, int]) -> range:
    """The item indices that shard (i, n) writes: i, i+n, i+2n, ..."""
    return range(shard[0], total, shard[1])


def encode_jpeg(img: ImageRGB, quality: int = 92) -> bytes:
    ok, buf = cv2.imencode(
        ".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    if not ok:
        raise OSError("JPEG encode failed")
    return bytes(buf.tobytes())


def write_jpeg(path: Path, img: ImageRGB, quality: int = 92) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_jpeg(img, quality))


def read_rgb(path: Path) -> ImageRGB:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise OSError(f"cannot read image {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


@dataclass(frozen=True, slots=True)
class TruthCard:
    """Ground truth of one card in a held-out scene."""

    card_id: str
    corners: Corners  # 4 x 2 float32 px, clockwise from the card's top-left
    visible_fraction: float
    tilt_deg: float
    size_frac: float
    glare: float
    rotation_deg: float
    known: bool  # False: the card is not in the catalogue (must be rejected as unknown)
    reprint_group: str | None  # art shared with other catalogue cards
    face_down: bool = False  # a card back: must be detected, never named or called unknown


@dataclass(frozen=True, slots=True)
class TestScene:
    scene_id: str
    image_path: Path
    width: int
    height: int
    cards: tuple[TruthCard, ...]
    background: str = ""  # the background family ("photo:<family>" for a real image)

    def image(self) -> ImageRGB:
        return read_rgb(self.image_path)


def write_scene(
    folder: Path,
    scene_id: str,
    scene: Scene,
    known: Mapping[str, bool],
    reprint_group: Mapping[str, str],
    quality: int = 92,
) -> None:
    """Write `<scene_id>.jpg` and its JSON ground truth."""
    h, w = scene.image.shape[:2]
    doc = {
        "scene_id": scene_id,
        "width": w,
        "height": h,
        "background": scene.background,
        "cards": [
            {
                "card_id": c.card_id,
                "corners": [[round(float(x), 3), round(float(y), 3)] for x, y in c.corners],
                "visible_fraction": round(c.visible_fraction, 4),
                "tilt_deg": round(c.tilt_deg, 2),
                "size_frac": round(c.size_frac, 4),
                "glare": round(c.glare, 4),
                "rotation_deg": round(c.rotation_deg, 2),
                "known": bool(known.get(c.card_id, True)) and not c.face_down,
                "face_down": c.face_down,
                "reprint_group": reprint_group.get(c.card_id) or None,
            }
            for c in scene.cards
        ],
    }
    write_jpeg(folder / f"{scene_id}.jpg", scene.image, quality)
    (folder / f"{scene_id}.json").write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")


def _truth(d: Mapping[str, object]) -> TruthCard:
    rg = d.get("reprint_group")
    return TruthCard(
        card_id=str(d["card_id"]),
        corners=np.asarray(d["corners"], np.float32).reshape(4, 2),
        visible_fraction=float(str(d["visible_fraction"])),
        tilt_deg=float(str(d["tilt_deg"])),
        size_frac=float(str(d["size_frac"])),
        glare=float(str(d["glare"])),
        rotation_deg=float(str(d["rotation_deg"])),
        known=bool(d.get("known", True)),
        reprint_group=str(rg) if rg else None,
        face_down=bool(d.get("face_down", False)),
    )


def load_scene_dir(folder: Path) -> Iterator[TestScene]:
    """Iterate `<scene_id>.json` + `.jpg` pairs of a held-out scene folder in scene-id order."""
    for js in sorted(Path(folder).glob("*.json")):
        doc = json.loads(js.read_text(encoding="utf-8"))
        yield TestScene(
            scene_id=str(doc["scene_id"]),
            image_path=js.with_suffix(".jpg"),
            width=int(doc["width"]),
            height=int(doc["height"]),
            cards=tuple(_truth(c) for c in doc["cards"]),
            background=str(doc.get("background", "")),
        )
