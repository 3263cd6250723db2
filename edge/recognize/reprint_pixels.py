"""The thumbnails' side of telling printings apart (edge.recognize.reprints): the crop's colours
against each printing's where their thumbnails differ, pixel by pixel and cell by cell of the
colour grid, and the cells where something lies over the card.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import numpy.typing as npt

from edge.recognize.verify import PHOTO_GRID, grid_means
from edge.types import ImageRGB

DIFFER_CELL_SHARE = 0.1  # a colour-grid cell with this share of differing pixels is compared
AGREE_NCC = 0.3  # a printing's agreement there at least, or neither is seen there (reprints)
# cell_agreement's per-cell correlation, covered and textured masks, with one reference
Agreement = tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_], npt.NDArray[np.bool_]]


def closest_pixels(
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


def hidden(agreement: Sequence[Agreement], shape: tuple[int, int]) -> npt.NDArray[np.bool_]:
    """The pixels (of a thumbnail of `shape`) in cells of the colour grid where the crop agrees
    with none of the printings (AGREE_NCC, `agreement`: cell_agreement with each) though one is
    textured there: a hand, another card or a glare over the card, whose pixels tell no printing
    from another (and would pick one by chance)."""
    textured = np.any([a[2] for a in agreement], axis=0)
    seen = np.any([a[0] >= AGREE_NCC for a in agreement], axis=0)
    cells = (textured & ~seen).astype(np.uint8)
    h, w = shape
    rows, cols = PHOTO_GRID
    out = np.zeros((h, w), bool)
    ch, cw = h // rows, w // cols
    out[: rows * ch, : cols * cw] = np.kron(cells, np.ones((ch, cw), np.uint8)).astype(bool)
    return out


def closest_cells(
    differ: npt.NDArray[np.bool_], agreement: Sequence[Agreement]
) -> tuple[int, int, float, float] | None:
    """(winner, second, agreement gap, the winner's agreement) over the colour grid's cells where
    the references differ, the crop covers them and one reference at least is textured there
    (`agreement`: cell_agreement of the crop with each reference); None without such cells."""
    share = grid_means(differ)[..., 0]
    use = (share >= DIFFER_CELL_SHARE) & agreement[0][1] & np.any([a[2] for a in agreement], 0)
    if not use.any():
        return None
    scores = [float(np.median(a[0][use])) for a in agreement]
    order = np.argsort(scores)[::-1]
    win, second = int(order[0]), int(order[1])
    return win, second, scores[win] - scores[second], scores[win]
