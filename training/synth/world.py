"""A whole synthetic world in one call: catalogue, unknown split and every dataset.

`build_world` is what `cardedge-train synth datasets` runs; `tiny_world` builds a small one in
seconds for other engineers' tests.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

from edge.types import ImageRGB
from training.synth.card_back import TEST_BACK_DESIGNS, TRAIN_BACK_DESIGNS, backs
from training.synth.card_render import render_card
from training.synth.catalogue import (
    CardRecord,
    load_catalogue,
    procedural_catalogue,
    write_catalogue_dir,
)
from training.synth.scene import DETECTOR_SCENES, TABLE_TEST_SCENES, TRAIN_SCENES
from training.synth.writers import write_calib, write_cls, write_obb, write_test_scenes

logger = logging.getLogger(__name__)

SCENE_CARD_HEIGHT = 512  # flat card images are rendered at this height before compositing


@dataclass(frozen=True, slots=True)
class WorldSpec:
    """Sizes of everything `build_world` writes."""

    n_cards: int = 200
    n_unknown: int = 40
    obb_train: int = 2000
    obb_val: int = 200
    cls_train: int = 8  # crops per card
    cls_val: int = 2
    test_scenes: int = 200
    calib: int = 64
    seed: int = 0
    catalogue_dir: Path | None = None  # real scans instead of a procedural catalogue
    art_dir: Path | None = None
    background_dir: Path | None = None  # photo families: training ones behind training scenes
    back_images: tuple[Path, ...] = ()  # real card backs, beside the procedural designs
    shard: tuple[int, int] = (0, 1)


@dataclass(frozen=True, slots=True)
class TinyWorld:
    """Paths of a built world (the tiny one and the full one share the layout)."""

    root: Path
    catalogue: Path
    unknown: Path
    obb: Path
    cls: Path
    test_scenes: Path
    calib: Path
    records: tuple[CardRecord, ...] = field(default=())
    unknown_records: tuple[CardRecord, ...] = field(default=())


def _images(records: list[CardRecord], art_dir: Path | None) -> dict[str, ImageRGB]:
    return {r.card_id: render_card(r, SCENE_CARD_HEIGHT, art_dir) for r in records}


def build_world(root: Path, spec: WorldSpec) -> TinyWorld:
    """Write catalogue/, unknown/, obb/, cls/, test_scenes/, calib/ under `root`.

    Every shard writes the (identical) catalogue folders and its own share of the items.
    """
    root = Path(root)
    known = (
        load_catalogue(spec.catalogue_dir)
        if spec.catalogue_dir is not None
        else procedural_catalogue(spec.n_cards, spec.seed)
    )
    unknown = procedural_catalogue(spec.n_unknown, spec.seed + 1_000_003, id_prefix="u")
    images = _images(known, spec.art_dir) | _images(unknown, spec.art_dir)
    known_images = {r.card_id: images[r.card_id] for r in known}
    w = TinyWorld(
        root=root,
        catalogue=root / "catalogue",
        unknown=root / "unknown",
        obb=root / "obb",
        cls=root / "cls",
        test_scenes=root / "test_scenes",
        calib=root / "calib",
        records=tuple(known),
        unknown_records=tuple(unknown),
    )
    if spec.catalogue_dir is None:
        write_catalogue_dir(w.catalogue, known, images)
    else:
        write_catalogue_dir(w.catalogue, known, {r.card_id: render_card(r, 880) for r in known})
    write_catalogue_dir(w.unknown, unknown, images)
    train_cfg = replace(TRAIN_SCENES, background_dir=spec.background_dir)
    detector_cfg = replace(DETECTOR_SCENES, background_dir=spec.background_dir)
    write_obb(
        w.obb, known_images, spec.obb_train, spec.obb_val, spec.seed, detector_cfg, spec.shard,
        backs=backs(TRAIN_BACK_DESIGNS, spec.back_images, SCENE_CARD_HEIGHT),
    )  # fmt: skip
    write_cls(
        w.cls,
        known,
        known_images,
        {"train": spec.cls_train, "val": spec.cls_val},
        spec.seed,
        spec.shard,
    )
    write_test_scenes(
        w.test_scenes,
        known,
        unknown,
        images,
        spec.test_scenes,
        spec.seed,
        replace(TABLE_TEST_SCENES, background_dir=spec.background_dir),
        shard=spec.shard,
        backs=backs(TEST_BACK_DESIGNS, (), SCENE_CARD_HEIGHT),
    )
    w.calib.mkdir(parents=True, exist_ok=True)
    write_calib(w.calib, known_images, spec.calib, spec.seed, train_cfg, spec.shard)
    logger.info("synthetic world written to %s (shard %d/%d)", root, *spec.shard)
    return w


def tiny_world(root: Path, n_cards: int = 12, n_scenes: int = 8, seed: int = 0) -> TinyWorld:
    """A complete small world (a few seconds on one core) for tests of other stages."""
    spec = WorldSpec(
        n_cards=n_cards,
        n_unknown=max(2, n_cards // 4),
        obb_train=n_scenes,
        obb_val=max(2, n_scenes // 4),
        cls_train=3,
        cls_val=1,
        test_scenes=n_scenes,
        calib=4,
        seed=seed,
    )
    return build_world(root, spec)
