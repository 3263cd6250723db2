"""Verification thresholds from what the device sees: fresh scenes, known and unknown cards.

Renders scenes with the TRAINING scene config (never the held-out one), runs the bundle's own
Recognizer (detector boxes, shortlist, the verification stage's evidence) and chooses:

- `verify_min_inliers` / `verify_min_photometric` and `verify_strong_inliers` /
  `verify_strong_photometric`: the two operating points (either passes) that verify the most known cards
  as themselves while at least PRECISION of what passes is right (an unknown card passing, or a
  known card passing as another while its own card does not, is wrong; reprints that both pass
  are decided apart), and LOOSE_PRECISION when loosened by a buffer (a margin for scenes unlike
  these); Unknown cards
  of the catalogue's own style match its template's features; their colours do not agree;
- `verify_spread_inliers` / `_cells` / `_photometric`: then a geometric point beside them,
  inliers spread over that many cells of the card, where colours may differ (light that the
  colour check does not survive); chosen under the same two precisions, loosened by the buffer
  and BUFFER_CELLS;
- `verify_framed_inliers` / `_photometric` / `_iou`: then a point for fewer inliers than the
  first, whose homography maps the reference's outline onto the detector's box (a chance match
  on a template element or a name's letters maps the card askew or out of scale), chosen under
  the same two precisions, loosened by the buffer and BUFFER_IOU;
- `verify_distinct_inliers` / `_photometric` / `_ratio`: then a fifth operating point beside
  them, for fewer inliers than the first, where the candidate also has that many times the
  inliers of every other candidate of the box (nothing else in the catalogue maps onto the crop;
  same-art reprints and neighbouring cards count as others, as the device sees them), chosen
  under the same two precisions;
- `background_conf`: the detector confidence below which a box that proves nothing (verifies
  against nothing, or is too small to verify and not `probable`) is background (boxes on no
  card) rather than an unknown card;
- `probable_score` / `probable_margin`: the embedding alone, for crops too small to verify,
  only where on these scenes it never named a wrong or an unknown card (else never);
- `back_conf`, where the detector has a `back` class: training/calibrate_backs.py.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np

from edge.bundles.files import write_manifest
from edge.config import RuntimeSettings
from edge.recognize.feature_file import ReferenceFeatures
from edge.recognize.recognizer import Recognizer
from edge.recognize.verify import Verifier, photometric
from edge.recognize.verify_stage import VerifyStage, short_side
from edge.types import ImageRGB
from training import calibrate_backs
from training.evaluate import GtCard, match_boxes
from training.synth.scene import DETECTOR_SCENES, Scene, render_scene

logger = logging.getLogger(__name__)

BUFFER_INLIERS = 1.2  # the chosen pair stays clean when loosened by this factor of inliers ...
BUFFER_PHOTO = 0.1  # ... and this much colour agreement (a margin for scenes unlike these)
BUFFER_CELLS = 1  # ... and this many fewer cells holding inliers
BUFFER_IOU = 0.05  # ... and this much less overlap of the mapped outline with the box
MIN_INLIERS = 10
MIN_DISTINCT_INLIERS = 9  # the distinct point's floor (a homography on fewer proves little)
PRECISION = 0.997  # of the cards the rule passes on these scenes, right (the bar: 0.995) ...
LOOSE_PRECISION = 0.99  # ... and when loosened by the buffer
FALSE_CARDS_PER_SCENE = 0.03  # background boxes allowed through, per scene, on these scenes


Result = tuple[int, float, int] | tuple[int, float, int, int] | tuple[int, float, int, int, float]


@dataclass
class Evidence:
    """One detected box: what it is, its detector confidence and what verification found."""

    kind: str  # "known" | "unknown" | "none" (matches no card)
    conf: float
    # per candidate: inliers, photometric, OTHER/OWN/TWIN[, coverage: cells holding inliers[,
    # outline: the mapped reference's IoU with the box]]
    results: list[Result]
    small: bool  # too small to verify
    score: float  # the embedding's top-1 score and margin, its top-1 right
    margin: float
    top1_right: bool


@dataclass
class VerifyCalibration:
    verify_min_inliers: int
    verify_min_photometric: float
    verify_strong_inliers: int
    verify_strong_photometric: float
    verify_distinct_inliers: int
    verify_distinct_photometric: float
    verify_distinct_ratio: float
    verify_spread_inliers: int
    verify_spread_cells: int
    verify_spread_photometric: float
    verify_framed_inliers: int
    verify_framed_photometric: float
    verify_framed_iou: float
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


# The detector's training world without face-down cards (backs are not calibrated here) and
# without photographs (calibration needs no background folder).
CALIBRATION_SCENES = replace(DETECTOR_SCENES, back_prob=0.0, background_dir=None)


def fresh_scenes(
    known: dict[str, ImageRGB], unknown: dict[str, ImageRGB], n_scenes: int, seed: int
) -> Iterator[tuple[Scene, list[GtCard]]]:
    """Training-config scenes of 1-4 cards, some of them unknown, with their ground truth, and
    things on the table that are not cards (the boxes background_conf must refuse)."""
    rng = np.random.default_rng(seed)
    images = known | unknown
    known_ids, unknown_ids = sorted(known), sorted(unknown)
    for _ in range(n_scenes):
        n = int(rng.integers(1, 5))
        n_unknown = min(int(rng.integers(0, n + 1)), len(unknown_ids))
        ids = list(rng.choice(known_ids, n - n_unknown, replace=False)) + list(
            rng.choice(unknown_ids, n_unknown, replace=False)
        )
        scene = render_scene(images, rng, CALIBRATION_SCENES, card_ids=[str(i) for i in ids])
        yield (
            scene,
            [
                GtCard(
                    c.card_id, np.asarray(c.corners, np.float32), c.card_id in known, False, 0, 0, 0
                )
                for c in scene.cards
            ],
        )


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
        update={
            "verify_min_inliers": 8, "verify_min_photometric": -1.0,
            "verify_distinct_inliers": 1000,
        }
    )  # fmt: skip
    # the device's stage in every respect but its thresholds: the same printings checked
    stage = VerifyStage(
        rec.verify_stage.refs, loose, exhaustive=True, printings=rec.verify_stage.printings
    )
    twins = _Twins(rec.verify_stage.verifier, rec.verify_stage.refs)
    out: list[Evidence] = []
    min_px = rec.manifest.thresholds.verify_min_px
    for scene, gt in fresh_scenes(known, unknown, n_scenes, seed):
        boxes = rec.detect(scene.image)
        owner = {bi: gi for gi, bi in match_boxes(gt, boxes).items()}
        cards, shortlists, _ = rec.shortlist(scene.image, boxes)
        gray = cv2.cvtColor(scene.image, cv2.COLOR_RGB2GRAY)
        present = {g.card_id for g in gt}
        for bi, (card, shortlist) in enumerate(zip(cards, shortlists, strict=True)):
            gi = owner.get(bi)
            truth = gt[gi] if gi is not None else None
            evidence, _ = stage.gather(scene.image, gray, card.box, shortlist)
            kind = "none" if truth is None else "known" if truth.known else "unknown"
            out.append(
                Evidence(
                    kind=kind, conf=card.box.conf,
                    results=[
                        (
                            v.inliers, v.photometric,
                            _relation(twins, truth, v.card_id, present), v.coverage, v.outline,
                        )
                        for v in evidence.results
                    ],
                    small=short_side(card.box.corners) < min_px,
                    score=card.match.score, margin=card.match.margin,
                    top1_right=bool(truth and card.match.card_id == truth.card_id),
                )
            )  # fmt: skip
    return out


class Rule(NamedTuple):
    """The operating points, as the manifest's verify_* thresholds."""

    min_inliers: int
    min_photometric: float
    strong_inliers: int
    strong_photometric: float
    distinct_inliers: int = 1000  # 1000: the point unused
    distinct_photometric: float = 1.0
    distinct_ratio: float = 2.0
    spread_inliers: int = 1000
    spread_cells: int = 48
    spread_photometric: float = 1.0
    framed_inliers: int = 1000
    framed_photometric: float = 1.0
    framed_iou: float = 1.0


DISTINCT_RATIOS = (1.5, 2.0, 2.5, 3.0)
SPREAD_CELLS = (6, 24)  # of the 48 cells of PHOTO_GRID the spread point may ask for
SPREAD_PHOTOS = (-1.0, 0.0, 0.3, 0.5, 0.7)  # its colour agreement: none, or some
FRAMED_IOUS = (0.5, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9)  # the framed point's outline overlap


class _Table:
    """The evidence as arrays (boxes x candidates) so that a rule is judged in a few numpy ops."""

    def __init__(self, boxes: list[Evidence]) -> None:
        width = max((len(e.results) for e in boxes), default=1) or 1
        self.inl = np.full((len(boxes), width), -1, np.int32)
        self.pho = np.full((len(boxes), width), -2.0, np.float32)
        self.own = np.zeros((len(boxes), width), bool)
        self.twin = np.zeros((len(boxes), width), bool)
        # unrecorded: the spread and framed points fail
        self.cov = np.zeros((len(boxes), width), np.int32)
        self.outline = np.zeros((len(boxes), width), np.float32)
        for i, e in enumerate(boxes):
            for j, (n, p, rel, *more) in enumerate(e.results):
                self.inl[i, j], self.pho[i, j] = n, p
                self.own[i, j], self.twin[i, j] = rel == OWN, rel == TWIN
                self.cov[i, j] = more[0] if more else 0
                self.outline[i, j] = more[1] if len(more) > 1 else 0.0
        # per candidate, the most inliers of any other candidate of its box (the device sees
        # every candidate, twins and neighbouring cards included)
        ranked = -np.sort(-np.pad(self.inl, ((0, 0), (0, 1)), constant_values=-1), axis=1)
        first, second = ranked[:, :1], ranked[:, 1:2]  # a tie at the top: second == first
        self.runner = np.where(self.inl == first, second, first).clip(min=0)

    def verdicts(self, rule: Rule) -> tuple[np.ndarray, np.ndarray]:
        """(a card other than it and its twins passes, the card itself passes) per box. When the
        card itself passes, the box is right (same-art rivals are decided apart); when only
        unrelated cards pass, it is wrong. A twin passing alone (the card itself missed the
        shortlist) is neither: no threshold tells the same picture apart."""
        r = rule
        inl, pho = self.inl, self.pho
        ok = ((inl >= r.min_inliers) & (pho >= r.min_photometric)) | (
            (inl >= r.strong_inliers) & (pho >= r.strong_photometric)
        )
        ok |= (
            (inl >= r.spread_inliers) & (self.cov >= r.spread_cells) & (pho >= r.spread_photometric)
        )
        ok |= (
            (inl >= r.framed_inliers)
            & (pho >= r.framed_photometric)
            & (self.outline >= r.framed_iou)
        )
        ok |= (
            (inl >= r.distinct_inliers)
            & (pho >= r.distinct_photometric)
            & (inl >= r.distinct_ratio * self.runner)
        )
        return (ok & ~self.twin & ~self.own).any(axis=1), (ok & self.own).any(axis=1)


OTHER, OWN, TWIN = 0, 1, 2
TWIN_INLIERS = 40  # two references this alike under one homography show the same picture
TWIN_PHOTOMETRIC = 0.9  # ... as do two thumbnails whose colours agree this well


class _Twins:
    """Whether two catalogue cards look the same to the device: their thumbnails agree in colour
    nearly everywhere (near-duplicate art, or two printings nothing in a photograph tells apart),
    cached per pair. Two printings of one art in other colours are not twins here: the colour
    check can refuse the one that is not in view, so naming it counts as a wrong card."""

    def __init__(self, verifier: Verifier, refs: ReferenceFeatures) -> None:
        self.verifier, self.refs = verifier, refs
        self._seen: dict[tuple[str, str], bool] = {}

    def __call__(self, a: str, b: str) -> bool:
        key = (min(a, b), max(a, b))
        if key not in self._seen:
            self._seen[key] = self._same(a, b)
        return self._seen[key]

    def _same(self, a: str, b: str) -> bool:
        ta, tb = self.refs.thumbnail(a), self.refs.thumbnail(b)
        if ta is None or tb is None or ta.shape != tb.shape:
            ref = self.refs.get(a)  # no colours to compare: the same picture by its features
            return ref is not None and self.verifier.verify(ref, b).inliers >= TWIN_INLIERS
        return photometric(ta, np.ones(ta.shape[:2], bool), tb) >= TWIN_PHOTOMETRIC


def _relation(twins: _Twins, truth: GtCard | None, card_id: str, present: set[str]) -> int:
    """How a candidate relates to the card its box was paired with. A candidate that is another
    card of the same scene (the box also covers a card lying over or beside it) is counted like a
    twin: naming it is not a wrong card, only a loose pairing of box and truth."""
    if truth is None or not truth.known:
        return TWIN if card_id in present else OTHER
    if card_id == truth.card_id:
        return OWN
    return TWIN if card_id in present or twins(truth.card_id, card_id) else OTHER


def choose_rule(known: list[Evidence], unknown: list[Evidence]) -> tuple[Rule, int]:
    """The rule naming the most known cards right whose reports are right at least PRECISION of
    the time (unknown cards passing and known cards passing as another count against it), and
    still LOOSE_PRECISION when loosened by the buffer; and how many it names right."""
    k, u = _Table(known), _Table(unknown)

    def precision(rule: Rule) -> tuple[float, int]:
        k_other, k_own = k.verdicts(rule)
        right = int(k_own.sum())
        bad = int((k_other & ~k_own).sum() + u.verdicts(rule)[0].sum())
        return (right / (right + bad) if right + bad else 1.0), right

    def loose(rule: Rule) -> Rule:
        r = rule
        return Rule(
            int(r.min_inliers / BUFFER_INLIERS), r.min_photometric - BUFFER_PHOTO,
            int(r.strong_inliers / BUFFER_INLIERS), r.strong_photometric - BUFFER_PHOTO,
            int(r.distinct_inliers / BUFFER_INLIERS), r.distinct_photometric - BUFFER_PHOTO,
            max(1.0, r.distinct_ratio / BUFFER_INLIERS),
            int(r.spread_inliers / BUFFER_INLIERS), max(r.spread_cells - BUFFER_CELLS, 1),
            r.spread_photometric - BUFFER_PHOTO,
            int(r.framed_inliers / BUFFER_INLIERS), r.framed_photometric - BUFFER_PHOTO,
            r.framed_iou - BUFFER_IOU,
        )  # fmt: skip

    def holds(rule: Rule, to_beat: int) -> bool:
        prec, n = precision(rule)
        return n > to_beat and prec >= PRECISION and precision(loose(rule))[0] >= LOOSE_PRECISION

    best: tuple[int, Rule] = (-1, Rule(60, 0.95, 1000, 1.0))
    photos = np.round(np.arange(0.3, 0.96, 0.05), 2).tolist()
    for t_i in range(MIN_INLIERS, 41):
        for t_p in photos:
            for s_i in [1000, *range(t_i + 4, 81, 4)]:
                for s_p in [p for p in photos if p <= t_p] if s_i < 1000 else [1.0]:
                    rule = Rule(t_i, t_p, s_i, s_p)
                    if holds(rule, best[0]):
                        best = (precision(rule)[1], rule)
    # Then the framed point beside it: fewer inliers, mapping the reference onto the box.
    base = best[1]
    for f_i in range(MIN_INLIERS, base.min_inliers):
        for f_p in photos:
            for f_o in FRAMED_IOUS:
                rule = base._replace(framed_inliers=f_i, framed_photometric=f_p, framed_iou=f_o)
                if holds(rule, best[0]):
                    best = (precision(rule)[1], rule)
    # Then the spread point beside them: inliers over much of the card, colours looser than the
    # usual points ask (or none).
    base = best[1]
    for c_i in range(MIN_INLIERS, 61, 2):
        for c_c in range(SPREAD_CELLS[0], SPREAD_CELLS[1] + 1):
            for c_p in [p for p in SPREAD_PHOTOS if p < base.min_photometric]:
                rule = base._replace(spread_inliers=c_i, spread_cells=c_c, spread_photometric=c_p)
                if holds(rule, best[0]):
                    best = (precision(rule)[1], rule)
    # Then the distinct point beside them: fewer inliers than the rule's, nothing else close.
    # Its colours as the usual points demand them: a same-art reprint's other printing differs
    # in colour, and its twin passing alone (the right printing missed the shortlist) counts as
    # neither right nor wrong here.
    base = best[1]
    for d_i in range(MIN_DISTINCT_INLIERS, base.min_inliers):
        for d_p in [p for p in photos if p >= base.min_photometric]:
            for d_r in DISTINCT_RATIOS:
                rule = base._replace(
                    distinct_inliers=d_i, distinct_photometric=d_p, distinct_ratio=d_r
                )
                if holds(rule, best[0]):
                    best = (precision(rule)[1], rule)
    return best[1], max(best[0], 0)


def choose(evidence: list[Evidence], n_scenes: int) -> VerifyCalibration:
    """Thresholds from the collected evidence (see the module docstring)."""
    known = [e for e in evidence if e.kind == "known" and not e.small]
    unknown = [e for e in evidence if e.kind == "unknown" and not e.small]
    none = [e for e in evidence if e.kind == "none" and not e.small]
    rule, n_right = choose_rule(known, unknown)
    passes_none = _Table(none).verdicts(rule)[0] if none else np.zeros(0, bool)
    p_score, p_margin = _probable([e for e in evidence if e.small])
    # Boxes that prove nothing: unverified, or too small to verify and not probable (the device
    # reports either as an unknown card only at background_conf or above).
    small_none = [
        e.conf for e in evidence
        if e.kind == "none" and e.small and not (e.score >= p_score and e.margin >= p_margin)
    ]  # fmt: skip
    unverified_none = [e.conf for e, p in zip(none, passes_none, strict=True) if not p]
    unverified_none += small_none
    bg_conf = calibrate_backs.letting_through(
        unverified_none, int(FALSE_CARDS_PER_SCENE * n_scenes)
    )
    u_any = _Table(unknown).verdicts(rule)[0] if unknown else np.zeros(0, bool)
    unverified_unknown = [e for e, p in zip(unknown, u_any, strict=True) if not p]
    return VerifyCalibration(
        **{f"verify_{k}": v for k, v in rule._asdict().items()},
        background_conf=round(min(bg_conf, 1.0), 4),
        probable_score=p_score,
        probable_margin=p_margin,
        unknown_max_inliers=max((r[0] for e in unknown for r in e.results), default=0),
        known_verified_rate=round(n_right / len(known), 4) if known else 0.0,
        unknown_rejected_rate=_share([not p for p in u_any]),
        background_dropped_rate=_share([c < bg_conf for c in unverified_none]),
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
        backs = calibrate_backs.calibrate(rec, known | unknown, seed=seed + 2)
        manifest = rec.manifest
    finally:
        rec.close()
    # the rule's operating points (each a manifest verify_* threshold) and the three beside them
    written = {f"verify_{k}" for k in Rule._fields} | {
        "background_conf", "probable_score", "probable_margin",
    }  # fmt: skip
    update: dict[str, Any] = {k: v for k, v in asdict(cal).items() if k in written}
    if backs is not None:
        update["back_conf"] = backs.back_conf
    thresholds = manifest.thresholds.model_copy(update=update)
    write_manifest(bundle, manifest.model_copy(update={"thresholds": thresholds}))
    if (bundle / "manifest.sig").exists():
        logger.warning("manifest changed: re-sign the bundle (cardedge bundle sign)")
    logger.info("verification calibration: %s", cal)
    return cal
