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
from edge.verify import Verification, frame_onto

DIFFER_LEVEL = 60.0  # summed RGB difference at which two references differ at a pixel
DIFFER_MIN_PX = 12  # fewer differing thumbnail pixels: the references are the same image
CLEAR_GAP = 0.2  # relative error gap beyond which a reprint is decided without a runner-up
COLOUR_DOUBT = 0.03  # a rival's whole-card colours this much closer: the pick is in doubt


def discriminate(
    refs: ReferenceFeatures, image: ImageRGB, warp: npt.NDArray[np.float64],
    cands: Sequence[Verification],
) -> tuple[Verification, str] | None:  # fmt: skip
    """Same-art candidates decided by the pixels where their references differ (set symbol,
    number, border, finish): the crop is mapped onto the references by the best homography,
    its colours matched to theirs, and the reference closer on the differing pixels wins.
    Returns the winner and the runner-up ("" when the winner is clear), or None when the
    references carry no thumbnails or do not differ."""
    thumbs = [refs.thumbnail(v.card_id) for v in cands]
    if any(th is None for th in thumbs) or cands[0].homography is None:
        return None
    blurred = [
        cv2.GaussianBlur(th, (3, 3), 0).astype(np.float32) for th in thumbs if th is not None
    ]
    raw, valid = frame_onto(image, warp, cands[0].homography, blurred[0].shape[:2], refs.spec)
    view = cv2.GaussianBlur(raw, (3, 3), 0).astype(np.float32)
    stack = np.stack(blurred)
    spread = (stack.max(axis=0) - stack.min(axis=0)).sum(axis=2)
    differ = (spread > DIFFER_LEVEL) & valid
    if differ.sum() < DIFFER_MIN_PX:
        return None
    same = ~differ & valid
    # Colour match: per channel, the view's mean and spread where the references agree.
    mu_v, sd_v = view[same].mean(axis=0), view[same].std(axis=0) + 1.0
    mu_r, sd_r = stack[0][same].mean(axis=0), stack[0][same].std(axis=0) + 1.0
    view = (view - mu_v) / sd_v * sd_r + mu_r
    errors = [float(np.abs(view[differ] - r[differ]).mean()) for r in blurred]
    order = np.argsort(errors)
    win, second = int(order[0]), int(order[1])
    gap = (errors[second] - errors[win]) / max(errors[second], 1e-6)
    return cands[win], ("" if gap >= CLEAR_GAP else cands[second].card_id)


def outweighs(a: Verification, b: Verification) -> bool:
    """`a` has the stronger evidence on the whole card: more inliers and closer colours."""
    return a.inliers > b.inliers and a.photometric > b.photometric


def doubted_by(picked: Verification, cands: Sequence[Verification]) -> str:
    """The candidate whose colours over the whole card agree clearly better than the picked
    printing's ("" when none does): the differing pixels and the whole card then disagree."""
    closer = [
        v for v in cands
        if v.card_id != picked.card_id and v.photometric > picked.photometric + COLOUR_DOUBT
    ]  # fmt: skip
    return max(closer, key=lambda v: v.photometric).card_id if closer else ""
