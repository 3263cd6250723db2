"""The verification stage: shortlist -> verify -> decide, for every card of a frame.

Per card: warp the detector's box (enlarged a little, so a tilted card's trapezoid stays inside)
to the feature canvas, extract local features, verify the shortlist's candidates in order, and
decide on the evidence:

- `verified`: the best candidate has >= verify_min_inliers inliers under a plausible homography
  and its colours agree with the reference (or, at the distinct operating point, fewer inliers
  but verify_distinct_ratio times those of every other candidate of the whole shortlist, so
  that nothing else in the catalogue maps onto the crop; or, at the spread point, inliers
  spread over much of the card, whatever its colours); the card is that candidate (not the embedder's
  top-1), its polygon the reference's corners mapped back into the frame. Other candidates that
  also map onto the crop (same-art reprints) are compared pixel by pixel where their references
  differ; when that cannot tell them apart, the card is `unknown`, naming both;
- `probable`: the crop is too small or too featureless to verify, and the embedding alone passes
  the strict probable thresholds;
- `unknown`: everything else, with the reason. A box that proves nothing (verifies against
  nothing, or is too small to verify and not probable), below the bundle's background
  confidence, is not a card at all and is dropped.

A candidate may also have views taught on the device (edge.overlay.store): each is verified like the
scan and the strongest evidence counts, under the same thresholds; a taught view's colours must
agree with the bundle's scan as well as with the taught crop (TAUGHT_COLOUR_BOTH).

The cards of one frame are verified in parallel threads (OpenCV releases the GIL).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import cast

import cv2
import numpy as np
import numpy.typing as npt

from edge.bundles.manifest import Thresholds
from edge.recognize.feature_file import ReferenceFeatures
from edge.recognize.features import Extractor, Features, FeatureSpec
from edge.recognize.index import decide
from edge.recognize.rectify import _crop_corners, polygon_iou, side_lengths
from edge.recognize.reprints import Lean, discriminate, doubted_by, outweighs
from edge.recognize.shortlist import FeatureShortlist, widened
from edge.recognize.taught import OverlaySnapshot, index_only
from edge.recognize.verify import (
    TEMPLATE_SAMPLE,
    Verification,
    Verifier,
    distinct_cells,
    frame_onto,
    photometric,
    photometrics,
    rank,
)
from edge.types import Candidate, CardMatch, Corners, ImageRGB, Match, OrientedBox

logger = logging.getLogger(__name__)

EXPAND = 1.08  # the verification crop's box, scaled about its centre
MIN_QUERY_FEATURES = 24  # fewer in a crop of verifiable size: blurred, glared or blank
# Once a candidate verifies, the rest of the shortlist is checked only where a same-art reprint
# could hide: candidates whose embedding score is within TWIN_SCORE_GAP, AFTER_PASS at most.
TWIN_SCORE_GAP = 0.05
FALLBACK_SHORTLIST = 4  # candidates checked again at half resolution or turned 90 degrees
AFTER_PASS = 2
CONTEXT = 1.6  # last look: this much of the box's surroundings, uniformly scaled (see context_quad)
DUPLICATE_IOU = 0.5
AMBIGUOUS_ASPECT = 0.8  # short/long box sides above this: also try the box turned 90 degrees
MAX_PRINTINGS = 8  # other printings of a verified card's art checked beside the shortlist
SAME_ART = 0.5  # references of one name whose distinct cells agree this well may share their art
EDGE_CUT = 0.02  # share of a card's polygon beyond the frame's edge that leaves part of it unseen
RIVAL_MIN = 10  # inliers a second candidate needs to be compared pixel by pixel with the best
POLYGON_COLOUR_GAP = 0.25  # whole-card colours this far below the art's: the polygon is not proven
# A look that verified nothing but found a plausible homography for some candidate (even a wrong
# one of the same template: it still maps the card's outline) is looked at again through the
# corners that homography gives: a tilted card's trapezoid, which the detector's rotated
# rectangle does not follow, then fills the canvas square-on and its features match.
RECTIFY_MIN = 8  # inliers of the best candidate's homography for the rectified look
RECTIFY_IOU = 0.5  # ... whose corners must overlap the detector's box this much
OFF_INLIERS = 1000  # an operating point asking this many inliers is unused (the manifest default)
# A taught crop carries one sighting's light, glare and background; an unknown card seen in the
# same light would agree with it on colour more easily than with the clean scan. So evidence
# against a taught view takes the lower of its colour agreement with the taught crop and with
# the bundle's scan (same homography: both live on the same card canvas).
TAUGHT_COLOUR_BOTH = True


@dataclass(frozen=True, slots=True)
class Evidence:
    """What verification found for one card (for the decision and the evaluation report)."""

    results: tuple[Verification, ...]  # best first
    query_features: int
    reason: str = ""  # set when the crop could not be verified at all
    complete: bool = False  # every shortlist candidate was checked (the distinct point needs it)


def short_side(corners: Corners) -> float:
    """The shorter of the quadrilateral's two mean side lengths, px."""
    return min(side_lengths(corners))


def _expanded(corners: Corners, factor: float) -> npt.NDArray[np.float32]:
    c = np.asarray(corners, np.float32)
    centre = c.mean(axis=0)
    out: npt.NDArray[np.float32] = (centre + (c - centre) * factor).astype(np.float32)
    return out


class VerifyStage:
    """Shortlist verification and the decision, for a loaded bundle's reference features."""

    def __init__(
        self, refs: ReferenceFeatures, thresholds: Thresholds, threads: int = 0, *,
        exhaustive: bool = False, printings: Mapping[str, Sequence[str]] | None = None,
    ) -> None:  # fmt: skip
        """`exhaustive`: check every candidate in every look and merge the looks (calibration
        records all the evidence any look could find; see _every_look).
        `printings`: card_id -> the catalogue's other cards of that name (`Catalogue.printings`),
        checked once one verifies."""
        self.exhaustive = exhaustive
        self.refs = refs
        self.verifier = Verifier(refs)
        self.extractor = Extractor(refs.spec)
        self.thresholds = thresholds
        self.cells = catalogue_cells(refs)  # where the colour check looks (None: the whole card)
        self.more: FeatureShortlist | None = None  # asked when no embedder candidate verifies
        self.printings: Mapping[str, Sequence[str]] = printings or {}
        self._same_art: dict[str, tuple[str, ...]] = {}
        workers = threads or min(4, os.cpu_count() or 1)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="verify")

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    # --- evidence --------------------------------------------------------------------------

    def gather(
        self, image: ImageRGB, gray: npt.NDArray[np.uint8], box: OrientedBox,
        shortlist: Sequence[Candidate], views: OverlaySnapshot | None = None,
    ) -> tuple[Evidence, npt.NDArray[np.float64]]:  # fmt: skip
        """Verify `shortlist` against the card in `box`; also returns the crop's warp matrix.

        When nothing verifies, more looks before giving up: the crop at half resolution (a
        defocused card's features live at coarser scales), for a box whose aspect is ambiguous
        the box turned 90 degrees (a squashed crop defeats the descriptors), and the box's
        surroundings. A later look checks the embedder's best few, and the whole shortlist when
        its best candidate could pass the distinct point.
        `views`: taught views to verify each candidate against besides its scan."""
        t = self.thresholds
        if short_side(box.corners) < t.verify_min_px:
            warp = self._warp(box.corners)
            return Evidence((), 0, "too small to verify"), warp
        tries = [(box.corners, 1.0), (box.corners, 0.5)]
        if ambiguous(box.corners):
            tries.append((np.roll(box.corners, -1, axis=0), 1.0))
        if CONTEXT > 1.0:
            tries.append((context_quad(box.corners, CONTEXT, self.refs.spec), 1.0))
        best: tuple[Evidence, npt.NDArray[np.float64]] | None = None
        looks: list[tuple[Evidence, npt.NDArray[np.float64]]] = []
        found_at = 0
        for n, (corners, scale) in enumerate(tries):
            # A second look is for the embedder's best few, not the whole shortlist again.
            whole = n == 0 or self.exhaustive
            candidates = shortlist if whole else shortlist[:FALLBACK_SHORTLIST]
            evidence, warp = self._attempt(image, gray, corners, candidates, scale, views, n == 0)
            if not whole and self._could_be_distinct(evidence) and len(shortlist) > len(candidates):
                # only the rest of the shortlist can tell whether nothing else maps onto the crop
                evidence, warp = self._attempt(image, gray, corners, shortlist, scale, views)
                whole = True
            evidence = replace(evidence, complete=whole and bool(evidence.results))
            looks.append((evidence, warp))
            if best is None or self._strength(evidence) > self._strength(best[0]):
                best, found_at = (evidence, warp), n
            if self.confirmed(evidence) and not self.exhaustive:
                break
        assert best is not None
        if self.exhaustive:
            return self._every_look(image, gray, box.corners, looks, shortlist, views)
        if found_at > 0 and self.confirmed(best[0]):  # a later look found it: look where it is
            return self._refined(image, gray, best, shortlist, views)
        if not self.confirmed(best[0]):
            rectified = self._rectified(image, gray, box.corners, best, shortlist, views)
            if rectified is not None and self._strength(rectified[0]) > self._strength(best[0]):
                return rectified
        return best

    def _every_look(
        self, image: ImageRGB, gray: npt.NDArray[np.uint8], corners: Corners,
        looks: Sequence[tuple[Evidence, npt.NDArray[np.float64]]],
        shortlist: Sequence[Candidate], views: OverlaySnapshot | None,
    ) -> tuple[Evidence, npt.NDArray[np.float64]]:  # fmt: skip
        """Calibration's evidence: every look (each over the whole shortlist) and the rectified
        look from the one with the most inliers, merged into each candidate's best. The device
        stops at the first look that verifies under its thresholds; under the thresholds being
        chosen, any look might, so calibration judges a rule on what any look found (and counts
        a rival's inliers from any look against the distinct point: the cautious side)."""
        top = max(looks, key=lambda lw: lw[0].results[0].inliers if lw[0].results else -1)
        rectified = self._rectified(image, gray, corners, top, shortlist, views)
        everything = [*looks, rectified] if rectified is not None else list(looks)
        best: dict[str, Verification] = {}
        for evidence, _ in everything:
            for v in evidence.results:
                held = best.get(v.card_id)
                if held is None or (v.inliers, v.photometric) > (held.inliers, held.photometric):
                    best[v.card_id] = v
        first, warp = looks[0]
        if not best:
            return first, warp
        merged = tuple(sorted(rank(list(best.values())), key=lambda v: not self.passes(v)))
        return Evidence(merged, first.query_features, complete=True), warp

    def _rectified(
        self, image: ImageRGB, gray: npt.NDArray[np.uint8], corners: Corners,
        found: tuple[Evidence, npt.NDArray[np.float64]], shortlist: Sequence[Candidate],
        views: OverlaySnapshot | None,
    ) -> tuple[Evidence, npt.NDArray[np.float64]] | None:  # fmt: skip
        """The whole shortlist again through the corners of the best homography found (see
        RECTIFY_MIN); None when there is none to trust."""
        evidence, warp = found
        top = evidence.results[0] if evidence.results else None
        if top is None or top.homography is None or top.inliers < RECTIFY_MIN:
            return None
        quad = self._frame_corners(top, warp)
        if (
            short_side(quad) < self.thresholds.verify_min_px
            or polygon_iou(quad, corners) < RECTIFY_IOU
        ):
            return None
        candidates = list(shortlist)
        if top.card_id not in {c.card_id for c in candidates}:  # from the local-feature shortlist
            candidates.insert(0, Candidate(top.card_id, 0.0))
        again, warp_again = self._attempt(image, gray, quad, candidates, 1.0, views)
        return replace(again, complete=bool(again.results)), warp_again

    def _refined(
        self, image: ImageRGB, gray: npt.NDArray[np.uint8],
        found: tuple[Evidence, npt.NDArray[np.float64]], shortlist: Sequence[Candidate],
        views: OverlaySnapshot | None,
    ) -> tuple[Evidence, npt.NDArray[np.float64]]:  # fmt: skip
        """The card found by a wider, coarser or turned look, looked at again through its own
        corners (it fills the canvas: more inliers, a truer polygon); kept when it confirms the
        same card, else the first finding stands."""
        evidence, warp = found
        top = evidence.results[0]
        checked = {v.card_id for v in evidence.results}
        candidates = [c for c in shortlist if c.card_id in checked]
        if top.card_id not in {c.card_id for c in candidates}:  # from the local-feature shortlist
            candidates.append(Candidate(top.card_id, 0.0))
        again, warp_again = self._attempt(
            image, gray, self._frame_corners(top, warp), candidates, 1.0, views
        )
        if again.results and again.results[0].card_id == top.card_id and self.confirmed(again):
            return again, warp_again
        return found

    def _frame_corners(self, v: Verification, warp: npt.NDArray[np.float64]) -> Corners:
        """The reference's corners mapped into the frame through v's homography and the warp."""
        assert v.homography is not None
        corners = self.verifier.corners(v.homography)  # crop px
        frame_pts = cv2.perspectiveTransform(corners.reshape(-1, 1, 2), np.linalg.inv(warp))
        return frame_pts.reshape(4, 2).astype(np.float32)

    def _warp(self, corners: Corners) -> npt.NDArray[np.float64]:
        spec = self.refs.spec
        src = _expanded(corners, EXPAND)
        m = cv2.getPerspectiveTransform(src, _crop_corners(spec.height, spec.width))
        return np.asarray(m, np.float64)

    def passes(self, v: Verification | None) -> bool:
        """Enough inliers under a plausible homography, and the colours agree: any of the
        bundle's three operating points (fewer inliers and closer colours, many inliers, or
        inliers spread over much of the card)."""
        t = self.thresholds
        if v is None or v.homography is None:
            return False
        return (
            (v.inliers >= t.verify_min_inliers and v.photometric >= t.verify_min_photometric)
            or (v.inliers >= t.verify_strong_inliers and v.photometric >= t.verify_strong_photometric)
            or (
                v.inliers >= t.verify_spread_inliers and v.coverage >= t.verify_spread_cells
                and v.photometric >= t.verify_spread_photometric
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

    def _could_be_distinct(self, evidence: Evidence) -> bool:
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

    def _strength(self, evidence: Evidence) -> tuple[bool, int]:
        best = evidence.results[0] if evidence.results else None
        return self.confirmed(evidence), best.inliers if best is not None else -1

    def _attempt(
        self, image: ImageRGB, gray: npt.NDArray[np.uint8], corners: Corners,
        shortlist: Sequence[Candidate], scale: float, views: OverlaySnapshot | None = None,
        widen: bool = False,
    ) -> tuple[Evidence, npt.NDArray[np.float64]]:  # fmt: skip
        """One look: warp, extract (at `scale` of the canvas), verify the shortlist in order;
        `widen`: then, if none verified, the local-feature shortlist's other candidates."""
        t = self.thresholds
        spec = self.refs.spec
        warp = self._warp(corners)
        h, w = round(spec.height * scale), round(spec.width * scale)
        small = np.diag([scale, scale, 1.0]) @ warp
        crop = cv2.warpPerspective(
            gray, small, (w, h), flags=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )  # fmt: skip
        query = self.extractor.extract(np.ascontiguousarray(crop))
        if scale != 1.0:  # keypoints back to canvas px, where the references live
            query = replace(query, points=query.points / np.float32(scale))
        if len(query) < MIN_QUERY_FEATURES:
            return Evidence((), len(query), "too few features to verify (blur or glare)"), warp
        results: list[Verification] = []
        passed: Candidate | None = None  # the first candidate that verified
        passed_at = 0
        more = self.more if widen else None
        lazy = widened(shortlist[: t.verify_shortlist], more, query, lambda: passed is None)
        for cand in lazy:
            if (
                passed is not None
                and not self.exhaustive
                and (
                    cand.score < passed.score - TWIN_SCORE_GAP
                    or len(results) > passed_at + AFTER_PASS
                )
            ):
                break  # beyond doubt: only candidates as close as a reprint are still checked
            v = self._check(image, warp, query, cand.card_id, views)
            results.append(v)
            if passed is None and self.passes(v):
                passed, passed_at = cand, len(results) - 1
        if passed is not None:  # its art's other printings, shortlisted or not: reprints hide
            checked = {v.card_id for v in results}
            others = [c for c in self.same_art(passed.card_id) if c not in checked]
            for card_id in others[:MAX_PRINTINGS]:
                results.append(self._check(image, warp, query, card_id, views))
        ranked = sorted(rank(results), key=lambda v: not self.passes(v))  # stable: inliers within
        return Evidence(tuple(ranked), len(query)), warp

    def _check(
        self, image: ImageRGB, warp: npt.NDArray[np.float64], query: Features, card_id: str,
        views: OverlaySnapshot | None,
    ) -> Verification:  # fmt: skip
        """The strongest evidence for `card_id`: its scan's, or one of its taught views'."""
        t = self.thresholds
        best = self.verifier.verify(query, card_id)
        # the colour check's due
        coloured = min(t.verify_min_inliers, t.verify_distinct_inliers, t.verify_spread_inliers)
        if best.homography is not None and best.inliers >= coloured:
            best = self.coloured(image, warp, best)
        for view in views.views_of(card_id) if views is not None else ():
            assert views is not None
            v = replace(
                views.verifier.verify(query, view.view_id), card_id=card_id, view=view.view_id
            )
            if v.homography is not None and v.inliers >= coloured:
                v = self.coloured(image, warp, v, views)
            if (self.passes(v), v.inliers) > (self.passes(best), best.inliers):
                best = v
        return best

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

    # --- decision --------------------------------------------------------------------------

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
            m = decide(index_only(shortlist), probable)  # taught views are no embedding evidence
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
        t = self.thresholds
        best = evidence.results[0]
        rivals = [
            v for v in evidence.results[1:]
            if v.homography is not None and v.inliers >= max(RIVAL_MIN, t.verify_ambiguous * best.inliers)
        ]  # fmt: skip
        ambiguous_with = ""
        if not self.passes(best) and image is not None:
            # Proven at the distinct point only: on so few inliers, a printing of the same art
            # may have found none by chance (its RANSAC failed), so every printing is compared.
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
        mapped = self._frame_corners(best, warp)
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

    # --- a frame -----------------------------------------------------------------------------

    def run(
        self, image: ImageRGB, cards: Sequence[CardMatch], shortlists: Sequence[Sequence[Candidate]],
        views: OverlaySnapshot | None = None,
    ) -> list[CardMatch | None]:  # fmt: skip
        """Every card's verdict, in order; None for a background box or a second box on a card.
        `views`: the overlay's taught views, verified beside the bundle's scans."""
        if not cards:
            return []
        gray = cast(npt.NDArray[np.uint8], cv2.cvtColor(image, cv2.COLOR_RGB2GRAY))
        jobs = [
            self._pool.submit(self.gather, image, gray, c.box, s, views)
            for c, s in zip(cards, shortlists, strict=True)
        ]
        decided = []
        for card, shortlist, job in zip(cards, shortlists, jobs, strict=True):
            evidence, warp = job.result()
            decided.append(self.decide(card, shortlist, evidence, warp, image))
        return without_duplicates(decided)


def catalogue_cells(refs: ReferenceFeatures) -> npt.NDArray[np.bool_] | None:
    """edge.recognize.verify.distinct_cells of up to TEMPLATE_SAMPLE references spread over the catalogue
    (deterministic: the same bundle always looks at the same cells)."""
    ids = refs.card_ids
    picks = np.unique(np.linspace(0, len(ids) - 1, min(len(ids), TEMPLATE_SAMPLE)).round())
    thumbs = [t for i in picks.astype(int) if (t := refs.thumbnail(ids[i])) is not None]
    return distinct_cells(thumbs)


def context_quad(corners: Corners, factor: float, spec: FeatureSpec) -> npt.NDArray[np.float32]:
    """A rectangle of the canvas's aspect about the box's centre and along its sides, `factor`
    times the box's long side high: warping it to the canvas scales the frame uniformly, so a box
    that covers only part of its card (or squashes it) still leaves the whole card undistorted."""
    first, second = side_lengths(corners)
    c = np.asarray(corners, np.float64)
    if first > second:  # TL-TR is the long side: start one corner later so it is the short one
        c = np.roll(c, -1, axis=0)
    centre = c.mean(axis=0)
    across = (c[1] - c[0]) + (c[2] - c[3])
    down = (c[3] - c[0]) + (c[2] - c[1])
    across /= max(float(np.linalg.norm(across)), 1e-9)
    down /= max(float(np.linalg.norm(down)), 1e-9)
    high = factor * max(first, second)
    wide = high * spec.width / spec.height
    a, d = across * wide / 2, down * high / 2
    quad = np.stack([centre - a - d, centre + a - d, centre + a + d, centre - a + d])
    return quad.astype(np.float32)


def ambiguous(corners: Corners) -> bool:
    """A box whose short/long side ratio is too close to 1 to trust which side is the card's top
    edge (a card tilted away along its long axis)."""
    a, b = side_lengths(corners)
    return min(a, b) > AMBIGUOUS_ASPECT * max(a, b)


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
