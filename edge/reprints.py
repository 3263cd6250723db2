"""Same-art reprints told apart: which printing a verified card is.

Reprints share their art and differ in a set symbol, a collector number, a border or a finish.
When more than one candidate maps onto the crop, the crop is compared with their references only
where those differ (edge.verify_stage decides what to do with the answer).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import numpy.typing as npt

from edge.features import ReferenceFeatures
from edge.types import ImageRGB
from edge.verify import Verification, cell_agreement, frame_onto, grid_means

DIFFER_LEVEL = 60.0  # summed RGB difference at which two references differ at a pixel
DIFFER_MIN_PX = 64  # fewer differing thumbnail pixels (of 8,960): too few to tell the printings by
CLEAR_GAP = 0.2  # relative error gap beyond which the pixels decide a reprint without a runner-up
DIFFER_CELL_SHARE = 0.1  # a colour-grid cell with this share of differing pixels is compared ...
CLEAR_NCC = 0.03  # ... and an agreement gap there beyond which a reprint is decided, ...
AGREE_NCC = 0.3  # ... when the winner agrees this well at least (else neither is seen there)
COLOUR_DOUBT = 0.03  # a rival's whole-card colours this much closer: the pick is in doubt


def discriminate(
    refs: ReferenceFeatures, image: ImageRGB, warp: npt.NDArray[np.float64],
    cands: Sequence[Verification],
) -> tuple[Verification, str] | None:  # fmt: skip
    """Same-art candidates decided where their references differ (set symbol, number, attack
    text, border, finish). The crop is mapped onto the references by the best homography and
    compared two ways where they differ: its colours matched to theirs, the reference closer on
    the differing pixels (a border's or a finish's colour); and, in the colour grid's cells with
    enough differing pixels, the colour check's normalised cross-correlation (text and symbols,
    whatever the lamp does to the card's light locally). The cross-correlation decides when its
    winner is clear by CLEAR_NCC and agrees by AGREE_NCC, with the pixels' clear winner named as
    the runner-up where they disagree; else the pixels decide as they can. Returns the winner and
    the runner-up ("" when the winner is clear), or None when the references carry no thumbnails
    or do not differ."""
    thumbs = [refs.thumbnail(v.card_id) for v in cands]
    if any(th is None for th in thumbs) or cands[0].homography is None:
        return None
    refs_ = [th for th in thumbs if th is not None]
    raw, valid = frame_onto(image, warp, cands[0].homography, refs_[0].shape[:2], refs.spec)
    blurred = [cv2.GaussianBlur(th, (3, 3), 0).astype(np.float32) for th in refs_]
    stack = np.stack(blurred)
    spread = (stack.max(axis=0) - stack.min(axis=0)).sum(axis=2)
    differ = (spread > DIFFER_LEVEL) & valid
    if differ.sum() < DIFFER_MIN_PX:
        return None
    by_pixels = _closest_pixels(raw, differ, valid, blurred)
    by_cells = _closest_cells(raw, differ, valid, refs_)
    pix_win, pix_second, pix_gap = by_pixels
    if by_cells is not None:
        win, _, gap, agrees = by_cells
        if gap >= CLEAR_NCC and agrees >= AGREE_NCC:
            against = pix_win != win and pix_gap >= CLEAR_GAP
            return cands[win], (cands[pix_win].card_id if against else "")
    return cands[pix_win], ("" if pix_gap >= CLEAR_GAP else cands[pix_second].card_id)


def _closest_pixels(
    raw: ImageRGB, differ: npt.NDArray[np.bool_], valid: npt.NDArray[np.bool_],
    blurred: Sequence[npt.NDArray[np.float32]],
) -> tuple[int, int, float]:  # fmt: skip
    """(winner, second, relative error gap): the view's colours matched to the first reference's
    where the references agree, then the mean error on the differing pixels."""
    view = cv2.GaussianBlur(raw, (3, 3), 0).astype(np.float32)
    same = ~differ & valid
    mu_v, sd_v = view[same].mean(axis=0), view[same].std(axis=0) + 1.0
    mu_r, sd_r = blurred[0][same].mean(axis=0), blurred[0][same].std(axis=0) + 1.0
    view = (view - mu_v) / sd_v * sd_r + mu_r
    errors = [float(np.abs(view[differ] - r[differ]).mean()) for r in blurred]
    order = np.argsort(errors)
    win, second = int(order[0]), int(order[1])
    return win, second, (errors[second] - errors[win]) / max(errors[second], 1e-6)


def _closest_cells(
    raw: ImageRGB, differ: npt.NDArray[np.bool_], valid: npt.NDArray[np.bool_],
    refs_: Sequence[ImageRGB],
) -> tuple[int, int, float, float] | None:  # fmt: skip
    """(winner, second, agreement gap, the winner's agreement) over the colour grid's cells where
    the references differ, the crop covers them and one reference at least is textured there;
    None without such cells."""
    share = grid_means(differ)[..., 0]
    agreement = [cell_agreement(raw, valid, th) for th in refs_]
    use = (share >= DIFFER_CELL_SHARE) & agreement[0][1] & np.any([a[2] for a in agreement], 0)
    if not use.any():
        return None
    scores = [float(np.median(a[0][use])) for a in agreement]
    order = np.argsort(scores)[::-1]
    win, second = int(order[0]), int(order[1])
    return win, second, scores[win] - scores[second], scores[win]


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
