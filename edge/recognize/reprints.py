"""Same-art reprints told apart: which printing a verified card is.

Reprints share their art and differ in a set symbol, a collector number, a border or a finish.
When more than one candidate maps onto the crop, the crop is compared with their references only
where those differ (edge.recognize.decide decides what to do with the answer).
"""

from __future__ import annotations

import math
import threading
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, NamedTuple

import cv2
import numpy as np
import numpy.typing as npt

from edge.recognize.align import refined
from edge.recognize.feature_file import ReferenceFeatures
from edge.recognize.reprint_pixels import (
    AGREE_NCC,
    Agreement,
    closest_cells,
    closest_pixels,
    hidden,
)
from edge.recognize.verify import (
    Homography,
    Verification,
    canvas_quad,
    cell_agreement,
    frame_onto,
    project,
)
from edge.types import ImageRGB

DIFFER_LEVEL = 60.0  # summed RGB difference at which two references differ at a pixel
DIFFER_MIN_PX = 64  # fewer differing thumbnail pixels (of 8,960): too few to tell the printings by
CLEAR_GAP = 0.2  # relative error gap beyond which the pixels decide a reprint without a runner-up
CLEAR_NCC = 0.03  # an agreement gap in the compared colour cells beyond which a reprint is decided
COLOUR_DOUBT = 0.03  # a rival's whole-card colours this much closer: the pick is in doubt
# The small print, on the references' grey detail images at the canvas's resolution:
Grey = npt.NDArray[np.uint8]
Region = tuple[int, int, int, int, int]  # x, y, width, height, area (canvas px)
# x0, y0, x1, y1 (canvas px, margin included), area, each smoothed detail's grey std there
Window = tuple[int, int, int, int, int, float, float]
DETAIL_LEVEL = 25.0  # grey difference (after a 1 px blur) at which two details differ
DETAIL_CLOSE = (5, 9)  # differing pixels this close (rows, columns) are one region: a line of print
DETAIL_MIN_PX = 40  # differing canvas px a region needs to be compared (a digit is ~40)
DETAIL_SHIFT = 2  # px each way the crop may sit off its homography (ORB's inliers are ~1-2 px)
DETAIL_FLAT = 4.0  # grey std below which a region is blank (no correlation to speak of)
DETAIL_CLEAR = 0.03  # a correlation gap beyond which the small print decides ...
DETAIL_AGREE = 0.5  # ... when its winner agrees this well at least
FAINT_LEVEL = 12.0  # where two details differ nowhere by DETAIL_LEVEL: unblurred grey difference,
FAINT_CLOSE = (5, 15)  # ... closed along a line of print,
FAINT_MIN_PX = 20  # ... the px a region needs, ...
FAINT_MAX_H = 12  # ... and at most this tall: a line of print (a finish over the art is no print)
FAINT_MIN_SCALE = 0.75  # frame px per canvas px below which faint print is too small to be seen


Lean = tuple[str, str, float]  # the small print favours the first printing over the second by


def discriminate(
    refs: ReferenceFeatures, image: ImageRGB, warp: npt.NDArray[np.float64],
    cands: Sequence[Verification],
) -> tuple[Verification, str, Lean | None] | None:  # fmt: skip
    """Same-art candidates decided where their references differ (set symbol, number, attack
    text, border, finish). First the small print: where the references carry detail images,
    `by_detail` decides when its winner is clear by DETAIL_CLEAR and agrees by DETAIL_AGREE.
    Else the thumbnails: the crop is mapped onto the references by the best homography and
    compared two ways where they differ: its colours matched to theirs, the reference closer on
    the differing pixels (a border's or a finish's colour); and, in the colour grid's cells with
    enough differing pixels, the colour check's normalised cross-correlation (text and symbols,
    whatever the lamp does to the card's light locally). The cross-correlation decides when its
    winner is clear by CLEAR_NCC and agrees by AGREE_NCC, with the pixels' clear winner named as
    the runner-up where they disagree; else the pixels decide as they can. Returns the winner and
    the runner-up ("" when the winner is clear), and the small print's lean where it was seen
    (its winner agrees by DETAIL_AGREE) but too close to decide; None when the references carry
    no thumbnails or do not differ."""
    if cands[0].homography is None:
        return None
    h = cands[0].homography
    first = _memo(refs).detail(refs, cands[0].card_id)
    if first is not None:  # the small print wants the pixels aligned, not the keypoints
        h = refined(image, warp, h, first[0], refs.spec)
    thumbs = [refs.thumbnail(v.card_id) for v in cands]
    refs_ = [th for th in thumbs if th is not None]
    seen: tuple[ImageRGB, npt.NDArray[np.bool_], list[Agreement], npt.NDArray[np.bool_]] | None
    seen = None  # the crop on the thumbnails, each one's agreement with it, and what is hidden
    on_canvas: npt.NDArray[np.bool_] | None = None
    if len(refs_) == len(thumbs):
        raw, valid = frame_onto(image, warp, h, refs_[0].shape[:2], refs.spec)
        agreement = [cell_agreement(raw, valid, th) for th in refs_]
        covered = hidden(agreement, raw.shape[:2])
        seen = raw, valid, agreement, covered
        spec = refs.spec
        grown = cv2.resize(
            covered.astype(np.uint8), (spec.width, spec.height), interpolation=cv2.INTER_NEAREST
        )
        on_canvas = np.asarray(grown, bool)
    small_print = by_detail(refs, image, warp, cands, on_canvas, h)
    lean: Lean | None = None
    leaning: tuple[Verification, str, Lean | None] | None = None  # names both where the
    if small_print is not None and small_print.agree >= DETAIL_AGREE:  # thumbnails can't tell
        win, second, gap = small_print.win, small_print.second, small_print.gap
        if gap >= DETAIL_CLEAR:
            return cands[win], "", None
        if gap > 0:
            lean = (cands[win].card_id, cands[second].card_id, gap)
            leaning = (cands[win], cands[second].card_id, lean)
    if seen is None:
        return leaning
    raw, valid, agreement, covered = seen
    blurred = [cv2.GaussianBlur(th, (3, 3), 0).astype(np.float32) for th in refs_]
    stack = np.stack(blurred)
    spread = (stack.max(axis=0) - stack.min(axis=0)).sum(axis=2)
    differ = (spread > DIFFER_LEVEL) & valid & ~covered
    if differ.sum() < DIFFER_MIN_PX:
        return leaning
    by_pixels = closest_pixels(raw, differ, valid, blurred)
    by_cells = closest_cells(differ, agreement)
    pix_win, pix_second, pix_gap = by_pixels
    if by_cells is not None:
        win, _, gap, agrees = by_cells
        if gap >= CLEAR_NCC and agrees >= AGREE_NCC:
            against = pix_win != win and pix_gap >= CLEAR_GAP
            return _settled(cands, win, pix_win if against else None, small_print, lean)
    return _settled(cands, pix_win, None if pix_gap >= CLEAR_GAP else pix_second, small_print, lean)


class SmallPrint(NamedTuple):
    win: int
    second: int
    gap: float
    agree: float
    gaps: npt.NDArray[np.float64]  # gaps[i, j]: i's correlation minus j's where i and j differ
    agrees: npt.NDArray[np.float64]  # agrees[i, j]: i's correlation there


def _settled(
    cands: Sequence[Verification], win: int, runner: int | None, small: SmallPrint | None,
    lean: Lean | None,
) -> tuple[Verification, str, Lean | None]:  # fmt: skip
    """The thumbnails' pick, its pair with the runner-up settled by the small print where it saw
    them (a third printing the colours rule out, a border of another colour, must not hold back
    the pair's own verdict): the pair's clear winner named alone, else its lean for the pair."""
    if runner is None:
        return cands[win], "", lean
    if (
        small is not None
        and max(small.agrees[win, runner], small.agrees[runner, win]) >= DETAIL_AGREE
    ):
        g = float(small.gaps[win, runner])
        if abs(g) >= DETAIL_CLEAR:
            return cands[win if g > 0 else runner], "", None
        lean = (cands[win].card_id, cands[runner].card_id, g) if g else lean
    return cands[win], cands[runner].card_id, lean


def by_detail(
    refs: ReferenceFeatures, image: ImageRGB, warp: npt.NDArray[np.float64],
    cands: Sequence[Verification], hidden: npt.NDArray[np.bool_] | None = None,
    h: Homography | None = None,
) -> SmallPrint | None:  # fmt: skip
    """(winner, second, correlation gap, the winner's correlation, and every pair's gaps and
    correlations) of the candidates' grey detail images, the crop mapped onto the canvas by `h`
    (the best candidate's homography by default); None when a candidate has no detail image.
    `hidden`: canvas pixels not compared (`hidden` below).
    Printings are compared in pairs, each pair where its own two details differ
    (`_pair_regions`: a third printing's other frame must not drown the one number in which two
    printings differ); the winner beats every other, the second is the one it beats by least,
    the gap that least margin (0 where a pair differs nowhere in the frame)."""
    memo = _memo(refs)
    details = [memo.detail(refs, v.card_id) for v in cands]
    spec = refs.spec
    if any(d is None or d[0].shape != (spec.height, spec.width) for d in details):
        return None
    h = cands[0].homography if h is None else h
    assert h is not None
    raw, valid = frame_onto(image, warp, h, (spec.height, spec.width), spec)
    if hidden is not None:
        valid = valid & ~hidden
    grey = cv2.cvtColor(raw, cv2.COLOR_RGB2GRAY)
    view: Grey = np.asarray(cv2.GaussianBlur(grey, (0, 0), 1.0), np.uint8)
    smooth = [d[1] for d in details if d is not None]
    # how large the card lies in the frame: faint print on a card seen small is noise
    quad = project(np.linalg.inv(warp) @ h, canvas_quad(spec)).astype(np.float32)
    area = abs(float(cv2.contourArea(quad)))
    faint = math.sqrt(area / (spec.width * spec.height)) >= FAINT_MIN_SCALE
    n = len(cands)
    gap = np.zeros((n, n))  # gap[i, j]: i's correlation minus j's where i and j differ
    agree = np.zeros((n, n))  # agree[i, j]: i's correlation there
    for i in range(n):
        for j in range(i + 1, n):
            windows = memo.windows(refs, cands[i].card_id, cands[j].card_id, faint)
            scores = _pair_regions(view, valid, smooth[i], smooth[j], windows)
            if scores is not None:
                gap[i, j], gap[j, i] = scores[0] - scores[1], scores[1] - scores[0]
                agree[i, j], agree[j, i] = scores
    others = ~np.eye(n, dtype=bool)
    margins = np.where(others, gap, np.inf).min(axis=1)  # each one's least margin over the rest
    win = int(np.argmax(margins))
    second = int(np.argmin(np.where(others[win], gap[win], np.inf)))
    return SmallPrint(win, second, float(gap[win, second]), float(agree[win, second]), gap, agree)


class _Memo:
    """What one reference file's details give, computed once: each card's detail with its
    smoothed copy, and each pair's differing regions as windows (they depend on the references
    alone).
    Bounded (least recently used first out); safe across the verification threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._details: OrderedDict[str, tuple[Grey, Grey] | None] = OrderedDict()
        self._windows: OrderedDict[tuple[str, str, bool], list[Window]] = OrderedDict()

    def detail(self, refs: ReferenceFeatures, card_id: str) -> tuple[Grey, Grey] | None:
        """(detail, detail after a 1 px blur), or None where the card has none."""
        with self._lock:
            if card_id in self._details:
                self._details.move_to_end(card_id)
                return self._details[card_id]
        d = refs.detail(card_id)
        got = None if d is None else (d, np.asarray(cv2.GaussianBlur(d, (0, 0), 1.0), np.uint8))
        with self._lock:
            _put(self._details, card_id, got, MEMO_DETAILS)
        return got

    def windows(self, refs: ReferenceFeatures, a: str, b: str, faint: bool) -> list[Window]:
        """`differing` of the two cards' details (both have one), as `_windows`."""
        key = (a, b, faint)
        with self._lock:
            if key in self._windows:
                self._windows.move_to_end(key)
                return self._windows[key]
        da, db = self.detail(refs, a), self.detail(refs, b)
        assert da is not None and db is not None
        found = _windows(differing(da[0], db[0], faint), da[1], db[1])
        with self._lock:
            _put(self._windows, key, found, MEMO_PAIRS)
        return found


MEMO_DETAILS = 256  # cards' details kept decoded (80 KB each with the smoothed copy)
MEMO_PAIRS = 4096  # pairs' windows kept
_MEMOS: weakref.WeakKeyDictionary[ReferenceFeatures, _Memo] = weakref.WeakKeyDictionary()
_MEMOS_LOCK = threading.Lock()


def _memo(refs: ReferenceFeatures) -> _Memo:
    with _MEMOS_LOCK:
        memo = _MEMOS.get(refs)
        if memo is None:
            memo = _MEMOS[refs] = _Memo()
        return memo


def _put(store: OrderedDict[Any, Any], key: Any, value: Any, most: int) -> None:
    store[key] = value
    store.move_to_end(key)
    while len(store) > most:
        store.popitem(last=False)


def _windows(regions: Sequence[Region], a: Grey, b: Grey) -> list[Window]:
    """Each region with a few px of margin, where the view may shift +-DETAIL_SHIFT px inside
    the canvas, and the grey std of the smoothed details a and b there."""
    s = DETAIL_SHIFT
    h, w = a.shape
    out = []
    for x, y, bw, bh, area in regions:
        x0, y0 = max(x - 3, s), max(y - 3, s)
        x1, y1 = min(x + bw + 3, w - s), min(y + bh + 3, h - s)
        if x1 - x0 >= 4 and y1 - y0 >= 4:
            spread = [float(d[y0:y1, x0:x1].std()) for d in (a, b)]
            out.append((x0, y0, x1, y1, area, spread[0], spread[1]))
    return out


def _pair_regions(
    view: Grey, valid: npt.NDArray[np.bool_], a: Grey, b: Grey, windows: Sequence[Window]
) -> tuple[float, float] | None:
    """The area-weighted best correlations of details a and b (smoothed) with the view in the
    `windows` where a and b differ (`differing`, `_windows`), each matched with
    cv2.matchTemplate over +-DETAIL_SHIFT px; None when no such window lies wholly inside the
    frame."""
    totals, weight = np.zeros(2), 0.0
    s = DETAIL_SHIFT
    for x0, y0, x1, y1, area, spread_a, spread_b in windows:
        if not valid[y0 - s : y1 + s, x0 - s : x1 + s].all():  # off the frame's edge
            continue
        around = view[y0 - s : y1 + s, x0 - s : x1 + s]
        flatness = float(view[y0:y1, x0:x1].std())
        totals += area * np.array(
            [
                _correlation(around, d[y0:y1, x0:x1], spread, flatness)
                for d, spread in ((a, spread_a), (b, spread_b))
            ]
        )
        weight += area
    if not weight:
        return None
    return float(totals[0] / weight), float(totals[1] / weight)


def differing(a: Grey, b: Grey, faint: bool = True) -> list[Region]:
    """(x, y, width, height, area) of each region where details a and b differ: connected
    patches of pixels whose grey levels differ by DETAIL_LEVEL after a 1 px blur, closed into
    lines of print, DETAIL_MIN_PX at least. Where they differ nowhere by that much, the faint
    print: pixels apart by FAINT_LEVEL unblurred, closed along a line by FAINT_CLOSE, regions of
    FAINT_MIN_PX at least and no taller than a line (an illustrator's name or a collector number
    in dark grey on dark grey: all that tells some printings apart), unless `faint` is False."""
    tiers = (
        (cv2.GaussianBlur(a, (0, 0), 1.0), cv2.GaussianBlur(b, (0, 0), 1.0), DETAIL_LEVEL,
         DETAIL_CLOSE, DETAIL_MIN_PX, a.shape[0]),
        (a, b, FAINT_LEVEL, FAINT_CLOSE, FAINT_MIN_PX, FAINT_MAX_H),
    )[: 2 if faint else 1]  # fmt: skip
    for one, other, level, close, min_px, max_h in tiers:
        apart = (np.abs(one.astype(np.int16) - other.astype(np.int16)) > level).astype(np.uint8)
        closed = cv2.morphologyEx(apart, cv2.MORPH_CLOSE, np.ones(close, np.uint8))
        n, _, stats, _ = cv2.connectedComponentsWithStats(closed)
        found = [
            (int(x), int(y), int(bw), int(bh), int(area))
            for x, y, bw, bh, area in stats[1:n]
            if area >= min_px and bh <= max_h
        ]  # fmt: skip
        if found:
            return found
    return []


def _correlation(around: Grey, patch: Grey, patch_spread: float, spread: float) -> float:
    """The best normalised correlation of `patch` within `around`; for a blank patch (its grey
    std `patch_spread`: a correlation is undefined there), how blank the view is too (`spread`:
    its grey std)."""
    if patch_spread < DETAIL_FLAT:
        return float(np.clip((3 * DETAIL_FLAT - spread) / (2 * DETAIL_FLAT), 0.0, 1.0))
    return float(cv2.matchTemplate(around, patch, cv2.TM_CCOEFF_NORMED).max())


def outweighs(a: Verification, b: Verification) -> bool:
    """`a` has the stronger evidence on the whole card: more inliers and colours closer by more
    than COLOUR_DOUBT (a hundredth either way is noise)."""
    return a.inliers > b.inliers and a.card_colour > b.card_colour + COLOUR_DOUBT


def doubted_by(picked: Verification, cands: Sequence[Verification]) -> str:
    """The candidate whose colours over the whole card agree clearly better than the picked
    printing's ("" when none does): the differing pixels and the whole card then disagree."""
    closer = [
        v for v in cands
        if v.card_id != picked.card_id and v.card_colour > picked.card_colour + COLOUR_DOUBT
    ]  # fmt: skip
    return max(closer, key=lambda v: v.card_colour).card_id if closer else ""
