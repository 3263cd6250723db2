"""Reference index: embed every catalogue scan in both views, write the index and the catalogue,
and calibrate the unknown-card thresholds.

Each scan is indexed as view "upright" and view "rot180" (edge.recognize.rectify.rotate180), so the device
embeds each crop once whatever way up the card lies. The on-disk formats are edge.recognize.index's own
writers. Thresholds (score and margin) are chosen on held-out known crops and crops of cards that
are NOT in the catalogue, as the pair that accepts the most correctly identified known crops while
accepting at most `target_far` of the unknown ones.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edge.bundles.manifest import InputSpec
from edge.recognize.embed import l2_normalize, preprocess
from edge.recognize.index import CardInfo, build_index, save_index, write_catalogue
from edge.types import ImageRGB
from training.data import (
    augment,
    catalogue_views,
    list_crops,
    read_catalogue,
    read_rgb,
)
from training.distill import load_student

logger = logging.getLogger(__name__)

Embed = Callable[[Sequence[ImageRGB]], np.ndarray]  # crops -> N x D L2-normalised


@dataclass(frozen=True)
class Calibration:
    """Chosen thresholds and how they behave on the calibration crops."""

    unknown_score: float
    unknown_margin: float
    target_far: float
    false_accept_rate: float  # unknown crops accepted as a known card
    known_accept_rate: float  # known crops accepted and correctly identified
    known_flagged_rate: float  # known crops rejected as unknown
    known_top1: float  # identification top-1 of known crops before any threshold
    n_known: int
    n_unknown: int


def torch_embedder(checkpoint: Path, batch: int = 64) -> tuple[Embed, InputSpec]:
    """Embed with a student checkpoint (eval mode), inputs through edge.recognize.embed.preprocess."""
    model, spec = load_student(checkpoint)

    @torch.no_grad()
    def embed(images: Sequence[ImageRGB]) -> np.ndarray:
        out = [
            model(torch.from_numpy(preprocess(np.stack(images[i : i + batch]), spec))).numpy()
            for i in range(0, len(images), batch)
        ]
        return l2_normalize(np.concatenate(out))

    return embed, spec


def top2(
    queries: np.ndarray, refs: np.ndarray, ref_ids: Sequence[str]
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Per query: best card id, its score, and the margin to the best different card."""
    cards = sorted(set(ref_ids))
    col = _columns(ref_ids, cards)
    sims = queries @ refs.T
    per_card = np.full((len(queries), len(cards)), -1.0, dtype=np.float32)
    for j in range(len(cards)):
        per_card[:, j] = sims[:, col == j].max(axis=1)
    order = np.argsort(-per_card, axis=1)
    best = per_card[np.arange(len(queries)), order[:, 0]]
    second = (
        per_card[np.arange(len(queries)), order[:, 1]] if len(cards) > 1 else np.zeros_like(best)
    )
    return [cards[i] for i in order[:, 0]], best, best - second


def _columns(ref_ids: Sequence[str], cards: Sequence[str]) -> np.ndarray:
    pos = {c: i for i, c in enumerate(cards)}
    return np.array([pos[c] for c in ref_ids])


def calibrate(
    known: tuple[np.ndarray, np.ndarray, np.ndarray],
    unknown: tuple[np.ndarray, np.ndarray],
    target_far: float,
) -> Calibration:
    """Grid-search (score, margin) maximising correct known accepts with unknown accepts <= target.

    known = (scores, margins, correct), unknown = (scores, margins), all 1-D arrays.
    """
    ks, km, kc = known
    us, um = unknown
    score_grid = np.unique(np.concatenate([np.quantile(us, np.linspace(0, 1, 101)), [-1.0]]))
    margin_grid = np.unique(np.concatenate([np.quantile(um, np.linspace(0, 1, 101)), [0.0]]))
    best: tuple[float, float, float, float] | None = None  # (accept, -far, ts, tm)
    for ts in score_grid:
        u_pass_s = us >= ts
        k_pass_s = ks >= ts
        for tm in margin_grid:
            far = float((u_pass_s & (um >= tm)).mean()) if len(us) else 0.0
            if far > target_far:
                continue
            acc = float((k_pass_s & (km >= tm) & kc).mean())
            cand = (acc, -far, float(ts), float(tm))
            if best is None or cand > best:
                best = cand
    if best is None:  # unreachable: the top quantile pair accepts no unknown crop
        best = (0.0, 0.0, 1.0, 1.0)
    acc, neg_far, ts, tm = best
    flagged = float(((ks < ts) | (km < tm)).mean())
    return Calibration(
        unknown_score=round(ts, 5),
        unknown_margin=round(tm, 5),
        target_far=target_far,
        false_accept_rate=-neg_far,
        known_accept_rate=acc,
        known_flagged_rate=flagged,
        known_top1=float(kc.mean()) if len(kc) else 0.0,
        n_known=len(ks),
        n_unknown=len(us),
    )


def scene_card_ids(scene_dir: Path | None) -> set[str]:
    """Card ids that appear in held-out test scenes (kept out of calibration)."""
    ids: set[str] = set()
    if scene_dir is None or not scene_dir.is_dir():
        return ids
    for meta in scene_dir.glob("*.json"):
        ids.update(c["card_id"] for c in json.loads(meta.read_text("utf-8")).get("cards", []))
    return ids


def unknown_crops(
    folder: Path, size: tuple[int, int], exclude: set[str], per_card: int, seed: int
) -> list[ImageRGB]:
    """Augmented views of unknown-card scans (cards outside the catalogue), minus `exclude`."""
    cards = [c for c in read_catalogue(folder) if c.card_id not in exclude]
    if not cards:
        logger.warning("every unknown card also appears in the test scenes; using them anyway")
        cards = read_catalogue(folder)
    rng = np.random.default_rng(seed)
    crops = []
    for card in cards:
        scan = read_rgb(card.image, size)
        crops.extend(augment(scan, rng, 1.0) for _ in range(per_card))
    return crops


def build(
    embed: Embed,
    spec: InputSpec,
    catalogue_dir: Path,
    out: Path,
    *,
    dtype: str = "f16",
) -> tuple[np.ndarray, list[str]]:
    """Embed both views of every scan; write index.usearch, catalogue.sqlite, embeddings.npy."""
    cards = read_catalogue(catalogue_dir)
    images, ids, views = catalogue_views(cards, (spec.height, spec.width))
    vectors = embed(images)
    out.mkdir(parents=True, exist_ok=True)
    infos = [
        CardInfo(
            card_id=c.card_id,
            name=c.fields.get("name", c.card_id),
            set_id=c.fields.get("set_id", ""),
            set_name=c.fields.get("set_name", ""),
            number=c.fields.get("number", ""),
            rarity=c.fields.get("rarity", ""),
            image_ref=f"images/{c.card_id}.jpg",
        )
        for c in cards
    ]
    write_catalogue(out / "catalogue.sqlite", infos, list(zip(ids, views, strict=True)))
    save_index(build_index(vectors, dtype), out / "index.usearch")
    np.save(out / "embeddings.npy", vectors.astype(np.float16 if dtype == "f16" else np.float32))
    logger.info("index: %d cards, %d vectors of dim %d", len(cards), len(vectors), vectors.shape[1])
    return vectors, ids


def calibrate_on_data(
    embed: Embed,
    spec: InputSpec,
    refs: np.ndarray,
    ref_ids: Sequence[str],
    data: Path,
    *,
    target_far: float = 0.02,
    max_known: int = 3000,
    unknown_per_card: int = 4,
    seed: int = 0,
) -> Calibration:
    """Thresholds from cls/val known crops and augmented unknown/ scans not used by test scenes."""
    size = (spec.height, spec.width)
    samples = list_crops(data / "cls" / "val")
    samples = samples[:: max(1, -(-len(samples) // max_known))]
    k_imgs = [read_rgb(p, size) for p, _ in samples]
    k_ids, k_s, k_m = top2(embed(k_imgs), refs, ref_ids)
    correct = np.array([a == b for a, (_, b) in zip(k_ids, samples, strict=True)])
    exclude = scene_card_ids(data / "test_scenes")
    u_imgs = unknown_crops(data / "unknown", size, exclude, unknown_per_card, seed)
    _, u_s, u_m = top2(embed(u_imgs), refs, ref_ids)
    cal = calibrate((k_s, k_m, correct), (u_s, u_m), target_far)
    logger.info("calibration: %s", cal)
    return cal


def run(
    checkpoint: Path, data: Path, out: Path, *, target_far: float = 0.02, dtype: str = "f16"
) -> Calibration:
    """The `index` command: build the reference index and calibrate thresholds into out/."""
    embed, spec = torch_embedder(checkpoint)
    refs, ref_ids = build(embed, spec, data / "catalogue", out, dtype=dtype)
    cal = calibrate_on_data(
        embed, spec, refs.astype(np.float32), ref_ids, data, target_far=target_far
    )
    (out / "calibration.json").write_text(json.dumps(asdict(cal), indent=2) + "\n", "utf-8")
    return cal


def read_calibration(out: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((out / "calibration.json").read_text("utf-8"))
    return data


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", type=Path, required=True, help="student best.pt")
    p.add_argument(
        "--data", type=Path, required=True, help="synth output (catalogue/, cls/, unknown/)"
    )
    p.add_argument("--out", type=Path, default=Path("runs/index"), help="output folder")
    p.add_argument("--target-far", type=float, default=0.02, help="unknowns accepted at most")
    p.add_argument(
        "--dtype", choices=("f16", "f32", "i8"), default="f16", help="stored vector type"
    )


def main(args: argparse.Namespace) -> int:
    cal = run(args.checkpoint, args.data, args.out, target_far=args.target_far, dtype=args.dtype)
    print(json.dumps(asdict(cal), indent=2))
    return 0
