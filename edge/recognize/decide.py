"""The decision: is a card known, and which card is it?

- `by_embedding`: the embedding alone (the top-1 score and its margin over the best other card);
  the `probable` tier, and bundles without verification features, decide by it.
- `Decision`: on a card's verification evidence (edge.recognize.verify_stage gathers it), the
  operating points of the bundle's thresholds (`passes`, `distinct`), the colour check, the
  printings of one art told apart (edge.recognize.reprints), and the verdict: `verified` with the
  homography's polygon, `probable`, `unknown` with its reason, or None for a background box.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import cv2
import numpy as np
import numpy.typing as npt

from edge.bundles.manifest import Thresholds
from edge.recognize.feature_file import ReferenceFeatures
from edge.recognize.rectify import polygon_iou
from edge.recognize.reprints import Lean, discriminate, doubted_by, outweighs
from edge.recognize.taught import OverlaySnapshot, index_only
from edge.recognize.verify import (
    TEMPLATE_SAMPLE,
    Verification,
    Verifier,
    distinct_cells,
    frame_onto,
    photometric,
    photometrics,
)
from edge.types import Candidate, CardMatch, Corners, ImageRGB, Match, OrientedBox

DUPLICATE_IOU = 0.5
SAME_ART = 0.5  # references of one name whose distinct cells agree this well may share their art
EDGE_CUT = 0.02  # share of a card's polygon beyond the frame's edge that leaves part of it unseen
RIVAL_MIN = 10  # inliers a second candidate needs to be compared pixel by pixel with the best
POLYGON_COLOUR_GAP = 0.25  # whole-card colours this far below the art's: the polygon is not proven
OFF_INLIERS = 1000  # an operating point asking this many inliers is unused (the manifest default)
# A taught crop carries one sighting's light, glare and background; an unknown card seen in the
# same light would agree with it on colour more easily than with the clean scan. So evidence
# against a taught view takes the lower of its colour agreement with the taught crop and with
# the bundle's scan (same homography: both live on the same card canvas).
TAUGHT_COLOUR_BOTH = True
# ... and the spread point, which may ask no colour agreement of the bundle's scans (light that
# spoils colours), asks this much of a taught view: its features hold whatever lay on the card
# when it was taught (a sleeve's print, other art in its window), so a card showing that would
# match them all over; only the colours tie the view to its own card.
TAUGHT_SPREAD_PHOTOMETRIC = 0.5


def by_embedding(candidates: Sequence[Candidate], thresholds: Thresholds) -> Match:
    """Known iff top-1 score >= unknown_score AND margin to the best different card >= unknown_margin.

    With a single candidate (one-card catalogue) the margin is measured against a score of 0,
    i.e. an unrelated card; with none, the result is unknown with score and margin 0.
    """
    if not candidates:
        return Match(card_id="", score=0.0, margin=0.0, known=False)
    top = candidates[0]
    runner_up = candidates[1].score if len(candidates) > 1 else 0.0
    margin = top.score - runner_up
    known = top.score >= thresholds.unknown_score and margin >= thresholds.unknown_margin
    return Match(card_id=top.card_id, score=top.score, margin=margin, known=known)


def embedding_only(card: CardMatch) -> CardMatch:
    """The verdict of a bundle without reference features: the embedding's, never `verified`."""
    m = card.match
    if m.known:
        return replace(card, match=replace(m, confidence="probable", reason="embedding only"))
    return replace(card, match=replace(m, confidence="unknown", reason="embedding score too low"))


@dataclass(frozen=True, slots=True)
class Evidence:
    """What verification found for one card (for the decision and the evaluation report)."""

    results: tuple[Verification, ...]  # best first
    query_features: int
    reason: str = ""  # set when the crop could not be verified at all
    complete: bool = False  # every shortlist candidate was checked (the distinct point needs it)


class Decision:
    """A bundle's decision on verification evidence, for its reference features and thresholds."""

    def __init__(
        self, refs: ReferenceFeatures, thresholds: Thresholds, verifier: Verifier,
        printings: Mapping[str, Sequence[str]],
    ) -> None:  # fmt: skip
        """`printings`: card_id -> the catalogue's other cards of that name."""
        self.refs = refs
        self.thresholds = thresholds
        self.verifier = verifier
        self.printings = printings
        self.cells = catalogue_cells(refs)  # where the colour check looks (None: the whole card)
        self._same_art: dict[str, tuple[str, ...]] = {}

    def passes(self, v: Verification | None) -> bool:
        """Enough inliers under a plausible homography, and the colours agree: any of the
        bundle's four operating points on a candidate's own evidence (fewer inliers and closer
        colours, many inliers, inliers spread over much of the card (for a taught view, see
        TAUGHT_SPREAD_PHOTOMETRIC), or fewer inliers whose homography maps the reference onto
        the detector's box)."""
        t = self.thresholds
        if v is None or v.homography is None:
            return False
        spread_colours = t.verify_spread_photometric
        if v.view:
            spread_colours = max(spread_colours, TAUGHT_SPREAD_PHOTOMETRIC)
        return (
            (v.inliers >= t.verify_min_inliers and v.photometric >= t.verify_min_photometric)
            or (v.inliers >= t.verify_strong_inliers and v.photometric >= t.verify_strong_photometric)
            or (
                v.inliers >= t.verify_spread_inliers and v.coverage >= t.verify_spread_cells
                and v.photometric >= spread_colours
            )
            or (
                v.inliers >= t.verify_framed_inliers and v.outline >= t.verify_framed_iou
                and v.photometric >= t.verify_framed_photometric
            )
        )  # fmt: skip

    def distinct(self, evidence: Evidence) -> bool:
        """The distinct operating point: the best candidate's inliers are few, but
        verify_distinct_ratio times the runner-up's over a look that checked the whole shortlist,
        and its colours agree."""
        t = self.thresholds
        if not evidence.complete or not evidence.results:
            return False
        best, others = evidence.results[0], evidence.results[1:]
        runner_up = max((v.inliers for v in others), default=0)
        return (
            best.homography is not None
            and best.inliers >= t.verify_distinct_inliers
            and best.photometric >= t.verify_distinct_photometric
            and best.inliers >= t.verify_distinct_ratio * runner_up
        )

    def could_be_distinct(self, evidence: Evidence) -> bool:
        """Not confirmed, but the best candidate has the distinct point's inliers and colours:
        the whole shortlist decides it."""
        t = self.thresholds
        best = evidence.results[0] if evidence.results else None
        return (
            best is not None and best.homography is not None and not self.confirmed(evidence)
            and best.inliers >= t.verify_distinct_inliers
            and best.photometric >= t.verify_distinct_photometric
        )  # fmt: skip

    def confirmed(self, evidence: Evidence) -> bool:
        """The card is its best candidate: one of the operating points holds."""
        best = evidence.results[0] if evidence.results else None
        return self.passes(best) or self.distinct(evidence)

    def rivals(self, results: Sequence[Verification]) -> list[Verification]:
        """The candidates after the best (results[0]) with inliers enough to be compared with it
        pixel by pixel: RIVAL_MIN, and verify_ambiguous of the best's."""
        if not results:
            return []
        least = max(RIVAL_MIN, self.thresholds.verify_ambiguous * results[0].inliers)
        return [v for v in results[1:] if v.homography is not None and v.inliers >= least]

    def contested(self, results: Sequence[Verification]) -> bool:
        """Another candidate than the best is its rival (`rivals`)."""
        return bool(self.rivals(results))

    def strength(self, evidence: Evidence) -> tuple[bool, int]:
        best = evidence.results[0] if evidence.results else None
        return self.confirmed(evidence), best.inliers if best is not None else -1

    def same_art(self, card_id: str) -> tuple[str, ...]:
        """The catalogue's other printings of card_id's art: the cards of its name whose
        references agree with its own over the distinct cells (SAME_ART), found once per card."""
        got = self._same_art.get(card_id)
        if got is None:
            names = tuple(self.printings.get(card_id, ()))
            mine = self.refs.thumbnail(card_id) if names else None
            if mine is None:
                got = names
            else:
                ones = np.ones(mine.shape[:2], bool)
                thumbs = {c: self.refs.thumbnail(c) for c in names}
                got = tuple(
                    c for c, t in thumbs.items()
                    if t is None or t.shape != mine.shape
                    or photometric(t, ones, mine, self.cells) >= SAME_ART
                )  # fmt: skip
            self._same_art[card_id] = got  # two threads may both compute it: the same answer
        return got

    def measured(
        self, image: ImageRGB, warp: npt.NDArray[np.float64], v: Verification, box: Corners,
        views: OverlaySnapshot | None = None,
    ) -> Verification:  # fmt: skip
        """v with what its homography shows beyond its inliers: its outline's IoU with the
        detector's `box` (frame px), and its colours (`coloured`) where it has the inliers of an
        operating point that asks for them."""
        if v.homography is None:
            return v
        v = replace(v, outline=polygon_iou(self.frame_corners(v, warp), box))
        t = self.thresholds
        least = min(
            t.verify_min_inliers, t.verify_distinct_inliers, t.verify_spread_inliers,
            t.verify_framed_inliers,
        )  # fmt: skip
        return self.coloured(image, warp, v, views) if v.inliers >= least else v

    def coloured(
        self, image: ImageRGB, warp: npt.NDArray[np.float64], v: Verification,
        views: OverlaySnapshot | None = None,
    ) -> Verification:  # fmt: skip
        """v with its colour agreement: `edge.recognize.verify.photometrics` of the crop mapped onto v's
        reference thumbnail, over the catalogue's distinct cells and over the whole card (1.0,
        no check, for a bundle built without thumbnails); for a taught view, see
        TAUGHT_COLOUR_BOTH."""
        taught = views.thumbnail(v.view) if views is not None and v.view else None
        scan = self.refs.thumbnail(v.card_id) if taught is None or TAUGHT_COLOUR_BOTH else None
        refs = [r for r in (taught, scan) if r is not None]
        if not refs or v.homography is None:
            return replace(v, photometric=1.0, card_colour=1.0)
        scores = []
        for ref in refs:
            view, valid = frame_onto(image, warp, v.homography, ref.shape[:2], self.refs.spec)
            scores.append(photometrics(view, valid, ref, self.cells))
        return replace(
            v, photometric=min(s[0] for s in scores), card_colour=min(s[1] for s in scores)
        )

    def decide(
        self, card: CardMatch, shortlist: Sequence[Candidate], evidence: Evidence,
        warp: npt.NDArray[np.float64], image: ImageRGB | None = None,
    ) -> CardMatch | None:  # fmt: skip
        """The card's verdict from its evidence; None when the box is background."""
        t = self.thresholds
        if self.confirmed(evidence):
            return self._verified(card, shortlist, evidence, warp, image)
        if evidence.reason:  # could not verify: the embedding alone, on strict thresholds
            probable = t.model_copy(
                update={"unknown_score": t.probable_score, "unknown_margin": t.probable_margin}
            )
            m = by_embedding(
                index_only(shortlist), probable
            )  # taught views are no embedding evidence
            if m.known:
                return replace(
                    card, match=replace(m, confidence="probable", reason=evidence.reason)
                )
            if card.box.conf < t.background_conf:  # proves nothing either: background
                return None
            return replace(card, match=_unknown(m, evidence.reason))
        if card.box.conf < t.background_conf:
            return None
        top = max(evidence.results, key=lambda v: v.inliers, default=None)
        got, cells = (top.inliers, top.coverage) if top is not None else (0, 0)
        why = f"no candidate verified (best {got} inliers over {cells} cells of the card, "
        why += f"{t.verify_min_inliers} needed"
        if t.verify_spread_inliers < OFF_INLIERS:
            why += f" or {t.verify_spread_cells} cells"
        why += "; or its colours differ)" if got >= t.verify_min_inliers else ")"
        return replace(card, match=_unknown(card.match, why))

    def _verified(
        self, card: CardMatch, shortlist: Sequence[Candidate], evidence: Evidence,
        warp: npt.NDArray[np.float64], image: ImageRGB | None,
    ) -> CardMatch:  # fmt: skip
        best, t = evidence.results[0], self.thresholds
        rivals = self.rivals(evidence.results)
        ambiguous_with = ""
        # Short of the strong point, a printing of the same art may have found no inliers by
        # chance (its RANSAC failed): every printing is compared.
        if image is not None and (best.inliers < t.verify_strong_inliers or not self.passes(best)):
            held = {v.card_id for v in rivals}
            found = {v.card_id: v for v in evidence.results}
            for c in self.same_art(best.card_id):
                if c in held:
                    continue
                v = found.get(c) or Verification(c, 0, 0)
                if v.homography is None:  # its colours under the art's homography
                    v = self.coloured(image, warp, replace(v, homography=best.homography))
                rivals.append(v)
        cands = [best, *rivals]
        lean: Lean | None = None
        if rivals and image is not None:
            picked = self.discriminate(image, warp, cands)
            if picked is None:  # the references are the same picture: nothing to tell them by
                ambiguous_with = rivals[0].card_id
            elif picked[0] is not best and outweighs(best, picked[0]):
                # the differing pixels and the whole card's evidence disagree: name neither
                ambiguous_with = picked[0].card_id
            else:
                best, ambiguous_with, lean = picked
                ambiguous_with = ambiguous_with or doubted_by(best, cands)
        if not best.inliers:  # a printing picked by its pixels under the art's homography
            best = replace(best, homography=cands[0].homography, inliers=cands[0].inliers)
        assert best.homography is not None
        # The printings of one art differ outside it: where the homography explains the art but
        # not the whole card, or part of the card lies beyond the frame's edge (a card sliding
        # in: its small print may be what is not in view), nothing proves which printing it is.
        whole = best.card_colour >= best.photometric - POLYGON_COLOUR_GAP
        mapped = self.frame_corners(best, warp)
        in_frame = image is None or _in_frame(mapped, image.shape[:2])
        printings = self.same_art(best.card_id)
        if (not whole or not in_frame) and printings and not ambiguous_with:
            ambiguous_with = printings[0]
        scores = {c.card_id: c.score for c in shortlist}
        score = scores.get(best.card_id, 0.0)
        others = [s for cid, s in scores.items() if cid != best.card_id]
        margin = score - (max(others) if others else 0.0)
        match = Match(
            card_id=best.card_id, score=score, margin=margin, known=True, confidence="verified",
            inliers=best.inliers, reason=f"taught view {best.view}" if best.view else
            ("" if best.card_id in scores else "local-feature shortlist"),
            printings=len(printings),
        )  # fmt: skip
        if ambiguous_with:  # the art is proven, the printing is not: never a guess as known
            why = f"same art as {ambiguous_with}: the printing cannot be told apart in this view"
            leans = _leaning(lean, best.card_id, ambiguous_with) if whole and in_frame else 0.0
            match = replace(
                _unknown(match, why), runner_up=ambiguous_with, inliers=best.inliers, lean=leans
            )
        # The reference's corners mapped back are the card's polygon where the homography
        # explains the whole card; one fitted to a corner of it (the art alone agrees) can throw
        # the far corners anywhere: the detector's box is then the truer outline.
        corners = mapped if whole else card.box.corners
        box = OrientedBox(corners=corners, conf=card.box.conf, class_id=card.box.class_id)
        return CardMatch(box=box, match=match, top_k=card.top_k)

    def discriminate(
        self, image: ImageRGB, warp: npt.NDArray[np.float64], cands: Sequence[Verification]
    ) -> tuple[Verification, str, Lean | None] | None:
        """edge.recognize.reprints.discriminate on this stage's references."""
        return discriminate(self.refs, image, warp, cands)

    def frame_corners(self, v: Verification, warp: npt.NDArray[np.float64]) -> Corners:
        """The reference's corners mapped into the frame through v's homography and the warp."""
        assert v.homography is not None
        corners = self.verifier.corners(v.homography)  # crop px
        frame_pts = cv2.perspectiveTransform(corners.reshape(-1, 1, 2), np.linalg.inv(warp))
        return frame_pts.reshape(4, 2).astype(np.float32)


def catalogue_cells(refs: ReferenceFeatures) -> npt.NDArray[np.bool_] | None:
    """edge.recognize.verify.distinct_cells of up to TEMPLATE_SAMPLE references spread over the catalogue
    (deterministic: the same bundle always looks at the same cells)."""
    ids = refs.card_ids
    picks = np.unique(np.linspace(0, len(ids) - 1, min(len(ids), TEMPLATE_SAMPLE)).round())
    thumbs = [t for i in picks.astype(int) if (t := refs.thumbnail(ids[i])) is not None]
    return distinct_cells(thumbs)


def _in_frame(corners: Corners, shape: tuple[int, ...]) -> bool:
    """Whether the card's polygon lies in the frame (h, w) but for EDGE_CUT of its area: a scan
    or a photo that the card fills has its corners on the frame's edge, a px or two beyond it."""
    h, w = shape[0], shape[1]
    poly = np.asarray(corners, np.float32).reshape(-1, 1, 2)
    area = abs(float(cv2.contourArea(poly)))
    if area <= 0:
        return False
    frame = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float32).reshape(-1, 1, 2)
    inside, _ = cv2.intersectConvexConvex(poly, frame)
    return float(inside) >= (1.0 - EDGE_CUT) * area


def _unknown(m: Match, reason: str) -> Match:
    return replace(m, known=False, confidence="unknown", reason=reason, inliers=0, runner_up="")


def without_duplicates(cards: list[CardMatch | None]) -> list[CardMatch | None]:
    """Two boxes on one card: the one with most inliers stays, the other becomes None."""
    order = sorted(
        (i for i, c in enumerate(cards) if c is not None), key=lambda i: -_inliers(cards[i])
    )
    kept: list[CardMatch] = []
    out: list[CardMatch | None] = list(cards)
    for i in order:
        c = cards[i]
        assert c is not None
        if any(polygon_iou(c.box.corners, k.box.corners) > DUPLICATE_IOU for k in kept):
            out[i] = None
        else:
            kept.append(c)
    return out


def _inliers(card: CardMatch | None) -> int:
    return card.match.inliers if card is not None else -1


def _leaning(lean: Lean | None, card_id: str, runner_up: str) -> float:
    """The small print's lean of card_id over runner_up (negative: towards runner_up); 0 when it
    compared other printings or none."""
    if lean is None:
        return 0.0
    if (lean[0], lean[1]) == (card_id, runner_up):
        return lean[2]
    return -lean[2] if (lean[0], lean[1]) == (runner_up, card_id) else 0.0
