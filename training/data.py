"""Datasets for the embedders: labelled card crops, catalogue scans, augmentation and batching.

Every model input is made by `edge.recognize.embed.preprocess` (the one preprocessing implementation the
device runs): datasets yield raw uint8 RGB crops and the collate function calls `preprocess` once
per input spec, so the student, the teacher (with its own spec) and the runtime agree by
construction. Augmentations work on uint8 pixels before that step and are deterministic per
(image, variant) so a teacher-embedding cache stays valid.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from edge.bundles.manifest import InputSpec
from edge.recognize.embed import preprocess
from edge.recognize.rectify import rotate180
from edge.types import ImageRGB

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")

# Demo/production embedder input: portrait 63:88 crops, ImageNet mean/std in 0-255 units.
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


def embedder_spec(height: int = 224, width: int = 160) -> InputSpec:
    """The input spec of an embedder fed rectified crops (NCHW float32, RGB, ImageNet norm)."""
    return InputSpec(
        height=height, width=width, mean=IMAGENET_MEAN, std=IMAGENET_STD, resize="warp"
    )


def read_rgb(path: Path, size: tuple[int, int] | None = None) -> ImageRGB:
    """Read an image file as uint8 RGB, resized to (height, width) with area averaging if given."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(f"cannot read image {path}")
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    if size is not None and rgb.shape[:2] != size:
        rgb = cv2.resize(rgb, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(rgb)


@dataclass(frozen=True)
class CatalogueCard:
    """One row of a catalogue folder's cards.csv plus the path of its scan."""

    card_id: str
    fields: dict[str, str]
    image: Path


def read_catalogue(root: Path) -> list[CatalogueCard]:
    """A catalogue folder (cards.csv + images/<card_id>.jpg) in file order."""
    with (root / "cards.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    cards = []
    for row in rows:
        image = root / "images" / f"{row['card_id']}.jpg"
        cards.append(CatalogueCard(card_id=row["card_id"], fields=dict(row), image=image))
    return cards


def list_crops(root: Path) -> list[tuple[Path, str]]:
    """(image path, card_id) for every file under root/<card_id>/, sorted for determinism."""
    samples = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for img in sorted(class_dir.iterdir()):
            if img.suffix.lower() in IMAGE_SUFFIXES:
                samples.append((img, class_dir.name))
    return samples


def augment(image: ImageRGB, rng: np.random.Generator, strength: float = 1.0) -> ImageRGB:
    """Photometric and small geometric jitter of a crop, like a rectified camera view."""
    h, w = image.shape[:2]
    out = image
    if strength <= 0:
        return out
    jitter = 0.04 * strength * np.array([w, h], dtype=np.float32)
    src = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], dtype=np.float32)
    dst = src + rng.uniform(-1, 1, size=(4, 2)).astype(np.float32) * jitter
    m = cv2.getPerspectiveTransform(src, dst)
    out = cv2.warpPerspective(out, m, (w, h), borderMode=cv2.BORDER_REPLICATE)
    f = out.astype(np.float32)
    gain = 1.0 + rng.uniform(-0.3, 0.3) * strength
    bias = rng.uniform(-25, 25) * strength
    tint = 1.0 + rng.uniform(-0.08, 0.08, size=3) * strength
    f = f * gain * tint + bias
    if rng.random() < 0.4 * strength:
        f = _add_glare(f, rng)
    if rng.random() < 0.4 * strength:
        k = int(rng.choice([3, 5]))
        f = cv2.GaussianBlur(f, (k, k), 0)
    f = f + rng.normal(0.0, 3.0 * strength, size=f.shape)
    return np.clip(f, 0, 255).astype(np.uint8)


def _add_glare(f: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A soft bright ellipse, like light reflected off a glossy card or sleeve."""
    h, w = f.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    sx, sy = rng.uniform(0.1, 0.4) * w, rng.uniform(0.1, 0.4) * h
    blob = np.exp(-(((xx - cx) / sx) ** 2 + ((yy - cy) / sy) ** 2))
    return f + (rng.uniform(60, 160) * blob)[..., None]


class CropDataset(Dataset[tuple[ImageRGB, int, int]]):
    """Labelled card crops at the embedder's size; item = (uint8 crop, class index, sample index).

    `set_epoch` picks the augmentation variant: with `variants` V, epoch e uses variant e % V, and
    the jitter of (sample, variant) is always the same, so teacher outputs can be cached.
    """

    def __init__(
        self,
        samples: Sequence[tuple[Path, str]],
        classes: Sequence[str],
        size: tuple[int, int],
        *,
        augment_strength: float = 0.0,
        variants: int = 4,
        seed: int = 0,
    ) -> None:
        self.samples = list(samples)
        self.classes = list(classes)
        self.class_index = {c: i for i, c in enumerate(self.classes)}
        self.size = size
        self.augment_strength = augment_strength
        self.variants = max(1, variants)
        self.seed = seed
        self.variant = 0

    def set_epoch(self, epoch: int) -> None:
        self.variant = epoch % self.variants

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[ImageRGB, int, int]:
        path, card_id = self.samples[i]
        image = read_rgb(path, self.size)
        if self.augment_strength > 0:
            rng = np.random.default_rng([self.seed, i, self.variant])
            image = augment(image, rng, self.augment_strength)
        return image, self.class_index[card_id], i


def crop_dataset(
    root: Path, size: tuple[int, int], *, classes: Sequence[str] | None = None, **kw: Any
) -> CropDataset:
    """A CropDataset over root/<card_id>/*.jpg; classes default to the folders found."""
    samples = list_crops(root)
    names = list(classes) if classes is not None else sorted({c for _, c in samples})
    known = set(names)
    kept = [(p, c) for p, c in samples if c in known]
    if len(kept) < len(samples):
        logger.warning(
            "%d crops of classes outside the class list skipped", len(samples) - len(kept)
        )
    return CropDataset(kept, names, size, **kw)


Batch = tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]


def make_collate(specs: Sequence[InputSpec]) -> Callable[[list[tuple[ImageRGB, int, int]]], Batch]:
    """Collate uint8 crops into one model input per spec, each made by edge.recognize.embed.preprocess."""

    def collate(items: list[tuple[ImageRGB, int, int]]) -> Batch:
        images = np.stack([it[0] for it in items])
        inputs = [torch.from_numpy(preprocess(images, spec)) for spec in specs]
        labels = torch.tensor([it[1] for it in items], dtype=torch.long)
        indices = torch.tensor([it[2] for it in items], dtype=torch.long)
        return inputs, labels, indices

    return collate


def catalogue_views(
    cards: Sequence[CatalogueCard], size: tuple[int, int]
) -> tuple[list[ImageRGB], list[str], list[str]]:
    """Both views (upright, rot180) of every catalogue scan: images, card ids, view names."""
    images: list[ImageRGB] = []
    ids: list[str] = []
    views: list[str] = []
    for card in cards:
        upright = read_rgb(card.image, size)
        for view, img in (("upright", upright), ("rot180", rotate180(upright))):
            images.append(img)
            ids.append(card.card_id)
            views.append(view)
    return images, ids, views


@torch.no_grad()
def embed_images(
    model: torch.nn.Module, images: Sequence[ImageRGB], spec: InputSpec, batch_size: int = 64
) -> np.ndarray:
    """L2-normalised embeddings of uint8 crops, through edge.recognize.embed.preprocess, in eval mode."""
    was_training = model.training
    model.eval()
    chunks = []
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(preprocess(np.stack(images[start : start + batch_size]), spec))
        chunks.append(torch.nn.functional.normalize(model(x), dim=1).numpy())
    model.train(was_training)
    return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros((0, 0), np.float32)


def retrieval_topk(
    queries: np.ndarray,
    query_ids: Sequence[str],
    gallery: np.ndarray,
    gallery_ids: Sequence[str],
    ks: Sequence[int] = (1, 5),
) -> dict[str, float]:
    """Nearest-neighbour top-k accuracy by card id (gallery views of one card collapse to it)."""
    sims = queries @ gallery.T
    uniq = sorted(set(gallery_ids))
    col = {c: i for i, c in enumerate(uniq)}
    per_card = np.full((len(queries), len(uniq)), -np.inf, dtype=np.float32)
    for j, cid in enumerate(gallery_ids):
        per_card[:, col[cid]] = np.maximum(per_card[:, col[cid]], sims[:, j])
    order = np.argsort(-per_card, axis=1)
    truth = np.array([col.get(q, -1) for q in query_ids])
    out = {}
    for k in ks:
        hits = (order[:, :k] == truth[:, None]).any(axis=1)
        out[f"top{k}"] = float(hits.mean()) if len(hits) else 0.0
    return out


def retrieval_eval(
    model: torch.nn.Module, data: Path, spec: InputSpec, max_val: int = 2000
) -> dict[str, float]:
    """NN top-1/top-5 of held-out crops (cls/val) against both views of every catalogue scan."""
    size = (spec.height, spec.width)
    g_imgs, g_ids, _ = catalogue_views(read_catalogue(data / "catalogue"), size)
    val = crop_dataset(data / "cls" / "val", size)
    step = max(1, -(-len(val) // max(max_val, 1)))
    picks = list(range(0, len(val), step))
    q_imgs = [val[i][0] for i in picks]
    q_ids = [val.samples[i][1] for i in picks]
    gallery = embed_images(model, g_imgs, spec)
    queries = embed_images(model, q_imgs, spec)
    return retrieval_topk(queries, q_ids, gallery, g_ids)
