"""`cardedge-train calibrate`: unknown-card thresholds from what the device really sees.

Crops rectified from exact corners (cls/) match their references more closely than crops cut
from the detector's rotated rectangles, so thresholds calibrated on them flag nearly every live
detection as unknown. This renders fresh scenes with the TRAINING scene config (never the
held-out one) holding known and unknown cards, runs the bundle's own Recognizer on them (detector
boxes, runtime crops, runtime index), pairs detections with the truth and calibrates the
(score, margin) thresholds for a target false-accept rate, then writes them into the manifest. A bundle with reference features also gets its verification
thresholds (training.calibrate_verify) from fresh scenes of the same kind.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np

from edge.bundles.files import write_manifest
from edge.config import RuntimeSettings
from edge.recognize.recognizer import Recognizer
from edge.types import ImageRGB
from training import calibrate_verify
from training.calibrate_verify import fresh_scenes
from training.evaluate import match_boxes
from training.index_build import Calibration, calibrate
from training.synth.catalogue import load_catalogue

logger = logging.getLogger(__name__)

Samples = tuple[list[float], list[float], list[bool]]


def _images(folder: Path) -> dict[str, ImageRGB]:
    return {
        r.card_id: cv2.cvtColor(cv2.imread(str(r.image_path)), cv2.COLOR_BGR2RGB)
        for r in load_catalogue(folder)
    }


def collect(
    rec: Recognizer,
    known: dict[str, ImageRGB],
    unknown: dict[str, ImageRGB],
    n_scenes: int,
    seed: int,
) -> tuple[Samples, Samples]:
    """(scores, margins, correct) of detected known cards and of detected unknown cards."""
    k: Samples = ([], [], [])
    u: Samples = ([], [], [])
    for scene, gt in fresh_scenes(known, unknown, n_scenes, seed):
        boxes = rec.detect(scene.image)
        pairs = match_boxes(gt, boxes)
        order = sorted(pairs)
        cards, _, _ = rec.shortlist(scene.image, [boxes[pairs[i]] for i in order])
        for gi, card in zip(order, cards, strict=True):
            target = k if gt[gi].known else u
            target[0].append(card.match.score)
            target[1].append(card.match.margin)
            target[2].append(card.match.card_id == gt[gi].card_id)
    return k, u


def run(
    bundle: Path,
    catalogue: Path,
    unknown: Path,
    *,
    n_scenes: int = 200,
    target_far: float = 0.05,
    seed: int = 7,
    verify_scenes: int = 400,
) -> Calibration:
    """Calibrate on fresh training-config scenes and write the thresholds into the bundle."""
    known_images, unknown_images = _images(catalogue), _images(unknown)
    rec = Recognizer.from_bundle(bundle, RuntimeSettings(backend="onnx"))
    try:
        (ks, km, kc), (us, um, _) = collect(rec, known_images, unknown_images, n_scenes, seed)
        manifest = rec.manifest
    finally:
        rec.close()
    if not ks or not us:
        raise RuntimeError(f"too few detections to calibrate: {len(ks)} known, {len(us)} unknown")
    cal = calibrate(
        (np.array(ks), np.array(km), np.array(kc)), (np.array(us), np.array(um)), target_far
    )
    thresholds = manifest.thresholds.model_copy(
        update={"unknown_score": cal.unknown_score, "unknown_margin": cal.unknown_margin}
    )
    write_manifest(bundle, manifest.model_copy(update={"thresholds": thresholds}))
    if (bundle / "manifest.sig").exists():
        logger.warning("manifest changed: re-sign the bundle (cardedge bundle sign)")
    logger.info("scene calibration: %s", cal)
    if manifest.verification is not None:
        calibrate_verify.run(
            bundle, known_images, unknown_images, n_scenes=verify_scenes, seed=seed + 4
        )
    return cal


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", type=Path, required=True, help="bundle directory to update")
    p.add_argument("--catalogue", type=Path, required=True, help="known catalogue folder")
    p.add_argument("--unknown", type=Path, required=True, help="folder of cards NOT in it")
    p.add_argument("--scenes", type=int, default=200, help="fresh training-config scenes")
    p.add_argument("--target-far", type=float, default=0.05, help="unknowns accepted at most")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument(
        "--verify-scenes",
        type=int,
        default=400,
        help="fresh scenes for the verification thresholds",
    )


def main(args: argparse.Namespace) -> int:
    cal = run(
        args.bundle,
        args.catalogue,
        args.unknown,
        n_scenes=args.scenes,
        target_far=args.target_far,
        seed=args.seed,
        verify_scenes=args.verify_scenes,
    )
    print(json.dumps(asdict(cal), indent=2))
    return 0
