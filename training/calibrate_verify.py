"""Verification thresholds from what the device sees: fresh scenes, known and unknown cards.

Renders scenes with the TRAINING scene config (never the held-out one), runs the bundle's own
Recognizer (detector boxes, shortlist, the verification stage's evidence) and chooses:

- `verify_min_inliers` and `verify_min_photometric`: the pair that verifies the most known cards
  as themselves while at most FALSE_ACCEPT of the boxes pass as an unknown card or as another
  known card (unless its own card also passes: reprints are decided apart), then tightened a
  little for unseen scenes. Unknown cards
  of the catalogue's own style match its template's features; their colours do not agree;
- `background_conf`: the detector confidence below which a box that verifies against nothing is
  background (boxes on no card) rather than an unknown card;
- `probable_score` / `probable_margin`: the embedding alone, for crops too small to verify,
  only where on these scenes it never named a wrong or an unknown card (else never).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.bundle import write_manifest
from edge.config import RuntimeSettings
from edge.pipeline import Recognizer
from edge.types import ImageRGB
from edge.verify_stage import VerifyStage, short_side
from training.evaluate import GtCard, match_boxes
from training.synth.scene import TRAIN_SCENES, render_scene

logger = logging.getLogger(__name__)

INLIER_MARGIN = 1.1  # the chosen inliers, tightened for scenes unlike these
PHOTO_MARGIN = 0.05  # ... and the chosen colour agreement
MIN_INLIERS = 10
FALSE_ACCEPT = 0.003  # unknown or wrong cards passing, of all boxes, before the margins
FALSE_CARDS_PER_SCENE = 0.03  # background boxes allowed through, per scene, on these scenes


@dataclass
class Evidence:
    """One detected box: what it is, its detector confidence and what verification found."""

    kind: str  # "known" | "unknown" | "none" (matches no card)
    conf: float
    results: list[tuple[int, float, bool]]  # per candidate: inliers, photometric, is the card
    small: bool  # too small to verify
    score: float  # the embedding's top-1 score and margin, its top-1 right
    margin: float
    top1_right: bool


@dataclass
class VerifyCalibration:
    verify_min_inliers: int
    verify_min_photometric: float
    background_conf: float
    probable_score: float
    probable_margin: float
    unknown_max_inliers: int
    known_verified_rate: float  # known, verifiable boxes whose right card verifies
    unknown_rejected_rate: float
    background_dropped_rate: float
    unknown_kept_rate: float  # unknown cards that stay reported as unknown cards
    n_scenes: int
    n_known: int
    n_unknown: int
    n_background: int


def collect(
    rec: Recognizer,
    known: dict[str, ImageRGB],
    unknown: dict[str, ImageRGB],
    n_scenes: int,
    seed: int,
) -> list[Evidence]:
    """The evidence of every detected box of `n_scenes` fresh scenes."""
    if rec.verify_stage is None:
        raise RuntimeError("the bundle has no reference features to calibrate")
    # Gather with loose thresholds: every candidate's inliers and colours are recorded.
    loose = rec.manifest.thresholds.model_copy(
        update={"verify_min_inliers": 8, "verify_min_photometric": -1.0}
    )
    stage = VerifyStage(rec.verify_stage.refs, loose)
    rng = np.random.default_rng(seed)
    images = known | unknown
    known_ids, unknown_ids = sorted(known), sorted(unknown)
    out: list[Evidence] = []
    min_px = rec.manifest.thresholds.verify_min_px
    for _ in range(n_scenes):
        n = int(rng.integers(1, 5))
        n_unknown = int(rng.integers(0, n + 1))
        ids = list(rng.choice(known_ids, n - n_unknown, replace=False)) + list(
            rng.choice(unknown_ids, n_unknown, replace=False)
        )
        scene = render_scene(images, rng, TRAIN_SCENES, card_ids=[str(i) for i in ids])
        gt = [
            GtCard(c.card_id, np.asarray(c.corners, np.float32), c.card_id in known, False, 0, 0, 0)
            for c in scene.cards
        ]
        boxes = rec.detect(scene.image)
        owner = {bi: gi for gi, bi in match_boxes(gt, boxes).items()}
        cards, shortlists, _ = rec.shortlist(scene.image, boxes)
        gray = cv2.cvtColor(scene.image, cv2.COLOR_RGB2GRAY)
        for bi, (card, shortlist) in enumerate(zip(cards, shortlists, strict=True)):
            gi = owner.get(bi)
            truth = gt[gi] if gi is not None else None
            evidence, _ = stage.gather(scene.image, gray, card.box, shortlist)
            kind = "none" if truth is None else "known" if truth.known else "unknown"
            out.append(
                Evidence(
                    kind=kind, conf=card.box.conf,
                    results=[
                        (v.inliers, v.photometric, bool(truth and v.card_id == truth.card_id))
                        for v in evidence.results
                    ],
                    small=short_side(card.box.corners) < min_px,
                    score=card.match.score, margin=card.match.margin,
                    top1_right=bool(truth and card.match.card_id == truth.card_id),
                )
            )  # fmt: skip
    return out


def _verdict(e: Evidence, t_i: int, t_p: float) -> str:
    """ "right", "wrong" or "none": what the decision makes of a box at these thresholds."""
    passing = [r for r in e.results if r[0] >= t_i and r[1] >= t_p]
    if not passing:
        return "none"
    if any(r[2] for r in passing):  # the card itself passes: right, or a reprint decided apart
        return "right"
    return "wrong"


def choose(evidence: list[Evidence], n_scenes: int) -> VerifyCalibration:
    """Thresholds from the collected evidence (see the module docstring)."""
    known = [e for e in evidence if e.kind == "known" and not e.small]
    unknown = [e for e in evidence if e.kind == "unknown" and not e.small]
    none = [e for e in evidence if e.kind == "none" and not e.small]
    best: tuple[int, int, float] | None = None
    for t_i in range(MIN_INLIERS, 61, 2):
        for t_p in np.arange(0.3, 0.91, 0.05):
            bad = sum(_verdict(e, t_i, float(t_p)) != "none" for e in unknown)
            bad += sum(_verdict(e, t_i, float(t_p)) == "wrong" for e in known)
            if bad > FALSE_ACCEPT * (len(unknown) + len(known)):
                continue
            right = sum(_verdict(e, t_i, float(t_p)) == "right" for e in known)
            if best is None or right > best[0]:
                best = (right, t_i, float(t_p))
    _, t_i, t_p = best if best is not None else (0, 60, 0.9)
    t_i, t_p = int(np.ceil(t_i * INLIER_MARGIN)), min(round(t_p + PHOTO_MARGIN, 3), 0.95)
    unverified_none = sorted(
        (e.conf for e in none if _verdict(e, t_i, t_p) == "none"), reverse=True
    )
    allowed = int(FALSE_CARDS_PER_SCENE * n_scenes)
    bg_conf = unverified_none[allowed] + 1e-4 if len(unverified_none) > allowed else 0.0
    unverified_unknown = [e for e in unknown if _verdict(e, t_i, t_p) == "none"]
    p_score, p_margin = _probable([e for e in evidence if e.small])
    return VerifyCalibration(
        verify_min_inliers=t_i,
        verify_min_photometric=t_p,
        background_conf=round(min(bg_conf, 1.0), 4),
        probable_score=p_score,
        probable_margin=p_margin,
        unknown_max_inliers=max((r[0] for e in unknown for r in e.results), default=0),
        known_verified_rate=_share([_verdict(e, t_i, t_p) == "right" for e in known]),
        unknown_rejected_rate=_share([_verdict(e, t_i, t_p) == "none" for e in unknown]),
        background_dropped_rate=_share(
            [e.conf < bg_conf for e in none if _verdict(e, t_i, t_p) == "none"]
        ),
        unknown_kept_rate=_share([e.conf >= bg_conf for e in unverified_unknown]),
        n_scenes=n_scenes, n_known=len(known), n_unknown=len(unknown), n_background=len(none),
    )  # fmt: skip


def _share(flags: list[bool]) -> float:
    return round(float(np.mean(flags)), 4) if flags else 0.0


def _probable(small: list[Evidence]) -> tuple[float, float]:
    """The loosest (score, margin) pair at which the embedding named no small crop wrongly and
    accepted no unknown or background one; (1.01, 1.0) (never) when there is no such pair."""
    right = [e for e in small if e.kind == "known" and e.top1_right]
    wrong = [e for e in small if not (e.kind == "known" and e.top1_right)]
    if not right:
        return 1.01, 1.0
    best: tuple[int, float, float] | None = None
    for s in sorted({round(e.score, 3) for e in right}):
        for m in (0.02, 0.05, 0.1, 0.15, 0.2, 0.3):
            if any(e.score >= s and e.margin >= m for e in wrong):
                continue
            n = sum(e.score >= s and e.margin >= m for e in right)
            if best is None or n > best[0]:
                best = (n, s, m)
    if best is None or best[0] < 3:  # too little evidence to trust the embedding at all
        return 1.01, 1.0
    # A margin of safety: the pair found on a few crops is tightened a little.
    return round(min(best[1] + 0.02, 1.01), 4), round(best[2] + 0.05, 4)


def run(
    bundle: Path, known: dict[str, ImageRGB], unknown: dict[str, ImageRGB], *,
    n_scenes: int = 200, seed: int = 11,
) -> VerifyCalibration:  # fmt: skip
    """Calibrate on fresh training-config scenes and write the thresholds into the bundle."""
    rec = Recognizer.from_bundle(bundle, RuntimeSettings(backend="onnx"))
    try:
        cal = choose(collect(rec, known, unknown, n_scenes, seed), n_scenes)
        manifest = rec.manifest
    finally:
        rec.close()
    update: dict[str, Any] = {
        k: v for k, v in asdict(cal).items()
        if k
        in (
            "verify_min_inliers", "verify_min_photometric", "background_conf", "probable_score",
            "probable_margin",
        )
    }  # fmt: skip
    thresholds = manifest.thresholds.model_copy(update=update)
    write_manifest(bundle, manifest.model_copy(update={"thresholds": thresholds}))
    if (bundle / "manifest.sig").exists():
        logger.warning("manifest changed: re-sign the bundle (cardedge bundle sign)")
    logger.info("verification calibration: %s", cal)
    return cal
