"""The verification stage: shortlist -> verify -> decide, for every card of a frame.

Per card: warp the detector's box (enlarged a little, so a tilted card's trapezoid stays inside)
to the feature canvas, extract local features, verify the shortlist's candidates in order (the
embedder's best on the strongest features first: FIRST_PASS), and decide on the evidence (the
rules: edge.recognize.decide):

- `verified`: the best candidate has >= verify_min_inliers inliers under a plausible homography
  and its colours agree with the reference (or, at the distinct operating point, fewer inliers
  but verify_distinct_ratio times those of every other candidate of the whole shortlist, so
  that nothing else in the catalogue maps onto the crop; at the spread point, inliers spread
  over much of the card, whatever its colours; or, at the framed point, fewer inliers whose
  homography maps the reference onto the detector's box); the card is that candidate (not the
  embedder's top-1), its polygon the reference's corners mapped back into the frame. Others that
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
from dataclasses import replace
from typing import cast

import cv2
import numpy as np
import numpy.typing as npt

from edge.bundles.manifest import Thresholds
from edge.recognize.decide import Decision, Evidence, without_duplicates
from edge.recognize.feature_file import ReferenceFeatures
from edge.recognize.features import Extractor, Features, FeatureSpec
from edge.recognize.rectify import (
    _crop_corners,
    ambiguous_aspect,
    context_quad,
    polygon_iou,
    side_lengths,
)
from edge.recognize.shortlist import FeatureShortlist, widened
from edge.recognize.taught import OverlaySnapshot
from edge.recognize.verify import (
    Verification,
    Verifier,
    rank,
)
from edge.types import Candidate, CardMatch, Corners, ImageRGB, OrientedBox

logger = logging.getLogger(__name__)

EXPAND = 1.08  # the verification crop's box, scaled about its centre
MIN_QUERY_FEATURES = 24  # fewer in a crop of verifiable size: blurred, glared or blank
# Once a candidate verifies, the rest of the shortlist is checked only where a same-art reprint
# could hide: candidates whose embedding score is within TWIN_SCORE_GAP, AFTER_PASS at most.
TWIN_SCORE_GAP = 0.05
FALLBACK_SHORTLIST = 4  # candidates checked again at half resolution or turned 90 degrees
AFTER_PASS = 2
# A look first checks the embedder's best FIRST_PASS candidates on the crop's strongest features
# only, as many as a reference holds (matching costs in proportion to them): most cards verify
# there; where none of them passes, or another candidate is close enough to be compared with the
# one that did (a reprint: told apart on the best evidence), the whole shortlist is checked on all
# of them. Only the operating points on a candidate's own evidence confirm on the fewer features
# (a wrong card reaches their inliers less easily with fewer); the distinct point waits for the
# full pass.
FIRST_PASS = 1
CONTEXT = 1.6  # last look: this much of the box's surroundings, uniformly scaled (see context_quad)
AMBIGUOUS_ASPECT = 0.8  # short/long box sides above this: also try the box turned 90 degrees
MAX_PRINTINGS = 8  # other printings of a verified card's art checked beside the shortlist
# A look that verified nothing but found a plausible homography for some candidate (even a wrong
# one of the same template: it still maps the card's outline) is looked at again through the
# corners that homography gives: a tilted card's trapezoid, which the detector's rotated
# rectangle does not follow, then fills the canvas square-on and its features match.
RECTIFY_MIN = 8  # inliers of the best candidate's homography for the rectified look
RECTIFY_IOU = 0.5  # ... whose corners must overlap the detector's box this much


def query_spec(spec: FeatureSpec, thresholds: Thresholds) -> FeatureSpec:
    """The extraction of a crop: the references' own, with the bundle's count of query features."""
    n = thresholds.verify_query_features
    return spec if n is None else replace(spec, n_features=n)


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
        self.extractor = Extractor(query_spec(refs.spec, thresholds))
        self.thresholds = thresholds
        self.more: FeatureShortlist | None = None  # asked when no embedder candidate verifies
        self.decision = Decision(refs, thresholds, self.verifier, printings or {})
        workers = threads or min(4, os.cpu_count() or 1)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="verify")

    @property
    def printings(self) -> Mapping[str, Sequence[str]]:
        """card_id -> the catalogue's other cards of that name, as the decision checks them."""
        return self.decision.printings

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
            evidence, warp = self._attempt(
                image, gray, corners, candidates, scale, views, n == 0, box=box.corners
            )
            if (
                not whole
                and self.decision.could_be_distinct(evidence)
                and len(shortlist) > len(candidates)
            ):
                # only the rest of the shortlist can tell whether nothing else maps onto the crop
                evidence, warp = self._attempt(
                    image, gray, corners, shortlist, scale, views, box=box.corners
                )
                whole = True
            evidence = replace(evidence, complete=whole and bool(evidence.results))
            looks.append((evidence, warp))
            if best is None or self.decision.strength(evidence) > self.decision.strength(best[0]):
                best, found_at = (evidence, warp), n
            if self.decision.confirmed(evidence) and not self.exhaustive:
                break
        assert best is not None
        if self.exhaustive:
            return self._every_look(image, gray, box.corners, looks, shortlist, views)
        if found_at > 0 and self.decision.confirmed(
            best[0]
        ):  # a later look found it: look where it is
            return self._refined(image, gray, box.corners, best, shortlist, views)
        if not self.decision.confirmed(best[0]):
            rectified = self._rectified(image, gray, box.corners, best, shortlist, views)
            if rectified is not None and self.decision.strength(
                rectified[0]
            ) > self.decision.strength(best[0]):
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
        merged = tuple(sorted(rank(list(best.values())), key=lambda v: not self.decision.passes(v)))
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
        quad = self.decision.frame_corners(top, warp)
        if (
            short_side(quad) < self.thresholds.verify_min_px
            or polygon_iou(quad, corners) < RECTIFY_IOU
        ):
            return None
        candidates = list(shortlist)
        if top.card_id not in {c.card_id for c in candidates}:  # from the local-feature shortlist
            candidates.insert(0, Candidate(top.card_id, 0.0))
        again, warp_again = self._attempt(image, gray, quad, candidates, 1.0, views, box=corners)
        return replace(again, complete=bool(again.results)), warp_again

    def _refined(
        self, image: ImageRGB, gray: npt.NDArray[np.uint8], box: Corners,
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
            image, gray, self.decision.frame_corners(top, warp), candidates, 1.0, views, box=box
        )
        if (
            again.results
            and again.results[0].card_id == top.card_id
            and self.decision.confirmed(again)
        ):
            return again, warp_again
        return found

    def _warp(self, corners: Corners) -> npt.NDArray[np.float64]:
        spec = self.refs.spec
        src = _expanded(corners, EXPAND)
        m = cv2.getPerspectiveTransform(src, _crop_corners(spec.height, spec.width))
        return np.asarray(m, np.float64)

    def _attempt(
        self, image: ImageRGB, gray: npt.NDArray[np.uint8], corners: Corners,
        shortlist: Sequence[Candidate], scale: float, views: OverlaySnapshot | None = None,
        widen: bool = False, *, box: Corners,
    ) -> tuple[Evidence, npt.NDArray[np.float64]]:  # fmt: skip
        """One look: warp `corners`, extract (at `scale` of the canvas), verify the shortlist in
        order; `widen`: then, if none verified, the local-feature shortlist's other candidates;
        `box`: the detector's, which a right homography maps the reference onto."""
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
        strongest = spec.n_features  # as many as a reference holds
        if not self.exhaustive and len(query) > strongest:
            first = Features(query.points[:strongest], query.descriptors[:strongest])
            found = self._in_order(
                image, warp, first, shortlist, views, box=box, give_up=FIRST_PASS
            )
            if found is not None and not self.decision.contested(found):
                return Evidence(found, len(first)), warp
        found = self._in_order(image, warp, query, shortlist, views, box=box, widen=widen)
        assert found is not None
        return Evidence(found, len(query)), warp

    def _in_order(
        self, image: ImageRGB, warp: npt.NDArray[np.float64], query: Features,
        shortlist: Sequence[Candidate], views: OverlaySnapshot | None, *, box: Corners,
        widen: bool = False, give_up: int = 0,
    ) -> tuple[Verification, ...] | None:  # fmt: skip
        """The shortlist's candidates checked in order against `query` (see _attempt), passing
        ones first, then by inliers; `give_up`: None when none of the first that many passes."""
        t = self.thresholds
        results: list[Verification] = []
        passed: Candidate | None = None  # the first candidate that verified
        passed_at = 0
        more = self.more if widen else None
        lazy = widened(shortlist[: t.verify_shortlist], more, query, lambda: passed is None)
        for cand in lazy:
            if passed is None and give_up and len(results) >= give_up:
                return None
            if (
                passed is not None
                and not self.exhaustive
                and (
                    cand.score < passed.score - TWIN_SCORE_GAP
                    or len(results) > passed_at + AFTER_PASS
                )
            ):
                break  # beyond doubt: only candidates as close as a reprint are still checked
            v = self._check(image, warp, query, cand.card_id, views, box)
            results.append(v)
            if passed is None and self.decision.passes(v):
                passed, passed_at = cand, len(results) - 1
        if passed is None and give_up:
            return None
        if passed is not None:  # its art's other printings, shortlisted or not: reprints hide
            checked = {v.card_id for v in results}
            others = [c for c in self.decision.same_art(passed.card_id) if c not in checked]
            for card_id in others[:MAX_PRINTINGS]:
                results.append(self._check(image, warp, query, card_id, views, box))
        # stable: inliers within
        return tuple(sorted(rank(results), key=lambda v: not self.decision.passes(v)))

    def _check(
        self, image: ImageRGB, warp: npt.NDArray[np.float64], query: Features, card_id: str,
        views: OverlaySnapshot | None, box: Corners,
    ) -> Verification:  # fmt: skip
        """The strongest evidence for `card_id`: its scan's, or one of its taught views'."""
        best = self.decision.measured(image, warp, self.verifier.verify(query, card_id), box)
        for view in views.views_of(card_id) if views is not None else ():
            assert views is not None
            v = replace(
                views.verifier.verify(query, view.view_id), card_id=card_id, view=view.view_id
            )
            v = self.decision.measured(image, warp, v, box, views)
            if (self.decision.passes(v), v.inliers) > (self.decision.passes(best), best.inliers):
                best = v
        return best

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
            self._pool.submit(self._one, image, gray, c, s, views)
            for c, s in zip(cards, shortlists, strict=True)
        ]
        return without_duplicates([job.result() for job in jobs])

    def _one(
        self, image: ImageRGB, gray: npt.NDArray[np.uint8], card: CardMatch,
        shortlist: Sequence[Candidate], views: OverlaySnapshot | None,
    ) -> CardMatch | None:  # fmt: skip
        """One card's evidence and verdict, in a worker thread (the reprint comparison is as
        heavy as a candidate's check: the cards of a frame are decided in parallel too)."""
        evidence, warp = self.gather(image, gray, card.box, shortlist, views)
        return self.decision.decide(card, shortlist, evidence, warp, image)


def ambiguous(corners: Corners) -> bool:
    """A box whose short/long side ratio is too close to 1 to trust which side is the card's top
    edge (a card tilted away along its long axis), at the verification's own ratio."""
    return ambiguous_aspect(corners, AMBIGUOUS_ASPECT)
