"""The detector confidence at which a box of its `back` class is reported as a card back.

A face-down card carries nothing to verify, so the detector's confidence is the only evidence,
and it is not the same evidence as a face box's: `background_conf` is set for face boxes that
verify against nothing, and a back's confidence runs lower (the class is rarer in training).
`back_conf` is calibrated on its own, on fresh training-config scenes with face-down cards (the
training back designs; never the held-out ones): the lowest confidence at which back boxes land
on something that is not a back (a card face, a thing on the table, nothing) at most
FALSE_BACKS_PER_SCENE times a scene, and never below the detector's own `det_conf`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np

from edge.recognize.recognizer import Recognizer
from edge.types import ImageRGB
from training.evaluate import GtCard
from training.evaluate_detection import match_boxes
from training.synth.card_back import TRAIN_BACK_DESIGNS, backs
from training.synth.scene import DETECTOR_SCENES, Scene, render_scene
from training.synth.world import SCENE_CARD_HEIGHT

logger = logging.getLogger(__name__)

FALSE_BACKS_PER_SCENE = 0.02  # back boxes on no back allowed through, per scene, on these scenes
# The detector's training world, more cards face down (more evidence a scene), no photographs
# (calibration needs no background folder).
BACK_SCENES = replace(DETECTOR_SCENES, back_prob=0.3, background_dir=None)


@dataclass
class BackEvidence:
    """One box of the back class: its confidence, and whether it lies on a face-down card."""

    conf: float
    on_back: bool


@dataclass
class BackCalibration:
    back_conf: float
    backs_reported_rate: float  # face-down cards boxed as backs at back_conf
    false_backs_per_scene: float  # back boxes on no back at back_conf
    n_scenes: int
    n_backs: int
    n_back_boxes: int


def back_scenes(cards: dict[str, ImageRGB], n_scenes: int, seed: int) -> Iterator[Scene]:
    """Training-config scenes with face-down cards among the faces."""
    rng = np.random.default_rng(seed)
    designs = backs(TRAIN_BACK_DESIGNS, (), SCENE_CARD_HEIGHT)
    ids = sorted(cards)
    for _ in range(n_scenes):
        picks = [ids[int(i)] for i in rng.choice(len(ids), int(rng.integers(1, 6)), replace=False)]
        yield render_scene(cards, rng, BACK_SCENES, card_ids=picks, backs=designs)


def collect(
    rec: Recognizer, cards: dict[str, ImageRGB], n_scenes: int, seed: int
) -> tuple[list[BackEvidence], list[float]]:
    """Every back-class box of `n_scenes` fresh scenes, and per face-down card the confidence of
    the back box on it (0 where none is)."""
    back_class = rec.manifest.detector.back_class
    if back_class is None:
        raise ValueError("the bundle's detector has no `back` class")
    boxes_out: list[BackEvidence] = []
    per_back: list[float] = []
    for scene in back_scenes(cards, n_scenes, seed):
        gt = [GtCard(c.card_id, np.asarray(c.corners, np.float32), False, False, 0, 0, 0,
                     face_down=c.face_down) for c in scene.cards]  # fmt: skip
        boxes = rec.detect(scene.image)
        owner = {bi: gi for gi, bi in match_boxes(gt, boxes).items()}
        on_back: dict[int, float] = {}
        for bi, box in enumerate(boxes):
            if box.class_id != back_class:
                continue
            gi = owner.get(bi)
            hit = gi is not None and gt[gi].face_down
            boxes_out.append(BackEvidence(float(box.conf), hit))
            if hit and gi is not None:
                on_back[gi] = float(box.conf)
        per_back += [on_back.get(gi, 0.0) for gi, g in enumerate(gt) if g.face_down]
    return boxes_out, per_back


def letting_through(wrong: list[float], allowed: int) -> float:
    """The lowest confidence at which at most `allowed` of the `wrong` boxes' confidences pass
    (0.0 when there are no more of them than that)."""
    ranked = sorted(wrong, reverse=True)
    return ranked[allowed] + 1e-4 if len(ranked) > allowed else 0.0


def choose(
    evidence: list[BackEvidence], per_back: list[float], n_scenes: int, floor: float
) -> BackCalibration:
    """The lowest confidence (>= `floor`) that lets at most the allowed false backs through."""
    wrong = [e.conf for e in evidence if not e.on_back]
    conf = letting_through(wrong, int(FALSE_BACKS_PER_SCENE * n_scenes))
    conf = round(min(max(conf, floor), 1.0), 4)
    n_false = sum(c >= conf for c in wrong)
    return BackCalibration(
        back_conf=conf,
        backs_reported_rate=round(float(np.mean([c >= conf for c in per_back])), 4)
        if per_back
        else 0.0,
        false_backs_per_scene=round(n_false / n_scenes, 4) if n_scenes else 0.0,
        n_scenes=n_scenes,
        n_backs=len(per_back),
        n_back_boxes=len(evidence),
    )


def calibrate(
    rec: Recognizer, cards: dict[str, ImageRGB], n_scenes: int = 150, seed: int = 13
) -> BackCalibration | None:
    """`back_conf` for the recogniser's detector; None when it has no back class."""
    if rec.manifest.detector.back_class is None:
        return None
    evidence, per_back = collect(rec, cards, n_scenes, seed)
    cal = choose(evidence, per_back, n_scenes, rec.manifest.thresholds.det_conf)
    logger.info("back calibration: %s", cal)
    return cal
